"""The incremental grid scorer equals per-config detectors (float64, 1e-9 relative)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from opnp.detectors import create_detector
from opnp.grid import evaluate_pruning_grid, score_pruning_grid
from opnp.metrics import evaluate
from opnp.pruning import feature_percentile
from opnp.sensitivity import neuron_sensitivity, parameter_sensitivity


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(12, 40))
    b = rng.normal(size=12)
    train = np.maximum(rng.normal(size=(400, 40)), 0)
    test = np.maximum(rng.normal(size=(150, 40)) * 1.5, 0)
    s = parameter_sensitivity(train, w, b)
    configs = [
        dict(weight_low=a, weight_high=b_, neuron_low=c, neuron_high=d)
        for a, b_, c, d in itertools.product([0, 10, 40], [0, 0.5, 5], [0, 5, 20], [0, 10])
    ]
    return w, b, train, test, s, neuron_sensitivity(s), configs


@pytest.mark.parametrize(("score", "method"), [("energy", "opnp"), ("msp", "opnp+msp")])
def test_grid_equals_detectors(setup, score, method):
    w, b, train, test, s, n, configs = setup
    got = score_pruning_grid(test, w, b, s, n, configs, score=score, chunk_size=37)
    for i, cfg in enumerate(configs):
        det = create_detector(method, weight=w, bias=b, param_sensitivity=s, **cfg).fit()
        ref = det.score(test)
        np.testing.assert_allclose(got[i], ref, rtol=1e-9)


def test_grid_with_react_and_single_axis_configs(setup):
    w, b, train, test, s, n, _ = setup
    t = feature_percentile(train, 90)
    configs = [{"weight_low": 20}, {}, {"neuron_high": 5}, {"weight_high": 1, "neuron_low": 10}]
    got = score_pruning_grid(test, w, b, s, n, configs, react_threshold=t)
    for i, cfg in enumerate(configs):
        det = create_detector(
            "opnp+react", weight=w, bias=b, param_sensitivity=s, react_percentile=90, **cfg
        ).fit(train)
        np.testing.assert_allclose(got[i], det.score(test), rtol=1e-9)


def test_evaluate_pruning_grid(setup):
    w, b, train, test, s, n, _ = setup
    ood = test[:, ::-1].copy()
    configs = [{"weight_low": 10}, {"neuron_high": 10}]
    rows = evaluate_pruning_grid(test, {"rev": ood}, w, b, s, n, configs)
    assert [r["ood_set"] for r in rows] == ["rev", "rev"]
    det = create_detector("opnp", weight=w, bias=b, param_sensitivity=s, neuron_high=10).fit()
    expected = evaluate(det.score(test), det.score(ood))
    assert rows[1]["auroc"] == pytest.approx(expected["auroc"], abs=1e-12)
    assert rows[1]["neuron_high"] == 10


def test_bad_config(setup):
    w, b, _, test, s, n, _ = setup
    with pytest.raises(ValueError, match=r"configs\[1\]\['weight_low'\] must be in \[0, 100\)"):
        score_pruning_grid(test, w, b, s, n, [{}, {"weight_low": 120}])
    with pytest.raises(ValueError, match="unknown score 'x'"):
        score_pruning_grid(test, w, b, s, n, [{}], score="x")
