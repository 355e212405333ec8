"""Grid expansion, result rows and validation selection used by the workflow."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from opnp.pipeline.evaluation import FitData, evaluate_configs
from opnp.pipeline.results import (
    RESULT_COLUMNS,
    concat_results,
    params_json,
    results_frame,
    score_rows,
)
from opnp.pipeline.selection import expand_grid, mark_selected, select_best, selected_params


def test_expand_grid_is_the_cartesian_product_in_sorted_key_order():
    configs = expand_grid({"b": [1, 2], "a": [10, 20, 30]}, {"fixed": 5})
    assert len(configs) == 6
    assert configs[0] == {"fixed": 5, "a": 10, "b": 1}
    assert configs[1] == {"fixed": 5, "a": 10, "b": 2}
    assert {(c["a"], c["b"]) for c in configs} == {(a, b) for a in (10, 20, 30) for b in (1, 2)}
    assert expand_grid({}, {}) == [{}]


@pytest.mark.parametrize("grid", [{"a": []}, {"a": 3}])
def test_expand_grid_rejects_empty_or_scalar_values(grid):
    with pytest.raises(ValueError, match="grid\\['a'\\]"):
        expand_grid(grid)


def test_expand_grid_rejects_a_key_in_grid_and_fixed():
    with pytest.raises(ValueError, match="percentile"):
        expand_grid({"percentile": [90]}, {"percentile": 95})


def test_params_json_is_canonical():
    assert params_json({"b": np.float64(0.5), "a": np.int64(1)}) == '{"a": 1, "b": 0.5}'


def test_score_rows_metrics_in_percent_against_sklearn():
    rng = np.random.default_rng(0)
    id_scores, ood_scores = rng.normal(1, 1, 300), rng.normal(0, 1, 200)
    rows = score_rows(id_scores, {"ood": ood_scores}, method="energy", params={}, split="test")
    labels = np.r_[np.ones(300), np.zeros(200)]
    expected = 100 * roc_auc_score(labels, np.r_[id_scores, ood_scores])
    assert rows[0]["auroc"] == pytest.approx(expected, rel=1e-12)
    threshold = np.percentile(id_scores, 5)
    assert 0 <= rows[0]["fpr95"] <= 100
    assert rows[0]["fpr95"] == pytest.approx(
        100 * np.mean(ood_scores >= threshold), abs=100 / 200 + 1e-9
    )
    assert (rows[0]["n_id"], rows[0]["n_ood"]) == (300, 200)


def val_frame(entries):
    """entries: (params dict, ood set, fpr95, auroc) -> validation rows."""
    rows = [
        {
            "method": "m",
            "params": params_json(p),
            "ood_set": o,
            "split": "val",
            "seed": 0,
            "fpr95": f,
            "auroc": a,
            "aupr_in": 50.0,
            "aupr_out": 50.0,
        }
        for p, o, f, a in entries
    ]
    return results_frame(rows, benchmark="b", model="x", config_hash="h", provenance={})


def test_select_best_uses_the_mean_over_ood_sets_and_breaks_ties():
    frame = val_frame(
        [
            ({"p": 1}, "a", 10.0, 90.0),
            ({"p": 1}, "b", 50.0, 80.0),  # mean FPR 30
            ({"p": 2}, "a", 30.0, 86.0),
            ({"p": 2}, "b", 30.0, 86.0),  # mean FPR 30, AUROC 86 > 85: wins the tie
            ({"p": 3}, "a", 20.0, 99.0),
            ({"p": 3}, "b", 45.0, 99.0),  # mean FPR 32.5
        ]
    )
    assert select_best(frame, "fpr95") == {"p": 2}
    assert select_best(frame, "auroc") == {"p": 3}
    marked = mark_selected(frame)
    assert selected_params(marked) == {"p": 2}
    assert marked["selected"].sum() == 2


def test_select_best_remaining_tie_goes_to_the_first_config():
    frame = val_frame([({"p": 5}, "a", 10.0, 90.0), ({"p": 4}, "a", 10.0, 90.0)])
    assert select_best(frame) == {"p": 5}


def test_select_best_ignores_test_rows():
    frame = val_frame([({"p": 1}, "a", 40.0, 80.0), ({"p": 2}, "a", 50.0, 70.0)])
    test = frame.copy()
    test["split"] = "test"
    test.loc[test["params"] == params_json({"p": 2}), "fpr95"] = 0.0
    assert select_best(pd.concat([frame, test])) == {"p": 1}


def test_results_frame_schema_and_nan_guard():
    frame = val_frame([({"p": 1}, "a", 10.0, 90.0)])
    assert list(frame.columns) == RESULT_COLUMNS
    assert frame["git_commit"].iloc[0] == "unknown"
    bad = [
        {
            "method": "m",
            "params": "{}",
            "ood_set": "a",
            "split": "val",
            "seed": 0,
            "fpr95": np.nan,
            "auroc": 1.0,
            "aupr_in": 1.0,
            "aupr_out": 1.0,
        }
    ]
    with pytest.raises(ValueError, match="NaN metrics.*'m'"):
        results_frame(bad, benchmark="b", model="x", config_hash="h", provenance={})
    # Rows that are not about an OOD set (Table 3 accuracy) may have NaN metrics.
    bad[0]["ood_set"] = ""
    assert len(results_frame(bad, benchmark="b", model="x", config_hash="h", provenance={})) == 1


def test_concat_results_checks_columns(tmp_path):
    good = val_frame([({"p": 1}, "a", 10.0, 90.0)])
    good.to_parquet(tmp_path / "good.parquet")
    good.drop(columns=["auroc"]).to_parquet(tmp_path / "bad.parquet")
    merged = concat_results([tmp_path / "good.parquet", tmp_path / "good.parquet"])
    assert len(merged) == 2 and not merged["selected"].any()
    with pytest.raises(ValueError, match="bad.parquet.*auroc"):
        concat_results([tmp_path / "good.parquet", tmp_path / "bad.parquet"])
    assert json.loads(merged["params"].iloc[0]) == {"p": 1}


def test_score_rows_with_uncertainty_carry_intervals_and_resamples_in_percent(tmp_path):
    from opnp import bootstrap
    from opnp.pipeline.results import CI_COLUMNS, RESAMPLE_COLUMNS

    rng = np.random.default_rng(1)
    id_scores = rng.normal(1, 1, 300)
    ood = {"a": rng.normal(0, 1, 200), "b": rng.normal(0.5, 1, 150)}
    settings = {"n_resamples": 200, "confidence": 90, "seed": 7}
    rows = score_rows(
        id_scores, ood, method="energy", params={}, split="test", uncertainty=settings
    )
    for row, (name, scores) in zip(rows, ood.items(), strict=True):
        expected = bootstrap.metric_intervals(
            id_scores, scores, n_resamples=200, confidence=90, seed=7, ood_name=name
        )
        for metric in ("fpr95", "auroc"):
            np.testing.assert_allclose(row[f"{metric}_resamples"], 100 * expected[metric])
            low, high = expected[f"{metric}_ci"]
            assert (row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]) == (100 * low, 100 * high)
            assert row[f"{metric}_ci_low"] <= row[metric] <= row[f"{metric}_ci_high"]
            assert row[f"{metric}_ci_high"] - row[f"{metric}_ci_low"] > 1  # percent, not fractions
    # Without settings (validation rows): NaN intervals, no resamples.
    plain = score_rows(id_scores, ood, method="energy", params={}, split="val")[0]
    assert all(np.isnan(plain[c]) for c in CI_COLUMNS)
    assert all(plain[c] is None for c in RESAMPLE_COLUMNS)
    # Both kinds of rows survive one Parquet file (list column with nulls).
    frame = results_frame(rows + [plain], benchmark="b", model="x", config_hash="h", provenance={})
    frame.to_parquet(tmp_path / "r.parquet")
    back = concat_results([tmp_path / "r.parquet"])
    np.testing.assert_allclose(back["auroc_resamples"].iloc[0], rows[0]["auroc_resamples"])
    assert back["auroc_resamples"].iloc[2] is None
    assert back[CI_COLUMNS].iloc[:2].notna().all().all()


def test_nan_scores_name_the_method_params_split_and_set():
    ids = np.array([1.0, 2.0, np.nan, 3.0])
    with pytest.raises(
        ValueError,
        match=r"method 'ash' with params \{\"percentile\": 90\} \(seed 0\) gave 1 NaN and 0 "
        r"infinite scores of 4 on the ID set of split 'val'",
    ):
        score_rows(ids, {"ood": np.zeros(3)}, method="ash", params={"percentile": 90}, split="val")
    oods = np.array([0.0, np.nan, np.nan, -np.inf])
    with pytest.raises(ValueError, match=r"2 NaN and 1 infinite scores of 4 on OOD set 'svhn'"):
        score_rows(np.ones(3), {"svhn": oods}, method="opnp", params={}, split="test", seed=2)


def test_evaluate_configs_names_the_detector_whose_scores_are_nan():
    """The workflow path: a detector whose score is not finite fails with its name, not
    with a bare metric error."""
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(3, 5)), np.zeros(3)
    train = np.abs(rng.normal(size=(20, 5)))
    bad = np.abs(rng.normal(size=(6, 5)))
    bad[2] = 1e308  # finite features whose logits overflow
    with pytest.raises(ValueError, match=r"method 'energy' .* infinite scores .* OOD set 'bad'"):
        evaluate_configs(
            "energy", [{}], FitData(w, b, train_features=train),
            id_features=train, ood_features={"bad": bad}, split="test",
        )  # fmt: skip


@pytest.mark.parametrize(
    "method, configs, seeds",
    [
        ("knn", [{"k": 3}, {"k": 5}], [0]),
        ("mahalanobis", [{}], [0]),
        ("rpp", [{"percentage": 10}], [0, 1]),  # seeded: one array per seed
    ],
)
def test_selection_id_scores_stand_for_the_evaluation_ones(
    method, configs, seeds, tmp_path, monkeypatch
):
    """ID validation = ID test (selection.id_val_may_be_id_test): the selection's ID
    scores, saved and loaded, replace the evaluation's ID scoring with the same rows and
    scores, and the evaluation's detector never scores the ID set."""
    from opnp.detectors import detector_class
    from opnp.pipeline.artifacts import load_id_scores, save_id_scores

    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(4, 6)), rng.normal(size=4)
    train = np.abs(rng.normal(size=(40, 6)))
    fit = FitData(w, b, train_features=train, train_labels=rng.integers(0, 4, 40))
    ids, ood = np.abs(rng.normal(size=(15, 6))), 1.5 * np.abs(rng.normal(size=(9, 6)))
    common = dict(id_features=ids, seeds=seeds, keep_scores=True)
    sink = {}
    evaluate_configs(
        method, configs, fit, ood_features={"val": ood[::2]}, split="val",
        detector_id_scores=sink, **common,
    )  # fmt: skip
    assert set(sink) == {(params_json(c), s) for c in configs for s in seeds}
    save_id_scores(tmp_path / "ids.npz", sink, dataset="in")
    known = load_id_scores(tmp_path / "ids.npz", dataset="in")
    fresh_rows, fresh = evaluate_configs(
        method, configs[-1:], fit, ood_features={"test": ood}, split="test", **common
    )
    cls = detector_class(method)
    scored = []
    original = cls.score
    monkeypatch.setattr(cls, "score", lambda self, x: scored.append(len(x)) or original(self, x))
    rows, reused = evaluate_configs(
        method, configs[-1:], fit, ood_features={"test": ood}, split="test",
        known_id_scores=known, **common,
    )  # fmt: skip
    assert scored == [len(ood)] * len(seeds)  # the OOD set only
    assert rows == fresh_rows
    for key in fresh:
        for name in fresh[key]:
            np.testing.assert_array_equal(reused[key][name], fresh[key][name])
    with pytest.raises(ValueError, match="dataset 'in', not of 'other'"):
        load_id_scores(tmp_path / "ids.npz", dataset="other")
    with pytest.raises(ValueError, match="the ID set has 14 rows"):
        evaluate_configs(
            method, configs[-1:], fit, ood_features={}, split="test",
            known_id_scores=known, **{**common, "id_features": ids[1:]},
        )  # fmt: skip
