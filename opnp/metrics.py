"""OOD detection and calibration metrics, in the natural [0, 1] scale.

Scores are ID-confidence (higher = in-distribution); ID is the positive class (as in the paper's section 4.1 and the DICE/ReAct code).

- FPR95 (paper convention): the threshold t is the largest score that keeps at least
  95 % of the ID samples (``score >= t``); FPR95 is the fraction of OOD samples with
  ``score >= t``. Ties at t count as kept / as false positives ("at or above"). This is
  the first point of the ROC curve, scanned from high to low thresholds, with TPR >= 0.95.
  How it relates to ``get_measures`` / ``fpr_and_fdr_at_recall`` of the DICE / ReAct
  evaluation code (inherited from Hendrycks et al.'s outlier-exposure code; ID positive,
  higher score = ID): both put thresholds at distinct scores and count ``score >=
  threshold``, but they pick different thresholds. (1) TPR: here the smallest TPR >= 0.95
  (the k = ceil(0.95 n_ID) largest ID scores kept); there the TPR closest to 0.95 (on an
  exact tie of distances the higher one), which is *below* 0.95 when the nearest
  achievable TPR under 0.95 is nearer than the nearest one at or above it: an ID count
  that is not a multiple of 20 (13 ID samples: 12/13 = 0.923 beats 13/13) or ties among
  ID scores that make the TPR jump over 0.95 (0.94 beats 0.99). (2) Threshold at that
  TPR: here the k-th largest ID score s_k itself; there the *lowest* distinct score (ID
  or OOD) with the same TPR, i.e. the lowest score above the next-lower ID score
  s_(k+1). So at equal TPR the reference FPR95 counts, in addition, every OOD score in
  (s_(k+1), s_k) and is never lower; an OOD score tied with s_k counts in both (with all
  ID kept, k = n_ID, the reference also thresholds at s_k). They agree exactly when the
  TPRs agree and no OOD score lies strictly between s_(k+1) and s_k; with large,
  continuous samples the gap holds about n_OOD / n_ID OOD samples (0.01 percentage points
  at 10,000 each), with small or tied samples far more. tests/test_metrics.py checks
  these cases against a re-derivation of the reference.
- ``convention="openood"`` (OpenOOD v1.5): OOD is the positive class, detected by a low
  score; FPR@95 is the fraction of ID samples flagged as OOD at the first threshold that
  flags at least 95 % of the OOD samples. Never mixed with the paper convention in one
  table.
- AUROC: probability that a random ID score exceeds a random OOD score, ties counting
  1/2 (Mann-Whitney U); equals ``sklearn.metrics.roc_auc_score`` with ID labelled 1.
- AUPR-In / AUPR-Out: average precision (``sklearn.metrics.average_precision_score``'s
  step-wise definition) with ID positive / with OOD positive and negated scores.
- ECE: 15 equal-width confidence bins (0, 1/15], ..., (14/15, 1] (confidence 0 goes to
  the first bin), sum over bins of (bin size / N) * |accuracy - mean confidence|.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from opnp._validation import check_choice, to_numpy

CONVENTIONS = ("paper", "openood")


def check_scores(x: Any, name: str) -> np.ndarray:
    """A non-empty 1-D float64 array of finite scores (a (N, 1) or (1, N) array is
    flattened); ValueError naming ``name`` otherwise."""
    arr = np.asarray(to_numpy(x, name), dtype=np.float64)
    if arr.ndim != 1:
        arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} has {int(bad.sum())} NaN or infinite values (of {arr.size})")
    return arr


def _fpr_at_tpr(pos: np.ndarray, neg: np.ndarray, tpr: float) -> float:
    """Fraction of negatives >= t, t the largest threshold with >= tpr of positives >= t."""
    k = int(np.ceil(tpr * len(pos) - 1e-12))  # positives that must be kept
    k = min(max(k, 1), len(pos))
    threshold = np.sort(pos)[::-1][k - 1]
    return float(np.mean(neg >= threshold))


def fpr_at_95_tpr(
    id_scores: Any, ood_scores: Any, tpr: float = 0.95, convention: str = "paper"
) -> float:
    """FPR at 95 % TPR (fraction in [0, 1]); see the module docstring for conventions."""
    check_choice(convention, "convention", CONVENTIONS)
    if not (0.0 < float(tpr) <= 1.0):
        raise ValueError(f"tpr must be in (0, 1], got {tpr!r}")
    ids = check_scores(id_scores, "id_scores")
    oods = check_scores(ood_scores, "ood_scores")
    if convention == "paper":
        return _fpr_at_tpr(ids, oods, float(tpr))
    return _fpr_at_tpr(-oods, -ids, float(tpr))


def auroc(id_scores: Any, ood_scores: Any) -> float:
    """Area under the ROC curve with ID positive (ties count 1/2)."""
    from scipy.stats import rankdata

    ids = check_scores(id_scores, "id_scores")
    oods = check_scores(ood_scores, "ood_scores")
    ranks = rankdata(np.concatenate([ids, oods]))  # average ranks for ties
    n1, n0 = len(ids), len(oods)
    u = ranks[:n1].sum() - n1 * (n1 + 1) / 2.0
    return float(u / (n1 * n0))


def _average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    """sklearn's average precision: sum over distinct thresholds of (R_k - R_k-1) P_k."""
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    distinct = np.nonzero(np.diff(scores))[0]
    ends = np.r_[distinct, len(scores) - 1]  # last index of each block of equal scores
    tps = np.cumsum(labels)[ends]
    fps = (ends + 1) - tps
    precision = tps / (tps + fps)
    recall = tps / len(pos)
    recall_steps = np.diff(np.r_[0.0, recall])
    return float(np.sum(recall_steps * precision))


