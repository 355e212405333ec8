"""Percentile thresholds and pruning masks (paper Eq. 7, 9), and pruned FC logits.

Convention (paper Eq. 7, 9): a pruning percentage ``high`` removes the ``high`` % largest values,
``low`` the ``low`` % smallest. Thresholds are ``numpy.percentile`` with linear
interpolation over the whole (C, D) matrix for weights (``threshold_scope="matrix"``;
``"row"``: over each class's row, see :data:`THRESHOLD_SCOPES`) and over the D neurons
for neurons. A value is pruned when ``value > percentile(values, 100 - high)`` or
``value < percentile(values, low)``; a value equal to a threshold is kept; a
percentage of 0 prunes nothing (no threshold is computed). Masks are True = kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from opnp._validation import (
    check_choice,
    check_chunk_size,
    check_features,
    check_finite,
    check_linear,
    check_percentage,
    check_percentage_pair,
    iter_chunks,
    to_numpy,
)


def percentile(values: Any, q: float, axis: int | None = None):
    """``numpy.percentile(values, q)`` (linear interpolation) in float64: over all entries
    (a float), or along ``axis`` (an array with that axis kept, to broadcast)."""
    v = np.asarray(values, dtype=np.float64)
    if axis is None:
        return float(np.percentile(v, q))
    return np.percentile(v, q, axis=axis, keepdims=True)


#: Where the weight thresholds of Eq. 7 are taken -> the ``axis`` of :func:`tail_mask`
#: (the readings are described in opnp.detectors.optimal_pruning.READINGS).
_SCOPE_AXIS = {"matrix": None, "row": 1}
THRESHOLD_SCOPES = tuple(_SCOPE_AXIS)


def scope_axis(threshold_scope: str) -> int | None:
    """The percentile axis of a weight ``threshold_scope`` (ValueError if unknown)."""
    return _SCOPE_AXIS[check_choice(threshold_scope, "threshold_scope", THRESHOLD_SCOPES)]


def tail_mask(
    values: Any,
    low: float = 0.0,
    high: float = 0.0,
    name: str = "values",
    axis: int | None = None,
) -> np.ndarray:
    """Keep-mask of ``values``: False for the ``low`` % smallest and ``high`` % largest.

    Pruned: ``v < percentile(values, low)`` (if low > 0) or
    ``v > percentile(values, 100 - high)`` (if high > 0). Equal to a threshold: kept.
    ``axis``: None takes the percentiles over all entries, an integer along that axis
    (e.g. 1: each row of a matrix against its own percentiles).
    """
    lo, hi = check_percentage_pair(low, high, f"{name} low", f"{name} high")
    v = np.asarray(values, dtype=np.float64)
    keep = np.ones(v.shape, dtype=bool)
    if lo > 0:
        keep &= ~(v < percentile(v, lo, axis))
    if hi > 0:
        keep &= ~(v > percentile(v, 100.0 - hi, axis))
    return keep


def _check_param_sensitivity(param_sensitivity) -> np.ndarray:
    s = np.asarray(to_numpy(param_sensitivity, "param_sensitivity"), dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"param_sensitivity must be (C, D), got shape {tuple(s.shape)}")
    check_finite(s, "param_sensitivity")
    return s


def check_sensitivities(param_sensitivity, neuron_sensitivity):
    """Parameter (C, D) and neuron (D,) sensitivities as float64 arrays of matching
    shapes (ValueError naming the argument otherwise)."""
    s = _check_param_sensitivity(param_sensitivity)
    n = np.asarray(to_numpy(neuron_sensitivity, "neuron_sensitivity"), dtype=np.float64)
    if n.ndim != 1 or n.shape[0] != s.shape[1]:
        raise ValueError(
            f"neuron_sensitivity must have shape ({s.shape[1]},) to match param_sensitivity "
            f"{tuple(s.shape)}, got {tuple(n.shape)}"
        )
    check_finite(n, "neuron_sensitivity")
    return s, n


#: The four pruning percentages of OPP/ONP/OPNP (paper Eq. 7 and 9), in the order of
#: :func:`pruning_masks`' arguments: the only place these names are spelled as a set.
PERCENTAGE_NAMES = ("weight_low", "weight_high", "neuron_low", "neuron_high")


def pruning_masks(
    param_sensitivity: Any,
    neuron_sensitivity: Any,
    weight_low: float = 0,
    weight_high: float = 0,
    neuron_low: float = 0,
    neuron_high: float = 0,
    threshold_scope: str = "matrix",
) -> tuple[np.ndarray, np.ndarray]:
    """OPNP masks: ``(weight_mask (C, D) bool, neuron_mask (D,) bool)``, True = kept.

    ``weight_low`` / ``weight_high``: percent of the C*D parameter sensitivities pruned
    from the bottom / top (Eq. 7), their thresholds taken over the whole matrix
    (``threshold_scope="matrix"``) or per row (``"row"``: percent of each class's D);
    ``neuron_low`` / ``neuron_high``: percent of the D neuron sensitivities (Eq. 9).
    Each in [0, 100) and low + high < 100.
    """
    wl, wh = check_percentage_pair(weight_low, weight_high, "weight_low", "weight_high")
    nl, nh = check_percentage_pair(neuron_low, neuron_high, "neuron_low", "neuron_high")
    axis = scope_axis(threshold_scope)
    s, n = check_sensitivities(param_sensitivity, neuron_sensitivity)
    return tail_mask(s, wl, wh, "weight", axis), tail_mask(n, nl, nh, "neuron")


#: What the neuron statistic (Eq. 8) reduces (readings: optimal_pruning.READINGS).
NEURON_SOURCES = ("unpruned", "weight_pruned")


def opnp_masks(
    param_sensitivity: Any,
    statistic: str = "mean",
    weight_low: float = 0,
    weight_high: float = 0,
    neuron_low: float = 0,
    neuron_high: float = 0,
    threshold_scope: str = "matrix",
    neuron_source: str = "unpruned",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(weight_mask, neuron_mask, neuron_sensitivity)`` of OPNP from S alone: the
    neuron sensitivity is ``statistic`` over classes (Eq. 8) of S
    (``neuron_source="unpruned"``) or of S with the weights the weight mask prunes set
    to 0 (``"weight_pruned"``), then :func:`pruning_masks`' rules."""
    from opnp.sensitivity import neuron_sensitivity

    check_choice(neuron_source, "neuron_source", NEURON_SOURCES)
    s = _check_param_sensitivity(param_sensitivity)
    if neuron_source == "unpruned":
        n = neuron_sensitivity(s, statistic)
        wm, nm = pruning_masks(
            s, n, weight_low, weight_high, neuron_low, neuron_high, threshold_scope
        )
        return wm, nm, n
    # The weight mask first (no neuron percentages: nothing is computed for them), the
    # neuron statistic of the weight-pruned S, then its neuron mask (no weight percentages).
    no_neurons = np.zeros(s.shape[1])
    wm, _ = pruning_masks(s, no_neurons, weight_low, weight_high, threshold_scope=threshold_scope)
    n = neuron_sensitivity(np.where(wm, s, 0.0), statistic)
    _, nm = pruning_masks(s, n, neuron_low=neuron_low, neuron_high=neuron_high)
    return wm, nm, n


def masked_weight(weight: Any, weight_mask: Any = None, neuron_mask: Any = None) -> np.ndarray:
    """W * M_w * m_n[None, :] as float64 (C, D): pruned weights and neurons set to 0."""
    w, _ = check_linear(weight, None)
    out = w.copy()
    if weight_mask is not None:
        m = np.asarray(to_numpy(weight_mask, "weight_mask"), dtype=bool)
        if m.shape != w.shape:
            raise ValueError(f"weight_mask must have shape {w.shape}, got {m.shape}")
        out[~m] = 0.0
    if neuron_mask is not None:
        m = np.asarray(to_numpy(neuron_mask, "neuron_mask"), dtype=bool)
        if m.shape != (w.shape[1],):
            raise ValueError(f"neuron_mask must have shape ({w.shape[1]},), got {m.shape}")
        out[:, ~m] = 0.0
    return out


def linear_logits(
    features: Any,
    weight: Any,
    bias: Any = None,
    clip: float | None = None,
    chunk_size: int | None = None,
    out_dtype=np.float64,
) -> np.ndarray:
    """Logits ``min(h, clip) @ W^T + b`` (N, C), float64 arithmetic, streamed in chunks.

    Pass an already masked weight (:func:`masked_weight`) for the pruned layer
    f'(x) = (W * M_w)(h * m_n) + b: zeroing column j of W equals zeroing neuron j.
    """
    w, b = check_linear(weight, bias)
    h = check_features(features, "features", dim=w.shape[1])
    chunk = check_chunk_size(chunk_size)
    wt = np.ascontiguousarray(w.T)
    out = np.empty((h.shape[0], w.shape[0]), dtype=out_dtype)
    for start, hc in iter_chunks(h, chunk, "features", dtype=np.float64):
        if clip is not None:
            hc = np.minimum(hc, clip)
        res = hc @ wt
        res += b
        out[start : start + len(hc)] = res
    return out


# --- exact percentile of every entry of a large (memory-mapped) feature array ---------


def feature_percentile(
    features: Any,
    q: float,
    chunk_size: int | None = None,
    max_in_memory: int = 1 << 26,
) -> float:
    """``numpy.percentile(features, q)`` over all N*D entries, exact, in float64.

    For the ReAct threshold (the q-th percentile of all ID training activations), on
    in-memory or memory-mapped arrays, without a float64 copy of the data:

    1. the two order statistics that the linear interpolation needs are bracketed by
       the quantiles of a fixed sample (entries of evenly spaced rows) widened by
       ``_BRACKET_SIGMAS`` standard errors;
    2. one pass over the chunks, in their own dtype, counts the entries below and at the
       bracket's ends and keeps those strictly inside it (about 1 % of the data);
    3. if both ranks fall in the bracket, they are selected exactly among those kept
       entries (``numpy.partition``). Otherwise (an unlucky sample; or more than
       ``max_in_memory`` kept entries) repeated histogram passes narrow the value range
       around each rank until few enough candidates remain. Either way the result is
       the exact order statistic; memory is bounded by the chunk size and
       ``max_in_memory``. Arrays of at most ``_SMALL`` entries go to numpy directly.
    """
    q = float(q)
    if not (0.0 <= q <= 100.0):
        raise ValueError(f"percentile q must be in [0, 100], got {q!r}")
    h = check_features(features, "features")
    chunk = check_chunk_size(chunk_size)
    n = h.shape[0] * h.shape[1]
    if n <= min(_SMALL, max_in_memory):
        arr = np.asarray(h, dtype=np.float64)
        check_finite(arr, "features")
        return float(np.percentile(arr, q))
    index = q / 100.0 * (n - 1)
    lo_rank = int(np.floor(index))
    hi_rank = min(lo_rank + 1, n - 1)
    frac = index - lo_rank
    ranks = (lo_rank,) if hi_rank == lo_rank or frac == 0 else (lo_rank, hi_rank)
    found = _bracketed_order_statistics(h, ranks, chunk, max_in_memory)
    if found is None:
        found = [_order_statistic(h, rank, chunk, max_in_memory) for rank in ranks]
    a, b = found[0], found[-1]
    # numpy's _lerp: a + (b - a) * t, computed from the other end when t >= 0.5.
    diff = b - a
    return float(b - diff * (1 - frac) if frac >= 0.5 else a + diff * frac)


_SMALL = 1 << 16  # entries: below this numpy.percentile on a float64 copy is cheapest
_SAMPLE_ROWS = 256  # rows read for the bracket's sample (evenly spaced)
_SAMPLE_SIZE = 1 << 16  # entries of those rows kept in the sample (a fixed draw)
_BRACKET_SIGMAS = 6.0  # half-width of the bracket in binomial standard errors


def _bracketed_order_statistics(
    h: np.ndarray, ranks: tuple[int, ...], chunk: int, max_in_memory: int
) -> list[float] | None:
    """The entries of ranks ``ranks`` (0-based, ascending) of ``h``, selected in one pass
    among the entries inside a sample-based value bracket; None when a rank falls
    outside the bracket or too many entries fall inside it."""
    n_rows, dim = h.shape
    n = n_rows * dim
    rows = np.unique(np.linspace(0, n_rows - 1, min(n_rows, _SAMPLE_ROWS)).astype(np.int64))
    sample = np.asarray(h[rows]).ravel()
    if sample.size > _SAMPLE_SIZE:
        pick = np.random.default_rng(0).choice(sample.size, _SAMPLE_SIZE, replace=False)
        sample = sample[pick]
    sample = np.sort(sample)
    m = sample.size
    # Positions in the sorted sample of the wanted ranks, widened by the binomial
    # standard error of a sample quantile (an end beyond the sample is open).
    p_lo, p_hi = ranks[0] / (n - 1), ranks[-1] / (n - 1)
    spread = _BRACKET_SIGMAS * np.sqrt(m * max(p_lo * (1 - p_lo), p_hi * (1 - p_hi), 1.0 / m))
    i_lo = int(np.floor(p_lo * (m - 1) - spread)) - 1
    i_hi = int(np.ceil(p_hi * (m - 1) + spread)) + 1
    lo = sample[min(i_lo, m - 1)] if i_lo >= 0 else None
    hi = sample[max(i_hi, 0)] if i_hi < m else None
    if lo is not None and hi is not None and lo > hi:
        return None
    below = at_lo = at_hi = kept_total = 0
    kept: list[np.ndarray] = []
    for _, hc in iter_chunks(h, chunk, "features"):
        x = hc.ravel()
        inside = np.ones(x.shape, dtype=bool)
        if lo is not None:
            below += int(np.count_nonzero(x < lo))
            at_lo += int(np.count_nonzero(x == lo))
            inside &= x > lo
        if hi is not None:
            at_hi += int(np.count_nonzero(x == hi))
            inside &= x < hi
        if lo is not None and hi is not None and lo == hi:
            at_hi = 0  # the same entries: counted once
        values = x[inside]
        kept_total += values.size
        if kept_total > max_in_memory:
            return None
        kept.append(values)
    inside_values = np.concatenate(kept) if kept else np.empty(0)
    offsets = [r - below for r in ranks]
    if min(offsets) < 0 or max(offsets) >= at_lo + inside_values.size + at_hi:
        return None
    # The bracket's entries in order: at_lo copies of lo, the kept ones, at_hi copies of hi.
    inner = [o - at_lo for o in offsets if 0 <= o - at_lo < inside_values.size]
    if inner:
        inside_values = np.partition(inside_values, inner)
    out = []
    for o in offsets:
        if o < at_lo:
            out.append(float(lo))
        elif o - at_lo < inside_values.size:
            out.append(float(inside_values[o - at_lo]))
        else:
            out.append(float(hi))
    return out


def _order_statistic(h: np.ndarray, rank: int, chunk: int, max_in_memory: int) -> float:
    """The ``rank``-th smallest entry (0-based) of ``h``, by streamed histogram passes."""
    n_bins = 4096
    levels: list[tuple[float, float, int]] = []  # (range low, range high, chosen bin)
    below = 0  # entries smaller than every candidate
    while True:
        counts = np.zeros(n_bins, dtype=np.int64)
        total = 0
        vmin, vmax = np.inf, -np.inf
        for _, cand in _candidates(h, levels, chunk):
            if cand.size:
                total += cand.size
                vmin = min(vmin, float(cand.min()))
                vmax = max(vmax, float(cand.max()))
        if total == 0:  # pragma: no cover - cannot happen for a valid rank
            raise RuntimeError("order statistic search lost its candidates")
        if vmin == vmax:
            return vmin
        if total <= max_in_memory:
            values = np.concatenate([c for _, c in _candidates(h, levels, chunk)])
            return float(np.partition(values, rank - below)[rank - below])
        for _, cand in _candidates(h, levels, chunk):
            counts += np.bincount(_bin_index(cand, vmin, vmax, n_bins), minlength=n_bins)
        cum = np.cumsum(counts)
        chosen = int(np.searchsorted(cum, rank - below, side="right"))
        below += int(cum[chosen - 1]) if chosen > 0 else 0
        levels.append((vmin, vmax, chosen))


def _bin_index(values: np.ndarray, low: float, high: float, n_bins: int) -> np.ndarray:
    idx = ((values - low) * (n_bins / (high - low))).astype(np.int64)
    return np.clip(idx, 0, n_bins - 1)


def _candidates(h: np.ndarray, levels, chunk: int):
    """Yield the float64 entries of each chunk that satisfy every narrowing level."""
    for start, hc in iter_chunks(h, chunk, "features", dtype=np.float64):
        vals = hc.ravel()
        for low, high, chosen in levels:
            vals = vals[(vals >= low) & (vals <= high)]
            vals = vals[_bin_index(vals, low, high, 4096) == chosen]
        yield start, vals


__all__ = [
    "check_percentage",
    "feature_percentile",
    "linear_logits",
    "masked_weight",
    "opnp_masks",
    "percentile",
    "pruning_masks",
    "tail_mask",
]
