"""Bad settings and bad volumes are refused up front, in one line, before the run
directory is claimed (issue items 4-6, 12 and 13)."""

import json

import numpy as np
import pytest
import tensorstore as ts

from conftest import read_all
from srjax import config as cfg
from srjax import presets, train
from srjax.cli import main
from srjax.errors import SrjaxError

BAD_SETTINGS = [
    ("data.crop=0", "data.crop=0 is out of range"),
    ("data.crop=-32", "data.crop=-32 is out of range"),
    ("data.batch_size=0", "data.batch_size=0 is out of range"),
    ("data.slices=0", "data.slices=0 is out of range"),
    ("data.slices=4", "must be odd"),
    ("stage2.learning_rate=nan", "stage2.learning_rate=nan is out of range"),
    ("stage2.learning_rate=-1", "it must be a finite number above 0"),
    ("stage3.confidence=2", "stage3.confidence=2.0 is out of range"),
    ("stage3.ema=1.5", "stage3.ema=1.5 is out of range"),
    ("model.dropout=1.5", "model.dropout=1.5 is out of range"),
    ("loss.smoothing=5", "loss.smoothing=5.0 is out of range"),
    ("stage3.strong_probability=7", "stage3.strong_probability=7.0 is out of range"),
    ("checkpoint_every=0", "checkpoint_every=0 is out of range"),
    ("predict_batch=0", "predict_batch=0 is out of range"),
    ("predict_views=9", "predict_views=9 is out of range"),
    ("stage3.cutmix=1.5", "stage3.cutmix=1.5 is out of range"),
    ("stage3.anchor=-1", "stage3.anchor=-1.0 is out of range"),
    ("seed=-1", "seed=-1 is out of range"),
    ("model.width=huge", "model.width='huge' is not one of"),
    ("pseudo.classes=256", "pseudo.classes=256 is out of range"),
    ("pseudo.method=gmm", None),  # fine alone; with 40 classes it is too many for a mixture
]


@pytest.mark.parametrize("setting, message", BAD_SETTINGS)
def test_every_setting_is_range_checked(setting, message):
    config = cfg.apply_overrides(presets.tiny(), [setting])
    if message is None:
        cfg.validate(config)
        with pytest.raises(SrjaxError, match="more than gmm fits \\(at most 32\\)"):
            cfg.validate(cfg.apply_overrides(config, ["pseudo.classes=40"]))
        return
    with pytest.raises(SrjaxError, match=message.replace("(", "\\(").replace(".", "\\.")):
        cfg.validate(config)


@pytest.mark.parametrize("text, suffix, message", [
    ("[1, 2]", ".json", "holds a list, not a table of keys"),
    ("null", ".json", "holds a NoneType, not a table of keys"),
    ('"stage2"', ".json", "holds a str, not a table of keys"),
    ("[stage2]\nepochs = true\n", ".toml", "stage2.epochs=True is not a valid int"),
    ("[stage2]\nepochs = 1.5\n", ".toml", "stage2.epochs=1.5 is not a valid int"),
    ('{"stage2": {"weak_augment": 1}}', ".json", "stage2.weak_augment=1 is not a valid bool"),
    ('{"model": {"name": 3}}', ".json", "model.name=3 is not a valid str"),
])
def test_config_files_of_the_wrong_shape_or_type(text, suffix, message, tmp_path):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(SrjaxError, match=message.replace("(", "\\(").replace(".", "\\.")):
        cfg.load(path)


@pytest.mark.parametrize("extra, message", [
    (["--set", "data.crop=0"], "data.crop=0 is out of range"),
    (["--set", "data.crop=64"], "data.crop=64 is larger than the volume's 48x48 slices; set data.crop to at most 48"),
    (["--set", "data.batch_size=64", "--set", "stage2.epochs=1"], "fewer crops than one batch"),
    (["--set", "stage3.ema=1.5"], "stage3.ema=1.5 is out of range"),
    (["--set", "pseudo.method=gmm", "--classes", "40"], "more than gmm fits (at most 32)"),
    (["--mask", "/nonexistent/mask.zarr"], "pseudo.mask /nonexistent/mask.zarr does not exist"),
])
def test_bad_settings_stop_before_the_run_directory_is_claimed(extra, message, tiny_files, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", str(tiny_files / "volume.npy"), "--classes", "3", "--out", str(out), "--preset", "tiny", *extra])
    assert code == 2 and message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["pseudo", "--classes", "256"], "256 is not between 2 and 255 (uint8 labels)"),
    (["pseudo", "--classes", "3", "--seed", "-1"], "-1 is negative"),
    (["run", "--classes", "3", "--preset", "huge"], "invalid choice: 'huge'"),
])
def test_cli_values_checked_by_the_parser(args, message, tiny_files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([args[0], str(tiny_files / "volume.npy"), "--out", str(tmp_path / "l.ome.zarr"), *args[1:]])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_too_many_classes_names_the_real_limit(tmp_path, capsys):
    """K above the distinct values says how many there are; K above a mixture's limit says that limit."""
    few = np.repeat(np.arange(5, dtype=np.uint8), 8 * 48 * 48 // 5 + 1)[: 8 * 48 * 48].reshape(8, 48, 48)
    np.save(tmp_path / "few.npy", few)
    assert main(["pseudo", str(tmp_path / "few.npy"), "--classes", "6", "--out", str(tmp_path / "a.ome.zarr")]) == 2
    assert "more than the 5 distinct values" in capsys.readouterr().err
    assert main(["pseudo", str(tmp_path / "few.npy"), "--classes", "33", "--method", "gmm",
                 "--out", str(tmp_path / "a.ome.zarr")]) == 2
    assert "--classes=33 is more than gmm fits (at most 32)" in capsys.readouterr().err


# -------------------------------------------------------------- item 4: missing chunks

def _store_with_fill_value(path, volume):
    spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(path)},
            "metadata": {"shape": volume.shape, "chunks": [1, *volume.shape[1:]], "dtype": volume.dtype.str,
                         "fill_value": 0, "dimension_separator": "/"}}
    ts.open(spec, create=True).result().write(volume).result()


