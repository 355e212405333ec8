from __future__ import annotations

import numpy as np
import pytest

from opnp.detectors import create_detector


def test_msp_maxlogit_energy_hand_computed():
    w = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([0.0, np.log(3.0)])
    h = np.array([[0.0, 0.0]])  # logits (0, log 3)
    assert create_detector("msp", weight=w, bias=b).score(h)[0] == pytest.approx(0.75, rel=1e-14)
    assert np.isclose(create_detector("maxlogit", weight=w, bias=b).score(h)[0], np.log(3.0))
    assert np.isclose(create_detector("energy", weight=w, bias=b).score(h)[0], np.log(4.0))
    e2 = create_detector("energy", weight=w, bias=b, temperature=2.0).score(h)[0]
    assert np.isclose(e2, 2.0 * np.log(1.0 + np.sqrt(3.0)))
