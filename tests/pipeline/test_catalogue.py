"""The catalogue is the one home of an experiment: a new table ablation is its catalogue
entry, its computation, its table layout and its config key (schema and config), at most
five files, and the workflow refuses at parse time an active entry that names a layout,
plot or computation that does not exist.

The workflow tests add a toy ablation to a copy of the package and workflow (the changes
a developer would make, applied as text), then run the copy's Snakemake DAG."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import REPO, TINY, jobs_per_rule

from opnp.pipeline.experiments import (
    CATALOGUE,
    Experiment,
    Figure,
    active_experiments,
    catalogue_gaps,
    figure_stem,
)
from opnp.report.paper_tables import TABLE_LAYOUTS, build_table

# ---------------------------------------------------------------- the catalogue itself


def test_every_entry_names_what_exists():
    assert catalogue_gaps(CATALOGUE, TABLE_LAYOUTS) == []
    named = {e.layout for e in CATALOGUE if e.layout is not None}
    assert named == set(TABLE_LAYOUTS), "a registered layout no entry uses, or the reverse"


def test_gaps_name_the_experiment_and_what_is_missing():
    broken = Experiment(
        "broken",
        "Table 99",
        "an entry whose functions do not exist",
        layout="no_such_layout",
        compute="opnp.pipeline.ablations.no_such_function",
        figures=(Figure("Fig. 99", "nothing", "opnp.report.no_such_module.plot_nothing"),),
    )
    gaps = catalogue_gaps([broken], TABLE_LAYOUTS)
    assert len(gaps) == 3, gaps
    assert all(g.startswith("broken: ") for g in gaps)
    assert "'no_such_layout'" in gaps[0]
    assert any("plot function 'opnp.report.no_such_module.plot_nothing'" in g for g in gaps)
    assert any("compute function 'opnp.pipeline.ablations.no_such_function'" in g for g in gaps)


def test_every_figure_stem_is_unique():
    config = yaml.safe_load(TINY.read_text())
    config.setdefault("report", {})["sensitivity_figure"] = "fig8"
    stems = [figure_stem(e, f, config, "m") for e in active_experiments(config) for f in e.figures]
    assert len(stems) == len(set(stems)), stems
    assert "fig8_sensitivity_distribution" in stems  # a figure of all models: no model part


def test_an_entry_without_a_registered_layout_has_no_table(monkeypatch):
    from opnp.pipeline import experiments

    toy = Experiment("toy", "Table 99", "toy", layout="toy")
    monkeypatch.setitem(experiments.EXPERIMENTS, "toy", toy)
    with pytest.raises(ValueError, match="experiment 'toy' has no table: its layout 'toy'"):
        build_table(
            "toy",
            pd.DataFrame(),
            model="m",
            ood_sets=[],
            methods=[],
            confidence=0.95,
            sensitivity={},
            react_sources={},
        )


# ---------------------------------------------------------------- a toy table ablation

TOY_ENTRY = """    Experiment(
        "toy",
        "Table 99",
        "toy: MSP and Energy scored again by a computation named in the catalogue",
        methods=("msp", "energy"),
        switched=True,
        result=True,
        layout="toy",
        compute="opnp.pipeline.ablations.toy_rows",
        caption="Toy ({model}): the configured methods at their default settings.",
    ),
"""

TOY_COMPUTATION = '''

def toy_rows(job):
    """The toy ablation: each method of ``job.settings["methods"]`` at its defaults."""
    from opnp.pipeline.evaluation import evaluate_configs

    fit = job.inputs.fit_data(job.statistic)
    id_test = job.inputs.features("id_test").features
    ood_test = job.inputs.ood("ood_test")
    assert len(job.inputs.paths["selections"]) == 2  # msp's and energy's
    rows = []
    for method in job.settings["methods"]:
        found, _ = evaluate_configs(
            method, [{}], fit, id_features=id_test, ood_features=ood_test, split="test",
            experiment=job.experiment, uncertainty=job.uncertainty,
        )
        rows += found
    return rows
'''

TOY_LAYOUT = """

from opnp.report.table_layouts import LaidOut, table_layout  # noqa: E402
from opnp.report.table_methods import main_results_table  # noqa: E402


@table_layout("toy")
def toy_table(rows, caption):
    test = rows.test()
    methods = list(dict.fromkeys(test["method"]))
    return LaidOut(main_results_table(test, methods, rows.ood_sets), caption)
"""

TOY_SCHEMA = """      toy:
        type: object
        properties: {methods: {type: array, items: {type: string}}}
