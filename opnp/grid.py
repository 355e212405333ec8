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

Memory: a few chunks of (rows, C) float64 per group pair, bounded by
``memory_budget`` and independent of N, plus the (n_configs, N) output (``out=`` may
be a memory-mapped array).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
        # Masked weight blocks, transposed (|cols|, C), for every nonempty pair.
        self.blocks: dict[tuple[int, int], Any] = {}
        from scipy import sparse

        for g_n, cols in enumerate(self.neuron_cols):
            labels = self.weight_axis.labels[:, cols]
            for g_w in np.unique(labels):
                member = labels == g_w
                block = np.where(member, self.weight[:, cols], 0.0).T
                if member.mean() <= SPARSE_DENSITY:
                    block = sparse.csc_matrix(block)  # h @ csc -> dense via sparse kernel
                else:
                    block = np.ascontiguousarray(block)
                self.blocks[(int(g_w), g_n)] = block
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

    @property
    def n_pairs(self) -> int:
        return len(self.blocks)


def _contributions(plan: GridPlan, h: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    out = {}
    for g_n, cols in enumerate(plan.neuron_cols):
        h_n = np.ascontiguousarray(h[:, cols])
        for (g_w, gn2), block in plan.blocks.items():
            if gn2 != g_n:
                continue
            if isinstance(block, np.ndarray):
                out[(g_w, g_n)] = h_n @ block
            else:
                out[(g_w, g_n)] = np.asarray((block.T @ h_n.T).T)
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
            for (g_w, gn2), zz in z.items():
                if gn2 == g_n:
                    if new[g_n]:
                        g[g_w] += zz
                    else:
                        g[g_w] -= zz
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
) -> np.ndarray:
    """Scores (n_configs, N) float64 of the OPNP-pruned layer for every config.

    ``score``: "energy" (T logsumexp(f'/T), the OPNP score), "msp" (opnp+msp) or
    "maxlogit". ``react_threshold``: clip the features at this value first (opnp+react;
    sensitivities stay those of the unclipped features, as the caller passes them).
    ``chunk_size`` (rows per chunk) defaults to what fits ``memory_budget`` bytes of
    group contributions. ``out``: optional preallocated (n_configs, N) array.
    ``plan``: a :class:`GridPlan` of the same arguments, to reuse across feature sets.
    """
    check_choice(score, "score", SCORES)
    t = check_positive(temperature, "temperature")
    if plan is None:
        plan = GridPlan(weight, bias, param_sensitivity, neuron_sensitivity, configs)
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
    n_wgroups = len(plan.weight_axis.codes)
    wkept = {w: plan.weight_axis.kept(*w) for _, cells in plan.order for w, _ in cells}
    nkept = {ncell: plan.neuron_axis.kept(*ncell) for ncell, _ in plan.order}
    # The traversal runs on blocks of ``block_rows`` rows so that the (rows, C) arrays it
    # updates stay in the CPU cache; the products above use the whole chunk.
    block_rows = max(1, min(int(chunk_size), (256 * 1024) // (8 * c)))
    g = np.empty((n_wgroups, block_rows, c))
    logits = np.empty((block_rows, c))
    tmp = np.empty((block_rows, c))
    res = np.empty(block_rows)
    for start, hc in iter_chunks(h, int(chunk_size), "features", dtype=np.float64):
        if react_threshold is not None:
            hc = np.minimum(hc, float(react_threshold))
        z = _contributions(plan, hc)
        for b0 in range(0, len(hc), block_rows):
            rows = min(block_rows, len(hc) - b0)
            zb = {key: v[b0 : b0 + rows] for key, v in z.items()}
            _traverse(
                plan, zb, wkept, nkept, score, t,
                g[:, :rows], logits[:rows], tmp[:rows], res[:rows],
                out, start + b0,
            )  # fmt: skip
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
) -> list[dict]:
    """Metrics of every config on every OOD set: one dict per (config, OOD set) with the
    config's four percentages, ``ood_set`` and ``fpr95, auroc, aupr_in, aupr_out``
    (fractions in [0, 1], :func:`opnp.metrics.evaluate`). A single OOD array is named
    "ood"."""
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
