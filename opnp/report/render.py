"""Writing a table: Markdown, LaTeX (booktabs) and CSV files, with the bold rule.

Bold: the best mean of each metric (lowest FPR95, highest AUROC / AUPR / accuracy) in
each column (main tables, Table 7) or in each row (Tables 4, 8, 9, whose columns are the
compared methods), compared at the printed precision so that ties are all bold, and
every value whose paired bootstrap interval of the difference to the best includes 0
(nothing inside the noise is called a win). The interval comes from the resampled
metrics the result rows carry (``fpr95_resamples``, ``auroc_resamples``: the same
resamples of the ID and OOD test samples for every method, see :mod:`opnp.bootstrap`),
averaged over seeds (and over OOD sets for ``Average``) per resample; ``confidence`` of
:func:`write_table`. Cells without resamples (rows scored without ``uncertainty``) fall
back to ties only. A column or row with a single value is not bolded; Table 3 and the
selected hyperparameters are never bolded. :func:`opnp.report.captions.caption_notes`
states this rule, n and what ± means for a caption.

The Markdown and LaTeX text is written here rather than by ``DataFrame.to_markdown`` or
``Styler.to_latex``: tabulate pads every column to its widest cell (so a row no longer
reads ``| OPNP | ...``, as the workflow's tests and readers look it up) and does not
escape ``|``; ``Styler.to_latex`` puts the index name on a header row of its own and
draws no ``\\cmidrule`` under column spans. The CSV is ``DataFrame.to_csv``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from opnp import bootstrap as _bootstrap
from opnp.io import atomic_write
from opnp.report.cells import BOLD_ATTR, SeedStat, flat_labels, stat_parts
from opnp.report.labels import METRICS


def _bold_flags(
    table: pd.DataFrame,
    axis: str | None,
    decimals: int,
    confidence: float = _bootstrap.DEFAULT_CONFIDENCE,
) -> set[tuple[int, int, int]]:
    """(row, column, part) positions to bold, per column or row and metric: the best
    value at the printed precision (ties are all bold) and every value whose paired
    interval of the difference to the best (by the unrounded mean) includes 0."""
    if axis is None:
        return set()
    n_rows, n_cols = table.shape
    groups = (
        [[(r, c) for r in range(n_rows)] for c in range(n_cols)]
        if axis == "columns"
        else [[(r, c) for c in range(n_cols)] for r in range(n_rows)]
    )
    flags = set()
    for group in groups:
        by_metric: dict[str, list[tuple[float, SeedStat, tuple[int, int, int]]]] = {}
        for r, c in group:
            for p, part in enumerate(stat_parts(table.iat[r, c])):
                if part.metric in METRICS and math.isfinite(part.mean):
                    shown = float(f"{part.mean:.{decimals}f}")
                    by_metric.setdefault(part.metric, []).append((shown, part, (r, c, p)))
        for metric, entries in by_metric.items():
            if len(entries) < 2:
                continue
            pick = min if METRICS[metric][1] == "lower" else max
            best_shown = pick(shown for shown, _, _ in entries)
            best = pick(entries, key=lambda entry: entry[1].mean)[1]
            for shown, part, pos in entries:
                if shown == best_shown or _within_noise(part, best, confidence):
                    flags.add(pos)
    return flags


def _within_noise(part: SeedStat, best: SeedStat, confidence: float) -> bool:
    """Whether the paired interval of ``part - best`` over their resamples includes 0."""
    if part.resamples is None or best.resamples is None:
        return False
    if len(part.resamples) != len(best.resamples):
        raise ValueError(
            f"cells of {part.metric} have {len(part.resamples)} and {len(best.resamples)} "
            "resamples; paired intervals need the same n_resamples in every row"
        )
    return _bootstrap.interval_includes_zero(part.resamples, best.resamples, confidence)


def _cell_text(cell: Any, r: int, c: int, flags, decimals: int, fmt: str) -> str:
    parts = stat_parts(cell)
    if not parts:
        text = "" if cell is None or (isinstance(cell, float) and math.isnan(cell)) else str(cell)
        return _latex_escape(text) if fmt == "latex" else _md_escape(text)
    out = []
    for p, part in enumerate(parts):
        text = part.text(decimals, latex=fmt == "latex")
        if (r, c, p) in flags:
            text = f"\\textbf{{{text}}}" if fmt == "latex" else f"**{text}**"
        out.append(text)
    return "/".join(out)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def _markdown(table: pd.DataFrame, caption: str, flags, decimals: int) -> str:
    header = [table.index.name or "", *flat_labels(table.columns)]
    lines = [
        "| " + " | ".join(_md_escape(h) for h in header) + " |",
        "| :--- |" + " ---: |" * table.shape[1],
    ]
    for r, label in enumerate(flat_labels(table.index)):
        cells = [
            _cell_text(table.iat[r, c], r, c, flags, decimals, "md") for c in range(table.shape[1])
        ]
        lines.append("| " + " | ".join([_md_escape(label), *cells]) + " |")
    prefix = f"{caption}\n\n" if caption else ""
    return prefix + "\n".join(lines) + "\n"


def _latex_header(columns: pd.Index, corner: str) -> list[str]:
    """Booktabs header rows: one per column level, upper levels merged into
    \\multicolumn spans with a \\cmidrule under each labelled span."""
    if not isinstance(columns, pd.MultiIndex):
        return [
            " & ".join([_latex_escape(corner), *(_latex_escape(str(c)) for c in columns)]) + r" \\"
        ]
    tuples = [tuple(str(x) for x in entry) for entry in columns]
    n_levels = columns.nlevels
    lines = []
    for level in range(n_levels - 1):
        cells, rules = [""], []
        start = 0
        while start < len(tuples):
            end = start + 1
            while end < len(tuples) and tuples[end][: level + 1] == tuples[start][: level + 1]:
                end += 1
            label = tuples[start][level]
            span = end - start
            text = _latex_escape(label)
            cells.append(f"\\multicolumn{{{span}}}{{c}}{{{text}}}" if span > 1 else text)
            if label and span > 1:
                rules.append(f"\\cmidrule(lr){{{start + 2}-{end + 1}}}")
            start = end
        lines.append(" & ".join(cells) + r" \\")
        if rules:
            lines.append(" ".join(rules))
    last = [_latex_escape(corner), *(_latex_escape(t[-1]) for t in tuples)]
    lines.append(" & ".join(last) + r" \\")
    return lines


def _latex(table: pd.DataFrame, caption: str, label: str, flags, decimals: int) -> str:
    lines = [
        "% Needs \\usepackage{booktabs}.",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{_latex_escape(caption)}}}",
        f"\\label{{tab:{label}}}",
        f"\\begin{{tabular}}{{l{'c' * table.shape[1]}}}",
        "\\toprule",
        *_latex_header(table.columns, table.index.name or ""),
        "\\midrule",
    ]
    for r, row_label in enumerate(flat_labels(table.index)):
        cells = [
            _cell_text(table.iat[r, c], r, c, flags, decimals, "latex")
            for c in range(table.shape[1])
        ]
        lines.append(" & ".join([_latex_escape(row_label), *cells]) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def _csv_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Wide raw numbers: per table column and metric a ``"<column> <METRIC> mean"`` and a
    ``"... std"`` column (the metric label is left out when the column label has it);
    text cells of a column of numbers (Table 9's selected row) in ``"<column> text"``."""
    out: dict[str, list] = {table.index.name or "row": flat_labels(table.index)}
    for c, label in enumerate(flat_labels(table.columns)):
        column = table.iloc[:, c]
        metrics = list(dict.fromkeys(p.metric for cell in column for p in stat_parts(cell)))
        texts = ["" if cell is None or stat_parts(cell) else str(cell) for cell in column]
        if not metrics:
            out[label] = texts
            continue
        if any(texts):
            out[f"{label} text"] = texts
        for metric in metrics:
            name = METRICS.get(metric, (metric,))[0]
            stem = label if name in label else f"{label} {name}".strip()
            means, stds = [], []
            for cell in column:
                part = next((p for p in stat_parts(cell) if p.metric == metric), None)
                means.append(part.mean if part else math.nan)
                stds.append(part.std if part else math.nan)
            out[f"{stem} mean"] = means
            out[f"{stem} std"] = stds
    return pd.DataFrame(out)


