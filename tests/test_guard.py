import numpy as np
from scipy import ndimage

from srjax.guard import Guard, guard_labels, interpolation_matrix
from srjax.pseudo import Mask, circle_mask
from srjax.sources import from_store

LEVELS = np.array([0.1, 0.5, 1.0])


class Sink:
    """A writer into an in-memory array."""

    def __init__(self, shape):
        self.array = np.zeros(shape, np.uint8)

    def __setitem__(self, zs, slab):
        self.array[zs] = slab


def _sample(seed=0, shape=(16, 64, 64)):
    """Three phases under a smooth bias as large as their spacing, noise, and a 'net' that
    sees through the bias but has erased every small bright ball."""
    rng = np.random.default_rng(seed)
    truth = np.ones(shape, np.uint8)
    truth[:, :, :12] = 0
    zz, yy, xx = np.indices(shape)
    centres = rng.uniform((2, 4, 16), np.array(shape) - (2, 4, 4), size=(40, 3))
    for z, y, x in centres:
        truth[(zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= 2.0**2] = 2
    bias = 0.4 * xx / shape[2]  # brightens the far side by most of a phase step
    values = LEVELS[truth] + bias + rng.normal(0, 0.03, shape)
    net = truth.copy()
    net[truth == 2] = 1
    return values.astype(np.float32), truth, net


def _guard(values, labels, sds=3.0, block=4, mask=None):
    sink = Sink(values.shape)
    summary = guard_labels(from_store(values, "values"), from_store(labels, "labels"), sink, LEVELS, sds, block,
                           mask=mask)
    return sink.array, summary


def test_interpolation_reproduces_a_linear_ramp_between_block_centres():
    matrix = interpolation_matrix(37, 4)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-6)
    centres = (np.arange(matrix.shape[1]) + 0.5) * 4 - 0.5
    ramp = matrix @ (2.0 * centres + 1.0)
    inner = slice(2, 33)  # beyond the outer block centres the value is held, not extrapolated
    np.testing.assert_allclose(ramp[inner], 2.0 * np.arange(37)[inner] + 1.0, rtol=1e-5)


def test_the_guard_gives_back_what_the_net_erased_and_leaves_the_rest():
    values, truth, net = _sample()
    guarded, summary = _guard(values, net)
    balls = truth == 2
    recovered = (guarded[balls] == 2).mean()
    assert recovered > 0.8, recovered
    # Beside the balls' rims (partial volume) nothing the net had right is touched.
    far = ~ndimage.binary_dilation(balls, iterations=2)
    assert (guarded[far] != net[far]).mean() < 1e-3
    assert summary["moved"][1][2] == (guarded[net == 1] == 2).sum()
    # The sd is measured around each class's field: the bias (13 sd across the volume) is not noise.
    np.testing.assert_allclose(summary["class_sd"][:2], 0.03, rtol=0.25)


def test_voxels_outside_the_mask_take_no_part_and_keep_the_nets_labels():
    values, truth, net = _sample(seed=3)
    disc = circle_mask(values.shape)
    values[:, ~disc] = np.nan  # as stage 1 allows outside its mask
    net[:, ~disc] = 2
    guarded, summary = _guard(values, net, mask=Mask("circle", values.shape))
    assert (guarded[:, ~disc] == 2).all()
    balls = (truth == 2) & disc
    assert (guarded[balls] == 2).mean() > 0.8
    far = ~ndimage.binary_dilation(truth == 2, iterations=2) & disc
    assert (guarded[far] != net[far]).mean() < 1e-3
    assert np.isfinite(summary["noise_sd"])


def test_labels_the_values_agree_with_are_kept():
    values, truth, _ = _sample(seed=1)
    guarded, summary = _guard(values, truth)
    assert (guarded != truth).mean() < 1e-3
    assert summary["moved_fraction"] < 1e-3


def test_a_boundary_voxel_stays_with_the_class_it_holds_more_of():
    """Dark (0) beside bright (2): a value a third of the way across is a mix of the two
    (though nearest the middle class 1) and stays dark; one 80 % across goes bright."""
    values = np.full((4, 24, 24), LEVELS[0], np.float32)
    labels = np.zeros(values.shape, np.uint8)
    values[:, :, 12:], labels[:, :, 12:] = LEVELS[2], 2
    values[:, 3:6, 3:9], labels[:, 3:6, 3:9] = LEVELS[1], 1  # the middle class, away from the edge
    values[:, :12, 11] = 0.1 + 0.35 * 0.9
    values[:, 12:, 11] = 0.1 + 0.8 * 0.9
    values += np.random.default_rng(0).normal(0, 0.01, values.shape).astype(np.float32)
    guarded, _ = _guard(values, labels)
    expected = labels.copy()
    expected[:, 12:, 11] = 2
    np.testing.assert_array_equal(guarded, expected)


def test_slab_by_slab_is_the_whole_volume_at_once():
    values, _, net = _sample(seed=2)
    whole, _ = _guard(values, net, block=4)
    guard = Guard(from_store(values, "values"), from_store(net, "labels"), LEVELS, 3.0, 4)
    guard.depth = 4  # four slabs
    guard.fit()
    sink = Sink(values.shape)
    guard.relabel(sink)
    np.testing.assert_array_equal(sink.array, whole)
