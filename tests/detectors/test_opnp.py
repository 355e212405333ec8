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


def test_opp_react_clips_before_the_opp_pruned_layer():
    """OPP+ReAct (paper Table 2): ReAct clipping, then the weight mask only."""
    w, b, train, test = _setup()
    det = create_detector(
        "opp+react", weight=w, bias=b, weight_low=10, weight_high=2, react_percentile=80
    ).fit(train)
    t = np.percentile(train, 80)
    s = parameter_sensitivity(train, w, b)  # on unclipped features
    wm, _ = pruning_masks(s, s.mean(0), weight_low=10, weight_high=2)
    expected = np.minimum(test, t) @ (w * wm).T + b
    np.testing.assert_allclose(det.logits(test), expected, rtol=1e-12)
    np.testing.assert_allclose(det.score(test), np.log(np.exp(expected).sum(1)), rtol=1e-12)
    same = create_detector(
        "opnp+react", weight=w, bias=b, weight_low=10, weight_high=2, react_percentile=80
    ).fit(train)
    np.testing.assert_array_equal(det.score(test), same.score(test))
    with pytest.raises(ValueError, match=r"opp\+react: unknown hyperparameter.*neuron_low"):
        create_detector("opp+react", weight=w, bias=b, neuron_low=5)
    zero = create_detector("opp+react", weight=w, bias=b, react_percentile=80).fit(train)
    react = create_detector("react", weight=w, bias=b, percentile=80).fit(train)
    np.testing.assert_array_equal(zero.score(test), react.score(test))


def test_opp_react_grid_fast_path_equals_the_detector():
    """The workflow's vectorised grid path clips for opp+react as for opnp+react."""
    from opnp.pipeline.evaluation import FitData, evaluate_configs
    from opnp.pipeline.selection import expand_grid

    w, b, train, test = _setup()
    s = parameter_sensitivity(train, w, b)
    configs = expand_grid({"weight_low": [0, 10], "weight_high": [0, 2]}, {"react_percentile": 80})
    fit = FitData(w, b, train_features=train, sensitivity=s)
    kwargs = dict(
        id_features=test, ood_features={"ood": test[::-1] * 2}, split="val", keep_scores=True
    )
    _, grid_scores = evaluate_configs("opp+react", configs, fit, **kwargs)
    for params in configs:
        _, one = evaluate_configs("opp+react", [params], fit, **kwargs)
        (key,) = one
        np.testing.assert_allclose(grid_scores[key]["ID"], one[key]["ID"], rtol=1e-10)
        np.testing.assert_allclose(grid_scores[key]["ood"], one[key]["ood"], rtol=1e-10)


def _onp_low_and_tnp_masks(train, w, b, percentage):
    onp = create_detector("onp", weight=w, bias=b, neuron_low=percentage).fit(train)
    tnp = create_detector("tnp", weight=w, bias=b, percentage=percentage).fit(train)
    return onp, tnp


@pytest.mark.parametrize("percentage", [5, 10, 20, 40, 60])
def test_onp_low_side_is_tnp_for_nonnegative_features(percentage):
    """With the "mean" statistic, s_j = (1/C) sum_c (1/N) sum_k p_c(x_k)|h_j(x_k)|
    = (1/C) mean_k |h_j(x_k)| since the softmax sums to 1: ONP's low side ranks neurons by
    mean |activation| like TNP, so for ReLU features both prune the same neurons."""
    rng = np.random.default_rng(3)
    w, b = rng.normal(size=(10, 64)), rng.normal(size=10)
    train = np.maximum(rng.normal(size=(500, 64)) * rng.random(64) * 3, 0)
    onp, tnp = _onp_low_and_tnp_masks(train, w, b, percentage)
    np.testing.assert_allclose(onp.neuron_sensitivity, tnp.neuron_norm / w.shape[0], rtol=1e-12)
    assert not onp.neuron_mask.all()
    np.testing.assert_array_equal(onp.neuron_mask, tnp.neuron_mask)
    test = np.maximum(rng.normal(size=(50, 64)), 0)
    np.testing.assert_allclose(onp.score(test), tnp.score(test), rtol=1e-12)


def test_onp_low_side_and_tnp_for_signed_features():
    """The identity needs only the softmax summing to 1 and the per-sample Eq. 6, so with
    signed features (e.g. ViT pre-logits) ONP's low side still equals TNP (which ranks by
    mean |h_j|). With the batch reduction S = |P^T H| / N signed activations cancel, and
    the two part: there ONP's low side is not magnitude pruning; for ReLU features the
    batch reduction equals the per-sample one and the masks agree again."""
    rng = np.random.default_rng(4)
    w, b = rng.normal(size=(10, 64)), rng.normal(size=10)
    signed = rng.normal(size=(500, 64)) * rng.random(64) * 3 + rng.normal(size=64)
    onp, tnp = _onp_low_and_tnp_masks(signed, w, b, 20)
    np.testing.assert_array_equal(onp.neuron_mask, tnp.neuron_mask)
    batch = create_detector("onp", weight=w, bias=b, neuron_low=20, reduction="batch")
    assert not np.array_equal(batch.fit(signed).neuron_mask, tnp.neuron_mask)
    relu = np.maximum(signed, 0)
    _, tnp_relu = _onp_low_and_tnp_masks(relu, w, b, 20)
    np.testing.assert_array_equal(batch.fit(relu).neuron_mask, tnp_relu.neuron_mask)
