"""Metrics against sklearn and constructed score sets with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from opnp import metrics


def _labels(ids, oods):
    return np.r_[np.ones(len(ids)), np.zeros(len(oods))], np.r_[ids, oods]


@pytest.mark.parametrize("seed", [0, 1])
def test_auroc_and_aupr_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 8, 200).astype(float)  # many ties
    oods = rng.integers(-3, 5, 150).astype(float)
    y, s = _labels(ids, oods)
    assert metrics.auroc(ids, oods) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert metrics.aupr_in(ids, oods) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert metrics.aupr_out(ids, oods) == pytest.approx(
        average_precision_score(1 - y, -s), abs=1e-12
    )


def test_fpr95_constructed():
    ids = np.arange(1, 101, dtype=float)  # keeping 95 % of ID: threshold = 6
    oods = np.array([0.0, 5.9, 6.0, 6.1, 50.0])
    # OOD at or above 6: 6.0, 6.1, 50 -> 3 / 5
    assert metrics.fpr_at_95_tpr(ids, oods) == pytest.approx(0.6)
    assert metrics.fpr_at_95_tpr(ids, np.array([-1.0, 0.0])) == 0.0
    assert metrics.fpr_at_95_tpr(ids, np.array([200.0])) == 1.0


def test_fpr95_ties_at_threshold_count():
    # 20 ID scores: 18 at 1.0 and two at 0.0 -> 95 % (19 samples) needs threshold 0.0,
    # which keeps all 20; every OOD at 0.0 or above is a false positive.
    ids = np.r_[np.ones(18), np.zeros(2)]
    assert metrics.fpr_at_95_tpr(ids, np.array([0.0, -0.5, 0.5, -1.0])) == 0.5
    # 19 at 1.0 and one at 0.0: threshold 1.0; OOD ties at 1.0 count as positives.
    ids = np.r_[np.ones(19), 0.0]
    assert metrics.fpr_at_95_tpr(ids, np.array([1.0, 0.99, 1.0, 0.0])) == 0.5


def test_openood_convention_is_the_mirror():
    ids = np.arange(1, 101, dtype=float)
    oods = -np.arange(1, 101, dtype=float) + 10.0  # 9, 8, ..., -90
    # OOD positive, detected by a low score: keep 95 % of OOD -> threshold at -(-85)...
    # equivalently the paper convention on negated, swapped scores.
    assert metrics.fpr_at_95_tpr(ids, oods, convention="openood") == metrics.fpr_at_95_tpr(
        -oods, -ids
    )
    # OOD scores <= 4 cover 95 % of OOD (those at 9..5 are missed); ID at or below 4: 1..4.
    assert metrics.fpr_at_95_tpr(ids, oods, convention="openood") == pytest.approx(0.04)
    with pytest.raises(ValueError, match="unknown convention 'x'"):
        metrics.evaluate(ids, oods, convention="x")


def test_evaluate_keys_and_nan():
    out = metrics.evaluate([3.0, 2.0], [1.0, 0.0])
    assert out == {"fpr95": 0.0, "auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0}
    with pytest.raises(ValueError, match="ood_scores has 2 NaN or infinite values"):
        metrics.evaluate([1.0], [np.nan, np.inf, 0.0])


def test_ece_hand_computed():
    # Confidences 0.9 (correct), 0.9 (wrong), 0.3 (correct), 3 bins.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7]])
    labels = np.array([0, 1, 1])
    # bins (0,1/3]: conf .3? -> max prob of row 3 is 0.7 (predicts 1, correct) -> bin 3
    # bin 3 (2/3, 1]: conf (0.9, 0.9, 0.7) mean 0.8333, accuracy 2/3 -> gap 1/6
    assert metrics.expected_calibration_error(probs, labels, n_bins=3) == pytest.approx(1 / 6)
    curve = metrics.reliability_curve(probs, labels, n_bins=3)
    assert curve["count"].tolist() == [0, 0, 3]
    assert np.isnan(curve["accuracy"][0])
    conf = np.array([0.2, 0.4, 1.0])
    correct = np.array([0, 1, 1])
    # 2 bins: (0, .5]: conf mean .3, acc .5; (.5, 1]: conf 1, acc 1 -> ECE = 2/3 * .2
    assert metrics.expected_calibration_error(conf, correct, n_bins=2) == pytest.approx(0.4 / 3)


def _reference_fpr95(id_scores, ood_scores, recall_level=0.95):
    """FPR95 as DICE / ReAct's ``fpr_and_fdr_at_recall`` defines it (ID positive, higher =
    ID), re-derived: thresholds at the distinct scores, TPR and FP counts of ``score >=
    threshold``, the threshold whose TPR is closest to ``recall_level`` chosen, scanning
    from the lowest threshold (highest TPR) up, the first on a tie."""
    scores = np.concatenate([id_scores, ood_scores])
    thresholds = np.unique(scores)  # ascending: TPR descending
    tpr = np.array([np.mean(id_scores >= t) for t in thresholds])
    fpr = np.array([np.mean(ood_scores >= t) for t in thresholds])
    full = np.nonzero(tpr == 1.0)[0].max()  # the highest threshold keeping every ID sample
    tpr, fpr = tpr[full:], fpr[full:]
    return float(fpr[np.argmin(np.abs(tpr - recall_level))])


def _kth_and_next(ids):
    k = int(np.ceil(0.95 * len(ids) - 1e-12))
    ordered = np.sort(ids)[::-1]
    return ordered[k - 1], ordered[k]


@pytest.mark.parametrize("n_id", [20, 40, 21, 41, 1000])
def test_fpr95_agrees_with_the_reference_without_ood_scores_in_the_threshold_gap(n_id):
    """Same TPR (a multiple of 20, or the TPR at or above 0.95 the nearer one) and no OOD
    score strictly between the k-th and (k+1)-th largest ID scores: identical."""
    rng = np.random.default_rng(n_id)
    ids, oods = rng.normal(1, 1, n_id), rng.normal(0, 1, 300)
    s_k, s_next = _kth_and_next(ids)
    oods = oods[(oods <= s_next) | (oods >= s_k)]
    oods = np.append(oods, s_k)  # an OOD score tied with the threshold counts in both
    assert metrics.fpr_at_95_tpr(ids, oods) == _reference_fpr95(ids, oods)


@pytest.mark.parametrize("n_id", [20, 40, 21, 41])
def test_fpr95_reference_also_counts_ood_scores_in_the_threshold_gap(n_id):
    """The reference thresholds at the lowest score above s_(k+1), this module at s_k: at
    the same TPR the reference FPR95 adds the OOD scores in (s_(k+1), s_k)."""
    rng = np.random.default_rng(n_id)
    ids, oods = rng.normal(1, 1, n_id), rng.normal(0, 1, 300)
    s_k, s_next = _kth_and_next(ids)
    gap = np.mean((oods > s_next) & (oods < s_k))
    assert gap > 0
    assert _reference_fpr95(ids, oods) == pytest.approx(metrics.fpr_at_95_tpr(ids, oods) + gap)


def test_fpr95_differs_from_the_reference_for_odd_counts():
    """13 ID samples: TPR 12/13 = 0.923 is nearer to 0.95 than 13/13, so the reference
    keeps 12 and thresholds just above the 13th ID score; here all 13 are kept and an OOD
    score tied with the lowest ID score is a false positive."""
    ids = np.arange(1.0, 14.0)  # 1 .. 13
    oods = np.array([0.0, 1.0, 1.5, 20.0])
    assert metrics.fpr_at_95_tpr(ids, oods) == 3 / 4  # >= 1: 1.0, 1.5, 20
    assert _reference_fpr95(ids, oods) == 2 / 4  # > 1: 1.5, 20


def test_fpr95_differs_from_the_reference_when_id_ties_jump_over_95():
    """100 ID samples whose 95th-99th largest scores tie: the TPR jumps from 0.94 to 0.99;
    the reference takes 0.94 (nearer), this module 0.99 (the smallest TPR >= 0.95)."""
    ids = np.concatenate([np.linspace(10, 20, 94), np.full(5, 5.0), [1.0]])
    oods = np.array([5.0, 5.0, 7.0, 0.0])
    assert np.mean(ids >= 5.0) == 0.99 and np.mean(ids >= 10.0) == 0.94
    assert metrics.fpr_at_95_tpr(ids, oods) == 3 / 4  # threshold 5, its ties included
    assert _reference_fpr95(ids, oods) == 1 / 4  # lowest score above 5 with TPR 0.94: 7
