"""The command line end to end, and what it says about bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from conftest import read_all, subprocess_env
from srjax import config as cfg
from srjax import presets
from srjax.cli import main
from srjax.losses import LOSS_NAMES
from srjax.models import MODEL_NAMES
from srjax.stopping import levelled_off


def _srjax(*args):
    env = subprocess_env()
    return subprocess.run([sys.executable, "-m", "srjax.cli", *args], env=env, capture_output=True, text=True)


def test_run_end_to_end_on_a_tiny_phantom(tmp_path, tiny_files):
    out = tmp_path / "out"
    # A non-default model and loss, so that names given with --set reach the pipeline.
    result = _srjax("run", str(tiny_files / "volume.npy"), "--classes", "4", "--out", str(out),
                    "--config", str(tiny_files / "tiny.json"), "--truth", str(tiny_files / "truth.npy"),
                    "--set", "model=resunetpp_noskip", "--set", "loss=sce")
    assert result.returncode == 0, result.stderr
    assert "pixel accuracy" in result.stdout and "intensity guard:" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    for stage in ("pseudo", "stage2", "stage3"):
        for key in ("pixel_accuracy", "miou"):
            assert 0.0 <= metrics[stage][key] <= 1.0
    volume = np.load(tiny_files / "volume.npy")
    labels, confidence = read_all(out / "labels.ome.zarr"), read_all(out / "confidence.ome.zarr")
    assert labels.shape == volume.shape and labels.max() < 4
    assert confidence.dtype == np.uint8 and confidence.min() >= round(0.25 * 255)  # above 1/K, as uint8 steps
    assert (out / "panel.png").stat().st_size > 1000
    moved = np.asarray(metrics["guard"]["moved"])
    net_labels = read_all(out / "net_labels.ome.zarr")
    assert moved.sum() == (net_labels != labels).sum()
    kept = [step["kept"] for step in json.loads((out / "history.json").read_text())["stage3"]]
    assert metrics["stage3_levelled_off"] == levelled_off(kept)
    saved = json.loads((out / "config.json").read_text())
    assert saved["pseudo"]["classes"] == 4
    assert (saved["model"]["name"], saved["loss"]["name"]) == ("resunetpp_noskip", "sce")
    assert not list(out.glob(".*partial"))
    np.testing.assert_array_equal(read_all(out / "volume.ome.zarr"), volume)

    result = _srjax("explain", str(out), "--slice", "3", "--class", "1", "--out", str(tmp_path / "cam"))
    assert result.returncode == 0, result.stderr
    cam = np.load(tmp_path / "cam.npy")
    assert cam.shape == volume.shape[1:] and cam.min() >= 0.0 and cam.max() <= 1.0
    assert (tmp_path / "cam.png").stat().st_size > 1000


def _bad_input_cases(tmp_path):
    good = np.random.default_rng(0).random((4, 40, 40)).astype(np.float32)
    cases = {}
    cases["missing"] = (tmp_path / "nope.npy", [], "does not exist")
    np.save(tmp_path / "flat.npy", good[0])
    cases["2-D"] = (tmp_path / "flat.npy", [], "3-D volume")
    nan = good.copy()
    nan[2, 5, 5] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    cases["NaN"] = (tmp_path / "nan.npy", [], "NaN or Inf")
    inf = good.copy()
    inf[1, 1, 1] = np.inf
    tifffile.imwrite(tmp_path / "inf.tif", inf, photometric="minisblack")
    cases["Inf"] = (tmp_path / "inf.tif", [], "NaN or Inf")
    np.save(tmp_path / "const.npy", np.ones((4, 40, 40), np.float32))
    cases["constant"] = (tmp_path / "const.npy", [], "constant")
    few = (good > 0.5).astype(np.uint8)
    np.save(tmp_path / "few.npy", few)
    cases["K too large"] = (tmp_path / "few.npy", [], "distinct values")
    np.save(tmp_path / "ok.npy", good)
    cases["unknown key"] = (tmp_path / "ok.npy", ["--set", "stage2.epocs=3"], "unknown config key")
    cases["unknown model"] = (tmp_path / "ok.npy", ["--set", "model=resnet"], "deeplabv3plus, resunet")
    cases["unknown loss"] = (tmp_path / "ok.npy", ["--set", "loss=dice"], "bootstrap_hard, bootstrap_soft")
    np.save(tmp_path / "cplx.npy", good.astype(np.complex64))
    cases["complex"] = (tmp_path / "cplx.npy", [], "dtype complex64")
    return cases


def test_every_model_and_loss_name_is_accepted():
    for key, names in (("model", MODEL_NAMES), ("loss", LOSS_NAMES)):
        for name in names:
            config = cfg.apply_overrides(presets.tiny(), [f"{key}={name}"])
            cfg.validate(config)
            assert getattr(config, key).name == name


def test_bad_input_gets_one_line_and_no_output(tmp_path, capsys, tiny_files):
    for name, (path, extra, message) in _bad_input_cases(tmp_path).items():
        out = tmp_path / f"out-{name}"
        code = main(["run", str(path), "--classes", "3", "--out", str(out),
                     "--config", str(tiny_files / "tiny.json"), *extra])
        err = capsys.readouterr().err
        errors = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("srjax: error:")]
        assert code == 2, name
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, (name, err)
        assert not (out / "metrics.json").exists() and not (out / "labels.ome.zarr").exists(), name
        assert not (out / "pseudo_labels.ome.zarr").exists(), name


@pytest.mark.parametrize("shape", ["8,48", "a,b,c"])
def test_phantom_shape_is_checked(shape, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["phantom", "/nonexistent", "--shape", shape])
    assert exit_info.value.code == 2