def aupr_in(id_scores: Any, ood_scores: Any) -> float:
    """Area under the precision-recall curve with ID positive (average precision)."""
    return _average_precision(
        check_scores(id_scores, "id_scores"), check_scores(ood_scores, "ood_scores")
    )


def aupr_out(id_scores: Any, ood_scores: Any) -> float:
    """Average precision with OOD positive, scored by the negated ID-confidence."""
    return _average_precision(
        -check_scores(ood_scores, "ood_scores"), -check_scores(id_scores, "id_scores")
    )


def evaluate(id_scores: Any, ood_scores: Any, convention: str = "paper") -> dict[str, float]:
    """``{"fpr95", "auroc", "aupr_in", "aupr_out"}`` as fractions in [0, 1]."""
    check_choice(convention, "convention", CONVENTIONS)
    ids = check_scores(id_scores, "id_scores")
    oods = check_scores(ood_scores, "ood_scores")
    return {
        "fpr95": fpr_at_95_tpr(ids, oods, convention=convention),
        "auroc": auroc(ids, oods),
        "aupr_in": aupr_in(ids, oods),
        "aupr_out": aupr_out(ids, oods),
    }


# --- calibration ------------------------------------------------------------------


def _confidences(probs_or_confidences: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) from probabilities (N, C) + labels, or confidences (N,) +
    correctness indicators (N,) of 0/1."""
    p = np.asarray(to_numpy(probs_or_confidences, "probs_or_confidences"), dtype=np.float64)
    y = np.asarray(to_numpy(labels, "labels"))
    bad = ~np.isfinite(p)
    if bad.any():
        raise ValueError(f"probs_or_confidences has {int(bad.sum())} NaN or infinite values")
    if p.ndim == 2:
        if y.shape != (p.shape[0],):
            raise ValueError(f"labels must have shape ({p.shape[0]},), got {y.shape}")
        conf = p.max(axis=1)
        correct = (p.argmax(axis=1) == y).astype(np.float64)
    elif p.ndim == 1:
        if y.shape != p.shape:
            raise ValueError(f"labels (correctness) must have shape {p.shape}, got {y.shape}")
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("with 1-D confidences, labels must be 0/1 correctness indicators")
        conf, correct = p, y.astype(np.float64)
    else:
        raise ValueError(f"probs_or_confidences must be (N, C) or (N,), got shape {p.shape}")
    if conf.size == 0:
        raise ValueError("probs_or_confidences is empty")
    if conf.min() < 0 or conf.max() > 1:
        raise ValueError(f"confidences must lie in [0, 1], got range [{conf.min()}, {conf.max()}]")
    return conf, correct


def reliability_curve(probs_or_confidences: Any, labels: Any, n_bins: int = 15) -> dict:
    """Per-bin ``bin_lower, bin_upper, confidence, accuracy, count`` (equal-width bins).

    Empty bins have count 0 and NaN confidence / accuracy.
    """
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    n_bins = int(n_bins)
    conf, correct = _confidences(probs_or_confidences, labels)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bin i holds (edges[i], edges[i+1]]; confidence 0 joins the first bin.
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(idx, weights=correct, minlength=n_bins) / count
    return {
        "bin_lower": edges[:-1],
        "bin_upper": edges[1:],
        "confidence": mean_conf,
        "accuracy": accuracy,
        "count": count.astype(np.int64),
    }


def expected_calibration_error(probs_or_confidences: Any, labels: Any, n_bins: int = 15) -> float:
    """ECE = sum_b (n_b / N) |accuracy_b - confidence_b| over equal-width bins."""
    curve = reliability_curve(probs_or_confidences, labels, n_bins)
    count = curve["count"]
    filled = count > 0
    gaps = np.abs(curve["accuracy"][filled] - curve["confidence"][filled])
    return float(np.sum(count[filled] * gaps) / count.sum())
