"""Closed-form sensitivity (Eq. 6) against autograd and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from opnp.sensitivity import (
    NEURON_STATISTICS,
    energy_score,
    neuron_sensitivity,
    parameter_sensitivity,
)


def _head(rng, c=6, d=10):
    return rng.normal(size=(c, d)), rng.normal(size=c)


@pytest.mark.parametrize("kind", ["signed", "relu"])
@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_closed_form_equals_per_sample_autograd(kind, temperature):
    pytest.importorskip("torch")
    from opnp.nets.network import parameter_sensitivity_autograd

    rng = np.random.default_rng(1)
    w, b = _head(rng)
    h = rng.normal(size=(80, 10)) * 2
    if kind == "relu":
        h = np.maximum(h, 0)
    else:
        assert (h < 0).any()  # ViT-like: signed features
    closed = parameter_sensitivity(h, w, b, temperature=temperature, chunk_size=17)
    auto = parameter_sensitivity_autograd(h, w, b, temperature=temperature, batch_size=13)
    assert np.max(np.abs(closed - auto) / np.abs(auto)) <= 1e-6


def test_batch_reduction_equals_autograd_and_differs_for_signed_features():
    pytest.importorskip("torch")
    from opnp.nets.network import parameter_sensitivity_autograd

    rng = np.random.default_rng(2)
    w, b = _head(rng)
    h = rng.normal(size=(60, 10))
    closed = parameter_sensitivity(h, w, b, reduction="batch")
    auto = parameter_sensitivity_autograd(h, w, b, reduction="batch", batch_size=60)
    np.testing.assert_allclose(closed, auto, rtol=1e-9, atol=1e-15)
    per_sample = parameter_sensitivity(h, w, b)
    assert np.max(np.abs(per_sample - closed)) > 1e-3  # signed: |sum| < sum |.|
    relu = np.abs(h)
    np.testing.assert_allclose(
        parameter_sensitivity(relu, w, b, reduction="batch"),
        parameter_sensitivity(relu, w, b),
        rtol=1e-12,
    )


def test_hand_computed_two_samples():
    # C = 2, D = 2, W = 0, b = 0: p = (1/2, 1/2) for every sample.
    h = np.array([[1.0, -2.0], [3.0, 0.0]])
    s = parameter_sensitivity(h, np.zeros((2, 2)), np.zeros(2))
    # S_cj = mean_k p_c |h_kj| = 0.5 * mean(|h_j|) = 0.5 * (2, 1)
    np.testing.assert_allclose(s, [[1.0, 0.5], [1.0, 0.5]])
    s_batch = parameter_sensitivity(h, np.zeros((2, 2)), np.zeros(2), reduction="batch")
    np.testing.assert_allclose(s_batch, [[1.0, 0.5], [1.0, 0.5]])  # 0.5 * |(4, -2)| / 2


def test_memmap_torch_and_float32_inputs_agree(tmp_path):
    rng = np.random.default_rng(3)
    w, b = _head(rng, 5, 8)
    h = rng.normal(size=(257, 8)).astype(np.float32)
    ref = parameter_sensitivity(h.astype(np.float64), w, b)
    path = tmp_path / "h.npy"
    np.save(path, h)
    mm = np.load(path, mmap_mode="r")
    np.testing.assert_allclose(parameter_sensitivity(mm, w, b, chunk_size=50), ref, rtol=1e-12)
    fast = parameter_sensitivity(h, w, b, precision="float32", chunk_size=64)
    np.testing.assert_allclose(fast, ref, rtol=1e-4)
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(
        parameter_sensitivity(torch.from_numpy(h), torch.from_numpy(w), b), ref, rtol=1e-12
    )


def test_memmap_nan_is_reported_with_row(tmp_path):
    h = np.ones((20, 3), dtype=np.float32)
    h[13, 1] = np.nan
    np.save(tmp_path / "h.npy", h)
    mm = np.load(tmp_path / "h.npy", mmap_mode="r")
    with pytest.raises(ValueError, match=r"features has 1 NaN.*row 13"):
        parameter_sensitivity(mm, np.ones((2, 3)), np.zeros(2), chunk_size=5)


@pytest.mark.parametrize("reduction", ["per_sample", "batch"])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_rows_equal_the_copied_subset(tmp_path, reduction, precision):
    rng = np.random.default_rng(4)
    w, b = _head(rng, 5, 8)
    h = rng.normal(size=(300, 8)).astype(np.float32)
    np.save(tmp_path / "h.npy", h)
    mm = np.load(tmp_path / "h.npy", mmap_mode="r")
    rows = np.sort(rng.choice(300, size=97, replace=False))
    kwargs = {"reduction": reduction, "precision": precision}
    ref = parameter_sensitivity(h[rows], w, b, chunk_size=4096, **kwargs)
    for features in (h, mm):
        for chunk_size in (1, 10, 97, 1000):
            got = parameter_sensitivity(features, w, b, chunk_size=chunk_size, rows=rows, **kwargs)
            np.testing.assert_allclose(got, ref, rtol=1e-5 if precision == "float32" else 1e-12)
    full = parameter_sensitivity(h, w, b, rows=np.arange(300), **kwargs)
    np.testing.assert_allclose(full, parameter_sensitivity(h, w, b, **kwargs), rtol=1e-12)


def test_rows_stream_from_the_memory_map(tmp_path):
    # 60,000 x 64 float32 = 15 MiB; a copy of the half-subset alone would be 7.3 MiB
    # (float32) or 14.6 MiB as float64. Streaming holds a few chunks of 1,024 rows.
    import tracemalloc

    rng = np.random.default_rng(5)
    w, b = _head(rng, 10, 64)
    np.save(tmp_path / "h.npy", np.abs(rng.normal(size=(60_000, 64))).astype(np.float32))
    mm = np.load(tmp_path / "h.npy", mmap_mode="r")
    rows = np.sort(rng.choice(60_000, size=30_000, replace=False))
    tracemalloc.start()
    try:
        parameter_sensitivity(mm, w, b, chunk_size=1024, rows=rows)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * 2**20, f"traced peak {peak / 2**20:.1f} MiB: the subset was copied"


def test_rows_nan_names_the_row_of_the_file_and_unselected_nan_is_ignored(tmp_path):
    h = np.ones((20, 3), dtype=np.float32)
    h[13, 1] = np.nan
    np.save(tmp_path / "h.npy", h)
    mm = np.load(tmp_path / "h.npy", mmap_mode="r")
    head = (np.ones((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match=r"features has 1 NaN.*row 13"):
        parameter_sensitivity(mm, *head, chunk_size=2, rows=[1, 5, 13, 17])
    ok = parameter_sensitivity(mm, *head, chunk_size=2, rows=[1, 5, 12, 17])
    assert np.isfinite(ok).all()


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "rows must be a non-empty 1-D array"),
        ([[0, 1]], "rows must be a non-empty 1-D array"),
        ([0.0, 1.0], "rows must hold integer row indices"),
        ([0, 4], r"rows must lie in \[0, 4\), got 0\.\.4"),
        ([-1, 2], r"rows must lie in \[0, 4\)"),
        ([2, 1], "rows must be strictly increasing"),
        ([1, 1], "rows must be strictly increasing"),
    ],
)
def test_bad_rows(rows, message):
    with pytest.raises(ValueError, match=message):
        parameter_sensitivity(np.ones((4, 3)), np.ones((2, 3)), rows=rows)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": np.ones((4, 3)), "weight": np.ones((2, 5))}, "3 columns.*5 inputs"),
        ({"features": np.ones(4)}, "features must be 2-dimensional"),
        ({"features": np.array([[1.0, np.inf, 0.0]])}, "features has 1 NaN or infinite"),
        ({"reduction": "sum"}, "unknown reduction 'sum'"),
        ({"bias": np.ones(3)}, "bias has 3 entries"),
        ({"temperature": 0}, "temperature must be a positive number, got 0"),
    ],
)
def test_bad_input(kwargs, message):
    args = {"features": np.ones((4, 3)), "weight": np.ones((2, 3)), "bias": np.zeros(2)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        parameter_sensitivity(**args)


def test_neuron_statistics_definitions():
    s = np.array([[1.0, 0.0, 2.0], [3.0, 4.0, 2.0], [5.0, 2.0, 2.0]])
    expected = {
        "mean": [3.0, 2.0, 2.0],
        "max": [5.0, 4.0, 2.0],
        "min": [1.0, 0.0, 2.0],
        "median": [3.0, 2.0, 2.0],
        "norm": [np.sqrt(35.0), np.sqrt(20.0), np.sqrt(12.0)],
        "variance": [8.0 / 3.0, 8.0 / 3.0, 0.0],
    }
    assert set(expected) == set(NEURON_STATISTICS)
    for stat, values in expected.items():
        np.testing.assert_allclose(neuron_sensitivity(s, stat), values)
    with pytest.raises(ValueError, match="unknown statistic 'l3'"):
        neuron_sensitivity(s, "l3")


def test_energy_score():
    f = np.array([[0.0, np.log(3.0)], [10.0, 10.0]])
    np.testing.assert_allclose(energy_score(f), [np.log(4.0), 10.0 + np.log(2.0)])
    np.testing.assert_allclose(energy_score(f, temperature=2.0), 2 * np.log(np.exp(f / 2).sum(1)))


def test_sensitivity_accumulator_streams_chunks_of_any_size():
    from opnp.sensitivity import SensitivityAccumulator

    rng = np.random.default_rng(7)
    w, b = rng.normal(size=(6, 9)), rng.normal(size=6)
    h = rng.normal(size=(250, 9))  # signed: per_sample and batch differ
    for reduction in ("per_sample", "batch"):
        acc = SensitivityAccumulator(w, b, temperature=2.0, reduction=reduction)
        for start, stop in ((0, 1), (1, 100), (100, 101), (101, 250)):
            acc.update(h[start:stop])
        assert acc.n_samples == 250
        expected = parameter_sensitivity(h, w, b, temperature=2.0, reduction=reduction)
        np.testing.assert_allclose(acc.result(), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="no training features"):
        SensitivityAccumulator(w, b).result()
    with pytest.raises(ValueError, match="features has 4 columns but the FC weight has 9"):
        SensitivityAccumulator(w, b).update(h[:, :4])
