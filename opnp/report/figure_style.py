"""What every figure of :mod:`opnp.report` shares: input checks, the seaborn style, the
figure object, its files and the facts JSON beside them.

Each plot function validates its input (ValueError naming the argument and the bad
value, before any drawing), writes the figure atomically (a temporary file in the same
folder, then ``os.replace``; missing parent folders are made) and returns the
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
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from opnp._validation import to_numpy
from opnp.io import atomic_write
from opnp.report.frames import check_frame

#: Resolution of the PNG files.
DPI = 150
#: Panel titles start "(a)", "(b)", ... as in the paper's figures.
PANEL_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def finite_array(
    x: Any, name: str, ndim: int | None = None, nonnegative: bool = False
) -> np.ndarray:
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


def sensitivity_array(x: Any, name: str, ndim: int | None = None) -> np.ndarray:
    """A :func:`finite_array` of sensitivities: >= 0, and not zero everywhere."""
    arr = finite_array(x, name, ndim, nonnegative=True)
    if arr.max() <= 0:
        raise ValueError(f"{name} is zero everywhere: nothing to normalise to max 1")
    return arr


def keep_mask(x: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A boolean keep-mask (True = kept) of the given shape; 0/1 integers accepted."""
    arr = to_numpy(x, name)
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(arr.shape)}, expected {tuple(shape)}")
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind in "iu" and np.isin(arr, (0, 1)).all():
        return arr.astype(bool)
    raise ValueError(f"{name} must be a boolean mask (True = kept), got dtype {arr.dtype}")


def png_path(out_path: Any) -> Path:
    """``out_path`` as a Path ending in ``.png``."""
    if not isinstance(out_path, str | os.PathLike):
        raise ValueError(f"out_path must be a path, got {out_path!r}")
    path = Path(out_path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"out_path must end in .png (figures are PNG), got {str(path)!r}")
    return path


def figure_frame(data: Any, name: str, columns: Sequence[str]) -> pd.DataFrame:
    """A frame with ``columns`` (:func:`opnp.report.frames.check_frame`), rows, one model."""
    data = check_frame(data, name, columns)
    if data.empty:
        raise ValueError(f"{name} has no rows")
    if "model" in data.columns and data["model"].nunique() > 1:
        raise ValueError(
            f"{name} mixes models {sorted(data['model'].unique())}; pass one model's rows"
        )
    return data


def bin_count(bins: Any) -> int:
    """``bins`` checked: a positive integer."""
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    return int(bins)


def named_arrays(data: Any, name: str) -> dict[str, Any]:
    """``data`` checked: a non-empty dict of label (non-empty string) -> array."""
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"{name} must be a non-empty dict of label -> array, got {data!r:.200}")
    bad = [k for k in data if not isinstance(k, str) or not k]
    if bad:
        raise ValueError(f"{name} keys must be non-empty strings, got {bad}")
    return dict(data)


def _seaborn():
    # Imported on first use: seaborn pulls in scipy.stats and pyplot (about a second),
    # which importing opnp.report (e.g. for a table) should not pay.
    import seaborn

    return seaborn


@contextlib.contextmanager
def seaborn_style():
    """Seaborn's whitegrid style and paper context, for this figure only; yields seaborn."""
    sns = _seaborn()
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.15):
        yield sns


def new_figure(nrows: int, ncols: int, panel_size=(4.2, 3.3), **kwargs):
    """``(figure, axes)``: an Agg-backed Figure with constrained layout and a 2-D array of
    ``nrows`` x ``ncols`` axes of ``panel_size`` inches each (``kwargs`` to subplots)."""
    fig = Figure(
        figsize=(panel_size[0] * ncols, panel_size[1] * nrows), dpi=DPI, layout="constrained"
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def figure_paths(out_path: str | os.PathLike) -> dict[str, Path]:
    """The files of the figure whose PNG is ``out_path``: ``{"png", "pdf", "facts"}``
    (``<stem>.png``, ``<stem>.pdf``, ``<stem>.facts.json``)."""
    png = png_path(out_path)
    return {"png": png, "pdf": png.with_suffix(".pdf"), "facts": png.with_suffix(".facts.json")}


def save_figure(fig: Figure, path: Path, facts: Mapping[str, Any] | None = None) -> Figure:
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


def histogram(ax, values: np.ndarray, edges: np.ndarray, *, log: bool, stat="count", **kwargs):
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
