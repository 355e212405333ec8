"""From the results frame to table cells: input checks, row selection, one
:class:`~opnp.report.cells.SeedStat` per cell, the ``params`` JSON of a row.

The tables take the results frame of one model (schema in ``docs/architecture.md``: one
row per method x params x OOD set x split x seed, metrics in percent). Choices, each the
same in every table:

- Rows: only ``split == "test"`` rows are used (``split=None`` keeps every split). The
  ablation tables keep only their own experiment's rows (``experiment="pruned_accuracy"`` etc., the names of :mod:`opnp.pipeline.experiments`);
  the main tables and Table 4 use every row passed (``experiment=None``), so the caller
  filters, and an ambiguous input raises instead of being averaged: one cell must have
  at most one row per seed, and one method (or variant) one ``params`` value across all
  its rows (the paper uses the same hyperparameters for every test OOD set of a model).
- Seeds: a cell shows ``mean ± std`` over its seeds, std being the sample standard
  deviation (``ddof=1``); a single seed shows the plain value. The ``Average`` over OOD
  sets is taken per seed first (so every OOD set must have the same seeds), then
  ``mean ± std`` over seeds, so its std is the spread of the average, not a pooled one.
- Missing data raises ``ValueError`` naming the method / variant and OOD set.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from opnp.report.cells import SeedStat, cell_of
from opnp.report.labels import AVERAGE, METRICS


def check_frame(results: Any, name: str, columns: Iterable[str]) -> pd.DataFrame:
    """``results`` itself, after checking it is a DataFrame with ``columns``."""
    if not isinstance(results, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(results).__name__}")
    missing = [c for c in columns if c not in results.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing} (has {list(results.columns)})")
    return results


def select_rows(
    results: Any,
    *,
    split: str | None,
    experiment: str | None,
    columns: Iterable[str],
    table: str,
) -> pd.DataFrame:
    """The rows of one split / experiment; ValueError when none are left or when they
    mix models (a table is about one model)."""
    frame = check_frame(results, "results", ["seed", *columns])
    if split is not None:
        check_frame(frame, "results", ["split"])
        frame = frame[frame["split"] == split]
    if experiment is not None:
        check_frame(frame, "results", ["experiment"])
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


def check_names(values: Any, name: str) -> list[str]:
    """``values`` as a list of distinct non-empty strings (ValueError naming ``name``)."""
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


def check_metrics(metric: str | Sequence[str], name: str = "metric") -> tuple[str, ...]:
    """One metric column or several, as a tuple of keys of :data:`~opnp.report.labels.METRICS`."""
    metrics = (metric,) if isinstance(metric, str) else tuple(metric)
    if not metrics or any(m not in METRICS for m in metrics):
        raise ValueError(f"{name} must be one or more of {sorted(METRICS)}, got {metric!r}")
    return metrics


def ood_order(frame: pd.DataFrame, ood_sets: Sequence[str] | None) -> list[str]:
    """``ood_sets`` checked, or by default the OOD sets of ``frame`` by first appearance."""
    if ood_sets is not None:
        return check_names(ood_sets, "ood_sets")
    names = [o for o in dict.fromkeys(frame["ood_set"]) if o != ""]
    if not names:
        raise ValueError("results has no rows about an OOD set (ood_set is '' everywhere)")
    return names


def params_dict(text: Any, what: str) -> dict:
    """The ``params`` JSON object of a row (``{}`` for an empty one); ``what`` names the
    row in the error."""
    try:
        params = json.loads(text) if isinstance(text, str) and text else {}
    except json.JSONDecodeError as err:
        raise ValueError(f"{what}: params is not valid JSON: {text!r} ({err})") from err
    if not isinstance(params, dict):
        raise ValueError(f"{what}: params must be a JSON object, got {text!r}")
    return params


def number_text(value: Any) -> str:
    """A hyperparameter value as a table shows it: numbers ``:g``, the rest ``str``."""
    return (
        f"{value:g}"
        if isinstance(value, int | float) and not isinstance(value, bool)
        else str(value)
    )


def seed_stat(rows: pd.DataFrame, metric: str, what: str) -> SeedStat:
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
            "a table cell shows one hyperparameter setting (filter the selected one)"
        )


def require_entities(frame: pd.DataFrame, key: str, entities: Sequence[str], kind: str) -> None:
    """ValueError naming the first of ``entities`` without rows (and those available)."""
    present = set(frame[key])
    for entity in entities:
        if entity not in present:
            available = [str(v) for v in dict.fromkeys(frame[key])]
            raise ValueError(f"no results for {kind} {entity!r} (available: {available})")


def entity_cells(
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
    require_entities(frame, key, entities, kind)
    cells: dict[str, dict[str, list[SeedStat]]] = {}
    for entity in entities:
        rows = frame[frame[key] == entity]
        per_ood: dict[str, list[SeedStat]] = {}
        for ood in ood_sets:
            ood_rows = rows[rows["ood_set"] == ood]
            # one setting per cell: each test family may have its own (held-out-family
            # selection), every row of one OOD set the same
            _check_single_params(ood_rows, f"{kind} {entity!r} on OOD set {ood!r}")
            if ood_rows.empty:
                have = [o for o in dict.fromkeys(rows["ood_set"]) if o != ""]
                raise ValueError(
                    f"no results for {kind} {entity!r} on OOD set {ood!r} (it has {have})"
                )
            per_ood[ood] = [
                seed_stat(ood_rows, m, f"{kind} {entity!r} on OOD set {ood!r}") for m in metrics
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


def display_labels(
    names: Sequence[str], labels: Mapping[str, str] | None, defaults: Mapping[str, str]
) -> list[str]:
    """The label of each name (``labels`` over ``defaults``, else the name); distinct."""
    mapping = {**defaults, **(labels or {})}
    out = [mapping.get(n, n) for n in names]
    dup = sorted({label for label in out if out.count(label) > 1})
    if dup:
        raise ValueError(f"several rows/columns would share the labels {dup}; pass distinct labels")
    return out


def entities_by_ood_table(
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
    grid = [[cell_of(cells[e][c]) for c in columns] for e in entities]
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
