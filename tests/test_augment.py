import jax
import jax.numpy as jnp
import numpy as np

from srjax import augment

NUMPY_DIHEDRAL = [
    lambda x: x,
    lambda x: np.rot90(x, 1),
    lambda x: np.rot90(x, 2),
    lambda x: np.rot90(x, 3),
    lambda x: x[:, ::-1],
    lambda x: x[::-1, :],
    lambda x: x.swapaxes(0, 1),
    lambda x: np.rot90(x, 2).swapaxes(0, 1),
]


def test_dihedral_is_the_eight_symmetries_of_the_square():
    x = np.arange(4 * 4 * 2, dtype=np.float32).reshape(4, 4, 2)
    outs = [np.asarray(augment.dihedral(jnp.asarray(x), i)) for i in range(8)]
    for out, reference in zip(outs, NUMPY_DIHEDRAL):
        np.testing.assert_array_equal(out, reference(x))
    assert len({o.tobytes() for o in outs}) == 8


def test_weak_applies_one_transform_to_all_slices_of_a_stack():
    base = np.random.default_rng(0).random((6, 8, 8, 1), np.float32)
    stack = np.repeat(base, 3, axis=-1)
    out = np.asarray(augment.weak(jax.random.key(1), jnp.asarray(stack)))
    for sample in out:
        assert np.array_equal(sample[..., 0], sample[..., 1]) and np.array_equal(sample[..., 0], sample[..., 2])


def test_strong_is_identical_across_slices_and_stays_in_range():
    base = np.random.default_rng(0).random((8, 16, 16, 1), np.float32)
    stack = jnp.asarray(np.repeat(base, 3, axis=-1))
    out = np.asarray(augment.strong(jax.random.key(2), stack, p=1.0))
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-6)
    assert not np.allclose(out, np.asarray(stack))


def test_clahe_with_one_tile_and_no_clipping_is_histogram_equalisation():
    x = np.random.default_rng(3).random((16, 16, 2), np.float32) ** 2
    bins = 16
    out = np.asarray(augment.clahe(jnp.asarray(x), clip_limit=1e9, grid=1, bins=bins))
    index = np.clip((x * bins).astype(int), 0, bins - 1)
    cdf = np.cumsum(np.bincount(index.ravel(), minlength=bins)) / x.size
    np.testing.assert_allclose(out, cdf[index], rtol=1e-6)


def test_clahe_clipping_limits_the_slope():
    x = np.full((16, 16, 1), 0.5, np.float32)
    x[:2] = 0.9
    out = np.asarray(augment.clahe(jnp.asarray(x), clip_limit=2.0, grid=1, bins=16))
    full = np.asarray(augment.clahe(jnp.asarray(x), clip_limit=1e9, grid=1, bins=16))
    assert out[5, 5, 0] < full[5, 5, 0]


def test_weak_moves_a_stack_and_its_labels_alike():
    labels = np.random.default_rng(4).integers(0, 4, (6, 8, 8))
    images = np.repeat(labels[..., None].astype(np.float32), 3, axis=-1)
    out_images, out_labels = augment.weak(jax.random.key(5), jnp.asarray(images), jnp.asarray(labels))
    np.testing.assert_array_equal(np.asarray(out_images)[..., 1], np.asarray(out_labels))
    assert not np.array_equal(np.asarray(out_labels), labels)


def test_cutmix_pastes_the_next_crop_inside_each_box_and_nothing_else():
    key = jax.random.key(3)
    images = jnp.arange(3 * 16 * 16 * 2, dtype=jnp.float32).reshape(3, 16, 16, 2)
    labels = jnp.arange(3 * 16 * 16).reshape(3, 16, 16)
    boxes = augment.cutmix_boxes(key, 3, 16, 1.0)
    mixed, mixed_labels = augment.cutmix(boxes, images, labels)
    for i in range(3):
        box = np.asarray(boxes[i])
        assert 0.1 * 256 * 0.5 < box.sum() <= 0.5 * 256 + 32  # a square of 10-50 % of the area (pixel-rounded)
        rows, cols = np.nonzero(box)
        assert box[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # one solid rectangle
        np.testing.assert_array_equal(mixed[i][box], images[(i + 1) % 3][box])
        np.testing.assert_array_equal(mixed[i][~box], images[i][~box])
        np.testing.assert_array_equal(mixed_labels[i][box], labels[(i + 1) % 3][box])
    assert not augment.cutmix_boxes(key, 3, 16, 0.0).any()


def test_every_dihedral_view_is_undone_by_its_inverse():
    batch = jnp.arange(2 * 5 * 5 * 3, dtype=jnp.float32).reshape(2, 5, 5, 3)
    for view, inverse in enumerate(augment.DIHEDRAL_INVERSE):
        moved = augment.dihedral_all(batch, view)
        np.testing.assert_array_equal(moved[0], np.asarray(augment.dihedral(batch[0], view)))
        np.testing.assert_array_equal(augment.dihedral_all(moved, inverse), batch)
