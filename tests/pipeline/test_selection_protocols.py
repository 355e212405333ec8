"""Selection by held-out OOD family: config groups, per-group choices, the tested settings,
and the IDX image source that brings Fashion-MNIST in as a validation family."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from opnp.data.archives import extract_idx_images, read_idx_images
from opnp.pipeline.config import ConfigError, check_config, dataset_family, selection_groups
from opnp.pipeline.evaluation import merge_setting_scores
from opnp.pipeline.experiments import experiment_status
from opnp.pipeline.results import params_json
from opnp.pipeline.selection import (
    mark_selected,
    search_plan,
    selected_params,
    settings_for_test_sets,
)

ROOT = Path(__file__).resolve().parents[2]


def _config(**selection):
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["selection"].update(selection)
    return cfg


def test_held_out_family_validates_each_test_family_on_the_others():
    groups = selection_groups(_config())
    assert groups["photo"] == {"test": ["photo-patches"], "val": ["gaussian-noise-val"]}
    assert groups["noise"] == {"test": ["uniform-noise"], "val": ["photo-patches-val"]}
    # a family with no validation set of its own is validated on every set
    assert groups["rotated-digits"]["val"] == ["photo-patches-val", "gaussian-noise-val"]
    for group in groups.values():
        families = {dataset_family(_config(), name) for name in group["test"]}
        assert families.isdisjoint(dataset_family(_config(), v) for v in group["val"])


def test_all_families_is_one_group_on_every_validation_set():
    cfg = _config(validation="all_families")
    assert selection_groups(cfg) == {"all": {"test": cfg["ood"]["test"], "val": cfg["ood"]["val"]}}


def test_a_test_family_without_another_validation_family_is_refused():
    cfg = _config()
    cfg["datasets"]["gaussian-noise-val"]["family"] = "photo"
    with pytest.raises(ConfigError, match="photo-patches.*no validation set of another family"):
        check_config(cfg)
    cfg["selection"]["validation"] = "all_families"
    check_config(cfg)  # the in-family protocol accepts it


def test_a_replicate_part_takes_its_pools_family():
    cfg = yaml.safe_load((ROOT / "config" / "imagenet_lite0.yaml").read_text())
    pool = next(iter(p for p in cfg["replicates"]["pools"] if p == "dtd"))
    cfg["datasets"][pool]["family"] = "textures"
    assert dataset_family(cfg, "textures") == "textures"
    assert dataset_family(cfg, "textures-val") == "textures"


def test_compare_protocols_names_configured_feature_methods_only():
    cfg = _config(compare_protocols=["nope"])
    with pytest.raises(ConfigError, match="compare_protocols: 'nope'"):
        check_config(cfg)
    cfg = _config(compare_protocols=["odin"])
    with pytest.raises(ConfigError, match="runs the network"):
        check_config(cfg)
    assert experiment_status(_config(), "protocols")[0]
    runs, reason = experiment_status(_config(compare_protocols=[]), "protocols")
    assert not runs and "compare_protocols" in reason
    runs, reason = experiment_status(_config(validation="all_families"), "protocols")
    assert not runs and "held_out_family" in reason


def _val_rows():
    # config a is best on set "x", config b on set "y"; on both, a wins on average
    rows = []
    for params, fpr in (({"k": "a"}, {"x": 10.0, "y": 50.0}), ({"k": "b"}, {"x": 60.0, "y": 40.0})):
        for ood, value in fpr.items():
            rows.append(
                {
                    "params": params_json(params),
                    "ood_set": ood,
                    "split": "val",
                    "fpr95": value,
                    "auroc": 90.0,
                }
            )
    return pd.DataFrame(rows)


def test_each_group_is_chosen_on_its_own_validation_sets():
    frame = mark_selected(_val_rows(), "fpr95", {"fam_y": ["x"], "fam_x": ["y"]})
    assert selected_params(frame) == {"k": "a"}  # every validation set
    assert selected_params(frame, "fam_y") == {"k": "a"}
    assert selected_params(frame, "fam_x") == {"k": "b"}
    row_b = frame[frame["params"] == params_json({"k": "b"})].iloc[0]
    assert json.loads(row_b["selected_for"]) == {"fam_x": ["y"]}
    with pytest.raises(ValueError, match="no validation rows of \\['z'\\]"):
        mark_selected(_val_rows(), "fpr95", {"fam": ["z"]})
    with pytest.raises(ValueError, match="test group 'other'"):
        selected_params(frame, "other")


def test_settings_for_test_sets_merge_groups_that_chose_the_same_setting():
    frame = mark_selected(_val_rows(), "fpr95", {"g1": ["x"], "g2": ["y"], "g3": ["x", "y"]})
    settings = settings_for_test_sets(frame, {"g1": ["t1"], "g2": ["t2"], "g3": ["t3", "t4"]})
    assert settings == [({"k": "a"}, ["t1", "t3", "t4"]), ({"k": "b"}, ["t2"])]


def test_a_react_combination_searches_once_per_distinct_react_choice():
    react = mark_selected(
        pd.DataFrame(
            [
                {
                    "params": params_json({"percentile": p}),
                    "ood_set": o,
                    "split": "val",
                    "fpr95": f,
                    "auroc": 90.0,
                }
                for p, o, f in ((85, "x", 10.0), (85, "y", 50.0), (95, "x", 60.0), (95, "y", 40.0))
            ]
        ),
        "fpr95",
        {"g1": ["x"], "g2": ["y"]},
    )
    settings = {"grid": {"weight_low": [0, 10]}, "fixed": {"react_percentile": "selected"}}
    plan = search_plan("opnp+react", settings, {"g1": ["x"], "g2": ["y"]}, ["x", "y"], react)
    assert [(p.groups, p.every_set, p.val_sets) for p in plan] == [
        ({"g1": ["x"]}, True, ["x", "y"]),  # 85 is also the choice on every set
        ({"g2": ["y"]}, False, ["y"]),
    ]
    assert {c["react_percentile"] for c in plan[0].configs} == {85}
    assert {c["react_percentile"] for c in plan[1].configs} == {95}
    # a method without ReAct: one search over every validation set for every group
    plain = search_plan(
        "opnp", {"grid": {"weight_low": [0]}}, {"g1": ["x"], "g2": ["y"]}, ["x", "y"]
    )
    assert len(plain) == 1 and plain[0].every_set and plain[0].groups == {"g1": ["x"], "g2": ["y"]}


def test_merged_scores_keep_each_ood_sets_own_id_scores():
    merged = merge_setting_scores(
        [{"ID": np.zeros(3), "a": np.ones(2)}, {"ID": np.full(3, 5.0), "b": np.ones(2)}]
    )
    assert sorted(merged) == ["ID", "ID@b", "a", "b"]
    assert merged["ID@b"][0] == 5.0 and merged["ID"][0] == 0.0
    with pytest.raises(ValueError, match="'a' was scored by two settings"):
        merge_setting_scores(
            [{"ID": np.zeros(1), "a": np.ones(1)}, {"ID": np.zeros(1), "a": np.ones(1)}]
        )


def test_a_table_cell_takes_one_setting_but_ood_sets_may_differ():
    from opnp.report import main_results_table

    rows = []
    for ood, params in (("a", {"k": 1}), ("b", {"k": 2})):
        rows.append(
            {
                "method": "energy",
                "ood_set": ood,
                "split": "test",
                "seed": 0,
                "params": params_json(params),
                "fpr95": 10.0,
                "auroc": 90.0,
                "experiment": "main",
            }
        )
    table = main_results_table(pd.DataFrame(rows), ["energy"], ["a", "b"])
    assert table.shape[0] == 1
    rows.append({**rows[0], "params": params_json({"k": 3})})
    with pytest.raises(ValueError, match="on OOD set 'a'.*different params"):
        main_results_table(pd.DataFrame(rows), ["energy"], ["a", "b"])


def _idx_file(path: Path, images: np.ndarray, magic: int = 2051) -> Path:
    header = np.array([magic, *images.shape], dtype=">i4").tobytes()
    with gzip.open(path, "wb") as handle:
        handle.write(header + images.astype(np.uint8).tobytes())
    return path


def test_idx_images_become_a_flat_png_folder(tmp_path):
    from PIL import Image

    images = np.random.default_rng(0).integers(0, 256, size=(7, 28, 28))
    path = _idx_file(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    assert np.array_equal(read_idx_images(path), images)
    out = tmp_path / "out"
    assert extract_idx_images(path, out, skip_images=2, max_images=3) == 3
    files = sorted(p.name for p in out.iterdir())
    assert files == ["2.png", "3.png", "4.png"]
    assert np.array_equal(np.asarray(Image.open(out / "3.png")), images[3])
    again = tmp_path / "again"
    extract_idx_images(path, again, skip_images=2, max_images=3)
    assert (again / "3.png").read_bytes() == (out / "3.png").read_bytes()


def test_bad_idx_files_are_named(tmp_path):
    labels = _idx_file(tmp_path / "labels.gz", np.zeros((2, 1, 1)), magic=2049)
    with pytest.raises(ValueError, match="labels.gz has magic 2049"):
        read_idx_images(labels)
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as handle:
        handle.write(np.array([2051, 5, 28, 28], dtype=">i4").tobytes() + b"\0" * 10)
    with pytest.raises(ValueError, match="short.gz holds .* needs"):
        read_idx_images(short)
    with pytest.raises(FileNotFoundError, match="missing.gz"):
        read_idx_images(tmp_path / "missing.gz")


def test_idx_format_needs_an_archive_source():
    cfg = _config()
    cfg["datasets"]["fmnist"] = {"source": "link", "path": "x.gz", "format": "idx"}
    with pytest.raises(ConfigError, match="datasets.fmnist.format"):
        check_config(copy.deepcopy(cfg))
    cfg["datasets"]["fmnist"] = {"source": "archive", "path": "x.gz", "format": "idx"}
    check_config(cfg)  # no member needed
