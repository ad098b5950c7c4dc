import numpy as np

from srjax.metrics import confusion, match_classes, score


def test_one_to_one_matching_and_scores_by_hand():
    truth = np.array([[[0, 0, 1, 1, 1, 2]]])
    pred = np.array([[[2, 2, 0, 0, 1, 1]]])  # ids permuted, one pixel of class 1 wrong
    counts = confusion(pred, truth, 3, 3)
    assert list(match_classes(counts)) == [1, 2, 0]
    s = score(counts)
    assert s["pixel_accuracy"] == 3 / 4  # 4 foreground pixels, 3 right
    # class 1: tp 2, fp 0, fn 1 -> 2/3; class 2: tp 1, fp 1, fn 0 -> 1/2
    np.testing.assert_allclose(s["miou"], (2 / 3 + 1 / 2) / 2)


def test_one_to_one_does_not_reward_merging():
    truth = np.array([[[1, 1, 1, 2]]])
    pred = np.array([[[0, 0, 0, 0]]])
    s = score(confusion(pred, truth, 3, 3))
    assert s["pixel_accuracy"] == 3 / 4
    np.testing.assert_allclose(s["miou"], (3 / 4 + 0) / 2)


def test_many_to_one_when_k_exceeds_true_classes():
    truth = np.array([[[0, 1, 1, 1, 2, 2]]])
    pred = np.array([[[0, 1, 3, 3, 2, 4]]])
    counts = confusion(pred, truth, 5, 3)
    assert list(match_classes(counts)) == [0, 1, 2, 1, 2]
    s = score(counts)
    assert s["pixel_accuracy"] == 1.0 and s["miou"] == 1.0
