"""DICE (Sun & Li, 2022) and DICE + ReAct.

Contribution matrix V = mean training feature (as a row) * W, i.e.
V_cj = mean_k h_j(x_k) * W_cj (signed, as in the DICE code). Weights with
V > percentile(V, p) over the whole (C, D) matrix are kept (strict inequality), the rest
zeroed; ``percentile`` p defaults to 90 (CIFAR; the DICE paper uses 70 for ImageNet). Score: Energy of
the masked layer, T logsumexp(f'/T).

``dice+react``: the features are first clipped at the ReAct threshold, the
``react_percentile``-th percentile (default 90) of all training activations; V uses the
mean of the *unclipped* training features (the DICE mask is the same as without ReAct).
"""

from __future__ import annotations

import numpy as np

from opnp._validation import check_positive
from opnp.detectors.base import LinearDetector, mean_features
from opnp.detectors.react import check_percentile_param
from opnp.detectors.registry import register_detector
from opnp.pruning import feature_percentile


@register_detector("dice")
class DICE(LinearDetector):
    label = "DICE"
    fit_needs = ("mean",)
    default_grid = {"percentile": [10, 30, 50, 70, 90]}
    defaults = {"percentile": 90.0, "temperature": 1.0}
    needs_fit = True

    def _check_params(self) -> None:
        p = self._params
        p["percentile"] = check_percentile_param(p["percentile"], "percentile")
        if p["percentile"] >= 100:
            raise ValueError(
                f"percentile must be < 100 (100 prunes every weight), got {p['percentile']!r}"
            )
        p["temperature"] = check_positive(p["temperature"], "temperature")

    def _fit(self, train_features, train_labels) -> None:
        self.mean_feature = mean_features(train_features, self.chunk_size)
        contribution = self.mean_feature[None, :] * self.weight
        self.contribution_threshold = float(np.percentile(contribution, self._params["percentile"]))
        self.weight_mask = contribution > self.contribution_threshold
        self._w = np.where(self.weight_mask, self.weight, 0.0)


@register_detector("dice+react")
class DICEReAct(DICE):
    label = "DICE+ReAct"
    fit_needs = ("features",)
    clips_at_react = True
    defaults = {"percentile": 90.0, "react_percentile": 90.0, "temperature": 1.0}

    def _check_params(self) -> None:
        super()._check_params()
        self._params["react_percentile"] = check_percentile_param(
            self._params["react_percentile"], "react_percentile"
        )

    def _fit(self, train_features, train_labels) -> None:
        super()._fit(train_features, train_labels)
        self._clip = feature_percentile(train_features, self._params["react_percentile"])
        self.threshold = self._clip
