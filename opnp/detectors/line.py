"""LINe: Leveraging Important Neurons (Ahn, Park & Kim, CVPR 2023), on cached features.

Definitions (the LINe paper, CVPR 2023, following its code: ``extract_shap.py`` and ``RouteLUNCH``):

- Contribution (first-order Taylor approximation of the Shapley value) of neuron j to
  class c: A_cj = mean over training samples k with label c of h_j(x_k) * W_cj, i.e. the
  activation times the gradient of logit c w.r.t. it. Computed on the *unclipped*
  training features (the LINe code computes it with the forward pass that has no
  clipping). A class without training samples gets A_c = 0.
- Activation clipping: h <- min(h, ``clip``), a raw threshold (default 0.8, the ImageNet
  ResNet50 value; the LINe paper uses 1.0 for CIFAR).
- Per class k, a weight mask M^k = (|A_k|[None, :] * W > percentile(|A_k|[None, :] * W,
  ``p_w``)) over the whole (C, D) matrix (strict), and a neuron mask
  m^k = (A_k > percentile(A_k, ``p_a``)) over the D neurons (strict); p_w = p_a = 10 by
  default (ImageNet ResNet50; the LINe paper: 90/90 CIFAR-10, 90/10 CIFAR-100).
- Scoring a sample: its predicted class k = argmax of the clipped features through the
  unpruned layer; logits f' = (W * M^k)(min(h, clip) * m^k) + b; score = Energy
  T logsumexp(f'/T) (T = 1). Samples are grouped by predicted class, so each class's
  masks are built once per ``score`` call.

With ``device=`` (or a CUDA tensor as input) ``score`` runs the same steps with torch on
that device (float64; :mod:`opnp.backend`).
"""

from __future__ import annotations

import numpy as np

from opnp._validation import check_positive, iter_chunks
from opnp.backend import to_numpy64, torch_device
from opnp.detectors.base import LinearDetector, score_logits, score_logits_torch
from opnp.detectors.react import check_percentile_param
from opnp.detectors.registry import register_detector


def _class_groups(pred: np.ndarray):
    """Yield ``(class, rows)`` for each predicted class in ``pred`` (ascending), the rows
    of one class in ascending order."""
    order = np.argsort(pred, kind="stable")
    classes, first = np.unique(pred[order], return_index=True)
    bounds = np.r_[first, len(pred)]
    for i, k in enumerate(classes.tolist()):
        yield k, order[bounds[i] : bounds[i + 1]]


