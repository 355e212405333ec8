"""Pruning baselines of Table 4, each scored with Energy of the pruned FC layer.

``percentage`` p in [0, 100) is the share pruned (0 prunes nothing).

- ``rpp`` random parameter pruning: exactly round(p/100 * C*D) weights, drawn uniformly
  without replacement with ``numpy.random.default_rng(seed)`` (``seed`` default 0), are
  zeroed. The workflow averages over seeds.
- ``rnp`` random neuron pruning: round(p/100 * D) neurons (columns of W), likewise.
- ``tpp`` targeted parameter pruning (low magnitude, Han et al.): weights with
  |W_cj| < percentile(|W|, p) over the whole matrix are zeroed (equal kept).
- ``tnp`` targeted neuron pruning: neurons with a_j < percentile(a, p) are zeroed (equal
  kept). The paper says it "prunes neurons with low feature norm" and cites targeted
  dropout (Gomez et al.), which ranks units by their weights' L2 norm; ``statistic``
  chooses the reading (listed in opnp.detectors.optimal_pruning.READINGS):

  - ``"mean_abs_activation"`` (default): the mean absolute training activation
    a_j = (1/N) sum_k |h_j(x_k)| (the per-neuron L1 feature norm, divided by N). With
    OPNP's "mean" neuron statistic and per-sample sensitivity, ONP's s_j = a_j / C, so
    ONP's low side prunes exactly these neurons (docs/methods.md);
  - ``"activation_l2"``: a_j = sqrt((1/N) sum_k h_j(x_k)^2) (the L2 norm over the
    training samples, divided by sqrt(N): the same ranking);
  - ``"weight_l2"``: a_j = ||W[:, j]||_2, the L2 norm of neuron j's outgoing FC weights
    (the targeted-dropout reading, Gomez et al.; needs no training features).
"""

from __future__ import annotations

import numpy as np

from opnp._validation import check_choice, check_percentage, iter_chunks
from opnp.detectors.base import LinearDetector
from opnp.detectors.registry import register_detector
from opnp.pruning import masked_weight, tail_mask


class _PercentagePruning(LinearDetector):
    defaults = {"percentage": 0.0}
    default_grid = {"percentage": [1, 5, 10, 20, 40]}
    needs_fit = True  # the masks are drawn / computed in fit

    def _requires_train_features(self) -> bool:
        return False

    def _check_params(self) -> None:
        self._params["percentage"] = check_percentage(self._params["percentage"], "percentage")
        if "seed" in self._params:
            seed = self._params["seed"]
            if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
                raise ValueError(f"seed must be an integer, got {seed!r}")
            self._params["seed"] = int(seed)

    def _set_masks(self, weight_mask=None, neuron_mask=None) -> None:
        self.weight_mask = weight_mask
        self.neuron_mask = neuron_mask
        self._w = masked_weight(self.weight, weight_mask, neuron_mask)

    def _count(self, total: int) -> int:
        return int(round(self._params["percentage"] / 100.0 * total))


@register_detector("rpp")
class RPP(_PercentagePruning):
    label = "RPP"
    seeded = True
    defaults = {"percentage": 0.0, "seed": 0}

    def _fit(self, train_features, train_labels) -> None:
        size = self.weight.size
        rng = np.random.default_rng(self._params["seed"])
        mask = np.ones(size, dtype=bool)
        mask[rng.choice(size, size=self._count(size), replace=False)] = False
        self._set_masks(weight_mask=mask.reshape(self.weight.shape))


@register_detector("rnp")
class RNP(_PercentagePruning):
    label = "RNP"
    seeded = True
    defaults = {"percentage": 0.0, "seed": 0}

    def _fit(self, train_features, train_labels) -> None:
        d = self.weight.shape[1]
        rng = np.random.default_rng(self._params["seed"])
        mask = np.ones(d, dtype=bool)
        mask[rng.choice(d, size=self._count(d), replace=False)] = False
        self._set_masks(neuron_mask=mask)


@register_detector("tpp")
class TPP(_PercentagePruning):
    label = "TPP"

    def _fit(self, train_features, train_labels) -> None:
        mask = tail_mask(np.abs(self.weight), low=self._params["percentage"], name="|weight|")
        self._set_masks(weight_mask=mask)


#: TNP's neuron statistics (module docstring) -> the training statistics its fit needs
#: (``fit_needs``): the mean |h| streams as one (D,) mean, the weight norm needs none.
TNP_STATISTICS = {
    "mean_abs_activation": ("abs_mean",),
    "activation_l2": ("features",),
    "weight_l2": (),
}


@register_detector("tnp")
class TNP(_PercentagePruning):
    """Targeted neuron pruning: the ``percentage`` % of neurons with the smallest
    ``statistic`` (module docstring) are zeroed."""

    label = "TNP"
    fit_needs = TNP_STATISTICS["mean_abs_activation"]
    defaults = {**_PercentagePruning.defaults, "statistic": "mean_abs_activation"}

    def _check_params(self) -> None:
        super()._check_params()
        check_choice(self._params["statistic"], "statistic", TNP_STATISTICS)

    @classmethod
    def fit_needs_for(cls, params) -> tuple[str, ...]:
        return TNP_STATISTICS[params.get("statistic", cls.defaults["statistic"])]

    def _requires_train_features(self) -> bool:
        return self._params["statistic"] != "weight_l2"

    def _fit(self, train_features, train_labels) -> None:
        statistic = self._params["statistic"]
        if statistic == "weight_l2":
            self.neuron_norm = np.sqrt(np.sum(self.weight * self.weight, axis=0))
        else:
            acc = np.zeros(train_features.shape[1])
            for _, hc in iter_chunks(train_features, self.chunk_size, "train_features", np.float64):
                acc += (np.abs(hc) if statistic == "mean_abs_activation" else hc * hc).sum(axis=0)
            self.neuron_norm = acc / train_features.shape[0]
            if statistic == "activation_l2":
                self.neuron_norm = np.sqrt(self.neuron_norm)
        mask = tail_mask(self.neuron_norm, low=self._params["percentage"], name="neuron norm")
        self._set_masks(neuron_mask=mask)
