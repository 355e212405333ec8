"""The result figures: paper Fig. 4 (calibration of the original and the OPNP-pruned FC
layer) and Fig. 5 (score distributions of ID and OOD samples). Files and checks:
:mod:`opnp.report.figure_style`."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from opnp.report.figure_style import (
    PANEL_LETTERS,
    bin_count,
    figure_frame,
    finite_array,
    histogram,
    named_arrays,
    new_figure,
    png_path,
    save_figure,
    seaborn_style,
)

#: Fig. 4: the ``method`` values of the calibration frame -> panel titles.
CALIBRATION_LABELS = {"energy": "Original FC layer", "opnp": "OPNP-pruned FC layer"}


def _calibration_checks(frame: pd.DataFrame, method: str) -> tuple[pd.DataFrame, float]:
    rows = frame[frame["method"] == method].sort_values("bin_lower")
    what = f"calibration, method {method!r}"
    lower = rows["bin_lower"].to_numpy(dtype=np.float64)
    upper = rows["bin_upper"].to_numpy(dtype=np.float64)
    count = rows["count"].to_numpy(dtype=np.float64)
    if not (np.isfinite(lower).all() and np.isfinite(upper).all()):
        raise ValueError(f"{what}: bin_lower / bin_upper have NaN values")
    if (lower < 0).any() or (upper > 1).any() or (upper <= lower).any():
        raise ValueError(f"{what}: bins must satisfy 0 <= bin_lower < bin_upper <= 1")
    if (~np.isfinite(count)).any() or (count < 0).any() or (count != np.round(count)).any():
        raise ValueError(f"{what}: count must be non-negative integers")
    if count.sum() == 0:
        raise ValueError(f"{what}: every bin is empty (count 0)")
    filled = count > 0
    for column in ("confidence", "accuracy"):
        values = rows[column].to_numpy(dtype=np.float64)[filled]
        if not np.isfinite(values).all():
            raise ValueError(f"{what}: {column} is NaN in a bin with samples")
        if (values < 0).any() or (values > 1).any():
            raise ValueError(
                f"{what}: {column} must be a fraction in [0, 1] (got max {values.max():g})"
            )
    ece = rows["ece"].unique()
    if len(ece) != 1 or not math.isfinite(float(ece[0])):
        raise ValueError(f"{what}: ece must be one finite value per method, got {list(ece)}")
    gaps = np.abs(rows["accuracy"].to_numpy()[filled] - rows["confidence"].to_numpy()[filled])
    from_bins = 100.0 * float(np.sum(count[filled] * gaps) / count.sum())
    if not math.isclose(float(ece[0]), from_bins, rel_tol=1e-6, abs_tol=1e-6):
        raise ValueError(
            f"{what}: ece = {float(ece[0]):g} but the bins give {from_bins:.6g} % "
            "(ece must be in percent, from the same bins)"
        )
    return rows, float(ece[0])


def plot_reliability(
    calibration: pd.DataFrame,
    out_path: str | os.PathLike,
    *,
    min_bin_count: int = 10,
    method_labels: Mapping[str, str] | None = None,
    title: str = "Calibration on the ID test set",
) -> Figure:
    """Paper Fig. 4: (a) the confidence histogram of each method (fraction of samples per
    bin, dashed: mean confidence), then one reliability diagram per method (accuracy per
    confidence bin as bars, the gap to the mean confidence hatched, the diagonal = perfect
    calibration) with the ECE in its title. Each bar is labelled with its bin's sample
    count; bins with fewer than ``min_bin_count`` samples (whose accuracy is too noisy to
    read; the workflow passes ``ablations.calibration.min_bin_count``) are drawn faded,
    as their own legend entry.

    ``calibration``: columns ``method`` (``"energy"`` = the original layer, ``"opnp"``),
    ``bin_lower, bin_upper, confidence, accuracy`` (fractions; NaN allowed only in empty
    bins), ``count``, ``ece`` (percent, checked against the bins).

    Facts (caption): per method ``ece``, ``n``, ``accuracy``, ``mean_confidence``,
    ``sparse_bins`` (filled bins under ``min_bin_count``), ``filled_bins``; ``n_bins``,
    ``min_bin_count``."""
    path = png_path(out_path)
    if (
        isinstance(min_bin_count, bool)
        or not isinstance(min_bin_count, int | np.integer)
        or min_bin_count < 1
    ):
        raise ValueError(f"min_bin_count must be a positive integer, got {min_bin_count!r}")
    frame = figure_frame(
        calibration,
        "calibration",
        ["method", "bin_lower", "bin_upper", "confidence", "accuracy", "count", "ece"],
    )
    methods = list(dict.fromkeys(frame["method"]))
    checked = {m: _calibration_checks(frame, m) for m in methods}
    labels = {**CALIBRATION_LABELS, **(method_labels or {})}
    facts: dict[str, Any] = {
        "figure": "reliability",
        "min_bin_count": int(min_bin_count),
        "n_bins": {m: int(len(checked[m][0])) for m in methods},
        "methods": {},
    }
    with seaborn_style() as sns:
        fig, axes = new_figure(1, 1 + len(methods), panel_size=(4.0, 3.8))
        palette = sns.color_palette("deep", len(methods))
        facts["methods"] = _confidence_histogram(
            axes[0, 0], checked, labels, palette, min_bin_count
        )
        for i, method in enumerate(methods, start=1):
            rows, ece = checked[method]
            panel_title = f"({PANEL_LETTERS[i]}) {labels.get(method, method)}\nECE = {ece:.2f} %"
            _reliability_diagram(axes[0, i], rows, palette[i - 1], min_bin_count, panel_title)
        fig.suptitle(title)
        facts["summary"] = _reliability_summary(facts)
        return save_figure(fig, path, facts)


def _confidence_histogram(
    ax,
    checked: Mapping[str, tuple[pd.DataFrame, float]],
    labels: Mapping[str, str],
    palette,
    min_bin_count: int,
) -> dict[str, dict[str, Any]]:
    """Fig. 4 (a): each method's share of samples per confidence bin (bars side by side),
    dashed at its mean confidence; returns each method's facts."""
    facts = {}
    for i, (method, (rows, ece)) in enumerate(checked.items()):
        width = (rows["bin_upper"] - rows["bin_lower"]).to_numpy() / len(checked)
        count = rows["count"].to_numpy(dtype=np.float64)
        share = count / count.sum()
        ax.bar(
            rows["bin_lower"].to_numpy() + i * width,
            share,
            width=width,
            align="edge",
            color=palette[i],
            label=labels.get(method, method),
        )
        filled = count > 0
        mean_conf = float(np.average(rows["confidence"][filled], weights=count[filled]))
        accuracy = float(np.average(rows["accuracy"][filled], weights=count[filled]))
        ax.axvline(mean_conf, color=palette[i], ls="--", lw=1.2)
        facts[method] = {
            "label": labels.get(method, method),
            "ece": ece,
            "n": int(count.sum()),
            "accuracy": accuracy,
            "mean_confidence": mean_conf,
            "filled_bins": int(filled.sum()),
            "sparse_bins": int(((count > 0) & (count < min_bin_count)).sum()),
        }
    ax.set_xlim(0, 1)
    ax.set_xlabel("confidence (max softmax)")
    ax.set_ylabel("fraction of samples")
    ax.set_title("(a) Confidence histogram")
    ax.legend(loc="upper left", fontsize="small")
    return facts


