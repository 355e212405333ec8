"""The workflow end to end through Snakemake's command line: DAG, outputs, reruns, resume,
determinism. Runs on tests/configs/tiny.yaml (every rule, small data) and, marked slow,
on the default config."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from workflow_helpers import REPO, TINY, jobs_per_rule, run_snakemake, snakemake_command

METRICS = ["fpr95", "auroc", "aupr_in", "aupr_out"]


def load(path: Path) -> dict:
    with open(path) as handle:
        return yaml.safe_load(handle)


def dry_run_jobs(workdir: Path, configfile: Path) -> dict[str, int]:
    """Rule -> number of jobs a dry run plans."""
    proc = run_snakemake(workdir, "-n", "--quiet", "rules", configfile=configfile, timeout=300)
    return jobs_per_rule(proc.stdout)


def dry_run_job_files(
    workdir: Path, configfile: Path, kind: str = "input"
) -> list[tuple[str, str]]:
    """(rule, ``kind`` line) of every job a dry run plans; ``kind`` is input or output."""
    proc = run_snakemake(workdir, "-n", configfile=configfile, timeout=300)
    jobs, rule = [], None
    for line in proc.stdout.splitlines():
        match = re.match(r"^(?:local)?rule (\S+):$", line.strip())
        if match:
            rule = match.group(1)
        elif line.strip().startswith(f"{kind}:") and rule is not None:
            jobs.append((rule, line.strip()))
    return jobs


def test_dry_run_plans_every_experiment(tmp_path):
    counts = dry_run_jobs(tmp_path, REPO / "config" / "config.yaml")
    config = load(REPO / "config" / "config.yaml")
    # The default config trains the model once per replicate seed (vary: training): every
    # unit trains, extracts and evaluates the methods; the ablations run once.
    assert config["replicates"]["vary"] == "training"
    n_units = len(config["replicates"]["seeds"])
    n_feature_methods = len([m for m in config["methods"] if m != "odin"])
    assert counts["train_model"] == n_units
    assert counts["select_hyperparameters"] == n_units * n_feature_methods
    assert counts["evaluate_method"] == n_units * n_feature_methods
    assert counts["select_network_method"] == counts["evaluate_network_method"] == n_units
    parts = {d: k for d, k in config["extraction"]["parts"].items() if k > 1}
    assert parts, "the default config should extract one dataset in parts (exercises the rules)"
    assert counts["extract_features"] == n_units * (len(config["datasets"]) - len(parts))
    assert counts["extract_feature_part"] == n_units * sum(parts.values())
    assert counts["merge_feature_parts"] == n_units * len(parts)
    assert "replicate_features" not in counts
    for rule in [
        "train_model",
        "compute_sensitivity",
        "select_network_method",
        "evaluate_network_method",
        "pruned_accuracy",
        "layers",
        "subsets",
        "statistics",
        "readings",
        "sweep",
        "calibration",
        "aggregate_results",
        "make_table",
        "figure_sensitivity_distribution",
        "figure_pruning_before_after",
        "figure_percentage_sweep",
        "figure_reliability",
        "figure_score_distributions",
        "figure_layer_sensitivity",
        "figure_pruned_weight_sensitivity",
        "figure_readings",
    ]:
        assert counts.get(rule, 0) >= 1, f"no {rule} job planned: {counts}"
    for rule in ("layers", "sweep", "figure_reliability"):
        assert counts[rule] == 1, f"{rule}: the ablations run on the first unit only"
    # One sensitivity per (fraction, seed), a single seed for 100 % (the one every unit
    # needs); the subsets for the first unit's Table 8.
    fractions = config["sensitivity"]["fractions"]
    expected = sum(1 if f >= 100 else len(config["seeds"]) for f in fractions)
    assert counts["compute_sensitivity"] == expected + n_units - 1


def test_each_training_seed_is_its_own_model(tmp_path):
    """Each unit trains with its own seed into its own file, and extracts with it."""
    config = load(REPO / "config" / "config.yaml")
    units = [f"smallcnn-seed{s}" for s in config["replicates"]["seeds"]]
    outputs = dry_run_job_files(tmp_path, REPO / "config" / "config.yaml", kind="output")
    trained = sorted(o for r, o in outputs if r == "train_model")
    assert trained == sorted(
        f"output: results/digits/models/{u}/model.pt, results/digits/models/{u}/fc.npz, "
        f"results/digits/models/{u}/summary.json"
        for u in units
    )
    inputs = dry_run_job_files(tmp_path, REPO / "config" / "config.yaml")
    extraction = [i for r, i in inputs if r in ("extract_features", "extract_feature_part")]
    for unit in units:
        assert sum(f"models/{unit}/model.pt" in i for i in extraction) == len(extraction) // len(
            units
        )


def test_test_ood_sets_never_reach_hyperparameter_selection(tmp_path):
    config = load(REPO / "config" / "config.yaml")
    jobs = dry_run_job_files(tmp_path, REPO / "config" / "config.yaml")
    selection_jobs = [
        (r, i) for r, i in jobs if r in ("select_hyperparameters", "select_network_method")
    ]
    assert selection_jobs, "no selection jobs planned"
    for rule, inputs in selection_jobs:
        for name in config["ood"]["test"]:
            assert f"/{name}." not in inputs, f"{rule} reads test OOD set {name}: {inputs}"
        assert config["id"]["test"] not in inputs, f"{rule} reads the ID test set: {inputs}"
        for name in config["ood"]["val"]:
            assert f"/{name}." in inputs, f"{rule} misses validation OOD set {name}"


def test_react_combinations_wait_for_reacts_selection(tmp_path):
    """dice+react / opnp+react take ReAct's selected percentile: their selection job reads
    ReAct's selection table, the other methods' jobs do not."""
    config = load(REPO / "config" / "config.yaml")
    jobs = dry_run_job_files(tmp_path, REPO / "config" / "config.yaml")
    selection = [inputs for rule, inputs in jobs if rule == "select_hyperparameters"]
    for seed in config["replicates"]["seeds"]:  # each unit its own ReAct selection
        react_table = f"/selection/smallcnn-seed{seed}/react.parquet"
        readers = [i for i in selection if react_table in i]
        assert len(readers) == 2, readers
        # One reader is opnp+react (it also reads the sensitivity), the other dice+react.
        assert sorted("/sensitivity/" in i for i in readers) == [False, True]
    for method in ("dice+react", "opnp+react"):
        assert config["methods"][method]["fixed"]["react_percentile"] == "selected"


def test_tiny_config_plans_the_readings_job(tmp_path):
    """The tiny config runs every reading: one readings job per model, reading the
    validation and test sets and ReAct's selection (opnp+react's percentile)."""
    config = load(TINY)
    assert config["ablations"]["readings"]["run"]
    jobs = [i for r, i in dry_run_job_files(tmp_path, TINY) if r == "readings"]
    assert len(jobs) == len(config["models"]), jobs
    for name in [*config["ood"]["val"], *config["ood"]["test"]]:
        assert f"/{name}." in jobs[0], name
    assert "/selection/smallcnn/react.parquet" in jobs[0]
    assert "/sensitivity/smallcnn/fraction100_seed0.npz" in jobs[0]


def react_percentiles(results: pd.DataFrame, method: str) -> set[float]:
    rows = results[(results["method"] == method) & (results["experiment"] == "main")]
    return {json.loads(p).get("react_percentile") for p in rows["params"]}


def selected_react_percentile(results: pd.DataFrame) -> float:
    react = results[
        (results["method"] == "react") & (results["split"] == "val") & results["selected"]
    ]
    (percentile,) = {json.loads(p)["percentile"] for p in react["params"]}
    return percentile


# ------------------------------------------------------------------ runs (slow)


def check_intervals(results: pd.DataFrame, config: dict) -> None:
    """Every test row about an OOD set (main comparison and ablations) carries a finite
    bootstrap interval around its value, and the resampled metrics the tables pair."""
    n_resamples = config.get("uncertainty", {}).get("n_resamples", 1000)
    test = results[(results["split"] == "test") & (results["ood_set"] != "")]
    assert set(test["experiment"]) >= {
        "main",
        "layers",
        "subsets",
        "statistics",
        "readings",
        "sweep",
    }
    for metric in ("fpr95", "auroc"):
        low, high = test[f"{metric}_ci_low"], test[f"{metric}_ci_high"]
        assert np.isfinite(low).all() and np.isfinite(high).all(), metric
        outside = test[(low > test[metric]) | (test[metric] > high)]
        assert outside.empty, outside[["experiment", "method", "ood_set", metric]]
        assert (high > low).any(), f"every {metric} interval is a point"
        lengths = {len(v) for v in test[f"{metric}_resamples"]}
        assert lengths == {n_resamples}, lengths


def check_outputs(workdir: Path, config: dict) -> pd.DataFrame:
    # The workflow writes nowhere but these folders (and Snakemake its own metadata).
    written = {p.name for p in workdir.iterdir()}
    assert written <= {"results", "resources", "logs", "benchmarks", ".snakemake"}, written
    results_dir = workdir / "results" / config["benchmark"]
    results = pd.read_parquet(results_dir / "results.parquet")
    test = results[(results["experiment"] == "main") & (results["split"] == "test")]
    for method in config["methods"]:
        for ood in config["ood"]["test"]:
            rows = test[(test["method"] == method) & (test["ood_set"] == ood)]
            assert len(rows) >= 1, f"no test row for {method} on {ood}"
            assert np.isfinite(rows[METRICS].to_numpy()).all(), f"{method} on {ood}"
            # every method (ODIN too) records the unpruned network's ID test accuracy
            assert np.isfinite(rows["id_accuracy"]).all(), f"{method} lacks id_accuracy"
            assert ((rows[METRICS] >= 0) & (rows[METRICS] <= 100)).all().all()
    for column in ["config_hash", "opnp_version", "git_commit"]:
        assert (results[column].astype(str).str.len() > 0).all(), column
    check_intervals(results, config)
    tables = sorted((results_dir / "tables").glob("*.md"))
    ids = {t.name.split("_")[0] for t in tables}
    for paper_id in ["table1", "table3", "table4", "table5", "table7", "table8", "table9"]:
        assert paper_id in ids, f"{paper_id} missing from {sorted(ids)}"
    for md in tables:
        assert md.with_suffix(".tex").read_text().count("\\begin{tabular}") == 1
        caption = md.read_text().split("\n\n")[0]
        if not md.name.startswith("selected"):
            assert "n = " in caption and "ID test images" in caption, caption
        if md.name.split("_")[0] not in {"selected", "table3"}:
            assert "bootstrap interval of the difference to the best includes 0" in caption
        assert len(pd.read_csv(md.with_suffix(".csv"))) >= 1
    caption = next((results_dir / "tables").glob("table8_*.md")).read_text().split("\n\n")[0]
    assert "Subset sizes: " in caption, caption
    assert "| Selected |" in next((results_dir / "tables").glob("table9_*.md")).read_text()
    figures = sorted((results_dir / "figures").glob("*.png"))
    fig_ids = {f.name.split("_")[0] for f in figures}
    assert fig_ids >= {"fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig9", "readings"}, fig_ids
    for figure in figures:
        with Image.open(figure) as image:
            image.verify()
        with Image.open(figure) as image:
            assert image.size[0] > 200 and image.size[1] > 200
        # every figure also as a vector PDF
        assert figure.with_suffix(".pdf").read_bytes().startswith(b"%PDF-"), figure
    return results


@pytest.mark.slow
def test_tiny_workflow_produces_every_table_and_figure(tiny_run):
    results = check_outputs(tiny_run, load(TINY))
    main = results[results["experiment"] == "main"]
    # Random pruning was run for every seed; the selection marked exactly one config.
    assert set(main.loc[main["method"] == "rpp", "seed"]) == set(load(TINY)["seeds"])
    chosen = main[(main["split"] == "val") & main["selected"]]
    assert (chosen.groupby("method")["params"].nunique() == 1).all()
    # The training set was extracted by 3 jobs and merged; the parts (temp) are gone.
    features = tiny_run / "results" / "tiny" / "features" / "smallcnn"
    merged = json.loads((features / "digits-train.manifest.json").read_text())
    assert [p["stem"] for p in merged["parts"]] == ["0", "1", "2"]
    assert merged["parts"][-1]["stop"] == merged["n"]
    assert not [p for p in features.rglob("*.parts/*") if p.is_file()]


def table_columns(path: Path) -> list[str]:
    """Paper columns of a table CSV ("<column> <METRIC> mean"/"std" -> "<column>")."""
    names = pd.read_csv(path).columns[1:]
    names = [re.sub(r" (FPR95|AUROC|ID Acc) (mean|std)$| text$", "", n) for n in names]
    return list(dict.fromkeys(names))


@pytest.mark.slow
def test_tiny_tables_have_the_paper_layout(tiny_run):
    config = load(TINY)
    tables = tiny_run / "results" / "tiny" / "tables"
    assert table_columns(tables / "table4_pruning_methods_smallcnn.csv") == [
        "RPP",
        "TPP",
        "OPP",
        "RNP",
        "TNP",
        "ONP",
    ]
    assert table_columns(tables / "table8_subsets_smallcnn.csv") == ["w/o pruning", "5%", "100%"]
    assert table_columns(tables / "table9_statistics_smallcnn.csv") == [
        "Mean",
        "Max",
        "Min",
        "Median",
        "Norm",
        "Variance",
    ]
    table7 = pd.read_csv(tables / "table7_layers_smallcnn.csv")
    assert list(table7.iloc[:, 0])[-3:] == [
        "Global Threshold Pruning",
        "Layer-wise Pruning",
        "FC Layer",
    ]
    assert table_columns(tables / "table3_pruned_accuracy_smallcnn.csv")[0] == "none"
    main = pd.read_csv(tables / "table1_main_results_smallcnn.csv")
    assert len(main) == len(config["methods"])
    assert table_columns(tables / "table1_main_results_smallcnn.csv") == [
        *config["ood"]["test"],
        "Average",
    ]
    from opnp.pipeline.readings import reading_values

    readings = pd.read_csv(tables / "readings_smallcnn.csv")
    n_values = sum(len(reading_values(r)) for r in config["ablations"]["readings"]["run"])
    assert len(readings) == n_values + 2  # and Energy, ReAct from the main results
    assert list(readings.iloc[-2:, 0]) == ["Energy", "ReAct"]
    assert readings.iloc[0, 0] == "OPNP (threshold_scope=matrix)"
    assert table_columns(tables / "readings_smallcnn.csv") == [
        *config["ood"]["test"],
        "Average",
        "ID acc.",
    ]
    assert readings["ID acc. ID Acc mean"].between(0, 100).all()
    with_without = pd.read_csv(tables / "table5_with_without_opnp_smallcnn.csv")
    assert list(with_without.iloc[:, 0]) == [
        "MSP",
        "MSP+OPNP",
        "Energy",
        "Energy+OPNP",
        "ReAct",
        "ReAct+OPNP",
    ]


@pytest.mark.slow
def test_tiny_readings_reference_rows_are_the_main_results(tiny_run):
    """Each reading's default value is the main run's reading, selected by the same
    protocol on the same grid: its test rows equal the method's main test rows."""
    from opnp.pipeline.readings import READING_ABLATIONS, reading_values

    results = pd.read_parquet(tiny_run / "results" / "tiny" / "results.parquet")
    test = results[results["split"] == "test"]
    for name in load(TINY)["ablations"]["readings"]["run"]:
        method = READING_ABLATIONS[name][0]
        variant = f"{name}={reading_values(name)[0]}"
        ours = test[(test["experiment"] == "readings") & (test["variant"] == variant)]
        main = test[(test["experiment"] == "main") & (test["method"] == method)]
        main = main[main["seed"] == main["seed"].min()]
        for frame in (ours, main):
            assert len(frame) == len(load(TINY)["ood"]["test"]), (name, len(frame))
        ours, main = (f.set_index("ood_set").sort_index() for f in (ours, main))
        for column in ("fpr95", "auroc"):
            np.testing.assert_allclose(ours[column], main[column], atol=1e-12, err_msg=name)


