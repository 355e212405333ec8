"""OPNP (paper section 3) and its variants: opp, onp, opnp, opnp+react, opp+react, opnp+msp.

1. Parameter sensitivity S (C, D) of the FC layer on the training features, Eq. 6
   (:func:`opnp.sensitivity.parameter_sensitivity`), or the precomputed matrix passed as
   ``param_sensitivity=`` (e.g. from a 1 / 5 / 20 % training subset, Table 8);
   neuron sensitivity s (D,) = ``neuron_statistic`` over classes (default "mean", Eq. 8).
2. Masks (:func:`opnp.pruning.opnp_masks`): ``weight_low`` / ``weight_high`` percent of
   the smallest / largest S pruned, ``neuron_low`` / ``neuron_high`` percent of the
   neurons with the smallest / largest s; a value equal to a threshold is kept.
3. Pruned layer f'(x) = (W * M_w)(h * m_n) + b, score T logsumexp(f'/T) (Energy, T =
   ``temperature`` = 1), or its max softmax for ``opnp+msp``.

``opp`` uses the weight mask only (accepts weight_low / weight_high), ``onp`` the neuron
mask only (neuron_low / neuron_high), ``opnp`` both. ``opnp+react`` first clips the
features at the ReAct threshold (``react_percentile``-th percentile, default 90, of all
training activations; the workflow passes ReAct's validation-selected percentile unless
the config fixes it, see config/README.md); sensitivities are computed on the unclipped
training features by default (the paper's section 3.2 computes them before any
clipping). ``opp+react`` is the same with the weight mask only (the
paper's "OPP+ReAct" of Table 2, ViT). All percentages default to 0, and with all of them
0 the score equals Energy (ReAct for the +react variants).
``.logits(features)`` returns the pruned (and clipped) layer's logits (Table 3, Fig. 4);
classification in the paper always uses the unpruned layer.

Where the paper admits more than one reading, a hyperparameter chooses it; each is
listed, with its values and default (today's reading), in :data:`READINGS`, and the
steps above are the defaults. What each value computes:

- ``threshold_scope`` (step 2, weight masks): "matrix" takes the percentiles over all
  C*D entries of S (the paper: "the entire sensitivity matrix"), "row" over each
  class's row (each class loses the same share of its weights). Neuron thresholds are
  over the D neurons either way.
- ``reduction`` (step 1): "per_sample" is Eq. 6, the mean of per-sample |dE/dW|;
  "batch" is |sum_k dE(x_k)/dW| / N, what the paper's implementation note
  (``energy_score.backward()`` on a batch) computes. Equal for nonnegative (ReLU)
  features (:mod:`opnp.sensitivity`).
- ``neuron_source`` (step 1, opnp / opnp+react / opnp+msp): the paper's "average
  sensitivity of weights that connected with the neuron" over all of S ("unpruned"),
  or over S with the weights the weight mask prunes set to 0 ("weight_pruned": the
  neurons are ranked within the parameter-pruned layer).
- ``sensitivity_features`` (the +react variants): S from the training features as they
  are ("unclipped") or clipped at the ReAct threshold ("clipped": the sensitivity of the
  deployed, clipped network). The clipped S depends on ``react_percentile``.

``reduction`` and ``sensitivity_features`` act where S is computed, in ``fit``; a
precomputed ``param_sensitivity`` is used as it is and must have been computed with the
same reading: ``SensitivityPruning.sensitivity_for`` (e.g.
``detector_class("opnp+react").sensitivity_for(train, W, b, sensitivity_features=
"clipped", react_percentile=p)``) computes it as ``fit`` would.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import numpy as np

from opnp._validation import check_choice, check_percentage_pair, check_positive, to_numpy
from opnp.detectors.base import LinearDetector
from opnp.detectors.pruning_baselines import TNP, TNP_STATISTICS
from opnp.detectors.react import check_percentile_param
from opnp.detectors.registry import register_detector
from opnp.pruning import (
    NEURON_SOURCES,
    PERCENTAGE_NAMES,
    THRESHOLD_SCOPES,
    feature_percentile,
    masked_weight,
    opnp_masks,
)
from opnp.sensitivity import NEURON_STATISTICS, REDUCTIONS, parameter_sensitivity

SENSITIVITY_FEATURES = ("unclipped", "clipped")


class Reading(NamedTuple):
    """One ambiguous step of the paper: the hyperparameter's ``values``, its ``default``
    (the reading the project used first) and what the choice is about."""

    values: tuple[str, ...]
    default: str
    description: str


#: Every reading where the paper is ambiguous: hyperparameter -> :class:`Reading`. The
#: methods that take one are those whose ``defaults`` name it (:func:`reading_methods`);
#: the values are defined in this module's docstring and, for ``statistic``, in
#: :mod:`opnp.detectors.pruning_baselines`.
READINGS: dict[str, Reading] = {
    "threshold_scope": Reading(
        THRESHOLD_SCOPES,
        "matrix",
        "weight thresholds over the entire C x D sensitivity matrix, or per class row",
    ),
    "reduction": Reading(
        REDUCTIONS,
        "per_sample",
        "S as the mean of per-sample |dE/dW| (Eq. 6), or |batch gradient| / N "
        "(the implementation note's energy_score.backward())",
    ),
    "neuron_source": Reading(
        NEURON_SOURCES,
        "unpruned",
        "neuron sensitivity from the unpruned S, or from S after the weight mask",
    ),
    "sensitivity_features": Reading(
        SENSITIVITY_FEATURES,
        "unclipped",
        "OPNP+ReAct's S from the unclipped training features, or from the ReAct-clipped "
        "ones (the deployed network)",
    ),
    "statistic": Reading(
        tuple(TNP_STATISTICS),
        TNP.defaults["statistic"],
        "TNP's neuron norm: mean |activation| (L1 / N), activation L2 norm, or the L2 norm "
        "of the neuron's FC weights (targeted dropout)",
    ),
}


def reading_methods(option: str) -> list[str]:
    """The registered methods that take the reading ``option`` (a key of READINGS)."""
    from opnp.detectors.registry import available_detectors, detector_class

    check_choice(option, "option", READINGS)
    return [m for m in available_detectors() if option in detector_class(m).defaults]


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
    "reduction": READINGS["reduction"].default,
    "param_sensitivity": None,
}
# The readings of the weight mask (every member with weight percentages), of the neuron
# sensitivity after it (members with both masks) and of the +react variants' S.
_WEIGHT_READINGS = {"threshold_scope": READINGS["threshold_scope"].default}
_BOTH_READINGS = {**_WEIGHT_READINGS, "neuron_source": READINGS["neuron_source"].default}
_REACT = {
    "react_percentile": 90.0,
    "sensitivity_features": READINGS["sensitivity_features"].default,
}


def reading_value(params, option: str) -> str:
    """The value of reading ``option`` in ``params`` (its default where the method does
    not take it: e.g. opp has no neuron mask, so its neuron_source is moot)."""
    return params.get(option, READINGS[option].default)


class SensitivityPruning(LinearDetector):
    """Shared implementation of the OPNP family (see the module docstring)."""

    defaults: ClassVar[dict] = {
        "weight_low": 0.0,
        "weight_high": 0.0,
        "neuron_low": 0.0,
        "neuron_high": 0.0,
        **_COMMON,
        **_BOTH_READINGS,
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
        for option in READINGS.keys() & p.keys():
            check_choice(p[option], option, READINGS[option].values)
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

    @classmethod
    def fit_needs_for(cls, params) -> tuple[str, ...]:
        # The clipped S needs the ReAct threshold first: no streamed sensitivity.
        if cls.clips_at_react and reading_value(params, "sensitivity_features") == "clipped":
            return ("features",)
        return cls.fit_needs

    @classmethod
    def sensitivity_depends_on(cls, params) -> tuple[str, ...]:
        """The hyperparameters that change S as ``fit`` computes it (a search that
        reuses one S cannot vary them): with the clipped S, the ReAct percentile too."""
        if not cls.clips_at_react:
            return ("temperature", "reduction")
        clipped = reading_value(params, "sensitivity_features") == "clipped"
        return ("temperature", "reduction", "sensitivity_features") + (
            ("react_percentile",) if clipped else ()
        )

    def _sensitivity(self, train_features, rows=None) -> np.ndarray:
        """S of ``train_features`` (``rows`` of them) by this detector's readings; the
        clipped S clips at ``self._clip`` (set before)."""
        p = self._params
        clipped = self.clips_at_react and reading_value(p, "sensitivity_features") == "clipped"
        return parameter_sensitivity(
            train_features,
            self.weight,
            self.bias,
            temperature=p["temperature"],
            reduction=p["reduction"],
            chunk_size=self.chunk_size,
            rows=rows,
            clip=self._clip if clipped else None,
        )

    @classmethod
    def sensitivity_for(cls, train_features, weight, bias=None, rows=None, **params):
        """S (C, D) exactly as ``fit`` computes it for ``params`` (``temperature``,
        ``reduction`` and, for the +react variants, ``sensitivity_features`` /
        ``react_percentile``): what to pass as ``param_sensitivity`` (or as the grid's
        ``sensitivity``) for those readings. ``rows``: a training subset, as in
        :func:`opnp.sensitivity.parameter_sensitivity`; the ReAct threshold stays the
        percentile of all ``train_features``, as the detector's is."""
        det = cls(weight=weight, bias=bias, **params)
        if det._params["param_sensitivity"] is not None:
            raise ValueError("sensitivity_for computes param_sensitivity: do not pass it")
        h = det._features(train_features, "train_features")
        if det.clips_at_react:
            det._clip = feature_percentile(h, det._params["react_percentile"])
        return det._sensitivity(h, rows)

    def _fit(self, train_features, train_labels) -> None:
        p = self._params
        if self.clips_at_react:
            self._clip = feature_percentile(train_features, p["react_percentile"])
            self.threshold = self._clip
        if p["param_sensitivity"] is not None:
            sens = p["param_sensitivity"]
        else:
            sens = self._sensitivity(train_features)
        self.param_sensitivity = sens
        self.weight_mask, self.neuron_mask, self.neuron_sensitivity = opnp_masks(
            sens,
            p["neuron_statistic"],
            **{k: p.get(k, 0.0) for k in PERCENTAGE_NAMES},
            threshold_scope=reading_value(p, "threshold_scope"),
            neuron_source=reading_value(p, "neuron_source"),
        )
        self._w = masked_weight(self.weight, self.weight_mask, self.neuron_mask)

    @classmethod
    def grid_scorer(
        cls, configs, *, weight, bias, sensitivity, statistic, train_features, features
    ):
        """Scores of every config of a pruning grid at once (:mod:`opnp.grid`): pruned
        logits = full logits minus the contribution of the pruned entries, updated
        incrementally across nested percentiles. ``features``: name -> (N, D) array.
        ``sensitivity`` is S as given (of the configs' ``reduction`` and
        ``sensitivity_features``, like a detector's ``param_sensitivity``). Returns
        ``params -> {name: scores}``, or None when the grid varies more than the four
        percentages or has one config (the per-config detector path then scores it).

        ``threshold_scope`` goes to the grid's weight groups. With
        ``neuron_source="weight_pruned"`` the neuron sensitivity depends on the weight
        percentages, so each (weight_low, weight_high) pair gets its own grid over the
        neuron percentages, on the weight with that pair's mask applied: exact, at one
        full-layer product per pair and chunk instead of about one per weight group.
        """
        if len(configs) < 2:
            return None
        from opnp.grid import score_pruning_grid
        from opnp.grid_plan import GridPlan

        options = ("threshold_scope", "neuron_source")
        settings = {
            (
                float(c.get("temperature", 1.0)),
                c.get("react_percentile", 90.0),
                *(reading_value(c, o) for o in options),
            )
            for c in configs
        }
        if len(settings) > 1:
            return None
        temperature, react_percentile, scope, source = settings.pop()
        check_choice(scope, "threshold_scope", READINGS["threshold_scope"].values)
        check_choice(source, "neuron_source", READINGS["neuron_source"].values)
        kwargs = {
            "score": cls.score_kind,
            "temperature": temperature,
            "react_threshold": (
                feature_percentile(train_features, react_percentile) if cls.clips_at_react else None
            ),
        }
        grid_configs = [{k: c[k] for k in PERCENTAGE_NAMES if k in c} for c in configs]
        # (masked weight, neuron sensitivity, config indices, their configs) per grid
        if source == "unpruned":
            _, _, neurons = opnp_masks(sensitivity, statistic)
            grids = [(weight, neurons, list(range(len(configs))), grid_configs)]
        else:
            cells: dict[tuple, list[int]] = {}
            for i, c in enumerate(grid_configs):
                cells.setdefault((c.get("weight_low", 0), c.get("weight_high", 0)), []).append(i)
            grids = []
            for (low, high), idx in cells.items():
                kept, _, neurons = opnp_masks(
                    sensitivity, statistic, low, high, threshold_scope=scope, neuron_source=source
                )
                neuron_only = [
                    {
                        k: grid_configs[i][k]
                        for k in ("neuron_low", "neuron_high")
                        if k in grid_configs[i]
                    }
                    for i in idx
                ]
                grids.append((masked_weight(weight, kept), neurons, idx, neuron_only))
        scores: dict[str, list] = {name: [None] * len(configs) for name in features}
        for w, neurons, idx, sub in grids:
            plan = GridPlan(w, bias, sensitivity, neurons, sub, threshold_scope=scope)
            grid_args = (w, bias, sensitivity, neurons, sub)
            for name, f in features.items():
                got = score_pruning_grid(f, *grid_args, plan=plan, **kwargs)
                for j, i in enumerate(idx):
                    scores[name][i] = got[j]
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

    defaults = {"weight_low": 0.0, "weight_high": 0.0, **_COMMON, **_WEIGHT_READINGS}


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

    defaults = {**SensitivityPruning.defaults, **_REACT}


@register_detector("opp+react")
class OPPReAct(SensitivityPruning):
    """ReAct clipping, then the OPP-pruned layer (weight mask only), Energy score."""

    label = "OPP+ReAct"
    fit_needs = ("sensitivity", "features")
    clips_at_react = True
    default_grid = _paper_grid("weight")

    defaults = {"weight_low": 0.0, "weight_high": 0.0, **_COMMON, **_WEIGHT_READINGS, **_REACT}


@register_detector("opnp+msp")
class OPNPMSP(SensitivityPruning):
    """The OPNP-pruned layer scored by the maximum softmax probability."""

    label = "MSP+OPNP"

    score_kind = "msp"
