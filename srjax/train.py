"""Stage 2 (fit to pseudo labels) and stage 3 (self-correction, by default the
Unbiased-Teacher method), as pure steps and the loop that runs them.

Both steps are pure functions ``(state, batch, rng) -> (state, metrics)``, jitted over a
data-parallel mesh: the batch is split on the ``data`` axis, parameters and optimizer
state are replicated, and the old state's buffers are donated. The step's randomness is
``fold_in(rng, state.step)``, so a resumed run draws what an uninterrupted one would.

A state carries its numeric settings as values (``values``: the loss's parameters and
the stage-3 method's; the learning rate sits in the optimizer state), so the compiled
step depends only on the model, the optimizer's kind and schedule and the loss's name:
runs that differ in values share one compiled step (``compiled_step``), and a population
of such runs trains as one vmapped step on a ``population`` x ``data`` mesh.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec

from srjax import augment, data, parallel
from srjax.config import Stage3Config
from srjax.errors import SrjaxError
from srjax.losses import masked_mean, pixel_loss
from srjax.sparse import UNLABELLED
from srjax.optim import OptimizerSpec, optimizer_from
from srjax.outputs import check_interrupt, deferred_interrupts
from srjax.progress import bar as progress_bar


class Stage2State(flax.struct.PyTreeNode):
    step: jax.Array
    params: Any
    opt_state: Any
    values: Any  # {"loss": the loss's parameters}


class TeacherStudentState(flax.struct.PyTreeNode):
    step: jax.Array
    params: Any  # the student
    opt_state: Any
    teacher: Any
    values: Any  # {"loss": ..., "confidence": δ, "ema": α, "strong_probability": ...}


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
    # Under jit: the same weights, bit for bit, as one compile instead of one per layer (half the wait).
    sample = jnp.zeros((1, crop, crop, num_slices), jnp.float32)
    return jax.jit(functools.partial(model.init, train=False))(jax.random.key(seed), sample)["params"]


def ema_update(teacher, student, decay: float):
    """teacher <- decay * teacher + (1 - decay) * student, leaf by leaf."""
    return jax.tree.map(lambda t, s: decay * t + (1.0 - decay) * s, teacher, student)


def supervised(loss_fn, logits, batch_sparse, values):
    """The labelled pixels' term (0 where none is labelled) and where they are."""
    labelled = batch_sparse != UNLABELLED
    target = jnp.where(labelled, batch_sparse, 0)
    return values["supervised"] * masked_mean(loss_fn(logits, target, values["loss"]), labelled), labelled


def stage2_step(state: Stage2State, batch, rng, *, model, optimizer, loss_fn, weak_augment: bool):
    """One supervised step on pseudo labels, optionally on a random rotation/flip of each crop;
    with sparse labels, the pseudo labels' term covers the unlabelled pixels and the
    labelled ones have their own."""
    weak_key, dropout_key = jax.random.split(jax.random.fold_in(rng, state.step))
    arrays = (batch["image"], batch["label"]) + ((batch["sparse"],) if "sparse" in batch else ())
    if weak_augment:
        arrays = augment.weak(weak_key, *arrays)
    images, labels = arrays[:2]

    def objective(params):
        logits = model.apply({"params": params}, images, train=True, rngs={"dropout": dropout_key})
        if len(arrays) == 3:
            term, labelled = supervised(loss_fn, logits, arrays[2], state.values)
            return masked_mean(loss_fn(logits, labels, state.values["loss"]), ~labelled) + term
        return loss_fn(logits, labels, state.values["loss"]).mean()

    loss, grads = jax.value_and_grad(objective)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), {"loss": loss}


