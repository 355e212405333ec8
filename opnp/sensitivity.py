"""Parameter and neuron sensitivity of the last fully connected layer (paper Eq. 6, 8).

Notation (paper section 3, Eq. 2-3): features h(x) in R^D, FC weight W (C, D), bias b (C,), logits
f = W h + b, energy E(x) = -T logsumexp(f(x) / T) with temperature T (default 1).

Parameter sensitivity, Eq. 6: S_cj = (1/N) sum_k |dE(x_k)/dW_cj| over N training
samples: the mean of per-sample absolute gradients. For the FC layer
dE/dW_cj = -p_c(x) h_j(x) with p = softmax(f / T), so |dE/dW_cj| = p_c |h_j| and

    S = P^T |H| / N          (P: (N, C) probabilities, H: (N, D) features),

one matrix product over cached features. ``reduction="batch"`` instead replicates an
implementation that back-propagates the summed energy of a batch,
S_batch = |P^T H| / N. For nonnegative features (ResNet, after ReLU) the two are equal;
for signed features (ViT pre-logits) they are not, and per-sample is the paper's Eq. 6.

The closed form is checked against autograd
(:func:`opnp.nets.network.parameter_sensitivity_autograd`, per-sample
``energy.backward()`` through ``torch.func``) in tests/test_sensitivity.py and
perf/bench_sensitivity.py. This module imports without torch (the core does not import
:mod:`opnp.nets`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from opnp._validation import (
    check_choice,
    check_chunk_size,
    check_features,
    check_linear,
    check_positive,
    check_rows,
    iter_chunks,
    to_numpy,
)
from opnp.scores import energy_score, logsumexp, softmax  # noqa: F401 - re-exported

#: Neuron statistics over classes (paper Table 9); "mean" is the paper's default (Eq. 8).
NEURON_STATISTICS = ("mean", "max", "min", "median", "norm", "variance")
REDUCTIONS = ("per_sample", "batch")
PRECISIONS = ("float64", "float32")


def parameter_sensitivity(
    features: Any,
    weight: Any,
    bias: Any = None,
    temperature: float = 1.0,
    reduction: str = "per_sample",
    chunk_size: int | None = None,
    precision: str = "float64",
    rows: Any = None,
    device: Any = None,
    clip: float | None = None,
) -> np.ndarray:
    """Closed-form parameter sensitivity S (C, D) float64 of the FC layer (Eq. 6).

    ``S = P^T |H| / N`` (``reduction="per_sample"``, the paper's definition) or
    ``|P^T H| / N`` (``reduction="batch"``, what ``energy.sum().backward()`` gives).

    ``features`` (N, D) may be a numpy array of any float dtype, a torch tensor or a
    memory-mapped ``.npy`` far larger than RAM: rows are streamed in chunks of
    ``chunk_size`` (default 4096), so memory is O(chunk_size * (C + D) + C * D).
    ``rows`` (strictly increasing indices) restricts S to those samples, e.g. a random
    training subset, read chunk by chunk from the memory map instead of being copied
    out first: the same result as ``features[rows]`` with the memory of one chunk.
    ``clip``: the features are clipped at this value first, ``min(h, clip)`` chunk by
    chunk (the ReAct threshold: the sensitivity of the deployed OPNP+ReAct layer, its
    ``sensitivity_features="clipped"`` reading).

    ``precision="float64"`` (default) computes logits, softmax and both products in
    float64: agreement with float64 autograd is at rounding level (~1e-13 relative).
    ``precision="float32"`` runs both matrix products per chunk in float32 (about twice
    the speed) and adds each chunk's result into a float64 accumulator. Its error has two
    sources: the float32 logits (absolute error about u*sum_j|W_cj h_j|, u = 6e-8, which
    moves p_c by that much relatively), and the float32 product P^T|H| over a chunk of
    n rows, whose terms are all nonnegative, so its relative error is at most n*u (worst
    case; typically sqrt(n)*u ~ 4e-6 / 1e-7 for n = 4096). Chunk sums are exact to
    float64. perf/bench_sensitivity.py measures the realised error.

    ``device`` (e.g. ``"cuda"``; :mod:`opnp.backend`): compute with torch there, the
    chunks moved to the device one at a time; a CUDA tensor as ``features`` computes on
    its device without ``device=``. The same arithmetic in the same precision, so the
    result equals the numpy path's to rounding (1e-12 relative in float64; tested on CPU
    torch).
    """
    from opnp.backend import check_tensor_features, is_tensor, torch_device

    check_choice(reduction, "reduction", REDUCTIONS)
    check_choice(precision, "precision", PRECISIONS)
    t = check_positive(temperature, "temperature")
    chunk = check_chunk_size(chunk_size)
    w64, b64 = check_linear(weight, bias)
    clip = _check_clip(clip)
    dev = torch_device(features, device)
    if dev is not None:
        if is_tensor(features):
            h = check_tensor_features(features, "features", dim=w64.shape[1])
        else:
            h = check_features(features, "features", dim=w64.shape[1])
        idx = None if rows is None else check_rows(rows, h.shape[0])
        return _sensitivity_torch(h, w64, b64, t, reduction, chunk, precision, idx, dev, clip)
    h = check_features(features, "features", dim=w64.shape[1])
    idx = None if rows is None else check_rows(rows, h.shape[0])
    n = h.shape[0] if idx is None else len(idx)
    acc = SensitivityAccumulator(w64, b64, t, reduction, precision, clip)
    for _, hc in iter_chunks(h, chunk, "features", dtype=acc.dtype, rows=idx):
        acc._add(hc)  # chunks are already checked by iter_chunks
    if acc.n_samples != n:  # pragma: no cover - iter_chunks yields every row once
        raise RuntimeError(f"sensitivity saw {acc.n_samples} rows, expected {n}")
    return acc.result()


def _check_clip(clip: Any) -> float | None:
    if clip is None:
        return None
    try:
        value = float(clip)
    except (TypeError, ValueError) as err:
        raise ValueError(f"clip must be a finite number or None, got {clip!r}") from err
    if not np.isfinite(value):
        raise ValueError(f"clip must be a finite number or None, got {clip!r}")
    return value


def _sensitivity_torch(h, w64, b64, t, reduction, chunk, precision, idx, device, clip=None):
    """:func:`parameter_sensitivity` with torch on ``device``: per chunk the logits,
    softmax and P^T |H| in the working precision, summed in float64 on the device."""
    import torch

    from opnp.backend import as_tensor, device_chunks, to_numpy64

    dtype = torch.float64 if precision == "float64" else torch.float32
    wt = as_tensor(w64.T, device, dtype)
    b = as_tensor(b64, device, dtype)
    acc = torch.zeros(w64.shape, dtype=torch.float64, device=device)
    n = 0
    with torch.no_grad():
        for _, hc in device_chunks(h, chunk, "features", device, dtype, rows=idx):
            if clip is not None:
                hc = hc.clamp(max=clip)
            p = hc @ wt + b
            if t != 1.0:
                p /= t
            p = torch.softmax(p, dim=1)
            acc += (p.T @ (hc.abs() if reduction == "per_sample" else hc)).double()
            n += len(hc)
    out = acc.abs() if reduction == "batch" else acc
    return to_numpy64(out / n)


class SensitivityAccumulator:
    """Streaming form of :func:`parameter_sensitivity`: ``update`` with chunks of
    training features (k, D), in any order and of any sizes, then ``result()`` is
    S (C, D) float64 of all rows seen so far, identical to one
    :func:`parameter_sensitivity` call on the stacked rows (the same per-chunk products
    added into one float64 sum). Memory is O(C * D) whatever the number of rows: what
    :class:`opnp.nets.model_api.ModelDetector` uses to fit OPNP in one pass over a loader.
    ``clip``: as in :func:`parameter_sensitivity`, each chunk clipped at it first.
    """

    def __init__(
        self,
        weight: Any,
        bias: Any = None,
        temperature: float = 1.0,
        reduction: str = "per_sample",
        precision: str = "float64",
        clip: float | None = None,
    ):
        check_choice(reduction, "reduction", REDUCTIONS)
        check_choice(precision, "precision", PRECISIONS)
        self.temperature = check_positive(temperature, "temperature")
        self.clip = _check_clip(clip)
        self.reduction = reduction
        w64, b64 = check_linear(weight, bias)
        self.dtype = np.float64 if precision == "float64" else np.float32
        self._wt = np.ascontiguousarray(w64.T, dtype=self.dtype)  # (D, C): logits = h @ W^T
        self._b = b64.astype(self.dtype)
        self._sum = np.zeros(w64.shape, dtype=np.float64)
        self.n_samples = 0

    def update(self, features: Any) -> SensitivityAccumulator:
        """Add the rows of one chunk (k, D) (numpy or torch); returns ``self``."""
        hc = check_features(features, "features", dim=self._wt.shape[0])
        self._add(np.asarray(hc, dtype=self.dtype))
        return self

    def _add(self, hc: np.ndarray) -> None:
        if self.clip is not None:
            # self.clip is a Python float: a float32 chunk stays float32 (NEP 50).
            hc = np.minimum(hc, self.clip)
        p = hc @ self._wt
        p += self._b
        if self.temperature != 1.0:
            p /= self.temperature
        softmax(p, out=p)
        if self.reduction == "per_sample":
            self._sum += p.T @ np.abs(hc)
        else:
            self._sum += p.T @ hc
        self.n_samples += len(hc)

    def result(self) -> np.ndarray:
        """S (C, D) float64 of the rows added so far."""
        if self.n_samples == 0:
            raise ValueError("no training features were added to the sensitivity accumulator")
        out = np.abs(self._sum) if self.reduction == "batch" else self._sum.copy()
        out /= self.n_samples
        return out


def neuron_sensitivity(param_sensitivity: Any, statistic: str = "mean") -> np.ndarray:
    """Neuron sensitivity (D,) float64: a statistic over classes of S (Eq. 8, Table 9).

    ``mean`` (paper default, equivalent to the L1 norm / C), ``max``, ``min``,
    ``median``, ``norm`` (L2 norm over classes) and ``variance`` (population variance,
    ddof=0) of column j of the (C, D) parameter sensitivity.
    """
    check_choice(statistic, "statistic", NEURON_STATISTICS)
    s = np.asarray(to_numpy(param_sensitivity, "param_sensitivity"), dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"param_sensitivity must be (C, D), got shape {tuple(s.shape)}")
    if not np.all(np.isfinite(s)):
        raise ValueError(
            f"param_sensitivity has {int((~np.isfinite(s)).sum())} NaN or infinite values"
        )
    if statistic == "mean":
        return s.mean(axis=0)
    if statistic == "max":
        return s.max(axis=0)
    if statistic == "min":
        return s.min(axis=0)
    if statistic == "median":
        return np.median(s, axis=0)
    if statistic == "norm":
        return np.sqrt(np.sum(s * s, axis=0))
    return s.var(axis=0)


def pooled_parameter_sensitivity(
    sources: Sequence[Any],
    weight: Any,
    bias: Any,
    rows: Any = None,
    temperature: float = 1.0,
) -> np.ndarray:
    """Eq. 6 over the rows of several feature arrays taken as one sample set (e.g. the
    training features and unlabeled images that enlarge the sensitivity set): the mean of
    per-sample |dE/dW| over every chosen row, computed source by source from memory-mapped
    arrays (nothing is concatenated). ``rows`` indexes the sources stacked in order (None:
    every row). Per-sample reduction only: the batch reading takes |sum| over the whole
    set, which does not split into per-source terms."""
    sizes = [len(source) for source in sources]
    if not sizes:
        raise ValueError("sources must hold at least one feature array")
    bounds = np.cumsum([0, *sizes])
    rows = np.arange(bounds[-1]) if rows is None else np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1 or len(rows) == 0 or rows.min() < 0 or rows.max() >= bounds[-1]:
        raise ValueError(f"rows must be a non-empty list of indices below {bounds[-1]}")
    total = None
    for source, low, high in zip(sources, bounds[:-1], bounds[1:], strict=True):
        own = rows[(rows >= low) & (rows < high)] - low
        if len(own) == 0:
            continue
        part = parameter_sensitivity(
            source,
            weight,
            bias,
            temperature=temperature,
            rows=None if len(own) == high - low else own,
        )
        total = part * len(own) if total is None else total + part * len(own)
    return total / len(rows)