@pytest.mark.slow
def test_rerun_does_nothing_and_a_param_change_reruns_only_that_method(tiny_run, tmp_path):
    proc = run_snakemake(tiny_run, "-n", configfile=TINY)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    changed = load(TINY)
    changed["methods"]["dice"]["grid"]["percentile"] = [60, 90]
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(changed))
    counts = dry_run_jobs(tiny_run, path)
    n_tables = counts.pop("make_table")
    assert counts == {
        "select_hyperparameters": 1,
        "evaluate_method": 1,
        "aggregate_results": 1,
        "all": 1,
    }, counts
    assert n_tables >= 1
    for rule, outputs in dry_run_job_files(tiny_run, path, kind="output"):
        if rule in ("select_hyperparameters", "evaluate_method"):
            assert "/smallcnn/dice." in outputs, outputs
    # ReAct's grid also re-runs exactly the combinations that clip at its selection.
    changed = load(TINY)
    changed["methods"]["react"]["grid"]["percentile"] = [85, 95]
    path.write_text(yaml.safe_dump(changed))
    rerun = {
        outputs.split("/smallcnn/")[1].split(".parquet")[0]
        for rule, outputs in dry_run_job_files(tiny_run, path, kind="output")
        if rule == "select_hyperparameters"
    }
    assert rerun == {"react", "dice+react", "opnp+react"}, rerun


