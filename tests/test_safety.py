"""A user's data is never lost and a wrong result never comes back with exit 0:
outputs checked against inputs and what exists, one owner per run directory, locks,
interrupts, write failures (issue items 1-3 and 8-11)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import read_all, subprocess_env
from srjax import io, outputs
from srjax.cli import main
from srjax.errors import SrjaxError

TINY = ["--preset", "tiny", "--set", "stage2.epochs=2", "--set", "stage3.epochs=2"]


def srjax(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "srjax.cli", *map(str, args)], env=subprocess_env(),
                          capture_output=True, text=True, **kwargs)


def _one_error(result, *words):
    errors = [line for line in result.stderr.splitlines() if line.startswith("srjax: error:")]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """good.npy: two bright blocks on noise; other.npy: another volume of the same shape."""
    root = tmp_path_factory.mktemp("volumes")
    rng = np.random.default_rng(1)
    good = (rng.random((8, 48, 48)) * 40).astype(np.uint8)
    good[2:6, 5:20, 5:20] += 150
    good[1:7, 25:40, 28:44] += 90
    other = (rng.random((8, 48, 48)) * 40).astype(np.uint8)
    other[1:5, 10:30, 10:30] += 150
    np.save(root / "good.npy", good)
    np.save(root / "other.npy", other)
    io.write_volume(root / "good.ome.zarr", good)
    io.write_volume(root / "other.ome.zarr", other)
    return root


# -------------------------------------------------------------- item 1: never replace what srjax did not write

@pytest.mark.parametrize("command", ["pseudo", "import"])
def test_an_existing_directory_srjax_did_not_write_is_never_replaced(command, volumes, tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "t.txt").write_text("thesis")
    args = ["pseudo", str(volumes / "good.npy"), "--classes", "3", "--out", str(precious)] if command == "pseudo" \
        else ["import", str(volumes / "good.npy"), str(precious)]
    for extra in ([], ["--overwrite"]):
        assert main(args + extra) == 2
        assert "was not written by srjax" in capsys.readouterr().err
        assert (precious / "t.txt").read_text() == "thesis" and sorted(p.name for p in precious.iterdir()) == ["t.txt"]


def test_an_srjax_output_is_replaced_only_with_overwrite(volumes, tmp_path, capsys):
    out = tmp_path / "labels.ome.zarr"
    args = ["pseudo", str(volumes / "good.npy"), "--classes", "2", "--out", str(out)]
    assert main(args) == 0
    assert main(args[:-3] + ["3", "--out", str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert read_all(out).max() == 1
    assert main(args[:-3] + ["3", "--out", str(out), "--overwrite"]) == 0
    assert read_all(out).max() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.ome.zarr"]


# -------------------------------------------------------------- item 2: an output never overlaps its input

@pytest.mark.parametrize("where", ["the input", "inside the input", "containing the input"])
def test_an_output_overlapping_its_input_is_refused(where, volumes, tmp_path, capsys):
    store = tmp_path / "v.ome.zarr"
    io.write_volume(store, np.load(volumes / "good.npy"))
    out = {"the input": store, "inside the input": store / "labels", "containing the input": tmp_path}[where]
    assert main(["pseudo", str(store), "--classes", "3", "--out", str(out), "--overwrite"]) == 2
    assert "choose an output path outside it" in capsys.readouterr().err
    np.testing.assert_array_equal(read_all(store), np.load(volumes / "good.npy"))


# -------------------------------------------------------------- item 3: one owner per run directory

def test_a_run_directory_refuses_another_input_and_names_it(volumes, tmp_path, capsys):
    out = tmp_path / "shared"

    def run(volume, *extra):  # in this process: the refusals come before any work, so no start-up to wait for
        args = ["run", str(volume), "--classes", "3", "--out", str(out), *TINY, *extra]
        code = main(args)
        return subprocess.CompletedProcess(args, code, *capsys.readouterr())

    assert run(volumes / "good.npy").returncode == 0
    first = read_all(out / "labels.ome.zarr")
    _one_error(run(volumes / "other.npy"), "another input", "other.npy", "content differs")
    # A Zarr input, read in place, is fingerprinted the same way.
    _one_error(run(volumes / "other.ome.zarr"), "other.ome.zarr")
    _one_error(run(volumes / "good.npy", "--set", "loss=gce"), "different config", "loss.name: 'label_smoothing' -> 'gce'")
    np.testing.assert_array_equal(read_all(out / "labels.ome.zarr"), first)
    # Settings that cannot change results are not a different run; a finished run does nothing.
    stamp = (out / "labels.ome.zarr" / ".zattrs").stat().st_mtime_ns
    result = run(volumes / "good.npy", "--set", "predict_batch=2", "--set", "data.read_threads=2",
                 "--set", "checkpoint_every=5")
    assert result.returncode == 0, result.stderr
    assert "stage 2" not in result.stderr and "predict" not in result.stderr
    assert (out / "labels.ome.zarr" / ".zattrs").stat().st_mtime_ns == stamp


def test_a_moved_input_with_the_same_content_is_the_same_run(volumes, tmp_path):
    from srjax import presets
    from srjax.config import apply_overrides
    from srjax.pipeline import run_pipeline

    config = apply_overrides(presets.tiny(), ["pseudo.classes=3"])
    moved = tmp_path / "moved.npy"
    moved.write_bytes((volumes / "good.npy").read_bytes())
    first = run_pipeline(volumes / "good.npy", tmp_path / "run", config, progress=False)
    again = run_pipeline(moved, tmp_path / "run", config, progress=False)
    assert again == first
    assert json.loads((tmp_path / "run" / "run.json").read_text())["volume"]["path"] == str(moved)


def test_a_directory_that_is_not_a_run_is_refused(volumes, tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _one_error(srjax("run", volumes / "good.npy", "--classes", "3", "--out", out, *TINY), "not an srjax run")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


# -------------------------------------------------------------- item 8: final names are never half-written

def test_replacing_an_output_never_deletes_it_under_its_own_name(tmp_path, monkeypatch):
    target = tmp_path / "labels.ome.zarr"
    io.write_volume(target, np.zeros((2, 4, 4), np.uint8))
    removed = []
    original = outputs.shutil.rmtree
    monkeypatch.setattr(outputs.shutil, "rmtree", lambda path, *a, **k: (removed.append(path), original(path)))
    with outputs.atomic_path(target) as tmp:
        io.OmeZarrWriter(tmp, (2, 4, 4), np.uint8)[0:2] = np.ones((2, 4, 4), np.uint8)
        assert read_all(target).max() == 0  # the old output stays whole until the new one is complete
    assert target not in removed and tmp_path / ".labels.ome.zarr.replaced" in removed


# -------------------------------------------------------------- item 9: one process per run directory

def test_a_second_process_is_told_who_holds_the_run_directory(volumes, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / ".srjax.lock").touch()
    with outputs.exclusive(out / ".srjax.lock", "test"):
        message = _one_error(srjax("run", volumes / "good.npy", "--classes", "3", "--out", out, *TINY), "in use by")
    assert f"process {os.getpid()}" in message
    assert list(out.iterdir()) == []


# -------------------------------------------------------------- item 10: write failures are one line

def test_an_out_that_is_a_file_or_unwritable_gets_one_line(volumes, tmp_path):
    file = tmp_path / "file"
    file.write_text("x")
    _one_error(srjax("run", volumes / "good.npy", "--classes", "3", "--out", file, *TINY), "is a file")
    _one_error(srjax("pseudo", volumes / "good.npy", "--classes", "3", "--out", file / "l.ome.zarr"), "is a file")
    _one_error(srjax("pseudo", volumes / "good.npy", "--classes", "3", "--out", "/proc/srjax/l.ome.zarr"),
               "cannot be created")
    assert file.read_text() == "x"


def test_a_relative_out_with_dotdot_works(volumes, tmp_path):
    (tmp_path / "a").mkdir()
    result = srjax("pseudo", volumes / "good.npy", "--classes", "3", "--out", "a/../labels.ome.zarr", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "labels.ome.zarr").is_dir()


def test_a_full_disk_names_the_output_and_leaves_nothing(volumes, tmp_path):
    big = np.random.default_rng(0).integers(0, 60000, (4, 256, 256)).astype(np.uint16)
    io.write_volume(tmp_path / "big.ome.zarr", big)
    out = tmp_path / "copy.ome.zarr"
    # Files may not grow past 64 kB: writes fail as they do on a full disk.
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10)); from srjax.cli import main; "
            f"sys.exit(main(['import', {str(tmp_path / 'big.ome.zarr')!r}, {str(out)!r}, '--chunks', '4,256,256']))")
    result = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True)
    _one_error(result, f"cannot write {out}", "File too large")
    assert not out.exists() and not list(tmp_path.glob(".copy*"))


# -------------------------------------------------------------- item 11: Ctrl-C

def test_ctrl_c_is_one_line_and_the_run_resumes(volumes, tmp_path):
    out = tmp_path / "run"
    argv = ["run", str(volumes / "good.npy"), "--classes", "3", "--out", str(out), *TINY, "--set", "stage2.epochs=20"]
    # As at a terminal: a test runner started in the background passes SIGINT on ignored.
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            f"from srjax.cli import main; sys.exit(main({argv!r}))")
    args = [sys.executable, "-c", code]
    proc = subprocess.Popen(args, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoints = out / "checkpoints" / "stage2"

    def saved():  # any checkpoint: older ones are deleted as new ones come
        return checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())

    deadline = time.time() + 300
    while not saved() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == \
        "srjax: interrupted; run the same command again to resume"
    assert not (out / "metrics.json").exists()
    assert subprocess.run(args, env=subprocess_env(), capture_output=True).returncode == 0
    assert (out / "metrics.json").exists()


def test_interrupts_wait_for_the_end_of_a_save(monkeypatch):
    monkeypatch.setattr(outputs, "_interrupted", [])  # this process goes on after the interrupt
    done = []
    with pytest.raises(KeyboardInterrupt):
        with outputs.deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("saved")
    assert done == ["saved"]


def test_plain_json_is_valid_json():
    text = json.dumps(outputs.plain_json({"a": float("nan"), "b": [np.float32(1.5), float("inf")]}), allow_nan=False)
    assert json.loads(text) == {"a": None, "b": [1.5, None]}


def test_check_output_inside_and_containing():
    with pytest.raises(SrjaxError, match="is inside"):
        outputs.check_disjoint(outputs.absolute("/data/scan.zarr/x"), {"volume": "/data/scan.zarr"})
    with pytest.raises(SrjaxError, match="contains"):
        outputs.check_disjoint(outputs.absolute("/data"), {"volume": "/data/scan.zarr"})
