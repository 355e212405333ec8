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
