"""Sweeps: many runs that differ in a few settings, sharing the work they have in common.

A sweep file (one per study, in ``experiments/``) defines ``sweep(size) -> Sweep``: a
base config, the volumes (phantoms or scans) and the members, each a named set of
overrides on one volume. ``srjax sweep FILE --out DIR`` runs every member as an
ordinary run directory ``DIR/runs/NAME`` and writes the results tables (``srjax.results``).

Work is shared, not redone (``srjax.shared_steps``):
  * stage 1 is computed by the first member of each (volume, pseudo config) group, and
    the seed where the method draws one; the others link its pseudo labels;
  * stage 2 is trained once per (stage 1, model, loss, data, stage-2 settings, seed).
    With a schedule that does not depend on the duration (``constant``, its warm-up no
    longer than the shortest member), the state after N steps of a longer stage 2 is
    that of an N-step one, so members that differ only in stage-2 duration share one:
    the longest trains first, keeping a checkpoint at each shorter member's stopping
    point, from which that member goes on to stage 3;
  * stage 3 is trained once per (stage 2, its duration, stage-3 settings): members that
    differ only in how the volume is labelled afterwards share it, and members that
    differ only in stage-3 duration share it as stage 2's durations do;
  * a finished member of the sweep directory lends what it saved to members run later,
    whether or not that run selects it.

Members run breadth-first (``srjax.lockstep``): those whose training differs only in
values can train as one vmapped population. A killed sweep, rerun, finishes only what
is missing: each member resumes or skips.

A study too long for one sitting or one machine is run in shares: ``members`` (name
patterns) picks the members one invocation runs, and ``prior`` carries the results of
members another sweep directory of the same study finished (on another host, or an
earlier run whose directory is gone but whose results.json was kept): they are not
rerun and their rows join this directory's tables.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import importlib.util
import itertools
import json
from pathlib import Path

import jax

from srjax import config as cfg
from srjax import data, io, lockstep, parallel, pipeline, presets, pseudo, results, rundir, stages, train
from srjax.errors import SrjaxError
from srjax.optim import OptimizerSpec
from srjax.outputs import absolute, check_parent_writable, exclusive, write_json
from srjax.phantom import PhantomSpec, make_phantom
from srjax.shared_steps import LinkedPseudoLabels, SharedStage2, SharedStage3

SIZES = tuple(presets.PRESETS)
# The phantom each size runs on: seconds per member (tiny), the demo (cpu), an accelerator's (paper).
PHANTOM_SHAPES = {"tiny": (12, 48, 48), "cpu": (48, 160, 160), "paper": (192, 512, 512)}


@dataclasses.dataclass(frozen=True)
class Scan:
    """A volume on disk, and its ground truth if there is one."""

    path: str
    truth: str | None = None


@dataclasses.dataclass(frozen=True)
class Member:
    name: str
    volume: str  # a key of Sweep.volumes
    overrides: tuple[tuple[str, object], ...]  # (config key, value), applied to the base config
    variant: str = ""  # the name of a set of overrides (``variants``); then the sweep's axis


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str
    base: cfg.Config
    volumes: dict  # name -> PhantomSpec or Scan
    members: tuple[Member, ...]
    figures: tuple[str, ...] = ()  # extra figures of srjax.results.FIGURES, e.g. "confusion"

    def config(self, member: Member) -> cfg.Config:
        return cfg.apply_overrides(self.base, [f"{key}={value}" for key, value in member.overrides])

    @property
    def axes(self) -> list[str]:
        """The settings that vary between members (the volume too, when there are several);
        the seed is not an axis but the repetition each axis value is averaged over."""
        if any(m.variant for m in self.members):
            varying = ["variant"]
        else:
            keys = list(dict.fromkeys(key for m in self.members for key, _ in m.overrides if key != "seed"))
            varying = [k for k in keys if len({dict(m.overrides).get(k) for m in self.members}) > 1]
        return (["volume"] if len(self.volumes) > 1 else []) + varying


def member_name(volume: str, overrides, several_volumes: bool) -> str:
    parts = ([f"volume={volume}"] if several_volumes else []) + [f"{key}={value}" for key, value in overrides]
    return ",".join(parts).replace("/", "_") or "base"


def grid(volumes: dict, axes: dict[str, list], seeds=(0,)) -> tuple[Member, ...]:
    """Every combination of the ``axes`` values and ``seeds`` on every volume."""
    keys = list(axes) + ["seed"]
    members = []
    for volume in volumes:
        for values in itertools.product(*axes.values(), seeds):
            overrides = tuple(zip(keys, values))
            members.append(Member(member_name(volume, overrides, len(volumes) > 1), volume, overrides))
    return tuple(members)


def variants(volumes: dict, named: dict[str, dict], seeds=(0,), per_volume: dict[str, dict] | None = None
             ) -> tuple[Member, ...]:
    """Each named set of overrides with each of ``seeds`` on every volume, after the volume's
    own overrides in ``per_volume`` (its class count, say); the variant's name is the axis."""
    members = []
    for volume in volumes:
        own = (per_volume or {}).get(volume, {})
        for variant, overrides in named.items():
            for seed in seeds:
                parts = ([f"volume={volume}"] if len(volumes) > 1 else []) + [variant, f"seed={seed}"]
                settings = (*own.items(), *overrides.items(), ("seed", seed))
                members.append(Member(",".join(parts), volume, settings, variant))
    return tuple(members)


