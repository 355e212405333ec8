"""Paper-style tables from the Parquet results (Markdown, LaTeX, CSV).

Every table function takes the results frame of one model (schema in
``docs/architecture.md``: one row per method x params x OOD set x split x seed, metrics
in percent) and returns a :class:`pandas.DataFrame` laid out like the paper's table. Its
cells are :class:`SeedStat` (one metric over seeds) or :class:`CombinedCell` (several
metrics shown as ``"FPR95/AUROC"``); ``str(cell)`` is the formatted text, and
:func:`long_format` turns a table into plain numbers. :func:`write_table` writes the
Markdown, LaTeX and CSV files of a table.

Choices, each the same in every table:

- Rows: only ``split == "test"`` rows are used (``split=None`` keeps every split). The
  ablation tables keep only their own experiment's rows (``experiment="table3"`` etc.);
  the main tables and Table 4 use every row passed (``experiment=None``), so the caller
  filters, and an ambiguous input raises instead of being averaged: one cell must have
  at most one row per seed, and one method (or variant) one ``params`` value across all
  its rows (the paper uses the same hyperparameters for every test OOD set of a model).
- Seeds: a cell shows ``mean ± std`` over its seeds, std being the sample standard
  deviation (``ddof=1``); a single seed shows the plain value. The ``Average`` over OOD
  sets is taken per seed first (so every OOD set must have the same seeds), then
  ``mean ± std`` over seeds, so its std is the spread of the average, not a pooled one.
- Bold: the best mean of each metric (lowest FPR95, highest AUROC / AUPR / accuracy) in
  each column (main tables, Table 7) or in each row (Tables 4, 8, 9, whose columns are
  the compared methods), compared at the printed precision so that ties are all bold,
  and every value whose paired bootstrap interval of the difference to the best
  includes 0 (nothing inside the noise is called a win). The interval comes from the
  resampled metrics the result rows carry (``fpr95_resamples``, ``auroc_resamples``:
  the same resamples of the ID and OOD test samples for every method, see
  :mod:`opnp.bootstrap`), averaged over seeds (and over OOD sets for ``Average``) per
  resample; ``confidence`` of :func:`write_table`. Cells without resamples (rows scored
  without ``uncertainty``) fall back to ties only. A column or row with a single value
  is not bolded; Table 3 and the selected hyperparameters are never bolded.
  :func:`caption_notes` states this rule, n and what ± means for a caption.
- Missing data raises ``ValueError`` naming the method / variant and OOD set.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from opnp import bootstrap as _bootstrap
from opnp.io import atomic_write

#: Metric column -> (label shown in tables, which direction is better).
METRICS: dict[str, tuple[str, str]] = {
    "fpr95": ("FPR95", "lower"),
    "auroc": ("AUROC", "higher"),
    "aupr_in": ("AUPR-In", "higher"),
    "aupr_out": ("AUPR-Out", "higher"),
    "id_accuracy": ("ID Acc", "higher"),
}

#: Method name (registry / ``method`` column) -> label in the paper's tables.
METHOD_LABELS: dict[str, str] = {
    "msp": "MSP",
    "maxlogit": "MaxLogit",
    "energy": "Energy",
    "odin": "ODIN",
    "mahalanobis": "Mahalanobis",
    "react": "ReAct",
    "dice": "DICE",
    "dice+react": "DICE+ReAct",
    "ash": "ASH-S",
    "knn": "KNN",
    "gradnorm": "GradNorm",
    "line": "LINe",
    "opp": "OPP",
    "onp": "ONP",
    "opnp": "OPNP",
    "opp+react": "OPP+ReAct",
    "opnp+react": "OPNP+ReAct",
    "opnp+msp": "MSP+OPNP",
    "rpp": "RPP",
    "tpp": "TPP",
    "rnp": "RNP",
    "tnp": "TNP",
}

#: Labels of paper Tables 5 / 6 (each post-hoc score with and without OPNP); pass as
#: ``method_labels`` to :func:`main_results_table`.
WITH_WITHOUT_LABELS: dict[str, str] = {
    "msp": "MSP",
    "opnp+msp": "MSP+OPNP",
    "energy": "Energy",
    "opnp": "Energy+OPNP",
    "react": "ReAct",
    "opnp+react": "ReAct+OPNP",
}

#: Table 4's columns, in the paper's order.
TABLE4_METHODS = ("rpp", "tpp", "opp", "rnp", "tnp", "onp")

#: Table 7's rows: ``variant`` value -> label, in the paper's order.
LAYER_LABELS: dict[str, str] = {
    "layer1": "Layer1",
    "layer2": "Layer2",
    "layer3": "Layer3",
    "layer4": "Layer4",
    "global": "Global Threshold Pruning",
    "layerwise": "Layer-wise Pruning",
    "fc": "FC Layer",
    "none": "No pruning (Energy)",
}

#: Table 9's columns: neuron statistic (``variant``) -> label, in the paper's order.
STATISTIC_LABELS: dict[str, str] = {
    "mean": "Mean",
    "max": "Max",
    "min": "Min",
    "median": "Median",
    "norm": "Norm",
    "variance": "Variance",
}

#: The four OPNP pruning percentages, in the order Table 3 and Fig. 3 show them.
PERCENTAGE_NAMES = ("weight_high", "weight_low", "neuron_high", "neuron_low")

AVERAGE = "Average"
#: Label of Table 9's row of hyperparameters selected per statistic.
SELECTED_LABEL = "Selected"
NO_PRUNING = "none"
# Where a table's best values are compared (see the module docstring); write_table reads
# it from DataFrame.attrs, so a table built by hand defaults to per-column bolding.
_BOLD_ATTR = "opnp_bold"


# --------------------------------------------------------------------------------------
# Cells


@dataclass(frozen=True)
class SeedStat:
    """One metric of one table cell: its values over seeds (seeds ascending)."""

    metric: str
    values: tuple[float, ...]
    seeds: tuple[int, ...] = ()
    #: The metric of each bootstrap resample, mean over the seeds (None: not available);
    #: paired with every other cell of the same resamples (the bold rule).
    resamples: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        """Sample standard deviation (``ddof=1``) over seeds; NaN for a single seed."""
        return float(np.std(self.values, ddof=1)) if self.n > 1 else math.nan

    def text(self, decimals: int = 2, latex: bool = False) -> str:
        """``"12.34 ± 0.56"`` (``"12.34$\\pm$0.56"`` in LaTeX); one seed: ``"12.34"``."""
        mean = f"{self.mean:.{decimals}f}"
        if self.n == 1:
            return mean
        pm = "$\\pm$" if latex else " ± "
        return f"{mean}{pm}{self.std:.{decimals}f}"

    def __str__(self) -> str:
        return self.text()


@dataclass(frozen=True)
class CombinedCell:
    """Several metrics in one cell, ``"FPR95/AUROC"`` as in paper Tables 5-9."""

    parts: tuple[SeedStat, ...]

    def text(self, decimals: int = 2, latex: bool = False) -> str:
        return "/".join(p.text(decimals, latex) for p in self.parts)

    def __str__(self) -> str:
        return self.text()


def _stat_parts(cell: Any) -> tuple[SeedStat, ...]:
    if isinstance(cell, SeedStat):
        return (cell,)
    if isinstance(cell, CombinedCell):
        return cell.parts
    return ()


def long_format(table: pd.DataFrame) -> pd.DataFrame:
    """The numbers of a table, one row per (row, column, metric): columns ``row``,
    ``column`` (levels joined by a space), ``metric``, ``mean``, ``std`` (NaN for one
    seed), ``n_seeds``. Cells that are not statistics (labels, hyperparameters) are left
    out."""
    records = []
    for row_label, row in zip(
        _flat_labels(table.index), table.itertuples(index=False), strict=True
    ):
        for col_label, cell in zip(_flat_labels(table.columns), row, strict=True):
            for part in _stat_parts(cell):
                records.append(
                    {
                        "row": row_label,
                        "column": col_label,
                        "metric": part.metric,
                        "mean": part.mean,
                        "std": part.std,
                        "n_seeds": part.n,
                    }
                )
    return pd.DataFrame.from_records(
        records, columns=["row", "column", "metric", "mean", "std", "n_seeds"]
    )


# --------------------------------------------------------------------------------------
# Selecting and aggregating rows


def _check_frame(results: Any, name: str, columns: Iterable[str]) -> pd.DataFrame:
    if not isinstance(results, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(results).__name__}")
    missing = [c for c in columns if c not in results.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing} (has {list(results.columns)})")
    return results


def _select(
    results: Any,
    *,
    split: str | None,
    experiment: str | None,
    columns: Iterable[str],
    table: str,
) -> pd.DataFrame:
    """The rows of one split / experiment; ValueError when none are left or when they
    mix models (a table is about one model)."""
    frame = _check_frame(results, "results", ["seed", *columns])
    if split is not None:
        _check_frame(frame, "results", ["split"])
        frame = frame[frame["split"] == split]
    if experiment is not None:
        _check_frame(frame, "results", ["experiment"])
        frame = frame[frame["experiment"] == experiment]
    if frame.empty:
        found = {
            c: sorted(map(str, results[c].unique()))
            for c in ("split", "experiment")
            if c in results.columns
        }
        raise ValueError(
            f"{table}: results has no rows with split == {split!r} and experiment == "
            f"{experiment!r} (None = any); found {found}"
        )
    if "model" in frame.columns and frame["model"].nunique() > 1:
        raise ValueError(
            f"{table}: results mixes models {sorted(frame['model'].unique())}; "
            "pass the rows of one model"
        )
    return frame


def _check_names(values: Any, name: str) -> list[str]:
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a list of names, got {values!r}")
    values = list(values)
    if not values:
        raise ValueError(f"{name} is empty")
    bad = [v for v in values if not isinstance(v, str) or not v]
    if bad:
        raise ValueError(f"{name} must hold non-empty strings, got {bad}")
    dup = sorted({v for v in values if values.count(v) > 1})
    if dup:
        raise ValueError(f"{name} has duplicates {dup}")
    return values


def _check_metrics(metric: str | Sequence[str], name: str = "metric") -> tuple[str, ...]:
    metrics = (metric,) if isinstance(metric, str) else tuple(metric)
    if not metrics or any(m not in METRICS for m in metrics):
        raise ValueError(f"{name} must be one or more of {sorted(METRICS)}, got {metric!r}")
    return metrics


def _ood_order(frame: pd.DataFrame, ood_sets: Sequence[str] | None) -> list[str]:
    if ood_sets is not None:
        return _check_names(ood_sets, "ood_sets")
    names = [o for o in dict.fromkeys(frame["ood_set"]) if o != ""]
    if not names:
        raise ValueError("results has no rows about an OOD set (ood_set is '' everywhere)")
    return names


def _seed_stat(rows: pd.DataFrame, metric: str, what: str) -> SeedStat:
    """The values of one cell over seeds: exactly one finite value per seed."""
    if rows.empty:
        raise ValueError(f"no results for {what}")
    seeds = rows["seed"].to_numpy()
    unique, counts = np.unique(seeds, return_counts=True)
    if (counts > 1).any():
        seed = unique[counts > 1][0]
        params = (
            sorted(rows.loc[rows["seed"] == seed, "params"].astype(str).unique())
            if ("params" in rows.columns)
            else []
        )
        raise ValueError(
            f"{what} has {int(counts[counts > 1][0])} rows for seed {seed} (one expected): "
            f"filter the results by experiment / selected params first (params {params})"
        )
    values = rows[metric].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(
            f"{what} has NaN or infinite {metric} ({int((~np.isfinite(values)).sum())} rows)"
        )
    order = np.argsort(seeds, kind="stable")
    return SeedStat(
        metric,
        tuple(values[order].tolist()),
        tuple(int(s) for s in seeds[order]),
        _seed_resamples(rows, metric, what),
    )


def _seed_resamples(rows: pd.DataFrame, metric: str, what: str) -> np.ndarray | None:
    """Mean over the rows (seeds) of their resampled metric; None when a row has none."""
    column = f"{metric}_resamples"
    if column not in rows.columns:
        return None
    cells = list(rows[column])
    if any(c is None or (isinstance(c, float) and math.isnan(c)) for c in cells):
        return None
    arrays = [np.asarray(c, dtype=np.float64) for c in cells]
    lengths = sorted({len(a) for a in arrays})
    if len(lengths) > 1 or lengths[0] == 0:
        raise ValueError(
            f"{what}: {column} has {lengths} resamples across seeds; paired intervals need "
            "the same n_resamples in every row (rerun with one uncertainty setting)"
        )
    return np.mean(arrays, axis=0)


def _average_stat(stats: Mapping[str, SeedStat], what: str) -> SeedStat:
    """Mean over OOD sets for each seed, then the stat over seeds."""
    names = list(stats)
    first = stats[names[0]]
    for name in names[1:]:
        if stats[name].seeds != first.seeds:
            raise ValueError(
                f"{what}: the average over OOD sets needs the same seeds in each, but "
                f"{names[0]!r} has seeds {list(first.seeds)} and {name!r} has {list(stats[name].seeds)}"
            )
    per_seed = np.mean([stats[name].values for name in names], axis=0)
    resamples = [stats[name].resamples for name in names]
    paired = all(r is not None for r in resamples) and len({len(r) for r in resamples}) == 1
    return SeedStat(
        first.metric,
        tuple(per_seed.tolist()),
        first.seeds,
        np.mean(resamples, axis=0) if paired else None,
    )


def _check_single_params(rows: pd.DataFrame, what: str) -> None:
    if "params" in rows.columns and rows["params"].nunique() > 1:
        raise ValueError(
            f"{what} has rows with different params {sorted(rows['params'].astype(str).unique())}; "
            "a table shows one hyperparameter setting per method (filter the selected one)"
        )


def _require(frame: pd.DataFrame, key: str, entities: Sequence[str], kind: str) -> None:
    """ValueError naming the first of ``entities`` without rows (and those available)."""
    present = set(frame[key])
    for entity in entities:
        if entity not in present:
            available = [str(v) for v in dict.fromkeys(frame[key])]
            raise ValueError(f"no results for {kind} {entity!r} (available: {available})")


def _entity_cells(
    frame: pd.DataFrame,
    key: str,
    entities: Sequence[str],
    ood_sets: Sequence[str],
    metrics: tuple[str, ...],
    average: bool,
    kind: str,
) -> dict[str, dict[str, list[SeedStat]]]:
    """cells[entity][ood set or "Average"] = one SeedStat per metric, where entity is a
    value of column ``key`` (a method or a variant)."""
    _require(frame, key, entities, kind)
    cells: dict[str, dict[str, list[SeedStat]]] = {}
    for entity in entities:
        rows = frame[frame[key] == entity]
        _check_single_params(rows, f"{kind} {entity!r}")
        per_ood: dict[str, list[SeedStat]] = {}
        for ood in ood_sets:
            ood_rows = rows[rows["ood_set"] == ood]
            if ood_rows.empty:
                have = [o for o in dict.fromkeys(rows["ood_set"]) if o != ""]
                raise ValueError(
                    f"no results for {kind} {entity!r} on OOD set {ood!r} (it has {have})"
                )
            per_ood[ood] = [
                _seed_stat(ood_rows, m, f"{kind} {entity!r} on OOD set {ood!r}") for m in metrics
            ]
        if average:
            per_ood[AVERAGE] = [
                _average_stat(
                    {ood: per_ood[ood][i] for ood in ood_sets}, f"{kind} {entity!r}, {metrics[i]}"
                )
                for i in range(len(metrics))
            ]
        cells[entity] = per_ood
    return cells


def _cell(stats: list[SeedStat]) -> SeedStat | CombinedCell:
    return stats[0] if len(stats) == 1 else CombinedCell(tuple(stats))


def _labels(names: Sequence[str], labels: Mapping[str, str] | None, defaults: Mapping[str, str]):
    mapping = {**defaults, **(labels or {})}
    out = [mapping.get(n, n) for n in names]
    dup = sorted({label for label in out if out.count(label) > 1})
    if dup:
        raise ValueError(f"several rows/columns would share the labels {dup}; pass distinct labels")
    return out


def _entities_by_ood_table(
    cells: dict[str, dict[str, list[SeedStat]]],
    entities: Sequence[str],
    columns: Sequence[str],
    entity_labels: Sequence[str],
    *,
    entities_as_rows: bool,
    entity_axis_name: str,
    ood_axis_name: str,
) -> pd.DataFrame:
    """A table of one (possibly combined) cell per entity and OOD set."""
    grid = [[_cell(cells[e][c]) for c in columns] for e in entities]
    table = pd.DataFrame(
        grid,
        index=pd.Index(entity_labels, name=entity_axis_name),
        columns=pd.Index(list(columns), name=ood_axis_name),
        dtype=object,
    )
    if not entities_as_rows:
        table = table.T
        table.index.name, table.columns.name = ood_axis_name, entity_axis_name
    return table


# --------------------------------------------------------------------------------------
# The paper's tables


def main_results_table(
    results: pd.DataFrame,
    methods: Sequence[str],
    ood_sets: Sequence[str] | None = None,
    method_labels: Mapping[str, str] | None = None,
    *,
    combined_cells: bool = False,
    metrics: Sequence[str] = ("fpr95", "auroc"),
    average: bool = True,
    split: str | None = "test",
    experiment: str | None = None,
) -> pd.DataFrame:
    """Paper Tables 1, 2 (ImageNet) and 5, 6 (CIFAR, ``combined_cells=True``).

    Rows: ``methods`` in the given order, labelled by ``method_labels`` over
    :data:`METHOD_LABELS` (unknown names are shown as they are). Columns: for each OOD set
    (``ood_sets`` in the given order; default: order of first appearance) and then
    ``"Average"`` (mean over OOD sets per seed, then mean ± std over seeds), one column
    per metric (MultiIndex ``("SUN", "FPR95")``) or, with ``combined_cells``, one
    ``"FPR95/AUROC"`` column per OOD set. Bold: best method per column.
    """
    metrics_ = _check_metrics(metrics, "metrics")
    methods = _check_names(methods, "methods")
    frame = _select(
        results,
        split=split,
        experiment=experiment,
        columns=["method", "ood_set", *metrics_],
        table="main_results_table",
    )
    _require(frame, "method", methods, "method")
    oods = _ood_order(frame[frame["method"].isin(methods)], ood_sets)
    cells = _entity_cells(frame, "method", methods, oods, metrics_, average, "method")
    columns = [*oods, AVERAGE] if average else oods
    labels = _labels(methods, method_labels, METHOD_LABELS)
    if combined_cells:
        table = _entities_by_ood_table(
            cells,
            methods,
            columns,
            labels,
            entities_as_rows=True,
            entity_axis_name="Method",
            ood_axis_name="OOD set",
        )
    else:
        tuples = [(c, METRICS[m][0]) for c in columns for m in metrics_]
        grid = [[cells[e][c][i] for c in columns for i in range(len(metrics_))] for e in methods]
        table = pd.DataFrame(
            grid,
            index=pd.Index(labels, name="Method"),
            columns=pd.MultiIndex.from_tuples(tuples, names=["OOD set", "Metric"]),
            dtype=object,
        )
    table.attrs[_BOLD_ATTR] = "columns"
    return table


def _params_dict(text: Any, what: str) -> dict:
    try:
        params = json.loads(text) if isinstance(text, str) and text else {}
    except json.JSONDecodeError as err:
        raise ValueError(f"{what}: params is not valid JSON: {text!r} ({err})") from err
    if not isinstance(params, dict):
        raise ValueError(f"{what}: params must be a JSON object, got {text!r}")
    return params


def _number(value: Any) -> str:
    return (
        f"{value:g}"
        if isinstance(value, int | float) and not isinstance(value, bool)
        else str(value)
    )


def pruned_accuracy_table(
    results: pd.DataFrame, *, split: str | None = "test", experiment: str | None = "table3"
) -> pd.DataFrame:
    """Paper Table 3: ID accuracy of the OPNP-pruned FC layer, one percentage at a time.

    One row ``"ID Acc"`` (``id_accuracy``, mean ± std over seeds); columns
    ``("none", "")`` for the unpruned layer (params with every percentage 0, or empty),
    then ``(percentage name, value)`` for each single nonzero percentage in the params,
    names in the order weight_high, weight_low, neuron_high, neuron_low (others after, by
    appearance), values ascending. Params with several nonzero percentages raise.
    """
    frame = _select(
        results,
        split=split,
        experiment=experiment,
        columns=["params", "id_accuracy"],
        table="pruned_accuracy_table",
    )
    keys = []
    for text in frame["params"]:
        nonzero = {k: v for k, v in _params_dict(text, "pruned_accuracy_table").items() if v}
        if len(nonzero) > 1:
            raise ValueError(
                f"pruned_accuracy_table: params {text!r} has several nonzero percentages "
                f"{sorted(nonzero)}; Table 3 varies one at a time"
            )
        if nonzero:
            ((name, value),) = nonzero.items()
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(
                    f"pruned_accuracy_table: percentage {name}={value!r} is not a number"
                )
            keys.append((name, float(value)))
        else:
            keys.append((NO_PRUNING, 0.0))
    frame = frame.assign(_key=keys)
    if (NO_PRUNING, 0.0) not in set(keys):
        raise ValueError("pruned_accuracy_table: no row without pruning (params {} or all 0)")
    names = [n for n in dict.fromkeys(k[0] for k in keys) if n != NO_PRUNING]
    names.sort(
        key=lambda n: PERCENTAGE_NAMES.index(n) if n in PERCENTAGE_NAMES else len(PERCENTAGE_NAMES)
    )
    ordered = [(NO_PRUNING, 0.0)] + [
        k for name in names for k in sorted({k for k in keys if k[0] == name}, key=lambda k: k[1])
    ]
    row = []
    for key in ordered:
        what = (
            "pruned_accuracy_table, no pruning"
            if key[0] == NO_PRUNING
            else (f"pruned_accuracy_table, {key[0]}={key[1]:g}")
        )
        rows = frame[frame["_key"] == key]
        row.append(_seed_stat(rows, "id_accuracy", what))
    columns = pd.MultiIndex.from_tuples(
        [(NO_PRUNING, "") if n == NO_PRUNING else (n, f"{v:g}") for n, v in ordered],
        names=["Percentage", "Value"],
    )
    table = pd.DataFrame(
        [row],
        index=pd.Index([METRICS["id_accuracy"][0]], name="Percentage"),
        columns=columns,
        dtype=object,
    )
    table.attrs[_BOLD_ATTR] = None
    return table


def pruning_methods_table(
    results: pd.DataFrame,
    ood_sets: Sequence[str],
    *,
    methods: Sequence[str] = TABLE4_METHODS,
    metric: str | Sequence[str] = "fpr95",
    average: bool = True,
    method_labels: Mapping[str, str] | None = None,
    split: str | None = "test",
    experiment: str | None = None,
) -> pd.DataFrame:
    """Paper Table 4: random (RPP, RNP), magnitude (TPP, TNP) and sensitivity-guided
    (OPP, ONP) pruning. Rows: ``ood_sets`` then ``"Average"``; columns: ``methods``;
    cells: ``metric`` (FPR95 as in the paper; a pair such as ``("fpr95", "auroc")`` gives
    ``"FPR95/AUROC"`` cells), mean ± std over seeds (random methods run several). Bold:
    best method per row."""
    metrics_ = _check_metrics(metric)
    methods = _check_names(methods, "methods")
    oods = _check_names(ood_sets, "ood_sets")
    frame = _select(
        results,
        split=split,
        experiment=experiment,
        columns=["method", "ood_set", *metrics_],
        table="pruning_methods_table",
    )
    cells = _entity_cells(frame, "method", methods, oods, metrics_, average, "method")
    table = _entities_by_ood_table(
        cells,
        methods,
        [*oods, AVERAGE] if average else oods,
        _labels(methods, method_labels, METHOD_LABELS),
        entities_as_rows=False,
        entity_axis_name="Method",
        ood_axis_name="OOD set",
    )
    table.attrs[_BOLD_ATTR] = "rows"
    return table


def onp_low_side_note(statistic: str, reduction: str) -> str:
    """Table 4's caption note: with the "mean" neuron statistic and the per-sample
    sensitivity (Eq. 6), s_j = mean_k |h_j(x_k)| / C because the softmax sums to 1, so
    ONP's low side prunes the same neurons as TNP (docs/methods.md, "ONP's low side is
    TNP"); "" for settings where that does not hold in general."""
    if statistic == "mean" and reduction == "per_sample":
        return (
            " With the mean neuron statistic, ONP's neuron sensitivity is the mean |activation|"
            " / C (the softmax sums to 1), so its low side prunes exactly TNP's neurons: any"
            " difference between ONP and TNP comes from ONP's high side (neuron_high)."
        )
    return ""


