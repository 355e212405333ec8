"""The config is rejected before any job runs, with an error naming the bad key."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate
from workflow_helpers import REPO, run_snakemake

from opnp.pipeline.config import ConfigError, check_config

SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")


@pytest.fixture()
def config():
    with open(REPO / "config" / "config.yaml") as handle:
        return yaml.safe_load(handle)


def validate_all(cfg):
    validate(cfg, schema=SCHEMA)
    check_config(cfg)


@pytest.mark.parametrize(
    "path",
    [
        "config/config.yaml",
        "tests/configs/tiny.yaml",
        "config/cifar10_real.yaml",
        "config/cifar10_densenet.yaml",
    ],
)
def test_shipped_configs_are_valid(path):
    with open(REPO / path) as handle:
        validate_all(yaml.safe_load(handle))


def test_schema_fills_defaults(config):
    del config["extraction"]
    validate_all(config)
    assert config["extraction"]["on_bad_image"] == "fail"
    assert config["extraction"]["batch_size"] == 256


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda c: c.update(unknown_key=1), "unknown_key"),
        (lambda c: c.update(seeds="three"), "seeds"),
        (lambda c: c["ood"].update(test=[]), "test"),
        (lambda c: c["ood"].update(test=["uniform-noise", "uniform-noise"]), "uniform-noise"),
        (lambda c: c["extraction"].update(on_bad_image="ignore"), "ignore"),
        (lambda c: c["ablations"]["pruned_accuracy"].update(weight_low=[150]), "150"),
        (lambda c: c["extraction"].update(parts={"digits-train": 0}), "0"),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "empty-ood",
        "duplicate-ood",
        "bad-enum",
        "ablation-percentage",
        "zero-parts",
    ],
)
def test_schema_rejects(config, mutate, needle):
    bad = copy.deepcopy(config)
    mutate(bad)
    with pytest.raises(WorkflowError, match=needle):
        validate(bad, schema=SCHEMA)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (
            lambda c: c["methods"]["opnp"]["grid"].update(weight_low=[0, 60], weight_high=[0, 40]),
            "methods.opnp.weight_low/weight_high",
        ),
        (
            lambda c: c["methods"]["onp"]["grid"].update(neuron_low=[70], neuron_high=[30]),
            "methods.onp.neuron_low/neuron_high",
        ),
        (
            lambda c: c["methods"]["opp"]["grid"].update(weight_low=[0, 100]),
            "methods.opp.weight_low",
        ),
        (lambda c: c["methods"]["opp"]["grid"].update(weight_high=[-1]), "methods.opp.weight_high"),
        (lambda c: c["ood"].update(val=["uniform-noise"]), "disjoint"),
        (lambda c: c["ood"].update(test=["no-such-set"]), "no-such-set"),
        (lambda c: c["id"].update(val="digits-train"), "id.train"),
        (lambda c: c["datasets"].update(local={"source": "link"}), "datasets.local.path"),
        (lambda c: c["models"]["smallcnn"].update(checkpoint="x.pt"), "models.smallcnn"),
        (lambda c: c["ablations"].update(fig9_ood="photo-patches-val"), "ablations.fig9_ood"),
        (lambda c: c["extraction"].update(parts={"imagenet-train": 4}), "extraction.parts"),
        (
            lambda c: c["datasets"].update(local={"source": "link", "path": "x", "classes": ["a"]}),
            "datasets.local.classes",
        ),
        (
            lambda c: c["datasets"].update(
                local={"source": "link", "path": "x", "labels": "wnid_prefix"}
            ),
            "datasets.local.labels",
        ),
    ],
    ids=[
        "weights-sum-100",
        "neurons-sum-100",
        "percentage-100",
        "negative-percentage",
        "val-test-overlap",
        "undefined-set",
        "train-reused",
        "link-without-path",
        "train-and-checkpoint",
        "fig9-not-test",
        "parts-of-undefined-set",
        "classes-not-archive",
        "wnid-labels-not-flat",
    ],
)
def test_cross_checks_reject(config, mutate, needle):
    bad = copy.deepcopy(config)
    mutate(bad)
    validate(bad, schema=SCHEMA)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        check_config(bad)


def test_workflow_refuses_bad_config_before_any_job(tmp_path, config):
    bad = copy.deepcopy(config)
    bad["methods"]["opnp"]["grid"]["weight_low"] = [0, 99]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = run_snakemake(tmp_path, "--cores", "1", configfile=path, check=False, timeout=120)
    assert proc.returncode != 0
    assert "methods.opnp.weight_low/weight_high" in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists()
    assert not (tmp_path / "resources").exists()


def planned_models(workdir, *args: str) -> set[str]:
    """Models of the jobs a dry run in ``workdir`` plans (Snakemake's own command line)."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-n"]
    proc = subprocess.run([*cmd, *args], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return set(re.findall(r"model=([\w.-]+)", proc.stdout))


def test_configfile_replaces_the_default_benchmark(tmp_path):
    # Run where config/config.yaml exists, as a user does from the repository root:
    # Snakemake merges nested keys, so without care the default's model and datasets
    # would join every --configfile benchmark.
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "config.yaml", tmp_path / "config" / "config.yaml")
    default_config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    # (the default trains each model once per replicate seed: units <model>-seed<s>;
    # the model's own name names its pooled jobs)
    default = {
        f"{m}-seed{s}"
        for m in default_config["models"]
        for s in default_config["replicates"]["seeds"]
    } | set(default_config["models"])
    cifar = set(yaml.safe_load((REPO / "config" / "cifar10.yaml").read_text())["models"])
    assert default.isdisjoint(cifar)
    assert planned_models(tmp_path, "--configfile", str(REPO / "config" / "cifar10.yaml")) == cifar
    # --config alone edits the default benchmark instead of replacing it.
    assert planned_models(tmp_path, "--config", "benchmark=digits-edited") == default


def test_schema_fills_uncertainty_defaults_and_rejects_a_full_confidence(config):
    config.pop("uncertainty", None)
    validate_all(config)
    assert config["uncertainty"] == {"n_resamples": 1000, "confidence": 95, "seed": 0}
    bad = copy.deepcopy(config)
    bad["uncertainty"]["confidence"] = 100
    with pytest.raises(WorkflowError, match="100"):
        validate(bad, schema=SCHEMA)


def test_an_unknown_method_name_is_refused_with_the_registry_list():
    """The schema does not list the methods; the registry does (one home per method)."""
    from workflow_helpers import REPO

    from opnp.pipeline.config import ConfigError, check_config

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    bad = copy.deepcopy(cfg)
    bad["methods"]["opnpp"] = {}
    with pytest.raises(ConfigError, match=r"methods.opnpp: no detector named 'opnpp'.*'opnp'"):
        check_config(bad)


def test_num_workers_auto_is_what_the_machine_has(config):
    """``num_workers: auto`` (extraction and training) passes the schema and resolves to
    one worker fewer than the cores, at most MAX_AUTO_WORKERS; other strings are refused."""
    from opnp.pipeline.runtime import MAX_AUTO_WORKERS, available_cpus, loader_workers

    auto = copy.deepcopy(config)
    auto["extraction"]["num_workers"] = "auto"
    validate_all(auto)
    assert [loader_workers("auto", cpus=n) for n in (1, 2, 3, 64)] == [0, 1, 2, MAX_AUTO_WORKERS]
    assert loader_workers("auto") == max(0, min(MAX_AUTO_WORKERS, available_cpus() - 1))
    assert loader_workers(3, cpus=2) == 3  # an explicit count is the user's choice
    bad = copy.deepcopy(config)
    bad["extraction"]["num_workers"] = "many"
    with pytest.raises(WorkflowError, match="num_workers"):
        validate(bad, schema=SCHEMA)
    for value in ("many", -1, 1.5, True):
        with pytest.raises(ValueError, match="num_workers"):
            loader_workers(value)


def test_example_config_asks_for_no_more_workers_than_a_two_core_machine_has():
    """config/examples/your_model.yaml asked for 4 workers; on 2 cores DataLoader warned
    about it once per loader. Its workers follow the machine now."""
    from opnp.pipeline.runtime import loader_workers

    with open(REPO / "config" / "examples" / "your_model.yaml") as handle:
        example = yaml.safe_load(handle)
    validate(example, schema=SCHEMA)
    assert loader_workers(example["extraction"]["num_workers"], cpus=2) <= 1
    assert loader_workers(example["extraction"]["num_workers"], cpus=16) > 1


def test_readings_default_to_every_reading_and_stay_off_without_the_key(config):
    from opnp.pipeline.readings import READING_ABLATIONS

    config["ablations"]["readings"] = {}
    validate_all(config)
    assert config["ablations"]["readings"]["run"] == list(READING_ABLATIONS)
    del config["ablations"]["readings"]
    validate_all(config)
    # the schema's default fills run in, never the readings key itself (switched off)
    assert "readings" not in config["ablations"]


@pytest.mark.parametrize(
    ("run", "drop", "needle"),
    [
        (["threshold_scope", "scope"], None, r"ablations\.readings\.run: 'scope' is not a reading"),
        (["tnp_statistic"], "tnp", r"ablations\.readings\.run: reading 'tnp_statistic'.*'tnp'"),
        (["sensitivity_features"], "opnp+react", r"ablations\.readings\.run.*'opnp\+react'"),
    ],
    ids=["unknown-reading", "method-missing", "react-combination-missing"],
)
def test_bad_readings_are_refused_naming_the_key(config, run, drop, needle):
    config["ablations"]["readings"] = {"run": run}
    if drop:
        del config["methods"][drop]
    validate(config, schema=SCHEMA)
    with pytest.raises(ConfigError, match=needle):
        check_config(config)


def test_readings_run_must_be_a_non_empty_list(config):
    config["ablations"]["readings"] = {"run": []}
    with pytest.raises(WorkflowError, match="run"):
        validate(config, schema=SCHEMA)
