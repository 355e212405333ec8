"""The paper's figures, drawn with seaborn from Parquet results and cached arrays.

Each function validates its input (ValueError naming the argument and the bad value,
before any drawing), writes the figure atomically (a temporary file in the same folder,
then ``os.replace``; missing parent folders are made) and returns the
:class:`matplotlib.figure.Figure`. One figure is three files (:func:`figure_paths`):

- ``<stem>.png``: 150-dpi raster, for the Snakemake report;
- ``<stem>.pdf``: the same figure as vector graphics (TrueType fonts, no creation date,
  so the bytes depend only on the data);
- ``<stem>.facts.json``: the numbers the figure shows that its report caption quotes, and
  ``summary``, one reStructuredText paragraph stating them. The captions
  (``workflow/report/*.rst``) are Jinja2 templates that insert ``summary``, so every
  number a caption gives comes from the run that drew the figure.

Figures are built as ``matplotlib.figure.Figure`` objects rendered by the Agg canvas,
never through ``pyplot``: nothing depends on (or changes) the global backend, so the
module is headless-safe on a cluster node, figures are freed like any object, and an
interactive session that imports it keeps its own backend. Seaborn styles are applied
with context managers, so global rcParams stay untouched.

Choices shared by the figures:

- Sensitivities (Figs. 1, 2, 7, 8) are divided by their maximum, as in the paper, so the
  x axis runs over [0, 1]; counts are on a log axis because the interesting values (the
  few very large and the many near-zero sensitivities) sit in the tails.
- Histograms of large arrays (an ImageNet FC layer has 2,048,000 weights) are binned with
  ``numpy.histogram`` and drawn with ``seaborn.histplot(weights=counts)``, which is exact
  and takes milliseconds.
- Metrics are in percent, as in the results Parquet.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from opnp._validation import to_numpy
from opnp.io import atomic_write

DPI = 150

#: The four OPNP pruning percentages, in the paper's Fig. 3 order (a)-(d).
PERCENTAGE_NAMES = ("weight_high", "weight_low", "neuron_high", "neuron_low")
PERCENTAGE_LABELS = {
    "weight_high": "high-sensitivity weights pruned (%)",
    "weight_low": "low-sensitivity weights pruned (%)",
    "neuron_high": "high-sensitivity neurons pruned (%)",
    "neuron_low": "low-sensitivity neurons pruned (%)",
}
METRIC_LABELS = {
    "fpr95": "FPR95 (%) ↓",
    "auroc": "AUROC (%) ↑",
    "aupr_in": "AUPR-In (%) ↑",
    "aupr_out": "AUPR-Out (%) ↑",
}
#: Fig. 4: the ``method`` values of the calibration frame -> panel titles.
CALIBRATION_LABELS = {"energy": "Original FC layer", "opnp": "OPNP-pruned FC layer"}

_PANEL_LETTERS = "abcdefghijklmnopqrstuvwxyz"


# --------------------------------------------------------------------------------------
# Validation helpers


def _array(x: Any, name: str, ndim: int | None = None, nonnegative: bool = False) -> np.ndarray:
    """A non-empty, finite float64 array (``ndim`` checked when given)."""
    arr = to_numpy(x, name)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    arr = np.asarray(arr, dtype=np.float64)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {tuple(arr.shape)})")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} has {int(bad.sum())} NaN or infinite values (of {arr.size})")
    if nonnegative and (arr < 0).any():
        raise ValueError(
            f"{name} has {int((arr < 0).sum())} negative values (min {arr.min():g}); "
            "sensitivities are mean absolute gradients, >= 0"
        )
    return arr


def _sensitivity(x: Any, name: str, ndim: int | None = None) -> np.ndarray:
    arr = _array(x, name, ndim, nonnegative=True)
    if arr.max() <= 0:
        raise ValueError(f"{name} is zero everywhere: nothing to normalise to max 1")
    return arr


def _mask(x: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A boolean keep-mask (True = kept) of the given shape; 0/1 integers accepted."""
    arr = to_numpy(x, name)
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(arr.shape)}, expected {tuple(shape)}")
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind in "iu" and np.isin(arr, (0, 1)).all():
        return arr.astype(bool)
    raise ValueError(f"{name} must be a boolean mask (True = kept), got dtype {arr.dtype}")