def _reliability_diagram(ax, rows: pd.DataFrame, colour, min_bin_count: int, title: str) -> None:
    """One method's reliability diagram: accuracy bars of its non-empty bins (faded where
    sparse), the gap to the confidence hatched, each bin's count, the diagonal."""
    rows = rows[rows["count"] > 0]
    sparse = (rows["count"] < min_bin_count).to_numpy()
    for subset, alpha, label in (
        (~sparse, 1.0, "accuracy"),
        (sparse, 0.3, f"accuracy, bin with < {min_bin_count} samples"),
    ):
        if subset.any():
            _accuracy_bars(ax, rows[subset], colour, alpha, label)
    # The sample count of each bin, at the foot of its bar.
    centres = ((rows["bin_lower"] + rows["bin_upper"]) / 2).to_numpy()
    for x, n in zip(centres, rows["count"].to_numpy(), strict=True):
        ax.text(
            x,
            0.02,
            f"{int(n):,}",
            rotation=90,
            ha="center",
            va="bottom",
            fontsize="xx-small",
            color="0.1",
        )
    ax.plot([0, 1], [0, 1], color="0.3", ls="--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (max softmax)\nnumber on a bar: samples in its bin")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    # Below the panel: inside it would cover bars near accuracy 1.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncols=2, fontsize="x-small")


