"""The registry of table layouts: the catalogue entry of an experiment names its layout
(:attr:`opnp.pipeline.experiments.Experiment.layout`), a key of :data:`TABLE_LAYOUTS`.

A layout is a function decorated with :func:`table_layout`: it takes the rows of one
model (:class:`TableRows`) and the caption template of the catalogue filled in, and
returns the table and its caption up to the notes (:class:`LaidOut`).
:func:`opnp.report.paper_tables.build_table` appends what every table's caption states
(n, seeds, ±, the bold rule; the replicates it pools), as the decorator's options say.
A layout registers where it is defined; :mod:`opnp.report.paper_tables` imports every
module that defines one, so importing it registers them all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class TableRows:
    """What a layout reads: the results of one model (pooled over replicates where the
    table pools them) and the run's settings it states."""

    #: the experiment whose table is built (its catalogue name)
    experiment: str
    results: pd.DataFrame
    model: str
    ood_sets: Sequence[str]
    #: the configured methods, in config order
    methods: Sequence[str]
    #: the sensitivity settings (``statistic``, ``reduction``, ``unlabeled``, ``train``)
    sensitivity: Mapping[str, Any]
    #: method -> where its ReAct percentile comes from (methods that clip only)
    react_sources: Mapping[str, str]

    def test(self, experiment: str | None = None) -> pd.DataFrame:
        """The test rows of ``experiment`` (default: the table's own)."""
        name = experiment or self.experiment
        return self.results[
            (self.results["experiment"] == name) & (self.results["split"] == "test")
        ]

    @property
    def main(self) -> pd.DataFrame:
        """The main results' test rows."""
        return self.test("main")


@dataclass(frozen=True)
class LaidOut:
    """A layout's table and its caption before the notes."""

    table: pd.DataFrame
    caption: str
    #: sentences after the notes ("" when none)
    closing: str = ""


@dataclass(frozen=True)
class TableLayout:
    """A registered layout and what its caption states besides (see the module
    docstring)."""

    build: Callable[[TableRows, str], LaidOut]
    #: the caption states n, seeds, ± and the bold rule of the rows shown
    notes: bool = True
    #: ... counting each OOD set (False: a table of ID data only)
    per_ood_set: bool = True
    #: every row rests on hyperparameters chosen on the validation split (a pooled
    #: table's caption says each replicate chose its own)
    selects: bool = True


#: Layout key -> layout: what :attr:`Experiment.layout` names.
TABLE_LAYOUTS: dict[str, TableLayout] = {}


def table_layout(
    key: str, *, notes: bool = True, per_ood_set: bool = True, selects: bool = True
) -> Callable[[Callable[[TableRows, str], LaidOut]], Callable[[TableRows, str], LaidOut]]:
    """Register the decorated function as layout ``key`` (ValueError if ``key`` is
    taken); the options are :class:`TableLayout`'s."""

    def register(build: Callable[[TableRows, str], LaidOut]):
        if key in TABLE_LAYOUTS:
            raise ValueError(f"table layout {key!r} is registered twice")
        TABLE_LAYOUTS[key] = TableLayout(build, notes, per_ood_set, selects)
        return build

    return register