def _variants_present(frame: pd.DataFrame, order_key) -> list[str]:
    present = [v for v in dict.fromkeys(frame["variant"].astype(str))]
    first_seen = {v: i for i, v in enumerate(present)}
    return sorted(present, key=lambda v: (*order_key(v), first_seen[v]))


def _variant_table(
    results: pd.DataFrame,
    ood_sets: Sequence[str],
    variants: Sequence[str] | None,
    *,
    default_order,
    labels: Mapping[str, str],
    metrics: Sequence[str],
    average: bool,
    variants_as_rows: bool,
    variant_axis_name: str,
    split: str | None,
    experiment: str | None,
    table_name: str,
    bold: str,
) -> pd.DataFrame:
    metrics_ = _check_metrics(metrics, "metrics")
    oods = _check_names(ood_sets, "ood_sets")
    frame = _select(
        results,
        split=split,
        experiment=experiment,
        columns=["variant", "ood_set", *metrics_],
        table=table_name,
    )
    frame = frame.assign(variant=frame["variant"].astype(str))
    names = default_order(frame) if variants is None else _check_names(variants, "variants")
    cells = _entity_cells(frame, "variant", names, oods, metrics_, average, f"{table_name} variant")
    table = _entities_by_ood_table(
        cells,
        names,
        [*oods, AVERAGE] if average else oods,
        _labels(names, None, labels),
        entities_as_rows=variants_as_rows,
        entity_axis_name=variant_axis_name,
        ood_axis_name="OOD set",
    )
    table.attrs[_BOLD_ATTR] = bold
    return table


