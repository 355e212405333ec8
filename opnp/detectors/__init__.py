"""Registry of OOD detectors: ``create_detector(name, weight=..., bias=..., **params)``.

Names (see each module's docstring for the definition and every choice made):
msp, maxlogit, energy (logits.py); mahalanobis; react; dice, dice+react (dice.py); ash;
knn; gradnorm; line; opp, onp, opnp, opnp+react, opp+react, opnp+msp (optimal_pruning.py);
rpp, rnp, tpp, tnp (pruning_baselines.py); odin, which runs the network on images
(``needs_network``, :class:`~opnp.detectors.base.NetworkDetector`).

Detectors defined outside the package register themselves the same way; the modules
named in the environment variable ``OPNP_DETECTOR_PLUGINS`` (comma-separated, importable
from ``sys.path``) are imported right after the built-in ones, in every process that
imports the registry: the Snakefile and each workflow job (jobs inherit the
environment), so a plugin's method can be named under ``methods`` in a config.
"""

from __future__ import annotations

from opnp.detectors.base import Detector, LinearDetector, NetworkDetector, score_logits
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

#: The environment variable naming detector plugin modules (see the module docstring).
PLUGINS_VARIABLE = "OPNP_DETECTOR_PLUGINS"


def _import_plugins() -> None:
    import importlib
    import os

    for module in os.environ.get(PLUGINS_VARIABLE, "").split(","):
        if module.strip():
            importlib.import_module(module.strip())


_import_plugins()

__all__ = [
    "Detector",
    "LinearDetector",
    "NetworkDetector",
    "PLUGINS_VARIABLE",
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
