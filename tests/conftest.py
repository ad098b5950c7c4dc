import os

# Four simulated CPU devices for the data-parallel tests; must be set before JAX starts.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json  # noqa: E402

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


def read_all(path):
    """A whole (small) volume from a store on disk."""
    return io.read(io.open_volume(path), str(path))
