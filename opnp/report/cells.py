"""Table cells: one metric over seeds (:class:`SeedStat`) or several metrics in one cell
(:class:`CombinedCell`), and :func:`long_format`, the numbers of a table as rows.

A table of :mod:`opnp.report` is a :class:`pandas.DataFrame` laid out like the paper's
table; its cells are SeedStat or CombinedCell (``str(cell)`` is the formatted text) or
plain text (labels, hyperparameters), and ``table.attrs[BOLD_ATTR]`` says where its best
values are compared (:mod:`opnp.report.render`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: Key of ``DataFrame.attrs``: where a table's best values are compared (``"columns"``,
#: ``"rows"`` or None, see :mod:`opnp.report.render`); a table built by hand, without it,
#: is bolded per column.
BOLD_ATTR = "opnp_bold"


@dataclass(frozen=True)
class SeedStat:
    """One metric of one table cell: its values over seeds (seeds ascending)."""

    metric: str
    values: tuple[float, ...]
    seeds: tuple[int, ...] = ()
    #: The metric of each bootstrap resample, mean over the seeds (None: not available);
    #: paired with every other cell of the same resamples (the bold rule).
    resamples: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        """Sample standard deviation (``ddof=1``) over seeds; NaN for a single seed."""
        return float(np.std(self.values, ddof=1)) if self.n > 1 else math.nan

    def text(self, decimals: int = 2, latex: bool = False) -> str:
        """``"12.34 ± 0.56"`` (``"12.34$\\pm$0.56"`` in LaTeX); one seed: ``"12.34"``."""
        mean = f"{self.mean:.{decimals}f}"
        if self.n == 1:
            return mean
        pm = "$\\pm$" if latex else " ± "
        return f"{mean}{pm}{self.std:.{decimals}f}"

    def __str__(self) -> str:
        return self.text()


@dataclass(frozen=True)
class CombinedCell:
    """Several metrics in one cell, ``"FPR95/AUROC"`` as in paper Tables 5-9."""

    parts: tuple[SeedStat, ...]

    def text(self, decimals: int = 2, latex: bool = False) -> str:
        return "/".join(p.text(decimals, latex) for p in self.parts)

    def __str__(self) -> str:
        return self.text()


def cell_of(stats: list[SeedStat]) -> SeedStat | CombinedCell:
    """One metric: its SeedStat; several: a CombinedCell of them."""
    return stats[0] if len(stats) == 1 else CombinedCell(tuple(stats))


def stat_parts(cell: Any) -> tuple[SeedStat, ...]:
    """The statistics of a cell; ``()`` for a text cell."""
    if isinstance(cell, SeedStat):
        return (cell,)
    if isinstance(cell, CombinedCell):
        return cell.parts
    return ()


def flat_labels(index: pd.Index) -> list[str]:
    """Index entries as strings; MultiIndex levels joined by a space, empty levels dropped."""
    if isinstance(index, pd.MultiIndex):
        return [" ".join(str(x) for x in entry if str(x) != "") for entry in index]
    return [str(x) for x in index]


def long_format(table: pd.DataFrame) -> pd.DataFrame:
    """The numbers of a table, one row per (row, column, metric): columns ``row``,
    ``column`` (levels joined by a space), ``metric``, ``mean``, ``std`` (NaN for one
    seed), ``n_seeds``. Cells that are not statistics (labels, hyperparameters) are left
    out."""
    records = []
    for row_label, row in zip(flat_labels(table.index), table.itertuples(index=False), strict=True):
        for col_label, cell in zip(flat_labels(table.columns), row, strict=True):
            for part in stat_parts(cell):
                records.append(
                    {
                        "row": row_label,
                        "column": col_label,
                        "metric": part.metric,
                        "mean": part.mean,
                        "std": part.std,
                        "n_seeds": part.n,
                    }
                )
    return pd.DataFrame.from_records(
        records, columns=["row", "column", "metric", "mean", "std", "n_seeds"]
    )
