"""Caption text: what a table's numbers rest on (n, seeds, what ± means, the bold rule,
subset sizes, what each row prunes), taken from its rows and cells, never hard-coded."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from opnp import bootstrap as _bootstrap
from opnp.pipeline.ablations import NONE_ELIGIBLE_KEY
from opnp.pruning import PERCENTAGE_NAMES
from opnp.report.cells import BOLD_ATTR, flat_labels, stat_parts
from opnp.report.frames import check_frame, number_text, ood_order, params_dict, select_rows
from opnp.report.labels import NO_PRUNING
from opnp.report.table_ablations import (
    LAYER_LABELS,
    PERCENTAGES_LABEL,
    VAL_ACCURACY_LABEL,
    fraction_value,
)

#: Key of Table 8's ``params`` holding the number of training images of the subset.
SUBSET_SAMPLES_KEY = "sensitivity_samples"


def _count(n: int) -> str:
    return f"{int(n):,}"


def sample_sizes_text(results: pd.DataFrame, ood_sets: Sequence[str] | None = None) -> str:
    """``"n = 540 ID test images; OOD test images per set: A 400, B 300."`` from the
    ``n_id`` / ``n_ood`` columns of the rows about an OOD set (``ood_sets``: those, in
    this order; default: every set, by appearance); ``"n = 540 ID test images."`` for
    rows about no OOD set (Table 3's accuracy)."""
    frame = check_frame(results, "results", ["ood_set", "n_id", "n_ood"])
    if frame.empty:
        raise ValueError("results has no rows to state n from")
    if ood_sets is None and (frame["ood_set"] == "").all():
        n_id = sorted({int(n) for n in frame["n_id"]})
        return f"n = {' or '.join(_count(n) for n in n_id)} ID test images."
    frame = frame[frame["ood_set"] != ""]
    names = ood_order(frame, ood_sets)
    frame = frame[frame["ood_set"].isin(names)]
    if frame.empty:
        raise ValueError(f"results has no rows about the OOD sets {names}")
    n_id = sorted({int(n) for n in frame["n_id"]})
    id_text = " or ".join(_count(n) for n in n_id)
    per_set = []
    for name in names:
        sizes = sorted({int(n) for n in frame.loc[frame["ood_set"] == name, "n_ood"]})
        if not sizes:
            raise ValueError(f"results has no rows about OOD set {name!r}")
        per_set.append((name, " or ".join(_count(n) for n in sizes)))
    if len({size for _, size in per_set}) == 1:
        sets = "1 set" if len(per_set) == 1 else f"{len(per_set)} sets"
        ood_text = f"{per_set[0][1]} OOD test images per set ({sets})"
    else:
        ood_text = "OOD test images per set: " + ", ".join(f"{n} {s}" for n, s in per_set)
    return f"n = {id_text} ID test images; {ood_text}."


#: Below this many ID test images, or OOD test images in a set, a table's numbers are
#: too coarse to compare methods: FPR95 moves in steps of 100 / n_ood points, and the
#: 95 % TPR threshold rests on the 5 % lowest-scoring ID images, fewer than 5 of them.
#: Such a table's caption and the log say so (:func:`small_sample_text`).
SMALL_SAMPLE = 100


def small_sample_text(
    results: pd.DataFrame, ood_sets: Sequence[str] | None = None, threshold: int = SMALL_SAMPLE
) -> str:
    """A caution for a caption when the rows rest on fewer than ``threshold`` ID test
    images or OOD test images of a set (those of ``ood_sets``, default every set); ""
    otherwise. Its numbers come from the ``n_id`` / ``n_ood`` columns."""
    frame = check_frame(results, "results", ["ood_set", "n_id", "n_ood"])
    small = []
    n_id = int(frame["n_id"].min()) if len(frame) else threshold
    if n_id < threshold:
        small.append(f"{_count(n_id)} ID test images")
    ood = frame[frame["ood_set"] != ""]
    if len(ood):
        for name in ood_order(ood, ood_sets):
            rows = ood[ood["ood_set"] == name]
            if len(rows) and int(rows["n_ood"].min()) < threshold:
                small.append(f"{_count(int(rows['n_ood'].min()))} OOD test images of {name}")
    if not small:
        return ""
    step = ""
    if len(ood):
        n_ood = int(ood["n_ood"].min())
        step = f" FPR95 moves in steps of {100 / n_ood:.2f} points at {_count(n_ood)} OOD images;"
    return (
        f"Small sample: only {', '.join(small)} (fewer than {threshold}).{step} the intervals "
        "and the bold marks mean little at this size, so read the table as a check that the "
        "pipeline runs, not as a comparison of methods."
    )


def _entity_seed_counts(table: pd.DataFrame) -> dict[str, int]:
    """Compared entity (method / variant label) -> its number of seeds: entities are the
    rows of a table bolded per column, the columns of one bolded per row."""
    by_columns = table.attrs.get(BOLD_ATTR, "columns") != "rows"
    labels = flat_labels(table.index if by_columns else table.columns)
    counts: dict[str, int] = {}
    for r in range(table.shape[0]):
        for c in range(table.shape[1]):
            label = labels[r if by_columns else c]
            for part in stat_parts(table.iat[r, c]):
                counts[label] = max(counts.get(label, 0), part.n)
    return counts


def seeds_text(table: pd.DataFrame) -> str:
    """What the cells are over seeds and what ± means, from the cells themselves."""
    counts = _entity_seed_counts(table)
    if not counts:
        return ""
    values = sorted(set(counts.values()))
    if values == [1]:
        return "One seed per cell (no ±)."
    pm = "± is the sample standard deviation (ddof = 1) over seeds"
    if len(values) == 1:
        return f"Cells are mean ± std over {values[0]} seeds; {pm}."
    common = max(values, key=lambda k: (list(counts.values()).count(k), -k))
    others = [
        f"{k} for {', '.join(label for label, n in counts.items() if n == k)}"
        for k in values
        if k != common
    ]
    return f"Seeds per cell: {common}, {'; '.join(others)}; {pm} (a single seed shows no ±)."


def bold_rule_text(table: pd.DataFrame, confidence: float = _bootstrap.DEFAULT_CONFIDENCE) -> str:
    """The bold rule of :func:`~opnp.report.render.write_table` for this table, in words:
    per column or row, with the confidence and number of resamples of its paired
    intervals."""
    axis = table.attrs.get(BOLD_ATTR, "columns")
    if axis is None:
        return ""
    where = "column" if axis == "columns" else "row"
    parts = [p for cell in table.to_numpy().ravel() for p in stat_parts(cell)]
    lengths = sorted({len(p.resamples) for p in parts if p.resamples is not None})
    if not lengths:
        return f"Bold: the best value in each {where} (ties at the printed precision)."
    resamples = " or ".join(_count(n) for n in lengths)
    return (
        f"Bold: the best value in each {where} and every value whose paired "
        f"{float(confidence):g} % bootstrap interval of the difference to the best includes 0 "
        f"({resamples} resamples of the ID and OOD test images, the same for every cell; "
        "the intervals cover test-sample noise, not seeds)."
    )


def caption_notes(
    table: pd.DataFrame,
    results: pd.DataFrame,
    *,
    confidence: float = _bootstrap.DEFAULT_CONFIDENCE,
    ood_sets: Sequence[str] | None = None,
) -> str:
    """The sentences every comparison table's caption carries: n (ID and OOD test images,
    from ``results``, the rows the table was built from), a caution below
    :data:`SMALL_SAMPLE` images (:func:`small_sample_text`), seeds and what ± means, and
    the bold rule."""
    texts = [sample_sizes_text(results, ood_sets), small_sample_text(results, ood_sets)]
    texts += [seeds_text(table), bold_rule_text(table, confidence)]
    return " ".join(t for t in texts if t)


def subset_sizes(
    results: pd.DataFrame, *, split: str | None = "test", experiment: str | None = "subsets"
) -> dict[str, int]:
    """Table 8's subset sizes: fraction variant (``"5%"``) -> training images, from the
    ``params`` key :data:`SUBSET_SAMPLES_KEY` of its rows, fractions ascending."""
    frame = select_rows(
        results,
        split=split,
        experiment=experiment,
        columns=["variant", "params"],
        table="subset_sizes",
    )
    frame = frame[frame["variant"].astype(str) != NO_PRUNING]
    sizes: dict[str, int] = {}
    for variant, text in zip(frame["variant"].astype(str), frame["params"], strict=True):
        params = params_dict(text, f"subset_sizes variant {variant!r}")
        if SUBSET_SAMPLES_KEY not in params:
            raise ValueError(
                f"subset_sizes: the params {text!r} of variant {variant!r} lack "
                f"{SUBSET_SAMPLES_KEY!r} (the number of training images of the subset)"
            )
        n = int(params[SUBSET_SAMPLES_KEY])
        if sizes.setdefault(variant, n) != n:
            raise ValueError(
                f"subset_sizes: variant {variant!r} has subsets of {sizes[variant]} and {n} images"
            )
    if not sizes:
        raise ValueError("subset_sizes: no rows with a training fraction")
    return {v: sizes[v] for v in sorted(sizes, key=fraction_value)}


def subset_sizes_text(results: pd.DataFrame, **select) -> str:
    """``"Subset sizes: 1% = 9, 5% = 45, 100% = 898 training images."``"""
    sizes = subset_sizes(results, **select)
    listed = ", ".join(f"{v} = {_count(n)}" for v, n in sizes.items())
    return f"Subset sizes: {listed} training images (the same size for every seed)."


def sensitivity_set_note(train: str = "", unlabeled: Sequence[str] = (), **_: Any) -> str:
    """Which images the OPNP sensitivities come from (captions of the tables and figures
    built on them)."""
    if not train:
        return ""
    extra = f" and the unlabeled images of {', '.join(unlabeled)}" if unlabeled else ""
    return f" OPNP's sensitivities come from the training set {train}{extra}."


def onp_low_side_note(
    statistic: str, reduction: str, unlabeled: Sequence[str] = (), **_: Any
) -> str:
    """Table 4's caption note: with the "mean" neuron statistic and the per-sample
    sensitivity (Eq. 6), s_j = mean_k |h_j(x_k)| / C because the softmax sums to 1, so
    ONP's low side prunes the same neurons as TNP (docs/methods.md, "ONP's low side is
    TNP"); "" for settings where that does not hold in general (also when unlabeled
    images join the sensitivity set: TNP's statistic is on the training set alone)."""
    if statistic == "mean" and reduction == "per_sample" and not unlabeled:
        return (
            " With the mean neuron statistic, ONP's neuron sensitivity is the mean |activation|"
            " / C (the softmax sums to 1), so its low side prunes exactly TNP's neurons: any"
            " difference between ONP and TNP comes from ONP's high side (neuron_high)."
        )
    return ""


def layer_ablation_caption(results: pd.DataFrame, model: str) -> str:
    """Table 7's caption from its rows: which weights each row prunes and how its
    percentages were selected (the in-network rows on validation from their own grid
    within an ID-accuracy limit, read from their params; the FC row is OPNP's selection)."""
    frame = check_frame(results, "results", ["variant", "params"])
    params = {
        str(v): params_dict(p, f"table7 variant {v!r}")
        for v, p in zip(frame["variant"], frame["params"], strict=True)
    }
    if "fc" not in params:
        raise ValueError(f"layer_ablation_caption: no 'fc' row (have {sorted(params)})")
    fc = params["fc"]
    pct = {k: number_text(fc.get(k, 0)) for k in PERCENTAGE_NAMES}
    in_rows = {v: p for v, p in params.items() if v not in ("fc", NO_PRUNING)}
    pooled = next((p for v, p in in_rows.items() if v in ("global", "layerwise")), {})
    n_layers = len(pooled.get("parameters", [])) - 1
    subset = next(iter(in_rows.values()), {}).get("sensitivity", "a training subset")
    text = (
        f"OPNP applied in different layers ({model}, paper Table 7), cells FPR95/AUROC; "
        f"{PERCENTAGES_LABEL}: the percentages of least / most sensitive weights each row "
        f"prunes; {VAL_ACCURACY_LABEL} / ID Acc: the pruned network's ID accuracy (%) on the "
        "validation set its percentages were selected on and on the test set. Layer rows: "
        "one stage's last convolution only. Global Threshold Pruning: one threshold pair "
        f"over the weights of all {n_layers} convolutions and the FC layer together; "
        "Layer-wise Pruning: the percentages in each of them with its own thresholds "
        f"(in-network sensitivities from {subset}). "
    )
    if in_rows:
        text += _in_network_selection_text(in_rows) + " "
    return text + (
        "FC Layer: the main OPNP result, selected on validation over OPNP's own grid: the "
        f"{pct['weight_low']} % least and {pct['weight_high']} % most sensitive weights and "
        f"{pct['neuron_low']} % / {pct['neuron_high']} % least / most sensitive neurons of "
        "the FC layer pruned, sensitivities from the full training set. No pruning: the "
        "unpruned network (Energy)."
    )


def _in_network_selection_text(in_rows: dict[str, dict]) -> str:
    """How Table 7's in-network rows chose their percentages, from their params: the
    grid, the metric and the accuracy limit (each must be the same in every row)."""

    def common(key: str):
        values = {json.dumps(p.get(key), sort_keys=True) for p in in_rows.values()}
        if len(values) != 1:
            raise ValueError(
                f"layer_ablation_caption: the in-network rows differ in {key!r} "
                f"({sorted(values)}); were they written by one layers job?"
            )
        return in_rows[next(iter(in_rows))].get(key)

    grid = common("grid") or {}
    metric = common("selection_metric")
    limit = common("max_accuracy_loss")
    if metric is None:
        raise ValueError(
            "layer_ablation_caption: the in-network rows have no 'selection_metric' in "
            "their params (written before they were selected on validation); rerun the "
            "layers rule"
        )
    grid_text = " x ".join(
        f"{k} {{{', '.join(number_text(v) for v in values)}}}" for k, values in grid.items()
    )
    best = {
        "fpr95": "the lowest mean validation FPR95",
        "auroc": "the highest mean validation AUROC",
    }.get(metric, f"the best mean validation {metric}")
    text = (
        "Each layer, global and layer-wise row selects its own percentages"
        f"{f' from the grid {grid_text}' if grid_text else ''} on the validation ID and OOD "
        f"sets of the main selection ({best} over the OOD sets)"
    )
    if limit is None:
        text += ", with no limit on the ID accuracy."
    else:
        text += (
            f", among the settings losing at most {number_text(limit)} points of validation "
            "ID accuracy against the unpruned network."
        )
    kept = [
        LAYER_LABELS.get(v, v)
        for v, p in in_rows.items()
        if not p.get(NONE_ELIGIBLE_KEY)
        and float(p.get("weight_low", 0)) == 0
        and float(p.get("weight_high", 0)) == 0
    ]
    if kept:
        text += (
            f" For {', '.join(kept)} the selected setting prunes nothing (0 / 0): no pruning "
            "of these weights scored better on validation."
        )
    fallback = [LAYER_LABELS.get(v, v) for v, p in in_rows.items() if p.get(NONE_ELIGIBLE_KEY)]
    if fallback:
        text += (
            f" No setting stayed within that limit for {', '.join(fallback)}: "
            "these rows prune nothing (marked 'none eligible')."
        )
    return text


def readings_sensitivity_note(results: pd.DataFrame, reduction: str) -> str:
    """The readings table's note on S: which of its rows compute their own S (over the
    same images as the main one, of reduction ``reduction``), from the ``variant``
    values shown."""
    frame = check_frame(results, "results", ["variant"])
    own = [
        v
        for v in dict.fromkeys(frame["variant"].astype(str))
        if v == "sensitivity_features=clipped"
        or (v.startswith("reduction=") and v != f"reduction={reduction}")
    ]
    if not own:
        return ""
    return (
        f" The rows {', '.join(own)} use an S computed for that reading over the same "
        "images (the clipped S at each test family's ReAct percentile); every other row "
        "uses the main S."
    )