"""


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, (path, old)
    path.write_text(text.replace(old, new))


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def toy_checkout(root: Path, *, layout: bool = True) -> tuple[Path, Path]:
    """A copy of the package and workflow with the toy ablation added the way a developer
    adds one (its layout left out unless ``layout``); returns (copy, its config)."""
    copy = root / "checkout"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("opnp", "workflow", "config"):
        shutil.copytree(REPO / name, copy / name, ignore=ignore)
    shutil.copy2(REPO / "Snakefile", copy / "Snakefile")

    _edit(
        copy / "opnp/pipeline/experiments.py",
        "\n)\n\nEXPERIMENTS",
        f"\n{TOY_ENTRY})\n\nEXPERIMENTS",
    )
    _append(copy / "opnp/pipeline/ablations.py", TOY_COMPUTATION)
    if layout:
        _append(copy / "opnp/report/table_ablations.py", TOY_LAYOUT)
    _edit(
        copy / "workflow/schemas/config.schema.yaml",
        "  ablations:\n    type: object\n    additionalProperties: false\n    properties:\n",
        "  ablations:\n    type: object\n    additionalProperties: false\n    properties:\n"
        + TOY_SCHEMA,
    )
    # A small benchmark: the tiny one with two methods, no other ablation and one
    # sensitivity fraction, so a real run of the toy table skips most of the tiny run's jobs.
    config = yaml.safe_load(TINY.read_text())
    config["benchmark"] = "toy"
    config["methods"] = {"msp": {}, "energy": {}}
    config["selection"] = {"validation": "held_out_family"}
    config["sensitivity"] = {"fractions": [100]}
    config["ablations"] = {"toy": {"methods": ["msp", "energy"]}}
    configfile = copy / "config" / "toy.yaml"
    configfile.write_text(yaml.safe_dump(config))
    return copy, configfile


def changed_files(copy: Path) -> list[str]:
    """Files of ``copy`` that differ from this checkout or are new."""
    changed = []
    for path in sorted(copy.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            relative = path.relative_to(copy)
            original = REPO / relative
            if not original.is_file() or original.read_bytes() != path.read_bytes():
                changed.append(str(relative))
    return changed


def run_checkout(copy: Path, workdir: Path, *args: str, configfile: Path, check: bool = True):
    """Snakemake on the copy's workflow; its common.smk puts the copy's package first on
    the path of the parser and of every job."""
    workdir.mkdir(exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "snakemake",
        *args,  # first: --configfile takes every word after it
        "--snakefile",
        str(copy / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=900, env=env, cwd=workdir
    )
    if check:
        assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


TOY_TABLE = "results/toy/tables/table99_toy_smallcnn"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return toy_checkout(tmp_path_factory.mktemp("toy"))


def test_a_table_ablation_takes_at_most_five_files(toy):
    copy, _ = toy
    assert changed_files(copy) == [
        "config/toy.yaml",
        "opnp/pipeline/ablations.py",
        "opnp/pipeline/experiments.py",
        "opnp/report/table_ablations.py",
        "workflow/schemas/config.schema.yaml",
    ]


def test_the_dag_plans_the_toy_ablation_and_its_table(toy, tmp_path):
    copy, configfile = toy
    proc = run_checkout(copy, tmp_path / "work", "-n", "--quiet", "rules", configfile=configfile)
    jobs = jobs_per_rule(proc.stdout)
    assert jobs.get("feature_ablation") == 1, jobs
    proc = run_checkout(
        copy, tmp_path / "work", f"{TOY_TABLE}.md", "-n", "--quiet", "rules", configfile=configfile
    )
    jobs = jobs_per_rule(proc.stdout)
    assert jobs.get("make_table") == 1 and jobs.get("feature_ablation") == 1, jobs


def test_a_missing_layout_fails_the_dry_run_naming_the_experiment(tmp_path):
    copy, configfile = toy_checkout(tmp_path, layout=False)
    proc = run_checkout(copy, tmp_path / "work", "-n", configfile=configfile, check=False)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr  # Snakemake prints a parse error on stdout
    assert "toy: table layout 'toy' is not registered" in output, output[-3000:]
    # switched off, the same entry is no gap: only what runs must exist
    config = yaml.safe_load(configfile.read_text())
    del config["ablations"]["toy"]
    configfile.write_text(yaml.safe_dump(config))
    run_checkout(copy, tmp_path / "work", "-n", configfile=configfile)


@pytest.mark.slow
def test_the_toy_table_is_built_by_a_real_run(toy, tmp_path):
    copy, configfile = toy
    workdir = tmp_path / "work"
    run_checkout(copy, workdir, f"{TOY_TABLE}.md", "--cores", "2", configfile=configfile)
    table = (workdir / f"{TOY_TABLE}.md").read_text()
    assert "Toy (smallcnn): the configured methods at their default settings." in table
    for label in ("MSP", "Energy"):
        assert f"| {label} |" in table, table
    rows = pd.read_parquet(workdir / "results/toy/ablations/smallcnn/toy.parquet")
    assert set(rows["experiment"]) == {"toy"}
    assert set(rows["method"]) == {"msp", "energy"}
