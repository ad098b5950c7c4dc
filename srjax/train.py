"""Stage 2 (fit to pseudo labels) and stage 3 (self-correction, by default the
Unbiased-Teacher method), as pure steps and the loop that runs them.

Both steps are pure functions ``(state, batch, rng) -> (state, metrics)``, jitted once
over a data-parallel mesh: the batch is split on the ``data`` axis, parameters and
optimizer state are replicated, and the old state's buffers are donated. The step's
randomness is ``fold_in(rng, state.step)``, so a resumed run draws what an
uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec

from srjax import augment, data
from srjax.config import Stage2Config, Stage3Config
from srjax.errors import SrjaxError
from srjax.losses import masked_mean
from srjax.outputs import check_interrupt, deferred_interrupts
from srjax.progress import bar as progress_bar


class Stage2State(flax.struct.PyTreeNode):
    step: jax.Array
    params: Any
    opt_state: Any


class TeacherStudentState(flax.struct.PyTreeNode):
    step: jax.Array
    params: Any  # the student
    opt_state: Any
    teacher: Any


def make_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D ``data`` mesh over all devices (of every host)."""
    devices = list(devices or jax.devices())
    # Auto axes: with explicit ones, grads through batch-sharded CE raise sharding errors.
    return jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def replicated(mesh):
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh):
    return NamedSharding(mesh, PartitionSpec("data"))


def init_params(model, num_slices: int, crop: int, seed: int):
    sample = jnp.zeros((1, crop, crop, num_slices), jnp.float32)
    return model.init(jax.random.key(seed), sample, train=False)["params"]


def ema_update(teacher, student, decay: float):
    """teacher <- decay * teacher + (1 - decay) * student, leaf by leaf."""
    return jax.tree.map(lambda t, s: decay * t + (1.0 - decay) * s, teacher, student)


def stage2_step(state: Stage2State, batch, rng, *, model, optimizer, loss_fn, weak_augment: bool):
    """One supervised step on pseudo labels, optionally on a random rotation/flip of each crop."""
    weak_key, dropout_key = jax.random.split(jax.random.fold_in(rng, state.step))
    images, labels = batch["image"], batch["label"]
    if weak_augment:
        images, labels = augment.weak(weak_key, images, labels)

    def objective(params):
        logits = model.apply({"params": params}, images, train=True, rngs={"dropout": dropout_key})
        return loss_fn(logits, labels).mean()

    loss, grads = jax.value_and_grad(objective)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), {"loss": loss}


def unbiased_teacher_step(state: TeacherStudentState, batch, rng, *, model, optimizer, loss_fn, settings: Stage3Config):
    """One Unbiased-Teacher step: the teacher labels a weak view, the student learns a strong one."""
    weak_key, strong_key, dropout_key = jax.random.split(jax.random.fold_in(rng, state.step), 3)
    weak = augment.weak(weak_key, batch["image"])
    strong = augment.strong(strong_key, weak, settings.strong_probability)
    probs = jax.nn.softmax(model.apply({"params": state.teacher}, weak, train=False))
    target = probs.argmax(-1)
    keep = probs.max(-1) > settings.confidence

    def objective(params):
        logits = model.apply({"params": params}, strong, train=True, rngs={"dropout": dropout_key})
        return masked_mean(loss_fn(logits, target), keep)

    loss, grads = jax.value_and_grad(objective)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, teacher=ema_update(state.teacher, params, settings.ema)
    )
    kept_by_class = (jax.nn.one_hot(target, probs.shape[-1]) * keep[..., None]).mean(axis=(0, 1, 2))
    return new_state, {"loss": loss, "kept": keep.mean(), "kept_by_class": kept_by_class}


def stage2_state(params, optimizer) -> Stage2State:
    return Stage2State(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


def teacher_student_state(params, optimizer) -> TeacherStudentState:
    """Student and teacher both start from ``params`` (the stage-2 weights)."""
    return TeacherStudentState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                               teacher=jax.tree.map(jnp.copy, params))  # own buffers: the step donates both


@dataclasses.dataclass(frozen=True)
class Stage3Method:
    """A self-correction method: its training state from the stage-2 weights and an
    optimizer, its pure step, and the field of the final state that labels the volume."""

    init: Callable
    step: Callable
    predict_with: str


# A new stage-3 method is one entry here; ``stage3.method`` selects it.
STAGE3_METHODS = {
    "unbiased_teacher": Stage3Method(teacher_student_state, unbiased_teacher_step, predict_with="teacher"),
}


def compile_step(step_fn: Callable, mesh):
    """Jit a bound step once: state replicated (and donated), batch split on ``data``."""
    repl = replicated(mesh)
    return jax.jit(
        step_fn,
        in_shardings=(repl, batch_sharded(mesh), repl),
        out_shardings=(repl, repl),
        donate_argnums=0,
    )


