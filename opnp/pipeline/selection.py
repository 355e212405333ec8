"""The workflow's selection on the validation split: the settings a method is tested
with per test family, ReAct's selected percentile for the combinations, the search plan.
The grids and the rule itself (paper section 4.1: the setting with the best mean
validation FPR95 over the validation OOD sets) are :mod:`opnp.selection_rule`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from opnp.pipeline.results import params_json
from opnp.selection_rule import (  # noqa: F401 - re-exported: the workflow's modules import them here
    ALL_GROUP,
    expand_grid,
    mark_selected,
    select_best,
)

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
