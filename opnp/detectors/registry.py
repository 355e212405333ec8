"""The registry of OOD detectors: each detector module registers its class with
:func:`register_detector`; everything else looks classes up by name. Importing
:mod:`opnp.detectors` (which any import of this module does first) imports every
detector module, so the registry is complete whenever it is read."""

from __future__ import annotations

from opnp.detectors.base import Detector

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


__all__ = [
    "available_detectors",
    "create_detector",
    "detector_class",
    "methods_where",
    "register_detector",
]