def test_a_missing_chunk_is_an_error_naming_it(tiny_files, tmp_path, capsys):
    volume = np.load(tiny_files / "volume.npy")
    assert main(["import", str(tiny_files / "volume.npy"), str(tmp_path / "v.ome.zarr"), "--chunks", "1,48,48"]) == 0
    (tmp_path / "v.ome.zarr" / "0" / "3" / "0" / "0").unlink()
    assert main(["pseudo", str(tmp_path / "v.ome.zarr"), "--classes", "3", "--out", str(tmp_path / "l.ome.zarr")]) == 2
    err = capsys.readouterr().err
    assert "chunk {3, 0, 0}" in err and "is missing" in err and not (tmp_path / "l.ome.zarr").exists()
    # srjax's own outputs name no fill value, so --fill-missing cannot paper over the hole.
    assert main(["pseudo", str(tmp_path / "v.ome.zarr"), "--classes", "3", "--fill-missing",
                 "--out", str(tmp_path / "l.ome.zarr")]) == 2
    assert "names no fill value" in capsys.readouterr().err
    # A store whose metadata says absent chunks are 0 is read that way only when asked.
    _store_with_fill_value(tmp_path / "f.zarr", volume)
    (tmp_path / "f.zarr" / "3" / "0" / "0").unlink()
    assert main(["pseudo", str(tmp_path / "f.zarr"), "--classes", "3", "--out", str(tmp_path / "l.ome.zarr")]) == 2
    assert "is missing" in capsys.readouterr().err
    assert main(["pseudo", str(tmp_path / "f.zarr"), "--classes", "3", "--fill-missing",
                 "--out", str(tmp_path / "l.ome.zarr")]) == 0
    assert read_all(tmp_path / "l.ome.zarr").shape == volume.shape


# -------------------------------------------------------------- item 5: NaN outside the mask, non-finite losses

def test_nan_outside_the_mask_never_reaches_the_network(tiny_files, tmp_path, capsys):
    from srjax.pseudo import circle_mask

    volume = np.load(tiny_files / "volume.npy").astype(np.float32)
    volume[:, ~circle_mask(volume.shape)] = np.nan
    np.save(tmp_path / "nan.npy", volume)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "nan.npy"), "--classes", "3", "--mask", "circle", "--out", str(out),
                 "--preset", "tiny", "--set", "stage2.epochs=3"]) == 0
    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert np.isfinite(metrics["final_loss"]["stage2"]) and np.isfinite(metrics["final_loss"]["stage3"])
    labels = read_all(out / "labels.ome.zarr")
    assert len(np.unique(labels[:, circle_mask(volume.shape)])) > 1


def test_a_non_finite_loss_stops_training_naming_the_step():
    history, sums = [], {}
    train._collect("stage 2", [{"loss": np.float32(0.5)}], 0, history, sums)
    with pytest.raises(SrjaxError, match="stage 2: the loss became nan at step 2; no labels were written"):
        train._collect("stage 2", [{"loss": np.float32(np.nan)}], 1, history, sums)


# -------------------------------------------------------------- item 13: presets

def test_presets_are_functions_and_the_default_is_recorded(tiny_files, tmp_path, capsys):
    assert presets.paper() == cfg.Config()
    assert presets.cpu().data.crop == 64 and presets.tiny().model.width == "tiny"
    assert presets.cpu().stage2.steps == 1200  # the demo's 200 epochs of 48 slices, for any depth
    for preset in presets.PRESETS.values():
        cfg.validate(preset())
    assert presets.default_preset()[0] == "cpu"  # the tests run on the CPU
    out = tmp_path / "out"
    assert main(["run", str(tiny_files / "volume.npy"), "--classes", "3", "--out", str(out),
                 "--set", "data.crop=32", "--set", "stage2.steps=2", "--set", "stage3.steps=2",
                 "--set", "model.width=tiny", "--set", "data.slices=3", "--set", "data.batch_size=4"]) == 0
    assert "preset cpu (no accelerator found" in capsys.readouterr().out
    assert json.loads((out / "run.json").read_text())["preset"] == "cpu"
