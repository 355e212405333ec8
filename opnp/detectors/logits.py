"""Detectors on the unmodified logits f = W h + b (the paper's baselines, section 4.1).

- ``msp``: max_c softmax(f)_c (Hendrycks & Gimpel, 2017).
- ``maxlogit``: max_c f_c (Hendrycks et al., 2022).
- ``energy``: T logsumexp(f / T) = -E(x), T = ``temperature`` (default 1; Liu et al., 2020).
"""

from __future__ import annotations

from opnp._validation import check_positive
from opnp.detectors.base import LinearDetector
from opnp.detectors.registry import register_detector


class _LogitDetector(LinearDetector):
    defaults = {"temperature": 1.0}

    def _check_params(self) -> None:
        self._params["temperature"] = check_positive(self._params["temperature"], "temperature")


@register_detector("msp")
class MSP(_LogitDetector):
    """Maximum softmax probability max_c softmax(f / T)_c (T = 1 by default)."""

    label = "MSP"

    score_kind = "msp"


@register_detector("maxlogit")
class MaxLogit(LinearDetector):
    """Maximum logit max_c f_c."""

    label = "MaxLogit"

    score_kind = "maxlogit"


@register_detector("energy")
class Energy(_LogitDetector):
    """Energy score T logsumexp(f / T) (the negative free energy), T = 1 by default."""

    label = "Energy"

    score_kind = "energy"