def sized(size: str) -> tuple[cfg.Config, PhantomSpec]:
    """The preset and the demo phantom of ``size``."""
    if size not in SIZES:
        raise SrjaxError(f"unknown sweep size {size!r}; choose one of {', '.join(SIZES)}")
    return presets.get(size), PhantomSpec(shape=PHANTOM_SHAPES[size])


def load(path: str | Path, size: str) -> Sweep:
    """The sweep a sweep file defines at ``size``."""
    path = Path(path)
    if not path.is_file():
        raise SrjaxError(f"sweep file {path} does not exist; pass one of the files in experiments/")
    spec = importlib.util.spec_from_file_location(f"srjax_sweep_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "sweep", None)):
        raise SrjaxError(f"sweep file {path} defines no sweep(size) function")
    sweep = module.sweep(size)
    names = [m.name for m in sweep.members]
    if len(set(names)) != len(names):
        raise SrjaxError(f"sweep file {path}: two members share a name; give each member its own")
    return sweep


@dataclasses.dataclass(frozen=True)
class Planned:
    """A member, its resolved config and run directory, and the members it takes work from."""

    member: Member
    config: cfg.Config
    run: Path
    stage1_from: Path | None
    stage2_from: Path | None
    keep_stage2: tuple[int, ...]  # stage-2 steps that other members start stage 3 from
    stage3_from: Path | None = None
    keep_stage3: tuple[int, ...] = ()  # stage-3 steps at which other members stop

    def steps(self):
        return (LinkedPseudoLabels(self.stage1_from), stages.SparseLabels(),
                SharedStage2(self.stage2_from, self.keep_stage2), SharedStage3(self.stage3_from, self.keep_stage3),
                *stages.AFTER_TRAINING)


def _stage1_key(volume: str, config: cfg.Config) -> str:
    seed = config.seed if config.pseudo.method in pseudo.SEEDED_METHODS else None
    return json.dumps([volume, dataclasses.asdict(config.pseudo), seed])


def _without_duration(settings, total: int) -> dict:
    """A training stage's settings with its duration left only where it shapes the schedule."""
    values = dataclasses.asdict(settings)
    del values["epochs"], values["steps"]
    values["total"] = OptimizerSpec.of(settings, total).total_steps
    return values


def _stage2_key(volume: str, config: cfg.Config, total: int) -> str:
    data_settings = dict(dataclasses.asdict(config.data), read_threads=None)
    return json.dumps([_stage1_key(volume, config), dataclasses.asdict(config.model),
                       dataclasses.asdict(config.loss), data_settings, _without_duration(config.stage2, total),
                       config.seed, dataclasses.asdict(config.sparse) if config.sparse.oracle_slices else None])


def _shorter(group: list[int], totals: list[int]) -> tuple[int, ...]:
    """The durations of ``group``'s members other than its longest: where the longest keeps a checkpoint."""
    return tuple(sorted({totals[i] for i in group} - {max(totals[i] for i in group)}))


def plan(sweep: Sweep, out: Path, depths: dict[str, int], share: bool = True,
         saved: dict[str, dict[str, set[int]]] | None = None) -> list[Planned]:
    """The members, each with the members it takes work from: in each stage-2 group the
    first of the longest stage 2s trains it, and in each stage-3 group the first of the
    longest stage 3s (``srjax.lockstep`` runs a step's own work before the work taken
    from it), unless a finished member already saved the checkpoint every member of the
    group stops at (``saved``: member name -> stage -> checkpoint steps); without
    ``share`` every member does all its own work."""
    configs = [sweep.config(m) for m in sweep.members]
    saved = saved or {}

    def source(group: list[int], totals: list[int], stage: str) -> int:
        needed = {totals[j] for j in group}
        lenders = [i for i in group if needed <= saved.get(sweep.members[i].name, {}).get(stage, set())]
        return lenders[0] if lenders else max(group, key=lambda i: totals[i])

    def duration(i: int, stage: str) -> int:
        settings = getattr(configs[i], stage)
        depth, batch_size = depths[sweep.members[i].volume], configs[i].data.batch_size
        return data.batches(depth, batch_size, settings.epochs, settings.steps)[1]

    totals2 = [duration(i, "stage2") for i in range(len(configs))]
    totals3 = [duration(i, "stage3") for i in range(len(configs))]
    groups2: dict[str, list[int]] = {}
    for i, (m, c) in enumerate(zip(sweep.members, configs)):
        groups2.setdefault(_stage2_key(m.volume, c, totals2[i]) if share else str(i), []).append(i)
    planned, stage1_runs = [], {}
    for indices in groups2.values():
        groups3: dict[str, list[int]] = {}  # within one stage-2 group (a single member without ``share``)
        for i in indices:
            groups3.setdefault(json.dumps([totals2[i], _without_duration(configs[i].stage3, totals3[i])]), []).append(i)
        stage3_group = {i: group for group in groups3.values() for i in group}
        stage2_source = source(indices, totals2, "stage2")
        for i in [stage2_source] + [i for i in indices if i != stage2_source]:
            member, config = sweep.members[i], configs[i]
            run = out / "runs" / member.name
            stage1_from = stage1_runs.setdefault(_stage1_key(member.volume, config) if share else str(i), run)
            stage3_source = source(stage3_group[i], totals3, "stage3")
            takes_stage2, takes_stage3 = i != stage2_source, i != stage3_source
            planned.append(Planned(member, config, run, None if stage1_from == run else stage1_from,
                                   out / "runs" / sweep.members[stage2_source].name if takes_stage2 else None,
                                   () if takes_stage2 else _shorter(indices, totals2),
                                   out / "runs" / sweep.members[stage3_source].name if takes_stage3 else None,
                                   () if takes_stage3 else _shorter(stage3_group[i], totals3)))
    return planned


def _volume_paths(out: Path, name: str, volume) -> tuple[Path, Path | None]:
    """Where a member reads the volume and its truth; a phantom is generated once into the sweep directory."""
    if isinstance(volume, Scan):
        return io.local_path(volume.path), volume.truth and io.local_path(volume.truth)
    paths = out / "volumes" / name / "volume.ome.zarr", out / "volumes" / name / "truth.ome.zarr"
    if not all(path.exists() for path in paths):
        arrays = make_phantom(volume)
        for path, array in zip(paths, arrays):
            io.write_volume(path, array, name=f"phantom {name} {path.name.split('.')[0]}")
    return paths


def _record(sweep: Sweep, size: str, source: str) -> dict:
    """The study as run: each member's resolved config is the base's (every key) with the
    member's changes, so a later srjax can tell whether a member would still run the same
    (a key added since counts as its default)."""
    base = cfg.flat(sweep.base)

    def changes(member: Member) -> dict:
        return {key: value for key, value in cfg.flat(sweep.config(member)).items() if base[key] != value}

    return {"sweep": sweep.name, "file": source, "size": size, "axes": sweep.axes, "figures": list(sweep.figures),
            "base": base, "members": [{"name": m.name, "volume": m.volume, "overrides": dict(m.overrides),
                                       "config": changes(m), **({"variant": m.variant} if m.variant else {})}
                                      for m in sweep.members]}


def _settings(record: dict) -> dict:
    """What makes a member the same member: its volume and overrides, by name (the resolved
    config is the run directory's to check)."""
    return {m["name"]: (m["volume"], m["overrides"], m.get("variant")) for m in record["members"]}


def _claim(out: Path, record: dict) -> None:
    """The sweep directory holds this sweep, or nothing yet. A study may gain or drop
    members between runs; a member that has started must keep its settings."""
    path = out / "sweep.json"
    if path.exists():
        old = json.loads(path.read_text())
        if (old["sweep"], old["size"]) != (record["sweep"], record["size"]):
            raise SrjaxError(f"{out} holds the sweep {old['sweep']!r} at size {old['size']}, not this one; "
                             "pass a new --out")
        new = _settings(record)
        changed = [name for name, settings in _settings(old).items()
                   if new.get(name, settings) != settings and (out / "runs" / name).exists()]
        if changed:
            raise SrjaxError(f"{out} ran member {changed[0]} with other settings than the sweep file gives it "
                             "now; pass a new --out")
    elif out.exists() and any(entry.name != ".sweep.lock" for entry in out.iterdir()):
        raise SrjaxError(f"--out {out} holds files that are not an srjax sweep; choose a new or empty directory")
    write_json(path, record)


def check(sweep: Sweep, paths: dict, mesh) -> None:
    """Every member's config and sizes against its volume, before any member starts."""
    inputs = {name: (pipeline.Input(volume, "volume"), truth and pipeline.Input(truth, "truth"))
              for name, (volume, truth) in paths.items()}
    for member in sweep.members:
        if member.volume not in sweep.volumes:
            raise SrjaxError(f"sweep member {member.name}: no volume named {member.volume!r}")
        volume, truth = inputs[member.volume]
        try:
            config = sweep.config(member)
            cfg.validate(config)
            pipeline.check_inputs(volume.source, truth and truth.source, config, mesh)
        except SrjaxError as err:
            raise SrjaxError(f"sweep member {member.name}: {err}") from None


def select(sweep: Sweep, patterns: tuple[str, ...]) -> Sweep:
    """The sweep with only the members whose name matches one of ``patterns`` (shell-style,
    e.g. ``'*,default,*'``); all of them when there are none."""
    if not patterns:
        return sweep
    chosen = tuple(m for m in sweep.members if any(fnmatch.fnmatchcase(m.name, p) for p in patterns))
    if not chosen:
        raise SrjaxError(f"--members {' '.join(patterns)} matches no member of sweep {sweep.name}; "
                         f"member names look like {sweep.members[0].name!r}")
    return dataclasses.replace(sweep, members=chosen)


def prior_rows(sweep: Sweep, size: str, paths: tuple[str | Path, ...]) -> dict[str, dict]:
    """Member name -> results row, from the results.json of earlier sweep directories of
    this study at this size; each member must have had the settings it has now."""
    members = {m.name: m for m in sweep.members}
    rows = {}
    for path in paths:
        path = absolute(path)
        path = path / "results.json" if path.is_dir() else path
        if not path.is_file():
            raise SrjaxError(f"--prior {path} does not exist; pass a sweep directory or its results.json")
        try:
            old = json.loads(path.read_text())
            record, old_rows = old["sweep"], old["rows"]
        except (ValueError, KeyError, TypeError):
            raise SrjaxError(f"--prior {path} is not an srjax sweep's results.json") from None
        if (record["sweep"], record["size"]) != (sweep.name, size):
            raise SrjaxError(f"--prior {path} holds sweep {record['sweep']!r} at size {record['size']}, "
                             f"not {sweep.name!r} at size {size}")
        if "base" not in record:
            raise SrjaxError(f"--prior {path} does not record its members' configs (an older srjax wrote it); "
                             "rerun those members")
        configs = {m["name"]: {**record["base"], **m["config"]} for m in record["members"]}
        for row in old_rows:
            member = members.get(row["member"])
            if member is None:
                continue
            changed = cfg.differences(configs[member.name], sweep.config(member))
            if changed:
                raise SrjaxError(f"--prior {path} ran member {member.name} with another config than the sweep "
                                 f"file gives it now ({changed[0]}); drop that --prior or rerun the member")
            rows[member.name] = row
    return rows


def run_sweep(sweep: Sweep, out: str | Path, size: str, source: str = "", *, share: bool = True,
              populations: bool | None = None, progress: bool = True, members: tuple[str, ...] = (),
              prior: tuple[str | Path, ...] = ()) -> list[dict]:
    """Run every member (of those ``members`` matches) that is not finished here or in a
    ``prior`` sweep directory; return and write the results table.

    ``populations`` trains members that differ only in values as one vmapped population
    (``srjax.lockstep``); by default on an accelerator only, where it costs about one
    member: on a CPU the vmapped convolutions run slower than the members one by one.
    """
    out = absolute(out)
    check_parent_writable(out)
    carried = prior_rows(sweep, size, prior)
    chosen = select(sweep, members)
    todo = dataclasses.replace(chosen, members=tuple(m for m in chosen.members if m.name not in carried))
    # A finished member of this directory lends what it saved, whether this run chose it or
    # not; it is only read, never opened as a run.
    volumes = {m.volume for m in todo.members}
    others = {m: rundir.RunDir(out / "runs" / m.name) for m in sweep.members
              if m not in todo.members and m.volume in volumes}
    finished = {m: run for m, run in others.items() if run.finished}
    saved = {m.name: {stage: train.saved_steps(run.checkpoints(stage)) for stage in ("stage2", "stage3")}
             for m, run in finished.items()}
    if populations is None:
        populations = jax.default_backend() != "cpu"
    with contextlib.ExitStack() as held:

        def claim():  # the main process holds the sweep directory and writes its volumes
            out.mkdir(parents=True, exist_ok=True)
            held.enter_context(exclusive(out / ".sweep.lock", f"sweep directory {out}"))
            _claim(out, _record(sweep, size, source))
            results.carry(out, carried)
            for name, volume in sweep.volumes.items():
                if any(m.volume == name for m in todo.members):
                    _volume_paths(out, name, volume)

        parallel.on_main(claim)
        paths = {name: _volume_paths(out, name, volume) for name, volume in sweep.volumes.items()
                 if any(m.volume == name for m in todo.members)}
        check(todo, paths, train.make_mesh())
        depths = {name: io.open_volume(path, "volume").shape[0] for name, (path, _) in paths.items()}
        runs = []
        planning = dataclasses.replace(todo, members=todo.members + tuple(finished))
        for planned in plan(planning, out, depths, share, saved):
            if planned.member in finished:
                continue
            volume, truth = paths[planned.member.volume]
            ctx = held.enter_context(pipeline.opened_run(volume, planned.run, planned.config, truth, preset=size,
                                                         progress=False))
            if not ctx.run.finished:
                runs.append((ctx, planned.steps()))
        lockstep.run_runs(runs, populations=populations, progress=progress and parallel.is_main(), desc=sweep.name)
        return parallel.on_main(lambda: results.write(out)) or []


def status(out: str | Path) -> list[tuple[str, str]]:
    """(member, what it has done) for every member of the sweep in ``out``."""
    out = absolute(out)
    record_path = out / "sweep.json"
    if not record_path.exists():
        raise SrjaxError(f"{out} is not a sweep directory (no sweep.json); pass the --out of srjax sweep")
    record = json.loads(record_path.read_text())
    return [(m["name"], _member_progress(rundir.RunDir(out / "runs" / m["name"]))) for m in record["members"]]


def _member_progress(run: rundir.RunDir) -> str:
    if run.finished:
        return "finished"
    if not run.record.exists():
        return "not started"
    done = [name for name, path in (("stage 1", run.stage1), ("stage 2 labels", run.stage2_labels),
                                    ("stage 3 labels", run.labels)) if path.exists()]
    for stage in ("stage2", "stage3"):
        step = train.latest_step(run.checkpoints(stage))
        if step:
            done.append(f"{stage.replace('stage', 'stage ')} at step {step}")
    return "started: " + (", ".join(done) if done else "nothing saved yet")
