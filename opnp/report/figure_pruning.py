"""The pruning figures: paper Fig. 2(b) (sensitivities before and after OPNP pruning)
and Fig. 3 (OOD detection against each pruning percentage). Files and checks:
:mod:`opnp.report.figure_style`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from opnp.report.figure_style import (
    PANEL_LETTERS,
    bin_count,
    figure_frame,
    histogram,
    keep_mask,
    new_figure,
    png_path,
    save_figure,
    seaborn_style,
    sensitivity_array,
)
from opnp.report.frames import params_dict
from opnp.report.labels import METRICS, PERCENTAGE_ORDER

#: Fig. 3's x axis labels: ``weight_high`` -> "high-sensitivity weights pruned (%)".
PERCENTAGE_LABELS = {
    name: "{1}-sensitivity {0}s pruned (%)".format(*name.split("_")) for name in PERCENTAGE_ORDER
}
#: Axis labels of the OOD metrics (:data:`opnp.report.labels.METRICS`), arrow = better.
METRIC_LABELS = {
    metric: f"{label} (%) {'↓' if better == 'lower' else '↑'}"
    for metric, (label, better) in METRICS.items()
    if metric != "id_accuracy"
}


#: Fig. 3: a percentage axis whose positive values span at least this ratio is drawn
#: symlog, so that e.g. 0.1 and 0.2 % do not sit on top of 0 beside 5 %. Not 10: on a
#: 5-50 % sweep symlog crowds 30, 40, 50 together, where a linear axis reads well.
SYMLOG_MIN_SPAN = 20.0


def plot_pruning_before_after(
    param_sensitivity: Any,
    neuron_sensitivity: Any,
    weight_mask: Any,
    neuron_mask: Any,
    out_path: str | os.PathLike,
    *,
    setting: Mapping[str, Any] | None = None,
    bins: int = 100,
    title: str = "Sensitivities before and after OPNP pruning",
) -> Figure:
    """Paper Fig. 2(b): 2x2 histograms, parameter (top) and neuron (bottom) sensitivity,
    before (left) and after (right) pruning. "After" shows the kept values (mask True).
    Both columns are divided by the maximum *before* pruning, so the x axes are the same
    and the removed tails show; counts on a log axis, shared per row. A row whose mask
    keeps everything says so in its "after" panel ("nothing pruned"). ``setting`` (the
    pruning percentages, e.g. the validation-selected ones) is stated under the title.

    Facts (caption): per row (``parameters``, ``neurons``) ``n``, ``kept``,
    ``max_over_mean`` before and after, the kept range (``kept_min``, ``kept_max``, over
    the maximum before pruning); ``nothing_pruned``; ``setting``."""
    path = png_path(out_path)
    bins = bin_count(bins)
    param, neuron, wmask, nmask = _checked_before_after(
        param_sensitivity, neuron_sensitivity, weight_mask, neuron_mask
    )
    setting = _setting(setting)
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = [("Parameter", param, wmask), ("Neuron", neuron, nmask)]
    facts: dict[str, Any] = {
        "figure": "pruning_before_after",
        "setting": setting,
        "nothing_pruned": bool(wmask.all() and nmask.all()),
    }
    with seaborn_style() as sns:
        fig, axes = new_figure(2, 2, panel_size=(5.0, 3.6), sharey="row")
        palette = sns.color_palette("deep")
        for r, (kind, values, keep) in enumerate(rows):
            colours = (palette[0], palette[2])
            facts[f"{kind.lower()}s"] = _before_after_row(
                axes[r], kind, values, keep, edges, colours
            )
        if setting is not None:
            title += "\n" + _setting_text(setting)
        fig.suptitle(title)
        facts["summary"] = _pruning_summary(facts)
        return save_figure(fig, path, facts)


def _checked_before_after(
    param_sensitivity: Any, neuron_sensitivity: Any, weight_mask: Any, neuron_mask: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fig. 2(b)'s arrays checked: shapes that match, masks that keep something."""
    param = sensitivity_array(param_sensitivity, "param_sensitivity")
    neuron = sensitivity_array(neuron_sensitivity, "neuron_sensitivity", ndim=1)
    if param.ndim == 2 and param.shape[1] != neuron.shape[0]:
        raise ValueError(
            f"neuron_sensitivity has {neuron.shape[0]} neurons but param_sensitivity has shape "
            f"{param.shape} (C, D): D must match"
        )
    wmask = keep_mask(weight_mask, "weight_mask", param.shape)
    nmask = keep_mask(neuron_mask, "neuron_mask", neuron.shape)
    for name, m in (("weight_mask", wmask), ("neuron_mask", nmask)):
        if not m.any():
            raise ValueError(
                f"{name} prunes everything ({m.size} of {m.size}): nothing left to plot"
            )
    return param, neuron, wmask, nmask


