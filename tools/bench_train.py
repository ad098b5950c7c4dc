"""Training-step throughput (crops/s) of srjax's stage-2 and stage-3 steps against the
same net in PyTorch (eager and ``torch.compile``), measured in the same run.

  python tools/bench_train.py                          # the paper preset: 512², batch 16, 7 slices
  python tools/bench_train.py --size 128 --batch 8     # smaller, for a CPU

srjax's steps are its own (``srjax.train``: the pure steps, jitted over a data mesh of
every device, state donated). The PyTorch reference is ``tools/torch_unet.py``, the same
``unet_noskip`` with the same parameter count: stage 2 is a forward, label-smoothed
cross-entropy, backward and Adam step on a random flip of the crops; stage 3 a
no-grad teacher forward, the student's masked cross-entropy against the teacher's
confident argmax plus the anchor's cross-entropy, Adam, and the EMA of the teacher.
srjax's stage 3 also runs its photometric augmentation (gamma, contrast, CLAHE) inside
the step, which the reference leaves out: the ratio is srjax's work against less.
Times are medians of --repeats steps after --warmup steps; ratios are srjax / PyTorch
throughput (above 1: srjax is faster).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from srjax import presets, train
from srjax.config import apply_overrides
from srjax.losses import loss_values
from srjax.models import build_model
from srjax.optim import OptimizerSpec, make_optimizer

STEPS = 1000  # the schedule's length; only its shape at the first steps matters here


def _median_seconds(step, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def random_batch(batch: int, size: int, slices: int, classes: int) -> dict:
    """A batch of random crops and labels (seed 0), as the data pipeline gives one."""
    rng = np.random.default_rng(0)
    return {"image": rng.random((batch, size, size, slices), np.float32),
            "label": rng.integers(0, classes, (batch, size, size)).astype(np.int32)}


def stage_step(config, model, params, stage: str, mesh):
    """srjax's compiled step of ``stage`` and its starting state, replicated over ``mesh``."""
    settings = getattr(config, stage)
    optimizer = make_optimizer(settings, STEPS)
    method = "stage2" if stage == "stage2" else settings.method
    kind = train.StepKind(method, model, OptimizerSpec.of(settings, STEPS), config.loss.name,
                          teacher_views=getattr(settings, "teacher_views", 1))
    values = {"loss": loss_values(config.loss)}
    if stage == "stage2":
        state = train.stage2_state(params, optimizer, values)
    else:
        values.update(train.unbiased_teacher_values(settings))
        state = train.teacher_student_state(params, optimizer, values)
    return train.compiled_step(kind, mesh), train.placed(state, train.replicated(mesh))


def jax_steps(config, classes: int, batch: dict, warmup: int, repeats: int) -> tuple[dict, int]:
    mesh = train.make_mesh()
    model = build_model(config.model.name, classes, config.model.width, config.model.dropout)
    params = train.init_params(model, config.data.slices, config.data.crop, 0)
    count = sum(p.size for p in jax.tree.leaves(params))
    placed = {key: jax.make_array_from_process_local_data(train.batch_sharded(mesh), value)
              for key, value in batch.items()}
    rng = jax.random.key(0)
    seconds = {}
    for stage in ("stage2", "stage3"):
        step, state = stage_step(config, model, params, stage, mesh)
        holder = [state]

        def run():
            holder[0], metrics = step(holder[0], placed, rng)
            jax.block_until_ready(metrics)

        seconds[stage] = _median_seconds(run, warmup, repeats)
    return seconds, count


def torch_steps(config, classes: int, batch: dict, warmup: int, repeats: int, compiled: bool) -> tuple[dict, int]:
    import copy

    import torch
    import torch.nn.functional as F

    from torch_unet import UNetNoSkip, ema_, parameter_count

    device = "cuda" if torch.cuda.is_available() else "cpu"
    widths = build_model(config.model.name, classes, config.model.width).widths
    student = UNetNoSkip(config.data.slices, classes, widths, config.model.dropout).to(device)
    teacher = copy.deepcopy(student).eval()
    images = torch.from_numpy(np.moveaxis(batch["image"], -1, 1).copy()).to(device)
    labels = torch.from_numpy(batch["label"].astype(np.int64)).to(device)
    smoothing, confidence, anchor = config.loss.smoothing, config.stage3.confidence, config.stage3.anchor
    net = torch.compile(student) if compiled else student
    teach = torch.compile(teacher) if compiled else teacher
    optimizer = torch.optim.Adam(student.parameters(), lr=config.stage2.learning_rate)

    def stage2():
        flipped = torch.flip(images, dims=(3,))
        loss = F.cross_entropy(net(flipped), torch.flip(labels, dims=(2,)), label_smoothing=smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def stage3():
        with torch.no_grad():
            probs = torch.softmax(teach(images), dim=1)
            score, target = probs.max(dim=1)
        logits = net(images)
        per_pixel = F.cross_entropy(logits, target, label_smoothing=smoothing, reduction="none")
        keep = (score > confidence).float()
        loss = (per_pixel * keep).sum() / keep.sum().clamp(min=1)
        loss = loss + anchor * F.cross_entropy(logits, labels, label_smoothing=smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema_(teacher, student, config.stage3.ema)

    seconds = {}
    for stage, step in (("stage2", stage2), ("stage3", stage3)):
        def run(step=step):
            step()
            if device == "cuda":
                torch.cuda.synchronize()

        seconds[stage] = _median_seconds(run, warmup, repeats)
    return seconds, parameter_count(student)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--slices", type=int, default=7)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--width", default="paper")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (it compiles for minutes)")
    args = parser.parse_args()
    config = apply_overrides(presets.paper(), [f"data.crop={args.size}", f"data.batch_size={args.batch}",
                                               f"data.slices={args.slices}", f"model.width={args.width}"])
    batch = random_batch(args.batch, args.size, args.slices, args.classes)
    print(f"{config.model.name} ({args.width} widths), batch {args.batch} of {args.size}² x {args.slices} slices; "
          f"jax {jax.__version__} on {jax.device_count()} {jax.devices()[0].platform} device(s)")
    found, count = {}, None
    found["srjax (jax)"], count = jax_steps(config, args.classes, batch, args.warmup, args.repeats)
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed (pip install -e '.[bench]'): no reference to compare with")
        torch = None
    if torch is not None:
        torch.manual_seed(0)
        for name, compiled in (("pytorch eager", False), ("pytorch compile", True)):
            if compiled and args.no_compile:
                continue
            found[name], torch_count = torch_steps(config, args.classes, batch, args.warmup, args.repeats, compiled)
            if torch_count != count:
                raise SystemExit(f"the PyTorch net has {torch_count} parameters, srjax's {count}: not the same net")
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; both nets {count} parameters")
    print(f"{'':18}{'stage 2 crops/s':>18}{'stage 3 crops/s':>18}{'stage 2 ratio':>16}{'stage 3 ratio':>16}")
    ours = found["srjax (jax)"]
    for name, seconds in found.items():
        ratios = "" if seconds is ours else "".join(f"{seconds[s] / ours[s]:>16.2f}" for s in ("stage2", "stage3"))
        print(f"{name:18}{args.batch / seconds['stage2']:>18.1f}{args.batch / seconds['stage3']:>18.1f}{ratios}")
    print("ratio: srjax's throughput over that row's (above 1: srjax is faster)")


if __name__ == "__main__":
    main()
