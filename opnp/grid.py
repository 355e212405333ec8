"""Exact, fast scoring of a grid of OPNP pruning configurations (validation search).

A config is a dict with any of ``weight_low``, ``weight_high``, ``neuron_low``,
``neuron_high`` (percent, default 0; other keys are ignored). For each config the
scores equal those of ``create_detector("opnp", ...)`` with the same masks
(:func:`opnp.pruning.pruning_masks`), to float64 rounding (tested to 1e-9 relative).

How it avoids one dense (N, D) x (D, C) product per config:

1. Every weight gets a *group*: the set of grid thresholds that prune it (for each
   distinct nonzero ``weight_low`` p, whether S < percentile(S, p); for each
   ``weight_high``, whether S > percentile(S, 100 - p)). Weights in one group are kept
   or pruned together by every config. Neurons get groups the same way. Nested
   percentiles make the number of groups small (about 1 + number of distinct nonzero
   percentages per axis), and each config keeps a union of groups.
2. Per chunk of rows, the logit contribution of every (weight group, neuron group) pair
   is one product Z[w, n] = H[:, cols(n)] @ (W * [group == w])[:, cols(n)]^T (dense, or
   sparse for groups with few weights), costing about as much as *one* full-layer
   product per weight group in total, for the whole grid.
3. Configs are visited in a serpentine order over (neuron cell, weight cell); the pruned
   logits of the next config are the current ones plus / minus the few group
   contributions whose kept-status changes (incremental update), then scored.
4. Energy and MSP never exponentiate per config: each row block exponentiates every
   group pair once, E[w, n] = exp((Z[w, n] - max_c Z[w, n]) / T), and the incremental
   update of step 3 becomes a product, exp(f'/T - shift) = exp(b/T - shift_b) *
   prod of the kept E[w, n] (multiply when a group is kept, divide when it is pruned),
   so a config costs one multiply (or divide) and one sum over (rows, C) instead of an
   add, a max, a subtract, an exp and a sum. Every partial product lies in
   [exp(-R), 1] with R the sum over the pairs (and the bias) of the row's
   (max - min) / T; rows blocks where R > 600 (where a product could leave float64's
   normal range) use the additive path of step 3 instead, so no product under- or
   overflows and each score keeps float64 relative accuracy (a few hundred roundings).
5. Energy needs only the sums over classes. When no weight group lies in both a low
   and a high tail (always, unless one config's low tail and another's high tail
   overlap), the kept weight groups of (wl, wh) are those of A(wl) (the middle group
   and the low-tail groups wl keeps) plus those of B(wh) (the high-tail groups wh
   keeps), so sum_c P_c = sum_c A(wl)_c B(wh)_c: per neuron cell, the few products
   A(wl) and B(wh) are built (each from a smaller one) and every (wl, wh) sum comes out
   of one batched matrix product, instead of a multiply and a sum per config.
   Row blocks are shared between ``n_threads`` threads (numpy releases the GIL).

Memory: a few chunks of (rows, C) float64 per group pair, bounded by
``memory_budget`` and independent of N, plus the (n_configs, N) output (``out=`` may
be a memory-mapped array).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from opnp._validation import (
    check_choice,
    check_features,
    check_linear,
    check_percentage_pair,
    check_positive,
    iter_chunks,
)
from opnp.pruning import _check_sensitivities, percentile

SCORES = ("energy", "msp", "maxlogit")
PERCENT_KEYS = ("weight_low", "weight_high", "neuron_low", "neuron_high")
# Groups with at most this share of weights are multiplied as sparse matrices.
SPARSE_DENSITY = 0.02
# Largest total log-range (sum over group pairs and the bias of (max - min) / T of a
# row) for which a row block uses the multiplicative path: exp(-600) ~ 1e-261 stays far
# above float64's smallest normal number (~2e-308), and exp(600) below its largest.
MAX_LOG_RANGE = 600.0


def _config_values(config: Mapping[str, Any], i: int) -> tuple[float, float, float, float]:
    if not isinstance(config, Mapping):
        raise ValueError(f"configs[{i}] must be a dict of percentages, got {config!r}")
    wl, wh = check_percentage_pair(
        config.get("weight_low", 0),
        config.get("weight_high", 0),
        f"configs[{i}]['weight_low']",
        f"configs[{i}]['weight_high']",
    )
    nl, nh = check_percentage_pair(
        config.get("neuron_low", 0),
        config.get("neuron_high", 0),
        f"configs[{i}]['neuron_low']",
        f"configs[{i}]['neuron_high']",
    )
    return wl, wh, nl, nh


class _Axis:
    """Groups of the entries of one sensitivity array (weights or neurons) under all
    (low, high) pairs used by the grid."""

    def __init__(self, values: np.ndarray, pairs: Sequence[tuple[float, float]]):
        flat = values.ravel()
        lows = sorted({lo for lo, _ in pairs if lo > 0})
        highs = sorted({hi for _, hi in pairs if hi > 0})
        if len(lows) + len(highs) > 62:
            raise ValueError(
                f"a grid may use at most 62 distinct nonzero percentages per axis, got "
                f"{len(lows) + len(highs)}"
            )
        # Same thresholds and comparisons as opnp.pruning.tail_mask.
        code = np.zeros(flat.shape, dtype=np.int64)
        self.bit = {}
        for b, lo in enumerate(lows):
            code |= (flat < percentile(values, lo)).astype(np.int64) << b
            self.bit[("low", lo)] = b
        for b, hi in enumerate(highs, start=len(lows)):
            code |= (flat > percentile(values, 100.0 - hi)).astype(np.int64) << b
            self.bit[("high", hi)] = b
        self.codes, self.labels = np.unique(code, return_inverse=True)
        self.labels = self.labels.reshape(values.shape)
        self.low_mask = (1 << len(lows)) - 1  # the bits of the low percentages

    def kept(self, low: float, high: float) -> np.ndarray:
        """Boolean over groups: kept by the pair (low, high)."""
        prune = 0
        if low > 0:
            prune |= 1 << self.bit[("low", low)]
        if high > 0:
            prune |= 1 << self.bit[("high", high)]
        return (self.codes & prune) == 0


def _serpentine(pairs: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Distinct pairs sorted by the first value, the second alternating direction, so
    consecutive pairs usually differ in one percentage."""
    out = []
    for i, first in enumerate(sorted({a for a, _ in pairs})):
        seconds = sorted({b for a, b in pairs if a == first}, reverse=bool(i % 2))
        out += [(first, s) for s in seconds]
    return out


