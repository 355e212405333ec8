"""The readings ablation (issue 25): every value of each ambiguous choice selected with the
main protocol, scored on the test sets; rows that must agree do, rows that must differ do."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from opnp.detectors import detector_class
from opnp.pipeline.evaluation import FitData
from opnp.pipeline.readings import (
    READING_ABLATIONS,
    check_readings,
    reading_sensitivity,
    reading_values,
    readings_rows,
)
from opnp.sensitivity import parameter_sensitivity

C, D = 4, 12
VAL_GROUPS = {"a": ["vb"], "b": ["va"]}
TEST_GROUPS = {"a": ["ta"], "b": ["tb"]}


def _features(rng, n, shift=0.0, relu=True):
    h = rng.normal(size=(n, D)) + shift
    return np.maximum(h, 0.0) if relu else h


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(C, D))
    bias = rng.normal(size=C) * 0.1
    # neurons of unequal sparsity (kept with probability keep_j, scaled by 1 / keep_j):
    # similar mean |activation|, L2 norms that grow with sparsity, so TNP's statistics rank
    # the neurons differently
    keep = np.linspace(0.15, 1.0, D)
    train = _features(rng, 300, 0.5) * (rng.random((300, D)) < keep) / keep
    labels = np.argmax(train @ weight.T + bias, axis=1)
    fit = FitData(
        weight,
        bias,
        train,
        labels,
        parameter_sensitivity(train, weight, bias),
        "mean",
    )
    id_test = _features(rng, 120, 0.5)
    data = {
        "fit": fit,
        "id_val": _features(rng, 100, 0.5),
        "ood_val": {"va": _features(rng, 80, 0.0), "vb": _features(rng, 80, 1.5)},
        "id_test": id_test,
        "id_test_labels": np.argmax(id_test @ weight.T + bias, axis=1),
        "ood_test": {"ta": _features(rng, 90, 0.0), "tb": _features(rng, 90, 1.5)},
    }
    return data


def _run(toy, readings, settings, **kwargs):
    return pd.DataFrame(
        readings_rows(
            readings,
            settings=settings,
            fit=toy["fit"],
            sensitivity_sources=[toy["fit"].train_features],
            main_reduction="per_sample",
            id_val=toy["id_val"],
            ood_val=toy["ood_val"],
            id_test=toy["id_test"],
            id_test_labels=toy["id_test_labels"],
            ood_test=toy["ood_test"],
            validation_groups=VAL_GROUPS,
            test_groups=TEST_GROUPS,
            **kwargs,
        )
    )


def _test(frame, variant):
    rows = frame[(frame["split"] == "test") & (frame["variant"] == variant)]
    return rows.sort_values("ood_set").reset_index(drop=True)


#: One pruning setting (no search): the readings' effect on the scores is then direct.
ONE_SETTING = {
    "opnp": {
        "grid": {},
        "fixed": {"weight_low": 30, "weight_high": 5, "neuron_low": 25, "neuron_high": 10},
    },
    "opnp+react": {
        "grid": {},
        "fixed": {"weight_low": 30, "weight_high": 5, "react_percentile": 90},
    },
    "tnp": {"grid": {}, "fixed": {"percentage": 40}},
}


def test_every_value_of_every_reading_is_selected_and_tested(toy):
    settings = {
        "opnp": {"grid": {"weight_low": [0, 20], "neuron_high": [0, 10]}, "fixed": {}},
        "opnp+react": {"grid": {"weight_low": [0, 20]}, "fixed": {"react_percentile": 90}},
        "tnp": {"grid": {"percentage": [10, 30]}, "fixed": {}},
    }
    frame = _run(toy, list(READING_ABLATIONS), settings, uncertainty={"n_resamples": 20})
    assert set(frame["experiment"]) == {"readings"}
    for name, (method, option) in READING_ABLATIONS.items():
        for value in reading_values(name):
            variant = f"{name}={value}"
            rows = _test(frame, variant)
            assert list(rows["ood_set"]) == ["ta", "tb"], variant
            assert set(rows["method"]) == {method}
            # the tested params carry the reading's value, chosen from the configured grid
            assert all(json.loads(p)[option] == value for p in rows["params"]), variant
            assert rows["id_accuracy"].between(0, 100).all()
            assert rows["fpr95_ci_low"].notna().all()
            val = frame[(frame["split"] == "val") & (frame["variant"] == variant)]
            assert set(val["ood_set"]) == {"va", "vb"}
    # the default value comes first: the reference row
    assert reading_values("tnp_statistic")[0] == "mean_abs_activation"
    assert reading_values("threshold_scope")[0] == "matrix"


def test_batch_reduction_equals_per_sample_on_relu_features(toy):
    settings = {"opnp": {"grid": {"weight_low": [0, 20], "weight_high": [0, 5]}, "fixed": {}}}
    frame = _run(toy, ["reduction"], settings)
    per_sample = _test(frame, "reduction=per_sample")
    batch = _test(frame, "reduction=batch")
    for column in ("fpr95", "auroc", "id_accuracy"):
        np.testing.assert_allclose(batch[column], per_sample[column], rtol=0, atol=1e-9)


def test_batch_reduction_differs_on_signed_features(toy):
    fit = toy["fit"]
    signed = _features(np.random.default_rng(1), 200, relu=False)
    batch = reading_sensitivity([signed[:70], signed[70:]], fit.weight, fit.bias, reduction="batch")
    np.testing.assert_allclose(
        batch, parameter_sensitivity(signed, fit.weight, fit.bias, reduction="batch"), rtol=1e-12
    )
    per_sample = reading_sensitivity([signed], fit.weight, fit.bias)
    assert not np.allclose(batch, per_sample)


def test_clipped_sensitivity_is_the_detectors_own(toy):
    fit = toy["fit"]
    from opnp.pruning import feature_percentile

    clip = float(feature_percentile(fit.train_features, 90))
    ours = reading_sensitivity([fit.train_features], fit.weight, fit.bias, clip=clip)
    theirs = detector_class("opnp+react").sensitivity_for(
        fit.train_features,
        fit.weight,
        fit.bias,
        sensitivity_features="clipped",
        react_percentile=90,
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert not np.allclose(ours, fit.sensitivity)


@pytest.mark.parametrize(
    "reading", ["threshold_scope", "neuron_source", "sensitivity_features", "tnp_statistic"]
)
def test_other_values_change_the_scores(toy, reading):
    frame = _run(toy, [reading], ONE_SETTING)
    reference, *others = reading_values(reading)
    ref = _test(frame, f"{reading}={reference}")
    for value in others:
        rows = _test(frame, f"{reading}={value}")
        assert not np.allclose(rows["auroc"], ref["auroc"]), value


def test_readings_are_checked_against_the_library_and_the_methods():
    assert check_readings(["reduction"], ["opnp"], "ablations.readings.run") == ["reduction"]
    with pytest.raises(ValueError, match=r"ablations\.readings\.run: 'scope'"):
        check_readings(["scope"], ["opnp"], "ablations.readings.run")
    with pytest.raises(ValueError, match=r"ablations\.readings\.run.*'tnp'"):
        check_readings(["tnp_statistic"], ["opnp"], "ablations.readings.run")


def test_the_react_percentile_is_reacts_choice_for_each_test_family(toy):
    # ReAct chose 80 for family a (validated on vb) and 95 for family b (on va)
    react_selection = pd.DataFrame(
        {
            "params": ['{"percentile": 80}', '{"percentile": 95}'],
            "selected": [True, False],
            "selected_for": ['{"a": ["vb"]}', '{"b": ["va"]}'],
        }
    )
    settings = {"opnp+react": {"grid": {"weight_low": [0, 20]}, "fixed": {}}}
    frame = _run(toy, ["sensitivity_features"], settings, react_selection=react_selection)
    for value in ("unclipped", "clipped"):
        rows = _test(frame, f"sensitivity_features={value}")
        percentiles = [json.loads(p)["react_percentile"] for p in rows["params"]]
        assert percentiles == [80, 95], value
