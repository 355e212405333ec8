"""ODIN (Liang, Li & Srikant, ICLR 2018): temperature scaling and input perturbation.

The only detector that needs the network itself: it perturbs the input images,
x' = x - epsilon * sign(-grad_x log max_c softmax(f(x)/T)) / std, and scores
max_c softmax(f(x')/T) (:func:`opnp.nets.odin.odin_scores`). Cached features cannot be
perturbed, so :meth:`ODIN.score` refuses features; :meth:`ODIN.score_batch` scores a
batch of images with a model (torch is imported there, not here). Defaults T = 1000,
epsilon = 0.0014 (the ODIN paper's CIFAR setting; it uses 0.005 for ImageNet).
"""

from __future__ import annotations

import numpy as np

from opnp._validation import check_positive
from opnp.detectors import register_detector
from opnp.detectors.base import Detector


@register_detector("odin")
class ODIN(Detector):
    """Max softmax at temperature T of the input-perturbed image (needs the network)."""

    label = "ODIN"
    defaults = {"temperature": 1000.0, "epsilon": 0.0014}
    needs_head = False
    needs_network = True
    default_grid = {"temperature": [1, 10, 100, 1000], "epsilon": [0.0, 0.0014, 0.005]}

    def _check_params(self) -> None:
        p = self._params
        p["temperature"] = check_positive(p["temperature"], "temperature")
        eps = p["epsilon"]
        try:
            value = float(eps)
        except (TypeError, ValueError):
            value = float("nan")
        if isinstance(eps, bool) or not (value >= 0 and np.isfinite(value)):
            raise ValueError(f"epsilon must be a nonnegative number, got {eps!r}")
        p["epsilon"] = value

    def score(self, features) -> np.ndarray:
        raise ValueError(
            "odin perturbs the input images, so it cannot score cached features: use "
            "score_batch(model, inputs, std) or opnp.from_model(model, 'odin')"
        )

    def score_batch(self, model, inputs, std=1.0) -> np.ndarray:
        """ODIN scores (B,) float64 of a batch of images (B, C, ...) under ``model``;
        ``std``: the per-channel standard deviation of the input normalisation."""
        from opnp.nets.odin import odin_scores

        return odin_scores(model, inputs, std=std, **self._params)
