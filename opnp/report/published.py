"""What the docs may quote from a run, copied into the repository.

``docs/results.md`` states numbers of real-data runs whose outputs are not committed
(``results/`` is not tracked). :func:`publish_run` copies the small outputs those numbers
come from into ``docs/results/<benchmark>/``: the tables (Markdown), every test row's
metrics and intervals (``numbers.csv``), the paired intervals of the differences that the
text compares (``differences.csv``), the pooled replicate intervals, the class coverage
of the sensitivity set and each figure's caption sentence (``figures.csv``). ``tests/report/test_results_doc.py`` checks that every decimal number in
``docs/results.md`` is one of these values, so a number typed by hand or left from an old
run fails the suite.

Command (after a run): ``python -m opnp.report.published results/<benchmark>
docs/results/<benchmark>``.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from opnp.bootstrap import paired_difference_interval
from opnp.report.labels import AVERAGE

#: The methods every other one is compared with in ``differences.csv``.
REFERENCES = ("energy", "msp", "react", "opnp", "opp", "onp")
#: Columns of ``numbers.csv``: what identifies a test row, its metrics and sample sizes.
NUMBER_COLUMNS = [
    "model",
    "experiment",
    "method",
    "variant",
    "ood_set",
    "params",
    "seed",
    "fpr95",
    "fpr95_ci_low",
    "fpr95_ci_high",
    "auroc",
    "auroc_ci_low",
    "auroc_ci_high",
    "id_accuracy",
    "n_id",
    "n_ood",
]
METRICS = ("fpr95", "auroc")


def _entity(rows: pd.DataFrame) -> pd.Series:
    """A method, or ``method [variant]`` where one experiment has several variants."""
    variant = rows["variant"].fillna("").astype(str)
    return rows["method"].where(variant == "", rows["method"] + " [" + variant + "]")


def _draws(rows: pd.DataFrame, metric: str) -> dict[tuple[str, str], np.ndarray]:
    """Per (entity, OOD set) the resampled metric averaged over seeds and models (paired
    across entities: the resamples depend on the test sets only), plus the average over
    OOD sets draw by draw."""
    out: dict[tuple[str, str], np.ndarray] = {}
    column = f"{metric}_resamples"
    for (entity, ood), group in rows.groupby(["entity", "ood_set"], sort=False):
        arrays = [np.asarray(v, dtype=np.float64) for v in group[column] if v is not None]
        if arrays and len({len(a) for a in arrays}) == 1:
            out[entity, ood] = np.mean(arrays, axis=0)
    for entity in dict.fromkeys(rows["entity"]):
        sets = [v for (e, _), v in out.items() if e == entity]
        if len(sets) > 1 and len({len(v) for v in sets}) == 1:
            out[entity, AVERAGE] = np.mean(sets, axis=0)
    return out


def paired_differences(
    draws: dict[tuple[str, str], dict[str, np.ndarray]],
    estimates: dict[tuple[str, str], dict[str, float]],
    confidence: float = 95.0,
    references: Iterable[str] = REFERENCES,
) -> pd.DataFrame:
    """``a - b`` for every entity ``a`` and reference ``b`` present (and between the
    variants of one method), per OOD set: the point difference and the percentile
    interval of the paired draws."""
    entities = list(dict.fromkeys(e for e, _ in draws))
    pairs = [(a, b) for b in references for a in entities if b in entities and a != b]
    base = {e: e.split(" [")[0] for e in entities}
    pairs += [(a, b) for a in entities for b in entities if a < b and base[a] == base[b]]
    rows = []
    for a, b in dict.fromkeys(pairs):
        for ood in dict.fromkeys(o for e, o in draws if e == a):
            if (b, ood) not in draws:
                continue
            row = {"a": a, "b": b, "ood_set": ood}
            for metric in METRICS:
                low, high = paired_difference_interval(
                    draws[a, ood][metric], draws[b, ood][metric], confidence
                )
                row |= {
                    f"{metric}_diff": estimates[a, ood][metric] - estimates[b, ood][metric],
                    f"{metric}_diff_ci_low": low,
                    f"{metric}_diff_ci_high": high,
                }
            rows.append(row)
    return pd.DataFrame(rows)


def _test_differences(results: pd.DataFrame, confidence: float) -> pd.DataFrame:
    frames = []
    test = results[(results["split"] == "test") & (results["ood_set"] != "")].copy()
    test["entity"] = _entity(test)
    for experiment, rows in test.groupby("experiment", sort=False):
        per_metric = {m: _draws(rows, m) for m in METRICS}
        # in the order the rows come (a set would reorder the file from run to run)
        keys = [k for k in per_metric["fpr95"] if k in per_metric["auroc"]]
        if not keys:
            continue
        draws = {k: {m: per_metric[m][k] for m in METRICS} for k in keys}
        means = rows.groupby(["entity", "ood_set"])[list(METRICS)].mean()
        estimates = {}
        for entity, ood in keys:
            if ood == AVERAGE:
                sets = means.loc[entity]
                estimates[entity, ood] = {m: float(sets[m].mean()) for m in METRICS}
            else:
                estimates[entity, ood] = {m: float(means.loc[(entity, ood), m]) for m in METRICS}
        frame = paired_differences(draws, estimates, confidence)
        if not frame.empty:
            frames.append(frame.assign(experiment=experiment))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _pooled_differences(path: Path, confidence: float) -> pd.DataFrame:
    pooled = pd.read_parquet(path)
    draws = {
        (r.method, r.ood_set): {m: np.asarray(getattr(r, f"{m}_resamples")) for m in METRICS}
        for r in pooled.itertuples()
    }
    estimates = {
        (r.method, r.ood_set): {m: float(getattr(r, m)) for m in METRICS}
        for r in pooled.itertuples()
    }
    return paired_differences(draws, estimates, confidence).assign(experiment="main (pooled)")


def publish_run(results_dir: str | Path, out_dir: str | Path, confidence: float = 95.0) -> list:
    """Copy what the docs quote of the run in ``results_dir`` into ``out_dir`` (replacing
    its files); returns the written paths."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    parquet = results_dir / "results.parquet"
    if not parquet.is_file():
        raise FileNotFoundError(f"{parquet} does not exist: run the workflow first")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    (out_dir / "tables").mkdir(parents=True)
    written = []
    for table in sorted((results_dir / "tables").glob("*.md")):
        written.append(Path(shutil.copy(table, out_dir / "tables" / table.name)))
    results = pd.read_parquet(parquet)
    test = results[results["split"] == "test"]
    numbers = test[[c for c in NUMBER_COLUMNS if c in test.columns]]
    written.append(out_dir / "numbers.csv")
    numbers.to_csv(written[-1], index=False, float_format="%.4f")
    differences = [_test_differences(results, confidence)]
    for path in sorted((results_dir / "pooled").glob("*.parquet")):
        differences.append(_pooled_differences(path, confidence).assign(model=path.stem))
        written.append(
            Path(shutil.copy(path.with_suffix(".csv"), out_dir / f"pooled_{path.stem}.csv"))
        )
    written.append(out_dir / "differences.csv")
    pd.concat(differences, ignore_index=True).to_csv(written[-1], index=False, float_format="%.4f")
    coverage = [
        {"model": path.parent.name, **json.loads(path.read_text())}
        for path in sorted((results_dir / "ablations").glob("*/sensitivity_coverage.json"))
    ]
    if coverage:
        written.append(out_dir / "coverage.csv")
        pd.DataFrame(coverage).to_csv(written[-1], index=False, float_format="%.4f")
    # the sentence each figure's caption states (its numbers included; e.g. Fig. 9's ratio)
    figures = [
        {"figure": path.name.removesuffix(".facts.json"), "summary": facts["summary"]}
        for path in sorted((results_dir / "figures").glob("*.facts.json"))
        if "summary" in (facts := json.loads(path.read_text()))
    ]
    if figures:
        written.append(out_dir / "figures.csv")
        pd.DataFrame(figures).to_csv(written[-1], index=False)
    return written


