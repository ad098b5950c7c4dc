"""Does the ground-truth-free stopping rule (``srjax.stopping``) pick a good stage-3 duration?

  python tools/check_stage3_stopping.py SWEEP_DIR_OR_RESULTS_JSON... [--baseline no_cutmix]

Reads the results.json of sweeps of ``experiments/self_correction.py`` (members finished
there or carried from a ``--prior``): per family and seed, the stage-3 mIoU of the
baseline variant's durations (``BASELINE_stage3_*``; ``stage3_*`` for ``default``) and of
the baseline itself (the cpu preset's duration), and the step at
which the longest one's kept share levelled off (``stage3.levelled_off``, which every run
reports). Prints per seed the mIoU at each duration, the best duration, the rule's step
and what stopping there costs against the best duration and against the default; then,
per family, the mean of those costs over seeds. Ground truth is used only to score; the
rule never sees it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from srjax.presets import cpu

DEFAULT_STEPS = cpu().stage3.steps


def _durations(paths: list[Path], baseline: str) -> dict[tuple[str, int], dict[int, dict]]:
    """(family, seed) -> stage-3 steps -> results row, over every sweep given (later ones win)."""
    prefix = "stage3_" if baseline == "default" else f"{baseline}_stage3_"
    found: dict[tuple[str, int], dict[int, dict]] = {}
    for path in paths:
        results = json.loads((path if path.is_file() else path / "results.json").read_text())
        for row in results["rows"]:
            variant = row.get("variant", "")
            if variant == baseline:
                steps = DEFAULT_STEPS
            elif variant.startswith(prefix) and variant.removeprefix(prefix).isdigit():
                steps = int(variant.removeprefix(prefix))
            else:
                continue
            found.setdefault((row["volume"], row["seed"]), {})[steps] = row
    return found


def stopping_points(paths: list[Path], baseline: str = "default") -> list[dict]:
    """Per family and seed with at least three durations scored: the mIoU at each, the best
    duration, the one the rule picks and what it costs against the best and the default."""
    points = []
    for (family, seed), rows in sorted(_durations(paths, baseline).items()):
        longest = rows[max(rows)]
        if len(rows) < 3 or DEFAULT_STEPS not in rows or longest.get("stage3.levelled_off") is None:
            continue
        miou = {steps: row["stage3.miou"] for steps, row in sorted(rows.items())}
        picked = longest["stage3.levelled_off"]
        if picked not in miou:  # the rule stops between two scored durations: take the next one scored
            picked = min(steps for steps in miou if steps >= picked)
        best = max(miou, key=miou.get)
        points.append({"family": family, "seed": seed, "miou": miou, "best": best, "picked": picked,
                       "against_best": miou[picked] - miou[best], "against_default": miou[picked] - miou[DEFAULT_STEPS]})
    return points


def _mean_sd(points: np.ndarray) -> str:
    return f"{points.mean():+.2f}" + (f" ± {points.std(ddof=1):.2f}" if len(points) > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", type=Path)
    parser.add_argument("--baseline", default="default", help="the variant whose durations are scored")
    args = parser.parse_args()

    costs: dict[str, list[tuple[float, float]]] = {}
    for point in stopping_points(args.sweeps, args.baseline):
        costs.setdefault(point["family"], []).append((point["against_best"], point["against_default"]))
        curve = "  ".join(f"{steps}: {100 * value:.1f}" for steps, value in point["miou"].items())
        print(f"{point['family']:>10} seed {point['seed']}  mIoU % by steps  {curve}")
        print(f"{'':>18}best {point['best']}, rule {point['picked']}: {100 * point['against_best']:+.1f} points "
              f"against the best, {100 * point['against_default']:+.1f} against {DEFAULT_STEPS}")
    for family, values in costs.items():
        values = np.array(values) * 100
        print(f"{family}: the rule's stage-3 mIoU {_mean_sd(values[:, 0])} points "
              f"against each seed's best duration, {_mean_sd(values[:, 1])} "
              f"against {DEFAULT_STEPS} steps ({len(values)} seeds)")


if __name__ == "__main__":
    main()