def _layer_order(variant: str) -> tuple[int, float]:
    match = re.fullmatch(r"(?:layer|stage)(\d+)", variant)
    if match:
        return (0, int(match.group(1)))
    fixed = {"none": -1, "global": 2, "layerwise": 3, "fc": 4}
    return (fixed.get(variant, 1), 0)


def layer_ablation_table(
    results: pd.DataFrame,
    ood_sets: Sequence[str],
    *,
    variants: Sequence[str] | None = None,
    metrics: Sequence[str] = ("fpr95", "auroc"),
    average: bool = False,
    split: str | None = "test",
    experiment: str | None = "table7",
) -> pd.DataFrame:
    """Paper Table 7: OPNP inside the network. Rows: the ``variant`` values ``none`` (the
    unpruned network), ``layer1`` .. ``layer4`` (last conv of each stage; ``stage1`` ..
    for the small CNN), ``global`` (one threshold over every conv and the FC layer),
    ``layerwise`` (the same percentages in every one of them), ``fc`` (the main OPNP
    result), labelled as in the paper (:data:`LAYER_LABELS`); default ``variants=None``:
    those present, no pruning first, then layers by number, unknown names (by
    appearance), global, layer-wise, FC. An explicit list must all be present. Columns:
    ``ood_sets`` (no average in the paper), ``"FPR95/AUROC"`` cells, then ``ID Acc``: the
    pruned network's ID test accuracy (``id_accuracy``, required). Bold: best row per
    column."""
    table = _variant_table(
        results,
        ood_sets,
        variants,
        default_order=lambda f: _variants_present(f, _layer_order),
        labels=LAYER_LABELS,
        metrics=metrics,
        average=average,
        variants_as_rows=True,
        variant_axis_name="Pruned layer",
        split=split,
        experiment=experiment,
        table_name="layer_ablation_table",
        bold="columns",
    )
    frame = _select(
        results,
        split=split,
        experiment=experiment,
        columns=["variant", "id_accuracy"],
        table="layer_ablation_table",
    )
    frame = frame.assign(variant=frame["variant"].astype(str))
    variant_of = {LAYER_LABELS.get(v, v): v for v in dict.fromkeys(frame["variant"])}
    accuracy = []
    for label in table.index:
        rows = frame[frame["variant"] == variant_of[label]]
        per_seed = rows.groupby("seed", sort=True)["id_accuracy"].first()
        if per_seed.isna().any():
            raise ValueError(
                f"layer_ablation_table: variant {variant_of[label]!r} has no id_accuracy "
                "(the pruned network's ID accuracy); rerun the layer_ablation rule"
            )
        accuracy.append(
            SeedStat("id_accuracy", tuple(map(float, per_seed)), tuple(map(int, per_seed.index)))
        )
    table[METRICS["id_accuracy"][0]] = accuracy
    return table