#: A decimal number as the docs write it (e.g. 47.7, -3.25, 0.85).
DECIMAL = re.compile(r"(?<![\w.])-?\d+\.\d+(?![\w.])")


def published_values(folder: str | Path) -> list[float]:
    """Every decimal number in the published files under ``folder``."""
    values = []
    for path in sorted(Path(folder).rglob("*")):
        if path.suffix in (".csv", ".md"):
            values += [float(v) for v in DECIMAL.findall(path.read_text(encoding="utf-8"))]
    return values


def unpublished_numbers(text: str, values: Iterable[float]) -> list[str]:
    """The decimal numbers of ``text`` that no published value rounds to (at the number
    of decimals written, half a unit either way, or its negation: a difference may be
    stated either way)."""
    found = np.sort(np.abs(np.asarray(list(values), dtype=np.float64)))
    missing = []
    for number in DECIMAL.findall(text):
        target = abs(float(number))
        half = 0.5 * 10.0 ** -len(number.split(".")[1]) + 1e-9
        i = np.searchsorted(found, target - half)
        if i >= len(found) or found[i] > target + half:
            missing.append(number)
    return missing


if __name__ == "__main__":  # pragma: no cover - the documented command
    if len(sys.argv) != 3:
        sys.exit("usage: python -m opnp.report.published RESULTS_DIR OUT_DIR")
    for written_path in publish_run(sys.argv[1], sys.argv[2]):
        print(written_path)
