"""One paper table of one model from the aggregated results: the layout of each
experiment of the catalogue (:mod:`opnp.pipeline.experiments`) with its caption.

:func:`build_table` is what the workflow's ``make_table`` job calls; the caption
template comes from the catalogue, the numbers it states (n, seeds, ±, the bold rule)
from the rows shown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from opnp.pipeline.experiments import PRUNING_METHODS, WITH_WITHOUT_METHODS, experiment
from opnp.report.captions import (
    caption_notes,
    layer_ablation_caption,
    onp_low_side_note,
    readings_sensitivity_note,
    sensitivity_set_note,
    small_sample_text,
    subset_sizes_text,
)
from opnp.report.labels import METHOD_LABELS
from opnp.report.table_ablations import (
    SELECTED_LABEL,
    layer_ablation_table,
    pruned_accuracy_table,
    readings_table,
    statistic_table,
    subset_table,
)
from opnp.report.table_methods import (
    WITH_WITHOUT_LABELS,
    main_results_table,
    pruning_methods_table,
    selected_params_table,
)

#: Key of ``DataFrame.attrs`` of a built table: its small-sample caution ("" if none).
SMALL_SAMPLE_ATTR = "opnp_small_sample"


def _test_rows(results: pd.DataFrame, name: str) -> pd.DataFrame:
    return results[(results["experiment"] == name) & (results["split"] == "test")]


def _selected_rows(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, method, test group): the params chosen for the group and their
    mean validation metrics over the validation sets that chose them (``selected_for``);
    without per-group choices, the ``selected`` params over every validation set."""
    val = results[(results["split"] == "val") & (results["experiment"] == "main")]
    records = []
    if "selected_for" in val and (val["selected_for"] != "{}").any():
        for (model, method, params), rows in val.groupby(["model", "method", "params"], sort=False):
            for text in rows["selected_for"].unique():
                for group, val_sets in json.loads(text).items():
                    chosen = rows[rows["ood_set"].isin(val_sets)]
                    records.append(
                        {
                            "model": model,
                            "method": method,
                            "group": group,
                            "validated_on": ", ".join(val_sets),
                            "params": params,
                            "val_fpr95": chosen["fpr95"].mean(),
                            "val_auroc": chosen["auroc"].mean(),
                        }
                    )
        frame = pd.DataFrame(records).drop_duplicates(["model", "method", "group"])
        order = {m: i for i, m in enumerate(dict.fromkeys(val["method"]))}
        return frame.sort_values(
            ["model", "method", "group"], key=lambda c: c.map(order) if c.name == "method" else c
        ).reset_index(drop=True)
    selection = val[val["selected"]]
    return (
        selection.groupby(["model", "method", "params"], sort=False)[["fpr95", "auroc"]]
        .mean()
        .reset_index()
        .rename(columns={"fpr95": "val_fpr95", "auroc": "val_auroc"})
    )


#: Row labels of the selection-protocol table, by result ``variant``.
PROTOCOL_LABELS = {"held_out_family": "held-out family", "all_families": "every family"}


def protocols_table(rows: pd.DataFrame, ood_sets: Sequence[str]) -> pd.DataFrame:
    """The selection-protocol comparison: one row per (method, protocol), in row order."""
    rows = rows.copy()
    entities = {}
    for method, variant in dict.fromkeys(zip(rows["method"], rows["variant"], strict=True)):
        entities[f"{method} / {variant}"] = (
            f"{METHOD_LABELS.get(method, method)} ({PROTOCOL_LABELS.get(variant, variant)})"
        )
    rows["method"] = rows["method"] + " / " + rows["variant"]
    return main_results_table(rows, list(entities), ood_sets, method_labels=entities)


def build_table(
    name: str,
    results: pd.DataFrame,
    *,
    model: str,
    ood_sets: Sequence[str],
    methods: Sequence[str],
    confidence: float,
    sensitivity: Mapping[str, Any],
    react_sources: Mapping[str, str],
    replicate_seeds: Sequence[int] | None = None,
    replicate_vary: str = "split",
) -> tuple[pd.DataFrame, str]:
    """``(table, caption)`` of experiment ``name`` for ``model`` (``results``: that
    model's rows, pooled over replicates where ``replicate_seeds`` are given; what they
    varied, ``replicate_vary``: ``split`` or ``training``)."""
    exp = experiment(name)
    caption = exp.caption.format(model=model)
    main = _test_rows(results, "main")
    if name == "main":
        shown_methods = [m for m in methods if m in set(main["method"])]
        table = main_results_table(main, shown_methods, ood_sets)
        caption += sensitivity_set_note(**sensitivity)
    elif name == "with_without":
        table = main_results_table(
            main,
            list(WITH_WITHOUT_METHODS),
            ood_sets,
            method_labels=WITH_WITHOUT_LABELS,
            combined_cells=True,
        )
    elif name == "protocols":
        table = protocols_table(_test_rows(results, name), ood_sets)
    elif name == "selected":
        table = selected_params_table(_selected_rows(results), react_sources=react_sources)
    elif name == "pruned_accuracy":
        table = pruned_accuracy_table(results[results["experiment"] == name], experiment=name)
        caption += sensitivity_set_note(**sensitivity)
    elif name == "pruning_methods":
        table = pruning_methods_table(main[main["method"].isin(PRUNING_METHODS)], ood_sets)
        caption += onp_low_side_note(**sensitivity)
    elif name == "layers":
        table = layer_ablation_table(_test_rows(results, name), ood_sets, experiment=name)
        caption = layer_ablation_caption(_test_rows(results, name), model)
    elif name == "subsets":
        table = subset_table(_test_rows(results, name), ood_sets, experiment=name)
    elif name == "statistics":
        table = statistic_table(_test_rows(results, name), ood_sets, experiment=name)
    elif name == "readings":
        table = readings_table(_test_rows(results, name), main, ood_sets)
        caption += sensitivity_set_note(**sensitivity) + readings_sensitivity_note(
            _test_rows(results, name), sensitivity["reduction"]
        )
    else:
        raise ValueError(f"experiment {name!r} has no table")
    if name != "selected":
        # n, seeds, what ± means and the bold rule, from the test rows of this table's
        # experiment (every row of one experiment scores the same test sets).
        rows_of = name if exp.result else "main"
        shown = _test_rows(results, rows_of)
        sets = None if name == "pruned_accuracy" else ood_sets
        notes = caption_notes(table, shown, confidence=confidence, ood_sets=sets)
        caption = f"{caption} {notes}"
        # the caption's caution, for the job's log (workflow/scripts/make_table.py)
        table.attrs[SMALL_SAMPLE_ATTR] = small_sample_text(shown, sets)
        if name == "subsets":
            caption = f"{caption} {subset_sizes_text(shown, experiment=name)}"
    if name == "statistics":
        caption += (
            f" Row {SELECTED_LABEL}: the hyperparameters selected on the validation "
            "split for each statistic."
        )
    if replicate_seeds is not None:
        seeds = sorted(replicate_seeds)
        chosen = (
            ""
            if name == "pruned_accuracy"
            else " (hyperparameters chosen on each replicate's own validation split)"
        )
        kind = "training" if replicate_vary == "training" else "split"
        caption += (
            f" Pooled over {len(seeds)} replicates ({kind} seeds {seeds}): the seeds above are "
            f"these {kind} seeds; each cell is the mean ± std over replicates of one "
            f"replicate's result{chosen}."
        )
    return table, caption
