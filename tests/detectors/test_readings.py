"""The readings of READINGS (opnp.detectors.optimal_pruning): each option's values differ
where they should, agree where they must, and the vectorised grid path equals each
config's detector for every value."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from opnp.detectors import create_detector, detector_class
from opnp.detectors.optimal_pruning import READINGS, reading_methods
from opnp.pipeline.evaluation import FitData, evaluate_configs
from opnp.pruning import feature_percentile, opnp_masks, pruning_masks, tail_mask
from opnp.sensitivity import neuron_sensitivity, parameter_sensitivity


def _head(c=12, d=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(c, d)), rng.normal(size=c), rng


def _signed(rng, n, d):
    return rng.normal(size=(n, d)) * rng.random(d) * 2 + rng.normal(size=d) * 0.5


def _grid_equals_each_detector(method, configs, fit, test, ood):
    """Scores of the grid path (all configs at once) vs one config at a time (the
    detector's .score()), largest relative difference."""
    kw = dict(id_features=test, ood_features={"ood": ood}, split="val", keep_scores=True)
    assert detector_class(method).grid_scorer(
        configs,
        weight=fit.weight,
        bias=fit.bias,
        sensitivity=fit.sensitivity,
        statistic=fit.statistic,
        train_features=fit.train_features,
        features={"ID": test},
    ), "the grid path must take these configs"
    _, grid = evaluate_configs(method, configs, fit, **kw)
    worst = 0.0
    for params in configs:
        _, one = evaluate_configs(method, [params], fit, **kw)
        (key,) = one
        for name in ("ID", "ood"):
            ref = one[key][name]
            worst = max(worst, float(np.max(np.abs(grid[key][name] - ref) / np.abs(ref))))
    return worst, grid


PERCENTAGES = [
    dict(weight_low=a, weight_high=b, neuron_low=c, neuron_high=d)
    for a, b, c, d in itertools.product([0, 10, 40], [0, 1, 5], [0, 10], [0, 5])
]


# -- the catalogue -----------------------------------------------------------------------


@pytest.mark.parametrize("option", sorted(READINGS))
def test_every_reading_is_a_validated_option_with_its_default(option):
    reading = READINGS[option]
    methods = reading_methods(option)
    assert methods, f"no detector takes {option}"
    assert reading.default in reading.values and len(reading.values) >= 2
    w, b, rng = _head()
    train = _signed(rng, 50, w.shape[1])
    for method in methods:
        cls = detector_class(method)
        assert cls.defaults[option] == reading.default
        for value in reading.values:
            det = create_detector(method, weight=w, bias=b, **{option: value}).fit(train)
            assert det.params[option] == value
        with pytest.raises(ValueError, match=rf"unknown {option} 'bogus'; available: "):
            create_detector(method, weight=w, bias=b, **{option: "bogus"})


def test_reading_methods():
    assert reading_methods("sensitivity_features") == ["opnp+react", "opp+react"]
    assert reading_methods("statistic") == ["tnp"]
    assert "onp" not in reading_methods("threshold_scope")
    assert reading_methods("neuron_source") == ["opnp", "opnp+msp", "opnp+react"]
    with pytest.raises(ValueError, match="unknown option 'scope'"):
        reading_methods("scope")


# -- threshold_scope ---------------------------------------------------------------------


def test_row_scope_prunes_each_row_by_its_own_percentiles():
    rng = np.random.default_rng(1)
    # rows on very different scales: the matrix thresholds prune the small rows' weights
    s = rng.random((6, 50)) * 10.0 ** np.arange(6)[:, None]
    n = s.mean(0)
    row, _ = pruning_masks(s, n, weight_low=20, weight_high=4, threshold_scope="row")
    for r in range(s.shape[0]):
        np.testing.assert_array_equal(row[r], tail_mask(s[r], 20, 4))
    matrix, _ = pruning_masks(s, n, weight_low=20, weight_high=4)
    assert not np.array_equal(row, matrix)
    assert len(set((~matrix).sum(1))) > 1  # matrix: uneven across classes
    # one row: its percentiles are the matrix's
    one = s[:1]
    np.testing.assert_array_equal(
        pruning_masks(one, one[0], 30, 2, threshold_scope="row")[0],
        pruning_masks(one, one[0], 30, 2, threshold_scope="matrix")[0],
    )
    with pytest.raises(ValueError, match="unknown threshold_scope 'rows'; available: matrix, row"):
        pruning_masks(s, n, 10, threshold_scope="rows")


@pytest.mark.parametrize("method", ["opnp", "opp", "opnp+msp", "opp+react"])
def test_row_scope_detector_and_grid(method):
    w, b, rng = _head()
    train, test, ood = (_signed(rng, n, w.shape[1]) for n in (300, 60, 50))
    s = parameter_sensitivity(train, w, b)
    cls = detector_class(method)
    configs = [
        {k: v for k, v in c.items() if k in cls.defaults} | {"threshold_scope": "row"}
        for c in PERCENTAGES
    ]
    configs = [dict(t) for t in {tuple(sorted(c.items())) for c in configs}]
    fit = FitData(w, b, train_features=train, sensitivity=s)
    worst, grid = _grid_equals_each_detector(method, configs, fit, test, ood)
    assert worst < 1e-9
    params = {"weight_low": 40, "weight_high": 5, "threshold_scope": "row"}
    det = create_detector(method, weight=w, bias=b, param_sensitivity=s, **params).fit(train)
    wm, _ = pruning_masks(s, s.mean(0), 40, 5, threshold_scope="row")
    np.testing.assert_array_equal(det.weight_mask, wm)
    matrix = create_detector(
        method, weight=w, bias=b, param_sensitivity=s, **{**params, "threshold_scope": "matrix"}
    ).fit(train)
    assert not np.array_equal(det.score(test), matrix.score(test))


# -- reduction ---------------------------------------------------------------------------


def test_reduction_equal_on_relu_features_and_differs_on_signed():
    w, b, rng = _head()
    signed = _signed(rng, 300, w.shape[1])
    test = _signed(rng, 40, w.shape[1])
    params = dict(weight_low=30, weight_high=1, neuron_low=10, neuron_high=5)

    def det(features, reduction):
        return create_detector("opnp", weight=w, bias=b, reduction=reduction, **params).fit(
            features
        )

    relu = np.maximum(signed, 0)
    a, c = det(relu, "per_sample"), det(relu, "batch")
    np.testing.assert_allclose(a.param_sensitivity, c.param_sensitivity, rtol=1e-12)
    np.testing.assert_array_equal(a.weight_mask, c.weight_mask)
    np.testing.assert_allclose(a.score(test), c.score(test), rtol=1e-12)
    a, c = det(signed, "per_sample"), det(signed, "batch")
    assert np.all(c.param_sensitivity <= a.param_sensitivity + 1e-15)  # |sum| <= sum |.|
    assert not np.array_equal(a.weight_mask, c.weight_mask)
    assert not np.allclose(a.score(test), c.score(test))


def test_batch_reduction_grid_path_equals_the_detector_computing_its_own_sensitivity():
    """The workflow's grid gets S from the sensitivity rule (config sensitivity.reduction
    -> parameter_sensitivity(reduction=)); with the batch S it equals detectors that
    compute the batch S themselves."""
    w, b, rng = _head()
    train, test, ood = (_signed(rng, n, w.shape[1]) for n in (300, 60, 50))
    s_batch = parameter_sensitivity(train, w, b, reduction="batch")
    configs = [c | {"reduction": "batch"} for c in PERCENTAGES]
    fit = FitData(w, b, train_features=train, sensitivity=s_batch)
    _, grid = _grid_equals_each_detector("opnp", configs, fit, test, ood)
    from opnp.pipeline.results import params_json

    for params in configs[::5]:
        own = create_detector("opnp", weight=w, bias=b, **params).fit(train)
        np.testing.assert_allclose(own.param_sensitivity, s_batch, rtol=1e-12)
        np.testing.assert_allclose(grid[(params_json(params), 0)]["ID"], own.score(test), rtol=1e-9)


# -- TNP statistic -----------------------------------------------------------------------


def _tnp_data():
    """Four neurons, each statistic's smallest a different one: neuron 1 (rare spikes)
    has the smallest mean |h|, neuron 0 (constant 1) the smallest RMS, neuron 2 the
    smallest weight column."""
    n = 100
    h = np.empty((n, 4))
    h[:, 0] = 1.0
    h[:, 1] = np.where(np.arange(n) % 10 == 0, 8.0, 0.0)  # mean 0.8, RMS 2.53
    h[:, 2] = 1.5
    h[:, 3] = -2.0
    w = np.ones((3, 4))
    w[:, 2] = 0.1
    return w, np.zeros(3), h


@pytest.mark.parametrize(
    ("statistic", "pruned"), [("mean_abs_activation", 1), ("activation_l2", 0), ("weight_l2", 2)]
)
def test_tnp_statistics_prune_different_neurons(statistic, pruned):
    w, b, h = _tnp_data()
    det = create_detector("tnp", weight=w, bias=b, percentage=25, statistic=statistic).fit(h)
    expected = np.ones(4, dtype=bool)
    expected[pruned] = False
    np.testing.assert_array_equal(det.neuron_mask, expected)


def test_tnp_statistics_definitions_and_agreement():
    w, b, rng = _head(d=30)
    h = _signed(rng, 200, 30)
    norms = {
        s: create_detector("tnp", weight=w, bias=b, percentage=20, statistic=s).fit(h)
        for s in ("mean_abs_activation", "activation_l2")
    }
    np.testing.assert_allclose(norms["mean_abs_activation"].neuron_norm, np.abs(h).mean(0))
    np.testing.assert_allclose(norms["activation_l2"].neuron_norm, np.sqrt((h * h).mean(0)))
    weight = create_detector("tnp", weight=w, bias=b, percentage=20, statistic="weight_l2").fit()
    np.testing.assert_allclose(weight.neuron_norm, np.linalg.norm(w, axis=0), rtol=1e-12)
    # constant-magnitude features: mean |h| = RMS, the same neurons
    const = np.ones((5, 1)) * rng.normal(size=30)
    a, c = (
        create_detector("tnp", weight=w, bias=b, percentage=20, statistic=s).fit(const)
        for s in ("mean_abs_activation", "activation_l2")
    )
    np.testing.assert_array_equal(a.neuron_mask, c.neuron_mask)
    # the default is the mean |h| that ONP's low side reproduces (see test_opnp.py)
    onp = create_detector("onp", weight=w, bias=b, neuron_low=20).fit(h)
    np.testing.assert_array_equal(onp.neuron_mask, norms["mean_abs_activation"].neuron_mask)
    with pytest.raises(ValueError, match="tnp.fit needs train_features"):
        create_detector("tnp", weight=w, bias=b, statistic="activation_l2").fit()


def test_tnp_fit_needs_follow_the_statistic():
    tnp = detector_class("tnp")
    assert tnp.fit_needs_for({}) == ("abs_mean",)
    assert tnp.fit_needs_for({"statistic": "activation_l2"}) == ("features",)
    assert tnp.fit_needs_for({"statistic": "weight_l2"}) == ()


# -- sensitivity_features ----------------------------------------------------------------


def test_parameter_sensitivity_clip_is_the_sensitivity_of_the_clipped_features():
    from opnp.sensitivity import SensitivityAccumulator

    w, b, rng = _head()
    h = _signed(rng, 300, w.shape[1])
    t = float(np.percentile(h, 70))
    ref = parameter_sensitivity(np.minimum(h, t), w, b)
    np.testing.assert_allclose(parameter_sensitivity(h, w, b, clip=t, chunk_size=64), ref)
    acc = SensitivityAccumulator(w, b, clip=t).update(h[:100]).update(h[100:])
    np.testing.assert_allclose(acc.result(), ref, rtol=1e-12)
    assert not np.allclose(parameter_sensitivity(h, w, b), ref)
    with pytest.raises(ValueError, match="clip must be a finite number or None, got nan"):
        parameter_sensitivity(h, w, b, clip=float("nan"))


def test_parameter_sensitivity_clip_torch_path():
    torch = pytest.importorskip("torch")
    w, b, rng = _head()
    h = _signed(rng, 200, w.shape[1])
    t = float(np.percentile(h, 70))
    got = parameter_sensitivity(torch.from_numpy(h), w, b, clip=t, device="cpu")
    np.testing.assert_allclose(got, parameter_sensitivity(h, w, b, clip=t), rtol=1e-12)


@pytest.mark.parametrize("method", ["opnp+react", "opp+react"])
def test_clipped_sensitivity_detector_and_grid(method):
    w, b, rng = _head()
    train, test, ood = (_signed(rng, n, w.shape[1]) for n in (300, 60, 50))
    cls = detector_class(method)
    base = {"react_percentile": 80, "sensitivity_features": "clipped"}
    det = create_detector(method, weight=w, bias=b, weight_low=30, weight_high=1, **base)
    det.fit(train)
    t = feature_percentile(train, 80)
    clipped = parameter_sensitivity(train, w, b, clip=t)
    np.testing.assert_allclose(det.param_sensitivity, clipped, rtol=1e-12)
    unclipped = create_detector(
        method, weight=w, bias=b, weight_low=30, weight_high=1, react_percentile=80
    ).fit(train)
    assert not np.array_equal(det.weight_mask, unclipped.weight_mask)
    # at the 100th percentile nothing is clipped: the readings agree
    top = {**base, "react_percentile": 100, "weight_low": 30}
    np.testing.assert_array_equal(
        create_detector(method, weight=w, bias=b, **top).fit(train).score(test),
        create_detector(method, weight=w, bias=b, **{**top, "sensitivity_features": "unclipped"})
        .fit(train)
        .score(test),
    )
    assert cls.fit_needs_for(base) == ("features",)
    assert cls.fit_needs_for({}) == ("sensitivity", "features")
    # the grid path with the clipped S (what the workflow passes) equals detectors that
    # compute the clipped S themselves
    configs = [
        dict(t) for t in {
            tuple(sorted(({k: v for k, v in c.items() if k in cls.defaults} | base).items()))
            for c in PERCENTAGES
        }
    ]  # fmt: skip
    fit = FitData(w, b, train_features=train, sensitivity=clipped)
    worst, grid = _grid_equals_each_detector(method, configs, fit, test, ood)
    assert worst < 1e-9
    from opnp.pipeline.results import params_json

    for params in configs[::4]:
        own = create_detector(method, weight=w, bias=b, **params).fit(train)
        key = (params_json(params), 0)
        np.testing.assert_allclose(grid[key]["ID"], own.score(test), rtol=1e-9)
    with pytest.raises(ValueError, match=r"opnp: unknown hyperparameter.*sensitivity_features"):
        create_detector("opnp", weight=w, bias=b, sensitivity_features="clipped")


# -- neuron_source -----------------------------------------------------------------------


def test_weight_pruned_neuron_sensitivity():
    w, b, rng = _head()
    s = parameter_sensitivity(_signed(rng, 300, w.shape[1]), w, b)
    params = dict(weight_low=40, weight_high=5, neuron_low=20, neuron_high=10)
    wm, nm, n = opnp_masks(s, "mean", **params, neuron_source="weight_pruned")
    np.testing.assert_array_equal(n, neuron_sensitivity(np.where(wm, s, 0.0), "mean"))
    np.testing.assert_array_equal(nm, tail_mask(n, 20, 10))
    _, nm0, n0 = opnp_masks(s, "mean", **params)
    np.testing.assert_array_equal(n0, neuron_sensitivity(s, "mean"))
    assert not np.array_equal(nm, nm0)
    # no weight pruning: the same neuron sensitivity
    neurons_only = dict(neuron_low=20, neuron_high=10)
    for statistic in ("mean", "max", "variance"):
        a = opnp_masks(s, statistic, **neurons_only, neuron_source="weight_pruned")
        c = opnp_masks(s, statistic, **neurons_only)
        np.testing.assert_array_equal(a[2], c[2])
    with pytest.raises(ValueError, match="unknown neuron_source 'pruned'; available: "):
        opnp_masks(s, neuron_source="pruned")


@pytest.mark.parametrize("method", ["opnp", "opnp+msp", "opnp+react"])
@pytest.mark.parametrize("scope", ["matrix", "row"])
def test_weight_pruned_detector_and_grid(method, scope):
    w, b, rng = _head()
    train, test, ood = (_signed(rng, n, w.shape[1]) for n in (300, 60, 50))
    s = parameter_sensitivity(train, w, b)
    extra = {"neuron_source": "weight_pruned", "threshold_scope": scope}
    if method == "opnp+react":
        extra["react_percentile"] = 85
    configs = [c | extra for c in PERCENTAGES]
    fit = FitData(w, b, train_features=train, sensitivity=s, statistic="max")
    worst, _ = _grid_equals_each_detector(method, configs, fit, test, ood)
    assert worst < 1e-9
    params = dict(weight_low=40, weight_high=5, neuron_low=10, neuron_high=5, **extra)
    det = create_detector(method, weight=w, bias=b, param_sensitivity=s, **params).fit(train)
    wm, nm, _ = opnp_masks(
        s, "mean", 40, 5, 10, 5, threshold_scope=scope, neuron_source="weight_pruned"
    )
    np.testing.assert_array_equal(det.weight_mask, wm)
    np.testing.assert_array_equal(det.neuron_mask, nm)


def test_grid_falls_back_when_a_reading_varies():
    w, b, rng = _head()
    train, test = (_signed(rng, n, w.shape[1]) for n in (200, 30))
    s = parameter_sensitivity(train, w, b)
    configs = [{"weight_low": 10}, {"weight_low": 10, "threshold_scope": "row"}]
    kwargs = dict(weight=w, bias=b, sensitivity=s, statistic="mean", train_features=train)
    assert detector_class("opnp").grid_scorer(configs, features={"ID": test}, **kwargs) is None
    fit = FitData(w, b, train_features=train, sensitivity=s)
    _, scores = evaluate_configs(
        "opnp", configs, fit, id_features=test, ood_features={}, split="val", keep_scores=True
    )
    a, c = scores.values()
    assert not np.array_equal(a["ID"], c["ID"])
    with pytest.raises(ValueError, match="unknown threshold_scope 'x'"):
        detector_class("opnp").grid_scorer(
            [{"threshold_scope": "x"}] * 2, features={"ID": test}, **kwargs
        )


def test_score_and_evaluate_pruning_grid_take_the_threshold_scope():
    from opnp.grid import evaluate_pruning_grid, score_pruning_grid
    from opnp.metrics import evaluate

    w, b, rng = _head()
    train, test, ood = (_signed(rng, n, w.shape[1]) for n in (200, 40, 30))
    s = parameter_sensitivity(train, w, b)
    n = neuron_sensitivity(s)
    configs = [{"weight_low": 30, "weight_high": 2}, {"weight_low": 10, "neuron_high": 5}]
    got = score_pruning_grid(test, w, b, s, n, configs, threshold_scope="row")
    rows = evaluate_pruning_grid(test, ood, w, b, s, n, configs, threshold_scope="row")
    for i, cfg in enumerate(configs):
        det = create_detector(
            "opnp", weight=w, bias=b, param_sensitivity=s, threshold_scope="row", **cfg
        ).fit()
        np.testing.assert_allclose(got[i], det.score(test), rtol=1e-9)
        expected = evaluate(det.score(test), det.score(ood))
        assert rows[i]["auroc"] == pytest.approx(expected["auroc"], abs=1e-12)
    matrix = score_pruning_grid(test, w, b, s, n, configs)
    assert not np.allclose(matrix[0], got[0])
    with pytest.raises(ValueError, match="unknown threshold_scope 'col'"):
        score_pruning_grid(test, w, b, s, n, configs, threshold_scope="col")


@pytest.mark.parametrize("method", ["opnp", "opnp+react", "opp+react"])
def test_sensitivity_for_is_the_fitted_sensitivity(method):
    w, b, rng = _head()
    train = _signed(rng, 300, w.shape[1])
    cls = detector_class(method)
    values = READINGS["sensitivity_features"].values if cls.clips_at_react else [None]
    for features in values:
        params = {"reduction": "batch", "weight_low": 10}
        if features is not None:
            params |= {"sensitivity_features": features, "react_percentile": 75}
        det = create_detector(method, weight=w, bias=b, **params).fit(train)
        got = cls.sensitivity_for(train, w, b, **params)
        np.testing.assert_array_equal(got, det.param_sensitivity)
    rows = np.arange(0, 300, 3)
    sub = cls.sensitivity_for(train, w, b, rows=rows, **params)
    clip = feature_percentile(train, 75) if cls.clips_at_react else np.inf
    ref = parameter_sensitivity(np.minimum(train[rows], clip), w, b, reduction="batch")
    np.testing.assert_allclose(sub, ref, rtol=1e-12)
    with pytest.raises(ValueError, match="sensitivity_for computes param_sensitivity"):
        cls.sensitivity_for(train, w, b, param_sensitivity=np.ones_like(w))