def confident(probs, target, confidence, class_keep):
    """The pixels the student learns from: the teacher's probability above ``confidence``,
    or among the most confident ``class_keep`` share of the batch's pixels of its class, so
    no class the teacher predicts is masked out of existence (class-balanced self-training)."""
    score = probs.max(-1)
    num_classes = probs.shape[-1]

    def class_thresholds():
        classes = jax.nn.one_hot(target, num_classes, dtype=bool).reshape(-1, num_classes)
        # Per class, its scores in descending order (others last); its threshold is the score
        # at rank class_keep * count.
        ranked = -jnp.sort(jnp.where(classes, -score.reshape(-1, 1), jnp.inf), axis=0)
        count = classes.sum(0)
        rank = jnp.clip(jnp.ceil(class_keep * count).astype(jnp.int32) - 1, 0, ranked.shape[0] - 1)
        return jnp.where(count > 0, ranked[rank, jnp.arange(num_classes)], jnp.inf)

    # The sort costs a tenth of a CPU step; a run without class_keep skips it.
    no_thresholds = functools.partial(jnp.full_like, score, jnp.inf, shape=(num_classes,))  # varying like score
    threshold = jax.lax.cond(class_keep > 0, class_thresholds, no_thresholds)
    return (score > confidence) | (score >= threshold[target])


def view_probabilities(model, params, images, views: int):
    """Softmax of ``images`` [N, h, w, S], averaged over the first ``views`` dihedral views
    (each mapped back to the input's orientation)."""
    total = 0.0
    for view in range(views):
        logits = model.apply({"params": params}, augment.dihedral_all(images, view), train=False)
        probs = jax.nn.softmax(logits.astype(jnp.float32))  # in float32 whatever the net computed in
        total = total + augment.dihedral_all(probs, augment.DIHEDRAL_INVERSE[view])
    return total / views


def unbiased_teacher_step(state: TeacherStudentState, batch, rng, *, model, optimizer, loss_fn,
                          teacher_views: int = 1):
    """One Unbiased-Teacher step: the teacher labels a weak view (its probabilities averaged
    over ``teacher_views`` dihedral views of it), the student learns a strong one (boxes
    pasted between crops with probability ``cutmix``, labels alike), and with weight
    ``anchor`` (falling to 0 over ``anchor_fade`` steps, if set) the crop's pseudo labels too."""
    values = state.values
    weak_key, strong_key, dropout_key = jax.random.split(jax.random.fold_in(rng, state.step), 3)
    mix_key = jax.random.fold_in(strong_key, 1)  # apart from the three, so a run without CutMix draws as before
    has_sparse = "sparse" in batch
    weak, pseudo_labels, *sparse = augment.weak(weak_key, batch["image"], batch["label"],
                                                *([batch["sparse"]] if has_sparse else []))
    strong = augment.strong(strong_key, weak, values["strong_probability"])
    probs = view_probabilities(model, state.teacher, weak, teacher_views)
    target = probs.argmax(-1)
    keep = confident(probs, target, values["confidence"], values["class_keep"])
    boxes = augment.cutmix_boxes(mix_key, weak.shape[0], weak.shape[1], values["cutmix"])
    strong, target, keep, pseudo_labels, *sparse = augment.cutmix(boxes, strong, target, keep, pseudo_labels, *sparse)

    fade = values["anchor_fade"]
    anchor_weight = values["anchor"] * jnp.where(fade > 0, jnp.clip(1 - state.step / jnp.maximum(fade, 1), 0, 1), 1)

    def objective(params):
        logits = model.apply({"params": params}, strong, train=True, rngs={"dropout": dropout_key})
        if has_sparse:  # labelled pixels learn their labels; the teacher and the anchor have the rest
            term, labelled = supervised(loss_fn, logits, sparse[0], values)
            anchor = masked_mean(loss_fn(logits, pseudo_labels, values["loss"]), ~labelled)
            return masked_mean(loss_fn(logits, target, values["loss"]), keep & ~labelled) + anchor_weight * anchor \
                + term
        anchor = loss_fn(logits, pseudo_labels, values["loss"]).mean()
        return masked_mean(loss_fn(logits, target, values["loss"]), keep) + anchor_weight * anchor

    loss, grads = jax.value_and_grad(objective)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    warm = jnp.minimum(1 - 1 / (state.step + 1), values["ema"])
    decay = jnp.where(values["ema_warmup"] > 0, warm, values["ema"])
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, teacher=ema_update(state.teacher, params, decay)
    )
    kept_by_class = (jax.nn.one_hot(target, probs.shape[-1]) * keep[..., None]).mean(axis=(0, 1, 2))
    # How far the teacher has moved off the pseudo labels: a drift that needs no ground truth.
    agreement = (target == pseudo_labels).mean()
    return new_state, {"loss": loss, "kept": keep.mean(), "pseudo_agreement": agreement,
                       "kept_by_class": kept_by_class}


