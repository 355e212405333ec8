"""Cluster bootstrap of a metric averaged over replicates that share test data.

A replicated benchmark (:mod:`opnp.pipeline.replicates`) reports, per method, the mean
over replicates of FPR95 or AUROC. The replicates are not independent samples: with few
OOD classes (DTD: 6) every replicate's OOD test part is drawn from the same classes, and
with ``by: image`` splits their ID test parts share images. Treating the replicates as
independent (mean ± std over seeds, or averaging per-replicate image bootstraps) ignores
both the sharing and that OOD images of one class are alike, and its intervals are too
narrow (``tests/test_pooled_bootstrap.py`` measures it).

This module resamples what is shared. Every test image belongs to a *unit* that is
resampled as a whole: an OOD image to its class (``ood_clusters``), an ID image to itself
(``id_units``: its row of the pool; rotating folds make the replicates' ID units
disjoint). One draw picks, with replacement, one fewer units than there are distinct ones
over all replicates (ID and OOD separately; :func:`unit_counts` says why one fewer); a
unit drawn ``m`` times weighs ``m`` in
*every* replicate that contains it, so replicates that share a class see the same
resampled class. Each replicate's metric is recomputed on its weighted images (exactly,
integer weights: as if the images were repeated), and the draw's value is their mean.
The 95 % interval is the percentile interval of the draws.

Pairing: a draw depends only on ``(seed, stream, the sorted distinct unit ids, draw
number)``, never on the scores, so two methods scored on the same images get the same
draws, and :func:`opnp.bootstrap.paired_difference_interval` (``drop_undefined=True``)
gives the interval of their difference.

Caveats. A cluster bootstrap is justified asymptotically in the number of clusters; with
6 OOD classes (4 per replicate) the OOD classes' spread is estimated from 6 values and the
interval is only approximate (too narrow rather than too wide, as with any bootstrap of
few clusters). A draw in which no unit of some replicate is picked (all of its OOD
classes missing) leaves that replicate's metric undefined; the draw averages the others
(:func:`pooled_bootstrap` counts such draws in ``n_partial``).

Numpy only, vectorised over draws within a replicate.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from opnp import metrics as _metrics
from opnp.bootstrap import (
    DEFAULT_CONFIDENCE,
    DEFAULT_N_RESAMPLES,
    DEFAULT_SEED,
    block_size,
    percentile_interval,
)

__all__ = [
    "ID_UNITS_STREAM",
    "METRICS",
    "pooled_bootstrap",
    "pooled_intervals",
    "unit_counts",
    "weighted_metrics",
]

METRICS = ("fpr95", "auroc")
ID_UNITS_STREAM = "pooled:id"


def _ood_units_stream(name: str) -> str:
    return f"pooled:ood:{name}"


def unit_counts(
    units: np.ndarray, n_resamples: int, *, seed: int = DEFAULT_SEED, stream: str = ID_UNITS_STREAM
) -> np.ndarray:
    """``(n_resamples, len(units))`` int64: how often each of the distinct ``units`` (in
    the given order) is drawn when ``len(units) - 1`` units (at least 1) are drawn with
    replacement.

    The draws are a function of ``seed``, ``stream`` and the number of units only; the
    caller passes the units sorted, so the same set of units gets the same draws."""
    n = len(units)
    if n < 1:
        raise ValueError(f"{stream}: no units to resample")
    key = (zlib.crc32(stream.encode("utf-8")), n)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=key))
    # n - 1 draws of n units (Rao and Wu's rescaled bootstrap with m = n - 1): the
    # bootstrap variance of a mean is then s^2 / n with the unbiased s^2, instead of
    # (n - 1) / n of it - a 20 % wider variance with 6 OOD classes, 2 % with 50.
    draws = rng.integers(0, n, size=(int(n_resamples), max(n - 1, 1)))
    # One bincount for all rows: offset each row's draws by row * n.
    flat = (draws + n * np.arange(int(n_resamples))[:, None]).ravel()
    return np.bincount(flat, minlength=n * int(n_resamples)).reshape(int(n_resamples), n)


def weighted_metrics(
    id_scores: Any, id_weights: np.ndarray, ood_scores: Any, ood_weights: np.ndarray
) -> dict[str, np.ndarray]:
    """FPR95 and AUROC (fractions) of each row of integer weights, exactly as
    :func:`opnp.metrics.fpr_at_95_tpr` (paper convention) and :func:`opnp.metrics.auroc` of
    the scores repeated by their weights. ``id_weights`` is ``(B, n_id)``, ``ood_weights``
    ``(B, n_ood)``; a row whose ID or OOD weights are all 0 gives NaN."""
    ids = _metrics.check_scores(id_scores, "id_scores")
    oods = _metrics.check_scores(ood_scores, "ood_scores")
    id_w = np.asarray(id_weights, dtype=np.int64)
    ood_w = np.asarray(ood_weights, dtype=np.int64)
    if id_w.ndim != 2 or id_w.shape[1] != len(ids):
        raise ValueError(f"id_weights must be (B, {len(ids)}), got {id_w.shape}")
    if ood_w.ndim != 2 or ood_w.shape != (len(id_w), len(oods)):
        raise ValueError(f"ood_weights must be ({len(id_w)}, {len(oods)}), got {ood_w.shape}")
    if (id_w < 0).any() or (ood_w < 0).any():
        raise ValueError("weights must be non-negative integers")
    id_order = np.argsort(ids, kind="stable")
    ood_order = np.argsort(oods, kind="stable")
    id_sorted, ood_sorted = ids[id_order], oods[ood_order]
    n1, n0 = len(ids), len(oods)
    below = np.searchsorted(id_sorted, ood_sorted, side="left")
    at_or_below = np.searchsorted(id_sorted, ood_sorted, side="right")
    fpr95 = np.full(len(id_w), np.nan)
    auroc = np.full(len(id_w), np.nan)
    block = block_size(n1, n0)
    for start in range(0, len(id_w), block):
        rows = slice(start, min(start + block, len(id_w)))
        w1 = id_w[rows][:, id_order]
        w0 = ood_w[rows][:, ood_order]
        t1, t0 = w1.sum(axis=1), w0.sum(axis=1)
        ok = (t1 > 0) & (t0 > 0)
        # id_cum[:, i]: ID weight at sorted positions < i.
        id_cum = np.zeros((len(w1), n1 + 1), dtype=np.int64)
        np.cumsum(w1, axis=1, out=id_cum[:, 1:])
        # FPR95 threshold: the keep-th largest weighted ID score (opnp.metrics._fpr_at_tpr
        # with each score repeated by its weight): the last sorted position with at least
        # ``keep`` weight at or above it.
        keep = np.clip(np.ceil(0.95 * t1 - 1e-12).astype(np.int64), 1, np.maximum(t1, 1))
        position = np.count_nonzero(id_cum[:, :n1] <= (t1 - keep)[:, None], axis=1) - 1
        threshold = id_sorted[np.clip(position, 0, n1 - 1)]
        first_kept = np.searchsorted(ood_sorted, threshold, side="left")
        ood_cum = np.zeros((len(w0), n0 + 1), dtype=np.int64)
        np.cumsum(w0, axis=1, out=ood_cum[:, 1:])
        kept = t0 - ood_cum[np.arange(len(w0)), first_kept]
        # AUROC (Mann-Whitney U, ties 1/2), doubled to stay integer.
        above = t1[:, None] - id_cum[:, at_or_below]
        tied = id_cum[:, at_or_below] - id_cum[:, below]
        u2 = np.einsum("bj,bj->b", w0, 2 * above + tied)
        with np.errstate(invalid="ignore", divide="ignore"):
            fpr95[rows] = np.where(ok, kept / t0, np.nan)
            auroc[rows] = np.where(ok, u2 / (2.0 * t1 * t0), np.nan)
    return {"fpr95": fpr95, "auroc": auroc}


def _replicate_arrays(name, values, n_replicates, lengths=None):
    values = [np.asarray(v) for v in values]
    if len(values) != n_replicates:
        raise ValueError(f"{name} has {len(values)} replicates, the ID scores {n_replicates}")
    if lengths is not None:
        for r, (v, n) in enumerate(zip(values, lengths, strict=True)):
            if v.shape != (n,):
                raise ValueError(
                    f"{name}[{r}] must have {n} entries (one per score), got {v.shape}"
                )
    return values


def _index_in(universe: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return np.searchsorted(universe, ids)


def pooled_bootstrap(
    id_scores: Sequence[Any],
    ood_scores: Sequence[Any],
    ood_clusters: Sequence[Any],
    id_units: Sequence[Any] | None = None,
    *,
    n_resamples: int = DEFAULT_N_RESAMPLES,
    seed: int = DEFAULT_SEED,
    ood_name: str = "",
) -> dict[str, Any]:
    """Mean over replicates of FPR95 and AUROC (fractions), and its cluster-bootstrap draws.

    ``id_scores[r]`` / ``ood_scores[r]`` are replicate ``r``'s test scores;
    ``ood_clusters[r]`` the cluster (class) of each OOD image, comparable across
    replicates (the same class has the same id in every replicate); ``id_units[r]`` the
    unit of each ID image (e.g. its row of the pool; default: every ID image its own
    unit, none shared between replicates). ``ood_name`` names the OOD draw stream, so
    different OOD sets get independent draws while the ID draw is shared by all.

    Returns ``{"fpr95", "auroc"}`` (the estimates: mean over replicates of the metric on
    all their data), ``{"fpr95_resamples", "auroc_resamples"}`` (``(n_resamples,)``, NaN
    for a draw that left every replicate without ID or OOD data), ``n_partial`` (draws
    averaged over fewer than all replicates) and ``replicate_fpr95`` / ``replicate_auroc``
    (each replicate's estimate).
    """
    k = len(id_scores)
    if k < 1:
        raise ValueError("pooled_bootstrap needs at least one replicate")
    ids = [_metrics.check_scores(s, f"id_scores[{r}]") for r, s in enumerate(id_scores)]
    oods = [
        _metrics.check_scores(s, f"ood_scores[{r}]")
        for r, s in enumerate(_replicate_arrays("ood_scores", ood_scores, k))
    ]
    clusters = _replicate_arrays("ood_clusters", ood_clusters, k, [len(o) for o in oods])
    if id_units is None:
        # Replicate r's image i is unit (r, i), encoded as one integer.
        offsets = np.cumsum([0, *[len(s) for s in ids]])
        units = [offsets[r] + np.arange(len(s)) for r, s in enumerate(ids)]
    else:
        units = _replicate_arrays("id_units", id_units, k, [len(s) for s in ids])
    for r, u in enumerate(units):
        if len(np.unique(u)) != len(u):
            raise ValueError(f"id_units[{r}] repeats a unit: an ID image is its own unit")
    n_resamples = int(n_resamples)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples}")
    id_universe = np.unique(np.concatenate(units))
    ood_universe = np.unique(np.concatenate(clusters))
    id_counts = unit_counts(id_universe, n_resamples, seed=seed, stream=ID_UNITS_STREAM)
    ood_counts = unit_counts(
        ood_universe, n_resamples, seed=seed, stream=_ood_units_stream(ood_name)
    )
    per_replicate = {m: np.empty((k, n_resamples)) for m in METRICS}
    estimates = {m: np.empty(k) for m in METRICS}
    for r in range(k):
        id_w = id_counts[:, _index_in(id_universe, units[r])]
        ood_w = ood_counts[:, _index_in(ood_universe, clusters[r])]
        values = weighted_metrics(ids[r], id_w, oods[r], ood_w)
        for m in METRICS:
            per_replicate[m][r] = values[m]
        estimates["fpr95"][r] = _metrics.fpr_at_95_tpr(ids[r], oods[r])
        estimates["auroc"][r] = _metrics.auroc(ids[r], oods[r])
    # A replicate is undefined in a draw exactly where its ID or OOD weights are all 0:
    # the same draws for both metrics and for every method.
    defined = ~np.isnan(per_replicate["auroc"])
    n_defined = defined.sum(axis=0)
    out: dict[str, Any] = {}
    for m in METRICS:
        out[m] = float(estimates[m].mean())
        out[f"replicate_{m}"] = estimates[m]
        total = np.where(defined, per_replicate[m], 0.0).sum(axis=0)
        out[f"{m}_resamples"] = np.where(n_defined > 0, total / np.maximum(n_defined, 1), np.nan)
    out["n_partial"] = int(((n_defined > 0) & (n_defined < k)).sum())
    return out


def pooled_intervals(
    id_scores: Sequence[Any],
    ood_scores: Sequence[Any],
    ood_clusters: Sequence[Any],
    id_units: Sequence[Any] | None = None,
    *,
    n_resamples: int = DEFAULT_N_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
    ood_name: str = "",
) -> dict[str, Any]:
    """:func:`pooled_bootstrap` plus ``<metric>_ci`` = ``(low, high)`` percentile intervals."""
    out = pooled_bootstrap(
        id_scores,
        ood_scores,
        ood_clusters,
        id_units,
        n_resamples=n_resamples,
        seed=seed,
        ood_name=ood_name,
    )
    for m in METRICS:
        out[f"{m}_ci"] = percentile_interval(out[f"{m}_resamples"], confidence, drop_undefined=True)
    return out
