from __future__ import annotations

import numpy as np
import pytest

from opnp.detectors import create_detector


def test_dice_strict_mask_hand_computed():
    # mean feature (1, 2); W = [[1, 1], [3, 0.5]] -> V = [[1, 2], [3, 1]]
    train = np.array([[0.0, 1.0], [2.0, 3.0]])
    w = np.array([[1.0, 1.0], [3.0, 0.5]])
    b = np.zeros(2)
    det = create_detector("dice", weight=w, bias=b, percentile=50).fit(train)
    # percentile(V, 50) = 1.5: keep V > 1.5 -> (0,1) and (1,0); V = 1 twice pruned
    assert det.weight_mask.tolist() == [[False, True], [True, False]]
    h = np.array([[1.0, 1.0]])
    assert det.score(h)[0] == pytest.approx(np.log(np.exp(1.0) + np.exp(3.0)))
    np.testing.assert_allclose(det.logits(h), [[1.0, 3.0]])
    # Strict: at percentile 25 the threshold is exactly a value (1), which is pruned.
    det = create_detector("dice", weight=w, bias=b, percentile=25).fit(train)
    assert det.contribution_threshold == 1.0
    assert det.weight_mask.tolist() == [[False, True], [True, False]]


def test_dice_react_clips_and_masks():
    train = np.array([[0.0, 1.0], [2.0, 3.0]])
    w = np.array([[1.0, 1.0], [3.0, 0.5]])
    det = create_detector(
        "dice+react", weight=w, bias=np.zeros(2), percentile=50, react_percentile=50
    )
    det.fit(train)
    assert det.threshold == 1.5  # percentile of (0, 1, 2, 3)
    np.testing.assert_allclose(det.logits(np.array([[4.0, 4.0]])), [[1.5, 4.5]])
