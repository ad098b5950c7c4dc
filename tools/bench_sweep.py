"""What a sweep saves: shared work against the members run one by one, and populations
against members trained in turn, each pair measured in the same run on this machine.

  shared work   a Table V-shaped study on the demo phantom at the cpu preset: stage 2 for
                S, 2S and 4S steps, stage 3 for S steps after each, two seeds. Shared,
                stage 1 runs once and stage 2 once per seed (4S steps, kept at S and 2S);
                one by one (``share=False``), every member computes its own. Both in this
                process, so neither pays a compile the other does not.
  populations   three seeds of the cpu preset for S + S steps: trained as one vmapped
                population per stage against one after another.

  python tools/bench_sweep.py [--steps S]   (S = 100: about 20 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from srjax.sweep import Sweep, grid, run_sweep, sized


def duration_study(steps: int) -> Sweep:
    base, phantom = sized("cpu")
    volumes = {"phantom": phantom}
    axes = {"stage3.steps": [steps], "stage2.steps": [steps, 2 * steps, 4 * steps]}
    return Sweep("durations", base, volumes, grid(volumes, axes, seeds=(0, 1)))


def seed_study(steps: int) -> Sweep:
    base, phantom = sized("cpu")
    volumes = {"phantom": phantom}
    axes = {"stage2.steps": [steps], "stage3.steps": [steps]}
    return Sweep("seeds", base, volumes, grid(volumes, axes, seeds=(0, 1, 2)))


def timed(study: Sweep, out: Path, **options) -> tuple[float, list[dict]]:
    """The sweep's wall time, and its results rows."""
    start = time.perf_counter()
    rows = run_sweep(study, out, "cpu", progress=False, **options)
    return time.perf_counter() - start, rows


def training_seconds(rows: list[dict], population: bool) -> float:
    """Wall time of stage 2 and stage 3: a population's is recorded in every member's row."""
    per_member = [row["seconds.stage2"] + row["seconds.stage3"] for row in rows]
    return max(per_member) if population else sum(per_member)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        durations = duration_study(args.steps)
        for populations in (False, True):  # compile the cpu preset's steps once, for every case below
            timed(seed_study(2), root / f"warm-up-{populations}", populations=populations)
        one_by_one, _ = timed(durations, root / "one-by-one", share=False)
        shared, _ = timed(durations, root / "shared", share=True)
        print(f"shared work ({len(durations.members)} members, stage 2 for {args.steps}/{2 * args.steps}/"
              f"{4 * args.steps} steps, stage 3 for {args.steps}):")
        print(f"  sweep      one by one {one_by_one:7.1f} s   shared   {shared:7.1f} s   ratio {one_by_one / shared:.2f}x")
        seeds = seed_study(args.steps)
        in_turn, in_turn_rows = timed(seeds, root / "in-turn", populations=False)
        together, together_rows = timed(seeds, root / "population", populations=True)
        trained_in_turn, trained_together = training_seconds(in_turn_rows, False), training_seconds(together_rows, True)
        print(f"populations ({len(seeds.members)} seeds, {args.steps} + {args.steps} steps):")
        print(f"  sweep      in turn    {in_turn:7.1f} s   together {together:7.1f} s   ratio {in_turn / together:.2f}x")
        print(f"  training   in turn    {trained_in_turn:7.1f} s   together {trained_together:7.1f} s   "
              f"ratio {trained_in_turn / trained_together:.2f}x")


if __name__ == "__main__":
    main()
