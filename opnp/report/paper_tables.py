"""One paper table of one model from the aggregated results: the layout of each
experiment of the catalogue (:mod:`opnp.pipeline.experiments`) with its caption.

:func:`build_table` is what the workflow's ``make_table`` job calls: it looks up the
layout the catalogue entry names in :data:`TABLE_LAYOUTS` (this module registers the
layouts of the paper's tables and imports every module that registers others); the
caption template comes from the catalogue, the numbers it states (n, seeds, ±, the bold
rule) from the rows shown.
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
from opnp.report.table_layouts import TABLE_LAYOUTS, LaidOut, TableRows, table_layout
from opnp.report.table_methods import (
    WITH_WITHOUT_LABELS,
    main_results_table,
    pruning_methods_table,
    selected_params_table,
)

#: Key of ``DataFrame.attrs`` of a built table: its small-sample caution ("" if none).
SMALL_SAMPLE_ATTR = "opnp_small_sample"


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


@table_layout("main")
def _main_results(rows: TableRows, caption: str) -> LaidOut:
    shown_methods = [m for m in rows.methods if m in set(rows.main["method"])]
    table = main_results_table(rows.main, shown_methods, rows.ood_sets)
    return LaidOut(table, caption + sensitivity_set_note(**rows.sensitivity))


@table_layout("with_without")
def _with_without(rows: TableRows, caption: str) -> LaidOut:
    table = main_results_table(
        rows.main,
        list(WITH_WITHOUT_METHODS),
        rows.ood_sets,
        method_labels=WITH_WITHOUT_LABELS,
        combined_cells=True,
    )
    return LaidOut(table, caption)


@table_layout("protocols")
def _protocols(rows: TableRows, caption: str) -> LaidOut:
    return LaidOut(protocols_table(rows.test(), rows.ood_sets), caption)


@table_layout("selected", notes=False)
def _selected(rows: TableRows, caption: str) -> LaidOut:
    table = selected_params_table(_selected_rows(rows.results), react_sources=rows.react_sources)
    return LaidOut(table, caption)


# ID accuracy without hyperparameter selection: no OOD set, nothing chosen per replicate
@table_layout("pruned_accuracy", per_ood_set=False, selects=False)
def _pruned_accuracy(rows: TableRows, caption: str) -> LaidOut:
    every_row = rows.results[rows.results["experiment"] == rows.experiment]
    table = pruned_accuracy_table(every_row, experiment=rows.experiment)
    return LaidOut(table, caption + sensitivity_set_note(**rows.sensitivity))


@table_layout("pruning_methods")
def _pruning_methods(rows: TableRows, caption: str) -> LaidOut:
    main = rows.main
    table = pruning_methods_table(main[main["method"].isin(PRUNING_METHODS)], rows.ood_sets)
    return LaidOut(table, caption + onp_low_side_note(**rows.sensitivity))


@table_layout("layers")
def _layers(rows: TableRows, caption: str) -> LaidOut:
    # the caption names the layers the run pruned: written from the rows, not a template
    table = layer_ablation_table(rows.test(), rows.ood_sets, experiment=rows.experiment)
    return LaidOut(table, layer_ablation_caption(rows.test(), rows.model))


@table_layout("subsets")
def _subsets(rows: TableRows, caption: str) -> LaidOut:
    table = subset_table(rows.test(), rows.ood_sets, experiment=rows.experiment)
    return LaidOut(table, caption, subset_sizes_text(rows.test(), experiment=rows.experiment))


@table_layout("statistics")
def _statistics(rows: TableRows, caption: str) -> LaidOut:
    table = statistic_table(rows.test(), rows.ood_sets, experiment=rows.experiment)
    closing = (
        f"Row {SELECTED_LABEL}: the hyperparameters selected on the validation "
        "split for each statistic."
    )
    return LaidOut(table, caption, closing)


@table_layout("readings")
def _readings(rows: TableRows, caption: str) -> LaidOut:
    table = readings_table(rows.test(), rows.main, rows.ood_sets)
    caption += sensitivity_set_note(**rows.sensitivity) + readings_sensitivity_note(
        rows.test(), rows.sensitivity["reduction"]
    )
    return LaidOut(table, caption)


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
    varied, ``replicate_vary``: ``split`` or ``training``) in the layout its catalogue
    entry names (ValueError when it names none or one that is not registered)."""
    exp = experiment(name)
    if exp.layout not in TABLE_LAYOUTS:
        raise ValueError(
            f"experiment {name!r} has no table: its layout {exp.layout!r} is not one of "
            f"{sorted(TABLE_LAYOUTS)}"
        )
    layout = TABLE_LAYOUTS[exp.layout]
    rows = TableRows(name, results, model, ood_sets, methods, sensitivity, react_sources)
    laid_out = layout.build(rows, exp.caption.format(model=model))
    table, caption = laid_out.table, laid_out.caption
    if layout.notes:
        # n, seeds, what ± means and the bold rule, from the test rows of this table's
        # experiment (every row of one experiment scores the same test sets); a table of
        # the main results' methods rests on the main rows.
        shown = rows.test(name if exp.result else "main")
        sets = ood_sets if layout.per_ood_set else None
        notes = caption_notes(table, shown, confidence=confidence, ood_sets=sets)
        caption = f"{caption} {notes}"
        # the caption's caution, for the job's log (workflow/scripts/make_table.py)
        table.attrs[SMALL_SAMPLE_ATTR] = small_sample_text(shown, sets)
    if laid_out.closing:
        caption = f"{caption} {laid_out.closing}"
    if replicate_seeds is not None:
        caption += _pooled_text(replicate_seeds, replicate_vary, selects=layout.selects)
    return table, caption


def _pooled_text(replicate_seeds: Sequence[int], vary: str, *, selects: bool) -> str:
    """The caption's sentence on the replicates a pooled table averages."""
    seeds = sorted(replicate_seeds)
    chosen = " (hyperparameters chosen on each replicate's own validation split)" if selects else ""
    kind = "training" if vary == "training" else "split"
    return (
        f" Pooled over {len(seeds)} replicates ({kind} seeds {seeds}): the seeds above are "
        f"these {kind} seeds; each cell is the mean ± std over replicates of one "
        f"replicate's result{chosen}."
    )
