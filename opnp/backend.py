"""Which device computes: numpy on the CPU, or torch on a device (CUDA).

The numerical core (sensitivities, the grid scorer, detectors' scoring, bootstrap
intervals) computes with torch on a device when it is given ``device=`` (any torch
device, ``"cpu"`` included: the torch path on the CPU, which is how it is tested on a
machine without a GPU) or, without ``device=``, when its input is a torch tensor on a
non-CPU device (then it computes where the tensor is). Otherwise, torch CPU tensors
included, it takes the numpy path as before. Results are returned as numpy arrays either
way and equal the numpy path's to the tolerance each function states (float64 on the
device: rounding-level differences from a different summation order).

This module imports torch only when a torch path is taken.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from opnp._validation import check_feature_shape


def is_tensor(x: Any) -> bool:
    """True for a torch tensor (without importing torch)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def torch_device(x: Any = None, device: Any = None):
    """The ``torch.device`` to compute on, or None for the numpy path: ``device`` when
    given, else the device of ``x`` when ``x`` is a tensor on a non-CPU device."""
    if device is not None:
        import torch

        return torch.device(device)
    if is_tensor(x) and x.device.type != "cpu":
        return x.device
    return None


def as_tensor(x: Any, device, dtype=None):
    """``x`` (numpy array, memory map chunk or tensor) as a tensor on ``device``."""
    import torch

    dtype = torch.float64 if dtype is None else dtype
    if is_tensor(x):
        return x.detach().to(device=device, dtype=dtype)
    return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype, device=device)


def check_tensor_features(x: Any, name: str, dim: int | None = None):
    """The checks of :func:`opnp._validation.check_features` for a torch tensor, on its
    device (no copy to the host): 2-D, at least one row, real floating or integer
    dtype, ``dim`` columns, finite."""
    import torch

    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional, got shape {tuple(x.shape)}")
    if x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{name} must have a real floating dtype, got {x.dtype}")
    check_feature_shape(tuple(x.shape), name, dim)
    if x.is_floating_point():
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            rows = torch.nonzero(bad.any(dim=1))[0, 0]
            raise ValueError(
                f"{name} has {int(bad.sum())} NaN or infinite values, first at row {int(rows)}"
            )
    return x


def device_chunks(features: Any, chunk_size: int, name: str, device, dtype=None, rows=None):
    """Yield ``(start, chunk)`` with each chunk a tensor on ``device``: slices of a tensor,
    or the checked numpy chunks of :func:`opnp._validation.iter_chunks` moved there."""
    from opnp._validation import iter_chunks

    if is_tensor(features):
        n = features.shape[0] if rows is None else len(rows)
        for start in range(0, n, chunk_size):
            if rows is None:
                part = features[start : start + chunk_size]
            else:
                idx = rows[start : start + chunk_size]
                part = features[as_tensor(idx, features.device, dtype=_int64())]
            yield start, as_tensor(part, device, dtype)
        return
    for start, chunk in iter_chunks(features, chunk_size, name, rows=rows):
        yield start, as_tensor(chunk, device, dtype)


def _int64():
    import torch

    return torch.int64


def to_numpy64(t) -> np.ndarray:
    """A tensor as a float64 numpy array on the host."""
    return t.detach().to("cpu").double().numpy()
