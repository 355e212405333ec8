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

_REGISTRY: dict[str, type[Detector]] = {}


def register_detector(name: str):
    """Class decorator adding a Detector subclass to the registry under ``name``."""

    def wrap(cls: type[Detector]) -> type[Detector]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"detector name {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def available_detectors() -> list[str]:
    """Names accepted by :func:`create_detector`, sorted."""
    return sorted(_REGISTRY)


def detector_class(name: str) -> type[Detector]:
    """The class registered under ``name`` (ValueError listing the names if unknown)."""
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown detector name {name!r}; available: {', '.join(available_detectors())}"
        )
    return _REGISTRY[name]


def methods_where(attribute: str) -> list[str]:
    """Registered names whose class sets ``attribute`` true, sorted (e.g. "seeded")."""
    return [name for name in available_detectors() if getattr(_REGISTRY[name], attribute)]


def create_detector(name: str, **kwargs) -> Detector:
    """Build the detector ``name`` with ``weight=``, ``bias=`` and its hyperparameters."""
    return detector_class(name)(**kwargs)


# Importing the modules registers their detectors (numpy only; torch is never needed).
from opnp.detectors import (  # noqa: E402
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
