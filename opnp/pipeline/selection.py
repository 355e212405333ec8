"""Hyperparameter grids and their selection on the validation split (paper section 4.1:
the setting with the best mean validation FPR95 over the validation OOD sets)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from opnp.pipeline.results import params_json


def expand_grid(grid: Mapping[str, Iterable] | None, fixed: Mapping[str, Any] | None = None):
    """Cartesian product of a grid, each config merged with the fixed values.

    The order is deterministic (keys sorted, values in the given order), so that ties in
    the selection are broken the same way in every run.
    """
    grid = dict(grid or {})
    fixed = dict(fixed or {})
    overlap = set(grid) & set(fixed)
    if overlap:
        raise ValueError(f"hyperparameters {sorted(overlap)} appear in both grid and fixed")
    keys = sorted(grid)
    for key in keys:
        if not isinstance(grid[key], list | tuple) or len(grid[key]) == 0:
            raise ValueError(f"grid[{key!r}] must be a non-empty list, got {grid[key]!r}")
    return [
        {**fixed, **dict(zip(keys, values, strict=True))}
        for values in itertools.product(*(grid[k] for k in keys))
    ]


def resolve_react_percentile(
    method: str, settings: Mapping[str, Any], react_selection: pd.DataFrame | None = None
) -> dict:
    """``settings`` ({"grid": ..., "fixed": ...}) of ``method`` with ReAct's
    validation-selected percentile put in ``fixed["react_percentile"]`` where the config
    leaves the percentile to ReAct's selection (:func:`opnp.pipeline.config.react_percentile_source`
    is "selected"); ``react_selection`` is ReAct's selection table (its ``percentile``).
    Settings of other methods, or with the percentile fixed or searched, come back as given.
    """
    from opnp.pipeline.config import REACT_SELECTED, react_percentile_source

    grid = dict(settings.get("grid", {}))
    fixed = dict(settings.get("fixed", {}))
    if react_percentile_source(method, {"grid": grid, "fixed": fixed}) != "selected":
        return {"grid": grid, "fixed": fixed}
    if react_selection is None:
        raise ValueError(
            f"method {method!r} uses ReAct's selected percentile (react_percentile "
            f"{fixed.get('react_percentile', REACT_SELECTED)!r}); pass ReAct's selection table"
        )
    react_params = selected_params(react_selection)
    if "percentile" not in react_params:
        raise ValueError(
            f"ReAct's selection has no 'percentile' (params {react_params}); {method!r} "
            "cannot take ReAct's selected percentile"
        )
    fixed["react_percentile"] = react_params["percentile"]
    return {"grid": grid, "fixed": fixed}


def select_best(val_results: pd.DataFrame, metric: str = "fpr95") -> dict:
    """The hyperparameters with the best mean validation metric over OOD sets and seeds.

    ``metric="fpr95"`` picks the lowest mean FPR95, ties broken by the highest mean
    AUROC; ``metric="auroc"`` the highest AUROC, ties broken by the lowest FPR95. Remaining
    ties go to the first config in grid order (``expand_grid`` is deterministic).
    """
    if metric not in ("fpr95", "auroc"):
        raise ValueError(f"selection metric must be 'fpr95' or 'auroc', got {metric!r}")
    val = val_results[val_results["split"] == "val"]
    if val.empty:
        raise ValueError("no validation rows to select hyperparameters from")
    order = {p: i for i, p in enumerate(dict.fromkeys(val["params"]))}
    means = val.groupby("params", sort=False)[["fpr95", "auroc"]].mean().reset_index()
    means["order"] = means["params"].map(order)
    if metric == "fpr95":
        means = means.sort_values(["fpr95", "auroc", "order"], ascending=[True, False, True])
    else:
        means = means.sort_values(["auroc", "fpr95", "order"], ascending=[False, True, True])
    return json.loads(means.iloc[0]["params"])


def mark_selected(val_results: pd.DataFrame, metric: str = "fpr95") -> pd.DataFrame:
    """Add a boolean ``selected`` column to validation rows: True for the chosen params."""
    chosen = params_json(select_best(val_results, metric))
    out = val_results.copy()
    out["selected"] = out["params"] == chosen
    return out


def selected_params(selection: pd.DataFrame) -> dict:
    """The chosen params recorded by :func:`mark_selected` in a selection Parquet file."""
    chosen = selection.loc[selection["selected"], "params"].unique()
    if len(chosen) != 1:
        raise ValueError(f"selection table must mark exactly one params value, found {len(chosen)}")
    return json.loads(chosen[0])
