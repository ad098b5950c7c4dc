import atexit
import os
import shutil
import tempfile

# The tests are bound by compile time, not run time: XLA compiles a third faster unoptimised.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
# Four simulated CPU devices for the data-parallel tests; must be set before JAX starts.
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=4 {FAST_COMPILE}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests, and the commands they start, compile the same tiny steps: one compilation cache
# for the session (this process and every command it starts) compiles each of them once.
COMPILATION_CACHE = tempfile.mkdtemp(prefix="srjax-tests-xla-")
atexit.register(shutil.rmtree, COMPILATION_CACHE, ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", COMPILATION_CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # unoptimised, each compile is quick

import json  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from srjax import config as cfg  # noqa: E402
from srjax import presets  # noqa: E402
from srjax import io  # noqa: E402
from srjax.phantom import PhantomSpec, make_phantom  # noqa: E402

TINY_SHAPE = (8, 48, 48)


@pytest.fixture(scope="session")
def tiny_phantom():
    return make_phantom(PhantomSpec(shape=TINY_SHAPE, seed=3))


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory, tiny_phantom):
    """A tiny phantom on disk as .npy plus a tiny config file."""
    root = tmp_path_factory.mktemp("tiny")
    volume, truth = tiny_phantom
    np.save(root / "volume.npy", volume)
    np.save(root / "truth.npy", truth)
    (root / "tiny.json").write_text(json.dumps(cfg.to_dict(presets.tiny())))
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_files):
    """A finished tiny run on the tiny phantom, scored: for tests that only read a run."""
    from srjax.pipeline import run_pipeline

    out = tmp_path_factory.mktemp("tiny-run") / "run"
    run_pipeline(tiny_files / "volume.npy", out, presets.tiny(), truth=tiny_files / "truth.npy", progress=False)
    return out


def subprocess_env() -> dict:
    """The environment of an srjax command a test starts: one CPU device, as a user has."""
    return dict(os.environ, XLA_FLAGS=FAST_COMPILE, JAX_PLATFORMS="cpu")


def start_processes(arguments, processes: int, devices: int = 1) -> list[subprocess.Popen]:
    """``srjax ARGUMENTS`` started as every process of a job of ``processes`` on this machine
    (a plain command when 1), each process with ``devices`` CPU devices."""
    env = dict(subprocess_env(), XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}")
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]

    def cluster(process):
        return ["--coordinator", f"localhost:{port}", "--num-processes", str(processes),
                "--process-id", str(process)] if processes > 1 else []

    return [subprocess.Popen([sys.executable, "-m", "srjax.cli", *map(str, arguments), *cluster(p)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for p in range(processes)]


def finish(procs) -> None:
    """Wait for every process; each must have succeeded."""
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]


def read_all(path):
    """A whole (small) volume from a store on disk."""
    return io.read(io.open_volume(path), str(path))


def scipy_label_of(ids, expected):
    """Our id -> scipy's, asserting both number the same partition of the voxels."""
    np.testing.assert_array_equal(ids > 0, expected > 0)
    ours, theirs = np.unique(np.stack([ids[ids > 0], expected[expected > 0]]), axis=1)
    assert len(ours) == len(np.unique(ours)) == len(np.unique(theirs)) == ids.max() == expected.max()
    mapping = np.zeros(ids.max() + 1, np.int64)
    mapping[ours] = theirs
    return mapping
