"""ReAct (Sun, Guo & Li, 2021): clip the features, then score Energy.

h <- min(h, t) with t the ``percentile``-th percentile (default 90, linear
interpolation) of *all* ID training activations (every entry of the (N, D) training
features, computed exactly even for memory-mapped arrays: :func:`opnp.pruning.
feature_percentile`). ``threshold=`` fixes t directly (then ``fit`` needs no features).
Score: Energy T logsumexp(f/T) of the clipped features through the unpruned FC layer.
"""

from __future__ import annotations

import warnings

from opnp._validation import check_positive
from opnp.detectors.base import LinearDetector
from opnp.detectors.registry import register_detector
from opnp.pruning import feature_percentile


def check_percentile_param(value, name: str) -> float:
    """A percentile in percent, [0, 100]. A value strictly between 0 and 1 warns
    (UserWarning): it is almost surely a fraction (pytorch-ood's ReAct takes
    ``percentile=0.9``), which here means 0.9 %, not 90 %."""
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a number in [0, 100], got {value!r}") from err
    if not (0.0 <= v <= 100.0):
        raise ValueError(f"{name} must be in [0, 100], got {value!r}")
    if 0.0 < v < 1.0:
        warnings.warn(
            f"{name}={value!r} is read as {v:g} percent (opnp's percentiles are in percent, "
            f"0-100); for the {v * 100:g}th percentile pass {name}={v * 100:g}",
            UserWarning,
            stacklevel=3,
        )
    return v


@register_detector("react")
class ReAct(LinearDetector):
    label = "ReAct"
    fit_needs = ("features",)
    default_grid = {"percentile": [80, 85, 90, 95, 99]}
    defaults = {"percentile": 90.0, "threshold": None, "temperature": 1.0}
    needs_fit = True

    def _check_params(self) -> None:
        p = self._params
        p["percentile"] = check_percentile_param(p["percentile"], "percentile")
        p["temperature"] = check_positive(p["temperature"], "temperature")
        if p["threshold"] is not None:
            p["threshold"] = float(p["threshold"])

    def _requires_train_features(self) -> bool:
        return self._params["threshold"] is None

    def _fit(self, train_features, train_labels) -> None:
        if self._params["threshold"] is not None:
            self._clip = self._params["threshold"]
        else:
            self._clip = feature_percentile(train_features, self._params["percentile"])
        self.threshold = self._clip
