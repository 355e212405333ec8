"""The README's main-table section, generated from a run (never pasted by hand).

``python -m opnp.report.readme`` replaces the text between ``<!-- main-table:start -->``
and ``<!-- main-table:end -->`` of README.md with the run's main table (its Markdown file,
caption included) and sentences comparing OPNP with the baselines it is paired with in
the paper: OPNP vs Energy, MSP+OPNP vs MSP, OPNP+ReAct vs ReAct, on the FPR95 averaged
over the test OOD sets. ``--check`` exits 1 when README.md differs from what the run gives
(a README that was not regenerated).

Each sentence says better / worse / within noise from the interval of the difference,
never from the point values. The interval is a two-level bootstrap of the mean over
training seeds: resample ``b`` draws the seeds (units) with replacement and takes, for
each drawn unit, the paired test-set resample ``b`` of the difference (the same ID and
OOD images for both methods; :mod:`opnp.bootstrap`), so it covers both training-seed
and test-sample noise. With one unit it is the paired test-set interval alone.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from opnp.bootstrap import percentile_interval
from opnp.pipeline.replicates import REPLICATE_TAGS

__all__ = [
    "START",
    "END",
    "COMPARISONS",
    "difference_interval",
    "comparison_sentences",
    "main_table_section",
    "replace_section",
    "main",
]

START = "<!-- main-table:start -->"
END = "<!-- main-table:end -->"
#: (method, baseline) pairs of the sentences, in order.
COMPARISONS = (("opnp", "energy"), ("opnp+msp", "msp"), ("opnp+react", "react"))
LABELS = {
    "opnp": "OPNP",
    "energy": "Energy",
    "opnp+msp": "MSP+OPNP",
    "msp": "MSP",
    "opnp+react": "OPNP+ReAct",
    "react": "ReAct",
}


def _average_per_unit(results: pd.DataFrame, method: str, metric: str) -> dict[str, tuple]:
    """Unit -> (mean over OOD sets of ``metric``, its resamples (B,) or None) of
    ``method``'s main test rows; rows of several seeds of one unit are averaged first."""
    rows = results[
        (results["experiment"] == "main")
        & (results["split"] == "test")
        & (results["method"] == method)
    ]
    if rows.empty:
        raise ValueError(f"no main test rows of method {method!r}")
    out = {}
    column = f"{metric}_resamples"
    for unit, unit_rows in rows.groupby("model", sort=True):
        per_set = unit_rows.groupby("ood_set", sort=True)
        point = float(per_set[metric].mean().mean())
        resamples = None
        if column in unit_rows and unit_rows[column].notna().all():
            sets = [np.mean(np.stack(list(g[column])), axis=0) for _, g in per_set]
            resamples = np.mean(np.stack(sets), axis=0)
        out[unit] = (point, resamples)
    return out


def difference_interval(
    results: pd.DataFrame,
    method: str,
    baseline: str,
    *,
    metric: str = "fpr95",
    confidence: float = 95.0,
    seed: int = 0,
) -> dict:
    """``method - baseline`` of the average ``metric`` over OOD sets, pooled over the units
    in ``results`` (training seeds): ``{"method", "baseline", "n_units", "point",
    "method_mean", "baseline_mean", "low", "high"}`` (low/high None without resamples).
    See the module docstring for the interval."""
    a = _average_per_unit(results, method, metric)
    b = _average_per_unit(results, baseline, metric)
    if set(a) != set(b):
        raise ValueError(f"{method!r} and {baseline!r} have rows for different units")
    units = sorted(a)
    out = {
        "method": method,
        "baseline": baseline,
        "n_units": len(units),
        "method_mean": float(np.mean([a[u][0] for u in units])),
        "baseline_mean": float(np.mean([b[u][0] for u in units])),
        "low": None,
        "high": None,
    }
    out["point"] = out["method_mean"] - out["baseline_mean"]
    if all(a[u][1] is not None and b[u][1] is not None for u in units):
        diffs = np.stack([a[u][1] - b[u][1] for u in units])  # (units, B), paired per unit
        n_resamples = diffs.shape[1]
        drawn = np.random.default_rng(seed).integers(0, len(units), (n_resamples, len(units)))
        pooled = diffs[drawn, np.arange(n_resamples)[:, None]].mean(axis=1)
        out["low"], out["high"] = percentile_interval(pooled, confidence)
    return out