def _atomic_write_text(path: Path, text: str) -> None:
    """A reader (or a killed job) never sees a half-written table."""
    with atomic_write(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def write_table(
    table: pd.DataFrame,
    stem: str | os.PathLike,
    caption: str,
    *,
    decimals: int = 2,
    bold: str | None = "auto",
    confidence: float = _bootstrap.DEFAULT_CONFIDENCE,
) -> dict[str, Path]:
    """Write ``<stem>.md``, ``<stem>.tex`` and ``<stem>.csv``; returns their paths.

    - Markdown: the caption as a paragraph, then a GitHub table; MultiIndex column
      levels are joined by a space (``"SUN FPR95"``); best values ``**bold**``.
    - LaTeX (booktabs): a ``table`` float with ``\\caption`` and ``\\label{tab:<name of
      stem>}``, one header row per column level with ``\\multicolumn`` spans and
      ``\\cmidrule``; ``12.34$\\pm$0.56``; best values ``\\textbf``; text escaped.
    - CSV: the raw numbers, wide: the row label column, then for each table column and
      metric ``"<column> <METRIC> mean"`` and ``"<column> <METRIC> std"`` (std empty for a
      single seed; the metric is left out of the name when the column label has it);
      text columns as they are. :func:`~opnp.report.cells.long_format` gives the same numbers long.

    ``bold``: ``"auto"`` (the table's own choice, see the module docstring), ``"columns"``,
    ``"rows"`` or ``None``; ``confidence`` (percent) of the paired intervals of the bold
    rule. Files are written atomically; missing parent folders are made.
    """
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    if table.empty:
        raise ValueError("table is empty")
    if not isinstance(caption, str):
        raise ValueError(f"caption must be a string, got {caption!r}")
    if isinstance(decimals, bool) or not isinstance(decimals, int) or decimals < 0:
        raise ValueError(f"decimals must be a non-negative integer, got {decimals!r}")
    if bold not in ("auto", "columns", "rows", None):
        raise ValueError(f"bold must be 'auto', 'columns', 'rows' or None, got {bold!r}")
    stem = Path(stem)
    if not stem.name:
        raise ValueError(f"stem must name a file, got {str(stem)!r}")
    axis = table.attrs.get(BOLD_ATTR, "columns") if bold == "auto" else bold
    flags = _bold_flags(table, axis, decimals, confidence)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {ext: stem.with_name(f"{stem.name}.{ext}") for ext in ("md", "tex", "csv")}
    _atomic_write_text(paths["md"], _markdown(table, caption, flags, decimals))
    _atomic_write_text(paths["tex"], _latex(table, caption, stem.name, flags, decimals))
    _atomic_write_text(paths["csv"], _csv_frame(table).to_csv(index=False))
    return paths
