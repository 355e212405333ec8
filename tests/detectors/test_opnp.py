from __future__ import annotations

import numpy as np
import pytest

from opnp.detectors import create_detector
from opnp.pruning import pruning_masks
from opnp.sensitivity import neuron_sensitivity, parameter_sensitivity


def _setup():
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(8, 20)), rng.normal(size=8)
    train = np.maximum(rng.normal(size=(200, 20)), 0)
    test = np.maximum(rng.normal(size=(30, 20)), 0)
    return w, b, train, test


@pytest.mark.parametrize("name", ["opp", "onp", "opnp", "opnp+react"])
def test_all_zero_percentages_equal_energy_exactly(name):
    w, b, train, test = _setup()
    energy = create_detector("energy", weight=w, bias=b).score(test)
    det = create_detector(name, weight=w, bias=b).fit(train)
    if name == "opnp+react":
        energy = create_detector("react", weight=w, bias=b).fit(train).score(test)
    np.testing.assert_array_equal(det.score(test), energy)


def test_opnp_pruned_logits_from_masks():
    w, b, train, test = _setup()
    s = parameter_sensitivity(train, w, b)
    det = create_detector(
        "opnp", weight=w, bias=b, weight_low=20, weight_high=2, neuron_low=10, neuron_high=5
    ).fit(train)
    np.testing.assert_allclose(det.param_sensitivity, s)
    wm, nm = pruning_masks(s, neuron_sensitivity(s), 20, 2, 10, 5)
    np.testing.assert_array_equal(det.weight_mask, wm)
    expected = test * nm @ (w * wm).T + b
    np.testing.assert_allclose(det.logits(test), expected, rtol=1e-12)
    np.testing.assert_allclose(det.score(test), np.log(np.exp(expected).sum(1)), rtol=1e-12)
    msp = create_detector(
        "opnp+msp",
        weight=w,
        bias=b,
        weight_low=20,
        weight_high=2,
        neuron_low=10,
        neuron_high=5,
        param_sensitivity=s,
    ).fit()
    p = np.exp(expected) / np.exp(expected).sum(1, keepdims=True)
    np.testing.assert_allclose(msp.score(test), p.max(1), rtol=1e-12)


def test_precomputed_sensitivity_and_statistic():
    w, b, train, test = _setup()
    s = np.random.default_rng(5).random(w.shape)
    det = create_detector(
        "onp", weight=w, bias=b, neuron_high=10, neuron_statistic="max", param_sensitivity=s
    ).fit()
    _, nm = pruning_masks(s, s.max(0), neuron_high=10)
    np.testing.assert_array_equal(det.neuron_mask, nm)
    assert "param_sensitivity" not in det.params
    with pytest.raises(ValueError, match="unknown neuron_statistic 'avg'"):
        create_detector("opnp", weight=w, bias=b, neuron_statistic="avg")
    with pytest.raises(ValueError, match=r"opp: unknown hyperparameter\(s\) \['neuron_low'\]"):
        create_detector("opp", weight=w, bias=b, neuron_low=5)
    with pytest.raises(ValueError, match="weight_low \\+ weight_high must be < 100"):
        create_detector("opnp", weight=w, bias=b, weight_low=50, weight_high=50)


def test_opnp_react_clips_before_pruned_layer():
    w, b, train, test = _setup()
    det = create_detector("opnp+react", weight=w, bias=b, weight_low=10, react_percentile=80)
    det.fit(train)
    t = np.percentile(train, 80)
    s = parameter_sensitivity(train, w, b)  # on unclipped features
    wm, _ = pruning_masks(s, s.mean(0), weight_low=10)
    np.testing.assert_allclose(det.logits(test), np.minimum(test, t) @ (w * wm).T + b, rtol=1e-12)
