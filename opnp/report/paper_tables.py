"""One paper table of one model from the aggregated results: the layout of each
experiment of the catalogue (:mod:`opnp.pipeline.experiments`) with its caption.

:func:`build_table` is what the workflow's ``make_table`` job calls; the caption
template comes from the catalogue, the numbers it states (n, seeds, ±, the bold rule)
from the rows shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from opnp.pipeline.experiments import PRUNING_METHODS, WITH_WITHOUT_METHODS, experiment
from opnp.report.captions import (
    caption_notes,
    layer_ablation_caption,
    onp_low_side_note,
    subset_sizes_text,
)
from opnp.report.table_ablations import (
    SELECTED_LABEL,
    layer_ablation_table,
    pruned_accuracy_table,
    statistic_table,
    subset_table,
)
from opnp.report.table_methods import (
    WITH_WITHOUT_LABELS,
    main_results_table,
    pruning_methods_table,
    selected_params_table,
)


def _test_rows(results: pd.DataFrame, name: str) -> pd.DataFrame:
    return results[(results["experiment"] == name) & (results["split"] == "test")]


def _selected_rows(results: pd.DataFrame) -> pd.DataFrame:
    selection = results[
        (results["split"] == "val") & results["selected"] & (results["experiment"] == "main")
    ]
    return (
        selection.groupby(["model", "method", "params"], sort=False)[["fpr95", "auroc"]]
        .mean()
        .reset_index()
        .rename(columns={"fpr95": "val_fpr95", "auroc": "val_auroc"})
    )


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
    elif name == "with_without":
        table = main_results_table(
            main,
            list(WITH_WITHOUT_METHODS),
            ood_sets,
            method_labels=WITH_WITHOUT_LABELS,
            combined_cells=True,
        )
    elif name == "selected":
        table = selected_params_table(_selected_rows(results), react_sources=react_sources)
    elif name == "pruned_accuracy":
        table = pruned_accuracy_table(results[results["experiment"] == name], experiment=name)
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
