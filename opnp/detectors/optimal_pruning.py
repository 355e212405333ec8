"""OPNP (paper section 3) and its variants: opp, onp, opnp, opnp+react, opp+react, opnp+msp.

1. Parameter sensitivity S (C, D) of the FC layer on the training features, Eq. 6
   (:func:`opnp.sensitivity.parameter_sensitivity`), or the precomputed matrix passed as
   ``param_sensitivity=`` (e.g. from a 1 / 5 / 20 % training subset, Table 8);
   neuron sensitivity s (D,) = ``neuron_statistic`` over classes (default "mean", Eq. 8).
2. Masks (:func:`opnp.pruning.pruning_masks`): ``weight_low`` / ``weight_high`` percent of
   the smallest / largest S pruned, ``neuron_low`` / ``neuron_high`` percent of the
   neurons with the smallest / largest s; a value equal to a threshold is kept.
3. Pruned layer f'(x) = (W * M_w)(h * m_n) + b, score T logsumexp(f'/T) (Energy, T =
   ``temperature`` = 1), or its max softmax for ``opnp+msp``.

``opp`` uses the weight mask only (accepts weight_low / weight_high), ``onp`` the neuron
mask only (neuron_low / neuron_high), ``opnp`` both. ``opnp+react`` first clips the
features at the ReAct threshold (``react_percentile``-th percentile, default 90, of all
training activations; the workflow passes ReAct's validation-selected percentile unless
the config fixes it, see config/README.md); sensitivities are computed on the unclipped
training features (the paper's section 3.2 computes them before any clipping). ``opp+react`` is the same with the weight mask only (the
paper's "OPP+ReAct" of Table 2, ViT). All percentages default to 0, and with all of them
0 the score equals Energy (ReAct for the +react variants).
``.logits(features)`` returns the pruned (and clipped) layer's logits (Table 3, Fig. 4);
classification in the paper always uses the unpruned layer.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from opnp._validation import check_choice, check_percentage_pair, check_positive, to_numpy
from opnp.detectors import register_detector
from opnp.detectors.base import LinearDetector
from opnp.detectors.react import check_percentile_param
from opnp.pruning import PERCENTAGE_NAMES, feature_percentile, masked_weight, pruning_masks
from opnp.sensitivity import (
    NEURON_STATISTICS,
    REDUCTIONS,
    neuron_sensitivity,
    parameter_sensitivity,
)

#: The paper's OPNP search grid (section 4.1, ImageNet): each family member's default grid.
PAPER_GRID = {
    "weight_low": [0, 10, 20, 30, 40],
    "weight_high": [0, 0.1, 0.2, 0.5, 1],
    "neuron_low": [0, 5, 10, 20, 30],
    "neuron_high": [0, 1, 5, 10, 20],
}


def _paper_grid(kind: str) -> dict:
    """The paper grid's ``weight_*`` or ``neuron_*`` percentages."""
    return {k: v for k, v in PAPER_GRID.items() if k.startswith(kind)}


_COMMON = {
    "neuron_statistic": "mean",
    "temperature": 1.0,
    "reduction": "per_sample",
    "param_sensitivity": None,
}


