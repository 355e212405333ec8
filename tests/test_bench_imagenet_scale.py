"""perf/bench_imagenet_scale.py's report: stages summed per scale, growth exponents,
the CSV and the growth figure, from job records made here (no Snakemake run)."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

PERF = Path(__file__).resolve().parents[1] / "perf" / "bench_imagenet_scale.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_imagenet_scale", PERF)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_imagenet_scale"] = module
    spec.loader.exec_module(module)
    return module


def jobs(scale):
    """A linear stage (knn grows as N^2 here) and a constant one."""
    return [
        {"rule": "select_hyperparameters", "job": "a", "s": 100 * scale, "cpu": 180 * scale, "max_rss": 900},
        {"rule": "select_hyperparameters", "job": "b", "s": 50 * scale**2, "cpu": 90 * scale**2, "max_rss": 2000 * scale},
        {"rule": "make_table", "job": "t", "s": 3.0, "cpu": 2.5, "max_rss": 200},
    ]  # fmt: skip


def test_stages_exponents_csv_and_figure(bench, tmp_path, capsys):
    scales = [1 / 16, 1 / 4, 1.0]
    runs = {s: jobs(s) for s in scales}
    stages = bench.per_stage(runs)
    assert stages[1.0]["select_hyperparameters"] == {
        "s": 150.0,
        "cpu": 270.0,
        "max_rss": 2000,
        "jobs": 2,
    }
    assert bench.slope([1, 2, 4], [3, 6, 12]) == pytest.approx(1.0)
    assert bench.slope([1, 2, 4], [1, 4, 16]) == pytest.approx(2.0)
    bench.print_report(scales, {s: 10.0 * s for s in scales}, runs, stages, top_jobs=2)
    out = capsys.readouterr().out
    assert "RESULT imagenet_scale_select_hyperparameters_seconds 150.0" in out
    assert "RESULT imagenet_scale_peak_rss_mib 2000" in out
    assert "RESULT imagenet_scale_snakemake_wall_seconds 10" in out
    totals = [sum(j["s"] for j in runs[s]) for s in scales]
    expected = bench.slope(scales, totals)
    assert f"RESULT imagenet_scale_growth_exponent {expected:.2f}" in out
    assert 1.0 < expected < 2.0
    bench.write_csv(tmp_path / "stages.csv", scales, 1281167, stages)
    with open(tmp_path / "stages.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and rows[-1]["train_rows"] == "1281167"
    read_scales, read_stages = bench.read_csv(tmp_path / "stages.csv")
    assert read_scales == scales and read_stages[1.0]["make_table"]["cpu"] == 2.5
    table = bench.markdown_table(read_scales, read_stages)
    row = next(line for line in table.splitlines() if line.startswith("| select_hyper"))
    assert row.startswith("| select_hyperparameters | 2 | 6.")  # 6.45 s at N/16
    assert row.endswith("| 150.0 | 270.0 | 2,000 | 1.21 |")  # log2(270 / 45.6) / log2(4)
    bench.draw_growth(tmp_path / "growth.png", scales, 1281167, stages)
    assert (tmp_path / "growth.png").stat().st_size > 10_000


def test_separated_jobs_form_their_own_stage_and_stay_in_the_totals(bench, capsys):
    """--separate /knn: KNN's jobs (an N^2 stage) apart from their rule's other jobs."""
    scales = [1 / 4, 1.0]
    runs = {s: jobs(s) for s in scales}
    for s in scales:
        runs[s][1]["job"] = "selection/resnet50-synthetic/knn"
    stages = bench.per_stage(runs, ["/knn"])
    assert stages[1.0]["select_hyperparameters"]["s"] == 100.0
    assert stages[1.0]["select_hyperparameters (knn)"] == {
        "s": 50.0,
        "cpu": 90.0,
        "max_rss": 2000,
        "jobs": 1,
    }
    table = bench.markdown_table(scales, stages)
    row = next(
        line for line in table.splitlines() if line.startswith("| select_hyperparameters (knn)")
    )
    assert row.endswith("| 2.00 |")  # N^2
    assert "| **all stages** | 3 | **31.1** | **153.0** |" in table
    bench.print_report(scales, {s: 1.0 for s in scales}, runs, stages, top_jobs=1)
    out = capsys.readouterr().out
    assert "RESULT imagenet_scale_select_hyperparameters_knn_seconds 50.0" in out


def test_reuse_names_a_missing_folder(bench, tmp_path):
    assert bench.parse_reuse([f"1={tmp_path}"]) == {1.0: tmp_path}
    with pytest.raises(SystemExit, match="expected SCALE=DIR with an existing DIR"):
        bench.parse_reuse([f"1={tmp_path / 'nope'}"])


def test_docs_stage_table_is_the_committed_measurement(bench):
    """docs/scaling.md's full-scale stage table is what markdown_table makes of the
    committed CSV of the measured run (docs/scaling/imagenet_scale.csv)."""
    docs = PERF.parents[1] / "docs"
    table = bench.markdown_table(*bench.read_csv(docs / "scaling" / "imagenet_scale.csv"))
    assert table in (docs / "scaling.md").read_text()


def test_docs_result_lines_are_the_committed_report():
    """docs/scaling.md's RESULT lines (its block, and those quoted in its prose) are lines
    of the committed output of the measured run (docs/scaling/imagenet_scale_report.txt),
    and the KNN chunk's figures quoted there are in that run's output (knn_chunk.txt)."""
    import re

    docs = PERF.parents[1] / "docs"
    text = (docs / "scaling.md").read_text()
    report = set((docs / "scaling" / "imagenet_scale_report.txt").read_text().splitlines())
    block = [line for line in text.splitlines() if line.startswith("RESULT imagenet_scale_")]
    quoted = re.findall(r"`(RESULT imagenet_scale_\S+ [-\d.]+)`", text)
    assert len(block) > 10 and quoted
    for line in block + quoted:
        assert line in report, line
    chunk = (docs / "scaling" / "knn_chunk.txt").read_text()
    paragraph = text[text.index("**KNN's floor.**") :][:1500]
    for number in ("30.4", "0.02612", "283.0", "107.0", "2.65", "6.66e-16"):
        assert number in paragraph and number in chunk, number
