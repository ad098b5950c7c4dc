"""srjax predict: a finished run's model on other scans, as the run labels its own volume,
resumed scan by scan, and scans of another kind refused."""

import json
import os

import numpy as np
import pytest

from conftest import finish, read_all, start_processes
from srjax.campaign import assignment, predict_scans, scan_name
from srjax.errors import SrjaxError
from srjax.phantom import PhantomSpec, make_phantom


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_run):
    out = tiny_run
    other = tmp_path_factory.mktemp("scans")
    volume, truth = make_phantom(PhantomSpec(shape=(8, 48, 48), seed=4))
    np.save(other / "seed4.npy", volume)
    np.save(other / "seed4_truth.npy", truth)
    return out, other


def test_scan_names_drop_the_format_suffix():
    assert [scan_name(p) for p in ("a/scan.ome.zarr", "b/t1.tif", "c.h5", "d/run7.zarr/")] == ["scan", "t1", "c", "run7"]


@pytest.mark.parametrize("scans,processes", [(5, 2), (3, 4), (8, 4), (1, 1)])
def test_whole_scans_go_round_the_processes_and_the_rest_are_shared(scans, processes):
    parts = [assignment(scans, processes, p) for p in range(processes)]
    alone = sorted(i for own, _ in parts for i in own)
    shared = parts[0][1]
    assert all(part[1] == shared for part in parts)
    assert alone + shared == list(range(scans)) and len(shared) < processes


def test_two_processes_label_a_campaign_as_one_does(tmp_path, finished_run, tiny_files):
    run, other = finished_run
    scans = [tiny_files / "volume.npy", other / "seed4.npy", tmp_path / "mirrored.npy"]
    np.save(scans[2], np.load(scans[1])[:, ::-1])
    predict_scans(run, scans, tmp_path / "one", progress=False)
    finish(start_processes(["predict", run, *scans, "--out", tmp_path / "two"], processes=2))
    for name in ("volume", "seed4", "mirrored"):  # two scans labelled alone, the third shared
        for output in ("labels", "confidence", "net_labels"):
            np.testing.assert_array_equal(read_all(tmp_path / "one" / name / f"{output}.ome.zarr"),
                                          read_all(tmp_path / "two" / name / f"{output}.ome.zarr"))


def test_the_runs_own_volume_is_labelled_as_the_run_labelled_it_and_a_killed_campaign_resumes(
        tmp_path, finished_run, tiny_files):
    run, other = finished_run
    scans = [str(tiny_files / "volume.npy"), str(other / "seed4.npy")]
    truths = [str(tiny_files / "truth.npy"), str(other / "seed4_truth.npy")]
    out = tmp_path / "campaign"
    first = predict_scans(run, scans, out, truths, progress=False)
    for name in ("labels", "confidence", "net_labels"):
        np.testing.assert_array_equal(read_all(out / "volume" / f"{name}.ome.zarr"), read_all(run / f"{name}.ome.zarr"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert first[0]["scores"]["miou"] == pytest.approx(metrics["stage3"]["miou"])
    assert set(np.unique(read_all(out / "seed4" / "labels.ome.zarr"))) <= set(range(metrics["classes"]))

    # Killed while labelling the second scan: its outputs may be in place, its scan.json is not.
    (out / "seed4" / "scan.json").unlink()
    labels = read_all(out / "seed4" / "labels.ome.zarr")
    done_before = os.stat(out / "volume" / "scan.json").st_mtime_ns
    again = predict_scans(run, scans, out, truths, progress=False)
    assert os.stat(out / "volume" / "scan.json").st_mtime_ns == done_before, "a finished scan was labelled again"
    np.testing.assert_array_equal(read_all(out / "seed4" / "labels.ome.zarr"), labels)
    assert again == first


def test_a_scan_of_another_kind_is_refused_before_any_work(tmp_path, finished_run, tiny_files):
    run, _ = finished_run
    brighter = tmp_path / "brighter.npy"
    np.save(brighter, np.load(tiny_files / "volume.npy") * 10 + 5)
    with pytest.raises(SrjaxError, match="outside the range the run was trained on"):
        predict_scans(run, [str(brighter)], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    predict_scans(run, [str(brighter)], tmp_path / "out", force=True, progress=False)
    assert (tmp_path / "out" / "brighter" / "scan.json").exists()


def test_an_unfinished_run_is_refused(tmp_path, finished_run, tiny_files):
    run, _ = finished_run
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for name in ("run.json", "config.json"):
        (unfinished / name).write_text((run / name).read_text())
    with pytest.raises(SrjaxError, match="has not finished"):
        predict_scans(unfinished, [str(tiny_files / "volume.npy")], tmp_path / "out", progress=False)


def test_srjax_predict_prints_each_scan(tmp_path, finished_run, capsys):
    from srjax.cli import main

    run, other = finished_run
    assert main(["predict", str(run), str(other / "seed4.npy"), "--truth", str(other / "seed4_truth.npy"),
                 "--out", str(tmp_path / "out")]) == 0
    assert "seed4: mean confidence" in capsys.readouterr().out
    assert main(["predict", str(run), str(other / "seed4.npy"), "--truth", str(other / "seed4_truth.npy"),
                 "--truth", str(other / "seed4_truth.npy"), "--out", str(tmp_path / "out")]) == 2
    assert "one per scan" in capsys.readouterr().err