def _as_values(values: dict):
    return jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), values)


def stage2_state(params, optimizer, values: dict) -> Stage2State:
    return Stage2State(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                       values=_as_values(values))


def teacher_student_state(params, optimizer, values: dict) -> TeacherStudentState:
    """Student and teacher both start from ``params`` (the stage-2 weights)."""
    return TeacherStudentState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                               teacher=jax.tree.map(jnp.copy, params),  # own buffers: the step donates both
                               values=_as_values(values))


def unbiased_teacher_values(settings: Stage3Config) -> dict:
    return {"confidence": settings.confidence, "ema": settings.ema, "ema_warmup": settings.ema_warmup,
            "strong_probability": settings.strong_probability, "anchor": settings.anchor,
            "anchor_fade": settings.anchor_fade, "cutmix": settings.cutmix, "class_keep": settings.class_keep}


@dataclasses.dataclass(frozen=True)
class Stage3Method:
    """A self-correction method: its training state from the stage-2 weights, an optimizer
    and its values (from the stage-3 config), its pure step, and the field of the final
    state that labels the volume."""

    init: Callable
    step: Callable
    values: Callable
    predict_with: str


# A new stage-3 method is one entry here; ``stage3.method`` selects it.
STAGE3_METHODS = {
    "unbiased_teacher": Stage3Method(teacher_student_state, unbiased_teacher_step, unbiased_teacher_values,
                                     predict_with="teacher"),
}


@dataclasses.dataclass(frozen=True)
class StepKind:
    """What a compiled training step is specialised on; every other setting is a value in
    the state. ``method`` is ``stage2`` or a stage-3 method."""

    method: str
    model: Any  # a flax module: hashable, equal when its fields are
    optimizer: OptimizerSpec
    loss: str
    weak_augment: bool = True  # stage 2 only
    teacher_views: int = 1  # stage 3 only: the number of teacher forward passes is the program's


def step_function(kind: StepKind, optimizer) -> Callable:
    """The pure step of ``kind``, bound to its model, ``optimizer`` and loss."""
    bound = {"model": kind.model, "optimizer": optimizer, "loss_fn": pixel_loss(kind.loss)}
    if kind.method == "stage2":
        return functools.partial(stage2_step, weak_augment=kind.weak_augment, **bound)
    return functools.partial(STAGE3_METHODS[kind.method].step, teacher_views=kind.teacher_views, **bound)


@functools.cache
def compiled_step(kind: StepKind, mesh, population: bool = False):
    """The step of ``kind`` jitted once per mesh: state replicated (and donated), batch split
    on ``data``. With ``population``, the step is vmapped over a leading member axis that
    state, batch and rng are split on along the mesh's ``population`` axis."""
    # The learning rate given here only seeds a new state; the step reads the state's.
    step = step_function(kind, optimizer_from(kind.optimizer, learning_rate=1.0))
    if population:
        # Manual over ``population`` (each device group vmaps its own members), automatic over
        # ``data``: left to the partitioner, a vmapped step's grouped convolutions come out
        # wrong when their groups (the members) are split over devices.
        members = PartitionSpec("population")
        step = jax.shard_map(jax.vmap(step), mesh=mesh, in_specs=(members, members, members),
                             out_specs=(members, members), axis_names={"population"})
        state_sharding = NamedSharding(mesh, members)
        batch = NamedSharding(mesh, PartitionSpec("population", "data"))
        return jax.jit(step, in_shardings=(state_sharding, batch, state_sharding),
                       out_shardings=(state_sharding, state_sharding), donate_argnums=0)
    repl = replicated(mesh)
    return jax.jit(step, in_shardings=(repl, batch_sharded(mesh), repl), out_shardings=(repl, repl),
                   donate_argnums=0)