def _out_path(out_path: Any) -> Path:
    if not isinstance(out_path, str | os.PathLike):
        raise ValueError(f"out_path must be a path, got {out_path!r}")
    path = Path(out_path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"out_path must end in .png (figures are PNG), got {str(path)!r}")
    return path


def _frame(data: Any, name: str, columns: Sequence[str]) -> pd.DataFrame:
    if not isinstance(data, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(data).__name__}")
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing} (has {list(data.columns)})")
    if data.empty:
        raise ValueError(f"{name} has no rows")
    if "model" in data.columns and data["model"].nunique() > 1:
        raise ValueError(
            f"{name} mixes models {sorted(data['model'].unique())}; pass one model's rows"
        )
    return data


def _bins(bins: Any) -> int:
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    return int(bins)


def _named_arrays(data: Any, name: str) -> dict[str, Any]:
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"{name} must be a non-empty dict of label -> array, got {data!r:.200}")
    bad = [k for k in data if not isinstance(k, str) or not k]
    if bad:
        raise ValueError(f"{name} keys must be non-empty strings, got {bad}")
    return dict(data)


# --------------------------------------------------------------------------------------
# Drawing helpers


def _seaborn():
    # Imported on first use: seaborn pulls in scipy.stats and pyplot (about a second),
    # which importing opnp.report.plots (e.g. for its constants) should not pay.
    import seaborn

    return seaborn


@contextlib.contextmanager
def _style():
    """Seaborn's whitegrid style and paper context, for this figure only; yields seaborn."""
    sns = _seaborn()
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.15):
        yield sns


def _figure(nrows: int, ncols: int, panel_size=(4.2, 3.3), **kwargs):
    fig = Figure(
        figsize=(panel_size[0] * ncols, panel_size[1] * nrows), dpi=DPI, layout="constrained"
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def figure_paths(out_path: str | os.PathLike) -> dict[str, Path]:
    """The files of the figure whose PNG is ``out_path``: ``{"png", "pdf", "facts"}``
    (``<stem>.png``, ``<stem>.pdf``, ``<stem>.facts.json``)."""
    png = _out_path(out_path)
    return {"png": png, "pdf": png.with_suffix(".pdf"), "facts": png.with_suffix(".facts.json")}


def _save(fig: Figure, path: Path, facts: Mapping[str, Any] | None = None) -> Figure:
    """Write the PNG and the PDF of ``fig`` (and ``facts`` as JSON when given) beside
    ``path``, each to a temporary file renamed over its final name."""
    paths = figure_paths(path)
    # One layout pass first: a legend placed outside its axes (Figs. 4, 5) moves with the
    # axes, so constrained layout needs a second pass (the saving draw) to make room.
    fig.draw_without_rendering()
    with atomic_write(paths["png"], "wb") as handle:
        fig.savefig(handle, dpi=DPI, format="png")
    # TrueType (42) instead of Type 3 fonts: text stays text in vector editors; no
    # creation date, so re-drawing the same data gives the same bytes.
    with rc_context({"pdf.fonttype": 42}), atomic_write(paths["pdf"], "wb") as handle:
        fig.savefig(handle, format="pdf", metadata={"CreationDate": None})
    if facts is not None:
        text = json.dumps(facts, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False)
        with atomic_write(paths["facts"], "w") as handle:
            handle.write(text + "\n")
    return fig


def _hist(ax, values: np.ndarray, edges: np.ndarray, *, log: bool, stat="count", **kwargs):
    """Histogram via numpy (fast for millions of values), drawn by seaborn."""
    sns = _seaborn()
    counts, _ = np.histogram(values, bins=edges)
    centres = (edges[:-1] + edges[1:]) / 2
    sns.histplot(
        x=centres,
        weights=counts,
        # A list, not an array: seaborn 0.13 compares ``bins == "auto"`` when weights
        # are given, which is ambiguous for an array.
        bins=edges.tolist(),
        stat=stat,
        ax=ax,
        **kwargs,
    )
    # Not histplot(log_scale=(False, True)): with weights, seaborn 0.13 then draws no bars.
    if log:
        ax.set_yscale("log")


def _text_box(ax, text: str, loc="upper right"):
    x, ha = (0.97, "right") if "right" in loc else (0.03, "left")
    ax.text(
        x,
        0.95,
        text,
        transform=ax.transAxes,
        ha=ha,
        va="top",
        fontsize="small",
        bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85, "edgecolor": "0.7"},
    )


