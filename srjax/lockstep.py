"""Runs advanced step by step together: every run's first step, then every run's second, ...
(``srjax run`` is one run; ``srjax sweep`` its members).

Going breadth-first lets runs whose training stage has one ``population_key`` (the same
compiled step and batch shapes; only values such as the seed, learning rate, δ or α
differ) and that stand at the same point train as one vmapped population
(``train.train``), so a seed sweep on an accelerator costs about one run. Within a step,
runs that do their own work go before runs that take it from another (``shared_steps``).
A step's wall time is recorded for every run it served: a population's is the whole
population's.
"""

from __future__ import annotations

import time

from srjax import parallel, stages, train
from srjax.progress import bar as progress_bar


def _takes_work(step) -> bool:
    return getattr(step, "source", None) is not None


def _trains(step) -> bool:
    return isinstance(step, stages.TrainingStage) and not _takes_work(step)


def _groups(todo: list[tuple], populations: bool) -> list[list[tuple]]:
    """The (context, step) pairs of one step index, in the order they run: alone, or by population."""
    groups: dict[object, list] = {}
    for index, (ctx, step) in enumerate(sorted(todo, key=lambda pair: _takes_work(pair[1]))):
        key = step.population_key(ctx) if populations and _trains(step) else index
        groups.setdefault(key, []).append((ctx, step))
    return list(groups.values())


def run_runs(runs: list[tuple[stages.Context, tuple]], *, populations: bool, progress: bool, desc: str = "") -> None:
    """Run every step not yet done of every (context, steps) pair, recording each one's wall
    time in its run's timings.json; all runs have as many steps. Several runs show a bar
    over their steps; every run, its training's."""
    populations = populations and parallel.count() == 1  # a population's batch is not split by process
    for ctx, _ in runs:
        ctx.open()
    count = len(runs[0][1]) if runs else 0
    bar = progress_bar(total=len(runs) * count, desc=desc, unit="step", disable=not progress or len(runs) == 1)
    for index in range(count):
        todo = [(ctx, steps[index]) for ctx, steps in runs if not steps[index].done(ctx)]
        parallel.barrier("checked")  # no process starts a step before every one has seen it undone
        bar.update(len(runs) - len(todo))
        for group in _groups(todo, populations):
            start = time.perf_counter()
            ctx, step = group[0]
            if _trains(step):  # with its own progress bar: the members' contexts show none
                mesh = ctx.mesh if len(group) == 1 else train.population_mesh(len(group), list(ctx.mesh.devices.flat))
                step.run_together([member for member, _ in group], mesh, progress=progress)
            else:
                step.run(ctx)
            seconds = time.perf_counter() - start
            for member, member_step in group:
                stages.record_time(member, member_step.name, seconds)
            bar.update(len(group))
    bar.close()
