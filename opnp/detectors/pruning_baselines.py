"""Pruning baselines of Table 4, each scored with Energy of the pruned FC layer.

``percentage`` p in [0, 100) is the share pruned (0 prunes nothing).

- ``rpp`` random parameter pruning: exactly round(p/100 * C*D) weights, drawn uniformly
  without replacement with ``numpy.random.default_rng(seed)`` (``seed`` default 0), are
  zeroed. The workflow averages over seeds.
- ``rnp`` random neuron pruning: round(p/100 * D) neurons (columns of W), likewise.
- ``tpp`` targeted parameter pruning (low magnitude, Han et al.): weights with
  |W_cj| < percentile(|W|, p) over the whole matrix are zeroed (equal kept).
- ``tnp`` targeted neuron pruning (low feature norm): neuron j's statistic is its mean
  absolute training activation a_j = (1/N) sum_k |h_j(x_k)| (the per-neuron L1 feature
  norm, divided by N); neurons with a_j < percentile(a, p) are zeroed (equal kept).
"""

from __future__ import annotations

import numpy as np

from opnp._validation import check_percentage, iter_chunks
from opnp.detectors import register_detector
from opnp.detectors.base import LinearDetector
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


@register_detector("tnp")
class TNP(_PercentagePruning):
    label = "TNP"
    fit_needs = ("abs_mean",)

    def _requires_train_features(self) -> bool:
        return True

    def _fit(self, train_features, train_labels) -> None:
        acc = np.zeros(train_features.shape[1])
        for _, hc in iter_chunks(train_features, self.chunk_size, "train_features", np.float64):
            acc += np.abs(hc).sum(axis=0)
        self.neuron_norm = acc / train_features.shape[0]
        mask = tail_mask(self.neuron_norm, low=self._params["percentage"], name="neuron norm")
        self._set_masks(neuron_mask=mask)