def _accuracy_bars(ax, part: pd.DataFrame, colour, alpha: float, label: str) -> None:
    """Accuracy bars of the bins ``part`` and, hatched on top, their gap to confidence."""
    lower = part["bin_lower"].to_numpy()
    width = (part["bin_upper"] - part["bin_lower"]).to_numpy()
    accuracy = part["accuracy"].to_numpy()
    confidence = part["confidence"].to_numpy()
    ax.bar(
        lower,
        accuracy,
        width=width,
        align="edge",
        color=colour,
        edgecolor="0.25",
        alpha=alpha,
        label=label,
    )
    ax.bar(
        lower,
        confidence - accuracy,
        bottom=accuracy,
        width=width,
        align="edge",
        color="tab:red",
        alpha=0.3 * alpha,
        hatch="//",
        edgecolor="tab:red",
        label="gap to confidence" if alpha == 1.0 else None,
    )


def _reliability_summary(facts: Mapping[str, Any]) -> str:
    sentences = []
    for method, f in facts["methods"].items():
        if f["mean_confidence"] > f["accuracy"]:
            kind = "over-confident on average"
        elif f["mean_confidence"] < f["accuracy"]:
            kind = "under-confident on average"
        else:
            kind = "neither over- nor under-confident on average"
        sentences.append(
            f"{f['label']}: ECE {f['ece']:.2f} % over {f['n']:,} ID test images in "
            f"{facts['n_bins'][method]} bins; accuracy {100 * f['accuracy']:.2f} %, mean "
            f"confidence {100 * f['mean_confidence']:.2f} % ({kind}); {f['sparse_bins']} of "
            f"its {f['filled_bins']} non-empty bins hold fewer than {facts['min_bin_count']} "
            "samples (faded)."
        )
    return " ".join(sentences)


def plot_score_distributions(
    scores: Mapping[str, Mapping[str, Any]],
    out_path: str | os.PathLike,
    *,
    bins: int = 60,
    title: str = "Score distributions of ID and OOD samples",
) -> Figure:
    """Paper Fig. 5: ``scores = {method label: {"ID": array, <OOD name>: array, ...}}``
    (and ``"ID@<OOD name>"``: the ID scores of the setting that scored that OOD set, where
    each test family has its own validation-selected setting);
    one column per method (e.g. Energy, OPNP), one row per OOD set, each panel the
    density histograms of the ID scores and that OOD set's scores. A row shares its x
    axis and its bins (over all arrays of the row), so the methods of a row compare on
    one scale: pass scores of one kind (Energy and OPNP are both energies). Each panel's
    title states the AUROC and FPR95 (ID positive, percent); each row's legend sits to
    the right of the row, off the data.

    Facts (caption): ``n_id``, per method and OOD set ``n_ood``, ``auroc``, ``fpr95``
    (percent)."""
    path = png_path(out_path)
    bins = bin_count(bins)
    oods, arrays = _checked_scores(scores)
    facts: dict[str, Any] = {
        "figure": "score_distributions",
        "n_id": {m: int(sets["ID"].size) for m, sets in arrays.items()},
        "methods": {m: {} for m in arrays},
    }
    with seaborn_style() as sns:
        fig, axes = new_figure(len(oods), len(arrays), panel_size=(4.2, 3.0), sharex="row")
        palette = sns.color_palette("deep")
        for r, ood in enumerate(oods):
            row_facts = _score_row(axes[r], arrays, ood, bins, palette)
            for method, ood_facts in row_facts.items():
                facts["methods"][method][ood] = ood_facts
        fig.suptitle(title)
        facts["summary"] = _score_summary(facts, oods)
        return save_figure(fig, path, facts)


