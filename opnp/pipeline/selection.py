"""Hyperparameter grids and their selection on the validation split (paper section 4.1:
the setting with the best mean validation FPR95 over the validation OOD sets)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from opnp.pipeline.results import params_json

# Methods that clip the features at ReAct's threshold before their own step (their class
# sets ``clips_at_react``). Their ``react_percentile`` is, by default, the percentile ReAct
# itself selected on the validation split (so that "X+ReAct" and "ReAct" clip alike); a
# config may instead fix it (``fixed: {react_percentile: 90}``) or search it jointly
# (``grid: {react_percentile: [...]}``). ``fixed: {react_percentile: selected}`` spells the
# default out.
REACT_SELECTED = "selected"


def react_percentile_source(method: str, spec: dict) -> str | None:
    """Where ``method``'s ReAct percentile comes from: ``"selected"`` (ReAct's
    validation-selected percentile, the default), ``"fixed"`` or ``"grid"``; None for a
    method that does not clip at ReAct's threshold."""
    if not clips_at_react(method):
        return None
    if "react_percentile" in spec.get("grid", {}):
        return "grid"
    fixed = spec.get("fixed", {}).get("react_percentile", REACT_SELECTED)
    return "selected" if fixed == REACT_SELECTED else "fixed"


def clips_at_react(method: str) -> bool:
    """Whether ``method`` is a registered detector that clips at ReAct's threshold."""
    from opnp.detectors import available_detectors, detector_class

    return method in available_detectors() and detector_class(method).clips_at_react


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
    method: str,
    settings: Mapping[str, Any],
    react_selection: pd.DataFrame | None = None,
    group: str | None = None,
) -> dict:
    """``settings`` ({"grid": ..., "fixed": ...}) of ``method`` with ReAct's
    validation-selected percentile put in ``fixed["react_percentile"]`` where the config
    leaves the percentile to ReAct's selection (:func:`react_percentile_source`
    is "selected"); ``react_selection`` is ReAct's selection table (its ``percentile``),
    read for test group ``group`` (None: ReAct's choice on every validation set), so that a
    combination clips as ReAct does for the same test family.
    Settings of other methods, or with the percentile fixed or searched, come back as given.
    """
    grid = dict(settings.get("grid", {}))
    fixed = dict(settings.get("fixed", {}))
    if react_percentile_source(method, {"grid": grid, "fixed": fixed}) != "selected":
        return {"grid": grid, "fixed": fixed}
    if react_selection is None:
        raise ValueError(
            f"method {method!r} uses ReAct's selected percentile (react_percentile "
            f"{fixed.get('react_percentile', REACT_SELECTED)!r}); pass ReAct's selection table"
        )
    react_params = selected_params(react_selection, group)
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


def selected_params(selection: pd.DataFrame, group: str | None = None) -> dict:
    """The chosen params recorded by :func:`mark_selected` in a selection Parquet file:
    the setting chosen on every validation set (``group=None``), or the one chosen for
    test group ``group``."""
    if group is None:
        chosen = selection.loc[selection["selected"], "params"].unique()
    else:
        if "selected_for" not in selection:
            raise ValueError(f"the selection table has no per-group choice (test group {group!r})")
        hit = selection["selected_for"].map(lambda text: group in json.loads(text))
        chosen = selection.loc[hit, "params"].unique()
    if len(chosen) != 1:
        what = "" if group is None else f" for test group {group!r}"
        raise ValueError(
            f"selection table must mark exactly one params value{what}, found {len(chosen)}"
        )
    return json.loads(chosen[0])


def settings_for_test_sets(
    selection: pd.DataFrame, test_groups: Mapping[str, Iterable[str]]
) -> list[tuple[dict, list[str]]]:
    """The settings a method is tested with: ``[(params, [test OOD sets]), ...]``, one entry
    per distinct setting, the test sets of every group that chose it (``test_groups``: group
    -> its test OOD sets), in the groups' order."""
    by_params: dict[str, list[str]] = {}
    for group, test_sets in test_groups.items():
        key = params_json(selected_params(selection, group))
        by_params.setdefault(key, []).extend(test_sets)
    return [(json.loads(k), sets) for k, sets in by_params.items()]


@dataclass(frozen=True)
class SearchPart:
    """One grid search of a selection job: ``configs`` scored on ``val_sets``, chosen for
    the test ``groups`` (group -> its validation sets); ``every_set``: it also gives the
    setting chosen on every validation set (the ``selected`` column)."""

    configs: list
    val_sets: list
    groups: dict
    every_set: bool


def search_plan(
    method: str,
    settings: Mapping[str, Any],
    groups: Mapping[str, Iterable[str]],
    val_sets: Iterable[str],
    react_selection: pd.DataFrame | None = None,
) -> list[SearchPart]:
    """The grid searches of one selection job: one per distinct resolved setting (a ReAct
    combination clips at ReAct's choice for the same test group, which may differ between
    groups; every other method has one search over every validation set)."""
    by_settings: dict[str, list] = {}
    for group in [None, *groups]:
        resolved = resolve_react_percentile(method, settings, react_selection, group)
        by_settings.setdefault(json.dumps(resolved, sort_keys=True), []).append(group)
    parts = []
    for text, members in by_settings.items():
        resolved = json.loads(text)
        chosen = {g: list(groups[g]) for g in members if g is not None}
        every_set = None in members
        sets = (
            list(val_sets)
            if every_set
            else list(dict.fromkeys(v for group_sets in chosen.values() for v in group_sets))
        )
        parts.append(
            SearchPart(expand_grid(resolved["grid"], resolved["fixed"]), sets, chosen, every_set)
        )
    return parts
