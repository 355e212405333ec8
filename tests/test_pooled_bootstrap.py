"""Cluster bootstrap of metrics averaged over replicates (opnp.pooled_bootstrap) and the
workflow's pooled results (opnp.pipeline.pooled)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.stats import norm
from scipy.stats import t as student_t

from opnp import metrics
from opnp.bootstrap import paired_difference_interval
from opnp.pipeline.pooled import class_units, image_units, pooled_frame, seed_scores
from opnp.pooled_bootstrap import (
    pooled_bootstrap,
    pooled_intervals,
    unit_counts,
    weighted_metrics,
)


def test_weighted_metrics_equal_the_metrics_of_the_repeated_scores():
    rng = np.random.default_rng(0)
    ids = np.round(rng.normal(1, 1, 60), 1)  # rounded: ties within and across sets
    oods = np.round(rng.normal(0, 1, 45), 1)
    id_w = rng.integers(0, 3, (30, 60))
    ood_w = rng.integers(0, 3, (30, 45))
    found = weighted_metrics(ids, id_w, oods, ood_w)
    for b in range(30):
        a, o = np.repeat(ids, id_w[b]), np.repeat(oods, ood_w[b])
        assert found["fpr95"][b] == pytest.approx(metrics.fpr_at_95_tpr(a, o), abs=1e-12)
        assert found["auroc"][b] == pytest.approx(metrics.auroc(a, o), abs=1e-12)
    empty = weighted_metrics(ids, np.zeros((1, 60), int), oods, np.ones((1, 45), int))
    assert np.isnan(empty["fpr95"]).all() and np.isnan(empty["auroc"]).all()


def test_unit_counts_draw_one_fewer_unit_than_there_are():
    counts = unit_counts(np.arange(6), 500, seed=3, stream="s")
    assert counts.shape == (500, 6) and (counts.sum(axis=1) == 5).all()
    np.testing.assert_array_equal(counts, unit_counts(np.arange(6), 500, seed=3, stream="s"))
    assert not np.array_equal(counts, unit_counts(np.arange(6), 500, seed=3, stream="t"))


def _replicates(rng, shared_classes):
    """Three replicates: disjoint ID images, OOD images of 6 classes, each replicate 4."""
    ids = [rng.normal(1.0, 1.0, 80) for _ in range(3)]
    units = [np.arange(80) + 80 * r for r in range(3)]
    means = rng.normal(0.0, 0.7, 6)
    oods, clusters = [], []
    for r in range(3):
        classes = shared_classes[r]
        clusters.append(np.repeat(classes, 20))
        oods.append(rng.normal(means[clusters[-1]], 1.0))
    return ids, oods, clusters, units


def test_pooled_estimate_is_the_mean_of_the_replicates_metrics_and_draws_are_paired():
    rng = np.random.default_rng(1)
    ids, oods, clusters, units = _replicates(rng, [[0, 1, 2, 3], [2, 3, 4, 5], [0, 1, 4, 5]])
    found = pooled_intervals(ids, oods, clusters, units, n_resamples=300, seed=5)
    replicate = [metrics.auroc(i, o) for i, o in zip(ids, oods, strict=True)]
    assert found["auroc"] == pytest.approx(np.mean(replicate))
    low, high = found["auroc_ci"]
    assert low < found["auroc"] < high
    # A monotone transform of every score changes no rank: the same units drawn give the
    # same metric draw by draw, so the paired difference is exactly 0.
    other = pooled_bootstrap(
        [np.exp(i) for i in ids],
        [np.exp(o) for o in oods],
        clusters,
        units,
        n_resamples=300,
        seed=5,
    )
    np.testing.assert_array_equal(
        np.isnan(other["auroc_resamples"]), np.isnan(found["auroc_resamples"])
    )
    assert paired_difference_interval(
        other["auroc_resamples"], found["auroc_resamples"], drop_undefined=True
    ) == (0, 0)
    # A shifted method has a paired interval away from 0, narrower than its marginal one.
    shifted = pooled_bootstrap(
        [i + 0.3 for i in ids], oods, clusters, units, n_resamples=300, seed=5
    )
    d_low, d_high = paired_difference_interval(
        shifted["auroc_resamples"], found["auroc_resamples"], drop_undefined=True
    )
    assert 0 < d_low and d_high - d_low < high - low


def test_a_shared_class_weighs_the_same_in_every_replicate_that_has_it():
    """Two replicates with the same OOD classes and the same ID images are one replicate
    twice: with shared units every draw of the pair equals the single replicate's draw;
    treated as independent (units of their own) the draws differ."""
    rng = np.random.default_rng(2)
    ids, oods, clusters, units = _replicates(rng, [[0, 1, 2, 3]] * 3)
    one = pooled_bootstrap(ids[:1], oods[:1], clusters[:1], units[:1], n_resamples=200, seed=0)
    twice = pooled_bootstrap(
        ids[:1] * 2, oods[:1] * 2, clusters[:1] * 2, units[:1] * 2, n_resamples=200, seed=0
    )
    np.testing.assert_allclose(twice["auroc_resamples"], one["auroc_resamples"])
    apart = pooled_bootstrap(
        ids[:1] * 2,
        oods[:1] * 2,
        [clusters[0], clusters[0] + 100],
        [units[0], units[0] + 1000],
        n_resamples=200,
        seed=0,
    )
    assert not np.allclose(apart["auroc_resamples"], one["auroc_resamples"])
    assert np.std(apart["auroc_resamples"]) < np.std(one["auroc_resamples"])


def test_pooled_bootstrap_errors_name_the_bad_input():
    ids, oods = [np.zeros(3)], [np.ones(4)]
    with pytest.raises(ValueError, match=r"ood_clusters\[0\] must have 4 entries"):
        pooled_bootstrap(ids, oods, [np.zeros(3)])
    with pytest.raises(ValueError, match="ood_scores has 2 replicates, the ID scores 1"):
        pooled_bootstrap(ids, oods * 2, [np.zeros(4)] * 2)
    with pytest.raises(ValueError, match=r"id_units\[0\] repeats a unit"):
        pooled_bootstrap(ids, oods, [np.zeros(4)], [np.zeros(3)])
    with pytest.raises(ValueError, match=r"ood_scores\[0\] has 1 NaN"):
        pooled_bootstrap(ids, [np.array([0.0, np.nan])], [np.zeros(2)])


# --- Simulation with a known truth --------------------------------------------------
# K replicates with rotating ID folds (disjoint ID test parts of a 500-image pool) and
# OOD test images of 50 classes; each replicate tests on 30 of the 50 classes, so the
# replicates share most classes. Scores: ID ~ N(DELTA, 1); an OOD image of class c ~
# N(m_c, 1), class means m_c ~ N(0, TAU^2). The mean over replicates of AUROC is unbiased
# for the population AUROC P(X_ID > X_OOD) = Phi(DELTA / sqrt(2 + TAU^2)), the truth.
K, FOLD, CLASSES, PER_CLASS, PER_REPLICATE, DELTA, TAU = 5, 100, 50, 8, 30, 1.0, 0.5
TRUTH = norm.cdf(DELTA / np.sqrt(2.0 + TAU**2))


def _simulated(rng):
    pool = rng.normal(DELTA, 1.0, K * FOLD)
    order = rng.permutation(K * FOLD)
    id_units = [order[i * FOLD : (i + 1) * FOLD] for i in range(K)]
    classes = np.repeat(np.arange(CLASSES), PER_CLASS)
    ood = rng.normal(np.repeat(rng.normal(0.0, TAU, CLASSES), PER_CLASS), 1.0)
    keep = [np.isin(classes, rng.choice(CLASSES, PER_REPLICATE, replace=False)) for _ in range(K)]
    return (
        [pool[u] for u in id_units],
        [ood[k] for k in keep],
        [classes[k] for k in keep],
        id_units,
    )


def _coverage(n_datasets, n_resamples, naive):
    """Coverage of the 95 % interval; with ``naive`` also that of mean +- t * std / sqrt(K)
    over the replicates (the "± over split seeds" read as a test)."""
    rng = np.random.default_rng(20231203)
    hits, t_hits = [], []
    t_quantile = student_t.ppf(0.975, K - 1)
    for d in range(n_datasets):
        ids, oods, clusters, units = _simulated(rng)
        if naive:
            # Replicates independent and OOD images independent: every image its own
            # unit, none shared (what averaging per-replicate bootstraps amounts to).
            clusters = [np.arange(len(o)) + 10_000 * r for r, o in enumerate(oods)]
            units = None
            per_replicate = [metrics.auroc(i, o) for i, o in zip(ids, oods, strict=True)]
            half = t_quantile * np.std(per_replicate, ddof=1) / np.sqrt(K)
            t_hits.append(abs(np.mean(per_replicate) - TRUTH) <= half)
        low, high = pooled_intervals(ids, oods, clusters, units, n_resamples=n_resamples, seed=d)[
            "auroc_ci"
        ]
        hits.append(low <= TRUTH <= high)
    return (float(np.mean(hits)), float(np.mean(t_hits))) if naive else float(np.mean(hits))


def test_cluster_bootstrap_covers_the_population_auroc():
    """Empirical coverage of the 95 % interval over 1,000 simulated datasets (200 draws
    each). Tolerance: 95 % +- (2 points + 2 Monte Carlo standard errors), the MC SE of a
    coverage of 95 % over 1,000 datasets being sqrt(0.95 * 0.05 / 1000) = 0.69 points:
    the test fails only when the simulation shows, at about 2 SE, a true coverage outside
    93-97 %. Measured: 93.6 % (a percentile cluster bootstrap with 50 clusters runs about
    1-2 points under its nominal level; with DTD's 6 classes it is only approximate)."""
    start = time.perf_counter()
    n = 1000
    coverage = _coverage(n, 200, naive=False)
    se = np.sqrt(0.95 * 0.05 / n)
    print(f"cluster bootstrap coverage {coverage:.3f} ({time.perf_counter() - start:.0f} s)")
    assert abs(coverage - 0.95) <= 0.02 + 2 * se


def test_naive_intervals_that_treat_replicates_as_independent_undercover():
    """The same simulation with every OOD image and every replicate treated as
    independent: the interval ignores that the replicates share OOD classes and that a
    class's images are alike (measured 71 %); mean +- t * std / sqrt(5) over replicates
    ignores the sharing (measured 79 %). Bound: below 95 % - 2 points - 2 MC SE (300
    datasets: SE 1.26 points), i.e. both fail the check the cluster bootstrap passes."""
    n = 300
    coverage, t_coverage = _coverage(n, 200, naive=True)
    print(f"naive bootstrap coverage {coverage:.3f}, t over replicates {t_coverage:.3f}")
    bound = 0.95 - 0.02 - 2 * np.sqrt(0.95 * 0.05 / n)
    assert coverage < bound and t_coverage < bound


# --- The workflow's pooled results ---------------------------------------------------


def test_units_come_from_the_manifests():
    pool = {"name": "dtd", "n_images": 6, "class_counts": [2, 1, 3]}
    part = {"name": "textures", "pool": "dtd", "n_images": 3, "rows": [1, 2, 5]}
    np.testing.assert_array_equal(class_units(part, pool), [0, 1, 2])
    np.testing.assert_array_equal(image_units(part), [1, 2, 5])
    np.testing.assert_array_equal(class_units(pool), [0, 0, 1, 2, 2, 2])
    flat = {"name": "noise", "n_images": 3, "class_counts": []}
    np.testing.assert_array_equal(class_units(flat), [0, 1, 2])  # images as units
    with pytest.raises(ValueError, match="part of pool 'dtd'"):
        class_units(part)


def test_pooled_frame_gives_intervals_and_paired_differences_to_the_best():
    rng = np.random.default_rng(4)
    ids, oods, clusters, units = _replicates(rng, [[0, 1, 2, 3], [2, 3, 4, 5], [0, 1, 4, 5]])
    noise = [rng.normal(-2, 1, 30) for _ in range(3)]
    scores = {
        "good": [
            {"ID": i + 1.0, "tex": o, "noise": n} for i, o, n in zip(ids, oods, noise, strict=True)
        ],
        "plain": [
            {"ID": i, "tex": o, "noise": n} for i, o, n in zip(ids, oods, noise, strict=True)
        ],
    }
    noise_units = [np.arange(30)] * 3  # one shared OOD set: the same images everywhere
    settings = {"n_resamples": 200, "confidence": 95, "seed": 0}
    frame, draws = pooled_frame(
        "m", scores, units, {"tex": clusters, "noise": noise_units}, settings, average="Average"
    )
    assert list(frame["ood_set"].unique()) == ["tex", "noise", "Average"]
    tex = frame[frame["ood_set"] == "tex"].set_index("method")
    assert (tex["auroc_best"] == "good").all() and (tex["fpr95_best"] == "good").all()
    assert tex.loc["good", "auroc_within_noise"] and not tex.loc["plain", "auroc_within_noise"]
    assert tex.loc["plain", "auroc_diff_ci_high"] < 0
    expected = np.mean([100 * metrics.auroc(i + 1.0, o) for i, o in zip(ids, oods, strict=True)])
    assert tex.loc["good", "auroc"] == pytest.approx(expected)
    assert tex.loc["good", "auroc_ci_low"] < expected < tex.loc["good", "auroc_ci_high"]
    assert tex.loc["good", "n_ood_clusters"] == 6 and tex.loc["good", "n_id_units"] == 240
    average = draws["good", "Average"]["auroc"]
    np.testing.assert_allclose(
        average, (draws["good", "tex"]["auroc"] + draws["good", "noise"]["auroc"]) / 2
    )
    with pytest.raises(ValueError, match="'good' of replicates \\[0, 1, 2\\] lack OOD set 'x'"):
        pooled_frame("m", scores, units, {"x": clusters}, settings)


def test_pooled_intervals_script_reads_the_replicates_files(tmp_path, monkeypatch):
    """workflow/scripts/pooled_intervals.py on the files the workflow gives it: scores
    per unit and method, the parts' manifests and the OOD pool's class counts."""
    import json
    import runpy
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    import pandas as pd

    monkeypatch.setattr(sys, "stdout", sys.stdout)  # setup_job redirects them to the log
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    rng = np.random.default_rng(6)
    pool = {"name": "dtd", "n_images": 12, "class_counts": [3, 3, 3, 3]}
    (tmp_path / "dtd.json").write_text(json.dumps(pool))
    units, methods = ["m-split0", "m-split1", "m-split2"], ["a", "b"]
    scores, id_files, ood_files = [], [], []
    for r, unit in enumerate(units):
        ood_rows = [0, 1, 2, 3, 4, 5, 9, 10, 11] if r != 1 else [3, 4, 5, 6, 7, 8, 9, 10, 11]
        for name, rows in (("id", list(range(10 * r, 10 * r + 10))), ("tex", ood_rows)):
            path = tmp_path / f"{unit}-{name}.json"
            path.write_text(json.dumps({"name": name, "pool": "p", "n_images": 10, "rows": rows}))
            (id_files if name == "id" else ood_files).append(str(path))
        for method in methods:
            path = tmp_path / f"{unit}-{method}.npz"
            np.savez(path, ID=rng.normal(1, 1, 10), tex=rng.normal(0, 1, 9))
            scores.append(str(path))
    out = tmp_path / "pooled"
    fake = SimpleNamespace(
        input=SimpleNamespace(
            scores=scores,
            id_test=id_files,
            ood_test=ood_files,
            ood_pools=[str(tmp_path / "dtd.json")],
        ),
        output=SimpleNamespace(csv=f"{out}.csv", parquet=f"{out}.parquet"),
        params=SimpleNamespace(
            units=units,
            methods=methods,
            ood_sets=["tex"],
            uncertainty={"n_resamples": 50, "confidence": 95, "seed": 0},
            n_seeds={"a": 1, "b": 1},
        ),
        wildcards=SimpleNamespace(model="m"),
        log=[str(tmp_path / "log.txt")],
    )
    script = Path(__file__).parents[1] / "workflow" / "scripts" / "pooled_intervals.py"
    runpy.run_path(str(script), init_globals={"snakemake": fake})
    frame = pd.read_csv(f"{out}.csv")
    assert sorted(frame["method"]) == methods and set(frame["ood_set"]) == {"tex"}
    assert (frame["n_ood_clusters"] == 4).all() and (frame["n_id_units"] == 30).all()
    assert (frame["auroc_ci_low"] <= frame["auroc"]).all()
    draws = pd.read_parquet(f"{out}.parquet")
    assert len(draws.iloc[0]["auroc_resamples"]) == 50


def test_apply_pooled_draws_gives_main_rows_the_pooled_draws_for_the_bold_rule():
    import pandas as pd

    from opnp.pipeline.pooled import apply_pooled_draws

    def row(method, experiment, seed):
        return {
            "model": "m",
            "experiment": experiment,
            "method": method,
            "ood_set": "tex",
            "split": "test",
            "seed": seed,
            "fpr95_resamples": np.full(4, 50.0),
            "auroc_resamples": np.full(4, 50.0),
        }

    pooled = pd.DataFrame(
        [row(m, e, s) for m in ("a", "rpp") for e in ("main", "subsets") for s in (0, 1)]
    )
    draws = pd.DataFrame(
        [
            {
                "method": "a",
                "ood_set": "tex",
                "fpr95_resamples": [1.0, 2, 3, 4],
                "auroc_resamples": [9.0, 8, 7, 6],
            }
        ]
    )
    out = apply_pooled_draws(pooled, draws)
    main_a = out[(out["method"] == "a") & (out["experiment"] == "main")]
    for draws_of_row in main_a["auroc_resamples"]:
        np.testing.assert_array_equal(draws_of_row, [9, 8, 7, 6])
    # a main row without pooled draws compares on ties only; other experiments unchanged
    main_rpp = out[(out["method"] == "rpp") & (out["experiment"] == "main")]
    assert main_rpp["fpr95_resamples"].isna().all()
    others = out[out["experiment"] == "subsets"]
    assert all(np.array_equal(r, np.full(4, 50.0)) for r in others["fpr95_resamples"])
    assert all(np.array_equal(r, np.full(4, 50.0)) for r in pooled["fpr95_resamples"])


def test_seeded_methods_pool_every_seed_draw_by_draw():
    rng = np.random.default_rng(8)
    ids, oods, clusters, units = _replicates(rng, [[0, 1, 2, 3], [2, 3, 4, 5], [0, 1, 4, 5]])
    shift = [0.0, 0.5]  # two seeds of a method: the second scores ID higher
    per_seed = [[{"ID": i + d, "tex": o} for d in shift] for i, o in zip(ids, oods, strict=True)]
    settings = {"n_resamples": 100, "confidence": 95, "seed": 0}
    frame, draws = pooled_frame("m", {"r": per_seed}, units, {"tex": clusters}, settings)
    single = [
        pooled_frame("m", {"r": [s[i] for s in per_seed]}, units, {"tex": clusters}, settings)
        for i in range(2)
    ]
    assert frame["auroc"].iloc[0] == pytest.approx(np.mean([f["auroc"].iloc[0] for f, _ in single]))
    np.testing.assert_allclose(
        draws["r", "tex"]["auroc"],
        (single[0][1]["r", "tex"]["auroc"] + single[1][1]["r", "tex"]["auroc"]) / 2,
    )
    # the saved file's layout: the first seed under the set names, the others suffixed
    arrays = {
        "ID": np.zeros(2),
        "tex": np.ones(3),
        "ID@seed2": np.ones(2),
        "tex@seed2": np.zeros(3),
    }
    seeds = seed_scores(arrays, 2, "r.npz")
    assert [sorted(s) for s in seeds] == [["ID", "tex"], ["ID", "tex"]]
    np.testing.assert_array_equal(seeds[1]["ID"], np.ones(2))
    with pytest.raises(
        ValueError, match="r.npz holds the test scores of 2 seeds, but .* average 3"
    ):
        seed_scores(arrays, 3, "r.npz")
