from __future__ import annotations

import numpy as np

from opnp.detectors import create_detector


def test_tpp_prunes_small_magnitudes():
    w = np.array([[0.1, -2.0], [-0.3, 4.0]])
    det = create_detector("tpp", weight=w, bias=np.zeros(2), percentage=50).fit()
    # percentile(|W|, 50) = 1.15 -> prune 0.1 and 0.3
    assert det.weight_mask.tolist() == [[False, True], [False, True]]


def test_tnp_prunes_low_mean_activation():
    w, b = np.ones((2, 3)), np.zeros(2)
    train = np.array([[0.0, -5.0, 1.0], [0.2, 5.0, 1.0]])  # mean |h| = 0.1, 5, 1
    det = create_detector("tnp", weight=w, bias=b, percentage=30).fit(train)
    assert det.neuron_mask.tolist() == [False, True, True]
    np.testing.assert_allclose(det.logits(np.ones((1, 3))), [[2.0, 2.0]])


def test_random_pruning_counts_and_seeds():
    w, b = np.ones((10, 20)), np.zeros(10)
    a = create_detector("rpp", weight=w, bias=b, percentage=15, seed=1).fit()
    assert (~a.weight_mask).sum() == 30
    a2 = create_detector("rpp", weight=w, bias=b, percentage=15, seed=1).fit()
    c = create_detector("rpp", weight=w, bias=b, percentage=15, seed=2).fit()
    assert (a.weight_mask == a2.weight_mask).all() and (a.weight_mask != c.weight_mask).any()
    n = create_detector("rnp", weight=w, bias=b, percentage=10, seed=0).fit()
    assert (~n.neuron_mask).sum() == 2
    assert create_detector("rnp", weight=w, bias=b).fit().neuron_mask.all()
