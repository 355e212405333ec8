"""The interface every OOD detector shares (in the spirit of pytorch-ood).

A detector is built with the FC head it needs (``weight`` (C, D), ``bias`` (C,); some
methods need neither, e.g. KNN and Mahalanobis) and its hyperparameters as keyword
arguments, fitted on training features, then scores features::

    det = create_detector("react", weight=W, bias=b, percentile=90).fit(train_h)
    scores = det.score(test_h)          # float64 (N,), higher = in-distribution

``det.params`` is the dict of hyperparameters (JSON-serialisable: what a results row
records). Arrays passed as hyperparameters (e.g. a precomputed ``param_sensitivity``)
are not part of ``params``. Scoring streams the features in chunks of ``chunk_size``
rows, so memory-mapped test sets of any size work.

``compute_dtype="float32"`` (constructor; linear detectors) computes in float32 from
the features to the score (the precision of pytorch-ood and most OOD code): float32
chunks (no copy of float32 features), float32 matrix products and the score's
reduction in float32, returned as float64; about twice the speed of the default
float64 (exact to rounding), scores within ~1e-6 relative of it.
Neither it nor ``device`` is a hyperparameter (not in ``params``).

``device=`` (constructor; e.g. ``"cuda"``, :mod:`opnp.backend`) scores with torch on
that device, and a CUDA tensor passed to ``score`` is scored on its device: float64
there, equal to the numpy path to 1e-10 relative (tested on CPU torch; KNN's float32
inner products to 1e-6). Fitting stays numpy. Detectors without a torch scorer (LINe)
score on the CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from opnp._validation import (
    DEFAULT_CHUNK_ROWS,
    check_chunk_size,
    check_features,
    check_labels,
    check_linear,
    iter_chunks,
)
from opnp.scores import score_logits, score_logits_torch  # noqa: F401 - re-exported


class Detector:
    """Base class: subclasses set ``name``, ``defaults`` and implement ``_score_chunk``.

    ``defaults`` maps every accepted hyperparameter to its default; an unknown keyword
    raises ValueError naming it. ``needs_head`` says whether weight and bias are
    required; ``needs_labels`` whether ``fit`` requires ``train_labels``;
    ``needs_fit`` whether ``score`` may be called without ``fit``.

    What the workflow, the tables and the model-level API need to know about a method is
    declared here, on its class, and nowhere else:

    - ``label``: the method's name in the paper's tables;
    - ``uses_sensitivity``: its hyperparameters are percentages of the OPNP sensitivity
      masks (it takes ``param_sensitivity=``, the workflow passes the cached matrix);
    - ``seeded``: its result depends on a random draw (it takes ``seed=``; the workflow
      runs it once per configured seed);
    - ``needs_network``: it runs the network on images, not cached features (ODIN; a
      :class:`NetworkDetector`): the workflow gives it the network-method rules, the
      model-level API and :func:`opnp.nets.export.detector_module` call its
      ``score_batch(model, inputs, std)`` instead of ``score``;
    - ``clips_at_react``: it clips the features at ReAct's threshold first (its
      ``react_percentile`` is ReAct's validation-selected one unless the config fixes it);
    - ``fit_needs``: the training statistics ``fit`` uses (what the model-level API
      streams): "features" (the rows themselves), "sensitivity", "mean", "abs_mean",
      "class_means", "covariance"; empty when nothing is fitted (``fit_needs_for(params)``
      where a hyperparameter changes it);
    - ``default_grid``: the hyperparameter grid searched when none is given.
    """

    name: ClassVar[str] = "detector"
    label: ClassVar[str] = ""
    defaults: ClassVar[Mapping[str, Any]] = {}
    needs_head: ClassVar[bool] = True
    needs_labels: ClassVar[bool] = False
    needs_fit: ClassVar[bool] = False
    uses_sensitivity: ClassVar[bool] = False
    seeded: ClassVar[bool] = False
    needs_network: ClassVar[bool] = False
    clips_at_react: ClassVar[bool] = False
    fit_needs: ClassVar[tuple[str, ...]] = ()
    default_grid: ClassVar[Mapping[str, list]] = {}

    def __init__(
        self,
        weight=None,
        bias=None,
        chunk_size: int | None = None,
        device=None,
        compute_dtype: str = "float64",
        **params,
    ):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"{self.name}: unknown hyperparameter(s) {unknown}; "
                f"accepted: {sorted(self.defaults) or 'none'}"
            )
        self._params = {**self.defaults, **params}
        self.chunk_size = check_chunk_size(chunk_size) if chunk_size else DEFAULT_CHUNK_ROWS
        if weight is None and bias is not None:
            raise ValueError(f"{self.name}: bias given without weight")
        if weight is not None:
            self.weight, self.bias = check_linear(weight, bias)
        elif self.needs_head:
            raise ValueError(f"{self.name} needs the FC layer: pass weight= (C, D) and bias= (C,)")
        else:
            self.weight = self.bias = None
        self._fitted = False
        self.device = device
        if compute_dtype not in ("float64", "float32"):
            raise ValueError(f"compute_dtype must be 'float64' or 'float32', got {compute_dtype!r}")
        self.compute_dtype = compute_dtype
        self._device_cache: dict = {}
        self._check_params()

    @classmethod
    def fit_needs_for(cls, params: Mapping[str, Any]) -> tuple[str, ...]:
        """``fit_needs`` of this method with hyperparameters ``params`` (a subclass whose
        options change what ``fit`` uses overrides it)."""
        return cls.fit_needs

    # -- hyperparameters -------------------------------------------------------------
    def _check_params(self) -> None:
        """Validate ``self._params`` (ValueError naming the bad one); subclasses extend."""

    @property
    def params(self) -> dict:
        """Hyperparameters as plain JSON-serialisable values (arrays excluded)."""
        out = {}
        for key, value in self._params.items():
            if value is None or isinstance(value, np.ndarray) or hasattr(value, "detach"):
                continue
            out[key] = value.item() if isinstance(value, np.generic) else value
        return out

    # -- fit / score -----------------------------------------------------------------
    @property
    def dim(self) -> int | None:
        return None if self.weight is None else self.weight.shape[1]

    def _features(self, features, name: str = "features") -> np.ndarray:
        return check_features(features, name, dim=self.dim)

    def fit(self, train_features=None, train_labels=None) -> Detector:
        """Fit on training features (N, D) (and integer labels where the method needs
        them); returns ``self``."""
        if train_features is None:
            if self._requires_train_features():
                raise ValueError(f"{self.name}.fit needs train_features (N, D), got None")
            h, y = None, None
        else:
            h = self._features(train_features, "train_features")
            y = None
            if train_labels is not None:
                y = check_labels(train_labels, h.shape[0])
            elif self.needs_labels:
                raise ValueError(f"{self.name}.fit needs train_labels (class of each row)")
        self._fit(h, y)
        self._fitted = True
        return self

    def _requires_train_features(self) -> bool:
        return self.needs_fit

    def _fit(self, train_features: np.ndarray | None, train_labels: np.ndarray | None) -> None:
        """Subclass hook; the default has nothing to fit."""

    def _check_fitted(self) -> None:
        if self.needs_fit and not self._fitted:
            raise ValueError(f"{self.name}: call fit(train_features) before score()")

    def score(self, features) -> np.ndarray:
        """ID-confidence scores (N,) float64, higher = in-distribution."""
        self._check_fitted()
        from opnp.backend import torch_device

        dev = torch_device(features, self.device)
        if dev is not None and self._has_torch_scorer():
            return self._score_torch(features, dev)
        h = self._features(features)
        out = np.empty(h.shape[0], dtype=np.float64)
        for start, hc in iter_chunks(h, self.chunk_size, "features", dtype=self._chunk_dtype):
            out[start : start + len(hc)] = self._score_chunk(hc)
        return out

    @property
    def _chunk_dtype(self):
        """The dtype ``_score_chunk`` computes in: float64, or float32 for a linear
        detector with ``compute_dtype="float32"``."""
        return np.float32 if self.compute_dtype == "float32" else np.float64

    def _score_chunk(self, h: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- torch scoring (opnp.backend) ------------------------------------------------
    _score_chunk_torch = None  # subclasses with a torch scorer define it

    def _has_torch_scorer(self) -> bool:
        return self._score_chunk_torch is not None

    def _expected_dim(self) -> int | None:
        """Columns the scored features must have (None: any)."""
        return self.dim

    def _on(self, device, name: str, value):
        """``value`` (a numpy array fixed after fit) as a float64 tensor on ``device``,
        cached per (name, device)."""
        from opnp.backend import as_tensor

        key = (name, str(device))
        if key not in self._device_cache:
            self._device_cache[key] = as_tensor(value, device)
        return self._device_cache[key]

    def _score_torch(self, features, device) -> np.ndarray:
        import torch

        from opnp.backend import check_tensor_features, device_chunks, is_tensor, to_numpy64

        if is_tensor(features):
            h = check_tensor_features(features, "features", dim=self._expected_dim())
        else:
            h = self._features(features)
        parts = []
        with torch.no_grad():
            for _, hc in device_chunks(h, self.chunk_size, "features", device):
                parts.append(self._score_chunk_torch(hc))
        return to_numpy64(torch.cat(parts))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


class NetworkDetector(Detector):
    """A detector that runs the network on the input images (``needs_network``): it
    scores a batch with the model, ``score_batch(model, inputs, std)``, never cached
    features. It has no FC head and nothing to fit; its hyperparameters are checked by
    ``_check_params`` as for every detector, so a config is checked without torch.

    The workflow runs every such method through the rules select_network_method and
    evaluate_network_method, and :func:`opnp.from_model` scores with ``score_batch``:
    a new network-level method is a subclass registered with ``@register_detector``.
    """

    needs_head: ClassVar[bool] = False
    needs_network: ClassVar[bool] = True

    def score(self, features) -> np.ndarray:
        raise ValueError(
            f"{self.name} runs the network on the input images, so it cannot score cached "
            f"features: use score_batch(model, inputs, std) or "
            f"opnp.from_model(model, {self.name!r})"
        )

    def score_batch(self, model, inputs, std=1.0) -> np.ndarray:  # pragma: no cover
        """Scores (B,) float64 of a batch of images (B, C, ...) under ``model`` (a torch
        module, in eval mode while scoring); ``std``: the per-channel standard deviation
        of the input normalisation (a perturbation step in input units divides by it)."""
        raise NotImplementedError


class LinearDetector(Detector):
    """A detector that scores the logits of a (possibly pruned / clipped) FC layer.

    Subclasses set ``self._w`` (the effective (C, D) weight) and ``self._clip`` in
    ``_fit`` (or ``__init__``) and pick the score of the logits with ``score_kind``:
    ``energy`` (T logsumexp(f / T)), ``msp`` (max softmax) or ``maxlogit``.
    """

    score_kind: ClassVar[str] = "energy"

    def __init__(self, weight=None, bias=None, **kwargs):
        super().__init__(weight, bias, **kwargs)
        self._w = self.weight
        self._clip: float | None = None

    @property
    def temperature(self) -> float:
        return float(self._params.get("temperature", 1.0))

    def _logits_chunk(self, h: np.ndarray) -> np.ndarray:
        if self._clip is not None:
            # float(): a Python float keeps a float32 chunk float32 (NEP 50).
            h = np.minimum(h, float(self._clip))
        return self._add_bias(self._times_weight_t(h, self._w))

    def _add_bias(self, logits: np.ndarray) -> np.ndarray:
        """``logits += bias`` in the logits' dtype (a cached float32 copy for float32)."""
        if logits.dtype == np.float32:
            if "b32" not in self._device_cache:
                self._device_cache["b32"] = self.bias.astype(np.float32)
            logits += self._device_cache["b32"]
        else:
            logits += self.bias
        return logits

    def _times_weight_t(self, h: np.ndarray, w: np.ndarray) -> np.ndarray:
        """``h @ w.T`` in ``compute_dtype`` (float32: a float32 result)."""
        if self.compute_dtype == "float64":
            return h @ w.T
        cached = self._device_cache.get("w32")
        if cached is None or cached[0] is not w:  # the effective weight is set by fit
            # not transposed: BLAS reads w.T from the (C, D) copy without a second copy
            cached = (w, w.astype(np.float32))
            self._device_cache["w32"] = cached
        return h.astype(np.float32, copy=False) @ cached[1].T

    def logits(self, features) -> np.ndarray:
        """Logits (N, C) float64 of this detector's FC layer (pruned / clipped)."""
        self._check_fitted()
        h = self._features(features)
        out = np.empty((h.shape[0], self.weight.shape[0]), dtype=np.float64)
        for start, hc in iter_chunks(h, self.chunk_size, "features", dtype=self._chunk_dtype):
            out[start : start + len(hc)] = self._logits_chunk(hc)
        return out

    def _score_chunk(self, h: np.ndarray) -> np.ndarray:
        return score_logits(self._logits_chunk(h), self.score_kind, self.temperature)

    def _logits_chunk_torch(self, h):
        if self._clip is not None:
            h = h.clamp(max=float(self._clip))
        return h @ self._on(h.device, "w", self._w).T + self._on(h.device, "b", self.bias)

    def _score_chunk_torch(self, h):
        return score_logits_torch(self._logits_chunk_torch(h), self.score_kind, self.temperature)

    def _has_torch_scorer(self) -> bool:
        # A subclass that changes the numpy logits or score has its own torch version, or
        # none (then it scores with numpy).
        cls, base = type(self), LinearDetector
        score_ok = (
            cls._score_chunk is base._score_chunk
            or cls._score_chunk_torch is not base._score_chunk_torch
        )
        logits_ok = (
            cls._logits_chunk is base._logits_chunk
            or cls._logits_chunk_torch is not base._logits_chunk_torch
        )
        return score_ok and logits_ok


def mean_features(features: np.ndarray, chunk_size: int = DEFAULT_CHUNK_ROWS) -> np.ndarray:
    """Column means (D,) in float64, streamed over chunks."""
    acc = np.zeros(features.shape[1])
    for _, hc in iter_chunks(features, chunk_size, "train_features", dtype=np.float64):
        acc += hc.sum(axis=0)
    return acc / features.shape[0]
