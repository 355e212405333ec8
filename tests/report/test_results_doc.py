"""docs/results.md quotes runs, not memory: every decimal number in it is a value of the
run outputs published under docs/results/ (opnp.report.published)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opnp.report.published import (
    paired_differences,
    publish_run,
    published_values,
    unpublished_numbers,
)

ROOT = Path(__file__).resolve().parents[2]


def test_every_number_in_results_md_is_published():
    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    values = published_values(ROOT / "docs" / "results")
    assert values, "docs/results/ holds no published run"
    missing = unpublished_numbers(text, values)
    assert not missing, f"docs/results.md states numbers no published run has: {missing[:20]}"


def test_unpublished_numbers_finds_what_no_run_has():
    assert unpublished_numbers("FPR95 47.7 vs 66.3 (-18.6)", [47.71, 66.32, 18.61]) == []
    assert unpublished_numbers("FPR95 47.8 and 1.25", [47.71, 1.251]) == ["47.8"]
    assert unpublished_numbers("1,000 images, 5 seeds", []) == []  # counts are not decimals


def test_paired_differences_use_the_draws_of_both():
    rng = np.random.default_rng(0)
    base = rng.normal(size=500)
    draws = {
        ("energy", "a"): {"fpr95": base, "auroc": base},
        ("opnp", "a"): {"fpr95": base + 2.0, "auroc": base - 1.0},
    }
    estimates = {k: {"fpr95": float(v["fpr95"].mean()), "auroc": 0.0} for k, v in draws.items()}
    frame = paired_differences(draws, estimates, references=("energy",))
    row = frame[(frame["a"] == "opnp") & (frame["b"] == "energy")].iloc[0]
    # paired: the shared noise cancels, the interval is the constant shift
    assert row["fpr95_diff_ci_low"] == pytest.approx(2.0) == row["fpr95_diff_ci_high"]
    assert row["auroc_diff_ci_low"] == pytest.approx(-1.0)


def test_publish_run_refuses_a_missing_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.parquet"):
        publish_run(tmp_path / "nope", tmp_path / "out")


def test_publish_run_writes_numbers_and_differences(tmp_path):
    res = tmp_path / "run"
    (res / "tables").mkdir(parents=True)
    (res / "tables" / "t.md").write_text("| a | 1.50 |\n")
    (res / "figures").mkdir()
    (res / "figures" / "fig9_x_m.facts.json").write_text('{"summary": "ratio 0.894 [0.8, 1.1]"}')
    rows = []
    rng = np.random.default_rng(1)
    for method, shift in (("energy", 0.0), ("opnp", -3.0)):
        for ood in ("x", "y"):
            rows.append(
                {
                    "model": "m",
                    "experiment": "main",
                    "method": method,
                    "variant": "",
                    "ood_set": ood,
                    "params": "{}",
                    "split": "test",
                    "seed": 0,
                    "fpr95": 50.0 + shift,
                    "auroc": 80.0,
                    "fpr95_resamples": 50.0 + shift + rng.normal(size=50),
                    "auroc_resamples": 80.0 + rng.normal(size=50),
                }
            )
    pd.DataFrame(rows).to_parquet(res / "results.parquet")
    publish_run(res, tmp_path / "out")
    diff = pd.read_csv(tmp_path / "out" / "differences.csv")
    avg = diff[(diff["a"] == "opnp") & (diff["b"] == "energy") & (diff["ood_set"] == "Average")]
    assert avg["fpr95_diff"].iloc[0] == pytest.approx(-3.0)
    assert 1.5 in published_values(tmp_path / "out")
    # a figure's caption sentence is published with its numbers
    figures = pd.read_csv(tmp_path / "out" / "figures.csv")
    assert figures["figure"].tolist() == ["fig9_x_m"]
    assert 0.894 in published_values(tmp_path / "out")