# --------------------------------------------------------------------------------------
# Figures


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
    path = _out_path(out_path)
    bins = _bins(bins)
    params = _named_arrays(sensitivities, "sensitivities")
    arrays = {label: _sensitivity(v, f"sensitivities[{label!r}]") for label, v in params.items()}
    rows = [("parameters", arrays)]
    if neuron_sensitivities is not None:
        neurons = _named_arrays(neuron_sensitivities, "neuron_sensitivities")
        if list(neurons) != list(params):
            raise ValueError(
                f"neuron_sensitivities has labels {list(neurons)} but sensitivities has "
                f"{list(params)}; they must match (same order)"
            )
        rows.append(
            (
                "neurons",
                {
                    label: _sensitivity(v, f"neuron_sensitivities[{label!r}]", ndim=1)
                    for label, v in neurons.items()
                },
            )
        )
    if title is None:
        title = (
            "FC-layer sensitivities:\nparameters (top row), neurons (bottom row)"
            if len(rows) == 2
            else "FC-layer parameter sensitivities"
        )
    edges = np.linspace(0.0, 1.0, bins + 1)
    facts: dict[str, Any] = {"figure": "sensitivity_distribution", "labels": {}}
    sentences = []
    with _style() as sns:
        fig, axes = _figure(len(rows), len(params), panel_size=(4.2, 3.5))
        palette = sns.color_palette("deep")
        for r, (kind, data) in enumerate(rows):
            for c, (label, values) in enumerate(data.items()):
                ax = axes[r, c]
                normalised = values.ravel() / values.max()
                mean = float(normalised.mean())
                stats = {
                    "n": int(normalised.size),
                    "max_over_mean": 1 / mean,
                    "share_below_1pct": float(np.mean(normalised < 0.01)),
                }
                facts["labels"].setdefault(label, {})[kind] = stats
                _hist(ax, normalised, edges, log=True, color=palette[r], edgecolor=None)
                ax.axvline(mean, color="0.2", ls="--", lw=1)
                ax.set_title(
                    f"{label}: {kind} (n = {normalised.size:,})\n"
                    f"max / mean = {1 / mean:.1f}×, dashed: mean = {mean:.3g}",
                    fontsize="medium",
                )
                ax.set_xlabel(f"{kind[:-1]} sensitivity / max")
                ax.set_ylabel("count (log scale)")
                ax.set_xlim(0, 1)
        for label, kinds in facts["labels"].items():
            parts = [
                f"the largest of the {s['n']:,} {kind[:-1]} sensitivities is "
                f"{s['max_over_mean']:.1f}× their mean and {100 * s['share_below_1pct']:.1f} % "
                "are below 1 % of the largest"
                for kind, s in kinds.items()
            ]
            sentences.append(f"{label}: " + "; ".join(parts) + ".")
        facts["summary"] = " ".join(sentences)
        fig.suptitle(title)
        return _save(fig, path, facts)


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
    path = _out_path(out_path)
    bins = _bins(bins)
    param = _sensitivity(param_sensitivity, "param_sensitivity")
    neuron = _sensitivity(neuron_sensitivity, "neuron_sensitivity", ndim=1)
    if param.ndim == 2 and param.shape[1] != neuron.shape[0]:
        raise ValueError(
            f"neuron_sensitivity has {neuron.shape[0]} neurons but param_sensitivity has shape "
            f"{param.shape} (C, D): D must match"
        )
    wmask = _mask(weight_mask, "weight_mask", param.shape)
    nmask = _mask(neuron_mask, "neuron_mask", neuron.shape)
    for name, m in (("weight_mask", wmask), ("neuron_mask", nmask)):
        if not m.any():
            raise ValueError(
                f"{name} prunes everything ({m.size} of {m.size}): nothing left to plot"
            )
    setting = _setting(setting)
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = [("Parameter", param, wmask), ("Neuron", neuron, nmask)]
    facts: dict[str, Any] = {
        "figure": "pruning_before_after",
        "setting": setting,
        "nothing_pruned": bool(wmask.all() and nmask.all()),
    }
    with _style() as sns:
        fig, axes = _figure(2, 2, panel_size=(5.0, 3.6), sharey="row")
        palette = sns.color_palette("deep")
        for r, (kind, values, keep) in enumerate(rows):
            normalised = values / values.max()
            kept = normalised[keep]
            facts[f"{kind.lower()}s"] = {
                "n": int(values.size),
                "kept": int(keep.sum()),
                "max_over_mean_before": float(1 / normalised.mean()),
                "max_over_mean_after": float(kept.max() / kept.mean()),
                "kept_min": float(kept.min()),
                "kept_max": float(kept.max()),
            }
            _hist(axes[r, 0], normalised.ravel(), edges, log=True, color=palette[0])
            _hist(axes[r, 1], kept.ravel(), edges, log=True, color=palette[2])
            axes[r, 0].set_title(f"{kind} sensitivity, before pruning\n(n = {values.size:,})")
            axes[r, 1].set_title(
                f"{kind} sensitivity, after pruning\n"
                + (
                    f"(nothing pruned: all {keep.size:,} kept, same as before)"
                    if keep.all()
                    else f"(kept {keep.sum():,} = {100 * keep.mean():.1f} %)"
                )
            )
            for c in range(2):
                axes[r, c].set_xlim(0, 1)
                axes[r, c].set_xlabel(f"{kind.lower()} sensitivity / max before pruning")
                axes[r, c].set_ylabel("count (log scale)")
            if not keep.all():
                # The kept range: everything outside it was pruned.
                for x in (kept.min(), kept.max()):
                    axes[r, 1].axvline(x, color="0.3", ls=":", lw=1)
        if setting is not None:
            title += "\n" + _setting_text(setting)
        fig.suptitle(title)
        facts["summary"] = _pruning_summary(facts)
        return _save(fig, path, facts)


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
        try:
            params = json.loads(text) if text else {}
        except (TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"results: params {text!r} is not valid JSON") from err
        if not isinstance(params, dict) or variant not in params:
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
    experiment: str | None = "fig3",
    title: str = "OOD detection against each pruning percentage (others at 0)",
) -> Figure:
    """Paper Fig. 3: one column per varied percentage (``variant``: weight_high,
    weight_low, neuron_high, neuron_low, in this order; its value read from ``params``),
    one row per metric (FPR95 top, AUROC bottom); a line per OOD set and, dashed black,
    their average (mean over OOD sets per seed, then over seeds). Several seeds: the
    lines are seed means. Uses the rows of ``split`` and ``experiment`` (None: all)."""
    path = _out_path(out_path)
    metrics = list(metrics)
    unknown = [m for m in metrics if m not in METRIC_LABELS]
    if not metrics or unknown:
        raise ValueError(f"metrics must be some of {sorted(METRIC_LABELS)}, got {metrics}")
    frame = _frame(results, "results", ["variant", "params", "ood_set", "seed", *metrics])
    if split is not None:
        frame = frame[frame["split"] == split] if "split" in frame.columns else frame
    if experiment is not None:
        frame = frame[frame["experiment"] == experiment] if "experiment" in frame.columns else frame
    if frame.empty:
        raise ValueError(
            f"results has no rows with split == {split!r} and experiment == {experiment!r}"
        )
    frame = _sweep_frame(frame, metrics)
    present = list(dict.fromkeys(frame["variant"]))
    names = [n for n in PERCENTAGE_NAMES if n in present] + [
        n for n in present if n not in PERCENTAGE_NAMES
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
    with _style() as sns:
        fig, axes = _figure(len(metrics), len(names), panel_size=(4.0, 3.2))
        palette = dict(zip(oods, sns.color_palette("deep", len(oods)), strict=True))
        for c, name in enumerate(names):
            for r, metric in enumerate(metrics):
                ax = axes[r, c]
                sns.lineplot(
                    data=per_ood[per_ood["variant"] == name],
                    x="x",
                    y=metric,
                    hue="ood_set",
                    hue_order=oods,
                    palette=palette,
                    marker="o",
                    ax=ax,
                    legend=(r == 0 and c == 0),
                )
                avg = average[average["variant"] == name].sort_values("x")
                ax.plot(
                    avg["x"], avg[metric], color="black", ls="--", lw=2, marker="s", label="Average"
                )
                xlabel = PERCENTAGE_LABELS.get(name, f"{name} (%)")
                if _percentage_axis(ax, avg["x"].to_numpy()) == "symlog":
                    xlabel += ", symlog scale"
                ax.set_xlabel(xlabel)
                ax.set_ylabel(METRIC_LABELS[metric])
                if r == 0:
                    ax.set_title(f"({_PANEL_LETTERS[c]}) {name}")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        if axes[0, 0].get_legend() is not None:
            axes[0, 0].get_legend().remove()
        fig.legend(handles, labels, title="OOD set", loc="outside right center")
        fig.suptitle(title)
        facts = _sweep_facts(average, names, metrics, oods, frame["seed"].nunique())
        facts["x_scales"] = {name: axes[0, c].get_xscale() for c, name in enumerate(names)}
        return _save(fig, path, facts)


#: Fig. 3: a percentage axis whose positive values span at least this ratio is drawn
#: symlog, so that e.g. 0.1 and 0.2 % do not sit on top of 0 beside 5 %. Not 10: on a
#: 5-50 % sweep symlog crowds 30, 40, 50 together, where a linear axis reads well.
SYMLOG_MIN_SPAN = 20.0


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
            best = int(np.argmin(values) if metric == "fpr95" else np.argmax(values))
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
        word = "Lowest" if metric == "fpr95" else "Highest"
        best = ", ".join(
            f"``{name}`` {e[metric]['best']:.2f} % at {e[metric]['best_at']:g} %"
            for name, e in facts["variants"].items()
        )
        sentences.append(f"{word} {label} of each sweep: {best}.")
    facts["summary"] = " ".join(sentences)
    return facts


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
    path = _out_path(out_path)
    if (
        isinstance(min_bin_count, bool)
        or not isinstance(min_bin_count, int | np.integer)
        or min_bin_count < 1
    ):
        raise ValueError(f"min_bin_count must be a positive integer, got {min_bin_count!r}")
    frame = _frame(
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
    with _style() as sns:
        fig, axes = _figure(1, 1 + len(methods), panel_size=(4.0, 3.8))
        palette = sns.color_palette("deep", len(methods))
        ax = axes[0, 0]
        for i, method in enumerate(methods):
            rows, ece = checked[method]
            width = (rows["bin_upper"] - rows["bin_lower"]).to_numpy() / len(methods)
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
            facts["methods"][method] = {
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
        for i, method in enumerate(methods, start=1):
            rows, ece = checked[method]
            rows = rows[rows["count"] > 0]
            ax = axes[0, i]
            sparse = (rows["count"] < min_bin_count).to_numpy()
            for subset, alpha, label in (
                (~sparse, 1.0, "accuracy"),
                (sparse, 0.3, f"accuracy, bin with < {min_bin_count} samples"),
            ):
                if not subset.any():
                    continue
                part = rows[subset]
                lower = part["bin_lower"].to_numpy()
                width = (part["bin_upper"] - part["bin_lower"]).to_numpy()
                accuracy = part["accuracy"].to_numpy()
                confidence = part["confidence"].to_numpy()
                ax.bar(
                    lower,
                    accuracy,
                    width=width,
                    align="edge",
                    color=palette[i - 1],
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
            ax.set_title(f"({_PANEL_LETTERS[i]}) {labels.get(method, method)}\nECE = {ece:.2f} %")
            # Below the panel: inside it would cover bars near accuracy 1.
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncols=2, fontsize="x-small")
        fig.suptitle(title)
        facts["summary"] = _reliability_summary(facts)
        return _save(fig, path, facts)


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
    """Paper Fig. 5: ``scores = {method label: {"ID": array, <OOD name>: array, ...}}``;
    one column per method (e.g. Energy, OPNP), one row per OOD set, each panel the
    density histograms of the ID scores and that OOD set's scores. A row shares its x
    axis and its bins (over all arrays of the row), so the methods of a row compare on
    one scale: pass scores of one kind (Energy and OPNP are both energies). Each panel's
    title states the AUROC and FPR95 (ID positive, percent); each row's legend sits to
    the right of the row, off the data.

    Facts (caption): ``n_id``, per method and OOD set ``n_ood``, ``auroc``, ``fpr95``
    (percent)."""
    from opnp.metrics import auroc, fpr_at_95_tpr

    path = _out_path(out_path)
    bins = _bins(bins)
    methods = _named_arrays(scores, "scores")
    oods: list[str] | None = None
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for method, sets in methods.items():
        if not isinstance(sets, Mapping) or "ID" not in sets:
            raise ValueError(f"scores[{method!r}] must be a dict with an 'ID' array and OOD arrays")
        names = [n for n in sets if n != "ID"]
        if not names:
            raise ValueError(f"scores[{method!r}] has no OOD set besides 'ID'")
        if oods is None:
            oods = names
        elif sorted(names) != sorted(oods):
            raise ValueError(
                f"scores[{method!r}] has OOD sets {names} but the first method has {oods}"
            )
        arrays[method] = {
            n: _array(sets[n], f"scores[{method!r}][{n!r}]", ndim=1) for n in ["ID", *oods]
        }
    facts: dict[str, Any] = {
        "figure": "score_distributions",
        "n_id": {m: int(sets["ID"].size) for m, sets in arrays.items()},
        "methods": {m: {} for m in arrays},
    }
    with _style() as sns:
        fig, axes = _figure(len(oods), len(methods), panel_size=(4.2, 3.0), sharex="row")
        palette = sns.color_palette("deep")
        for r, ood in enumerate(oods):
            row = [a for sets in arrays.values() for a in (sets["ID"], sets[ood])]
            low = min(float(a.min()) for a in row)
            high = max(float(a.max()) for a in row)
            if high == low:  # constant scores: a unit-wide range around them
                low, high = low - 0.5, high + 0.5
            edges = np.linspace(low, high, bins + 1)
            for c, (method, sets) in enumerate(arrays.items()):
                ax = axes[r, c]
                for values, label, colour in (
                    (sets["ID"], "ID", palette[0]),
                    (sets[ood], ood, palette[3]),
                ):
                    _hist(
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
                area = 100 * auroc(sets["ID"], sets[ood])
                fpr = 100 * fpr_at_95_tpr(sets["ID"], sets[ood])
                facts["methods"][method][ood] = {
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
            axes[r, -1].legend(
                loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize="small"
            )
        fig.suptitle(title)
        parts = []
        for ood in oods:
            values = "; ".join(
                f"{method} {facts['methods'][method][ood]['auroc']:.2f} / "
                f"{facts['methods'][method][ood]['fpr95']:.2f}"
                for method in arrays
            )
            parts.append(f"{ood}: {values}")
        n_id = sorted(set(facts["n_id"].values()))
        facts["summary"] = (
            f"AUROC / FPR95 (%) on each OOD test set ({' or '.join(f'{n:,}' for n in n_id)} "
            "ID test scores): " + ". ".join(parts) + "."
        )
        return _save(fig, path, facts)


def plot_layer_sensitivity(
    layer_means: pd.DataFrame,
    out_path: str | os.PathLike,
    *,
    title: str = "Mean parameter sensitivity per layer",
) -> Figure:
    """Paper Fig. 6: one bar per layer (``layer``, in the given = network order) of its
    mean parameter sensitivity (``mean_sensitivity``, > 0), on a log axis, each bar
    labelled with its value."""
    path = _out_path(out_path)
    frame = _frame(layer_means, "layer_means", ["layer", "mean_sensitivity"])
    layers = [str(x) for x in frame["layer"]]
    dup = sorted({x for x in layers if layers.count(x) > 1})
    if dup:
        raise ValueError(f"layer_means has several rows for layers {dup}")
    values = _array(frame["mean_sensitivity"].to_numpy(), "layer_means['mean_sensitivity']")
    if (values <= 0).any():
        raise ValueError(
            "layer_means['mean_sensitivity'] must be > 0 for a log axis, got "
            f"{dict(zip(np.array(layers)[values <= 0], values[values <= 0], strict=True))}"
        )
    data = pd.DataFrame({"layer": layers, "mean_sensitivity": values})
    with _style() as sns:
        fig, axes = _figure(1, 1, panel_size=(max(4.5, 0.8 * len(layers) + 1.5), 3.8))
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
        return _save(fig, path, facts)


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

    s = _array(param_sensitivity, "param_sensitivity", nonnegative=True)
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
) -> Figure:
    """Paper Fig. 9 (a test of Eq. 11): histograms of the sensitivity of the pruned
    weights (``weight_mask`` False) computed on the ID set and on the OOD set
    ``ood_name``, raw values (not normalised, so the means compare with the paper's
    0.00018 vs 0.00024) on shared bins with log counts; both means in the legend and as
    dashed lines, and the measured ratio mean OOD / mean ID in the panel (Eq. 11 predicts
    > 1). ``pruned_what``: a second title line saying which weights were pruned (e.g.
    "the 20 % least sensitive (selected weight_low)")."""
    path = _out_path(out_path)
    bins = _bins(bins)
    if not isinstance(ood_name, str) or not ood_name:
        raise ValueError(f"ood_name must be a non-empty string, got {ood_name!r}")
    ids = _array(id_sensitivity, "id_sensitivity", nonnegative=True)
    oods = _array(ood_sensitivity, "ood_sensitivity", nonnegative=True)
    if ids.shape != oods.shape:
        raise ValueError(
            f"id_sensitivity has shape {ids.shape} but ood_sensitivity has {oods.shape}"
        )
    keep = _mask(weight_mask, "weight_mask", ids.shape)
    if keep.all():
        raise ValueError("weight_mask prunes no weight (all True): nothing to plot")
    pruned_id, pruned_ood = ids[~keep], oods[~keep]
    high = max(float(pruned_id.max()), float(pruned_ood.max()))
    edges = np.linspace(0.0, high if high > 0 else 1.0, bins + 1)
    means = {}
    with _style() as sns:
        fig, axes = _figure(1, 1, panel_size=(6.5, 4.2))
        ax = axes[0, 0]
        palette = sns.color_palette("deep")
        for values, label, colour in (
            (pruned_id, "ID", palette[0]),
            (pruned_ood, ood_name, palette[3]),
        ):
            mean = float(values.mean())
            means[label] = mean
            _hist(
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
        ratio = means[ood_name] / means["ID"] if means["ID"] > 0 else float("inf")
        ax.text(
            0.98,
            0.62,
            f"mean {ood_name} / mean ID = {ratio:.3g}\n(Eq. 11 predicts > 1)",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize="small",
        )
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
            "ood_name": ood_name,
            "mean_id": means["ID"],
            "mean_ood": means[ood_name],
            "ratio": ratio if np.isfinite(ratio) else None,
            "pruned_what": pruned_what,
        }
        verdict = (
            "above 1, as Eq. 11 predicts" if ratio > 1 else "not above 1: Eq. 11 does not hold"
        )
        facts["summary"] = (
            f"{pruned_id.size:,} pruned weights ({pruned_what or 'weight mask'}); mean "
            f"sensitivity on ID {means['ID']:.3g}, on {ood_name} {means[ood_name]:.3g}: ratio "
            f"{ratio:.3g}, {verdict} in this run."
        )
        return _save(fig, path, facts)