def _before_after_row(
    axes_row, kind: str, values: np.ndarray, keep: np.ndarray, edges: np.ndarray, colours
) -> dict[str, Any]:
    """One row of Fig. 2(b): ``values`` (over their maximum) before and the kept ones
    after pruning; returns the row's facts."""
    normalised = values / values.max()
    kept = normalised[keep]
    facts = {
        "n": int(values.size),
        "kept": int(keep.sum()),
        "max_over_mean_before": float(1 / normalised.mean()),
        "max_over_mean_after": float(kept.max() / kept.mean()),
        "kept_min": float(kept.min()),
        "kept_max": float(kept.max()),
    }
    histogram(axes_row[0], normalised.ravel(), edges, log=True, color=colours[0])
    histogram(axes_row[1], kept.ravel(), edges, log=True, color=colours[1])
    axes_row[0].set_title(f"{kind} sensitivity, before pruning\n(n = {values.size:,})")
    axes_row[1].set_title(
        f"{kind} sensitivity, after pruning\n"
        + (
            f"(nothing pruned: all {keep.size:,} kept, same as before)"
            if keep.all()
            else f"(kept {keep.sum():,} = {100 * keep.mean():.1f} %)"
        )
    )
    for c in range(2):
        axes_row[c].set_xlim(0, 1)
        axes_row[c].set_xlabel(f"{kind.lower()} sensitivity / max before pruning")
        axes_row[c].set_ylabel("count (log scale)")
    if not keep.all():
        # The kept range: everything outside it was pruned.
        for x in (kept.min(), kept.max()):
            axes_row[1].axvline(x, color="0.3", ls=":", lw=1)
    return facts


def _setting(setting: Any) -> dict[str, float] | None:
    if setting is None:
        return None
    if not isinstance(setting, Mapping):
        raise ValueError(f"setting must be a dict of percentage name -> value, got {setting!r}")
    out = {}
    for name, value in setting.items():
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise ValueError(f"setting[{name!r}] must be a number, got {value!r}")
        out[str(name)] = float(value)
    return out


def _setting_text(setting: Mapping[str, float]) -> str:
    pruned = {k: v for k, v in setting.items() if v}
    if not pruned:
        return "setting: every percentage 0 (no pruning)"
    return "setting: " + ", ".join(f"{k} = {v:g} %" for k, v in pruned.items())


def _pruning_summary(facts: Mapping[str, Any]) -> str:
    setting = facts["setting"]
    lead = ""
    if setting is not None:
        pruned = {k: v for k, v in setting.items() if v}
        lead = (
            "The setting prunes nothing (every percentage is 0). "
            if not pruned
            else "Setting: " + ", ".join(f"``{k}`` = {v:g} %" for k, v in pruned.items()) + ". "
        )
    if facts["nothing_pruned"]:
        return (
            lead + "Nothing was pruned: every weight and every neuron is kept, so the "
            "after-pruning panels repeat the before-pruning ones and the figure shows no "
            "effect of pruning."
        )
    parts = []
    for kind in ("parameters", "neurons"):
        f = facts[kind]
        if f["kept"] == f["n"]:
            parts.append(f"no {kind[:-1]} was pruned (all {f['n']:,} kept)")
            continue
        parts.append(
            f"{f['kept']:,} of {f['n']:,} {kind} kept ({100 * f['kept'] / f['n']:.1f} %), "
            f"their sensitivities run from {f['kept_min']:.3g} to {f['kept_max']:.3g} of the "
            f"maximum before pruning, and max / mean goes from {f['max_over_mean_before']:.1f}× to "
            f"{f['max_over_mean_after']:.1f}×"
        )
    text = "; ".join(parts)
    return lead + text[0].upper() + text[1:] + "."


