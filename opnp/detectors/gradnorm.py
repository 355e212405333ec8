"""GradNorm (Huang, Geng & Li, 2021), closed form for the FC layer.

Loss per sample: KL(u || softmax(f / T)) with u uniform over the C classes, which up to
a constant is L = -(1/C) sum_c log softmax(f / T)_c. Its gradient w.r.t. the FC weight
is dL/dW = (1/T) (p - u) h^T with p = softmax(f / T), so the score (the L1 norm of that
gradient, weight only, as in the GradNorm code) is

    S(x) = (1/T) * sum_c |p_c - 1/C| * sum_j |h_j|.

T = ``temperature`` (default 1). Tested against autograd in tests/detectors.
"""

from __future__ import annotations

import numpy as np

from opnp._validation import check_positive
from opnp.detectors.base import LinearDetector
from opnp.detectors.registry import register_detector
from opnp.sensitivity import softmax


@register_detector("gradnorm")
class GradNorm(LinearDetector):
    label = "GradNorm"
    defaults = {"temperature": 1.0}

    def _check_params(self) -> None:
        self._params["temperature"] = check_positive(self._params["temperature"], "temperature")

    def _score_chunk_torch(self, h):
        import torch

        t = self.temperature
        p = torch.softmax(self._logits_chunk_torch(h) / t, dim=1)
        c = p.shape[1]
        return (p - 1.0 / c).abs().sum(dim=1) * h.abs().sum(dim=1) / t

    def _score_chunk(self, h: np.ndarray) -> np.ndarray:
        t = self.temperature
        p = softmax(self._logits_chunk(h) / t)
        c = p.shape[1]
        return np.abs(p - 1.0 / c).sum(axis=1) * np.abs(h).sum(axis=1) / t
