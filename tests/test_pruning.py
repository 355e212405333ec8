"""Percentile masks at their boundaries (ties kept) and the exact streamed percentile."""

from __future__ import annotations

import numpy as np
import pytest

from opnp.pruning import feature_percentile, masked_weight, pruning_masks, tail_mask


def test_zero_prunes_nothing():
    s = np.random.default_rng(0).random((4, 5))
    wm, nm = pruning_masks(s, s.mean(0))
    assert wm.all() and nm.all()


def test_weight_mask_hand_computed():
    # 10 values 0..9: percentile(10) = 0.9 -> prune 0; percentile(100 - 20) = 7.2 -> prune 8, 9
    s = np.arange(10.0).reshape(2, 5)
    wm, _ = pruning_masks(s, np.zeros(5), weight_low=10, weight_high=20)
    assert wm.tolist() == [[False, True, True, True, True], [True, True, True, False, False]]


def test_threshold_ties_are_kept():
    # percentile([1,2,2,2,3], 25) = 2 exactly: values equal to the threshold stay.
    v = np.array([1.0, 2.0, 2.0, 2.0, 3.0])
    assert tail_mask(v, low=25).tolist() == [False, True, True, True, True]
    # percentile(v, 100 - 25) = 2 too: only 3 is strictly above it.
    assert tail_mask(v, high=25).tolist() == [True, True, True, True, False]
    # All equal: nothing is strictly below or above.
    assert tail_mask(np.full(6, 0.5), low=40, high=40).all()


def test_neuron_mask_interpolated_boundary():
    # percentile([0, 10, 20, 30], 50) = 15 -> high=50 prunes 20, 30; low=40 -> 12 prunes 0, 10
    n = np.array([30.0, 0.0, 20.0, 10.0])
    _, nm = pruning_masks(np.ones((2, 4)), n, neuron_high=50)
    assert nm.tolist() == [False, True, False, True]
    _, nm = pruning_masks(np.ones((2, 4)), n, neuron_low=40)
    assert nm.tolist() == [True, False, True, False]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight_low": -1}, r"weight_low must be in \[0, 100\), got -1"),
        ({"neuron_high": 100}, r"neuron_high must be in \[0, 100\), got 100"),
        ({"weight_low": 60, "weight_high": 40}, "weight_low \\+ weight_high must be < 100"),
        ({"neuron_low": "x"}, "neuron_low must be a number"),
    ],
)
def test_bad_percentages(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pruning_masks(np.ones((2, 3)), np.ones(3), **kwargs)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="neuron_sensitivity must have shape \\(3,\\)"):
        pruning_masks(np.ones((2, 3)), np.ones(4))


def test_masked_weight():
    w = np.arange(6.0).reshape(2, 3)
    out = masked_weight(
        w, np.array([[True, False, True], [True, True, True]]), np.array([1, 1, 0], bool)
    )
    assert out.tolist() == [[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]]


@pytest.mark.parametrize("q", [0.0, 37.5, 50.0, 90.0, 99.9, 100.0])
def test_streamed_percentile_is_exact(tmp_path, q):
    rng = np.random.default_rng(5)
    h = np.maximum(rng.normal(size=(3000, 7)), 0).astype(np.float32)  # ~50 % exact zeros
    h[5, 3] = 1e6  # an outlier stretches the first histogram
    np.save(tmp_path / "h.npy", h)
    mm = np.load(tmp_path / "h.npy", mmap_mode="r")
    got = feature_percentile(mm, q, chunk_size=333, max_in_memory=500)
    assert got == np.percentile(h.astype(np.float64), q)


@pytest.mark.parametrize("q", [0.0, 0.5, 37.5, 50.0, 90.0, 99.9, 100.0])
@pytest.mark.parametrize("kind", ["relu", "ties", "float64"])
def test_bracketed_percentile_is_exact_without_fallback(monkeypatch, q, kind):
    """In-memory arrays above numpy's size limit: one bracketed pass, same value as
    numpy.percentile (ties at the bracket's ends included), no histogram passes."""
    from opnp import pruning

    rng = np.random.default_rng(11)
    h = np.maximum(rng.normal(size=(4000, 37)), 0)
    if kind == "ties":
        h = np.round(h * 2) / 2  # few distinct values: the bracket ends are tied
    h = h if kind == "float64" else h.astype(np.float32)
    calls = []
    monkeypatch.setattr(pruning, "_order_statistic", lambda *a: calls.append(a))
    assert h.size > pruning._SMALL
    assert feature_percentile(h, q, chunk_size=777) == np.percentile(h.astype(np.float64), q)
    assert calls == []


@pytest.mark.parametrize("q", [10.0, 90.0])
def test_percentile_falls_back_when_the_bracket_misses(monkeypatch, q):
    """A bracket that misses the ranks (here forced: negative width) or holds too many
    entries falls back to the histogram passes and is still exact."""
    from opnp import pruning

    rng = np.random.default_rng(12)
    h = rng.gamma(2.0, size=(3000, 40)).astype(np.float32)
    used = []
    histogram = pruning._order_statistic
    monkeypatch.setattr(pruning, "_order_statistic", lambda *a: used.append(a) or histogram(*a))
    monkeypatch.setattr(pruning, "_BRACKET_SIGMAS", -40.0)
    assert (
        pruning._bracketed_order_statistics(h, (int(q / 100 * (h.size - 1)),), 500, 1 << 20) is None
    )
    assert feature_percentile(h, q, chunk_size=500) == np.percentile(h.astype(np.float64), q)
    assert used
    monkeypatch.setattr(pruning, "_BRACKET_SIGMAS", 6.0)
    used.clear()
    got = feature_percentile(h, q, chunk_size=500, max_in_memory=100)  # too many inside
    assert got == np.percentile(h.astype(np.float64), q)
    assert used
