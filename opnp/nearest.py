"""The k-th largest inner product of each query with a large bank, exact in float64 at
nearly the cost of a float32 scan (KNN's search, :class:`opnp.detectors.knn.KNN`).

A float64 scan of ImageNet's bank (1.28M x 2048) for 150,000 queries is ~790 TFLOP at
half the float32 rate, and a running ``np.partition`` of every block costs as much again.
So the scan runs in float32 and only screens: each query keeps its ``k + margin`` largest
screened values (``margin`` = max(64, k / 4)) with their bank rows, and the few
candidates whose screened value lies near the k-th are recomputed in float64.

Why that is exact. Each screened value s~ differs from the float64 value s by at most
``eps`` (:func:`screening_error_bound`): the float32 rounding of the query, of the bank
row and of its scaling, and a float32 sum of D products, each bounded relative to
sum_i |q_i b_i| <= ||q|| ||b|| = 1 for unit vectors (Higham's gamma_D). With t the k-th
largest screened value of a query: at least k values have s >= t - eps, so the k-th
largest s is >= t - eps, and a value screened below t - 2 eps is below it; at most k - 1
values are screened above t, so the k-th largest s is <= t + eps, and a value screened
above t + 2 eps (there are m of them) is above it. The k-th largest s is therefore the
(k - m)-th largest exact value among the candidates screened within [t - 2 eps, t + 2 eps],
provided the query kept all of those: its smallest kept value must be below t - 2 eps
(or it kept the whole bank). A query whose band overflowed its margin (near-duplicate
neighbours, e.g. features of an untrained network) is recomputed by a plain float64 scan.

Cost per query block: one float32 pass over the bank (the product, a comparison with the
query's running threshold on block maxima of 64 columns, and a gather of the few columns
that pass) plus a merge of the passing values every ``Q x margin`` of them; memory is one
(queries, bank block) float32 matrix.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Columns compared at once with a query's threshold before looking at single values.
GROUP = 64
_U32 = float(np.finfo(np.float32).eps) / 2  # unit roundoff of float32


def screening_error_bound(dim: int) -> float:
    """Bound on |screened - exact| for unit vectors of ``dim`` entries: gamma_{dim + 8}
    in float32, plus float64's own error. A float32 sum of ``dim`` products is within
    gamma_dim of sum_i |q_i b_i| <= 1 in any order of summation, blocked or with FMA
    (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., sec. 3.1); the 8
    cover rounding the query, the training row, its inverse norm, their product, and the
    stored bank row that the exact value uses."""
    n = dim + 8
    return n * _U32 / (1.0 - n * _U32) + 1e-12


def kth_largest_inner_product(
    queries: np.ndarray,
    k: int,
    n_bank: int,
    screen_rows: Callable[[int, int], np.ndarray],
    exact_rows: Callable[[np.ndarray], np.ndarray],
    block_entries: int = 1 << 24,
    exact: bool = True,
) -> np.ndarray:
    """k-th largest ``queries @ bank.T`` per query (float64, shape (Q,)).

    ``queries``: (Q, D) float64 unit (or zero) rows. ``screen_rows(start, stop)``: bank
    rows ``start:stop`` as float32 unit rows (approximations within
    :func:`screening_error_bound` of the exact rows are fine). ``exact_rows(indices)``:
    those bank rows exactly, float64 (sorted unique indices). ``exact=False`` returns
    the screened k-th value itself (float32 precision). ``block_entries`` bounds the
    (Q, bank block) similarity matrix.
    """
    q = np.asarray(queries, dtype=np.float64)
    if not 1 <= k <= n_bank:
        raise ValueError(f"k={k} must be between 1 and the bank's {n_bank} rows")
    keep = min(n_bank, k + max(64, k // 4))
    values, rows = _screen(q.astype(np.float32), keep, n_bank, screen_rows, block_entries)
    order = np.argsort(-values, axis=1, kind="stable")
    values = np.take_along_axis(values, order, axis=1)
    rows = np.take_along_axis(rows, order, axis=1)
    if not exact:
        return values[:, k - 1].astype(np.float64)
    eps = screening_error_bound(q.shape[1])
    t = values[:, k - 1].astype(np.float64)
    lo, hi = t - 2 * eps, t + 2 * eps
    complete = (values[:, -1] < lo) | (keep == n_bank)
    out = np.empty(len(q), dtype=np.float64)
    band = (values >= lo[:, None]) & (values <= hi[:, None]) & complete[:, None]
    above = np.count_nonzero(values > hi[:, None], axis=1)
    which, col = np.nonzero(band)
    if len(which):
        exact_values = _exact_products(q, which, rows[which, col], exact_rows)
        starts = np.searchsorted(which, np.arange(len(q)))
        ends = np.searchsorted(which, np.arange(len(q)), side="right")
        for i in np.flatnonzero(complete):
            mine = exact_values[starts[i] : ends[i]]
            rank = k - above[i]  # the rank-th largest of the band
            out[i] = np.partition(mine, len(mine) - rank)[len(mine) - rank]
    overflow = np.flatnonzero(~complete)
    if len(overflow):
        out[overflow] = _plain_float64_scan(q[overflow], k, n_bank, exact_rows, block_entries)
    return out


def _screen(q32, keep, n_bank, screen_rows, block_entries):
    """Each query's ``keep`` largest screened values (float32) and their bank rows."""
    n_q = len(q32)
    block = bank_block_rows(block_entries, n_q, q32.shape[1], multiple=GROUP)
    values = np.empty((n_q, 0), dtype=np.float32)
    rows = np.empty((n_q, 0), dtype=np.int64)
    threshold = np.full(n_q, -np.inf, dtype=np.float32)
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    n_pending = 0
    for start in range(0, n_bank, block):
        sims = q32 @ screen_rows(start, min(start + block, n_bank)).T
        if values.shape[1] < keep:  # still filling: keep everything, then cut
            values = np.concatenate([values, sims], axis=1)
            rows = np.concatenate(
                [rows, np.broadcast_to(np.arange(start, start + sims.shape[1]), sims.shape)], axis=1
            )
            if values.shape[1] >= keep:
                values, rows = _top(values, rows, keep)
                threshold = values.min(axis=1)
            continue
        q_idx, cols, vals = _above(sims, threshold)
        pending.append((q_idx, cols + start, vals))
        n_pending += len(q_idx)
        if n_pending > n_q * (keep // 4 + 1):
            values, rows = _merge(values, rows, pending, keep)
            threshold, pending, n_pending = values.min(axis=1), [], 0
    if pending:
        values, rows = _merge(values, rows, pending, keep)
    return values, rows


def _above(sims: np.ndarray, threshold: np.ndarray):
    """(query, column, value) of the entries of ``sims`` above each query's threshold:
    only the groups of GROUP columns whose maximum passes are looked at entry by entry."""
    n_q, width = sims.shape
    full = width // GROUP * GROUP
    groups = sims[:, :full].reshape(n_q, -1, GROUP)
    q_idx, g_idx = np.nonzero(groups.max(axis=2) > threshold[:, None])
    candidates = groups[q_idx, g_idx]  # (passing groups, GROUP), one row gather
    p, j = np.nonzero(candidates > threshold[q_idx, None])
    out_q, out_c, out_v = [q_idx[p]], [g_idx[p] * GROUP + j], [candidates[p, j]]
    if full < width:  # the ragged tail
        tq, tc = np.nonzero(sims[:, full:] > threshold[:, None])
        out_q.append(tq)
        out_c.append(tc + full)
        out_v.append(sims[tq, tc + full])
    return np.concatenate(out_q), np.concatenate(out_c), np.concatenate(out_v)


def _merge(values, rows, pending, keep):
    """Each query's ``keep`` largest of its kept values and its pending ones."""
    q_idx = np.concatenate([p[0] for p in pending])
    cols = np.concatenate([p[1] for p in pending])
    vals = np.concatenate([p[2] for p in pending])
    if not len(q_idx):
        return values, rows
    order = np.argsort(q_idx, kind="stable")
    q_idx, cols, vals = q_idx[order], cols[order], vals[order]
    counts = np.bincount(q_idx, minlength=len(values))
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(len(q_idx)) - first[q_idx]
    extra_v = np.full((len(values), counts.max()), -np.inf, dtype=np.float32)
    extra_r = np.zeros((len(values), counts.max()), dtype=np.int64)
    extra_v[q_idx, pos] = vals
    extra_r[q_idx, pos] = cols
    return _top(
        np.concatenate([values, extra_v], axis=1), np.concatenate([rows, extra_r], axis=1), keep
    )


def _top(values, rows, keep):
    idx = np.argpartition(-values, keep - 1, axis=1)[:, :keep]
    return np.take_along_axis(values, idx, axis=1), np.take_along_axis(rows, idx, axis=1)


def _exact_products(q, which, bank_rows, exact_rows, pairs: int = 8192):
    """float64 ``q[which[i]] . bank[bank_rows[i]]`` for every pair, ``pairs`` at a time
    (one einsum per pair of rows: the same value for the same two rows whatever else is
    in the slice)."""
    out = np.empty(len(which), dtype=np.float64)
    for s in range(0, len(which), pairs):
        unique, inverse = np.unique(bank_rows[s : s + pairs], return_inverse=True)
        rows = exact_rows(unique)
        out[s : s + pairs] = np.einsum("ij,ij->i", q[which[s : s + pairs]], rows[inverse])
    return out


def bank_block_rows(block_entries: int, n_queries: int, dim: int, multiple: int = 1) -> int:
    """Bank rows per block of a scan: neither the (queries, block) products nor the
    (block, dim) bank block holds more than ``block_entries`` values (at least ``multiple``
    rows, a multiple of it). Bounding the products alone would make the bank block the
    whole bank for a few queries (21 GB in float64 at ImageNet's 1.28M x 2048)."""
    rows = block_entries // max(n_queries, dim, 1)
    return max(multiple, rows // multiple * multiple)


def _plain_float64_scan(q, k, n_bank, exact_rows, block_entries):
    """The k-th largest inner product by a float64 scan of the exact bank, in blocks of
    :func:`bank_block_rows`."""
    best = np.full((len(q), 0), -np.inf)
    block = bank_block_rows(block_entries, len(q), q.shape[1])
    for start in range(0, n_bank, block):
        sims = q @ exact_rows(np.arange(start, min(start + block, n_bank))).T
        cand = np.concatenate([best, sims], axis=1)
        best = -np.partition(-cand, min(k, cand.shape[1]) - 1, axis=1)[:, : min(k, cand.shape[1])]
    return best.min(axis=1)