def _wait_for(pattern: str, workdir: Path, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if list(workdir.glob(pattern)):
            return True
        time.sleep(0.2)
    return False


def _kill_tree(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


@pytest.mark.slow
def test_killed_runs_resume_to_identical_results(tiny_run, tmp_path):
    """Kill the workflow (SIGKILL, the whole process group) during the extraction of a
    dataset in parts, during extraction and during evaluation; the resumed run must give results identical to an uninterrupted clean
    run in another directory (which also shows two clean runs agree)."""
    workdir = tmp_path / "interrupted"
    workdir.mkdir()
    cmd = snakemake_command(workdir, "--cores", "2", configfile=TINY)
    for pattern in [
        "results/tiny/features/*/*.parts/*.manifest.json",
        "results/tiny/features/*/*.manifest.json",
        "results/tiny/evaluation/*/*.parquet",
    ]:
        if (workdir / ".snakemake").exists():
            # A killed Snakemake leaves its lock behind; --unlock is the documented way back.
            run_snakemake(workdir, "--unlock", configfile=TINY, timeout=120)
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        reached = _wait_for(pattern, workdir, proc, timeout=600)
        _kill_tree(proc)
        assert reached, f"the run ended before {pattern} appeared"
    run_snakemake(workdir, "--unlock", configfile=TINY, timeout=120)
    run_snakemake(workdir, "--cores", "2", configfile=TINY, timeout=1500)
    resumed = pd.read_parquet(workdir / "results/tiny/results.parquet")
    clean = pd.read_parquet(tiny_run / "results/tiny/results.parquet")
    pd.testing.assert_frame_equal(resumed, clean)
    # No temporary files were left behind and taken for results.
    leftovers = [p for p in (workdir / "results").rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers


@pytest.mark.slow
def test_default_workflow_end_to_end(default_run):
    config = load(REPO / "config" / "config.yaml")
    results = check_outputs(default_run, config)
    seeds = config["replicates"]["seeds"]
    units = [f"smallcnn-seed{s}" for s in seeds]
    assert set(results["model"]) == set(units)
    # The ReAct combinations clip at ReAct's selected percentile, in selection and test
    # rows alike, and the selected-hyperparameters table says so (per unit).
    first = units[0]
    unit_rows = results[results["model"] == first]
    chosen = selected_react_percentile(unit_rows)
    for method in ("opnp+react", "dice+react"):
        assert react_percentiles(unit_rows, method) == {chosen}, method
    table = (default_run / f"results/digits/tables/selected_hyperparameters_{first}.md").read_text()
    assert f"react_percentile={chosen:g} (ReAct's selection)" in table
    # Each unit is its own model, trained with its own seed.
    weights = []
    for seed, unit in zip(seeds, units, strict=True):
        model_dir = default_run / "results/digits/models" / unit
        summary = json.loads((model_dir / "summary.json").read_text())
        assert summary["spec"]["train"]["seed"] == seed
        assert summary["id_test_accuracy"] > 90
        weights.append((model_dir / "model.pt").read_bytes())
    assert len(set(weights)) == len(units)
    # The main table pools the training seeds, and the README shows this run's table.
    main = (default_run / "results/digits/tables/table1_main_results_smallcnn.md").read_text()
    assert f"Pooled over {len(seeds)} replicates (training seeds {sorted(seeds)})" in main
    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "opnp.report.readme",
            "--check",
            "--readme",
            str(REPO / "README.md"),
        ],
        cwd=default_run,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, f"README.md's main table is not this run's: {check.stderr}"
    report = default_run / "report.html"
    run_snakemake(default_run, "--report", str(report), timeout=600)
    assert report.stat().st_size > 10_000
    # Captions carry this run's numbers: Fig. 4's gives the ECE of the calibration step.
    results = default_run / "results" / config["benchmark"]
    calibration = pd.read_parquet(results / f"ablations/{first}/calibration.parquet")
    ece = calibration.groupby("method")["ece"].first()
    facts = json.loads((results / f"figures/fig4_reliability_{first}.facts.json").read_text())
    html = report.read_text(encoding="utf-8")
    # (the report embeds each caption as a JSON string: non-ASCII escaped)
    caption = json.dumps(f"<strong>This run:</strong> {facts['summary']}")[1:-1]
    assert caption in html
    for method in ("energy", "opnp"):
        assert f"ECE {ece[method]:.2f} %" in facts["summary"]
