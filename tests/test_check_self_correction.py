"""The self-correction checks, on a made-up sweep whose answers are known."""

import importlib.util
import json
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "check_self_correction.py"


def _tool(path=TOOL):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(member, volume, seed, pseudo, stage2, stage3, intergrowth=(0.3, 0.3), vanished=False):
    row = {"member": member, "volume": volume, "seed": seed}
    for stage, (acc, miou), iou2 in (("pseudo", pseudo, intergrowth[0]), ("stage2", stage2, 0.3),
                                     ("stage3", stage3, intergrowth[1])):
        row.update({f"{stage}.pixel_accuracy": acc, f"{stage}.miou": miou, f"{stage}.iou.1": miou,
                    f"{stage}.iou.2": iou2, f"{stage}.iou.3": miou, f"{stage}.share.0": 0.5,
                    f"{stage}.share.2": 0.0 if vanished and stage == "stage3" else 0.1})
    return row


def _sweep(tmp_path, rows: list[dict]) -> Path:
    members = [{"name": row["member"], "volume": row["volume"], "overrides": {"seed": row["seed"]},
                "variant": "default"} for row in rows]
    (tmp_path / "results.json").write_text(json.dumps({"sweep": {"members": members}, "rows": rows}))
    return tmp_path


def test_checks_pass_and_fail_where_the_figures_say(tmp_path):
    tool = _tool()
    out = _sweep(tmp_path, [
        _row("m0", "magnesium", 0, (0.7, 0.60), (0.75, 0.65), (0.80, 0.72), intergrowth=(0.3, 0.4)),
        _row("m1", "magnesium", 1, (0.7, 0.60), (0.75, 0.65), (0.69, 0.70), intergrowth=(0.3, 0.25)),
        _row("c0", "composite", 0, (0.9, 0.90), (0.9, 0.90), (0.9, 0.895)),
        _row("c1", "composite", 1, (0.9, 0.90), (0.9, 0.90), (0.9, 0.88), vanished=True),
    ])
    found = {family: {name: holds for name, holds, _ in tool.checks(family, rows)}
             for family, rows in tool.members(out, "default").items()}
    magnesium, composite = found["magnesium"], found["composite"]
    assert not magnesium["stage 3 above the pseudo labels in pixel_accuracy on every seed"]  # seed 1: 0.69 < 0.7
    assert magnesium["stage 3 above the pseudo labels in miou on every seed"]
    assert magnesium["mean relative mIoU gain >= +15.94 %"]  # (0.72 + 0.70) / 2 / 0.60 - 1 = +18.3 %
    assert magnesium["stage 3 above stage 2 in mean mIoU"]
    assert magnesium["intergrowth IoU not below its pseudo-label IoU on average"]  # +0.1 and -0.05
    assert not composite["stage 3 never more than 1 mIoU point below the pseudo labels"]  # seed 1: -0.02
    assert not composite["no class of the pseudo labels vanishes in stage 3"]


@pytest.mark.parametrize("baseline", ["default", "no_cutmix"])
def test_stopping_check_takes_the_next_scored_duration_and_costs_it(tmp_path, baseline):
    tool = _tool(TOOL.parent / "check_stage3_stopping.py")
    prefix = "stage3_" if baseline == "default" else f"{baseline}_stage3_"
    durations = {f"{prefix}600": (0.70, None), baseline: (0.74, None), f"{prefix}1800": (0.75, None),
                 f"{prefix}2400": (0.73, 900)}
    others = {"no_guard": (0.9, 1200), "other_stage3_600": (0.9, None)}  # neither is a duration of the baseline
    rows = [{"member": f"m,{variant}", "volume": "magnesium", "variant": variant, "seed": 0,
             "stage3.miou": miou, "stage3.levelled_off": levelled}
            for variant, (miou, levelled) in {**durations, **others}.items()]
    (tmp_path / "results.json").write_text(json.dumps({"rows": rows}))
    (point,) = tool.stopping_points([tmp_path], baseline)
    assert point["miou"] == {600: 0.70, 1200: 0.74, 1800: 0.75, 2400: 0.73}
    assert (point["best"], point["picked"]) == (1800, 1200)  # the rule's 900 is not scored: the next one is
    assert abs(point["against_best"] + 0.01) < 1e-12 and point["against_default"] == 0.0
