"""The validation search's rule, torch- and workflow-free (paper section 4.1): the configs
of a hyperparameter grid in a fixed order, and the setting with the best mean validation
metric over the validation OOD sets, marked in a table of result rows
(:mod:`opnp.result_rows`). The workflow's selection jobs (:mod:`opnp.pipeline.selection`)
and the model-level API's ``tune`` (:mod:`opnp.nets.model_api`) both select with it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from opnp.result_rows import params_json


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


def mark_selected(
    val_results: pd.DataFrame,
    metric: str = "fpr95",
    groups: Mapping[str, Iterable[str]] | None = None,
) -> pd.DataFrame:
    """Add the selection columns to validation rows.

    ``selected`` (bool) marks the params chosen on every validation OOD set (the one
    setting that the single-setting ablations use). ``groups`` maps a test group (a
    family of test OOD sets, :func:`opnp.pipeline.config.selection_groups`) to the
    validation OOD sets its setting is chosen on; ``selected_for`` (JSON object) then
    maps each group whose choice is the row's params to those validation sets, ``{}``
    for other rows. Without ``groups``, every test set shares the ``selected`` setting
    (one group ``"all"`` validated on every set).
    """
    chosen = params_json(select_best(val_results, metric))
    out = val_results.copy()
    out["selected"] = out["params"] == chosen
    if groups is None:
        groups = {ALL_GROUP: sorted(set(val_results["ood_set"]))}
    groups = dict(groups)
    choices = {}
    for group, val_sets in groups.items():
        val_sets = list(val_sets)
        rows = val_results[val_results["ood_set"].isin(val_sets)]
        missing = sorted(set(val_sets) - set(rows["ood_set"]))
        if missing:
            raise ValueError(
                f"test group {group!r} is validated on {val_sets}, but there are no "
                f"validation rows of {missing}"
            )
        choices[group] = (params_json(select_best(rows, metric)), val_sets)
    out["selected_for"] = [
        json.dumps({g: v for g, (p, v) in choices.items() if p == params}, sort_keys=True)
        for params in out["params"]
    ]
    return out


#: The one test group when every test set shares one setting (selection.validation:
#: all_families, or a selection without groups).
ALL_GROUP = "all"