def layer_ablation_caption(results: pd.DataFrame, model: str) -> str:
    """Table 7's caption from its rows: which weights each row prunes and with which
    percentages (OPNP's validation-selected ones, read from the ``fc`` row's params)."""
    frame = _check_frame(results, "results", ["variant", "params"])
    params = {
        str(v): _params_dict(p, f"table7 variant {v!r}")
        for v, p in zip(frame["variant"], frame["params"], strict=True)
    }
    if "fc" not in params:
        raise ValueError(f"layer_ablation_caption: no 'fc' row (have {sorted(params)})")
    fc = params["fc"]
    pct = {k: _number(fc.get(k, 0)) for k in PERCENTAGE_NAMES}
    in_network = next((p for v, p in params.items() if v in ("global", "layerwise")), {})
    n_layers = len(in_network.get("parameters", [])) - 1
    subset = in_network.get("sensitivity", "a training subset")
    nothing = ""
    if float(fc.get("weight_low", 0)) == 0 and float(fc.get("weight_high", 0)) == 0:
        nothing = " (the selection prunes no weight, so the in-network rows prune nothing)"
    return (
        f"OPNP applied in different layers ({model}, paper Table 7), cells FPR95/AUROC, "
        "and the pruned network's ID accuracy (%). Every row prunes with OPNP's "
        f"validation-selected percentages: the {pct['weight_low']} % least and "
        f"{pct['weight_high']} % most sensitive weights{nothing}. Layer rows: those of one "
        "stage's "
        "last convolution only. Global Threshold Pruning: one threshold pair over the "
        f"weights of all {n_layers} convolutions and the FC layer together; Layer-wise "
        "Pruning: the same percentages in each of them with its own thresholds (in-network "
        f"sensitivities from {subset}). FC Layer: the main OPNP result, the FC layer "
        f"with the selected weight masks and {pct['neuron_low']} % / {pct['neuron_high']} % "
        "least / most sensitive neurons pruned, sensitivities from the full training set. "
        "No pruning: the unpruned network (Energy)."
    )


