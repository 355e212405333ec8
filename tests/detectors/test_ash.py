from __future__ import annotations

import numpy as np
import pytest

from opnp.detectors import create_detector
from opnp.detectors.ash import ash_s


def test_ash_s_hand_computed():
    h = np.array([[1.0, 4.0, 2.0, 3.0]])
    # p = 50: keep the 2 largest (4, 3); s1 = 10, s2 = 7; scale exp(10/7)
    out = ash_s(h, 50)
    np.testing.assert_allclose(out, np.array([[0.0, 4.0, 0.0, 3.0]]) * np.exp(10 / 7))
    w, b = np.eye(4), np.zeros(4)
    det = create_detector("ash", weight=w, bias=b, percentile=50)
    assert det.score(h)[0] == pytest.approx(np.log(np.exp(out).sum()))
    # p = 75 keeps round(4 - 3) = 1 entry
    np.testing.assert_allclose(ash_s(h, 75), [[0.0, 4.0 * np.exp(10 / 4), 0.0, 0.0]])


def test_all_zero_feature_row_is_not_scaled():
    """s1 = s2 = 0: no scaling (exp(0/0) would be NaN); the score is the bias's Energy."""
    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(4, 10)), rng.normal(size=4)
    h = np.vstack([np.zeros(10), np.maximum(rng.normal(size=10), 0)])
    np.testing.assert_array_equal(ash_s(h, 80)[0], np.zeros(10))
    scores = create_detector("ash", weight=w, bias=b, percentile=80).score(h)
    assert np.isfinite(scores).all()
    assert scores[0] == pytest.approx(np.log(np.exp(b).sum()), rel=1e-12)