def _chain(sets: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
    """Build order of products over boolean group sets (rows of ``sets``): steps
    ``(i, j, groups)`` meaning product_i = product_j * prod of F[groups] (``j = -1``: from
    the start value), each from the largest earlier set it contains."""
    steps: list[tuple[int, int, np.ndarray]] = []
    for i in np.argsort(sets.sum(axis=1), kind="stable"):
        base = -1
        for j, _, _ in steps:
            if not np.any(sets[j] & ~sets[i]) and (base < 0 or sets[j].sum() > sets[base].sum()):
                base = j
        rest = sets[i] & ~sets[base] if base >= 0 else sets[i]
        steps.append((int(i), base, np.nonzero(rest)[0]))
    return steps


class GridPlan:
    """Group structure and masked weight blocks of one grid (reusable across feature
    sets, e.g. the ID and each OOD validation set)."""

    def __init__(self, weight, bias, param_sensitivity, neuron_sensitivity, configs):
        self.weight, self.bias = check_linear(weight, bias)
        s, n = _check_sensitivities(param_sensitivity, neuron_sensitivity)
        if s.shape != self.weight.shape:
            raise ValueError(
                f"param_sensitivity must have the weight's shape {self.weight.shape}, got {s.shape}"
            )
        configs = list(configs)
        if not configs:
            raise ValueError("configs is empty")
        self.values = [_config_values(c, i) for i, c in enumerate(configs)]
        self.weight_axis = _Axis(s, [(v[0], v[1]) for v in self.values])
        self.neuron_axis = _Axis(n, [(v[2], v[3]) for v in self.values])
        c, d = self.weight.shape
        self.neuron_cols = [
            np.nonzero(self.neuron_axis.labels == g)[0] for g in range(len(self.neuron_axis.codes))
        ]
        # Masked weight blocks of every nonempty (weight group, neuron group) pair, stacked
        # per neuron group so that one product gives all its pairs: the dense groups as
        # one (|cols|, k * C) matrix (h_n @ it), the sparse ones as one CSR (k * C, |cols|)
        # (it @ h_n^T). ``stacks[g_n] = (dense keys, dense matrix, sparse keys, CSR)``.
        from scipy import sparse

        self.stacks: list[tuple[list, np.ndarray | None, list, Any]] = []
        for g_n, cols in enumerate(self.neuron_cols):
            labels = self.weight_axis.labels[:, cols]
            dense_keys, dense, sparse_keys, sparse_blocks = [], [], [], []
            for g_w in np.unique(labels):
                member = labels == g_w
                block = np.where(member, self.weight[:, cols], 0.0)  # (C, |cols|)
                if member.mean() <= SPARSE_DENSITY:
                    sparse_keys.append((int(g_w), g_n))
                    sparse_blocks.append(sparse.csr_matrix(block))
                else:
                    dense_keys.append((int(g_w), g_n))
                    dense.append(block.T)
            self.stacks.append(
                (
                    dense_keys,
                    np.ascontiguousarray(np.hstack(dense)) if dense else None,
                    sparse_keys,
                    sparse.vstack(sparse_blocks, format="csr") if sparse_blocks else None,
                )
            )
        self.pair_keys = [key for st in self.stacks for key in st[0] + st[2]]
        # Visit order: neuron cells, and within each the weight cells of its configs.
        self.order: list[
            tuple[tuple[float, float], list[tuple[tuple[float, float], list[int]]]]
        ] = []
        by_neuron: dict[tuple[float, float], dict[tuple[float, float], list[int]]] = {}
        for i, (wl, wh, nl, nh) in enumerate(self.values):
            by_neuron.setdefault((nl, nh), {}).setdefault((wl, wh), []).append(i)
        for ncell in _serpentine(list(by_neuron)):
            wcells = by_neuron[ncell]
            self.order.append((ncell, [(w, wcells[w]) for w in _serpentine(list(wcells))]))

        # For each neuron group, its nonempty (weight group, pair key)s.
        self.pairs_of_neuron: list[list[tuple[int, tuple[int, int]]]] = [
            [(key[0], key) for key in self.pair_keys if key[1] == g_n]
            for g_n in range(len(self.neuron_cols))
        ]
        self.bias_range = float(self.bias.max() - self.bias.min())
        # Energy shortcut (module docstring, step 5): with no weight group in both a low
        # and a high tail, the kept groups of (wl, wh) are A(wl) (the middle and the
        # low-tail groups wl keeps) plus B(wh) (the high-tail groups wh keeps).
        wa = self.weight_axis
        low, high = (wa.codes & wa.low_mask) != 0, (wa.codes & ~wa.low_mask) != 0
        self.separable = not np.any(low & high)
        lows = sorted({v[0] for v in self.values})
        highs = sorted({v[1] for v in self.values})
        self.a_index = {v: i for i, v in enumerate(lows)}
        self.b_index = {v: i for i, v in enumerate(highs)}
        self.a_sets = np.array([wa.kept(v, 0) & ~high for v in lows])
        self.b_sets = np.array([wa.kept(0, v) & high for v in highs])
        self.a_chain = _chain(self.a_sets)
        self.b_chain = _chain(self.b_sets)

    @property
    def n_pairs(self) -> int:
        return len(self.pair_keys)


def _contributions(plan: GridPlan, h: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """Z[w, n] = h[:, cols(n)] @ (W * [group == w])[:, cols(n)]^T (rows, C) of every pair:
    two products per neuron group (its dense and its sparse weight groups)."""
    out = {}
    c = plan.weight.shape[0]
    ht = np.ascontiguousarray(h.T)  # (D, rows): a neuron group's columns are rows here
    for g_n, cols in enumerate(plan.neuron_cols):
        dense_keys, dense, sparse_keys, csr = plan.stacks[g_n]
        h_nt = ht[cols]
        if dense is not None:
            zd = h_nt.T @ dense  # (rows, k * C)
            for i, key in enumerate(dense_keys):
                out[key] = zd[:, i * c : (i + 1) * c]
        if csr is not None:
            zs = csr @ h_nt  # (k * C, rows); its pairs are transposed views (rows, C)
            for i, key in enumerate(sparse_keys):
                out[key] = zs[i * c : (i + 1) * c].T
    return out


def _traverse(plan, z, wkept, nkept, score, t, g, logits, tmp, res, out, row0) -> None:
    """Visit every config of ``plan`` on one block of rows, updating the logits
    incrementally, and write the scores to ``out[:, row0 : row0 + rows]``."""
    rows = len(logits)
    g[:] = 0.0  # G_w = sum of Z[w, n] over the kept neuron groups
    kept_n = np.zeros(len(plan.neuron_cols), dtype=bool)
    for ncell, wcells in plan.order:
        new = nkept[ncell]
        for g_n in np.nonzero(new != kept_n)[0]:
            for g_w, key in plan.pairs_of_neuron[g_n]:
                if new[g_n]:
                    g[g_w] += z[key]
                else:
                    g[g_w] -= z[key]
        kept_n = new
        kept_w = None
        for wcell, idx in wcells:
            neww = wkept[wcell]
            if kept_w is None:  # first weight cell of this neuron cell: from scratch
                logits[:] = plan.bias
                for g_w in np.nonzero(neww)[0]:
                    logits += g[g_w]
            else:
                for g_w in np.nonzero(neww != kept_w)[0]:
                    if neww[g_w]:
                        logits += g[g_w]
                    else:
                        logits -= g[g_w]
            kept_w = neww
            _score_into(logits, score, t, tmp, res)
            for i in idx:
                out[i, row0 : row0 + rows] = res


def _exponentiate(plan, z, t, buf) -> tuple[dict, dict] | None:
    """One row block: E[w, n] = exp((Z[w, n] - max_c Z) / T) of every pair, written
    to ``buf`` (n_pairs, rows, C) (row-major, whatever the layout of ``z``). Returns
    ({pair: E}, {pair: the shifts max_c Z / T (rows,)}), or None when a row's total
    log-range exceeds :data:`MAX_LOG_RANGE`."""
    shifts = {}
    total = np.full(next(iter(z.values())).shape[0], plan.bias_range)
    for key, zz in z.items():
        hi = zz.max(axis=1)
        total += hi - zz.min(axis=1)
        shifts[key] = hi
    if total.max() / t > MAX_LOG_RANGE:
        return None
    e = {}
    for i, (key, zz) in enumerate(z.items()):
        ei = buf[i]
        np.subtract(zz, shifts[key][:, None], out=ei)
        if t != 1.0:
            ei /= t
            shifts[key] /= t
        np.exp(ei, out=ei)
        e[key] = ei
    return e, shifts


def _traverse_exp(plan, z, shifts, wkept, nkept, score, t, bias_exp, f, p, out, row0) -> None:
    """:func:`_traverse` in the exponential domain (module docstring, step 4): ``z``
    holds E[w, n] = exp(Z[w, n] / T - shift[w, n]); F_w = prod of E[w, n] over the kept
    neuron groups, P = exp(b / T - shift_b) * prod of the kept F_w = exp(f' / T - shift)
    with the shifts tracked per row; energy = T (log sum_c P + shift), MSP = max P / sum P.
    ``bias_exp``: (exp((b - max b) / T), max b / T).
    """
    rows = p.shape[0]
    f[:] = 1.0
    f_shift = np.zeros((f.shape[0], rows))
    kept_n = np.zeros(len(plan.neuron_cols), dtype=bool)
    for ncell, wcells in plan.order:
        new = nkept[ncell]
        for g_n in np.nonzero(new != kept_n)[0]:
            for g_w, key in plan.pairs_of_neuron[g_n]:
                if new[g_n]:
                    f[g_w] *= z[key]
                    f_shift[g_w] += shifts[key]
                else:
                    f[g_w] /= z[key]
                    f_shift[g_w] -= shifts[key]
        kept_n = new
        kept_w = None
        for wcell, idx in wcells:
            neww = wkept[wcell]
            if kept_w is None:  # first weight cell of this neuron cell: from scratch
                p[:] = bias_exp[0]
                shift = np.full(rows, bias_exp[1])
                for g_w in np.nonzero(neww)[0]:
                    p *= f[g_w]
                    shift += f_shift[g_w]
            else:
                for g_w in np.nonzero(neww != kept_w)[0]:
                    if neww[g_w]:
                        p *= f[g_w]
                        shift += f_shift[g_w]
                    else:
                        p /= f[g_w]
                        shift -= f_shift[g_w]
            kept_w = neww
            total = p.sum(axis=1)
            if score == "energy":
                res = t * (np.log(total) + shift)
            else:  # msp = max_c exp(f'_c / T) / sum_c exp(f'_c / T)
                res = p.max(axis=1) / total
            for i in idx:
                out[i, row0 : row0 + rows] = res


def _traverse_separable(plan, z, shifts, nkept, t, bias_exp, f, a, b, out, row0) -> None:
    """Energy of every config of a separable plan (module docstring, step 5) on one row
    block: per neuron cell, F_w as in :func:`_traverse_exp`, then A(wl) = exp(b / T) *
    prod of F over A's groups and B(wh) likewise (``a``: (rows, n_wl, C), ``b``:
    (rows, n_wh, C)), and sum_c A(wl)_c B(wh)_c for all (wl, wh) at once as one batched
    matrix product."""
    rows = f.shape[1]
    f[:] = 1.0
    f_shift = np.zeros((f.shape[0], rows))
    kept_n = np.zeros(len(plan.neuron_cols), dtype=bool)
    bt = b.transpose(0, 2, 1)
    for ncell, wcells in plan.order:
        new = nkept[ncell]
        for g_n in np.nonzero(new != kept_n)[0]:
            for g_w, key in plan.pairs_of_neuron[g_n]:
                if new[g_n]:
                    f[g_w] *= z[key]
                    f_shift[g_w] += shifts[key]
                else:
                    f[g_w] /= z[key]
                    f_shift[g_w] -= shifts[key]
        kept_n = new
        for buf, chain, start in ((a, plan.a_chain, bias_exp[0]), (b, plan.b_chain, 1.0)):
            for i, j, groups in chain:
                dst = buf[:, i]
                if len(groups) == 0:
                    dst[:] = start if j < 0 else buf[:, j]
                    continue
                np.multiply(start if j < 0 else buf[:, j], f[groups[0]], out=dst)
                for g_w in groups[1:]:
                    dst *= f[g_w]
        sums = np.matmul(a, bt)  # (rows, n_wl, n_wh)
        shift_a = plan.a_sets.astype(np.float64) @ f_shift + bias_exp[1]  # (n_wl, rows)
        shift_b = plan.b_sets.astype(np.float64) @ f_shift
        for (wl, wh), idx in wcells:
            ia, ib = plan.a_index[wl], plan.b_index[wh]
            res = t * (np.log(sums[:, ia, ib]) + shift_a[ia] + shift_b[ib])
            for i in idx:
                out[i, row0 : row0 + rows] = res


def _score_into(logits: np.ndarray, kind: str, temperature: float, tmp: np.ndarray, out):
    """Energy / MSP / max logit of each row, with preallocated scratch ``tmp``."""
    m = logits.max(axis=1)
    if kind == "maxlogit":
        out[:] = m
        return
    np.subtract(logits, m[:, None], out=tmp)
    if temperature != 1.0:
        tmp /= temperature
    np.exp(tmp, out=tmp)
    log_sum = np.log(tmp.sum(axis=1))
    if kind == "energy":
        out[:] = m + temperature * log_sum
    else:  # msp = exp(max/T - logsumexp(f/T)) = 1 / sum exp((f - max)/T)
        out[:] = np.exp(-log_sum)


def default_threads() -> int:
    """Threads for the grid traversal: the BLAS thread limit in force
    (``threadpoolctl``; the workflow's jobs set it to the rule's threads), at most the
    CPUs this process may use."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    try:
        from threadpoolctl import threadpool_info

        blas = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
    except Exception:  # noqa: BLE001 - threadpoolctl is optional here
        blas = []
    return max(1, min(cpus, max(blas) if blas else cpus))


def score_pruning_grid(
    features: Any,
    weight: Any,
    bias: Any,
    param_sensitivity: Any,
    neuron_sensitivity: Any,
    configs: Sequence[Mapping[str, Any]],
    score: str = "energy",
    temperature: float = 1.0,
    react_threshold: float | None = None,
    chunk_size: int | None = None,
    memory_budget: int = 512 * 2**20,
    out: np.ndarray | None = None,
    plan: GridPlan | None = None,
    n_threads: int | None = None,
    device: Any = None,
) -> np.ndarray:
    """Scores (n_configs, N) float64 of the OPNP-pruned layer for every config.

    ``score``: "energy" (T logsumexp(f'/T), the OPNP score), "msp" (opnp+msp) or
    "maxlogit". ``react_threshold``: clip the features at this value first (opnp+react;
    sensitivities stay those of the unclipped features, as the caller passes them).
    ``chunk_size`` (rows per chunk) defaults to what fits ``memory_budget`` bytes of
    group contributions. ``out``: optional preallocated (n_configs, N) array.
    ``plan``: a :class:`GridPlan` of the same arguments, to reuse across feature sets.
    ``n_threads``: threads sharing the per-config traversal (default
    :func:`default_threads`); the scores do not depend on it. ``device`` (e.g.
    ``"cuda"``; :mod:`opnp.backend`): score with torch there (float64, the additive
    traversal of step 3 with a log-sum-exp per config, which a GPU does fast); a CUDA
    tensor as ``features`` scores on its device without ``device=``. Equal to the numpy
    path to 1e-9 relative (tested on CPU torch).
    """
    from opnp.backend import check_tensor_features, is_tensor, torch_device

    check_choice(score, "score", SCORES)
    t = check_positive(temperature, "temperature")
    if plan is None:
        plan = GridPlan(weight, bias, param_sensitivity, neuron_sensitivity, configs)
    dev = torch_device(features, device)
    if dev is not None and is_tensor(features):
        h = check_tensor_features(features, "features", dim=plan.weight.shape[1])
    else:
        h = check_features(features, "features", dim=plan.weight.shape[1])
    n, c = h.shape[0], plan.weight.shape[0]
    n_configs = len(plan.values)
    if out is None:
        out = np.empty((n_configs, n), dtype=np.float64)
    elif out.shape != (n_configs, n):
        raise ValueError(f"out must have shape {(n_configs, n)}, got {out.shape}")
    if chunk_size is None:
        per_row = (plan.n_pairs + len(plan.weight_axis.codes) + 3) * c * 8
        chunk_size = int(min(8192, max(64, memory_budget // per_row)))
    if dev is not None:
        return _grid_torch(plan, h, score, t, react_threshold, int(chunk_size), out, dev)
    threads = default_threads() if n_threads is None else int(n_threads)
    if threads < 1:
        raise ValueError(f"n_threads must be a positive integer, got {n_threads!r}")
    n_wgroups = len(plan.weight_axis.codes)
    wkept = {w: plan.weight_axis.kept(*w) for _, cells in plan.order for w, _ in cells}
    nkept = {ncell: plan.neuron_axis.kept(*ncell) for ncell, _ in plan.order}
    bias_exp = (np.exp((plan.bias - plan.bias.max()) / t), plan.bias.max() / t)
    # The traversal runs on blocks of ``block_rows`` rows so that the (rows, C) arrays it
    # updates stay in the CPU cache; the products above use the whole chunk.
    block_rows = max(1, min(int(chunk_size), (512 * 1024) // (8 * c)))
    separable = score == "energy" and plan.separable
    n_a, n_b = (len(plan.a_chain), len(plan.b_chain)) if separable else (0, 0)
    # Scratch per thread: group sums / products (n_wgroups, rows, C), logits, tmp, res,
    # and the A / B products of the separable energy path.
    scratch = [
        (
            np.empty((n_wgroups, block_rows, c)),
            np.empty((block_rows, c)),
            np.empty((block_rows, c)),
            np.empty(block_rows),
            np.empty((block_rows, n_a, c)),
            np.empty((block_rows, n_b, c)),
            np.empty((0 if score == "maxlogit" else plan.n_pairs, block_rows, c)),
        )
        for _ in range(threads)
    ]

    def run_blocks(k: int, z: dict, start: int, n_rows: int) -> None:
        g, logits, tmp, res, a, b, ebuf = scratch[k]
        for b0 in range(k * block_rows, n_rows, threads * block_rows):
            rows = min(block_rows, n_rows - b0)
            zb = {key: v[b0 : b0 + rows] for key, v in z.items()}
            exps = None if score == "maxlogit" else _exponentiate(plan, zb, t, ebuf[:, :rows])
            if exps is None:  # additive path (max logit, or a row with a wide range)
                _traverse(
                    plan, zb, wkept, nkept, score, t,
                    g[:, :rows], logits[:rows], tmp[:rows], res[:rows],
                    out, start + b0,
                )  # fmt: skip
            elif separable:
                _traverse_separable(
                    plan, *exps, nkept, t, bias_exp,
                    g[:, :rows], a[:rows], b[:rows], out, start + b0,
                )  # fmt: skip
            else:
                _traverse_exp(
                    plan, *exps, wkept, nkept, score, t, bias_exp,
                    g[:, :rows], logits[:rows], out, start + b0,
                )  # fmt: skip

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start, hc in iter_chunks(h, int(chunk_size), "features", dtype=np.float64):
            if react_threshold is not None:
                hc = np.minimum(hc, float(react_threshold))
            z = _contributions(plan, hc)
            jobs = [pool.submit(run_blocks, k, z, start, len(hc)) for k in range(threads)]
            for job in jobs:
                job.result()
    return out


def _grid_torch(plan, h, score, t, react_threshold, chunk_size, out, device) -> np.ndarray:
    """:func:`score_pruning_grid` with torch on ``device``: per chunk, one product per
    neuron group (its dense and sparse weight groups as one dense matrix), then the
    additive traversal (step 3) with each config's scores kept on the device and copied
    to ``out`` once per chunk."""
    import torch

    from opnp.backend import as_tensor, device_chunks

    c = plan.weight.shape[0]
    mats = []
    for g_n, (dense_keys, dense, sparse_keys, csr) in enumerate(plan.stacks):
        parts = [m for m in (dense, None if csr is None else csr.toarray().T) if m is not None]
        cols = as_tensor(plan.neuron_cols[g_n], device, torch.int64)
        mats.append((dense_keys + sparse_keys, as_tensor(np.hstack(parts), device), cols))
    bias = as_tensor(plan.bias, device)
    wkept = {w: plan.weight_axis.kept(*w) for _, cells in plan.order for w, _ in cells}
    nkept = {ncell: plan.neuron_axis.kept(*ncell) for ncell, _ in plan.order}
    n_w = len(plan.weight_axis.codes)
    with torch.no_grad():
        for start, hc in device_chunks(h, chunk_size, "features", device):
            if react_threshold is not None:
                hc = hc.clamp(max=float(react_threshold))
            rows = len(hc)
            z = {}
            for keys, m, cols in mats:
                zz = hc[:, cols] @ m
                for i, key in enumerate(keys):
                    z[key] = zz[:, i * c : (i + 1) * c]
            res = torch.empty((len(plan.values), rows), dtype=torch.float64, device=device)
            g = torch.zeros((n_w, rows, c), dtype=torch.float64, device=device)
            logits = torch.empty((rows, c), dtype=torch.float64, device=device)
            kept_n = np.zeros(len(plan.neuron_cols), dtype=bool)
            for ncell, wcells in plan.order:
                new = nkept[ncell]
                for g_n in np.nonzero(new != kept_n)[0]:
                    for g_w, key in plan.pairs_of_neuron[g_n]:
                        if new[g_n]:
                            g[g_w] += z[key]
                        else:
                            g[g_w] -= z[key]
                kept_n = new
                for wcell, idx in wcells:
                    logits.copy_(bias.expand(rows, c))
                    for g_w in np.nonzero(wkept[wcell])[0]:
                        logits += g[g_w]
                    if score == "maxlogit":
                        val = logits.max(dim=1).values
                    elif score == "energy":
                        val = t * torch.logsumexp(logits / t, dim=1)
                    else:
                        val = torch.softmax(logits / t, dim=1).max(dim=1).values
                    res[list(idx)] = val
            out[:, start : start + rows] = res.cpu().numpy()
    return out


def evaluate_pruning_grid(
    id_features: Any,
    ood_features: Mapping[str, Any] | Any,
    weight: Any,
    bias: Any,
    param_sensitivity: Any,
    neuron_sensitivity: Any,
    configs: Sequence[Mapping[str, Any]],
    score: str = "energy",
    temperature: float = 1.0,
    react_threshold: float | None = None,
    convention: str = "paper",
    chunk_size: int | None = None,
    device: Any = None,
) -> list[dict]:
    """Metrics of every config on every OOD set: one dict per (config, OOD set) with the
    config's four percentages, ``ood_set`` and ``fpr95, auroc, aupr_in, aupr_out``
    (fractions in [0, 1], :func:`opnp.metrics.evaluate`). A single OOD array is named
    "ood". ``device``: as in :func:`score_pruning_grid`."""
    from opnp.metrics import evaluate

    if not isinstance(ood_features, Mapping):
        ood_features = {"ood": ood_features}
    plan = GridPlan(weight, bias, param_sensitivity, neuron_sensitivity, configs)
    kw = dict(
        score=score,
        temperature=temperature,
        react_threshold=react_threshold,
        chunk_size=chunk_size,
        plan=plan,
        device=device,
    )
    id_scores = score_pruning_grid(id_features, None, None, None, None, configs, **kw)
    rows = []
    for name, feats in ood_features.items():
        ood_scores = score_pruning_grid(feats, None, None, None, None, configs, **kw)
        for i, values in enumerate(plan.values):
            rows.append(
                {
                    **dict(zip(PERCENT_KEYS, values, strict=True)),
                    "ood_set": name,
                    **evaluate(id_scores[i], ood_scores[i], convention=convention),
                }
            )
    return rows