class SensitivityPruning(LinearDetector):
    """Shared implementation of the OPNP family (see the module docstring)."""

    defaults: ClassVar[dict] = {
        "weight_low": 0.0,
        "weight_high": 0.0,
        "neuron_low": 0.0,
        "neuron_high": 0.0,
        **_COMMON,
    }
    uses_sensitivity = True
    needs_fit = True
    fit_needs: ClassVar[tuple[str, ...]] = ("sensitivity",)
    default_grid: ClassVar[dict] = PAPER_GRID

    def _check_params(self) -> None:
        p = self._params
        if "weight_low" in p:
            p["weight_low"], p["weight_high"] = check_percentage_pair(
                p["weight_low"], p["weight_high"], "weight_low", "weight_high"
            )
        if "neuron_low" in p:
            p["neuron_low"], p["neuron_high"] = check_percentage_pair(
                p["neuron_low"], p["neuron_high"], "neuron_low", "neuron_high"
            )
        check_choice(p["neuron_statistic"], "neuron_statistic", NEURON_STATISTICS)
        check_choice(p["reduction"], "reduction", REDUCTIONS)
        p["temperature"] = check_positive(p["temperature"], "temperature")
        if self.clips_at_react:
            p["react_percentile"] = check_percentile_param(
                p["react_percentile"], "react_percentile"
            )
        if p["param_sensitivity"] is not None:
            s = np.asarray(to_numpy(p["param_sensitivity"], "param_sensitivity"), np.float64)
            if s.shape != self.weight.shape:
                raise ValueError(
                    f"param_sensitivity must have the weight's shape {self.weight.shape}, "
                    f"got {s.shape}"
                )
            p["param_sensitivity"] = s

    def _requires_train_features(self) -> bool:
        return self._params["param_sensitivity"] is None or self.clips_at_react

    def _fit(self, train_features, train_labels) -> None:
        p = self._params
        if p["param_sensitivity"] is not None:
            sens = p["param_sensitivity"]
        else:
            sens = parameter_sensitivity(
                train_features,
                self.weight,
                self.bias,
                temperature=p["temperature"],
                reduction=p["reduction"],
                chunk_size=self.chunk_size,
            )
        self.param_sensitivity = sens
        self.neuron_sensitivity = neuron_sensitivity(sens, p["neuron_statistic"])
        self.weight_mask, self.neuron_mask = pruning_masks(
            sens,
            self.neuron_sensitivity,
            weight_low=p.get("weight_low", 0.0),
            weight_high=p.get("weight_high", 0.0),
            neuron_low=p.get("neuron_low", 0.0),
            neuron_high=p.get("neuron_high", 0.0),
        )
        self._w = masked_weight(self.weight, self.weight_mask, self.neuron_mask)
        if self.clips_at_react:
            self._clip = feature_percentile(train_features, p["react_percentile"])
            self.threshold = self._clip

    @classmethod
    def grid_scorer(
        cls, configs, *, weight, bias, sensitivity, statistic, train_features, features
    ):
        """Scores of every config of a pruning grid at once (:mod:`opnp.grid`): pruned
        logits = full logits minus the contribution of the pruned entries, updated
        incrementally across nested percentiles. ``features``: name -> (N, D) array.
        Returns ``params -> {name: scores}``, or None when the grid varies more than the
        four percentages or has one config (the per-config detector path then scores it).
        """
        if len(configs) < 2:
            return None
        from opnp.grid import GridPlan, score_pruning_grid

        temperatures = {float(c.get("temperature", 1.0)) for c in configs}
        react_percentiles = {c.get("react_percentile", 90.0) for c in configs}
        if len(temperatures) > 1 or len(react_percentiles) > 1:
            return None
        neurons = neuron_sensitivity(sensitivity, statistic)
        grid_configs = [{k: c[k] for k in PERCENTAGE_NAMES if k in c} for c in configs]
        plan = GridPlan(weight, bias, sensitivity, neurons, grid_configs)
        kwargs = {
            "score": cls.score_kind,
            "temperature": temperatures.pop(),
            "react_threshold": (
                feature_percentile(train_features, react_percentiles.pop())
                if cls.clips_at_react
                else None
            ),
            "plan": plan,
        }
        grid_args = (weight, bias, sensitivity, neurons, grid_configs)
        scores = {name: score_pruning_grid(f, *grid_args, **kwargs) for name, f in features.items()}
        return lambda i: {name: s[i] for name, s in scores.items()}


@register_detector("opnp")
class OPNP(SensitivityPruning):
    """Parameter and neuron pruning by sensitivity, Energy score."""

    label = "OPNP"


@register_detector("opp")
class OPP(SensitivityPruning):
    """Parameter pruning only (weight_low, weight_high)."""

    label = "OPP"
    default_grid = _paper_grid("weight")

    defaults = {"weight_low": 0.0, "weight_high": 0.0, **_COMMON}


@register_detector("onp")
class ONP(SensitivityPruning):
    """Neuron pruning only (neuron_low, neuron_high)."""

    label = "ONP"
    default_grid = _paper_grid("neuron")

    defaults = {"neuron_low": 0.0, "neuron_high": 0.0, **_COMMON}


@register_detector("opnp+react")
class OPNPReAct(SensitivityPruning):
    """ReAct clipping, then the OPNP-pruned layer, Energy score."""

    label = "OPNP+ReAct"
    fit_needs = ("sensitivity", "features")
    clips_at_react = True

    defaults = {**SensitivityPruning.defaults, "react_percentile": 90.0}


@register_detector("opp+react")
class OPPReAct(SensitivityPruning):
    """ReAct clipping, then the OPP-pruned layer (weight mask only), Energy score."""

    label = "OPP+ReAct"
    fit_needs = ("sensitivity", "features")
    clips_at_react = True
    default_grid = _paper_grid("weight")

    defaults = {"weight_low": 0.0, "weight_high": 0.0, **_COMMON, "react_percentile": 90.0}


@register_detector("opnp+msp")
class OPNPMSP(SensitivityPruning):
    """The OPNP-pruned layer scored by the maximum softmax probability."""

    label = "MSP+OPNP"

    score_kind = "msp"