def _sweep_frame(results: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Rows of the sweep with the varied percentage's value in column ``x``."""
    xs = []
    for variant, text in zip(results["variant"], results["params"], strict=True):
        params = params_dict(text, f"results, variant {variant!r}")
        if variant not in params:
            raise ValueError(
                f"results: the params {text!r} of variant {variant!r} do not hold {variant!r}; "
                "in the sweep the variant names the varied percentage"
            )
        value = params[variant]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"results: percentage {variant}={value!r} is not a number")
        xs.append(float(value))
    frame = results.assign(x=xs)
    bad = ~np.isfinite(frame[list(metrics)].to_numpy(dtype=np.float64))
    if bad.any():
        raise ValueError(f"results has {int(bad.any(axis=1).sum())} rows with NaN {list(metrics)}")
    dup = frame.duplicated(["variant", "x", "ood_set", "seed"])
    if dup.any():
        first = frame.loc[dup].iloc[0]
        raise ValueError(
            f"results has several rows for {first['variant']}={first['x']:g} on "
            f"{first['ood_set']!r} seed {first['seed']} (one expected per point and seed)"
        )
    return frame


def plot_percentage_sweep(
    results: pd.DataFrame,
    out_path: str | os.PathLike,
    *,
    metrics: Sequence[str] = ("fpr95", "auroc"),
    split: str | None = "test",
    experiment: str | None = "sweep",
    title: str = "OOD detection against each pruning percentage (others at 0)",
) -> Figure:
    """Paper Fig. 3: one column per varied percentage (``variant``: weight_high,
    weight_low, neuron_high, neuron_low, in this order; its value read from ``params``),
    one row per metric (FPR95 top, AUROC bottom); a line per OOD set and, dashed black,
    their average (mean over OOD sets per seed, then over seeds). Several seeds: the
    lines are seed means. Uses the rows of ``split`` and ``experiment`` (None: all)."""
    path = png_path(out_path)
    metrics = list(metrics)
    unknown = [m for m in metrics if m not in METRIC_LABELS]
    if not metrics or unknown:
        raise ValueError(f"metrics must be some of {sorted(METRIC_LABELS)}, got {metrics}")
    frame = _sweep_frame(_sweep_rows(results, metrics, split, experiment), metrics)
    names, oods, per_ood, average = _sweep_means(frame, metrics)
    with seaborn_style() as sns:
        fig, axes = new_figure(len(metrics), len(names), panel_size=(4.0, 3.2))
        palette = dict(zip(oods, sns.color_palette("deep", len(oods)), strict=True))
        for c, name in enumerate(names):
            for r, metric in enumerate(metrics):
                _sweep_panel(
                    sns,
                    axes[r, c],
                    per_ood[per_ood["variant"] == name],
                    average[average["variant"] == name].sort_values("x"),
                    name,
                    metric,
                    oods,
                    palette,
                    legend=(r == 0 and c == 0),
                    title=f"({PANEL_LETTERS[c]}) {name}" if r == 0 else None,
                )
        handles, labels = axes[0, 0].get_legend_handles_labels()
        if axes[0, 0].get_legend() is not None:
            axes[0, 0].get_legend().remove()
        fig.legend(handles, labels, title="OOD set", loc="outside right center")
        fig.suptitle(title)
        facts = _sweep_facts(average, names, metrics, oods, frame["seed"].nunique())
        facts["x_scales"] = {name: axes[0, c].get_xscale() for c, name in enumerate(names)}
        return save_figure(fig, path, facts)


def _sweep_rows(
    results: pd.DataFrame, metrics: Sequence[str], split: str | None, experiment: str | None
) -> pd.DataFrame:
    """The rows of ``split`` and ``experiment`` (None: all); ValueError when none."""
    frame = figure_frame(results, "results", ["variant", "params", "ood_set", "seed", *metrics])
    if split is not None:
        frame = frame[frame["split"] == split] if "split" in frame.columns else frame
    if experiment is not None:
        frame = frame[frame["experiment"] == experiment] if "experiment" in frame.columns else frame
    if frame.empty:
        raise ValueError(
            f"results has no rows with split == {split!r} and experiment == {experiment!r}"
        )
    return frame


def _sweep_means(
    frame: pd.DataFrame, metrics: Sequence[str]
) -> tuple[list[str], list[str], pd.DataFrame, pd.DataFrame]:
    """``(swept percentages in PERCENTAGE_ORDER, OOD sets, seed mean per (variant, x,
    OOD set), average over OOD sets per (variant, x))`` of the sweep rows."""
    metrics = list(metrics)
    present = list(dict.fromkeys(frame["variant"]))
    names = [n for n in PERCENTAGE_ORDER if n in present] + [
        n for n in present if n not in PERCENTAGE_ORDER
    ]
    oods = list(dict.fromkeys(frame["ood_set"]))
    # Average over OOD sets per (variant, x, seed): every OOD set must be there.
    counts = frame.groupby(["variant", "x", "seed"])["ood_set"].nunique()
    if (counts != len(oods)).any():
        (variant, x, seed) = counts[counts != len(oods)].index[0]
        raise ValueError(
            f"results: {variant}={x:g} seed {seed} lacks some of the OOD sets {oods}; "
            "the average needs all of them"
        )
    per_ood = frame.groupby(["variant", "x", "ood_set"], as_index=False)[metrics].mean()
    average = (
        frame.groupby(["variant", "x", "seed"], as_index=False)[metrics]
        .mean(numeric_only=True)
        .groupby(["variant", "x"], as_index=False)[metrics]
        .mean()
    )
    return names, oods, per_ood, average


