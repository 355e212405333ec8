"""What ``ModelDetector.fit`` (:mod:`opnp.nets.model_api`) keeps from one pass over the
training data, streamed chunk by chunk (memory independent of the number of training
samples unless the method needs every feature):

- nothing: msp, maxlogit, energy, ash, gradnorm, rpp, rnp, tpp, odin (``fit`` may be
  skipped);
- the parameter sensitivity S (C, D), streamed (:class:`opnp.sensitivity.
  SensitivityAccumulator`): opp, onp, opnp, opnp+msp;
- the feature mean (D,): dice; the mean absolute feature (D,): tnp; the class means
  (K, D): line; class means and the shared covariance (D, D), streamed with a shifted
  second moment: mahalanobis;
- every training feature (N x D, in the model's dtype): knn (its feature bank), and the
  methods with a ReAct threshold (react without ``threshold=``, dice+react, opnp+react):
  the threshold is the exact percentile of *all* N*D training activations, which no
  fixed-memory statistic gives exactly (an approximate quantile sketch would change the
  threshold and so every score). Registered detectors this module does not know also
  get all features.

These are the defaults' needs; a reading that changes them (``Detector.fit_needs_for``:
TNP's norm, OPNP+ReAct's clipped S) gets its own, e.g. every feature for the clipped S.

Numpy only.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from opnp.detectors import available_detectors, detector_class
from opnp.sensitivity import SensitivityAccumulator

__all__ = ["FIT_NEEDS", "TrainingStatistics"]


#: Method name -> what ``fit`` collects (see the module docstring): each detector class's
#: ``fit_needs``. Unknown names: "features".
FIT_NEEDS = {name: detector_class(name).fit_needs for name in available_detectors()}


class TrainingStatistics:
    """What ``fit`` streams from the training features (see the module docstring).

    ``update(h, labels)`` with chunks (k, D) of features; the results are the attributes
    ``n``, ``mean``, ``abs_mean``, ``classes`` / ``class_means`` / ``class_counts``,
    ``covariance`` (shared, class-centred, divided by N as in
    :class:`opnp.detectors.mahalanobis.Mahalanobis`), ``sensitivity`` and ``features`` /
    ``labels`` (all rows), each computed only when named in ``needs``.
    """

    def __init__(
        self,
        needs: Iterable[str],
        weight: np.ndarray,
        bias: np.ndarray,
        temperature: float = 1.0,
        reduction: str = "per_sample",
    ):
        self.needs = frozenset(needs)
        unknown = self.needs - {
            "sensitivity", "features", "mean", "abs_mean", "class_means", "covariance"
        }  # fmt: skip
        if unknown:
            raise ValueError(f"unknown training statistics {sorted(unknown)}")
        self.n = 0
        self.num_classes, d = weight.shape
        self._sum = np.zeros(d)
        self._abs_sum = np.zeros(d)
        self._class_sums: dict[int, np.ndarray] = {}
        self._class_counts: dict[int, int] = {}
        self._shift: np.ndarray | None = None  # first chunk's mean: keeps the moments small
        self._shifted_moment = np.zeros((d, d)) if "covariance" in self.needs else None
        self._sensitivity = (
            SensitivityAccumulator(weight, bias, temperature, reduction)
            if "sensitivity" in self.needs
            else None
        )
        self._features: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    @property
    def needs_labels(self) -> bool:
        return bool(self.needs & {"class_means", "covariance"})

    def update(self, h: np.ndarray, labels: np.ndarray | None = None, row: int = 0) -> None:
        """Add one chunk of features (k, D) and, where needed, integer labels (k,) in
        [0, C) (C: the head's classes); ``row``: the chunk's first row in the training
        data (for error messages)."""
        if self.needs_labels and labels is None:
            raise ValueError(
                "fitting this method needs class labels: pass (inputs, labels) batches"
            )
        if labels is not None and self.needs_labels:  # other methods do not use them
            labels = self._check_labels(labels, len(h), row)
        h64 = np.asarray(h, dtype=np.float64)
        self.n += len(h64)
        if "mean" in self.needs:
            self._sum += h64.sum(axis=0)
        if "abs_mean" in self.needs:
            self._abs_sum += np.abs(h64).sum(axis=0)
        if self.needs_labels:
            labels = np.asarray(labels).astype(np.int64)
            for label in np.unique(labels):
                rows = labels == label
                key = int(label)
                self._class_sums[key] = self._class_sums.get(key, 0.0) + h64[rows].sum(axis=0)
                self._class_counts[key] = self._class_counts.get(key, 0) + int(rows.sum())
        if self._shifted_moment is not None:
            if self._shift is None:
                self._shift = h64.mean(axis=0)
            centred = h64 - self._shift
            self._shifted_moment += centred.T @ centred
        if self._sensitivity is not None:
            self._sensitivity._add(h64)
        if "features" in self.needs:
            self._features.append(np.array(h))  # a copy in the model's dtype
            if labels is not None:
                self._labels.append(np.asarray(labels).astype(np.int64))

    def _check_labels(self, labels, n: int, row: int) -> np.ndarray:
        """Integer class labels (n,) of a C-class head: ValueError naming the first bad
        label and its row otherwise."""
        y = np.asarray(labels)
        if y.shape != (n,):
            raise ValueError(
                f"labels of rows {row}-{row + n - 1} have shape {y.shape}, expected ({n},)"
            )
        if y.dtype.kind == "b" or y.dtype.kind not in "iuf":
            raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
        c = self.num_classes
        bad = ~np.isfinite(y) if y.dtype.kind == "f" else np.zeros(n, bool)
        with np.errstate(invalid="ignore"):
            bad |= (y < 0) | (y >= c)
            if y.dtype.kind == "f":
                bad |= y != np.round(y)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"labels must be integer class indices in [0, {c}) for the head's {c} "
                f"classes; label {y[i].item()!r} at row {row + i} is not "
                f"({int(bad.sum())} bad label(s) in this batch)"
            )
        return y.astype(np.int64)

    # -- results ----------------------------------------------------------------------
    def _check(self) -> None:
        if self.n == 0:
            raise ValueError("fit saw no training samples")

    @property
    def mean(self) -> np.ndarray:
        self._check()
        return self._sum / self.n

    @property
    def abs_mean(self) -> np.ndarray:
        self._check()
        return self._abs_sum / self.n

    @property
    def classes(self) -> np.ndarray:
        return np.array(sorted(self._class_sums), dtype=np.int64)

    @property
    def class_counts(self) -> np.ndarray:
        return np.array([self._class_counts[c] for c in self.classes], dtype=np.float64)

    @property
    def class_means(self) -> np.ndarray:
        self._check()
        sums = np.stack([self._class_sums[c] for c in self.classes])
        return sums / self.class_counts[:, None]

    @property
    def covariance(self) -> np.ndarray:
        """(1/N) sum_k (h_k - mu_y)(h_k - mu_y)^T, from sum (h - r)(h - r)^T minus
        sum_c n_c (mu_c - r)(mu_c - r)^T with r the first chunk's mean (the shifted
        second moment: no cancellation of large raw moments)."""
        self._check()
        offsets = self.class_means - self._shift
        between = (offsets * self.class_counts[:, None]).T @ offsets
        return (self._shifted_moment - between) / self.n

    @property
    def sensitivity(self) -> np.ndarray:
        return self._sensitivity.result()

    @property
    def features(self) -> np.ndarray:
        self._check()
        return np.concatenate(self._features)

    @property
    def labels(self) -> np.ndarray | None:
        return np.concatenate(self._labels) if self._labels else None
