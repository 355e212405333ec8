"""Exact, fast scoring of a grid of OPNP pruning configurations (validation search).

A config is a dict with any of ``weight_low``, ``weight_high``, ``neuron_low``,
``neuron_high`` (percent, default 0; other keys are ignored). For each config the
scores equal those of ``create_detector("opnp", ...)`` with the same masks
(:func:`opnp.pruning.pruning_masks`), to float64 rounding (tested to 1e-9 relative).

How: a plan of weight and neuron groups shared by the configs (:class:`GridPlan`) and
the kernels of :mod:`opnp.grid_kernels` (incremental, exponential-domain updates).

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
from opnp.grid_kernels import (
    _contributions,
    _exponentiate,
    _grid_torch,
    _traverse,
    _traverse_exp,
    _traverse_separable,
)
from opnp.pruning import _check_sensitivities, percentile, scope_axis

SCORES = ("energy", "msp", "maxlogit")
PERCENT_KEYS = ("weight_low", "weight_high", "neuron_low", "neuron_high")
# Groups with at most this share of weights are multiplied as sparse matrices.
SPARSE_DENSITY = 0.02
# Bytes of one (rows, C) float64 array of the traversal (its row block); see score_pruning_grid.
BLOCK_BYTES = 512 * 1024


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

    def __init__(
        self, values: np.ndarray, pairs: Sequence[tuple[float, float]], axis: int | None = None
    ):
        flat = values.ravel()
        lows = sorted({lo for lo, _ in pairs if lo > 0})
        highs = sorted({hi for _, hi in pairs if hi > 0})
        if len(lows) + len(highs) > 62:
            raise ValueError(
                f"a grid may use at most 62 distinct nonzero percentages per axis, got "
                f"{len(lows) + len(highs)}"
            )
        # Same thresholds and comparisons as opnp.pruning.tail_mask (``axis`` likewise).
        code = np.zeros(flat.shape, dtype=np.int64)
        self.bit = {}
        for b, lo in enumerate(lows):
            code |= (values < percentile(values, lo, axis)).ravel().astype(np.int64) << b
            self.bit[("low", lo)] = b
        for b, hi in enumerate(highs, start=len(lows)):
            code |= (values > percentile(values, 100.0 - hi, axis)).ravel().astype(np.int64) << b
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
    sets, e.g. the ID and each OOD validation set). ``threshold_scope``: where the
    weight thresholds are taken, as in :func:`opnp.pruning.pruning_masks`."""

    def __init__(
        self,
        weight,
        bias,
        param_sensitivity,
        neuron_sensitivity,
        configs,
        threshold_scope: str = "matrix",
    ):
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
        self.weight_axis = _Axis(
            s, [(v[0], v[1]) for v in self.values], scope_axis(threshold_scope)
        )
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
    threshold_scope: str = "matrix",
) -> np.ndarray:
    """Scores (n_configs, N) float64 of the OPNP-pruned layer for every config.

    ``score``: "energy" (T logsumexp(f'/T), the OPNP score), "msp" (opnp+msp) or
    "maxlogit". ``react_threshold``: clip the features at this value first (opnp+react;
    sensitivities stay those of the unclipped features, as the caller passes them).
    ``chunk_size`` (rows per chunk) defaults to what fits ``memory_budget`` bytes of
    group contributions. ``out``: optional preallocated (n_configs, N) array.
    ``plan``: a :class:`GridPlan` of the same arguments, to reuse across feature sets.
    ``threshold_scope``: the weight thresholds' scope (:class:`GridPlan`; when no plan).
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
        plan = GridPlan(
            weight, bias, param_sensitivity, neuron_sensitivity, configs, threshold_scope
        )
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
    block_rows = max(1, min(int(chunk_size), BLOCK_BYTES // (8 * c)))
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

    buffers: dict = {}  # the contributions' output arrays, reused by every chunk
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start, hc in iter_chunks(h, int(chunk_size), "features", dtype=np.float64):
            if react_threshold is not None:
                hc = np.minimum(hc, float(react_threshold))
            z = _contributions(plan, hc, buffers, pool)
            jobs = [pool.submit(run_blocks, k, z, start, len(hc)) for k in range(threads)]
            for job in jobs:
                job.result()
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
    threshold_scope: str = "matrix",
) -> list[dict]:
    """Metrics of every config on every OOD set: one dict per (config, OOD set) with the
    config's four percentages, ``ood_set`` and ``fpr95, auroc, aupr_in, aupr_out``
    (fractions in [0, 1], :func:`opnp.metrics.evaluate`). A single OOD array is named
    "ood". ``device``, ``threshold_scope``: as in :func:`score_pruning_grid`."""
    from opnp.metrics import evaluate

    if not isinstance(ood_features, Mapping):
        ood_features = {"ood": ood_features}
    plan = GridPlan(weight, bias, param_sensitivity, neuron_sensitivity, configs, threshold_scope)
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
