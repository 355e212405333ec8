"""Replicated evaluation on seeded re-splits of pooled datasets (opnp.pipeline.replicates and the
workflow's `replicates` config)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from opnp.features import load_features, select_feature_rows
from opnp.pipeline.config import ConfigError, check_config
from opnp.pipeline.replicates import (
    PER_REPLICATE_VALUE,
    pool_replicates,
    replicate_unit,
    resolve_split,
    split_rows,
    split_rows_of,
)

PARTS = [{"name": "fit", "size": 50}, {"name": "val", "size": 25}, {"name": "test", "size": 25}]


def test_split_by_image_gives_disjoint_parts_of_the_requested_sizes():
    rows = split_rows("pool", np.zeros(120, np.int64), PARTS, seed=3)
    assert [len(rows[p["name"]]) for p in PARTS] == [50, 25, 25]
    together = np.concatenate(list(rows.values()))
    assert len(np.unique(together)) == len(together) == 100
    assert all(np.all(np.diff(r) > 0) for r in rows.values())  # sorted, no repeats


def test_split_is_a_function_of_seed_and_pool_name():
    labels = np.zeros(120, np.int64)
    first = split_rows("pool", labels, PARTS, seed=3)
    again = split_rows("pool", labels, PARTS, seed=3)
    other_seed = split_rows("pool", labels, PARTS, seed=4)
    other_pool = split_rows("other", labels, PARTS, seed=3)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["test"], other_seed["test"])
    assert not np.array_equal(first["test"], other_pool["test"])


def test_split_by_class_shares_no_class_between_parts():
    labels = np.repeat(np.arange(6), 10)
    parts = [{"name": "val", "size": 2}, {"name": "test", "size": 4}]
    for seed in range(5):
        rows = split_rows("dtd", labels, parts, seed=seed, by="class")
        val, test = set(labels[rows["val"]]), set(labels[rows["test"]])
        assert len(val) == 2 and len(test) == 4 and not val & test
        assert len(rows["val"]) == 20 and len(rows["test"]) == 40


def test_split_errors_name_the_pool():
    with pytest.raises(ValueError, match="pool 'p' has 10 images"):
        split_rows("p", np.zeros(10), PARTS, seed=0)
    with pytest.raises(ValueError, match="pool 'p' has 2 classes"):
        split_rows("p", [0, 1], [{"name": "a", "size": 3}], seed=0, by="class")
    with pytest.raises(ValueError, match="unlabelled"):
        split_rows("p", [-1, 0], [{"name": "a", "size": 1}], seed=0, by="class")


FOLD_PARTS = [
    {"name": "fit", "rest": True},
    {"name": "val", "fold_offset": 1},
    {"name": "test", "fold_offset": 0},
]


def _folds(replicate, n=1003, folds=5, fold_seed=7, parts=FOLD_PARTS, pool="pool"):
    return split_rows(
        pool,
        np.zeros(n, np.int64),
        parts,
        seed=100 + replicate,  # ignored by folds: the replicate index decides
        by="fold",
        replicate=replicate,
        folds=folds,
        fold_seed=fold_seed,
    )


def test_fold_split_rotates_disjoint_test_folds_over_the_pool():
    splits = [_folds(i) for i in range(5)]
    tests = [s["test"] for s in splits]
    assert all(len(t) == 200 for t in tests)
    for i in range(5):
        for j in range(i + 1, 5):
            assert not set(tests[i]) & set(tests[j]), (i, j)
    # The 3 images of 1003 that fill no fold are never tested, only fitted on.
    union = np.concatenate(tests)
    leftover = np.setdiff1d(np.arange(1003), union)
    assert len(np.unique(union)) == 1000 and len(leftover) == 3
    for i, s in enumerate(splits):
        assert not set(s["val"]) & set(s["test"]) and not set(s["fit"]) & set(s["test"])
        assert not set(s["fit"]) & set(s["val"])
        assert len(s["fit"]) == 603 and np.isin(leftover, s["fit"]).all()
        # validation is the next replicate's test fold
        np.testing.assert_array_equal(s["val"], tests[(i + 1) % 5])
        assert all(np.all(np.diff(r) > 0) for r in s.values())


def test_fold_split_is_fixed_by_fold_seed_and_pool_not_by_replicate_seed():
    first = _folds(2)
    again = split_rows(
        "pool", np.zeros(1003), FOLD_PARTS, seed=999, by="fold", replicate=2, folds=5, fold_seed=7
    )
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["test"], _folds(2, fold_seed=8)["test"])
    assert not np.array_equal(first["test"], _folds(2, pool="other")["test"])


def test_fold_split_rest_size_and_its_errors_name_the_pool():
    parts = [{"name": "fit", "rest": True, "size": 500}, *FOLD_PARTS[1:]]
    rows = _folds(0, parts=parts)
    assert len(rows["fit"]) == 500 and not set(rows["fit"]) & set(rows["test"])
    too_big = [{"name": "fit", "rest": True, "size": 700}, *FOLD_PARTS[1:]]
    with pytest.raises(ValueError, match="pool 'pool': part 'fit' asks for 700 images but 603"):
        _folds(0, parts=too_big)
    with pytest.raises(ValueError, match="pool 'pool': 'by: fold' needs at least 2 folds"):
        _folds(0, folds=1)
    with pytest.raises(ValueError, match="pool 'pool' has 3 images, fewer than its 5 folds"):
        _folds(0, n=3)
    with pytest.raises(ValueError, match="pool 'pool'.*fold_offset must be an integer in"):
        _folds(0, parts=[{"name": "test", "fold_offset": 5}])
    with pytest.raises(ValueError, match="pool 'pool': two parts have the same fold_offset"):
        _folds(0, parts=[{"name": "a", "fold_offset": 0}, {"name": "b", "fold_offset": 0}])
    with pytest.raises(ValueError, match="pool 'pool', part 'a': a 'by: fold' part has exactly"):
        _folds(0, parts=[{"name": "a", "size": 3}])
    with pytest.raises(ValueError, match="pool 'pool', part 'a': a 'by: image' part has a 'size'"):
        split_rows("pool", np.zeros(10), [{"name": "a", "fold_offset": 0}], seed=0)


def test_resolve_split_gives_each_seed_its_position_as_the_fold():
    spec = {"by": "fold", "fold_seed": 7, "parts": FOLD_PARTS}
    seeds = [10, 3, 25, 4, 8]
    tests = [
        split_rows_of("pool", np.zeros(1003), resolve_split(spec, seeds, s), s)["test"]
        for s in seeds
    ]
    for i, rows in enumerate(tests):
        np.testing.assert_array_equal(rows, _folds(i)["test"])
    image = {"by": "image", "parts": PARTS}
    assert resolve_split(image, seeds, 3) == image  # other pools: the config as it is


def test_config_checks_fold_pools_before_any_job():
    def config(**pool):
        cfg = _replicate_config()
        cfg["replicates"]["seeds"] = [0, 1, 2]
        spec = cfg["replicates"]["pools"]["pool"]
        spec.update(by="fold", fold_seed=0, **pool)
        spec["parts"] = [
            {"name": "fit", "rest": True},
            {"name": "val", "fold_offset": 1},
            {"name": "test", "fold_offset": 0},
        ]
        cfg["replicates"]["pools"]["ood-pool"] = {
            "by": "image",
            "parts": [{"name": "o", "size": 1}, {"name": "v", "size": 1}],
        }
        cfg["datasets"]["ood-pool"] = cfg["datasets"]["pool"]
        return cfg

    check_config(config())  # folds default to the 3 seeds
    check_config(config(folds=4))
    with pytest.raises(ConfigError, match="replicates.pools.pool: .*4 replicate seeds but 3"):
        cfg = config(folds=3)
        cfg["replicates"]["seeds"] = [0, 1, 2, 3]
        check_config(cfg)
    cfg = config()
    del cfg["replicates"]["pools"]["pool"]["fold_seed"]
    with pytest.raises(ConfigError, match="replicates.pools.pool: .*needs a 'fold_seed'"):
        check_config(cfg)
    cfg = config()
    cfg["datasets"]["pool"]["expected_count"] = 10  # folds of 3: the rest has 4 images
    cfg["replicates"]["pools"]["pool"]["parts"][0]["size"] = 5
    with pytest.raises(ConfigError, match="pool 'pool': part 'fit' asks for 5 images but 4"):
        check_config(cfg)
    cfg = config(folds=2)
    cfg["replicates"]["seeds"] = [0, 1]
    with pytest.raises(ConfigError, match="the 'rest' part 'fit' would only get the leftover"):
        check_config(cfg)


def _rows(unit, method, params, fpr95, seed=0, experiment="main", ood_set="ood"):
    return {
        "model": unit,
        "experiment": experiment,
        "method": method,
        "variant": "",
        "params": params,
        "ood_set": ood_set,
        "split": "test",
        "seed": seed,
        "fpr95": fpr95,
        "auroc": 100 - fpr95,
        "aupr_in": 50.0,
        "aupr_out": 50.0,
        "id_accuracy": 90.0,
        "n_id": 10,
        "n_ood": 10,
        "fpr95_ci_low": 0.0,
        "fpr95_resamples": np.full(3, fpr95),
    }


def test_pool_replicates_averages_seeds_within_and_keeps_one_row_per_replicate():
    units = {replicate_unit("m", 0): 0, replicate_unit("m", 5): 5}
    frame = pd.DataFrame(
        [
            _rows("m-split0", "energy", '{"a": 1, "n": 5}', 10.0),
            _rows("m-split5", "energy", '{"a": 2, "n": 5}', 20.0),  # chosen per replicate
            _rows("m-split0", "rpp", '{"p": 5}', 30.0, seed=0),
            _rows("m-split0", "rpp", '{"p": 5}', 50.0, seed=1),  # two seeds: averaged
            _rows("m-split5", "rpp", '{"p": 5}', 60.0, seed=0),
            _rows("other", "energy", "{}", 99.0),
        ]
    )
    pooled = pool_replicates(frame, units, "m")
    assert set(pooled["model"]) == {"m"} and "fpr95_ci_low" not in pooled
    energy = pooled[pooled["method"] == "energy"].sort_values("seed")
    assert energy["seed"].tolist() == [0, 5]
    assert energy["fpr95"].tolist() == [10.0, 20.0]
    assert set(energy["params"]) == {json.dumps({"a": PER_REPLICATE_VALUE, "n": 5})}
    rpp = pooled[pooled["method"] == "rpp"].sort_values("seed")
    assert rpp["fpr95"].tolist() == [40.0, 60.0]
    np.testing.assert_array_equal(rpp["fpr95_resamples"].iloc[0], [40.0, 40.0, 40.0])
    assert set(rpp["params"]) == {'{"p": 5}'}  # the same in every replicate: kept


def test_pool_replicates_keeps_params_that_name_results():
    # Table 3: several percentages per replicate, each the same in every replicate.
    frame = pd.DataFrame(
        [
            _rows(u, "opnp", p, v, experiment="pruned_accuracy", ood_set="")
            for u in ("m-split0", "m-split1")
            for p, v in (('{"weight_high": 1}', 1.0), ('{"weight_low": 10}', 2.0))
        ]
    )
    pooled = pool_replicates(frame, {"m-split0": 0, "m-split1": 1}, "m")
    assert sorted(set(pooled["params"])) == ['{"weight_high": 1}', '{"weight_low": 10}']
    assert len(pooled) == 4


def test_pool_replicates_names_missing_replicates():
    frame = pd.DataFrame([_rows("m-split0", "energy", "{}", 1.0)])
    with pytest.raises(ValueError, match="m-split1"):
        pool_replicates(frame, {"m-split0": 0, "m-split1": 1}, "m")


def test_select_feature_rows_copies_exactly_those_rows(tmp_path):
    from opnp.features import ArrayWriters

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(30, 4)).astype(np.float32)
    logits = rng.normal(size=(30, 3)).astype(np.float32)
    labels = np.arange(30, dtype=np.int64)
    writers = ArrayWriters(str(tmp_path / "pool"), 30, np.dtype(np.float32))
    writers.write(0, feats, logits, labels)
    records = writers.commit()
    (tmp_path / "pool.manifest.json").write_text(
        json.dumps({"n": 30, "arrays": records, "meta": {"dataset": "pool"}, "dataset": "pool"})
    )
    rows = [29, 3, 7]
    manifest = select_feature_rows(
        tmp_path / "pool", rows, tmp_path / "part", meta={"dataset": "part"}, chunk_rows=2
    )
    part = load_features(tmp_path / "part", verify_checksums=True)
    assert manifest["n"] == 3 and manifest["dataset"] == "part"
    np.testing.assert_array_equal(part.features, feats[rows])
    np.testing.assert_array_equal(part.logits, logits[rows])
    np.testing.assert_array_equal(part.labels, labels[rows])
    with pytest.raises(ValueError, match="0..29"):
        select_feature_rows(tmp_path / "pool", [30], tmp_path / "bad")


def test_split_manifest_opens_the_rows_of_the_pool(tmp_path):
    from PIL import Image

    from opnp.data import dataset_manifest, open_dataset
    from opnp.pipeline.replicates import pool_labels, split_manifest

    for cls in ("a", "b"):
        (tmp_path / "pool" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (4, 4), (10 * i, 0, 0)).save(tmp_path / "pool" / cls / f"{i}.png")
    pool = dataset_manifest("pool", {"path": str(tmp_path / "pool"), "format": "folder"})
    part = split_manifest(pool, "part", [5, 0], replicate_seed=1)
    data = open_dataset(part)
    assert len(data) == 2 and data.labels.tolist() == [1, 0]
    assert part["pool"] == "pool" and part["replicate_seed"] == 1
    # The labels a class split uses come from the manifest alone and match the images.
    np.testing.assert_array_equal(pool_labels(pool, by="class"), open_dataset(pool).labels)
    assert len(pool_labels(pool, by="image")) == 6
    with pytest.raises(ValueError, match="indices into the 6 images"):
        split_manifest(pool, "part", [6])


def _replicate_config(**changes):
    cfg = {
        "benchmark": "b",
        "datasets": {"pool": {"source": "builtin", "builder": "digits", "split": "test"}},
        "replicates": {
            "seeds": [0, 1],
            "pools": {"pool": {"by": "image", "parts": [{"name": "fit", "size": 2}]}},
        },
        "id": {"train": "fit", "val": "val", "test": "test"},
        "ood": {"test": ["o"], "val": ["v"]},
        "models": {"m": {"arch": "small_cnn", "checkpoint": "m.pt"}},
        "methods": {},
    }
    pools = cfg["replicates"]["pools"]["pool"]["parts"]
    pools += [{"name": n, "size": 1} for n in ("val", "test", "o", "v")]
    cfg.update(changes)
    return cfg


def test_config_accepts_parts_as_datasets_and_rejects_misuse():
    check_config(_replicate_config())
    with pytest.raises(ConfigError, match="trained here"):
        check_config(_replicate_config(models={"m": {"arch": "small_cnn", "train": {}}}))
    with pytest.raises(ConfigError, match="name the pools"):
        check_config(_replicate_config(id={"train": "fit", "val": "val", "test": "pool"}))
    cfg = _replicate_config()
    cfg["replicates"]["pools"]["missing"] = {"by": "image", "parts": [{"name": "x", "size": 1}]}
    with pytest.raises(ConfigError, match="replicates.pools.missing"):
        check_config(cfg)


def test_training_replicates_need_trained_models_and_no_pools():
    trained = {"m": {"arch": "small_cnn", "train": {}}}
    cfg = _replicate_config(models=trained)
    cfg["replicates"]["vary"] = "training"
    with pytest.raises(ConfigError, match="takes no pools"):
        check_config(cfg)
    del cfg["replicates"]["pools"]
    builtin = {"source": "builtin", "builder": "digits", "split": "test"}
    cfg.update(
        datasets={n: dict(builtin) for n in ("t", "v", "s", "o", "w")},
        id={"train": "t", "val": "v", "test": "s"},
        ood={"test": ["o"], "val": ["w"]},
    )
    check_config(cfg)  # trained models, no pools: accepted
    cfg["models"]["loaded"] = {"arch": "small_cnn", "checkpoint": "m.pt"}
    with pytest.raises(ConfigError, match="loaded models: \\['loaded'\\]"):
        check_config(cfg)
    del cfg["models"]["loaded"]
    cfg["replicates"]["vary"] = "split"
    with pytest.raises(ConfigError, match="needs 'pools'"):
        check_config(cfg)


def test_unit_names_say_what_the_seed_varies():
    assert replicate_unit("m", 3) == "m-split3"
    assert replicate_unit("m", 3, "training") == "m-seed3"
    with pytest.raises(ValueError, match="vary"):
        replicate_unit("m", 3, "weights")


@pytest.mark.slow
def test_workflow_runs_every_replicate_and_pools_the_tables(tmp_path):
    """The replicate config end to end up to the pooled main table: each unit is evaluated
    on its own disjoint parts, whose features are rows of the pool's one extraction."""
    import torch
    from workflow_helpers import REPO, run_snakemake

    from opnp.nets.models import build_model

    torch.manual_seed(0)
    model = build_model({"arch": "small_cnn", "num_classes": 10, "in_channels": 1})
    torch.save(model.state_dict(), tmp_path / "smallcnn.pt")
    config = REPO / "tests" / "configs" / "replicates.yaml"
    target = "results/replicates/tables/table1_main_results_smallcnn.md"
    run_snakemake(tmp_path, "--cores", "2", target, configfile=config)

    table = (tmp_path / target).read_text()
    assert "Pooled over 3 replicates (split seeds [0, 1, 2])" in table
    assert "±" in table.split("| OPNP |")[1].splitlines()[0]
    results = pd.read_parquet(tmp_path / "results/replicates/results.parquet")
    units = [replicate_unit("smallcnn", s) for s in (0, 1, 2)]
    assert set(results["model"]) == set(units)
    test_rows = results[(results["split"] == "test") & (results["experiment"] == "main")]
    assert set(test_rows["n_id"]) == {150}
    assert set(test_rows.loc[test_rows["ood_set"] == "patches-test", "n_ood"]) == {40}

    resources = tmp_path / "resources/replicates/datasets"
    pool = load_features(tmp_path / "results/replicates/features/smallcnn/digits-pool")
    tests = []
    for seed, unit in zip((0, 1, 2), units, strict=True):
        rows = {
            part: json.loads((resources / f"split{seed}/{part}.json").read_text())["rows"]
            for part in ("digits-fit", "digits-val", "digits-test")
        }
        flat = [r for part in rows.values() for r in part]
        assert len(set(flat)) == len(flat) == 240 + 120 + 150  # disjoint parts
        part = load_features(tmp_path / f"results/replicates/features/{unit}/digits-test")
        np.testing.assert_array_equal(part.features, pool.features[rows["digits-test"]])
        tests.append(set(rows["digits-test"]))
    assert tests[0] != tests[1] != tests[2]  # each replicate its own test images
    # One extraction per pool and model, none per replicate.
    assert not list((tmp_path / "results/replicates/features").glob("*-split*/*.parts"))
    extracted = {p.name for p in (tmp_path / "benchmarks/replicates/features/smallcnn").iterdir()}
    assert extracted == {"digits-pool.tsv", "patches-pool.tsv", "uniform-noise.tsv"}
