"""Does stage 3 correct its pseudo labels? The checks of the self-correction study, per family.

  python tools/check_self_correction.py SWEEP_DIR_OR_RESULTS_JSON [--variant default]

Reads the results.json of a sweep of ``experiments/self_correction.py`` (or of any
sweep over the phantom families; its members finished there or carried from a
``--prior``) and prints, for the variant, one line per check and
family with every seed's figure:

  * failure families (magnesium: drift; cupping: beam hardening): stage 3 above the pseudo
    labels in pixel accuracy and mIoU on every seed, a mean relative mIoU gain of at
    least the paper's +15.94 %, and stage 3 above stage 2 in mean mIoU;
  * composite (clustering nearly right): stage 3 never more than 1 mIoU point below the
    pseudo labels;
  * every family: every class of the pseudo labels still there after stage 3; the rare
    phase (rock, class 3) at least its pseudo-label IoU - 0.05; the thin intergrowth
    (magnesium, class 2) not below its pseudo-label IoU on average.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

FAILURES = ("magnesium", "cupping")
PAPER_GAIN = 0.1594


def members(out: Path, variant: str) -> dict[str, list[dict]]:
    """family -> the results rows of ``variant``'s finished members (``out``: a sweep
    directory or its results.json)."""
    results = json.loads((out if out.is_file() else out / "results.json").read_text())
    chosen = {m["name"] for m in results["sweep"]["members"] if m.get("variant") == variant}
    found: dict[str, list[dict]] = {}
    for row in results["rows"]:
        if row["member"] in chosen:
            found.setdefault(row["volume"], []).append(row)
    return found


def checks(family: str, rows: list[dict]) -> list[tuple[str, bool, str]]:
    """(check, holds, the figures it rests on) for one family's seeds."""
    seeds = [row["seed"] for row in rows]

    def per_seed(values):
        return ", ".join(f"{seed}: {value:+.4f}" if isinstance(value, float) else f"{seed}: {value}"
                         for seed, value in zip(seeds, values))

    score = {stage: {key: np.array([row[f"{stage}.{key}"] for row in rows]) for key in ("pixel_accuracy", "miou")}
             for stage in ("pseudo", "stage2", "stage3")}
    out = []
    if family in FAILURES:
        for key in ("pixel_accuracy", "miou"):
            gain = score["stage3"][key] - score["pseudo"][key]
            out.append((f"stage 3 above the pseudo labels in {key} on every seed", bool((gain > 0).all()),
                        per_seed(gain.tolist())))
        relative = score["stage3"]["miou"] / score["pseudo"]["miou"] - 1
        out.append((f"mean relative mIoU gain >= +{100 * PAPER_GAIN:.2f} %", bool(relative.mean() >= PAPER_GAIN),
                    f"{100 * relative.mean():+.2f} % (per seed {per_seed(relative.tolist())})"))
        over_stage2 = score["stage3"]["miou"] - score["stage2"]["miou"]
        out.append(("stage 3 above stage 2 in mean mIoU", bool(over_stage2.mean() > 0),
                    f"{over_stage2.mean():+.4f} (per seed {per_seed(over_stage2.tolist())})"))
    if family == "composite":
        drop = score["stage3"]["miou"] - score["pseudo"]["miou"]
        out.append(("stage 3 never more than 1 mIoU point below the pseudo labels", bool((drop >= -0.01).all()),
                    per_seed(drop.tolist())))
    classes = sorted({key.split(".")[-1] for row in rows for key in row if key.startswith("pseudo.share.")}, key=int)
    lost = [[c for c in classes if row[f"pseudo.share.{c}"] > 0 and row[f"stage3.share.{c}"] == 0] for row in rows]
    out.append(("no class of the pseudo labels vanishes in stage 3", not any(lost), per_seed(lost)))
    if family in ("rock", "magnesium"):
        cls = "3" if family == "rock" else "2"
        change = np.array([row[f"stage3.iou.{cls}"] - row[f"pseudo.iou.{cls}"] for row in rows])
        if family == "rock":
            name, holds = "rare phase IoU >= its pseudo-label IoU - 0.05 on every seed", (change >= -0.05).all()
        else:
            name, holds = "intergrowth IoU not below its pseudo-label IoU on average", change.mean() >= 0
        out.append((name, bool(holds), f"mean {change.mean():+.4f} (per seed {per_seed(change.tolist())})"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--variant", default="default")
    args = parser.parse_args()
    failed = 0
    for family, rows in members(args.sweep, args.variant).items():
        print(f"{family} ({len(rows)} seeds):")
        for name, holds, figures in checks(family, rows):
            failed += not holds
            print(f"  {'PASS' if holds else 'FAIL'}  {name}: {figures}")
    print(f"{failed} check(s) failed")


if __name__ == "__main__":
    main()
