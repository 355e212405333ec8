"""Registry of OOD detectors: ``create_detector(name, weight=..., bias=..., **params)``.

Names (see each module's docstring for the definition and every choice made):
msp, maxlogit, energy (logits.py); mahalanobis; react; dice, dice+react (dice.py); ash;
knn; gradnorm; line; opp, onp, opnp, opnp+react, opp+react, opnp+msp (optimal_pruning.py);
rpp, rnp, tpp, tnp (pruning_baselines.py). ODIN needs the network: :mod:`opnp.nets.odin`.
"""

from __future__ import annotations

from opnp.detectors.base import Detector, LinearDetector, score_logits
from opnp.detectors.registry import (
    available_detectors,
    create_detector,
    detector_class,
    methods_where,
    register_detector,
)

# isort: split
# Importing the modules registers their detectors (numpy only; torch is never needed).
# After the registry's names: odin.py imports register_detector from this package.
from opnp.detectors import (
    ash,
    dice,
    gradnorm,
    knn,
    line,
    logits,
    mahalanobis,
    odin,
    optimal_pruning,
    pruning_baselines,
    react,
)

__all__ = [
    "Detector",
    "LinearDetector",
    "ash",
    "available_detectors",
    "create_detector",
    "dice",
    "gradnorm",
    "knn",
    "line",
    "logits",
    "detector_class",
    "mahalanobis",
    "methods_where",
    "odin",
    "optimal_pruning",
    "pruning_baselines",
    "react",
    "register_detector",
    "score_logits",
]