def _fraction_value(variant: str) -> float:
    try:
        return float(variant.rstrip("%").strip())
    except ValueError as err:
        raise ValueError(
            f"subset_table: variant {variant!r} is not a percentage such as '5%'"
        ) from err


def subset_table(
    results: pd.DataFrame,
    ood_sets: Sequence[str],
    *,
    fractions: Sequence[str] | None = None,
    metrics: Sequence[str] = ("fpr95", "auroc"),
    average: bool = False,
    split: str | None = "test",
    experiment: str | None = "table8",
) -> pd.DataFrame:
    """Paper Table 8: OPP with sensitivities estimated on a fraction of the training set.

    Columns: ``"w/o pruning"`` (rows with ``variant == "none"``, the Energy baseline)
    then each fraction (``variant`` such as ``"1%"``; default ``fractions=None``: those
    present, ascending); rows: ``ood_sets``; ``"FPR95/AUROC"`` cells, mean ± std over
    the subset seeds. Bold: best column per row."""

    def order(frame: pd.DataFrame) -> list[str]:
        found = [v for v in dict.fromkeys(frame["variant"]) if v != NO_PRUNING]
        return [NO_PRUNING, *sorted(found, key=_fraction_value)]

    names = None
    if fractions is not None:
        fractions = _check_names(fractions, "fractions")
        for f in fractions:
            _fraction_value(f)
        names = [NO_PRUNING, *fractions]
    return _variant_table(
        results,
        ood_sets,
        names,
        default_order=order,
        labels={NO_PRUNING: "w/o pruning"},
        metrics=metrics,
        average=average,
        variants_as_rows=False,
        variant_axis_name="Sampling ratio",
        split=split,
        experiment=experiment,
        table_name="subset_table",
        bold="rows",
    )


def statistic_table(
    results: pd.DataFrame,
    ood_sets: Sequence[str],
    *,
    statistics: Sequence[str] | None = None,
    metrics: Sequence[str] = ("fpr95", "auroc"),
    average: bool = False,
    split: str | None = "test",
    experiment: str | None = "table9",
    show_selected: bool = True,
) -> pd.DataFrame:
    """Paper Table 9: ONP with each neuron statistic. Columns: Mean, Max, Min, Median,
    Norm, Variance (``variant`` mean .. variance; default ``statistics=None``: those
    present in this order, unknown ones after); rows: ``ood_sets``; ``"FPR95/AUROC"``
    cells. Bold: best statistic per row. With ``show_selected`` a last row
    :data:`SELECTED_LABEL` gives each statistic's hyperparameters (``params`` of its
    rows, ``"key=value, ..."``): they are selected per statistic, whose scales differ."""
    known = list(STATISTIC_LABELS)
    frame = _select(
        results,
        split=split,
        experiment=experiment,
        columns=["variant", "ood_set", *(["params"] if show_selected else [])],
        table="statistic_table",
    )
    frame = frame.assign(variant=frame["variant"].astype(str))
    if statistics is None:
        statistics = _variants_present(
            frame, lambda v: (known.index(v) if v in known else len(known),)
        )
    table = _variant_table(
        results,
        ood_sets,
        statistics,
        default_order=None,
        labels=STATISTIC_LABELS,
        metrics=metrics,
        average=average,
        variants_as_rows=False,
        variant_axis_name="Statistic",
        split=split,
        experiment=experiment,
        table_name="statistic_table",
        bold="rows",
    )
    if show_selected:
        texts = []
        for name in statistics:
            params = frame.loc[frame["variant"] == name, "params"]
            what = f"statistic_table variant {name!r}"
            texts.append(_params_text(_params_dict(params.iloc[0], what)))
        table.loc[SELECTED_LABEL] = texts
    return table


