"""What a run tells a scientist: the summary, its warnings, the report, label-image
metadata, units and readable logs (issue items 7, 15 and 16)."""

import io as text_io
import json

import numpy as np
import pytest
import tifffile

from srjax import io, summary
from srjax.cli import main
from srjax.progress import LogLines


def _counts(pseudo, stage2, stage3, confidence=None):
    volumes = {name: io.as_volume(np.asarray(v, np.uint8)[None]) for name, v in
               (("pseudo", pseudo), ("stage2", stage2), ("stage3", stage3))}
    # stored as a run stores it: uint8 steps of 1 / io.CONFIDENCE_SCALE
    conf = None if confidence is None else io.as_volume(
        np.round(np.asarray(confidence) * io.CONFIDENCE_SCALE).astype(np.uint8)[None])
    return summary.tally(volumes, conf)


def test_summary_by_hand():
    pseudo = [[0, 0, 1, 1, 2, 2, 2, 2]]
    stage2 = [[0, 0, 1, 2, 2, 2, 2, 2]]
    stage3 = [[0, 1, 1, 2, 2, 2, 2, 2]]
    confidence = [[1.0, 0.5, 0.5, 0.75, 0.75, 0.75, 0.75, 0.75]]
    s = summary.summarise(_counts(pseudo, stage2, stage3, confidence), 3, ["a", "b", "c"], (2.0, 1.0, 1.0), "micrometer")
    a, b, c = s["classes"]
    assert a["fraction"] == {"pseudo": 2 / 8, "stage2": 2 / 8, "stage3": 1 / 8}
    assert b["agreement"]["pseudo -> stage2"] == 0.5 and b["agreement"]["stage2 -> stage3"] == 1.0
    assert c["volume"] == 5 * 2.0 and s["volume_unit"] == "micrometer^3"
    assert b["mean_confidence"] == pytest.approx(0.5, abs=1 / 255) and a["mean_confidence"] == 1.0
    assert s["agreement"]["pseudo -> stage2"] == 7 / 8 and s["agreement"]["pseudo -> stage3"] == 6 / 8
    assert s["confidence_histogram"]["counts"][-1] == 1 and sum(s["confidence_histogram"]["counts"]) == 8
    assert [w[:50] for w in s["warnings"]] == ["stage 2 keeps only 50.0% of b's pseudo-label voxel"]


def test_warnings_for_a_stage_2_that_did_not_learn_a_vanished_class_and_untrained_classes():
    pseudo = [[0] * 40 + [1] * 40 + [2] * 20]
    stage2 = [[1] * 40 + [0] * 40 + [1] * 20]  # disagrees everywhere; class 2 is gone
    stage3 = stage2
    counts = _counts(pseudo, stage2, stage3, np.full((1, 100), 0.9))
    s = summary.summarise(counts, 3, ["air", "body", "shell"], kept_by_class=[0.4, 0.001, 0.0])
    text = "\n".join(s["warnings"])
    assert "stage 2 reproduces only 0.0% of its pseudo labels" in text
    assert "stage 2 keeps only 0.0% of shell's pseudo-label voxels (below 80%)" in text
    assert "shell vanishes in stage 2: 20.00% of the voxels in the pseudo labels, 0.000% in stage 2" in text
    assert "shell vanishes in stage 3" in text
    assert "stage 3 trained body on almost no pixels" in text and "stage 3 trained shell" in text
    assert "stage 3 trained air" not in text


@pytest.fixture(scope="module")
def finished_run(tiny_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    code = main(["run", str(tiny_files / "volume.npy"), "--classes", "4", "--out", str(out), "--preset", "tiny",
                 "--voxel-size", "0.5", "--unit", "µm"])
    assert code == 0
    return out


def test_a_run_without_truth_prints_and_keeps_a_summary(finished_run, tiny_files, capsys):
    assert main(["run", str(tiny_files / "volume.npy"), "--classes", "4", "--out", str(finished_run),
                 "--preset", "tiny", "--voxel-size", "0.5", "--unit", "µm"]) == 0
    printed = capsys.readouterr().out
    assert "volume fraction of each class" in printed and "micrometer^3" in printed and "voxels agreeing" in printed
    metrics = json.loads((finished_run / "metrics.json").read_text())
    classes = metrics["summary"]["classes"]
    assert len(classes) == 4 and abs(sum(c["fraction"]["stage3"] for c in classes) - 1) < 1e-9
    voxels = np.prod(np.load(tiny_files / "volume.npy").shape)
    assert abs(sum(c["volume"] for c in classes) - voxels * 0.125) < 1e-6
    report = (finished_run / "report.html").read_text()
    assert report.count("<img src=\"data:image/png;base64,") == 4
    for text in ("Classes", "Three planes", "Class fractions", "Training", "Confidence", classes[0]["name"]):
        assert text in report


def test_label_volumes_are_ome_zarr_label_images(finished_run):
    for name in ("pseudo_labels", "stage2_labels", "labels"):
        attributes = json.loads((finished_run / f"{name}.ome.zarr" / ".zattrs").read_text())
        label = attributes["image-label"]
        assert [c["label-value"] for c in label["colors"]] == [0, 1, 2, 3]
        assert all(len(c["rgba"]) == 4 for c in label["colors"])
        assert label["properties"][0]["class"].startswith("class 0 (mean")
        assert label["source"]["image"] == "../volume.ome.zarr"
        assert (finished_run / f"{name}.ome.zarr" / label["source"]["image"]).resolve() == \
            (finished_run / "volume.ome.zarr").resolve()
        assert attributes["multiscales"][0]["axes"][0]["unit"] == "micrometer"
        assert attributes["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [0.5] * 3


def test_units_are_ome_zarr_names(tmp_path, capsys):
    volume = np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8)
    np.save(tmp_path / "v.npy", volume)
    assert main(["import", str(tmp_path / "v.npy"), str(tmp_path / "a.ome.zarr"), "--voxel-size", "2"]) == 0
    assert io.voxel_size(tmp_path / "a.ome.zarr") == ([2.0, 2.0, 2.0], "micrometer")  # the same default as run
    assert main(["import", str(tmp_path / "v.npy"), str(tmp_path / "b.ome.zarr"), "--voxel-size", "2",
                 "--unit", "nm"]) == 0
    assert io.voxel_size(tmp_path / "b.ome.zarr")[1] == "nanometer"
    assert main(["import", str(tmp_path / "v.npy"), str(tmp_path / "c.ome.zarr"), "--voxel-size", "2",
                 "--unit", "furlong"]) == 2
    assert "not an OME-Zarr space unit" in capsys.readouterr().err


def test_imagej_unit_without_slice_spacing_is_kept(tmp_path):
    volume = np.zeros((3, 8, 8), np.uint8)
    tifffile.imwrite(tmp_path / "v.tif", volume, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"unit": "micron"})
    assert main(["import", str(tmp_path / "v.tif"), str(tmp_path / "v.ome.zarr")]) == 0
    assert io.voxel_size(tmp_path / "v.ome.zarr") == ([1.0, 0.25, 0.25], "micrometer")


def test_progress_in_a_log_is_whole_lines():
    log = text_io.StringIO()
    bar = LogLines(total=100, desc="stage 2", unit="step", file=log)
    for _ in range(100):
        bar.update(1)
    bar.set_postfix(loss="0.1")
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 10
    assert lines[0].startswith("stage 2: 10/100 step (10%)") and lines[-1].endswith("loss=0.1")


def test_version_and_help(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("srjax ")
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("demo", "run", "import", "pseudo", "explain", "phantom"):
        assert f"\n    {command} " in text