@register_detector("line")
class LINe(LinearDetector):
    label = "LINe"
    fit_needs = ("class_means",)
    default_grid = {"p_w": [10, 50, 90], "p_a": [10, 50, 90], "clip": [0.8, 1.0]}
    defaults = {"p_w": 10.0, "p_a": 10.0, "clip": 0.8, "temperature": 1.0}
    needs_labels = True
    needs_fit = True

    def _check_params(self) -> None:
        p = self._params
        p["p_w"] = check_percentile_param(p["p_w"], "p_w")
        p["p_a"] = check_percentile_param(p["p_a"], "p_a")
        p["clip"] = check_positive(p["clip"], "clip")
        p["temperature"] = check_positive(p["temperature"], "temperature")

    def _fit(self, train_features, train_labels) -> None:
        c, d = self.weight.shape
        if train_labels.min() < 0 or train_labels.max() >= c:
            raise ValueError(
                f"train_labels must lie in [0, {c}) for a {c}-class FC layer, got range "
                f"[{train_labels.min()}, {train_labels.max()}]"
            )
        sums = np.zeros((c, d))
        for start, hc in iter_chunks(train_features, self.chunk_size, "train_features", np.float64):
            lab = train_labels[start : start + len(hc)]
            order = np.argsort(lab, kind="stable")
            uniq, first = np.unique(lab[order], return_index=True)
            sums[uniq] += np.add.reduceat(hc[order], first, axis=0)
        counts = np.bincount(train_labels, minlength=c).astype(np.float64)
        class_means = sums / np.maximum(counts, 1.0)[:, None]
        self.contribution = class_means * self.weight  # A (C, D)
        abs_a = np.abs(self.contribution)
        self.weight_thresholds = np.array(
            [np.percentile(abs_a[k][None, :] * self.weight, self._params["p_w"]) for k in range(c)]
        )
        self.neuron_thresholds = np.percentile(self.contribution, self._params["p_a"], axis=1)
        self._clip = self._params["clip"]

    def class_masks(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(weight mask (C, D), neuron mask (D,)) used for samples predicted as class k."""
        self._check_fitted()
        importance = np.abs(self.contribution[k])[None, :] * self.weight
        return importance > self.weight_thresholds[k], self.contribution[
            k
        ] > self.neuron_thresholds[k]

    def _by_predicted_class(self, features, consume) -> int:
        """Call ``consume(rows, pruned_logits)`` for blocks of samples grouped by their
        predicted class; returns N."""
        self._check_fitted()
        h = self._features(features)
        n = h.shape[0]
        pred = np.empty(n, dtype=np.int64)
        for start, hc in iter_chunks(h, self.chunk_size, "features", dtype=np.float64):
            clipped = np.minimum(hc, self._clip)
            pred[start : start + len(hc)] = np.argmax(clipped @ self.weight.T + self.bias, axis=1)
        for k, rows in _class_groups(pred):
            wmask, nmask = self.class_masks(k)
            w_t = np.where(wmask, self.weight, 0.0).T
            for s in range(0, len(rows), self.chunk_size):
                r = rows[s : s + self.chunk_size]
                hk = np.minimum(np.asarray(h[r], dtype=np.float64), self._clip)
                consume(r, (hk * nmask) @ w_t + self.bias)
        return n

    def _by_predicted_class_torch(self, features, device, consume) -> int:
        """:meth:`_by_predicted_class` with torch on ``device`` (float64): the same
        grouping, masks and logits; ``consume(rows, pruned_logits_tensor)``."""
        import torch

        from opnp.backend import check_tensor_features, device_chunks, is_tensor

        self._check_fitted()
        if is_tensor(features):
            h = check_tensor_features(features, "features", dim=self.dim)
        else:
            h = self._features(features)
        w, b = self._on(device, "w", self.weight), self._on(device, "b", self.bias)
        contribution = self._on(device, "contribution", self.contribution)
        w_thr = self._on(device, "weight_thresholds", self.weight_thresholds)
        n_thr = self._on(device, "neuron_thresholds", self.neuron_thresholds)
        n = h.shape[0]
        pred = np.empty(n, dtype=np.int64)
        with torch.no_grad():
            for start, hc in device_chunks(h, self.chunk_size, "features", device):
                logits = hc.clamp(max=self._clip) @ w.T + b
                pred[start : start + len(hc)] = logits.argmax(dim=1).cpu().numpy()
            for k, rows in _class_groups(pred):
                importance = contribution[k].abs()[None, :] * w
                w_k = torch.where(importance > w_thr[k], w, 0.0)
                kept = contribution[k] > n_thr[k]
                for s, hk in device_chunks(h, self.chunk_size, "features", device, rows=rows):
                    r = rows[s : s + self.chunk_size]
                    consume(r, (hk.clamp(max=self._clip) * kept) @ w_k.T + b)
        return n

    def logits(self, features) -> np.ndarray:
        """LINe logits f' (N, C): each sample through its predicted class's masks."""
        parts = {}
        n = self._by_predicted_class(features, lambda r, f: parts.__setitem__(r[0], (r, f)))
        out = np.empty((n, self.weight.shape[0]))
        for r, f in parts.values():
            out[r] = f
        return out

    def score(self, features) -> np.ndarray:
        """Energy of the LINe logits (N,) float64."""
        out = {}
        t = self.temperature
        dev = torch_device(features, self.device)
        if dev is None:
            walk, energy = self._by_predicted_class, lambda f: score_logits(f, "energy", t)
        else:  # torch on that device (opnp.backend)

            def walk(feats, consume):
                return self._by_predicted_class_torch(feats, dev, consume)

            def energy(f):
                return to_numpy64(score_logits_torch(f, "energy", t))

        n = walk(features, lambda rows, f: out.__setitem__(rows[0], (rows, energy(f))))
        scores = np.empty(n)
        for r, v in out.values():
            scores[r] = v
        return scores
