"""The ablation tables of OPNP: paper Table 3 (ID accuracy of the pruned FC layer),
Table 7 (pruned layers), Table 8 (training subsets), Table 9 (neuron statistics) and
the readings of the paper's ambiguous choices.

Each takes the results of one model and returns a :class:`pandas.DataFrame` of cells
(:mod:`opnp.report.cells`) laid out like the paper's table; the row choices are those of
:mod:`opnp.report.frames`, the bold rule that of :mod:`opnp.report.render`. Each keeps
only its own experiment's rows by default (``experiment="pruned_accuracy"`` etc.).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from opnp.pipeline.ablations import NONE_ELIGIBLE_KEY, VAL_ACCURACY_KEY
from opnp.report.cells import BOLD_ATTR, SeedStat
from opnp.report.frames import (
    check_frame,
    check_metrics,
    check_names,
    display_labels,
    entities_by_ood_table,
    entity_cells,
    number_text,
    params_dict,
    seed_stat,
    select_rows,
)
from opnp.report.labels import AVERAGE, METHOD_LABELS, METRICS, NO_PRUNING, PERCENTAGE_ORDER

#: Table 7's rows: ``variant`` value -> label, in the paper's order.
LAYER_LABELS: dict[str, str] = {
    "layer1": "Layer1",
    "layer2": "Layer2",
    "layer3": "Layer3",
    "layer4": "Layer4",
    "global": "Global Threshold Pruning",
    "layerwise": "Layer-wise Pruning",
    "fc": "FC Layer",
    NO_PRUNING: "No pruning (Energy)",
}


#: Table 7's column of each row's pruning percentages (weights; the FC row also neurons).
PERCENTAGES_LABEL = "Pruned % (low / high)"
#: Table 7's column of each row's ID accuracy on the validation set it was selected on.
VAL_ACCURACY_LABEL = "Val ID Acc"


#: Table 9's columns: neuron statistic (``variant``) -> label, in the paper's order.
STATISTIC_LABELS: dict[str, str] = {
    "mean": "Mean",
    "max": "Max",
    "min": "Min",
    "median": "Median",
    "norm": "Norm",
    "variance": "Variance",
}


#: Label of Table 9's row of hyperparameters selected per statistic.
SELECTED_LABEL = "Selected"


def pruned_accuracy_table(
    results: pd.DataFrame, *, split: str | None = "test", experiment: str | None = "pruned_accuracy"
) -> pd.DataFrame:
    """Paper Table 3: ID accuracy of the OPNP-pruned FC layer, one percentage at a time.

    One row ``"ID Acc"`` (``id_accuracy``, mean ± std over seeds); columns
    ``("none", "")`` for the unpruned layer (params with every percentage 0, or empty),
    then ``(percentage name, value)`` for each single nonzero percentage in the params,
    names in the order of :data:`~opnp.report.labels.PERCENTAGE_ORDER` (weight_high,
    weight_low, neuron_high, neuron_low; others after, by appearance), values ascending. Params with several nonzero percentages raise.
    """
    frame = select_rows(
        results,
        split=split,
        experiment=experiment,
        columns=["params", "id_accuracy"],
        table="pruned_accuracy_table",
    )
    keys = []
    for text in frame["params"]:
        nonzero = {k: v for k, v in params_dict(text, "pruned_accuracy_table").items() if v}
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
        key=lambda n: PERCENTAGE_ORDER.index(n) if n in PERCENTAGE_ORDER else len(PERCENTAGE_ORDER)
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
        row.append(seed_stat(rows, "id_accuracy", what))
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
    table.attrs[BOLD_ATTR] = None
    return table


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
    metrics_ = check_metrics(metrics, "metrics")
    oods = check_names(ood_sets, "ood_sets")
    frame = select_rows(
        results,
        split=split,
        experiment=experiment,
        columns=["variant", "ood_set", *metrics_],
        table=table_name,
    )
    frame = frame.assign(variant=frame["variant"].astype(str))
    names = default_order(frame) if variants is None else check_names(variants, "variants")
    cells = entity_cells(frame, "variant", names, oods, metrics_, average, f"{table_name} variant")
    table = entities_by_ood_table(
        cells,
        names,
        [*oods, AVERAGE] if average else oods,
        display_labels(names, None, labels),
        entities_as_rows=variants_as_rows,
        entity_axis_name=variant_axis_name,
        ood_axis_name="OOD set",
    )
    table.attrs[BOLD_ATTR] = bold
    return table


def _layer_order(variant: str) -> tuple[int, float]:
    match = re.fullmatch(r"(?:layer|stage)(\d+)", variant)
    if match:
        return (0, int(match.group(1)))
    fixed = {NO_PRUNING: -1, "global": 2, "layerwise": 3, "fc": 4}
    return (fixed.get(variant, 1), 0)


def layer_ablation_table(
    results: pd.DataFrame,
    ood_sets: Sequence[str],
    *,
    variants: Sequence[str] | None = None,
    metrics: Sequence[str] = ("fpr95", "auroc"),
    average: bool = False,
    split: str | None = "test",
    experiment: str | None = "layers",
) -> pd.DataFrame:
    """Paper Table 7: OPNP inside the network. Rows: the ``variant`` values ``none`` (the
    unpruned network), ``layer1`` .. ``layer4`` (last conv of each stage; ``stage1`` ..
    for the small CNN), ``global`` (one threshold over every conv and the FC layer),
    ``layerwise`` (the same percentages in every one of them), ``fc`` (the main OPNP
    result), labelled as in the paper (:data:`LAYER_LABELS`); default ``variants=None``:
    those present, no pruning first, then layers by number, unknown names (by
    appearance), global, layer-wise, FC. An explicit list must all be present. Columns:
    ``ood_sets`` (no average in the paper), ``"FPR95/AUROC"`` cells, then
    :data:`PERCENTAGES_LABEL` (the row's selected ``weight_low`` / ``weight_high``, for
    the FC row also the neuron percentages; "none eligible" where no setting kept the
    accuracy), :data:`VAL_ACCURACY_LABEL` (``val_id_accuracy`` of the row's params, the
    accuracy its selection saw) and ``ID Acc`` (the pruned network's ID test accuracy,
    ``id_accuracy``), both required. Bold: best row per column."""
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
    frame = select_rows(
        results,
        split=split,
        experiment=experiment,
        columns=["variant", "params", "id_accuracy"],
        table="layer_ablation_table",
    )
    frame = frame.assign(variant=frame["variant"].astype(str))
    variant_of = {LAYER_LABELS.get(v, v): v for v in dict.fromkeys(frame["variant"])}
    percentages, val_accuracy, accuracy = [], [], []
    for label in table.index:
        variant = variant_of[label]
        rows = frame[frame["variant"] == variant]
        per_seed = rows.groupby("seed", sort=True)["id_accuracy"].first()
        if per_seed.isna().any():
            raise ValueError(
                f"layer_ablation_table: variant {variant!r} has no id_accuracy "
                "(the pruned network's ID accuracy); rerun the layers rule"
            )
        seeds = tuple(map(int, per_seed.index))
        accuracy.append(SeedStat("id_accuracy", tuple(map(float, per_seed)), seeds))
        params = {
            int(seed): params_dict(text, f"layer_ablation_table variant {variant!r}")
            for seed, text in rows.groupby("seed", sort=True)["params"].first().items()
        }
        missing = [seed for seed, p in params.items() if VAL_ACCURACY_KEY not in p]
        if missing:
            raise ValueError(
                f"layer_ablation_table: variant {variant!r} has no {VAL_ACCURACY_KEY!r} in "
                f"its params (seeds {missing}); rerun the layers rule"
            )
        values = [params[s][VAL_ACCURACY_KEY] for s in seeds]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            val_accuracy.append(SeedStat("id_accuracy", tuple(map(float, values)), seeds))
        else:  # pooled replicates that differ: "per replicate" (opnp.pipeline.replicates)
            val_accuracy.append("; ".join(dict.fromkeys(map(str, values))))
        texts = list(dict.fromkeys(_percentages_text(p) for p in params.values()))
        percentages.append("; ".join(texts))
    table[PERCENTAGES_LABEL] = percentages
    table[VAL_ACCURACY_LABEL] = val_accuracy
    table[METRICS["id_accuracy"][0]] = accuracy
    return table


def _percentages_text(params: Mapping[str, Any]) -> str:
    """A Table 7 row's pruning percentages: ``"10 / 0.5"`` (weights low / high), with
    ``"; neurons 10 / 5"`` where the row prunes neurons too (the FC row), ``"-"`` for no
    pruning, `` (none eligible)`` where no setting kept the ID accuracy."""
    if not any(k in params for k in PERCENTAGE_ORDER):
        return "-"
    text = " / ".join(number_text(params.get(k, 0)) for k in ("weight_low", "weight_high"))
    if any(k in params for k in ("neuron_low", "neuron_high")):
        neurons = " / ".join(number_text(params.get(k, 0)) for k in ("neuron_low", "neuron_high"))
        text += f"; neurons {neurons}"
    if params.get(NONE_ELIGIBLE_KEY):
        text += " (none eligible)"
    return text


def fraction_value(variant: str) -> float:
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
    experiment: str | None = "subsets",
) -> pd.DataFrame:
    """Paper Table 8: OPP with sensitivities estimated on a fraction of the training set.

    Columns: ``"w/o pruning"`` (rows with ``variant == "none"``, the Energy baseline)
    then each fraction (``variant`` such as ``"1%"``; default ``fractions=None``: those
    present, ascending); rows: ``ood_sets``; ``"FPR95/AUROC"`` cells, mean ± std over
    the subset seeds. Bold: best column per row."""

    def order(frame: pd.DataFrame) -> list[str]:
        found = [v for v in dict.fromkeys(frame["variant"]) if v != NO_PRUNING]
        return [NO_PRUNING, *sorted(found, key=fraction_value)]

    names = None
    if fractions is not None:
        fractions = check_names(fractions, "fractions")
        for f in fractions:
            fraction_value(f)
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
    experiment: str | None = "statistics",
    show_selected: bool = True,
) -> pd.DataFrame:
    """Paper Table 9: ONP with each neuron statistic. Columns: Mean, Max, Min, Median,
    Norm, Variance (``variant`` mean .. variance; default ``statistics=None``: those
    present in this order, unknown ones after); rows: ``ood_sets``; ``"FPR95/AUROC"``
    cells. Bold: best statistic per row. With ``show_selected`` a last row
    :data:`SELECTED_LABEL` gives each statistic's hyperparameters (``params`` of its
    rows, ``"key=value, ..."``): they are selected per statistic, whose scales differ."""
    known = list(STATISTIC_LABELS)
    frame = select_rows(
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
            texts.append(_params_text(params_dict(params.iloc[0], what)))
        table.loc[SELECTED_LABEL] = texts
    return table


def _params_text(params: Mapping[str, Any]) -> str:
    """``"key=value, ..."`` (keys sorted), ``"-"`` for none."""
    return ", ".join(f"{k}={number_text(params[k])}" for k in sorted(params)) or "-"


#: Methods of the readings table's reference rows (from the main results), when run.
READING_REFERENCES = ("energy", "react")
#: Label of the readings table's ID accuracy column.
ID_ACC_LABEL = "ID acc."


def readings_table(
    readings: pd.DataFrame,
    main: pd.DataFrame,
    ood_sets: Sequence[str],
    *,
    references: Sequence[str] = READING_REFERENCES,
) -> pd.DataFrame:
    """The readings ablation: one row per (method, ``<reading>=<value>``) of the test rows
    ``readings`` (experiment "readings", in their order), then the ``references`` found
    in the main test rows ``main``. Columns: FPR95 and AUROC per OOD set and their
    Average, then :data:`ID_ACC_LABEL` (``id_accuracy``, the mean over a row's OOD sets
    per seed: the test families' settings, and so their pruned layers, may differ).
    Bold: best row per column."""
    from opnp.report.table_methods import main_results_table

    readings = check_frame(readings, "readings", ["method", "variant", "id_accuracy"])
    if readings.empty:
        raise ValueError("readings_table: no test rows of the readings experiment")
    readings = readings.assign(
        method=readings["method"].astype(str) + " / " + readings["variant"].astype(str)
    )
    entities = list(dict.fromkeys(readings["method"]))
    labels = {}
    for entity in entities:
        method, variant = entity.split(" / ", 1)
        labels[entity] = f"{METHOD_LABELS.get(method, method)} ({variant})"
    shown = [m for m in references if m in set(main["method"])]
    frame = pd.concat([readings, main[main["method"].isin(shown)]], ignore_index=True)
    table = main_results_table(
        frame, [*entities, *shown], ood_sets, method_labels=labels, experiment=None
    )
    accuracy = []
    for entity in [*entities, *shown]:
        rows = frame[frame["method"] == entity]
        per_seed = rows.groupby("seed", sort=True)["id_accuracy"].mean()
        if per_seed.isna().any():
            raise ValueError(f"readings_table: {entity!r} has no id_accuracy")
        accuracy.append(
            SeedStat("id_accuracy", tuple(map(float, per_seed)), tuple(map(int, per_seed.index)))
        )
    table[(ID_ACC_LABEL, "")] = accuracy
    return table
