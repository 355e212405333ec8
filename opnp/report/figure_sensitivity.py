"""The sensitivity figures: paper Figs. 1, 7, 8 (distribution of the FC sensitivities),
Fig. 6 (mean sensitivity per layer) and Fig. 9 (Eq. 11: the pruned weights' sensitivity
on ID and OOD data). Files and checks: :mod:`opnp.report.figure_style`."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from opnp.report.figure_style import (
    bin_count,
    figure_frame,
    finite_array,
    histogram,
    keep_mask,
    named_arrays,
    new_figure,
    png_path,
    save_figure,
    seaborn_style,
    sensitivity_array,
)


def plot_sensitivity_distribution(
    sensitivities: Mapping[str, Any],
    out_path: str | os.PathLike,
    title: str | None = None,
    *,
    neuron_sensitivities: Mapping[str, Any] | None = None,
    bins: int = 100,
) -> Figure:
    """Paper Figs. 1, 7, 8: histograms of FC parameter sensitivities normalised to max 1,
    one panel per label (model), log-scaled counts; with ``neuron_sensitivities`` (same
    labels) a second row for the neuron sensitivities. Each panel marks the mean (dashed)
    and states n, max / mean and the mean in its title (off the data). The default
    ``title`` names what both rows show.

    Facts (caption): per label and kind, ``n``, ``max_over_mean`` and
    ``share_below_1pct`` (fraction of values below 1 % of the maximum)."""
    path = png_path(out_path)
    bins = bin_count(bins)
    rows = _distribution_rows(sensitivities, neuron_sensitivities)
    if title is None:
        title = (
            "FC-layer sensitivities:\nparameters (top row), neurons (bottom row)"
            if len(rows) == 2
            else "FC-layer parameter sensitivities"
        )
    edges = np.linspace(0.0, 1.0, bins + 1)
    facts: dict[str, Any] = {"figure": "sensitivity_distribution", "labels": {}}
    with seaborn_style() as sns:
        fig, axes = new_figure(len(rows), len(rows[0][1]), panel_size=(4.2, 3.5))
        palette = sns.color_palette("deep")
        for r, (kind, data) in enumerate(rows):
            for c, (label, values) in enumerate(data.items()):
                stats = _distribution_panel(axes[r, c], label, kind, values, edges, palette[r])
                facts["labels"].setdefault(label, {})[kind] = stats
        facts["summary"] = _distribution_summary(facts["labels"])
        fig.suptitle(title)
        return save_figure(fig, path, facts)


def _distribution_rows(
    sensitivities: Mapping[str, Any], neuron_sensitivities: Mapping[str, Any] | None
) -> list[tuple[str, dict[str, np.ndarray]]]:
    """``[(kind, {label: checked array})]``: the parameters' row and, when given, the
    neurons' (ValueError unless their labels match the parameters', in order)."""
    params = named_arrays(sensitivities, "sensitivities")
    arrays = {
        label: sensitivity_array(v, f"sensitivities[{label!r}]") for label, v in params.items()
    }
    rows = [("parameters", arrays)]
    if neuron_sensitivities is not None:
        neurons = named_arrays(neuron_sensitivities, "neuron_sensitivities")
        if list(neurons) != list(params):
            raise ValueError(
                f"neuron_sensitivities has labels {list(neurons)} but sensitivities has "
                f"{list(params)}; they must match (same order)"
            )
        rows.append(
            (
                "neurons",
                {
                    label: sensitivity_array(v, f"neuron_sensitivities[{label!r}]", ndim=1)
                    for label, v in neurons.items()
                },
            )
        )
    return rows


def _distribution_panel(
    ax, label: str, kind: str, values: np.ndarray, edges: np.ndarray, colour
) -> dict[str, Any]:
    """One panel of Figs. 1/7/8: ``values`` over their maximum, the mean dashed; returns
    ``n``, ``max_over_mean``, ``share_below_1pct``."""
    normalised = values.ravel() / values.max()
    mean = float(normalised.mean())
    stats = {
        "n": int(normalised.size),
        "max_over_mean": 1 / mean,
        "share_below_1pct": float(np.mean(normalised < 0.01)),
    }
    histogram(ax, normalised, edges, log=True, color=colour, edgecolor=None)
    ax.axvline(mean, color="0.2", ls="--", lw=1)
    ax.set_title(
        f"{label}: {kind} (n = {normalised.size:,})\n"
        f"max / mean = {1 / mean:.1f}×, dashed: mean = {mean:.3g}",
        fontsize="medium",
    )
    ax.set_xlabel(f"{kind[:-1]} sensitivity / max")
    ax.set_ylabel("count (log scale)")
    ax.set_xlim(0, 1)
    return stats


def _distribution_summary(labels: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    sentences = []
    for label, kinds in labels.items():
        parts = [
            f"the largest of the {s['n']:,} {kind[:-1]} sensitivities is "
            f"{s['max_over_mean']:.1f}× their mean and {100 * s['share_below_1pct']:.1f} % "
            "are below 1 % of the largest"
            for kind, s in kinds.items()
        ]
        sentences.append(f"{label}: " + "; ".join(parts) + ".")
    return " ".join(sentences)


def plot_layer_sensitivity(
    layer_means: pd.DataFrame,
    out_path: str | os.PathLike,
    *,
    title: str = "Mean parameter sensitivity per layer",
) -> Figure:
    """Paper Fig. 6: one bar per layer (``layer``, in the given = network order) of its
    mean parameter sensitivity (``mean_sensitivity``, > 0), on a log axis, each bar
    labelled with its value."""
    path = png_path(out_path)
    frame = figure_frame(layer_means, "layer_means", ["layer", "mean_sensitivity"])
    layers = [str(x) for x in frame["layer"]]
    dup = sorted({x for x in layers if layers.count(x) > 1})
    if dup:
        raise ValueError(f"layer_means has several rows for layers {dup}")
    values = finite_array(frame["mean_sensitivity"].to_numpy(), "layer_means['mean_sensitivity']")
    if (values <= 0).any():
        raise ValueError(
            "layer_means['mean_sensitivity'] must be > 0 for a log axis, got "
            f"{dict(zip(np.array(layers)[values <= 0], values[values <= 0], strict=True))}"
        )
    data = pd.DataFrame({"layer": layers, "mean_sensitivity": values})
    with seaborn_style() as sns:
        fig, axes = new_figure(1, 1, panel_size=(max(4.5, 0.8 * len(layers) + 1.5), 3.8))
        ax = axes[0, 0]
        sns.barplot(data=data, x="layer", y="mean_sensitivity", order=layers, color="C0", ax=ax)
        ax.set_yscale("log")
        for patch, value in zip(ax.patches, values, strict=True):
            ax.annotate(
                f"{value:.2e}",
                (patch.get_x() + patch.get_width() / 2, patch.get_height()),
                ha="center",
                va="bottom",
                fontsize="x-small",
            )
        ax.set_xlabel("layer (network order)")
        ax.set_ylabel("mean parameter sensitivity (log scale)")
        ax.tick_params(axis="x", labelrotation=30)
        ax.set_title(title)
        largest, smallest = int(np.argmax(values)), int(np.argmin(values))
        facts = {
            "figure": "layer_sensitivity",
            "layers": dict(zip(layers, values.tolist(), strict=True)),
            "largest": layers[largest],
            "smallest": layers[smallest],
            "max_over_min": float(values[largest] / values[smallest]),
        }
        facts["summary"] = (
            f"The mean parameter sensitivity of the {len(layers)} layers runs from "
            f"{values[smallest]:.3g} ({layers[smallest]}) to {values[largest]:.3g} "
            f"({layers[largest]}), a factor of {facts['max_over_min']:.1f} "
            f"({math.log10(facts['max_over_min']):.1f} orders of magnitude)."
        )
        return save_figure(fig, path, facts)


def low_sensitivity_pruned(
    param_sensitivity: Any,
    selected: Mapping[str, Any],
    fallback_weight_low: float,
) -> tuple[np.ndarray, float, str]:
    """The weights Fig. 9 shows: those OPNP prunes on the *low*-sensitivity side (paper
    Eq. 11 / Remark 2 are about them), ``S < percentile(S, weight_low)`` with the
    selected ``weight_low`` (:func:`opnp.pruning.tail_mask`); high-sensitivity and
    neuron pruning are not part of it. When the selection pruned no low-sensitivity
    weight (``weight_low`` 0 or absent), ``fallback_weight_low`` percent instead.
    Returns ``(keep_mask (C, D) bool, weight_low used, where it came from)``."""
    from opnp.pruning import tail_mask

    s = finite_array(param_sensitivity, "param_sensitivity", nonnegative=True)
    if s.ndim != 2:
        raise ValueError(f"param_sensitivity must be (C, D), got shape {s.shape}")
    weight_low = float(selected.get("weight_low", 0) or 0)
    source = "selected weight_low"
    if weight_low == 0:
        weight_low = float(fallback_weight_low)
        source = "fallback: the selected weight_low is 0"
    if not 0 < weight_low < 100:
        raise ValueError(f"fallback_weight_low must be in (0, 100), got {fallback_weight_low!r}")
    keep = tail_mask(s, low=weight_low, name="weight")
    if keep.all():
        raise ValueError(
            f"weight_low={weight_low:g} % prunes no weight (all sensitivities tie at the "
            "threshold): nothing to plot"
        )
    return keep, weight_low, source


def plot_pruned_weight_sensitivity(
    id_sensitivity: Any,
    ood_sensitivity: Any,
    weight_mask: Any,
    out_path: str | os.PathLike,
    ood_name: str = "OOD",
    *,
    bins: int = 60,
    title: str | None = None,
    pruned_what: str = "",
    relative: Mapping[str, Any] | None = None,
    random_ratios: Any = None,
    id_name: str = "ID",
    sensitivity_source: str = "",
) -> Figure:
    """Paper Fig. 9 (a test of Eq. 11): histograms of the sensitivity of the pruned
    weights (``weight_mask`` False) computed on the ID set and on the OOD set
    ``ood_name``, raw values (not normalised, so the means compare with the paper's
    0.00018 vs 0.00024) on shared bins with log counts; both means in the legend and as
    dashed lines, and the measured ratio mean OOD / mean ID in the panel. ``pruned_what``:
    a second title line saying which weights were pruned (e.g. "the 20 % least
    sensitive (selected weight_low)").

    The ratio alone is no test: over all weights of the layer it is already far from 1
    when OOD features have other magnitudes. ``relative`` (the result of
    :func:`opnp.relative_sensitivity.relative_ratio` for the pruned set) adds the ratio
    relative to all weights with its bootstrap interval, ``random_ratios`` (relative
    ratios of random sets of as many weights, :func:`opnp.relative_sensitivity.
    random_set_ratios`) a second baseline; the verdict in the facts' summary comes from
    them (:func:`opnp.relative_sensitivity.relative_verdict`). Without ``relative`` the
    summary states no verdict. ``id_name`` and ``sensitivity_source`` (which
    sensitivity chose the pruned set) are recorded in the facts."""
    path = png_path(out_path)
    bins = bin_count(bins)
    if not isinstance(ood_name, str) or not ood_name:
        raise ValueError(f"ood_name must be a non-empty string, got {ood_name!r}")
    n_weights, pruned_id, pruned_ood = _pruned_sensitivities(
        id_sensitivity, ood_sensitivity, weight_mask
    )
    high = max(float(pruned_id.max()), float(pruned_ood.max()))
    edges = np.linspace(0.0, high if high > 0 else 1.0, bins + 1)
    eq11 = None if relative is None else _eq11_facts(relative, random_ratios, pruned_id.size)
    with seaborn_style() as sns:
        fig, axes = new_figure(1, 1, panel_size=(6.5, 4.2))
        ax = axes[0, 0]
        palette = sns.color_palette("deep")
        means = {}
        for values, label, colour in (
            (pruned_id, "ID", palette[0]),
            (pruned_ood, ood_name, palette[3]),
        ):
            means[label] = _mean_histogram(ax, values, label, edges, colour)
        ratio = means[ood_name] / means["ID"] if means["ID"] > 0 else float("inf")
        panel = _ratio_text(ood_name, ratio, eq11)
        ax.text(0.98, 0.62, panel, transform=ax.transAxes, ha="right", va="top", fontsize="small")
        ax.set_xlabel("parameter sensitivity of the pruned weights")
        ax.set_ylabel("count (log scale)")
        default = f"Eq. 11: sensitivity of the {pruned_id.size:,} pruned weights, ID vs {ood_name}"
        if pruned_what:
            default += f"\n{pruned_what}"
        ax.set_title(title or default, fontsize="medium")
        ax.legend(loc="upper right")
        facts = {
            "figure": "pruned_weight_sensitivity",
            "n_pruned": int(pruned_id.size),
            "n_weights": n_weights,
            "id_name": id_name,
            "ood_name": ood_name,
            "sensitivity": sensitivity_source,
            "mean_id": means["ID"],
            "mean_ood": means[ood_name],
            "ratio": ratio if np.isfinite(ratio) else None,
            "pruned_what": pruned_what,
        }
        _add_eq11_summary(facts, eq11, ratio)
        return save_figure(fig, path, facts)


def _pruned_sensitivities(
    id_sensitivity: Any, ood_sensitivity: Any, weight_mask: Any
) -> tuple[int, np.ndarray, np.ndarray]:
    """``(number of weights, ID and OOD sensitivities of the pruned ones)`` of Fig. 9,
    checked (same shapes, a mask that prunes something)."""
    ids = finite_array(id_sensitivity, "id_sensitivity", nonnegative=True)
    oods = finite_array(ood_sensitivity, "ood_sensitivity", nonnegative=True)
    if ids.shape != oods.shape:
        raise ValueError(
            f"id_sensitivity has shape {ids.shape} but ood_sensitivity has {oods.shape}"
        )
    keep = keep_mask(weight_mask, "weight_mask", ids.shape)
    if keep.all():
        raise ValueError("weight_mask prunes no weight (all True): nothing to plot")
    return int(ids.size), ids[~keep], oods[~keep]


def _ratio_text(ood_name: str, ratio: float, eq11: Mapping[str, Any] | None) -> str:
    """Fig. 9's panel text: the ratio of the means and, with a baseline, the relative one."""
    text = f"mean {ood_name} / mean ID = {ratio:.3g}"
    if eq11 is not None:
        low, high = eq11["relative_ratio_ci"]
        text += (
            f"\nsame ratio over all weights: {eq11['ratio_all']:.3g}"
            f"\nrelative ratio: {eq11['relative_ratio']:.3g} [{low:.3g}, {high:.3g}]"
        )
    return text


def _mean_histogram(ax, values: np.ndarray, label: str, edges: np.ndarray, colour) -> float:
    """A step histogram of ``values`` with its mean dashed and in the legend; the mean."""
    mean = float(values.mean())
    histogram(
        ax,
        values,
        edges,
        log=True,
        element="step",
        alpha=0.35,
        color=colour,
        label=f"{label} (mean {mean:.3g})",
    )
    ax.axvline(mean, color=colour, ls="--", lw=1.2)
    return mean


def _add_eq11_summary(facts: dict[str, Any], eq11: dict[str, Any] | None, ratio: float) -> None:
    """Fig. 9's summary into ``facts`` and, with a baseline (``eq11``), its facts."""
    head = (
        f"{facts['n_pruned']:,} pruned weights ({facts['pruned_what'] or 'weight mask'}); "
        f"mean sensitivity on {facts['id_name']} {facts['mean_id']:.3g}, on "
        f"{facts['ood_name']} {facts['mean_ood']:.3g}: ratio {ratio:.3g}."
    )
    if eq11 is None:
        facts["summary"] = (
            f"{head} No baseline was computed: the ratio alone does not test Eq. 11 "
            "(over all weights it differs from 1 too)."
        )
    else:
        text = eq11.pop("text")
        facts.update(eq11)
        facts["summary"] = f"{head} {text}"


def _eq11_facts(relative: Mapping[str, Any], random_ratios: Any, n_pruned: int) -> dict:
    """The facts and sentence of Fig. 9's verdict from the relative-ratio bootstrap and
    the random weight sets (:mod:`opnp.relative_sensitivity`)."""
    from opnp.relative_sensitivity import relative_verdict

    confidence = float(relative["confidence"])
    low, high = (float(x) for x in relative["relative_ratio_ci"])
    facts: dict[str, Any] = {
        "ratio_ci": [float(x) for x in relative["ratio_ci"]],
        "ratio_all": float(relative["ratio_all"]),
        "ratio_all_ci": [float(x) for x in relative["ratio_all_ci"]],
        "relative_ratio": float(relative["relative_ratio"]),
        "relative_ratio_ci": [low, high],
        "confidence": confidence,
        "n_resamples": int(relative["n_resamples"]),
        "seed": int(relative["seed"]),
        "n_id": int(relative["n_id"]),
        "n_ood": int(relative["n_ood"]),
    }
    random_range = None
    random_text = ""
    if random_ratios is not None:
        draws = finite_array(random_ratios, "random_ratios")
        tail = (100.0 - confidence) / 2.0
        random_range = tuple(float(x) for x in np.percentile(draws, [tail, 100.0 - tail]))
        facts["random_sets"] = {
            "n_sets": int(draws.size),
            "set_size": int(n_pruned),
            "range": list(random_range),
            "fraction_at_least": float(np.mean(draws >= facts["relative_ratio"])),
        }
        random_text = (
            f" Random sets of {n_pruned:,} weights: relative ratio "
            f"{random_range[0]:.3g}-{random_range[1]:.3g} (central {confidence:g} % of "
            f"{draws.size:,} sets)."
        )
    direction, sentence = relative_verdict((low, high), facts["relative_ratio"], random_range)
    facts["direction"] = direction
    facts["verdict"] = f"the pruned weights are {sentence}"
    facts["text"] = (
        f"Over all weights the same ratio is {facts['ratio_all']:.3g}, so relative to the "
        f"average weight the pruned weights' ratio is {facts['relative_ratio']:.3g} "
        f"[{low:.3g}, {high:.3g}] ({confidence:g} % bootstrap interval, "
        f"{facts['n_resamples']:,} resamples of the {facts['n_id']:,} ID and "
        f"{facts['n_ood']:,} OOD images, seed {facts['seed']}).{random_text} Verdict: "
        f"{facts['verdict']}."
    )
    return facts
