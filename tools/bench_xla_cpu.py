"""What XLA's CPU backend makes of srjax's training step, and which of its flags change
the step's speed: the stage-2 step of ``tools/bench_train.py`` timed under each flag
setting (each in its own process, since XLA reads its flags once), with the compiled
step's convolutions (how many, in which dimension order), the layout copies and
transposes XLA inserted, and the custom calls (oneDNN, XNNPACK) it handed work to; then,
under the default flags, one 3×3 convolution of each of the net's widths at its depth's
size split into its forward pass, its gradient with respect to the input and its
gradient with respect to the weights.

  python tools/bench_xla_cpu.py --size 128 --batch 8

Ratios are each setting's throughput over the default flags', measured in the same run.
A setting XLA does not know is reported as such (XLA stops on an unknown flag).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_train, beside this file

SETTINGS = {
    "default": "",
    "fast math": "--xla_cpu_enable_fast_math=true",
    "oneDNN": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true",
    "XNNPACK": "--xla_cpu_use_xnnpack=true",
    "no fusion emitters": "--xla_cpu_use_fusion_emitters=false",
    "single-threaded Eigen": "--xla_cpu_multi_thread_eigen=false",
}


def hlo_census(text: str) -> dict:
    """Counts of the compiled step's convolutions by dimension labels, its copies and
    transposes, and its custom calls by target."""
    convolutions = collections.Counter(re.findall(r"convolution\(.*?dim_labels=(\S+?)[,\s]", text))
    targets = collections.Counter(re.findall(r'custom_call_target="([^"]+)"', text))
    return {"convolutions": dict(convolutions), "copies": len(re.findall(r"= \S+ copy\(", text)),
            "transposes": len(re.findall(r"= \S+ transpose\(", text)), "custom_calls": dict(targets),
            "fusions": len(re.findall(r"= \S+ fusion\(", text))}


def _median_ms(fn, *args) -> float:
    """Median milliseconds of ``fn(*args)`` (finished), after one call."""
    import jax

    from bench_train import _median_seconds

    return 1e3 * _median_seconds(lambda: jax.block_until_ready(fn(*args)), 1, 5)


def convolution_split(size: int, batch: int, widths) -> None:
    """Print forward, input-gradient and weight-gradient milliseconds of a 3×3 convolution
    per depth of the net (the size halving and the width growing with depth), and the same
    in PyTorch when it is installed."""
    import jax

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    forward = jax.jit(conv)
    input_grad = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0])
    weight_grad = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])
    reference = _torch_convolution()
    for depth, width in enumerate(widths):
        side = size >> depth
        x, g = (jax.random.normal(jax.random.key(k), (batch, side, side, width)) for k in (0, 1))
        w = jax.random.normal(jax.random.key(2), (3, 3, width, width))
        rows = {"XLA": [_median_ms(forward, x, w), _median_ms(input_grad, x, w, g), _median_ms(weight_grad, x, w, g)]}
        if reference:
            rows["PyTorch"] = reference(batch, side, width)
        for name, (ahead, back_input, back_weights) in rows.items():
            print(f"  {name:8} {batch}x{side}x{side}x{width:<4} forward {ahead:7.1f} ms  input gradient "
                  f"{back_input:7.1f} ms  weight gradient {back_weights:7.1f} ms ({back_weights / ahead:.1f}x forward)")


def _torch_convolution():
    """A function timing PyTorch's 3×3 convolution as ``convolution_split`` times XLA's, or None."""
    try:
        import torch
    except ImportError:
        return None

    def timed(batch: int, side: int, width: int) -> list[float]:
        x = torch.randn(batch, width, side, side, requires_grad=True)
        w = torch.randn(width, width, 3, 3, requires_grad=True)
        g = torch.randn(batch, width, side, side)
        with torch.no_grad():
            ahead = _median_ms(lambda: torch.nn.functional.conv2d(x, w, padding=1))
        y = torch.nn.functional.conv2d(x, w, padding=1)
        back_input = _median_ms(lambda: torch.autograd.grad(y, x, g, retain_graph=True))
        back_weights = _median_ms(lambda: torch.autograd.grad(y, w, g, retain_graph=True))
        return [ahead, back_input, back_weights]

    return timed


def child(size: int, batch: int, repeats: int) -> None:
    """Time srjax's stage-2 step and describe its compiled form; print one JSON line."""
    import jax

    from bench_train import _median_seconds, random_batch, stage_step
    from srjax import presets, train
    from srjax.config import apply_overrides
    from srjax.models import build_model

    config = apply_overrides(presets.paper(), [f"data.crop={size}", f"data.batch_size={batch}"])
    mesh = train.make_mesh()
    placed = {key: jax.make_array_from_process_local_data(train.batch_sharded(mesh), value)
              for key, value in random_batch(batch, size, config.data.slices, 4).items()}
    model = build_model(config.model.name, 4, config.model.width, config.model.dropout)
    step, state = stage_step(config, model, train.init_params(model, config.data.slices, size, 0), "stage2", mesh)
    key = jax.random.key(0)
    census = hlo_census(step.lower(state, placed, key).compile().as_text())
    holder = [state]

    def run():
        holder[0], metrics = step(holder[0], placed, key)
        jax.block_until_ready(metrics)

    seconds = _median_seconds(run, 2, repeats)
    print(json.dumps({"crops_per_second": batch / seconds, **census}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.size, args.batch, args.repeats)
        return
    found = {}
    for name, flags in SETTINGS.items():
        env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
        done = subprocess.run([sys.executable, __file__, "--child", "--size", str(args.size), "--batch",
                               str(args.batch), "--repeats", str(args.repeats)], env=env, capture_output=True,
                              text=True)
        if done.returncode != 0:
            print(f"{name:22} not available: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}")
            continue
        found[name] = json.loads(done.stdout.strip().splitlines()[-1])
        result = found[name]
        ratio = result["crops_per_second"] / found["default"]["crops_per_second"]
        print(f"{name:22} {result['crops_per_second']:6.2f} crops/s  {ratio:4.2f}x default  "
              f"convolutions {result['convolutions']}  copies {result['copies']}  "
              f"transposes {result['transposes']}  fusions {result['fusions']}  custom calls {result['custom_calls']}")
    from srjax.models import build_model

    print("one 3x3 convolution per depth of the paper's net, default flags:")
    convolution_split(args.size, args.batch, build_model("unet_noskip", 4, "paper").widths)


if __name__ == "__main__":
    main()
