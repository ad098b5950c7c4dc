"""Does the ground-truth-free stopping rule (``srjax.stopping``) pick a good stage-3 duration?

  python tools/check_stage3_stopping.py SWEEP_DIR... [--window 300] [--tolerance 0.002]

Reads the run directories of sweeps whose members differ only in ``stage3.steps`` (the
``stage3_*`` variants of ``experiments/self_correction.py``, with ``default``), groups
them by volume and every other setting, and prints per group the stage-3 mIoU at each
duration, the best duration, the step the rule picks from the longest member's
history, and what stopping there costs against the best duration and against the
group's ``stage3.steps`` of the preset (the default). Then, per family, the mean of
those costs over seeds. Ground truth is used only to score; the rule never sees it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from srjax.presets import cpu
from srjax.stopping import TOLERANCE, WINDOW, levelled_off

DEFAULT_STEPS = cpu().stage3.steps


def _runs(directories: list[Path]):
    """(group key, family, seed, stage-3 steps, stage-3 mIoU, run directory) of every finished run."""
    for directory in directories:
        for run in sorted((directory / "runs").glob("*")):
            if not (run / "metrics.json").exists():
                continue
            config = json.loads((run / "config.json").read_text())
            steps = config["stage3"].pop("steps")
            volume = json.loads((run / "run.json").read_text())["volume"]
            key = json.dumps([volume["sha256"], config], sort_keys=True)
            miou = json.loads((run / "metrics.json").read_text())["stage3"]["miou"]
            yield key, Path(volume["path"]).parent.name, config["seed"], steps, miou, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", type=Path)
    parser.add_argument("--window", type=int, default=WINDOW)
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    args = parser.parse_args()

    groups: dict[str, dict] = {}
    for key, family, seed, steps, miou, run in _runs(args.sweeps):
        group = groups.setdefault(key, {"family": family, "seed": seed, "miou": {}, "runs": {}})
        group["miou"][steps], group["runs"][steps] = miou, run
    costs: dict[str, list[tuple[float, float]]] = {}
    for group in sorted(groups.values(), key=lambda g: (g["family"], g["seed"])):
        if len(group["miou"]) < 3 or DEFAULT_STEPS not in group["miou"]:
            continue
        miou, longest = group["miou"], max(group["miou"])
        kept = [step["kept"] for step in json.loads((group["runs"][longest] / "history.json").read_text())["stage3"]]
        picked = levelled_off(kept, args.window, args.tolerance)
        if picked not in miou:  # the rule stops between two scored durations: take the next one scored
            picked = min(steps for steps in miou if steps >= picked)
        best = max(miou, key=miou.get)
        against = (miou[picked] - miou[best], miou[picked] - miou[DEFAULT_STEPS])
        costs.setdefault(group["family"], []).append(against)
        curve = "  ".join(f"{steps}: {100 * value:.1f}" for steps, value in sorted(miou.items()))
        print(f"{group['family']:>10} seed {group['seed']}  mIoU % by steps  {curve}")
        print(f"{'':>18}best {best}, rule {picked}: {100 * against[0]:+.1f} points against the best, "
              f"{100 * against[1]:+.1f} against {DEFAULT_STEPS}")
    for family, values in costs.items():
        values = np.array(values) * 100
        print(f"{family}: the rule's stage-3 mIoU {values[:, 0].mean():+.2f} ± {values[:, 0].std(ddof=1):.2f} points "
              f"against each seed's best duration, {values[:, 1].mean():+.2f} ± {values[:, 1].std(ddof=1):.2f} "
              f"against {DEFAULT_STEPS} steps ({len(values)} seeds)")


if __name__ == "__main__":
    main()
