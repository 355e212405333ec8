"""The README's generated main-table section (opnp.report.readme)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opnp.report.readme import (
    END,
    START,
    comparison_sentences,
    difference_interval,
    main,
    replace_section,
)


def _rows(unit, method, fpr95_by_set, resamples_by_set):
    return [
        {
            "model": unit,
            "experiment": "main",
            "split": "test",
            "method": method,
            "ood_set": ood_set,
            "fpr95": fpr95,
            "fpr95_resamples": np.asarray(resamples_by_set[ood_set], dtype=float),
        }
        for ood_set, fpr95 in fpr95_by_set.items()
    ]


def _results(shift_per_unit, spread, n_resamples=400, seed=0):
    """Two units; 'opnp' = 'energy' + shift, test noise of width ``spread`` per resample."""
    rng = np.random.default_rng(seed)
    rows = []
    for unit, shift in shift_per_unit.items():
        base = {s: 30.0 + 5 * i for i, s in enumerate(("a", "b"))}
        noise = {s: rng.normal(0, spread, n_resamples) for s in base}
        rows += _rows(unit, "energy", base, {s: base[s] + noise[s] for s in base})
        shifted = {s: v + shift for s, v in base.items()}
        # paired: the same test resamples move both methods alike, plus their own noise
        own = {s: rng.normal(0, spread, n_resamples) for s in base}
        rows += _rows(unit, "opnp", shifted, {s: shifted[s] + noise[s] + own[s] for s in base})
    return pd.DataFrame(rows)


def test_difference_interval_pools_units_and_covers_the_point():
    results = _results({"m-seed0": -10.0, "m-seed1": -12.0}, spread=1.0)
    d = difference_interval(results, "opnp", "energy")
    assert d["n_units"] == 2
    assert d["point"] == pytest.approx(-11.0)
    assert d["method_mean"] - d["baseline_mean"] == pytest.approx(d["point"])
    assert d["low"] < d["point"] < d["high"] < 0


def test_verdict_comes_from_the_interval_not_the_point():
    # Lower point value for OPNP in both cases; only the noise differs.
    clear = comparison_sentences(_results({"m-seed0": -10.0, "m-seed1": -12.0}, spread=1.0))
    noisy = comparison_sentences(_results({"m-seed0": -1.0, "m-seed1": -1.0}, spread=10.0))
    assert "OPNP is better than Energy" in clear
    assert "OPNP is within noise of Energy" in noisy
    worse = comparison_sentences(_results({"m-seed0": 10.0, "m-seed1": 12.0}, spread=1.0))
    assert "OPNP is worse than Energy" in worse


def test_training_seed_spread_widens_the_interval():
    # Same mean difference, but the units disagree: the seed level must show.
    agree = difference_interval(_results({"u-seed0": -5.0, "u-seed1": -5.0}, 0.5), "opnp", "energy")
    split = difference_interval(_results({"u-seed0": -15.0, "u-seed1": 5.0}, 0.5), "opnp", "energy")
    assert split["high"] - split["low"] > 5 * (agree["high"] - agree["low"])


def test_replace_section_needs_one_pair_of_markers():
    text = f"head\n{START}\nold\n{END}\ntail\n"
    assert replace_section(text, "new\n") == f"head\n{START}\nnew\n{END}\ntail\n"
    with pytest.raises(ValueError, match="main-table"):
        replace_section("no markers", "new\n")


def test_check_fails_on_a_readme_that_was_not_regenerated(tmp_path, monkeypatch):
    results = _results({"smallcnn-seed0": -3.0, "smallcnn-seed1": -4.0}, spread=1.0)
    (tmp_path / "tables").mkdir()
    results.to_parquet(tmp_path / "results.parquet")
    (tmp_path / "tables" / "table1_main_results_smallcnn.md").write_text("| a |\n| --- |\n| 1 |\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{START}\nstale\n{END}\nrest\n")
    args = ["--results-dir", str(tmp_path), "--readme", str(readme)]
    assert main([*args, "--check"]) == 1
    assert main(args) == 0
    assert main([*args, "--check"]) == 0
    text = readme.read_text()
    assert "| 1 |" in text and "stale" not in text and text.endswith(f"{END}\nrest\n")
    assert "mean over 2 training seeds" in text


REPO = Path(__file__).resolve().parents[2]
# "915 passed", "2 skipped", "657 of the 661 tests": a suite count is stale as soon as a
# test is added (issue 27); `python -m pytest --collect-only -q` prints today's.
TEST_COUNT = re.compile(
    r"\b\d[\d,]*\s+(?:passed|failed|skipped|deselected|xfailed|xpassed|tests)\b", re.IGNORECASE
)


def test_prose_states_no_test_suite_counts():
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    docs += sorted(REPO.glob("*/README.md")) + sorted(REPO.glob("profiles/*/README.md"))
    assert len(docs) > 3
    found = [
        f"{path.relative_to(REPO)}: {match.group(0)!r}"
        for path in docs
        for match in TEST_COUNT.finditer(path.read_text(encoding="utf-8"))
    ]
    assert not found, f"test counts in prose go stale; say how to count instead: {found}"
    assert "--collect-only -q" in (REPO / "README.md").read_text(encoding="utf-8")
    assert TEST_COUNT.search("CI: 915 passed and 2 skipped") and TEST_COUNT.search("of 661 tests")
    assert not TEST_COUNT.search("on 10,000 test images; 20,000 test images")
