"""Seeded, paired bootstrap intervals of FPR95 and AUROC, vectorised over resamples.

One resample draws ``n_id`` ID scores with replacement from the ``n_id`` ID test scores
and, separately (stratified), ``n_ood`` OOD scores from the ``n_ood`` OOD test scores;
FPR95 and AUROC of the resample are :func:`opnp.metrics.fpr_at_95_tpr` (paper convention:
ID positive, threshold keeping 95 % of the ID samples) and :func:`opnp.metrics.auroc` of
the resampled arrays, exactly (integer arithmetic, no approximation).

Pairing: the indices of resample ``b`` depend only on ``(seed, stream, n, b)``: the ID
stream (``"id"``) on ``(seed, n_id, b)``, an OOD set's stream (``"ood:<name>"``) on
``(seed, n_ood, name, b)`` - never on the scores. So every method scored on the same test
images gets the same resamples, and the difference of two methods' metrics has its own
interval (:func:`paired_difference_interval`). The ID resample is shared by every OOD set
(the ID test set is one set), the OOD sets' resamples are independent of each other (the
name enters the stream), so a mean over OOD sets per resample is the bootstrap of the
mean. Resample ``b`` is the same whatever ``n_resamples`` is (a prefix of a longer run).

Speed: the scores are sorted once; a resample is a vector of multiplicities over the
sorted scores, so its FPR95 threshold is a search in a cumulative count and its AUROC
(Mann-Whitney U with ties 1/2) a dot product of the OOD multiplicities with cumulative
ID counts gathered at precomputed positions. Resamples are processed in blocks whose
arrays stay under about 16 MiB (small enough for the caches) (:func:`block_size`), whatever ``n_resamples`` is.

Intervals are percentile intervals: the ``(100 - confidence) / 2`` and
``(100 + confidence) / 2`` percentiles (numpy's linear interpolation) of the resampled
metric or of the resampled difference.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from opnp.metrics import check_scores

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_N_RESAMPLES",
    "DEFAULT_SEED",
    "ID_STREAM",
    "block_size",
    "bootstrap_metrics",
    "check_settings",
    "interval_includes_zero",
    "metric_intervals",
    "ood_stream",
    "paired_difference_interval",
    "percentile_interval",
    "resample_counts",
    "resample_indices",
]

DEFAULT_N_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 95.0
DEFAULT_SEED = 0
ID_STREAM = "id"
METRICS = ("fpr95", "auroc")
# Budget of one block's int64 arrays (counts and cumulative counts of ID and OOD).
_BLOCK_BYTES = 16 * 2**20


def ood_stream(name: str = "") -> str:
    """Stream name of the resamples of one OOD set."""
    return f"ood:{name}"


def check_settings(settings: Mapping[str, Any] | None) -> dict:
    """``{"n_resamples", "confidence", "seed"}`` with defaults filled in; ValueError naming
    the bad key (the config's ``uncertainty`` block, also used by direct callers)."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - {"n_resamples", "confidence", "seed"})
    if unknown:
        raise ValueError(f"uncertainty has unknown keys {unknown}")
    n_resamples = settings.get("n_resamples", DEFAULT_N_RESAMPLES)
    confidence = settings.get("confidence", DEFAULT_CONFIDENCE)
    seed = settings.get("seed", DEFAULT_SEED)
    _check_count(n_resamples, "uncertainty.n_resamples")
    _check_confidence(confidence, "uncertainty.confidence")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"uncertainty.seed must be a non-negative integer, got {seed!r}")
    return {"n_resamples": int(n_resamples), "confidence": float(confidence), "seed": int(seed)}


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_confidence(value: Any, name: str = "confidence") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ValueError(f"{name} must be a percentage in (0, 100), got {value!r}")
    if not 0 < float(value) < 100:
        raise ValueError(f"{name} must be a percentage in (0, 100), got {value!r}")
    return float(value)


