"""Several processes as one run (``srjax.parallel``): each process's share of the slices
and of every batch, and the same run on one process of four devices and on two
processes of two devices each, killed and resumed, ending the same."""

import signal
import time

import jax
import numpy as np
import pytest

from conftest import finish, read_all, start_processes
from srjax import data, parallel, train
from srjax.errors import SrjaxError


@pytest.mark.parametrize("total,processes", [(12, 2), (7, 3), (2, 4), (1200, 8)])
def test_shares_cover_every_slice_once_in_order(total, processes):
    shares = [parallel.share(total, processes, p) for p in range(processes)]
    assert [z for share in shares for z in share] == list(range(total))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_the_processes_rows_make_the_single_process_batch(monkeypatch, tiny_phantom):
    volume, labels = tiny_phantom
    config = data.DataConfig(slices=3, crop=32, batch_size=4, read_threads=1)

    def batches(processes, process):
        monkeypatch.setattr(parallel, "count", lambda: processes)
        monkeypatch.setattr(parallel, "index", lambda: process)
        return list(data.iterate(data.crop_dataset(volume, labels, config, 0.0, 1.0, 3, 5), 1))

    alone = batches(1, 0)
    halves = [batches(2, p) for p in range(2)]
    assert len(alone) == len(halves[0]) == len(halves[1]) == 3 * volume.shape[0] // 4
    for whole, first, second in zip(alone, *halves):
        for key in ("image", "label"):
            assert first[key].shape[0] == 2
            np.testing.assert_array_equal(whole[key], np.concatenate([first[key], second[key]]))


@pytest.mark.parametrize("given", [{"coordinator": "localhost:1"}, {"num_processes": 2, "process_id": 1}])
def test_a_cluster_named_in_part_is_refused(given):
    with pytest.raises(SrjaxError, match="missing"):
        parallel.initialize(**given)


def test_a_process_id_outside_the_cluster_is_refused():
    with pytest.raises(SrjaxError, match="not between 0"):
        parallel.initialize("localhost:1", 2, 2)


def _run(root, out, processes: int, devices: int):
    return start_processes(["run", root / "volume.npy", "--classes", "4", "--out", out, "--config", root / "tiny.json",
                            "--set", "stage2.epochs=4", "--set", "stage3.epochs=2"], processes, devices)


def test_two_processes_of_two_devices_killed_and_resumed_end_as_one_process_of_four(tmp_path, tiny_files):
    finish(_run(tiny_files, tmp_path / "one", 1, 4))

    killed = tmp_path / "two"
    procs = _run(tiny_files, killed, 2, 2)
    marker = killed / "checkpoints" / "stage2" / "4"
    deadline = time.time() + 300
    while not marker.exists() and all(p.poll() is None for p in procs) and time.time() < deadline:
        time.sleep(0.02)
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
    assert [proc.wait() for proc in procs] == [-signal.SIGKILL] * 2, "the run ended before it could be killed"
    assert not (killed / "metrics.json").exists()
    finish(_run(tiny_files, killed, 2, 2))

    for name in ("pseudo_labels", "stage2_labels", "net_labels", "labels"):
        np.testing.assert_array_equal(read_all(tmp_path / "one" / f"{name}.ome.zarr"),
                                      read_all(killed / f"{name}.ome.zarr"), err_msg=name)
    np.testing.assert_allclose(read_all(tmp_path / "one" / "confidence.ome.zarr"),
                               read_all(killed / "confidence.ome.zarr"), atol=1)  # a step of 1/255 at most
    for stage, key in (("stage2", "params"), ("stage3", "teacher")):
        one = train.latest_params(tmp_path / "one" / "checkpoints" / stage, key)
        two = train.latest_params(killed / "checkpoints" / stage, key)
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