def placed(tree, sharding):
    """``tree``, the same on every process, as arrays of ``sharding`` (which may span processes)."""

    def place(leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(place(jax.random.key_data(leaf)), impl=jax.random.key_impl(leaf))
        return jax.make_array_from_process_local_data(sharding, np.asarray(leaf))

    return jax.tree.map(place, tree)


def _put_batch(batches: list, mesh):
    """One member's batch split on ``data``, or the members' batches stacked and split on ``population`` too."""
    if len(batches) == 1:
        sharding, batch = batch_sharded(mesh), batches[0]
    else:
        sharding = NamedSharding(mesh, PartitionSpec("population", "data"))
        batch = jax.tree.map(lambda *xs: np.stack(xs), *batches)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def population_mesh(size: int, devices=None) -> jax.sharding.Mesh:
    """A ``population`` x ``data`` mesh for ``size`` members: the members split over as
    many devices as divide both, each member's batch over the rest."""
    devices = list(devices or jax.devices())
    members = math.gcd(size, len(devices))
    return jax.make_mesh((members, len(devices) // members), ("population", "data"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2, devices=devices)


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


def saved_steps(directory: Path) -> set[int]:
    """The steps of the finished checkpoints. Read from the directory's names (orbax renames
    a step into place once written), not with a CheckpointManager, which on several
    processes waits for all of them."""
    return {int(entry.name) for entry in Path(directory).iterdir() if entry.name.isdigit()} \
        if Path(directory).is_dir() else set()


def latest_step(directory: Path) -> int | None:
    """The last finished checkpoint's step."""
    return max(saved_steps(directory), default=None)


def _latest(directory: Path) -> Path:
    step = latest_step(directory)
    if step is None:
        raise SrjaxError(f"{directory} holds no checkpoint; run the stage first")
    return (Path(directory) / str(step)).absolute()


def latest_params(directory: Path, key: str = "params"):
    """Host (numpy) copies of ``key`` (``params`` or ``teacher``) from a checkpoint directory's
    latest step, whatever devices and processes saved it."""
    path = _latest(directory) / "state"
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                            ocp.PyTreeCheckpointHandler().metadata(path).tree)
    return _reader(ocp.PyTreeCheckpointHandler()).restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))[key]


def saved_record(directory: Path) -> dict:
    """The history and metric sums saved with a checkpoint directory's latest step."""
    return _reader(ocp.JsonCheckpointHandler()).restore(_latest(directory) / "record")


def _reader(handler) -> ocp.Checkpointer:
    """A checkpointer that reads on this process alone (by default orbax waits for every process)."""
    me = jax.process_index()
    return ocp.Checkpointer(handler, multiprocessing_options=ocp.options.MultiprocessingOptions(
        primary_host=me, active_processes={me}))


def prediction_key(stage: str, config) -> str:
    """The state field whose weights label the volume after ``stage``."""
    return "params" if stage == "stage2" else STAGE3_METHODS[config.stage3.method].predict_with


@dataclasses.dataclass
class Member:
    """One run a training loop advances: its starting state, its crops, where it is
    checkpointed, and the seed of its step's randomness."""

    state: Any
    dataset: Any
    checkpoint_dir: Path
    seed: int


class _Progress:
    """A member's place in training: its checkpoints, data iterator, history and metric sums."""

    def __init__(self, member: Member, mesh, keep_steps, read_threads: int, start: int):
        """Resume at checkpoint ``start`` (0: from the beginning), dropping any later ones."""
        self.state = member.state
        self.manager = checkpoint_manager(member.checkpoint_dir, keep_steps)
        for later in [step for step in self.manager.all_steps() if step > start]:
            self.manager.delete(later)
        self.iterator = data.iterate(member.dataset, read_threads)
        self.history: list[dict] = []
        self.sums: dict[str, list] = {}
        if start:
            self.state, record = restore_state(member.checkpoint_dir, member.state, mesh, start)
            self.iterator.set_state(record["iterator"])
            self.history, self.sums = record["history"], record.get("sums", {})

    def save(self, done: int, state) -> None:
        record = {"iterator": self.iterator.get_state(), "history": self.history, "sums": self.sums}
        with deferred_interrupts():  # a checkpoint is never cut short by Ctrl-C
            self.manager.save(done, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                            record=ocp.args.JsonSave(record)))
            self.manager.wait_until_finished()