def _sweep_panel(
    sns,
    ax,
    per_ood: pd.DataFrame,
    average: pd.DataFrame,
    name: str,
    metric: str,
    oods: Sequence[str],
    palette: Mapping[str, Any],
    *,
    legend: bool,
    title: str | None,
) -> None:
    """One panel of Fig. 3: ``metric`` against percentage ``name``, a line per OOD set
    and, dashed black, their average (``average``: sorted by x)."""
    sns.lineplot(
        data=per_ood,
        x="x",
        y=metric,
        hue="ood_set",
        hue_order=oods,
        palette=palette,
        marker="o",
        ax=ax,
        legend=legend,
    )
    ax.plot(
        average["x"], average[metric], color="black", ls="--", lw=2, marker="s", label="Average"
    )
    xlabel = PERCENTAGE_LABELS.get(name, f"{name} (%)")
    if _percentage_axis(ax, average["x"].to_numpy()) == "symlog":
        xlabel += ", symlog scale"
    ax.set_xlabel(xlabel)
    ax.set_ylabel(METRIC_LABELS[metric])
    if title is not None:
        ax.set_title(title)


def _percentage_axis(ax, values: np.ndarray) -> str:
    """Symlog x axis (linear from 0 to the smallest positive value, logarithmic above)
    where the positive ``values`` span ``SYMLOG_MIN_SPAN`` or more, else linear; ticks
    at the values. Returns the scale."""
    positive = np.unique(values[values > 0])
    scale = "linear"
    if positive.size >= 2 and positive.max() / positive.min() >= SYMLOG_MIN_SPAN:
        ax.set_xscale("symlog", linthresh=float(positive.min()), linscale=0.5)
        scale = "symlog"
    ticks = np.unique(values)
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    return scale


def _sweep_facts(
    average: pd.DataFrame,
    names: Sequence[str],
    metrics: Sequence[str],
    oods: Sequence[str],
    n_seeds: int,
) -> dict[str, Any]:
    """Per swept percentage and metric: the average at 0 and the best average (lowest
    FPR95, highest otherwise) with the percentage where it is reached."""
    facts: dict[str, Any] = {
        "figure": "percentage_sweep",
        "ood_sets": list(oods),
        "n_seeds": int(n_seeds),
        "variants": {},
    }
    for name in names:
        rows = average[average["variant"] == name].sort_values("x")
        entry: dict[str, Any] = {"values": [float(x) for x in rows["x"]]}
        for metric in metrics:
            values = rows[metric].to_numpy(dtype=np.float64)
            lower = METRICS[metric][1] == "lower"
            best = int(np.argmin(values) if lower else np.argmax(values))
            at_zero = rows.loc[rows["x"] == 0, metric]
            entry[metric] = {
                "at_zero": float(at_zero.iloc[0]) if len(at_zero) else None,
                "best": float(values[best]),
                "best_at": float(rows["x"].iloc[best]),
            }
        facts["variants"][name] = entry
    seeds = f" and {n_seeds} seeds" if n_seeds > 1 else ""
    sentences = [f"Averages over the {len(oods)} OOD test sets{seeds}."]
    for metric in metrics:
        label = METRIC_LABELS[metric].split(" (")[0]
        zeros = [e[metric]["at_zero"] for e in facts["variants"].values()]
        zero = next((z for z in zeros if z is not None), None)
        if zero is not None:
            sentences.append(f"{label} with nothing pruned (0 %): {zero:.2f} %.")
        word = "Lowest" if METRICS[metric][1] == "lower" else "Highest"
        best = ", ".join(
            f"``{name}`` {e[metric]['best']:.2f} % at {e[metric]['best_at']:g} %"
            for name, e in facts["variants"].items()
        )
        sentences.append(f"{word} {label} of each sweep: {best}.")
    facts["summary"] = " ".join(sentences)
    return facts
