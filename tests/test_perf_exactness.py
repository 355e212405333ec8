"""The fast paths of the numerical core give the results of the plain ones.

Grid scorer (opnp.grid): the exponential-domain traversal, its separable energy
shortcut, the additive fallback for wide logit ranges and the thread split all equal
the per-config dense computation (float64, 1e-9 relative). No timing here: speed is
measured by benchmarks/.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from opnp import grid, grid_plan
from opnp.grid import score_pruning_grid
from opnp.grid_plan import GridPlan
from opnp.pruning import masked_weight, pruning_masks
from opnp.sensitivity import neuron_sensitivity, parameter_sensitivity


def _dense_scores(h, w, b, s, n, cfg, score, t):
    """The per-config reference: masked layer, dense float64 logits, score."""
    wm, nm = pruning_masks(s, n, **cfg)
    f = h @ masked_weight(w, wm, nm).T + b
    if score == "maxlogit":
        return f.max(axis=1)
    z = f / t
    m = z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z - m).sum(axis=1)) + m[:, 0]
    if score == "energy":
        return t * lse
    return np.exp(z.max(axis=1) - lse)


@pytest.fixture(scope="module")
def layer():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(15, 48)) * 0.7
    b = rng.normal(size=15)
    train = np.maximum(rng.normal(size=(300, 48)), 0)
    test = np.maximum(rng.normal(size=(130, 48)) * 1.3, 0)
    s = parameter_sensitivity(train, w, b)
    return w, b, test, s, neuron_sensitivity(s)


PAPER_LIKE = [
    dict(weight_low=a, weight_high=b, neuron_low=c, neuron_high=d)
    for a, b, c, d in itertools.product([0, 10, 40], [0, 1, 5], [0, 10], [0, 5, 20])
]
# weight_low=60 in one config and weight_high=50 in another: weights between the 50th
# and 60th percentile are in a low and a high tail, so the plan is not separable.
OVERLAPPING = [
    {"weight_low": 60},
    {"weight_high": 50},
    {"weight_low": 20, "weight_high": 50, "neuron_low": 10},
    {"weight_low": 60, "weight_high": 5, "neuron_high": 20},
    {},
]


@pytest.mark.parametrize("score", ["energy", "msp", "maxlogit"])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("configs", [PAPER_LIKE, OVERLAPPING], ids=["separable", "overlapping"])
def test_grid_paths_equal_dense_reference(layer, score, temperature, configs):
    w, b, test, s, n = layer
    plan = GridPlan(w, b, s, n, configs)
    assert plan.separable == (configs is PAPER_LIKE)
    got = score_pruning_grid(
        test, w, b, s, n, configs, score=score, temperature=temperature, chunk_size=50
    )
    for i, cfg in enumerate(configs):
        ref = _dense_scores(test, w, b, s, n, cfg, score, temperature)
        np.testing.assert_allclose(got[i], ref, rtol=1e-9, err_msg=str(cfg))


def test_wide_logit_range_uses_the_additive_path(layer, monkeypatch):
    """Logits spread over thousands: products of exponentials would underflow, so such
    row blocks take the additive path; the scores stay exact."""
    w, b, test, s, n = layer
    calls = {"additive": 0}
    real = grid.traverse_additive

    def counting(*args, **kwargs):
        calls["additive"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(grid, "traverse_additive", counting)
    wide = w * 400.0  # logit ranges of thousands (the threshold is 600)
    got = score_pruning_grid(test, wide, b, s, n, PAPER_LIKE, chunk_size=64)
    for i, cfg in enumerate(PAPER_LIKE):
        ref = _dense_scores(test, wide, b, s, n, cfg, "energy", 1.0)
        np.testing.assert_allclose(got[i], ref, rtol=1e-9)
    assert calls["additive"] > 0
    calls["additive"] = 0
    score_pruning_grid(test, w, b, s, n, PAPER_LIKE, chunk_size=64)
    assert calls["additive"] == 0  # ordinary logits never need it


@pytest.mark.parametrize("score", ["energy", "msp"])
def test_threads_do_not_change_scores(layer, score):
    w, b, test, s, n = layer
    one = score_pruning_grid(test, w, b, s, n, PAPER_LIKE, score=score, n_threads=1)
    three = score_pruning_grid(
        test, w, b, s, n, PAPER_LIKE, score=score, n_threads=3, chunk_size=40
    )
    np.testing.assert_array_equal(one, three)  # the same arithmetic per row block


def test_bad_thread_count(layer):
    w, b, test, s, n = layer
    with pytest.raises(ValueError, match="n_threads must be a positive integer"):
        score_pruning_grid(test, w, b, s, n, [{}], n_threads=0)


def test_chain_builds_each_set_from_a_contained_one():
    sets = np.array(
        [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1]],
        dtype=bool,
    )
    steps = grid_plan.build_chain(sets)
    built = {}
    for i, j, groups in steps:
        members = set() if j < 0 else set(built[j])
        assert not members & set(groups.tolist())
        built[i] = members | set(groups.tolist())
    for i, row in enumerate(sets):
        assert built[i] == set(np.nonzero(row)[0].tolist())
    by_index = {i: j for i, j, _ in steps}
    assert by_index[0] == 2 and by_index[2] == 1  # nested sets reuse the smaller product


LINEAR = [
    ("energy", {}),
    ("msp", {}),
    ("react", {"percentile": 85}),
    ("dice", {"percentile": 70}),
    ("ash", {"percentile": 80}),
    ("gradnorm", {}),
    ("opnp", {"weight_low": 10, "neuron_high": 5}),
]


@pytest.mark.parametrize(("name", "params"), LINEAR, ids=[m[0] for m in LINEAR])
def test_float32_products_stay_close_to_float64(layer, name, params):
    """compute_dtype="float32": float32 products, scores within float32 rounding of the
    exact float64 default; not a hyperparameter."""
    w, b, test, s, _ = layer
    train = np.abs(test[::-1]) + 0.1
    extra = {"param_sensitivity": s} if name == "opnp" else {}
    ref = opnp_create(name, w, b, train, **params, **extra)
    det = opnp_create(name, w, b, train, compute_dtype="float32", **params, **extra)
    assert det.params == ref.params
    exact, fast = ref.score(test), det.score(test)
    np.testing.assert_allclose(fast, exact, rtol=2e-5, atol=1e-6)
    assert not np.array_equal(fast, exact)  # the float32 products were used


def opnp_create(name, w, b, train, **kwargs):
    from opnp.detectors import create_detector

    return create_detector(name, weight=w, bias=b, **kwargs).fit(train)


def test_bad_compute_dtype(layer):
    from opnp.detectors import create_detector

    w, b, *_ = layer
    with pytest.raises(ValueError, match="compute_dtype must be 'float64' or 'float32'"):
        create_detector("energy", weight=w, bias=b, compute_dtype="float16")


@pytest.mark.parametrize(("name", "params"), LINEAR, ids=[m[0] for m in LINEAR])
def test_float32_mode_streams_float32_chunks(layer, name, params, monkeypatch):
    """compute_dtype="float32" computes in float32 from the chunk to the score (no
    float64 copy of the features, the precision pytorch-ood uses); float64 stays float64."""
    w, b, test, s, _ = layer
    train = np.abs(test[::-1]) + 0.1
    extra = {"param_sensitivity": s} if name == "opnp" else {}
    for dtype, expected in (("float32", np.float32), ("float64", np.float64)):
        det = opnp_create(name, w, b, train, compute_dtype=dtype, **params, **extra)
        seen = []
        score_chunk = det._score_chunk
        monkeypatch.setattr(
            det, "_score_chunk", lambda h, seen=seen, f=score_chunk: seen.append(h.dtype) or f(h)
        )
        out = det.score(test.astype(np.float32))
        assert out.dtype == np.float64
        assert set(seen) == {np.dtype(expected)}
        if hasattr(det, "_logits_chunk"):
            assert det._logits_chunk(test[:5].astype(expected)).dtype == expected


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_finite_check_by_one_reduction_is_exact(dtype):
    """check_finite sums first (NaN/inf propagate): finite arrays whose sum overflows
    (float16 near its maximum, float32 near 1e38) still pass through the exact check,
    and every NaN/inf is still found and named with its row."""
    from opnp._validation import check_finite

    big = np.finfo(dtype).max / 4
    arr = np.full((50, 8), big, dtype=dtype)  # finite entries, overflowing sum
    check_finite(arr, "features")
    for bad in (np.nan, np.inf, -np.inf):
        arr2 = arr.copy()
        arr2[17, 3] = bad
        with pytest.raises(
            ValueError, match="features has 1 NaN or infinite values, first at row 17"
        ):
            check_finite(arr2, "features")
