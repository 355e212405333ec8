"""The readings figure: each reading's values side by side, the mean FPR95 over the test
OOD sets of each (as the readings table's Average column) with its bootstrap interval.
Files and checks: :mod:`opnp.report.figure_style`."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from opnp import bootstrap as _bootstrap
from opnp.report.figure_style import figure_frame, new_figure, png_path, save_figure, seaborn_style
from opnp.report.frames import entity_cells
from opnp.report.labels import AVERAGE, METHOD_LABELS


def readings_summary(
    results: pd.DataFrame, *, confidence: float, experiment: str = "readings"
) -> pd.DataFrame:
    """One row per (method, ``<reading>=<value>``) of the test rows of ``experiment``, in
    their order: ``reading``, ``value``, ``method``, ``fpr95`` (mean over the OOD sets,
    then over seeds: the readings table's Average) and ``ci_low`` / ``ci_high``, the
    ``confidence`` % percentile interval of that average's resamples (NaN without)."""
    frame = figure_frame(
        results, "results", ["experiment", "split", "method", "variant", "ood_set", "seed"]
    )
    frame = frame[
        (frame["experiment"] == experiment) & (frame["split"] == "test") & (frame["ood_set"] != "")
    ]
    if frame.empty:
        raise ValueError(f"readings figure: no test rows of experiment {experiment!r}")
    frame = frame.assign(entity=frame["method"].astype(str) + " / " + frame["variant"].astype(str))
    entities = list(dict.fromkeys(frame["entity"]))
    oods = list(dict.fromkeys(frame["ood_set"]))
    cells = entity_cells(frame, "entity", entities, oods, ("fpr95",), True, "reading")
    records = []
    for entity in entities:
        method, variant = entity.split(" / ", 1)
        reading, _, value = variant.partition("=")
        if not value:
            raise ValueError(f"readings figure: variant {variant!r} is not '<reading>=<value>'")
        stat = cells[entity][AVERAGE][0]
        low = high = float("nan")
        if stat.resamples is not None:
            low, high = _bootstrap.percentile_interval(stat.resamples, confidence)
        records.append(
            {
                "reading": reading,
                "value": value,
                "method": method,
                "fpr95": stat.mean,
                "ci_low": low,
                "ci_high": high,
            }
        )
    return pd.DataFrame.from_records(records)


def plot_readings(
    results: pd.DataFrame,
    out_path: str | os.PathLike,
    *,
    confidence: float,
    experiment: str = "readings",
) -> Figure:
    """One panel per reading: the average test FPR95 of each value (the first, the
    default, in black: the reference) with its ``confidence`` % bootstrap interval. The
    facts name each value's numbers. Overlapping intervals do not settle a difference:
    the readings table's paired intervals do."""
    summary = readings_summary(results, confidence=confidence, experiment=experiment)
    path = png_path(out_path)
    readings = list(dict.fromkeys(summary["reading"]))
    with seaborn_style() as sns:
        fig, axes = new_figure(1, len(readings), panel_size=(3.2, 3.0), sharey=True)
        palette = sns.color_palette()
        for ax, reading in zip(axes[0], readings, strict=True):
            rows = summary[summary["reading"] == reading].reset_index(drop=True)
            for i, row in rows.iterrows():
                colour = "black" if i == 0 else palette[i % len(palette)]
                has_ci = pd.notna(row["ci_low"])
                ax.errorbar(
                    [i],
                    [row["fpr95"]],
                    yerr=(
                        [[row["fpr95"] - row["ci_low"]], [row["ci_high"] - row["fpr95"]]]
                        if has_ci
                        else None
                    ),
                    fmt="o",
                    color=colour,
                    capsize=4,
                )
            ax.set_xticks(range(len(rows)), list(rows["value"]), rotation=20, ha="right")
            ax.set_xlim(-0.6, len(rows) - 0.4)
            method = METHOD_LABELS.get(rows["method"].iloc[0], rows["method"].iloc[0])
            ax.set_title(f"{reading} ({method})")
        axes[0, 0].set_ylabel("average test FPR95 (%) ↓")
        facts: dict[str, Any] = {
            "confidence": float(confidence),
            "values": [
                {k: (None if pd.isna(v) else v) for k, v in record.items()}
                for record in summary.to_dict("records")
            ],
            "summary": _summary_text(summary, confidence),
        }
        return save_figure(fig, path, facts)


def _summary_text(summary: pd.DataFrame, confidence: float) -> str:
    parts = []
    for reading in dict.fromkeys(summary["reading"]):
        rows = summary[summary["reading"] == reading]
        values = ", ".join(
            f"{r.value} {r.fpr95:.2f}"
            + ("" if pd.isna(r.ci_low) else f" [{r.ci_low:.2f}, {r.ci_high:.2f}]")
            for r in rows.itertuples()
        )
        parts.append(f"{reading}: {values}")
    return (
        f"Average test FPR95 (%, {confidence:g} % interval) by reading: " + "; ".join(parts) + "."
    )
