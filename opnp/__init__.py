"""OPNP: Optimal Parameter and Neuron Pruning for out-of-distribution detection
(Chen et al., NeurIPS 2023), with the post-hoc baselines, metrics and the workflow glue.

The numerical core (sensitivity, pruning, grid, metrics, detectors) needs only numpy and
scipy; the network-level parts (:mod:`opnp.nets`, ODIN's ``score_batch``) import torch when
they are used.
"""

from __future__ import annotations

__version__ = "0.1.0"

from opnp import metrics
from opnp.detectors import available_detectors, create_detector, register_detector
from opnp.grid import evaluate_pruning_grid, score_pruning_grid
from opnp.pruning import feature_percentile, masked_weight, pruning_masks
from opnp.scores import energy_score
from opnp.sensitivity import NEURON_STATISTICS, neuron_sensitivity, parameter_sensitivity

_LAZY = {
    "from_model": ("nets.model_api", "from_model"),
    "ModelDetector": ("nets.model_api", "ModelDetector"),
    "odin_scores": ("detectors.odin", "odin_scores"),
    "module_sensitivity": ("nets.network", "module_sensitivity"),
    "layer_pruning_masks": ("nets.network", "layer_pruning_masks"),
    "pruned_model": ("nets.network", "pruned_model"),
    "parameter_sensitivity_autograd": ("nets.network", "parameter_sensitivity_autograd"),
}


def __getattr__(name: str):
    """Torch-backed functions are imported on first use (the analysis env has no torch)."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'opnp' has no attribute {name!r}")


__all__ = [
    "NEURON_STATISTICS",
    "__version__",
    "available_detectors",
    "create_detector",
    "energy_score",
    "evaluate_pruning_grid",
    "feature_percentile",
    "masked_weight",
    "metrics",
    "neuron_sensitivity",
    "parameter_sensitivity",
    "pruning_masks",
    "register_detector",
    "score_pruning_grid",
    *_LAZY,
]
