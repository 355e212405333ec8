"""ASH-S (Djurisic et al., 2023): activation shaping with scaling, on cached features.

Per sample h (D,): s1 = sum(h); keep the k = D - round(D * p / 100) largest entries
(``percentile`` p, default 90; the ASH paper uses 95 for ViT and CIFAR DenseNet), zero the rest;
s2 = sum of the kept entries; h' = kept * exp(s1 / s2), and h' = kept (no scaling) when
s2 = 0, e.g. an all-zero feature row, whose score is then the Energy of the bias. Score:
Energy T logsumexp(f/T) of W h' + b. (The ASH code applies this to the feature map before global pooling; with
cached pooled features it is applied to the pooled vector, as in OpenOOD's feature-level
evaluations.) Among entries tied at the k-th largest value, the lowest-indexed ones are
kept (saturated features tie, e.g. tanh at +-1), the same in numpy, torch and the
exported module (opnp.nets.export), so their scores agree.
"""

from __future__ import annotations

import numpy as np

from opnp._validation import check_positive
from opnp.detectors.base import LinearDetector
from opnp.detectors.react import check_percentile_param
from opnp.detectors.registry import register_detector


def ash_s(h: np.ndarray, percentile: float) -> np.ndarray:
    """ASH-S of each row of ``h`` (N, D), in ``h``'s float dtype (float64 otherwise)."""
    if h.dtype not in (np.float32, np.float64):
        h = h.astype(np.float64)
    n, d = h.shape
    k = d - int(np.round(d * percentile / 100.0))
    s1 = h.sum(axis=1)
    if k <= 0:
        return np.zeros_like(h)
    out = np.where(_keep_mask(h, k), h, 0)
    s2 = out.sum(axis=1)
    # A row whose kept entries sum to 0 (e.g. an all-zero feature row) is not scaled:
    # exp(s1 / s2) would be 0/0 = NaN, and the kept row is all zeros (ReLU) anyway.
    zero = s2 == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(zero, 1.0, np.exp(s1 / np.where(zero, 1.0, s2)))
    out *= scale[:, None].astype(h.dtype, copy=False)
    return out


def _keep_mask(h: np.ndarray, k: int) -> np.ndarray:
    """(N, D) mask of the k largest entries of each row; among entries equal to the k-th
    largest value, the lowest-indexed ones (deterministic tie-breaking)."""
    d = h.shape[1]
    if k >= d:
        return np.ones(h.shape, dtype=bool)
    kth = np.partition(h, d - k, axis=1)[:, d - k, None]
    above = h > kth
    tied = h == kth
    room = k - above.sum(axis=1, keepdims=True)
    return above | (tied & (np.cumsum(tied, axis=1) <= room))


def keep_mask_torch(h, k: int):
    """:func:`_keep_mask` with torch (the same entries kept)."""
    import torch

    if k >= h.shape[1]:
        return torch.ones_like(h, dtype=torch.bool)
    kth = torch.topk(h, k, dim=1).values[:, -1:]
    above = h > kth
    tied = h == kth
    room = k - above.sum(dim=1, keepdim=True)
    return above | (tied & (torch.cumsum(tied.to(torch.int64), dim=1) <= room))


@register_detector("ash")
class ASH(LinearDetector):
    label = "ASH-S"
    default_grid = {"percentile": [60, 70, 80, 90]}
    defaults = {"percentile": 90.0, "temperature": 1.0}

    def _check_params(self) -> None:
        p = self._params
        p["percentile"] = check_percentile_param(p["percentile"], "percentile")
        p["temperature"] = check_positive(p["temperature"], "temperature")

    def _logits_chunk_torch(self, h):
        import torch

        n, d = h.shape
        k = d - int(np.round(d * self._params["percentile"] / 100.0))
        kept = torch.zeros_like(h)
        if k > 0:
            kept = torch.where(keep_mask_torch(h, k), h, kept)
        s1, s2 = h.sum(dim=1), kept.sum(dim=1)
        zero = s2 == 0
        scale = torch.where(zero, torch.ones_like(s1), torch.exp(s1 / torch.where(zero, 1.0, s2)))
        w = self._on(h.device, "w", self.weight)
        return (kept * scale[:, None]) @ w.T + self._on(h.device, "b", self.bias)

    def _logits_chunk(self, h: np.ndarray) -> np.ndarray:
        return self._add_bias(
            self._times_weight_t(ash_s(h, self._params["percentile"]), self.weight)
        )
