"""Seeded, paired bootstrap of FPR95 and AUROC: exact per resample, paired across
methods, deterministic, and intervals that cover."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from opnp import bootstrap, metrics


def scores(n_id, n_ood, seed=0, decimals=None):
    rng = np.random.default_rng(seed)
    ids, oods = rng.normal(1.0, 1.0, n_id), rng.normal(0.0, 1.0, n_ood)
    if decimals is not None:  # many ties, within and across ID and OOD
        ids, oods = np.round(ids, decimals), np.round(oods, decimals)
    return ids, oods


@pytest.mark.parametrize(
    ("n_id", "n_ood", "decimals"),
    [(200, 150, None), (101, 37, 0), (20, 21, 1), (7, 3, 0), (1, 1, None), (1000, 5, None)],
)
def test_each_resample_equals_opnp_metrics_on_the_resampled_arrays(n_id, n_ood, decimals):
    ids, oods = scores(n_id, n_ood, seed=n_id, decimals=decimals)
    found = bootstrap.bootstrap_metrics(ids, oods, n_resamples=25, seed=4, ood_name="sun", block=6)
    id_idx = bootstrap.resample_indices(n_id, 25, seed=4, stream=bootstrap.ID_STREAM)
    ood_idx = bootstrap.resample_indices(n_ood, 25, seed=4, stream=bootstrap.ood_stream("sun"))
    for b in range(25):
        resampled_id, resampled_ood = ids[id_idx[b]], oods[ood_idx[b]]
        assert found["fpr95"][b] == metrics.fpr_at_95_tpr(resampled_id, resampled_ood)
        assert found["auroc"][b] == pytest.approx(
            metrics.auroc(resampled_id, resampled_ood), rel=0, abs=1e-15
        )


def test_counts_are_the_indices_counted():
    idx = bootstrap.resample_indices(50, [3, 7], seed=1)
    counts = bootstrap.resample_counts(50, [3, 7], seed=1)
    for row in range(2):
        np.testing.assert_array_equal(counts[row], np.bincount(idx[row], minlength=50))
    assert (counts.sum(axis=1) == 50).all()


def test_values_do_not_depend_on_the_block_size_and_are_deterministic():
    ids, oods = scores(300, 120, decimals=1)
    reference = bootstrap.bootstrap_metrics(ids, oods, n_resamples=40, seed=2)
    for block in (1, 7, 40, 1000):
        again = bootstrap.bootstrap_metrics(ids, oods, n_resamples=40, seed=2, block=block)
        for metric in ("fpr95", "auroc"):
            np.testing.assert_array_equal(again[metric], reference[metric])
    other_seed = bootstrap.bootstrap_metrics(ids, oods, n_resamples=40, seed=3)
    assert not np.array_equal(other_seed["auroc"], reference["auroc"])


def test_a_longer_run_extends_a_shorter_one():
    ids, oods = scores(80, 60)
    short = bootstrap.bootstrap_metrics(ids, oods, n_resamples=10)
    long = bootstrap.bootstrap_metrics(ids, oods, n_resamples=30)
    np.testing.assert_array_equal(long["fpr95"][:10], short["fpr95"])


def test_resamples_are_paired_across_methods():
    """The resamples depend on the sample counts, not on the scores: a strictly
    increasing transform of one method's scores (another method ranking the images the
    same way) gives the same metric on every resample."""
    ids, oods = scores(250, 180, decimals=1)
    first = bootstrap.bootstrap_metrics(ids, oods, n_resamples=50, ood_name="a")
    second = bootstrap.bootstrap_metrics(np.exp(ids), np.exp(oods), n_resamples=50, ood_name="a")
    for metric in ("fpr95", "auroc"):
        np.testing.assert_array_equal(first[metric], second[metric])
        low, high = bootstrap.paired_difference_interval(first[metric], second[metric])
        assert low == high == 0.0


def test_ood_sets_get_independent_resamples_and_share_the_id_resample():
    a = bootstrap.resample_indices(100, 5, stream=bootstrap.ood_stream("a"))
    b = bootstrap.resample_indices(100, 5, stream=bootstrap.ood_stream("b"))
    assert not np.array_equal(a, b)
    ids = bootstrap.resample_indices(100, 5, stream=bootstrap.ID_STREAM)
    assert not np.array_equal(ids, a)
    np.testing.assert_array_equal(ids, bootstrap.resample_indices(100, 5))


def test_intervals_are_percentiles_and_the_paired_difference_has_its_own():
    values = np.arange(101, dtype=float)
    assert bootstrap.percentile_interval(values, 95) == pytest.approx((2.5, 97.5))
    assert bootstrap.percentile_interval(values, 50) == pytest.approx((25.0, 75.0))
    rng = np.random.default_rng(0)
    common = rng.normal(0, 1, 2000)  # shared resample noise: cancels in the difference
    better, worse = 0.5 + common, 0.6 + common + rng.normal(0, 0.01, 2000)
    low, high = bootstrap.paired_difference_interval(worse, better)
    assert 0 < low < 0.1 < high < 0.2
    assert not bootstrap.interval_includes_zero(worse, better)
    assert bootstrap.interval_includes_zero(better, better + rng.normal(0, 0.01, 2000))
    # Unpaired, the two intervals overlap a lot: pairing is what separates them.
    assert bootstrap.percentile_interval(worse)[0] < bootstrap.percentile_interval(better)[1]


def test_undefined_draws_are_left_out_only_when_asked():
    # pooled draws in which a metric is undefined are NaN (opnp.pooled_bootstrap)
    values = np.arange(101, dtype=float)
    with_nan = np.insert(values, [3, 50], np.nan)
    assert bootstrap.percentile_interval(with_nan, 90, drop_undefined=True) == (
        bootstrap.percentile_interval(values, 90)
    )
    with pytest.raises(ValueError, match="NaN"):
        bootstrap.percentile_interval(with_nan, 90)
    with pytest.raises(ValueError, match="no finite draw"):
        bootstrap.percentile_interval([np.nan, np.inf], drop_undefined=True)
    a, b = np.array([1.0, np.nan, 3.0, 4.0]), np.array([0.0, 1.0, np.nan, 1.0])
    assert bootstrap.paired_difference_interval(a, b, 50, drop_undefined=True) == (
        bootstrap.percentile_interval([1.0, 3.0], 50)
    )


def test_auroc_intervals_cover_the_true_value():
    """Normal ID N(d, 1) vs OOD N(0, 1): true AUROC = Phi(d / sqrt 2). Over 100
    independent test sets the 90 % interval must cover it about 90 times (binomial sd 3;
    a 75 % interval, a third narrower, covers about 75)."""
    d, truth = 1.0, norm.cdf(1.0 / np.sqrt(2))
    covered = 0
    for trial in range(100):
        rng = np.random.default_rng(100 + trial)
        ids, oods = rng.normal(d, 1, 300), rng.normal(0, 1, 200)
        found = bootstrap.metric_intervals(ids, oods, n_resamples=200, confidence=90, seed=trial)
        low, high = found["auroc_ci"]
        covered += low <= truth <= high
    assert 82 <= covered <= 98


def test_fpr95_interval_width_shrinks_with_the_sample_size():
    widths = []
    for n in (200, 3200):
        ids, oods = scores(n, n, seed=1)
        low, high = bootstrap.metric_intervals(ids, oods, n_resamples=200)["fpr95_ci"]
        widths.append(high - low)
    # Standard error ~ 1 / sqrt(n): 16x the samples, about 4x narrower.
    assert 2.5 < widths[0] / widths[1] < 6.5


def test_one_thousand_resamples_of_imagenet_size_take_seconds():
    ids, oods = scores(50_000, 10_000)
    import time

    start = time.perf_counter()
    found = bootstrap.bootstrap_metrics(ids, oods, n_resamples=1000)
    elapsed = time.perf_counter() - start
    assert found["auroc"].shape == (1000,)
    assert elapsed < 20, f"{elapsed:.1f} s"  # 1.2-3 s on 2 heavily shared CPU cores


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: bootstrap.percentile_interval([1.0, 2.0], 100), "confidence"),
        (lambda: bootstrap.percentile_interval([1.0, np.nan], 95), "NaN"),
        (lambda: bootstrap.percentile_interval([], 95), "non-empty"),
        (lambda: bootstrap.paired_difference_interval([1.0, 2.0], [1.0]), "same length"),
        (lambda: bootstrap.bootstrap_metrics([1.0], [0.0], n_resamples=0), "n_resamples"),
        (lambda: bootstrap.bootstrap_metrics([1.0, np.inf], [0.0]), "id_scores"),
        (lambda: bootstrap.check_settings({"n_resample": 10}), "n_resample"),
        (lambda: bootstrap.check_settings({"confidence": 0}), "uncertainty.confidence"),
        (lambda: bootstrap.check_settings({"seed": -1}), "uncertainty.seed"),
        (lambda: bootstrap.check_settings({"n_resamples": 2.5}), "uncertainty.n_resamples"),
    ],
)
def test_bad_arguments_name_the_argument(call, needle):
    with pytest.raises(ValueError, match=needle):
        call()


def test_check_settings_fills_defaults():
    assert bootstrap.check_settings(None) == {"n_resamples": 1000, "confidence": 95.0, "seed": 0}
    assert bootstrap.check_settings({"n_resamples": 10, "seed": 3})["n_resamples"] == 10
