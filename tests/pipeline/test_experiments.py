"""The experiment catalogue: one name per experiment, one rule that switches it on, and a
switched-off or impossible experiment named with its reason."""

from __future__ import annotations

import copy

import pytest
import yaml
from workflow_helpers import DEFAULT, jobs_per_rule, run_snakemake

from opnp.pipeline.experiments import (
    CATALOGUE,
    EXPERIMENTS,
    active_experiments,
    experiment,
    experiment_status,
    figure_stem,
    skipped_experiments,
    table_stem,
)


@pytest.fixture(scope="module")
def config():
    return yaml.safe_load(DEFAULT.read_text())


def test_names_are_unique_and_every_ablation_result_has_a_rule(config):
    from pathlib import Path

    assert len(EXPERIMENTS) == len(CATALOGUE)
    rules = Path(__file__).resolve().parents[2] / "workflow" / "rules" / "ablations.smk"
    text = rules.read_text()
    for exp in CATALOGUE:
        # its rule, script and experiment column carry its name (an entry with a compute
        # function runs in the generic feature_ablation rule instead)
        if exp.result and not exp.compute:
            assert f"rule {exp.name}:" in text, exp.name
            assert f'ablation_result("{exp.name}")' in text, exp.name


def test_default_config_runs_every_experiment(config):
    assert [e.name for e in active_experiments(config)] == [e.name for e in CATALOGUE]
    assert skipped_experiments(config) == {}


def test_a_missing_method_is_reported_not_dropped(config):
    cfg = copy.deepcopy(config)
    del cfg["methods"]["tnp"]
    runs, reason = experiment_status(cfg, "pruning_methods")
    assert not runs and "tnp" in reason
    assert skipped_experiments(cfg) == {"Table 4 (pruning_methods)": reason}


def test_switched_experiments_follow_their_config_key(config):
    cfg = copy.deepcopy(config)
    del cfg["ablations"]["statistics"]
    cfg["ablations"]["layers"]["enabled"] = False
    skipped = skipped_experiments(cfg)
    assert "no ablations.statistics" in skipped["Table 9 (statistics)"]
    assert "layers.enabled is false" in skipped["Table 7 (layers)"]


def test_file_stems_keep_the_paper_ids(config):
    model = next(iter(config["models"]))
    main_table = config["models"][model]["main_table"]
    assert table_stem(experiment("main"), config, model, model) == (
        f"{main_table}_main_results_{model}"
    )
    assert table_stem(experiment("pruned_accuracy"), config, "m", "m") == (
        "table3_pruned_accuracy_m"
    )
    assert table_stem(experiment("selected"), config, "m", "m") == "selected_hyperparameters_m"
    layers, sweep = experiment("layers"), experiment("sweep")
    assert figure_stem(layers, layers.figures[0], config, "m") == "fig6_layer_sensitivity_m"
    assert figure_stem(sweep, sweep.figures[0], config, "m") == "fig3_percentage_sweep_m"
    readings = experiment("readings")  # no paper figure: the experiment's name
    assert figure_stem(readings, readings.figures[0], config, "m") == "readings_average_fpr95_m"
    # Figs. 1/7/8: one figure of every model, its id chosen by the config
    distribution = experiment("sensitivity_distribution")
    cfg = copy.deepcopy(config)
    cfg["report"]["sensitivity_figure"] = "fig7"
    assert figure_stem(distribution, distribution.figures[0], cfg) == (
        "fig7_sensitivity_distribution"
    )
    with pytest.raises(ValueError, match="unknown experiment 'table3'"):
        experiment("table3")


def test_the_dag_names_what_it_leaves_out(tmp_path, config):
    cfg = copy.deepcopy(config)
    del cfg["methods"]["rnp"]
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(tmp_path, "-n", "--quiet", "rules", configfile=configfile, timeout=300)
    assert "Not produced: Table 4 (pruning_methods): needs methods ['rnp']" in proc.stderr
    assert "subsets" in jobs_per_rule(proc.stdout)