def _resample_list(resamples: int | Iterable[int]) -> list[int]:
    if isinstance(resamples, int | np.integer) and not isinstance(resamples, bool):
        return list(range(_check_count(resamples, "resamples")))
    out = [int(b) for b in resamples]
    if any(b < 0 for b in out):
        raise ValueError(f"resample numbers must be non-negative, got {out}")
    return out


def _generator(seed: int, stream: str, n: int, resample: int) -> np.random.Generator:
    """The generator of one resample: a function of (seed, stream, n, resample) only."""
    key = (zlib.crc32(stream.encode("utf-8")), int(n), int(resample))
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=key))


def resample_indices(
    n: int, resamples: int | Iterable[int], *, seed: int = DEFAULT_SEED, stream: str = ID_STREAM
) -> np.ndarray:
    """``(len(resamples), n)`` int64 indices into ``n`` samples, drawn with replacement;
    ``resamples`` is a count (resamples ``0 .. count - 1``) or the resample numbers."""
    n = _check_count(n, "n")
    rows = _resample_list(resamples)
    out = np.empty((len(rows), n), dtype=np.int64)
    for i, b in enumerate(rows):
        out[i] = _generator(seed, stream, n, b).integers(0, n, size=n)
    return out


def resample_counts(
    n: int, resamples: int | Iterable[int], *, seed: int = DEFAULT_SEED, stream: str = ID_STREAM
) -> np.ndarray:
    """``(len(resamples), n)`` int64 multiplicities of each sample in each resample (the
    indices of :func:`resample_indices`, counted)."""
    n = _check_count(n, "n")
    return _counts(n, _resample_list(resamples), seed, stream, np.arange(n))


def _counts(n: int, rows: list[int], seed: int, stream: str, position: np.ndarray) -> np.ndarray:
    """Multiplicities indexed by ``position[sample]`` (the sorted position of a sample):
    counting the draws through the inverse sort order is cheaper than permuting the
    counts afterwards."""
    out = np.empty((len(rows), n), dtype=np.int64)
    for i, b in enumerate(rows):
        draw = _generator(seed, stream, n, b).integers(0, n, size=n)
        out[i] = np.bincount(position[draw], minlength=n)
    return out


