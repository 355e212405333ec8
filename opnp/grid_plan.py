"""The plan of a grid of OPNP pruning configs (:func:`opnp.grid.score_pruning_grid`):
the weight and neuron *groups* (entries kept or pruned together by every config), the
masked weight block of each (weight group, neuron group) pair, the order in which the
configs are visited and the build order of the energy shortcut's products. What the
groups are and why: :mod:`opnp.grid_kernels`' docstring, steps 1, 3 and 5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from opnp._validation import check_linear, check_percentage_pair
from opnp.pruning import check_sensitivities, percentile, scope_axis

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


def build_chain(sets: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
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
        s, n = check_sensitivities(param_sensitivity, neuron_sensitivity)
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
        self.neuron_cols = [
            np.nonzero(self.neuron_axis.labels == g)[0] for g in range(len(self.neuron_axis.codes))
        ]
        self.stacks = [self._pair_blocks(cols, g_n) for g_n, cols in enumerate(self.neuron_cols)]
        self.pair_keys = [key for st in self.stacks for key in st[0] + st[2]]
        self.order = self._visit_order()
        # For each neuron group, its nonempty (weight group, pair key)s.
        self.pairs_of_neuron: list[list[tuple[int, tuple[int, int]]]] = [
            [(key[0], key) for key in self.pair_keys if key[1] == g_n]
            for g_n in range(len(self.neuron_cols))
        ]
        self.bias_range = float(self.bias.max() - self.bias.min())
        self._plan_energy_shortcut()

    def _pair_blocks(self, cols: np.ndarray, g_n: int) -> tuple[list, np.ndarray | None, list, Any]:
        """Masked weight blocks of every nonempty (weight group, neuron group ``g_n``)
        pair, stacked so that one product gives all of them: the dense groups as one
        (|cols|, k * C) matrix (h_n @ it), the sparse ones as one CSR (k * C, |cols|)
        (it @ h_n^T). Returns (dense keys, dense matrix, sparse keys, CSR)."""
        from scipy import sparse

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
        return (
            dense_keys,
            np.ascontiguousarray(np.hstack(dense)) if dense else None,
            sparse_keys,
            sparse.vstack(sparse_blocks, format="csr") if sparse_blocks else None,
        )

    def _visit_order(
        self,
    ) -> list[tuple[tuple[float, float], list[tuple[tuple[float, float], list[int]]]]]:
        """Neuron cells, and within each the weight cells of its configs (with the
        configs' indices), both in serpentine order."""
        order = []
        by_neuron: dict[tuple[float, float], dict[tuple[float, float], list[int]]] = {}
        for i, (wl, wh, nl, nh) in enumerate(self.values):
            by_neuron.setdefault((nl, nh), {}).setdefault((wl, wh), []).append(i)
        for ncell in _serpentine(list(by_neuron)):
            wcells = by_neuron[ncell]
            order.append((ncell, [(w, wcells[w]) for w in _serpentine(list(wcells))]))
        return order

    def _plan_energy_shortcut(self) -> None:
        """Energy shortcut (module docstring of opnp.grid_kernels, step 5): with no
        weight group in both a low and a high tail, the kept groups of (wl, wh) are A(wl)
        (the middle and the low-tail groups wl keeps) plus B(wh) (the high-tail groups wh
        keeps)."""
        wa = self.weight_axis
        low, high = (wa.codes & wa.low_mask) != 0, (wa.codes & ~wa.low_mask) != 0
        self.separable = not np.any(low & high)
        lows = sorted({v[0] for v in self.values})
        highs = sorted({v[1] for v in self.values})
        self.a_index = {v: i for i, v in enumerate(lows)}
        self.b_index = {v: i for i, v in enumerate(highs)}
        self.a_sets = np.array([wa.kept(v, 0) & ~high for v in lows])
        self.b_sets = np.array([wa.kept(0, v) & high for v in highs])
        self.a_chain = build_chain(self.a_sets)
        self.b_chain = build_chain(self.b_sets)

    @property
    def n_pairs(self) -> int:
        return len(self.pair_keys)