def _verdict(diff: Mapping, lower_is_better: bool) -> str:
    if diff["low"] is None:
        return "no interval (no resamples in the results)"
    if diff["low"] <= 0.0 <= diff["high"]:
        return "within noise of"
    below = diff["high"] < 0.0
    return "better than" if below == lower_is_better else "worse than"


def comparison_sentences(
    results: pd.DataFrame,
    comparisons: Sequence[tuple[str, str]] = COMPARISONS,
    *,
    confidence: float = 95.0,
) -> str:
    """One Markdown paragraph: each pair's verdict with both means and the interval of the
    difference (average FPR95 over the test OOD sets, percent; lower is better)."""
    methods = set(results["method"])
    parts = []
    n_units = None
    for method, baseline in comparisons:
        if method not in methods or baseline not in methods:
            continue
        d = difference_interval(results, method, baseline, confidence=confidence)
        n_units = d["n_units"]
        interval = (
            f"; difference {d['point']:+.1f}, {confidence:g} % interval "
            f"[{d['low']:+.1f}, {d['high']:+.1f}]"
            if d["low"] is not None
            else ""
        )
        parts.append(
            f"{LABELS.get(method, method)} is {_verdict(d, lower_is_better=True)} "
            f"{LABELS.get(baseline, baseline)} ({d['method_mean']:.1f} vs "
            f"{d['baseline_mean']:.1f}{interval})"
        )
    if not parts:
        return ""
    over = (
        f"the mean over {n_units} training seeds, its interval a bootstrap over the seeds "
        "and the paired test-set resamples"
        if n_units and n_units > 1
        else "its interval the paired test-set bootstrap"
    )
    return (
        f"Average FPR95 over the test OOD sets ({over}; better / worse only where the "
        f"interval of the difference excludes 0): " + "; ".join(parts) + "."
    )


def main_table_section(table_markdown: str, results: pd.DataFrame, source: str) -> str:
    """The text between the markers: where the table comes from, the table file as it
    is, and the sentences."""
    sentences = comparison_sentences(results)
    return (
        f"Generated by `python -m opnp.report.readme` from `{source}`:\n\n"
        f"{table_markdown.strip()}\n\n{sentences}\n"
    )


def replace_section(text: str, section: str) -> str:
    """``text`` with the part between :data:`START` and :data:`END` replaced."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"the README needs one {START} ... {END} pair, in that order")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{section}{END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m opnp.report.readme", description=__doc__)
    parser.add_argument("--results-dir", default="results/digits", type=Path)
    parser.add_argument("--model", default="smallcnn", help="the main table's model name")
    parser.add_argument("--readme", default="README.md", type=Path)
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md differs")
    args = parser.parse_args(argv)
    table = args.results_dir / "tables" / f"table1_main_results_{args.model}.md"
    results = pd.read_parquet(args.results_dir / "results.parquet")
    # The replicates the table pools (units <model>-seed<s> or <model>-split<s>), or the
    # model itself.
    pattern = rf"{re.escape(args.model)}-(?:{'|'.join(REPLICATE_TAGS.values())})\d+"
    units = results["model"].str.fullmatch(pattern)
    results = results[units] if units.any() else results[results["model"] == args.model]
    # Named as the workflow writes it, wherever the results folder is.
    source = f"results/{args.results_dir.name}/tables/{table.name}"
    section = main_table_section(table.read_text(encoding="utf-8"), results, source)
    text = args.readme.read_text(encoding="utf-8")
    new = replace_section(text, section)
    if args.check:
        if new != text:
            print(f"{args.readme} is not what {table} gives: regenerate it", file=sys.stderr)
            return 1
        return 0
    args.readme.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