def _sorted_with_positions(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted scores, and the sorted position of each sample."""
    order = np.argsort(scores, kind="stable")
    position = np.empty(len(scores), dtype=np.int64)
    position[order] = np.arange(len(scores))
    return scores[order], position


def block_size(n_id: int, n_ood: int) -> int:
    """Resamples per block: about 16 MiB of int64 counts and cumulative counts."""
    per_resample = 2 * 8 * (int(n_id) + int(n_ood) + 2)
    return max(1, _BLOCK_BYTES // per_resample)


def bootstrap_metrics(
    id_scores: Any,
    ood_scores: Any,
    *,
    n_resamples: int = DEFAULT_N_RESAMPLES,
    seed: int = DEFAULT_SEED,
    ood_name: str = "",
    block: int | None = None,
    device: Any = None,
) -> dict[str, np.ndarray]:
    """FPR95 and AUROC (fractions in [0, 1]) of each bootstrap resample.

    Returns ``{"fpr95": (n_resamples,), "auroc": (n_resamples,)}`` float64, resample
    ``b`` drawn by :func:`resample_indices` with streams ``"id"`` and
    ``ood_stream(ood_name)``. ``block`` (default :func:`block_size`) only bounds memory;
    the values do not depend on it. ``device`` (e.g. ``"cuda"``; :mod:`opnp.backend`):
    the counts, cumulative counts and the AUROC products run with torch there (the
    draws stay numpy's, so the resamples are the same); integer arithmetic, so the values
    are identical to the numpy path's (tested on CPU torch).
    """
    from opnp.backend import torch_device

    dev = torch_device(id_scores, device)
    ids = check_scores(id_scores, "id_scores")
    oods = check_scores(ood_scores, "ood_scores")
    n_resamples = _check_count(n_resamples, "n_resamples")
    n1, n0 = len(ids), len(oods)
    block = block_size(n1, n0) if block is None else _check_count(block, "block")

    id_sorted, id_position = _sorted_with_positions(ids)
    ood_sorted, ood_position = _sorted_with_positions(oods)
    # ID samples that must be kept at the FPR95 threshold (as opnp.metrics._fpr_at_tpr).
    keep = min(max(int(np.ceil(0.95 * n1 - 1e-12)), 1), n1)
    # For each sorted OOD score: the sorted ID positions below it and at or below it.
    below = np.searchsorted(id_sorted, ood_sorted, side="left")
    at_or_below = np.searchsorted(id_sorted, ood_sorted, side="right")

    fpr95 = np.empty(n_resamples)
    auroc = np.empty(n_resamples)
    if dev is not None:
        args = (id_sorted, id_position, ood_sorted, ood_position, keep, below, at_or_below)
        _bootstrap_torch(args, n_resamples, seed, ood_name, block, fpr95, auroc, dev)
        return {"fpr95": fpr95, "auroc": auroc}
    for start in range(0, n_resamples, block):
        rows = list(range(start, min(start + block, n_resamples)))
        done = slice(start, start + len(rows))
        id_counts = _counts(n1, rows, seed, ID_STREAM, id_position)
        ood_counts = _counts(n0, rows, seed, ood_stream(ood_name), ood_position)
        # id_cum[:, i]: resampled ID scores at sorted positions < i.
        id_cum = np.zeros((len(rows), n1 + 1), dtype=np.int64)
        np.cumsum(id_counts, axis=1, out=id_cum[:, 1:])
        # FPR95 threshold: the keep-th largest resampled ID score, at the last sorted
        # position i with n1 - id_cum[i] >= keep (that position has a nonzero count).
        position = np.count_nonzero(id_cum[:, :n1] <= n1 - keep, axis=1) - 1
        threshold = id_sorted[position]
        first_kept = np.searchsorted(ood_sorted, threshold, side="left")
        ood_cum = np.zeros((len(rows), n0 + 1), dtype=np.int64)
        np.cumsum(ood_counts, axis=1, out=ood_cum[:, 1:])
        fpr95[done] = (n0 - ood_cum[np.arange(len(rows)), first_kept]) / n0
        # AUROC (Mann-Whitney U, ties 1/2), doubled to stay integer: per OOD sample,
        # 2 x (resampled ID scores above it) + (ID scores tied with it).
        above = n1 - id_cum[:, at_or_below]
        tied = id_cum[:, at_or_below] - id_cum[:, below]
        u2 = np.einsum("bj,bj->b", ood_counts, 2 * above + tied)
        auroc[done] = u2 / (2.0 * n1 * n0)
    return {"fpr95": fpr95, "auroc": auroc}


def _draws(n: int, rows: list[int], seed: int, stream: str, position: np.ndarray) -> np.ndarray:
    """The sorted positions of the draws of each resample in ``rows`` (as :func:`_counts`
    counts them), offset by ``row * n`` so that one bincount counts a whole block."""
    out = np.empty((len(rows), n), dtype=np.int64)
    for i, b in enumerate(rows):
        out[i] = position[_generator(seed, stream, n, b).integers(0, n, size=n)] + i * n
    return out


def _bootstrap_torch(args, n_resamples, seed, ood_name, block, fpr95, auroc, device) -> None:
    """The loop of :func:`bootstrap_metrics` with torch on ``device`` (same integers)."""
    import torch

    id_sorted, id_position, ood_sorted, ood_position, keep, below, at_or_below = args
    n1, n0 = len(id_sorted), len(ood_sorted)
    ood_sorted_t = torch.as_tensor(ood_sorted, device=device)
    id_sorted_t = torch.as_tensor(id_sorted, device=device)
    below_t = torch.as_tensor(below, device=device)
    at_t = torch.as_tensor(at_or_below, device=device)
    for start in range(0, n_resamples, block):
        rows = list(range(start, min(start + block, n_resamples)))
        k = len(rows)
        draws = _draws(n1, rows, seed, ID_STREAM, id_position)
        id_counts = torch.bincount(torch.as_tensor(draws.ravel(), device=device), minlength=k * n1)
        draws = _draws(n0, rows, seed, ood_stream(ood_name), ood_position)
        ood_counts = torch.bincount(torch.as_tensor(draws.ravel(), device=device), minlength=k * n0)
        id_cum = torch.zeros((k, n1 + 1), dtype=torch.int64, device=device)
        id_cum[:, 1:] = torch.cumsum(id_counts.view(k, n1), dim=1)
        position = (id_cum[:, :n1] <= n1 - keep).sum(dim=1) - 1
        threshold = id_sorted_t[position]
        first_kept = torch.searchsorted(ood_sorted_t, threshold, side="left")
        ood_counts = ood_counts.view(k, n0)
        ood_cum = torch.zeros((k, n0 + 1), dtype=torch.int64, device=device)
        ood_cum[:, 1:] = torch.cumsum(ood_counts, dim=1)
        kept_ood = n0 - ood_cum[torch.arange(k, device=device), first_kept]
        cum_at = id_cum[:, at_t]
        u2 = (ood_counts * (2 * (n1 - cum_at) + (cum_at - id_cum[:, below_t]))).sum(dim=1)
        fpr95[start : start + k] = kept_ood.cpu().numpy() / n0
        auroc[start : start + k] = u2.cpu().numpy() / (2.0 * n1 * n0)


def _values(values: Any, name: str, drop_undefined: bool = False) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if drop_undefined:
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
        arr = arr[np.isfinite(arr)]
        if arr.size == 0:
            raise ValueError(f"{name} has no finite draw")
        return arr
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has {int((~np.isfinite(arr)).sum())} NaN or infinite values")
    return arr


def percentile_interval(
    values: Any, confidence: float = DEFAULT_CONFIDENCE, *, drop_undefined: bool = False
) -> tuple[float, float]:
    """``(low, high)``: the ``(100 -+ confidence) / 2`` percentiles of ``values``.

    ``drop_undefined``: leave NaN and infinite values out (the draws of
    :mod:`opnp.pooled_bootstrap` in which a metric is undefined) instead of refusing them.
    """
    confidence = _check_confidence(confidence)
    arr = _values(values, "values", drop_undefined)
    tail = (100.0 - confidence) / 2.0
    low, high = np.percentile(arr, [tail, 100.0 - tail])
    return float(low), float(high)


def paired_difference_interval(
    a: Any, b: Any, confidence: float = DEFAULT_CONFIDENCE, *, drop_undefined: bool = False
) -> tuple[float, float]:
    """Percentile interval of ``a - b`` per resample; ``a`` and ``b`` are two methods'
    metric on the same resamples (same length, same order). ``drop_undefined``: as in
    :func:`percentile_interval`, for the differences (undefined where either is)."""
    if drop_undefined:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    else:
        a, b = _values(a, "a"), _values(b, "b")
    if a.shape != b.shape:
        raise ValueError(
            f"paired resamples must have the same length, got shapes {a.shape} and {b.shape} "
            "(were they drawn with the same n_resamples?)"
        )
    return percentile_interval(a - b, confidence, drop_undefined=drop_undefined)


def interval_includes_zero(a: Any, b: Any, confidence: float = DEFAULT_CONFIDENCE) -> bool:
    """Whether the paired interval of ``a - b`` contains 0 (the two are within noise)."""
    low, high = paired_difference_interval(a, b, confidence)
    return low <= 0.0 <= high


def metric_intervals(
    id_scores: Any,
    ood_scores: Any,
    *,
    n_resamples: int = DEFAULT_N_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
    ood_name: str = "",
) -> dict[str, Any]:
    """Resampled metrics and their percentile intervals (fractions): ``{"fpr95":
    (B,), "auroc": (B,), "fpr95_ci": (low, high), "auroc_ci": (low, high)}``."""
    confidence = _check_confidence(confidence)
    values = bootstrap_metrics(
        id_scores, ood_scores, n_resamples=n_resamples, seed=seed, ood_name=ood_name
    )
    out: dict[str, Any] = dict(values)
    for metric in METRICS:
        out[f"{metric}_ci"] = percentile_interval(values[metric], confidence)
    return out