def _params_text(params: Mapping[str, Any]) -> str:
    """``"key=value, ..."`` (keys sorted), ``"-"`` for none."""
    return ", ".join(f"{k}={_number(params[k])}" for k in sorted(params)) or "-"


#: Where a ReAct combination's clip percentile came from (:func:`opnp.pipeline.config.
#: react_percentile_source`) -> the note after its value in the selected-hyperparameters
#: table.
REACT_PERCENTILE_SOURCES: dict[str, str] = {
    "selected": "ReAct's selection",
    "fixed": "fixed in config",
    "grid": "searched jointly",
}


def selected_params_table(
    selected: pd.DataFrame,
    method_labels: Mapping[str, str] | None = None,
    react_sources: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """The hyperparameters chosen on the validation split, one row per (model, method)
    in the input order. Input columns: ``model, method, params`` (JSON),
    ``val_fpr95, val_auroc`` (mean over validation OOD sets and seeds). Output: index
    ``Method`` (label), columns ``Model``, ``Hyperparameters`` (``"key=value, ..."``,
    keys sorted, ``"-"`` for none), ``Val FPR95``, ``Val AUROC``. Not bolded.
    ``react_sources``: method -> where its ``react_percentile`` came from (a key of
    :data:`REACT_PERCENTILE_SOURCES`), written after the value, e.g.
    ``react_percentile=80 (ReAct's selection)``."""
    react_sources = dict(react_sources or {})
    for method, source in react_sources.items():
        if source not in REACT_PERCENTILE_SOURCES:
            raise ValueError(
                f"react_sources[{method!r}] = {source!r}; allowed: "
                f"{sorted(REACT_PERCENTILE_SOURCES)}"
            )
    frame = _check_frame(
        selected, "selected", ["model", "method", "params", "val_fpr95", "val_auroc"]
    )
    if frame.empty:
        raise ValueError("selected has no rows")
    dup = frame.duplicated(["model", "method"])
    if dup.any():
        first = frame.loc[dup].iloc[0]
        raise ValueError(
            f"selected has several rows for model {first['model']!r} method {first['method']!r}"
        )
    rows = []
    for record in frame.itertuples(index=False):
        what = f"selected, model {record.model!r} method {record.method!r}"
        params = _params_dict(record.params, what)
        values = {k: _number(params[k]) for k in sorted(params)}
        if "react_percentile" in values and record.method in react_sources:
            note = REACT_PERCENTILE_SOURCES[react_sources[record.method]]
            values["react_percentile"] += f" ({note})"
        text = ", ".join(f"{k}={v}" for k, v in values.items()) or "-"
        stats = []
        for column, metric in (("val_fpr95", "fpr95"), ("val_auroc", "auroc")):
            value = float(getattr(record, column))
            if not math.isfinite(value):
                raise ValueError(f"{what}: {column} is {value}")
            stats.append(SeedStat(metric, (value,)))
        rows.append([str(record.model), text, *stats])
    labels = {**METHOD_LABELS, **(method_labels or {})}
    table = pd.DataFrame(
        rows,
        index=pd.Index([labels.get(m, m) for m in frame["method"]], name="Method"),
        columns=["Model", "Hyperparameters", "Val FPR95", "Val AUROC"],
        dtype=object,
    )
    table.attrs[_BOLD_ATTR] = None
    return table


# --------------------------------------------------------------------------------------
# Captions: what a table's numbers rest on, from its rows (never hard-coded)

#: Key of Table 8's ``params`` holding the number of training images of the subset.
SUBSET_SAMPLES_KEY = "sensitivity_samples"


def _count(n: int) -> str:
    return f"{int(n):,}"


def sample_sizes_text(results: pd.DataFrame, ood_sets: Sequence[str] | None = None) -> str:
    """``"n = 540 ID test images; OOD test images per set: A 400, B 300."`` from the
    ``n_id`` / ``n_ood`` columns of the rows about an OOD set (``ood_sets``: those, in
    this order; default: every set, by appearance); ``"n = 540 ID test images."`` for
    rows about no OOD set (Table 3's accuracy)."""
    frame = _check_frame(results, "results", ["ood_set", "n_id", "n_ood"])
    if frame.empty:
        raise ValueError("results has no rows to state n from")
    if ood_sets is None and (frame["ood_set"] == "").all():
        n_id = sorted({int(n) for n in frame["n_id"]})
        return f"n = {' or '.join(_count(n) for n in n_id)} ID test images."
    frame = frame[frame["ood_set"] != ""]
    names = _ood_order(frame, ood_sets)
    frame = frame[frame["ood_set"].isin(names)]
    if frame.empty:
        raise ValueError(f"results has no rows about the OOD sets {names}")
    n_id = sorted({int(n) for n in frame["n_id"]})
    id_text = " or ".join(_count(n) for n in n_id)
    per_set = []
    for name in names:
        sizes = sorted({int(n) for n in frame.loc[frame["ood_set"] == name, "n_ood"]})
        if not sizes:
            raise ValueError(f"results has no rows about OOD set {name!r}")
        per_set.append((name, " or ".join(_count(n) for n in sizes)))
    if len({size for _, size in per_set}) == 1:
        sets = "1 set" if len(per_set) == 1 else f"{len(per_set)} sets"
        ood_text = f"{per_set[0][1]} OOD test images per set ({sets})"
    else:
        ood_text = "OOD test images per set: " + ", ".join(f"{n} {s}" for n, s in per_set)
    return f"n = {id_text} ID test images; {ood_text}."


def _entity_seed_counts(table: pd.DataFrame) -> dict[str, int]:
    """Compared entity (method / variant label) -> its number of seeds: entities are the
    rows of a table bolded per column, the columns of one bolded per row."""
    by_columns = table.attrs.get(_BOLD_ATTR, "columns") != "rows"
    labels = _flat_labels(table.index if by_columns else table.columns)
    counts: dict[str, int] = {}
    for r in range(table.shape[0]):
        for c in range(table.shape[1]):
            label = labels[r if by_columns else c]
            for part in _stat_parts(table.iat[r, c]):
                counts[label] = max(counts.get(label, 0), part.n)
    return counts


def seeds_text(table: pd.DataFrame) -> str:
    """What the cells are over seeds and what ± means, from the cells themselves."""
    counts = _entity_seed_counts(table)
    if not counts:
        return ""
    values = sorted(set(counts.values()))
    if values == [1]:
        return "One seed per cell (no ±)."
    pm = "± is the sample standard deviation (ddof = 1) over seeds"
    if len(values) == 1:
        return f"Cells are mean ± std over {values[0]} seeds; {pm}."
    common = max(values, key=lambda k: (list(counts.values()).count(k), -k))
    others = [
        f"{k} for {', '.join(label for label, n in counts.items() if n == k)}"
        for k in values
        if k != common
    ]
    return f"Seeds per cell: {common}, {'; '.join(others)}; {pm} (a single seed shows no ±)."


def bold_rule_text(table: pd.DataFrame, confidence: float = _bootstrap.DEFAULT_CONFIDENCE) -> str:
    """The bold rule of :func:`write_table` for this table, in words: per column or row,
    with the confidence and number of resamples of its paired intervals."""
    axis = table.attrs.get(_BOLD_ATTR, "columns")
    if axis is None:
        return ""
    where = "column" if axis == "columns" else "row"
    parts = [p for cell in table.to_numpy().ravel() for p in _stat_parts(cell)]
    lengths = sorted({len(p.resamples) for p in parts if p.resamples is not None})
    if not lengths:
        return f"Bold: the best value in each {where} (ties at the printed precision)."
    resamples = " or ".join(_count(n) for n in lengths)
    return (
        f"Bold: the best value in each {where} and every value whose paired "
        f"{float(confidence):g} % bootstrap interval of the difference to the best includes 0 "
        f"({resamples} resamples of the ID and OOD test images, the same for every cell; "
        "the intervals cover test-sample noise, not seeds)."
    )


def caption_notes(
    table: pd.DataFrame,
    results: pd.DataFrame,
    *,
    confidence: float = _bootstrap.DEFAULT_CONFIDENCE,
    ood_sets: Sequence[str] | None = None,
) -> str:
    """The sentences every comparison table's caption carries: n (ID and OOD test images,
    from ``results``, the rows the table was built from), seeds and what ± means, and
    the bold rule."""
    texts = [sample_sizes_text(results, ood_sets), seeds_text(table)]
    texts.append(bold_rule_text(table, confidence))
    return " ".join(t for t in texts if t)


def subset_sizes(
    results: pd.DataFrame, *, split: str | None = "test", experiment: str | None = "table8"
) -> dict[str, int]:
    """Table 8's subset sizes: fraction variant (``"5%"``) -> training images, from the
    ``params`` key :data:`SUBSET_SAMPLES_KEY` of its rows, fractions ascending."""
    frame = _select(
        results,
        split=split,
        experiment=experiment,
        columns=["variant", "params"],
        table="subset_sizes",
    )
    frame = frame[frame["variant"].astype(str) != NO_PRUNING]
    sizes: dict[str, int] = {}
    for variant, text in zip(frame["variant"].astype(str), frame["params"], strict=True):
        params = _params_dict(text, f"subset_sizes variant {variant!r}")
        if SUBSET_SAMPLES_KEY not in params:
            raise ValueError(
                f"subset_sizes: the params {text!r} of variant {variant!r} lack "
                f"{SUBSET_SAMPLES_KEY!r} (the number of training images of the subset)"
            )
        n = int(params[SUBSET_SAMPLES_KEY])
        if sizes.setdefault(variant, n) != n:
            raise ValueError(
                f"subset_sizes: variant {variant!r} has subsets of {sizes[variant]} and {n} images"
            )
    if not sizes:
        raise ValueError("subset_sizes: no rows with a training fraction")
    return {v: sizes[v] for v in sorted(sizes, key=_fraction_value)}


def subset_sizes_text(results: pd.DataFrame, **select) -> str:
    """``"Subset sizes: 1% = 9, 5% = 45, 100% = 898 training images."``"""
    sizes = subset_sizes(results, **select)
    listed = ", ".join(f"{v} = {_count(n)}" for v, n in sizes.items())
    return f"Subset sizes: {listed} training images (the same size for every seed)."


# --------------------------------------------------------------------------------------
# Writing


def _flat_labels(index: pd.Index) -> list[str]:
    """Index entries as strings; MultiIndex levels joined by a space, empty levels dropped."""
    if isinstance(index, pd.MultiIndex):
        return [" ".join(str(x) for x in entry if str(x) != "") for entry in index]
    return [str(x) for x in index]


def _bold_flags(
    table: pd.DataFrame,
    axis: str | None,
    decimals: int,
    confidence: float = _bootstrap.DEFAULT_CONFIDENCE,
) -> set[tuple[int, int, int]]:
    """(row, column, part) positions to bold, per column or row and metric: the best
    value at the printed precision (ties are all bold) and every value whose paired
    interval of the difference to the best (by the unrounded mean) includes 0."""
    if axis is None:
        return set()
    n_rows, n_cols = table.shape
    groups = (
        [[(r, c) for r in range(n_rows)] for c in range(n_cols)]
        if axis == "columns"
        else [[(r, c) for c in range(n_cols)] for r in range(n_rows)]
    )
    flags = set()
    for group in groups:
        by_metric: dict[str, list[tuple[float, SeedStat, tuple[int, int, int]]]] = {}
        for r, c in group:
            for p, part in enumerate(_stat_parts(table.iat[r, c])):
                if part.metric in METRICS and math.isfinite(part.mean):
                    shown = float(f"{part.mean:.{decimals}f}")
                    by_metric.setdefault(part.metric, []).append((shown, part, (r, c, p)))
        for metric, entries in by_metric.items():
            if len(entries) < 2:
                continue
            pick = min if METRICS[metric][1] == "lower" else max
            best_shown = pick(shown for shown, _, _ in entries)
            best = pick(entries, key=lambda entry: entry[1].mean)[1]
            for shown, part, pos in entries:
                if shown == best_shown or _within_noise(part, best, confidence):
                    flags.add(pos)
    return flags


def _within_noise(part: SeedStat, best: SeedStat, confidence: float) -> bool:
    """Whether the paired interval of ``part - best`` over their resamples includes 0."""
    if part.resamples is None or best.resamples is None:
        return False
    if len(part.resamples) != len(best.resamples):
        raise ValueError(
            f"cells of {part.metric} have {len(part.resamples)} and {len(best.resamples)} "
            "resamples; paired intervals need the same n_resamples in every row"
        )
    return _bootstrap.interval_includes_zero(part.resamples, best.resamples, confidence)


def _cell_text(cell: Any, r: int, c: int, flags, decimals: int, fmt: str) -> str:
    parts = _stat_parts(cell)
    if not parts:
        text = "" if cell is None or (isinstance(cell, float) and math.isnan(cell)) else str(cell)
        return _latex_escape(text) if fmt == "latex" else _md_escape(text)
    out = []
    for p, part in enumerate(parts):
        text = part.text(decimals, latex=fmt == "latex")
        if (r, c, p) in flags:
            text = f"\\textbf{{{text}}}" if fmt == "latex" else f"**{text}**"
        out.append(text)
    return "/".join(out)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def _markdown(table: pd.DataFrame, caption: str, flags, decimals: int) -> str:
    header = [table.index.name or "", *_flat_labels(table.columns)]
    lines = [
        "| " + " | ".join(_md_escape(h) for h in header) + " |",
        "| :--- |" + " ---: |" * table.shape[1],
    ]
    for r, label in enumerate(_flat_labels(table.index)):
        cells = [
            _cell_text(table.iat[r, c], r, c, flags, decimals, "md") for c in range(table.shape[1])
        ]
        lines.append("| " + " | ".join([_md_escape(label), *cells]) + " |")
    prefix = f"{caption}\n\n" if caption else ""
    return prefix + "\n".join(lines) + "\n"


def _latex_header(columns: pd.Index, corner: str) -> list[str]:
    """Booktabs header rows: one per column level, upper levels merged into
    \\multicolumn spans with a \\cmidrule under each labelled span."""
    if not isinstance(columns, pd.MultiIndex):
        return [
            " & ".join([_latex_escape(corner), *(_latex_escape(str(c)) for c in columns)]) + r" \\"
        ]
    tuples = [tuple(str(x) for x in entry) for entry in columns]
    n_levels = columns.nlevels
    lines = []
    for level in range(n_levels - 1):
        cells, rules = [""], []
        start = 0
        while start < len(tuples):
            end = start + 1
            while end < len(tuples) and tuples[end][: level + 1] == tuples[start][: level + 1]:
                end += 1
            label = tuples[start][level]
            span = end - start
            text = _latex_escape(label)
            cells.append(f"\\multicolumn{{{span}}}{{c}}{{{text}}}" if span > 1 else text)
            if label and span > 1:
                rules.append(f"\\cmidrule(lr){{{start + 2}-{end + 1}}}")
            start = end
        lines.append(" & ".join(cells) + r" \\")
        if rules:
            lines.append(" ".join(rules))
    last = [_latex_escape(corner), *(_latex_escape(t[-1]) for t in tuples)]
    lines.append(" & ".join(last) + r" \\")
    return lines


def _latex(table: pd.DataFrame, caption: str, label: str, flags, decimals: int) -> str:
    lines = [
        "% Needs \\usepackage{booktabs}.",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{_latex_escape(caption)}}}",
        f"\\label{{tab:{label}}}",
        f"\\begin{{tabular}}{{l{'c' * table.shape[1]}}}",
        "\\toprule",
        *_latex_header(table.columns, table.index.name or ""),
        "\\midrule",
    ]
    for r, row_label in enumerate(_flat_labels(table.index)):
        cells = [
            _cell_text(table.iat[r, c], r, c, flags, decimals, "latex")
            for c in range(table.shape[1])
        ]
        lines.append(" & ".join([_latex_escape(row_label), *cells]) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def _csv_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Wide raw numbers: per table column and metric a ``"<column> <METRIC> mean"`` and a
    ``"... std"`` column (the metric label is left out when the column label has it);
    text cells of a column of numbers (Table 9's selected row) in ``"<column> text"``."""
    out: dict[str, list] = {table.index.name or "row": _flat_labels(table.index)}
    for c, label in enumerate(_flat_labels(table.columns)):
        column = table.iloc[:, c]
        metrics = list(dict.fromkeys(p.metric for cell in column for p in _stat_parts(cell)))
        texts = ["" if cell is None or _stat_parts(cell) else str(cell) for cell in column]
        if not metrics:
            out[label] = texts
            continue
        if any(texts):
            out[f"{label} text"] = texts
        for metric in metrics:
            name = METRICS.get(metric, (metric,))[0]
            stem = label if name in label else f"{label} {name}".strip()
            means, stds = [], []
            for cell in column:
                part = next((p for p in _stat_parts(cell) if p.metric == metric), None)
                means.append(part.mean if part else math.nan)
                stds.append(part.std if part else math.nan)
            out[f"{stem} mean"] = means
            out[f"{stem} std"] = stds
    return pd.DataFrame(out)


def _atomic_write_text(path: Path, text: str) -> None:
    """A reader (or a killed job) never sees a half-written table."""
    with atomic_write(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def write_table(
    table: pd.DataFrame,
    stem: str | os.PathLike,
    caption: str,
    *,
    decimals: int = 2,
    bold: str | None = "auto",
    confidence: float = _bootstrap.DEFAULT_CONFIDENCE,
) -> dict[str, Path]:
    """Write ``<stem>.md``, ``<stem>.tex`` and ``<stem>.csv``; returns their paths.

    - Markdown: the caption as a paragraph, then a GitHub table; MultiIndex column
      levels are joined by a space (``"SUN FPR95"``); best values ``**bold**``.
    - LaTeX (booktabs): a ``table`` float with ``\\caption`` and ``\\label{tab:<name of
      stem>}``, one header row per column level with ``\\multicolumn`` spans and
      ``\\cmidrule``; ``12.34$\\pm$0.56``; best values ``\\textbf``; text escaped.
    - CSV: the raw numbers, wide: the row label column, then for each table column and
      metric ``"<column> <METRIC> mean"`` and ``"<column> <METRIC> std"`` (std empty for a
      single seed; the metric is left out of the name when the column label has it);
      text columns as they are. :func:`long_format` gives the same numbers long.

    ``bold``: ``"auto"`` (the table's own choice, see the module docstring), ``"columns"``,
    ``"rows"`` or ``None``; ``confidence`` (percent) of the paired intervals of the bold
    rule. Files are written atomically; missing parent folders are made.
    """
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    if table.empty:
        raise ValueError("table is empty")
    if not isinstance(caption, str):
        raise ValueError(f"caption must be a string, got {caption!r}")
    if isinstance(decimals, bool) or not isinstance(decimals, int) or decimals < 0:
        raise ValueError(f"decimals must be a non-negative integer, got {decimals!r}")
    if bold not in ("auto", "columns", "rows", None):
        raise ValueError(f"bold must be 'auto', 'columns', 'rows' or None, got {bold!r}")
    stem = Path(stem)
    if not stem.name:
        raise ValueError(f"stem must name a file, got {str(stem)!r}")
    axis = table.attrs.get(_BOLD_ATTR, "columns") if bold == "auto" else bold
    flags = _bold_flags(table, axis, decimals, confidence)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {ext: stem.with_name(f"{stem.name}.{ext}") for ext in ("md", "tex", "csv")}
    _atomic_write_text(paths["md"], _markdown(table, caption, flags, decimals))
    _atomic_write_text(paths["tex"], _latex(table, caption, stem.name, flags, decimals))
    _atomic_write_text(paths["csv"], _csv_frame(table).to_csv(index=False))
    return paths
