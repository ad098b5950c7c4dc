import numpy as np

from srjax import phantom
from srjax.phantom import PhantomSpec, make_phantom, phantom_slice
from srjax.clustering import nearest_mean


def test_same_seed_same_volume():
    spec = PhantomSpec(shape=(4, 40, 40), seed=7)
    a, la = make_phantom(spec)
    b, lb = make_phantom(spec)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    c, _ = make_phantom(PhantomSpec(shape=(4, 40, 40), seed=8))
    assert not np.array_equal(a, c)


def test_slices_are_independent_of_the_rest():
    spec = PhantomSpec(shape=(6, 40, 40), seed=1)
    volume, labels = make_phantom(spec)
    image, lab = phantom_slice(spec, 4)
    np.testing.assert_array_equal(image, volume[4])
    np.testing.assert_array_equal(lab, labels[4])


def test_all_classes_present_and_sheets_continue_across_slices(tiny_phantom):
    volume, labels = tiny_phantom
    assert volume.dtype == np.float32 and labels.dtype == np.uint8
    assert set(np.unique(labels)) == {phantom.AIR, phantom.BODY, phantom.INTERGROWTH, phantom.BOUNDARY}
    sheet = labels == phantom.INTERGROWTH
    # Tilted sheets: most intergrowth voxels have intergrowth within one voxel in the next slice.
    grown = np.zeros_like(sheet[1:])
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            grown |= np.roll(sheet[1:], (dy, dx), axis=(1, 2))
    assert (grown & sheet[:-1]).sum() > 0.5 * sheet[:-1].sum()


def test_drift_fools_intensity_clustering():
    """Thresholding at the clean class levels mislabels a whole drifted region of the body."""
    spec = PhantomSpec(shape=(2, 96, 96), seed=0, noise=0.0, rings=0.0)
    volume, labels = make_phantom(spec)
    levels = np.array([0.05, 0.40, 0.40 + spec.contrast, 0.85])
    predicted = nearest_mean(levels, np.ones(4), levels).classify(volume)
    body = labels == phantom.BODY
    wrong = (predicted[body] == phantom.INTERGROWTH).mean()
    assert 0.1 < wrong < 0.6


def test_fbp_variant_is_deterministic_and_streaky():
    spec = PhantomSpec(shape=(1, 48, 48), seed=2, fbp=True, fbp_angles=60)
    a, labels = make_phantom(spec)
    b, _ = make_phantom(spec)
    np.testing.assert_array_equal(a, b)
    air = labels[0] == phantom.AIR
    assert a[0][air].std() > 0.01


def _kmeans_score(spec):
    from srjax import clustering, metrics

    volume, labels = make_phantom(spec)
    classes = int(labels.max()) + 1
    counts, edges = np.histogram(volume, 1024)
    fit = clustering.kmeans_exact((edges[:-1] + edges[1:]) / 2, counts.astype(float), classes)
    return metrics.score(metrics.confusion(fit.classify(volume).astype(np.uint8), labels, classes, classes)), labels


def test_every_family_is_sliceable_and_has_its_classes():
    for name, classes in phantom.CLASSES.items():
        spec = phantom.family(name, (4, 48, 48), seed=3)
        volume, labels = make_phantom(spec)
        image, lab = phantom_slice(spec, 2)
        np.testing.assert_array_equal(image, volume[2])
        np.testing.assert_array_equal(lab, labels[2])
        assert labels.max() == classes - 1 and np.isfinite(volume).all()


def test_composite_is_nearly_right_for_clustering_and_cupping_is_not():
    """The well-separated family: intensity clustering scores high; the same sample with
    beam-hardening cupping mislabels its centre (a failure clustering cannot see)."""
    clean, _ = _kmeans_score(phantom.family("composite", (12, 160, 160)))
    cupped, _ = _kmeans_score(phantom.family("cupping", (12, 160, 160)))
    assert clean["miou"] > 0.9
    assert cupped["miou"] < clean["miou"] - 0.1


def test_rock_has_a_rare_bright_phase_clustering_finds():
    score, labels = _kmeans_score(phantom.family("rock", (12, 160, 160)))
    assert 0.01 < (labels == 3).mean() < 0.03
    assert score["iou"]["3"] > 0.8