def _checked_scores(
    scores: Mapping[str, Mapping[str, Any]],
) -> tuple[list[str], dict[str, dict[str, np.ndarray]]]:
    """``(OOD set names, {method: {name: finite 1-D array}})`` of Fig. 5's ``scores``
    (ValueError unless every method has ``ID`` and the same OOD sets)."""
    methods = named_arrays(scores, "scores")
    oods: list[str] | None = None
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for method, sets in methods.items():
        if not isinstance(sets, Mapping) or "ID" not in sets:
            raise ValueError(f"scores[{method!r}] must be a dict with an 'ID' array and OOD arrays")
        names = [n for n in sets if n != "ID" and not n.startswith("ID@")]
        if not names:
            raise ValueError(f"scores[{method!r}] has no OOD set besides 'ID'")
        if oods is None:
            oods = names
        elif sorted(names) != sorted(oods):
            raise ValueError(
                f"scores[{method!r}] has OOD sets {names} but the first method has {oods}"
            )
        arrays[method] = {
            n: finite_array(sets[n], f"scores[{method!r}][{n!r}]", ndim=1)
            for n in ["ID", *oods, *(f"ID@{o}" for o in oods if f"ID@{o}" in sets)]
        }
    assert oods is not None  # named_arrays refuses an empty mapping
    return oods, arrays


def _score_row(
    axes_row, arrays: Mapping[str, Mapping[str, np.ndarray]], ood: str, bins: int, palette
) -> dict[str, dict[str, Any]]:
    """One row of Fig. 5 (OOD set ``ood``): per method, ID and ``ood`` density
    histograms on the row's shared bins; returns per method ``n_ood``, ``auroc``,
    ``fpr95``."""
    from opnp.metrics import auroc, fpr_at_95_tpr

    # the ID scores of the setting that scored this OOD set
    ids = {m: sets.get(f"ID@{ood}", sets["ID"]) for m, sets in arrays.items()}
    row = [a for m, sets in arrays.items() for a in (ids[m], sets[ood])]
    low = min(float(a.min()) for a in row)
    high = max(float(a.max()) for a in row)
    if high == low:  # constant scores: a unit-wide range around them
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    facts = {}
    for c, (method, sets) in enumerate(arrays.items()):
        ax = axes_row[c]
        for values, label, colour in (
            (ids[method], "ID", palette[0]),
            (sets[ood], ood, palette[3]),
        ):
            histogram(
                ax,
                values,
                edges,
                log=False,
                stat="density",
                element="step",
                alpha=0.35,
                color=colour,
                label=f"{label} (n = {values.size:,})",
            )
        area = 100 * auroc(ids[method], sets[ood])
        fpr = 100 * fpr_at_95_tpr(ids[method], sets[ood])
        facts[method] = {
            "n_ood": int(sets[ood].size),
            "auroc": float(area),
            "fpr95": float(fpr),
        }
        ax.set_title(
            f"{method}: ID vs {ood}\nAUROC {area:.2f} %, FPR95 {fpr:.2f} %",
            fontsize="medium",
        )
        ax.set_xlabel(f"{method} score (higher = ID)")
        ax.set_ylabel("density")
        ax.set_xlim(low, high)
    axes_row[-1].legend(
        loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize="small"
    )
    return facts


def _score_summary(facts: Mapping[str, Any], oods: list[str]) -> str:
    parts = []
    for ood in oods:
        values = "; ".join(
            f"{method} {facts['methods'][method][ood]['auroc']:.2f} / "
            f"{facts['methods'][method][ood]['fpr95']:.2f}"
            for method in facts["methods"]
        )
        parts.append(f"{ood}: {values}")
    n_id = sorted(set(facts["n_id"].values()))
    return (
        f"AUROC / FPR95 (%) on each OOD test set ({' or '.join(f'{n:,}' for n in n_id)} "
        "ID test scores): " + ". ".join(parts) + "."
    )
