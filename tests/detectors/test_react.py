from __future__ import annotations

import numpy as np
import pytest

from opnp.detectors import create_detector


def test_react_clips_at_training_percentile():
    train = np.arange(1.0, 11.0).reshape(5, 2)  # values 1..10, 90th percentile = 9.1
    w, b = np.array([[1.0, 0.0], [0.0, 1.0]]), np.zeros(2)
    det = create_detector("react", weight=w, bias=b, percentile=90).fit(train)
    assert det.threshold == pytest.approx(9.1)
    h = np.array([[20.0, 1.0]])
    assert det.score(h)[0] == pytest.approx(np.log(np.exp(9.1) + np.exp(1.0)))
    fixed = create_detector("react", weight=w, bias=b, threshold=2.0).fit()
    assert fixed.score(h)[0] == pytest.approx(np.log(np.exp(2.0) + np.exp(1.0)))
    with pytest.raises(ValueError, match=r"percentile must be in \[0, 100\], got 101"):
        create_detector("react", weight=w, bias=b, percentile=101)