def _put_batch(batch, mesh):
    sharding = batch_sharded(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def checkpoint_manager(directory: Path, keep_steps=()):
    """The latest two checkpoints, and those at ``keep_steps`` (which a sweep's other members start from)."""
    policies = [ocp.checkpoint_managers.LatestN(2)]
    if keep_steps:
        policies.append(ocp.checkpoint_managers.CustomSteps(sorted(keep_steps)))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies), enable_async_checkpointing=False)
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def _abstract(state, mesh):
    repl = replicated(mesh)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), state)


def restore_state(directory: Path, like, mesh, step: int | None = None):
    """The state (and the saved data/history record) of a checkpoint directory's latest step."""
    manager = checkpoint_manager(directory)
    step = manager.latest_step() if step is None else step
    restored = manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(like, mesh)), record=ocp.args.JsonRestore()),
    )
    return restored["state"], restored["record"]


def latest_step(directory: Path) -> int | None:
    return checkpoint_manager(directory).latest_step() if Path(directory).exists() else None


def _latest(directory: Path) -> Path:
    step = latest_step(directory)
    if step is None:
        raise SrjaxError(f"{directory} holds no checkpoint; run the stage first")
    return (Path(directory) / str(step)).absolute()


def latest_params(directory: Path, key: str = "params"):
    """Host copies of ``key`` (``params`` or ``teacher``) from a checkpoint directory's latest step."""
    return ocp.StandardCheckpointer().restore(_latest(directory) / "state")[key]


def saved_record(directory: Path) -> dict:
    """The history and metric sums saved with a checkpoint directory's latest step."""
    return ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(_latest(directory) / "record")


def prediction_key(stage: str, config) -> str:
    """The state field whose weights label the volume after ``stage``."""
    return "params" if stage == "stage2" else STAGE3_METHODS[config.stage3.method].predict_with


def train(
    name: str,
    step_fn: Callable,
    state,
    dataset,
    mesh,
    checkpoint_dir: Path,
    *,
    seed: int,
    checkpoint_every: int,
    read_threads: int,
    keep_steps=(),
    progress: bool = True,
):
    """Run ``step_fn`` over ``dataset``; resume from the latest checkpoint if there is one.
    Checkpoints are saved every ``checkpoint_every`` steps and at ``keep_steps``, which are kept.

    Returns the final state, the per-step history of the scalar metrics, and the sums
    over all steps of the vector ones (of all runs, resumed or not). A non-finite loss
    stops training before anything from that step on is saved.
    """
    total = len(dataset)
    iterator = data.iterate(dataset, read_threads)
    history: list[dict] = []
    sums: dict[str, list] = {}
    manager = checkpoint_manager(checkpoint_dir, keep_steps)
    start = manager.latest_step() or 0
    if start:
        state, record = restore_state(checkpoint_dir, state, mesh, start)
        iterator.set_state(record["iterator"])
        history, sums = record["history"], record.get("sums", {})
    state = jax.device_put(state, replicated(mesh))
    step = compile_step(step_fn, mesh)
    rng = jax.device_put(jax.random.key(seed), replicated(mesh))
    bar = progress_bar(total=total, initial=start, desc=name, unit="step", disable=not progress)
    pending = []
    for index in range(start, total):
        check_interrupt()
        state, metrics = step(state, _put_batch(next(iterator), mesh), rng)
        pending.append(metrics)
        done = index + 1
        if done % checkpoint_every == 0 or done == total or done in keep_steps:
            _collect(name, jax.device_get(pending), done - len(pending), history, sums)
            pending = []
            bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
            record = {"iterator": iterator.get_state(), "history": history, "sums": sums}
            with deferred_interrupts():  # a checkpoint is never cut short by Ctrl-C
                manager.save(done, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                           record=ocp.args.JsonSave(record)))
                manager.wait_until_finished()
        bar.update(1)
    bar.close()
    manager.close()
    return state, history, sums


def _collect(name: str, steps: list[dict], first: int, history: list, sums: dict) -> None:
    """Add the metrics of steps ``first``, ``first + 1``, ...: scalars to the history, vectors to the sums."""
    for offset, metrics in enumerate(steps):
        loss = float(metrics["loss"])
        if not np.isfinite(loss):
            raise SrjaxError(f"{name}: the loss became {loss} at step {first + offset + 1}; no labels were written. "
                             "Lower the learning rate, or check the volume for extreme values")
        for key, value in metrics.items():
            if np.ndim(value):
                sums[key] = (np.asarray(sums.get(key, 0.0)) + np.asarray(value, np.float64)).tolist()
        history.append({key: float(value) for key, value in metrics.items() if not np.ndim(value)})


def bind_stage2_step(model, optimizer, loss_fn, settings: Stage2Config):
    return functools.partial(
        stage2_step, model=model, optimizer=optimizer, loss_fn=loss_fn, weak_augment=settings.weak_augment
    )


def bind_stage3_step(model, optimizer, loss_fn, settings: Stage3Config):
    step = STAGE3_METHODS[settings.method].step
    return functools.partial(step, model=model, optimizer=optimizer, loss_fn=loss_fn, settings=settings)
