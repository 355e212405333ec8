"""The tables that compare methods: paper Tables 1, 2, 5, 6 (main results), Table 4
(pruning methods) and the hyperparameters selected on the validation split.

Each takes the results of one model and returns a :class:`pandas.DataFrame` of cells
(:mod:`opnp.report.cells`) laid out like the paper's table; the row choices are those of
:mod:`opnp.report.frames`, the bold rule that of :mod:`opnp.report.render`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from opnp.pipeline.experiments import PRUNING_METHODS  # Table 4's columns, in order
from opnp.report.cells import BOLD_ATTR, SeedStat
from opnp.report.frames import (
    check_frame,
    check_metrics,
    check_names,
    display_labels,
    entities_by_ood_table,
    entity_cells,
    number_text,
    ood_order,
    params_dict,
    require_entities,
    select_rows,
)
from opnp.report.labels import AVERAGE, METHOD_LABELS, METRICS

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


#: Where a ReAct combination's clip percentile came from (:func:`opnp.pipeline.config.
#: react_percentile_source`) -> the note after its value in the selected-hyperparameters
#: table.
REACT_PERCENTILE_SOURCES: dict[str, str] = {
    "selected": "ReAct's selection",
    "fixed": "fixed in config",
    "grid": "searched jointly",
}


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
    metrics_ = check_metrics(metrics, "metrics")
    methods = check_names(methods, "methods")
    frame = select_rows(
        results,
        split=split,
        experiment=experiment,
        columns=["method", "ood_set", *metrics_],
        table="main_results_table",
    )
    require_entities(frame, "method", methods, "method")
    oods = ood_order(frame[frame["method"].isin(methods)], ood_sets)
    cells = entity_cells(frame, "method", methods, oods, metrics_, average, "method")
    columns = [*oods, AVERAGE] if average else oods
    labels = display_labels(methods, method_labels, METHOD_LABELS)
    if combined_cells:
        table = entities_by_ood_table(
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
    table.attrs[BOLD_ATTR] = "columns"
    return table


def pruning_methods_table(
    results: pd.DataFrame,
    ood_sets: Sequence[str],
    *,
    methods: Sequence[str] = PRUNING_METHODS,
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
    metrics_ = check_metrics(metric)
    methods = check_names(methods, "methods")
    oods = check_names(ood_sets, "ood_sets")
    frame = select_rows(
        results,
        split=split,
        experiment=experiment,
        columns=["method", "ood_set", *metrics_],
        table="pruning_methods_table",
    )
    cells = entity_cells(frame, "method", methods, oods, metrics_, average, "method")
    table = entities_by_ood_table(
        cells,
        methods,
        [*oods, AVERAGE] if average else oods,
        display_labels(methods, method_labels, METHOD_LABELS),
        entities_as_rows=False,
        entity_axis_name="Method",
        ood_axis_name="OOD set",
    )
    table.attrs[BOLD_ATTR] = "rows"
    return table


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
    With the optional input columns ``group`` (a family of test sets) and
    ``validated_on`` (the validation sets that chose its setting), one row per (model,
    method, group), and the output has the columns ``Test family`` and ``Validated on``
    after ``Model``.
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
    frame = check_frame(
        selected, "selected", ["model", "method", "params", "val_fpr95", "val_auroc"]
    )
    if frame.empty:
        raise ValueError("selected has no rows")
    per_group = "group" in frame.columns
    key = ["model", "method", "group"] if per_group else ["model", "method"]
    dup = frame.duplicated(key)
    if dup.any():
        first = frame.loc[dup].iloc[0]
        raise ValueError(
            f"selected has several rows for {', '.join(f'{k} {first[k]!r}' for k in key)}"
        )
    rows = []
    for record in frame.itertuples(index=False):
        what = f"selected, model {record.model!r} method {record.method!r}"
        params = params_dict(record.params, what)
        values = {k: number_text(params[k]) for k in sorted(params)}
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
        groups = [str(record.group), str(record.validated_on)] if per_group else []
        rows.append([str(record.model), *groups, text, *stats])
    labels = {**METHOD_LABELS, **(method_labels or {})}
    group_columns = ["Test family", "Validated on"] if per_group else []
    table = pd.DataFrame(
        rows,
        index=pd.Index([labels.get(m, m) for m in frame["method"]], name="Method"),
        columns=["Model", *group_columns, "Hyperparameters", "Val FPR95", "Val AUROC"],
        dtype=object,
    )
    table.attrs[BOLD_ATTR] = None
    return table