def train(name: str, kind: StepKind, members: list[Member], mesh, *, checkpoint_every: int, read_threads: int,
          keep_steps=(), progress: bool = True) -> list[tuple]:
    """Train each member over its dataset, resuming from its latest checkpoint; return
    each one's final state, per-step history of the scalar metrics and sums of the vector
    ones (over all its steps, resumed or not).

    One member trains on the 1-D ``data`` mesh. Several (of equal length) train in
    lockstep as one vmapped step on a ``population`` x ``data`` mesh, each saved in its
    own directory exactly as if it had trained alone; they resume together from the
    earliest of their latest checkpoints. Checkpoints come every ``checkpoint_every``
    steps and at ``keep_steps``, which are kept. A non-finite loss stops training before
    anything from that step on is saved.
    """
    total = len(members[0].dataset)
    if any(len(m.dataset) != total for m in members):
        raise SrjaxError(f"{name}: the members of a population must have as many steps")
    # A population killed while saving has members one checkpoint apart; all resume from the earliest.
    start = min(latest_step(m.checkpoint_dir) or 0 for m in members)
    tracks = [_Progress(member, mesh, keep_steps, read_threads, start) for member in members]
    together = len(members) > 1
    placement = NamedSharding(mesh, PartitionSpec("population")) if together else replicated(mesh)
    state = placed(_stack([t.state for t in tracks]), placement)
    rng = placed(_stack([jax.random.key(m.seed) for m in members]), placement)
    step = compiled_step(kind, mesh, together)
    bar = progress_bar(total=total, initial=start, desc=name, unit="step", disable=not progress)
    pending = []
    for index in range(start, total):
        check_interrupt()
        batch = _put_batch([next(t.iterator) for t in tracks], mesh)
        if index == start:
            _compile_together(step, state, batch, rng)
        state, metrics = step(state, batch, rng)
        pending.append(metrics)
        done = index + 1
        if done % checkpoint_every == 0 or done == total or done in keep_steps:
            first, pending = done - len(pending), jax.device_get(pending)
            by_member = zip(*[_unstack(metrics, len(tracks)) for metrics in pending])
            for track, metrics in zip(tracks, by_member):  # every member's metrics are checked before any is saved
                _collect(name, list(metrics), first, track.history, track.sums)
            for track, member_state in zip(tracks, _unstack(_host(state, together), len(tracks))):
                track.save(done, member_state)
            pending = []
            bar.set_postfix(loss=f"{tracks[0].history[-1]['loss']:.4f}")
        bar.update(1)
    bar.close()
    for track in tracks:
        track.manager.close()
    return [(member_state, t.history, t.sums)
            for member_state, t in zip(_unstack(_host(state, together), len(tracks)), tracks)]


def _compile_together(step, *args) -> None:
    """Compile ``step`` for ``args`` (into its cache) on every process before any runs it:
    a process that enters a step's collectives long before another fails (on CPU, gloo
    gives up after 30 s), and the processes compile at different speeds."""
    step.lower(*args).compile()
    parallel.barrier("compiled")


def _stack(trees: list):
    """Several members' trees as one whose leaves lead with a member axis; one member's as it is."""
    return trees[0] if len(trees) == 1 else jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _unstack(tree, count: int) -> list:
    """The ``count`` members of a tree ``_stack`` made."""
    return [tree] if count == 1 else [jax.tree.map(lambda leaf, i=i: leaf[i], tree) for i in range(count)]


def _host(state, together: bool):
    """A population's state on the host, where it is split by member; one member's stays put."""
    return jax.device_get(state) if together else state


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
