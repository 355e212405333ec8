"""Mahalanobis distance with class means and one shared covariance (Lee et al., 2018).

fit: class means mu_c of the training features (labels required); the shared covariance
Sigma = (1/N) sum_k (h_k - mu_{y_k})(h_k - mu_{y_k})^T of the class-centred features
(maximum likelihood, as sklearn's ``EmpiricalCovariance`` on the centred features); its
precision is the Moore-Penrose pseudo-inverse (``numpy.linalg.pinv``, hermitian), so a
singular covariance (e.g. dead ReLU units) is handled.
score: max_c -(h - mu_c)^T Sigma^+ (h - mu_c). No input perturbation and no layer
ensemble (the baseline as the DICE and ReAct papers report it). The FC layer is not used.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from opnp._validation import check_finite, iter_chunks
from opnp.detectors.base import Detector
from opnp.detectors.registry import register_detector


@register_detector("mahalanobis")
class Mahalanobis(Detector):
    label = "Mahalanobis"
    fit_needs = ("class_means", "covariance")
    defaults = {}
    needs_head = False
    needs_labels = True
    needs_fit = True

    def _fit(self, train_features, train_labels) -> None:
        classes = np.unique(train_labels)
        if len(classes) < 1:
            raise ValueError("train_labels has no classes")
        c = None if self.weight is None else self.weight.shape[0]
        if classes[0] < 0 or (c is not None and classes[-1] >= c):
            bad = classes[0] if classes[0] < 0 else classes[-1]
            row = int(np.argmax(train_labels == bad))
            where = "be >= 0" if c is None else f"lie in [0, {c}) for a {c}-class FC layer"
            raise ValueError(
                f"train_labels must {where}: label {int(bad)} at row {row} (class indices)"
            )
        d = train_features.shape[1]
        index = np.searchsorted(classes, train_labels)
        sums = np.zeros((len(classes), d))
        counts = np.bincount(index, minlength=len(classes)).astype(np.float64)
        for start, hc in iter_chunks(train_features, self.chunk_size, "train_features", np.float64):
            # Class sums as a sparse one-hot product: O(chunk * D), any number of classes.
            onehot = sparse.csr_matrix(
                (np.ones(len(hc)), (index[start : start + len(hc)], np.arange(len(hc)))),
                shape=(len(classes), len(hc)),
            )
            sums += onehot @ hc
        class_means = sums / counts[:, None]
        scatter = np.zeros((d, d))
        for start, hc in iter_chunks(train_features, self.chunk_size, "train_features", np.float64):
            centred = hc - class_means[index[start : start + len(hc)]]
            scatter += centred.T @ centred
        self._set_gaussian(classes, class_means, scatter / train_features.shape[0])

    def fit_gaussian(self, classes, class_means, covariance) -> Mahalanobis:
        """Fit from precomputed statistics: the class labels (K,), their means (K, D) and
        the shared covariance (D, D) (e.g. streamed by :mod:`opnp.nets.fit_statistics`); the same
        detector as ``fit`` on the features these come from. Returns ``self``."""
        classes = np.asarray(classes)
        means = np.asarray(class_means, dtype=np.float64)
        cov = np.asarray(covariance, dtype=np.float64)
        d = means.shape[1] if means.ndim == 2 else -1
        if means.ndim != 2 or len(classes) != len(means) or cov.shape != (d, d):
            raise ValueError(
                f"fit_gaussian needs classes (K,), class_means (K, D) and covariance (D, D), "
                f"got {classes.shape}, {means.shape}, {cov.shape}"
            )
        check_finite(means, "class_means")
        check_finite(cov, "covariance")
        self._set_gaussian(classes, means, cov)
        self._fitted = True
        return self

    def _set_gaussian(self, classes, class_means, covariance) -> None:
        self.classes = classes
        self.class_means = class_means
        self.covariance = covariance
        self.precision = np.linalg.pinv(self.covariance, hermitian=True)
        # -(h-mu)^T P (h-mu) = -h^T P h + 2 h^T P mu - mu^T P mu, vectorised over classes.
        self._p_mu = self.precision @ self.class_means.T  # (D, K)
        self._mu_p_mu = np.einsum("kd,dk->k", self.class_means, self._p_mu)

    def _score_chunk_torch(self, h):
        precision = self._on(h.device, "precision", self.precision)
        h_p_h = ((h @ precision) * h).sum(dim=1)
        p_mu = self._on(h.device, "p_mu", self._p_mu)
        mu_p_mu = self._on(h.device, "mu_p_mu", self._mu_p_mu)
        neg_dist = 2.0 * (h @ p_mu) - mu_p_mu[None, :] - h_p_h[:, None]
        return neg_dist.max(dim=1).values

    def _score_chunk(self, h: np.ndarray) -> np.ndarray:
        h_p_h = np.einsum("nd,nd->n", h @ self.precision, h)
        neg_dist = 2.0 * (h @ self._p_mu) - self._mu_p_mu[None, :] - h_p_h[:, None]
        return neg_dist.max(axis=1)
