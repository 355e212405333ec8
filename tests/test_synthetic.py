"""The synthetic source of the cached-feature stages (opnp.synthetic), its config checks
and the imagenet_scale benchmark's DAG (config/imagenet_scale.yaml)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import yaml
from snakemake.utils import validate
from workflow_helpers import REPO, jobs_per_rule, run_snakemake

import opnp.synthetic as synthetic
from opnp.data.splits import SplitLeakError
from opnp.features import load_features
from opnp.metrics import auroc
from opnp.pipeline.config import ConfigError, check_config
from opnp.synthetic import (
    generate_rows,
    model_head,
    synthetic_dataset_manifest,
    synthetic_head,
    synthetic_rows,
    synthetic_split_report,
    write_synthetic_features,
)

SCALE_CONFIG = REPO / "config" / "imagenet_scale.yaml"
SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")
SPEC = {"arch": "synthetic", "num_classes": 1000, "feature_dim": 2048, "synthetic": {"seed": 0}}


@pytest.fixture(scope="module")
def head():
    return model_head(SPEC)


@pytest.fixture()
def scale_config():
    with open(SCALE_CONFIG) as handle:
        return yaml.safe_load(handle)


def energy(logits):
    top = logits.max(1)
    return top + np.log(np.exp(logits - top[:, None]).sum(1))


# ------------------------------------------------------------------ the generator


def test_head_is_seeded_and_trained_like(head):
    again = synthetic_head(1000, 2048, 0)
    other = synthetic_head(1000, 2048, 1)
    assert np.array_equal(head.weight, again.weight) and np.array_equal(head.bias, again.bias)
    assert not np.array_equal(head.weight, other.weight)
    assert head.weight.shape == (1000, 2048) and head.bias.shape == (1000,)
    assert head.weight.dtype == np.float32
    assert (head.prototypes >= 0).all()
    # sparse prototypes: each class uses a few of the 2048 neurons
    assert ((head.prototypes > 0).sum(1) == synthetic.ACTIVE).all()


def test_id_rows_are_sparse_relu_features_that_the_head_classifies(head):
    h, logits, labels = generate_rows(head, 0, 1, 0, 2000, 0, ood=False)
    assert h.shape == (2000, 2048) and logits.shape == (2000, 1000)
    assert (h >= 0).all()
    zeros = (h == 0).mean()
    assert 0.4 < zeros < 0.9, zeros
    np.testing.assert_allclose(logits, h @ head.weight.T + head.bias, rtol=1e-4, atol=1e-3)
    accuracy = (logits.argmax(1) == labels).mean()
    assert 0.6 < accuracy < 0.9, accuracy  # trained-like: neither chance nor perfect
    # balanced classes: row r has class r mod C
    assert np.array_equal(labels, np.arange(2000) % 1000)


def test_ood_rows_are_less_peaked_and_more_so_with_more_shift(head):
    _, id_logits, _ = generate_rows(head, 0, 1, 0, 2000, 0, ood=False)
    separation = []
    for shift in (0.2, 0.5):
        h, logits, labels = generate_rows(head, 0, 2, 0, 2000, 0, ood=True, shift=shift)
        assert (labels == -1).all() and (h >= 0).all()
        assert logits.max(1).mean() < id_logits.max(1).mean()
        separation.append(auroc(energy(id_logits), energy(logits)))
    assert 0.5 < separation[0] < separation[1], separation


def test_generator_refuses_a_shift_outside_0_1(head):
    with pytest.raises(ValueError, match="shift"):
        generate_rows(head, 0, 2, 0, 10, 0, ood=True, shift=1.5)


def test_rows_under_a_scale():
    assert synthetic_rows(1281167, 1.0) == 1281167
    assert synthetic_rows(1281167, 1 / 16) == 80073
    assert synthetic_rows(10, 0.001) == 1
    with pytest.raises(ValueError, match="scale"):
        synthetic_rows(10, 0)


def test_features_are_written_block_by_block_into_the_feature_store(head, tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "BLOCK_ROWS", 300)
    calls = []
    real = synthetic.generate_rows

    def spy(*args, **kwargs):
        calls.append(args[4])
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "generate_rows", spy)
    spec = {"source": "synthetic", "synthetic": {"rows": 1000, "distribution": "id"}}
    dataset = synthetic_dataset_manifest("id-set", spec, 0.75)
    assert dataset["n_images"] == 750
    manifest = write_synthetic_features(
        tmp_path / "m" / "id-set", head, dataset, seed=0, meta={"model": "m"}
    )
    # never more than one block in memory; the last block is the rest
    assert calls == [300, 300, 150]
    stored = load_features(tmp_path / "m" / "id-set", verify_checksums=True)
    assert stored.features.dtype == np.float16 and stored.features.shape == (750, 2048)
    assert stored.logits.dtype == np.float32 and stored.labels.dtype == np.int64
    assert manifest["n"] == 750 and manifest["meta"]["synthetic"]["distribution"] == "id"
    # the same rows as the blocks generated directly, each from its own stream
    for block, start in enumerate(range(0, 750, 300)):
        rows = min(300, 750 - start)
        h, logits, labels = real(head, 0, dataset["stream"], block, rows, start, ood=False)
        np.testing.assert_array_equal(stored.features[start : start + rows], h.astype(np.float16))
        np.testing.assert_array_equal(stored.logits[start : start + rows], logits)
        np.testing.assert_array_equal(stored.labels[start : start + rows], labels)


def test_features_need_the_head_that_fc_npz_holds(head):
    other = synthetic_head(1000, 2048, 3)
    with pytest.raises(ValueError, match="fc.npz"):
        model_head(SPEC, fc=(other.weight, other.bias))
    assert model_head(SPEC, fc=(head.weight, head.bias)).weight.shape == (1000, 2048)


def test_split_report_of_synthetic_sets():
    spec = {"source": "synthetic", "synthetic": {"rows": 100, "distribution": "id"}}
    ood = {"source": "synthetic", "synthetic": {"rows": 50, "distribution": "ood", "shift": 0.3}}
    manifests = {
        "train": synthetic_dataset_manifest("train", spec, 1.0),
        "val": synthetic_dataset_manifest("val", spec, 1.0),
        "o1": synthetic_dataset_manifest("o1", ood, 1.0),
        "o2": synthetic_dataset_manifest("o2", ood, 1.0),
    }
    roles = {
        "id_train": "train",
        "id_val": "val",
        "id_test": "val",
        "ood_val": ["o1"],
        "ood_test": ["o2"],
    }
    report = synthetic_split_report(manifests, roles, id_val_may_be_id_test=True)
    assert report["pairs"] and all(p["shared"] == 0 for p in report["pairs"])
    with pytest.raises(SplitLeakError, match="'val'"):
        synthetic_split_report(manifests, roles, id_val_may_be_id_test=False)
    manifests["o2"] = {"name": "o2", "source": "link", "n_images": 5}
    with pytest.raises(ValueError, match="not synthetic"):
        synthetic_split_report(manifests, roles, id_val_may_be_id_test=True)


# ------------------------------------------------------------------ config


def validate_all(cfg):
    validate(cfg, schema=SCHEMA)
    check_config(cfg)


def test_scale_config_is_valid_and_has_the_paper_shapes(scale_config):
    validate_all(scale_config)
    rows = {n: s["synthetic"]["rows"] for n, s in scale_config["datasets"].items()}
    assert rows[scale_config["id"]["train"]] == 1281167
    assert rows[scale_config["id"]["test"]] == 50000
    assert [rows[n] for n in scale_config["ood"]["test"]] == [10000] * 4
    model = next(iter(scale_config["models"].values()))
    assert (model["num_classes"], model["feature_dim"]) == (1000, 2048)
    assert model["synthetic"]["feature_dtype"] == "float16"


def test_scale_config_has_every_method_of_the_imagenet_config_that_needs_no_network(
    scale_config,
):
    from opnp.detectors import detector_class

    with open(REPO / "config" / "imagenet.yaml") as handle:
        imagenet = yaml.safe_load(handle)
    wanted = {m: s for m, s in imagenet["methods"].items() if not detector_class(m).needs_network}
    assert scale_config["methods"] == wanted
    assert scale_config["sensitivity"] == imagenet["sensitivity"]
    ablations = {k: v for k, v in imagenet["ablations"].items() if k != "layers"}
    assert scale_config["ablations"] == ablations


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda c: c["methods"].update(odin={"grid": {"temperature": [1000]}}), "methods"),
        (
            lambda c: c["ablations"].update(layers={"enabled": True}),
            "ablations.layers.enabled",
        ),
        (lambda c: c.update(extraction={"parts": {"imagenet-train": 2}}), "extraction.parts"),
        (
            lambda c: c["datasets"].update(sun={"source": "link", "path": "x"}),
            "ood.test",
        ),
        (
            lambda c: c["datasets"]["sun"]["synthetic"].update(distribution="id"),
            "datasets.sun.synthetic.distribution",
        ),
        (
            lambda c: c["models"].update(
                cnn={"arch": "small_cnn", "num_classes": 10, "pretrained": True}
            ),
            "config key models",
        ),
        (
            lambda c: c["models"]["resnet50-synthetic"].pop("feature_dim"),
            "models.resnet50-synthetic.feature_dim",
        ),
        (
            lambda c: c["models"]["resnet50-synthetic"].update(pretrained=True),
            "models.resnet50-synthetic.pretrained",
        ),
        (lambda c: c["methods"].update(nomethod={}), "methods.nomethod"),
        (lambda c: c["synthetic"].update(scale="-1"), "synthetic.scale"),
        (lambda c: c["synthetic"].update(scale="a lot"), "synthetic.scale"),
    ],
)
def test_bad_synthetic_config_names_the_key(scale_config, mutate, needle):
    cfg = copy.deepcopy(scale_config)
    mutate(cfg)
    with pytest.raises(ConfigError, match=needle):
        validate_all(cfg)


def test_synthetic_datasets_need_a_synthetic_model():
    with open(REPO / "config" / "config.yaml") as handle:
        cfg = yaml.safe_load(handle)
    name = cfg["ood"]["test"][0]
    cfg["datasets"][name] = {
        "source": "synthetic",
        "synthetic": {"rows": 10, "distribution": "ood"},
    }
    with pytest.raises(ConfigError, match="no model is"):
        validate_all(cfg)


def test_scale_given_as_text_becomes_a_number(scale_config):
    scale_config["synthetic"]["scale"] = "0.0625"  # as --config synthetic='{...}' passes it
    validate_all(scale_config)
    assert scale_config["synthetic"]["scale"] == 0.0625


# ------------------------------------------------------------------ the DAG


def test_scale_config_dry_run_plans_the_cached_feature_dag(tmp_path):
    proc = run_snakemake(
        tmp_path,
        "-n",
        "--quiet",
        "rules",
        "--config",
        "synthetic={scale: 0.0625}",
        configfile=SCALE_CONFIG,
        timeout=300,
    )
    counts = jobs_per_rule(proc.stdout)
    with open(SCALE_CONFIG) as handle:
        cfg = yaml.safe_load(handle)
    assert counts["synthetic_model"] == 1
    assert counts["synthetic_dataset"] == counts["synthetic_features"] == len(cfg["datasets"])
    assert counts["select_hyperparameters"] == counts["evaluate_method"] == len(cfg["methods"])
    for rule in (
        "extract_features",
        "load_model",
        "select_network_method",
        "layers",
        "train_model",
    ):
        assert rule not in counts, f"{rule} planned for a synthetic model: {counts}"
    for rule in ("check_splits", "compute_sensitivity", "sweep", "subsets", "make_table"):
        assert counts.get(rule, 0) >= 1, f"no {rule} job: {counts}"


def test_evaluation_reuses_the_selection_id_scores_when_id_val_is_id_test(tmp_path, scale_config):
    """The scale config tests on its ID validation set (id.val = id.test): KNN's and
    Mahalanobis' evaluation jobs take the selection's ID scores of the chosen setting
    instead of scoring the ID rows again, and those are the scores the detector gives."""
    from threadpoolctl import threadpool_limits

    from opnp.pipeline.artifacts import load_fc, load_feature_set, load_id_scores
    from opnp.pipeline.evaluation import FitData, build_detector

    model, methods = "resnet50-synthetic", ["knn", "mahalanobis"]
    evaluations = [f"results/imagenet_scale/evaluation/{model}/{m}.parquet" for m in methods]
    run_snakemake(
        tmp_path, "--cores", str(scale_config["resources"]["threads_per_job"]), *evaluations, "--quiet", "--config",
        "synthetic={scale: 0.002}", configfile=SCALE_CONFIG, timeout=600,
    )  # fmt: skip
    features = tmp_path / "results/imagenet_scale/features" / model
    manifest = next(features.glob("imagenet-val*.manifest.json"))
    id_set = load_feature_set(manifest)
    train = load_feature_set(next(features.glob("imagenet-train*.manifest.json")))
    weight, bias = load_fc(tmp_path / f"results/imagenet_scale/models/{model}/fc.npz")
    fit = FitData(weight, bias, train.features, train.labels)
    for method in methods:
        log = tmp_path / f"logs/imagenet_scale/evaluation/{model}/{method}.log"
        assert "ID scores of 1 chosen setting(s) from the selection" in log.read_text()
        selection = tmp_path / f"results/imagenet_scale/selection/{model}/{method}"
        [(params, seed)] = load_id_scores(f"{selection}.id_val_scores.npz", dataset="imagenet-val")
        # as many BLAS threads as the jobs had (Mahalanobis' fit rounds by thread count)
        with threadpool_limits(scale_config["resources"]["threads_per_job"]):
            detector = build_detector(method, json.loads(params), fit, seed=seed)
            expected = detector.score(id_set.features)
        with np.load(tmp_path / f"results/imagenet_scale/scores/{model}/{method}.npz") as saved:
            np.testing.assert_array_equal(saved["ID"], expected)
