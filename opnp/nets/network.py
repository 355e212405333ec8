"""Sensitivity and pruning inside the network (paper Table 7, Fig. 6). Needs torch.

- :func:`conv_and_fc_weights`: the weights of every convolution and of the FC layer
  (what Table 7's global and layer-wise pruning prune); :func:`network_logits`: logits
  and labels of a dataset (the pruned network's score and ID accuracy);
  :func:`in_memory`: a dataset decoded once into tensors, for many passes.
- :func:`module_sensitivity`: S_theta = (1/N) sum_k |dE(x_k)/dtheta| for any named
  parameters of an ``nn.Module``, E = -T logsumexp(f/T) of the model's output, by
  per-sample autograd (``torch.func``: ``functional_call`` + ``vmap`` + ``grad``, which
  gives exactly the gradients of one ``energy.backward()`` per sample; a plain per-sample
  loop is the fallback for models ``vmap`` cannot batch). ``reduction="batch"`` returns
  |sum_k dE(x_k)/dtheta| / N instead (one backward of the summed energy per batch).
  The model runs in eval mode (BatchNorm with running statistics) and is restored after.
- :func:`parameter_sensitivity_autograd`: Eq. 6 of an FC layer given as arrays, by
  autograd through an ``nn.Linear`` (the reference the closed form in
  :mod:`opnp.sensitivity` is tested against).
- :func:`layer_pruning_masks`: OPNP percentile masks per layer ("per_layer", also named
  "layerwise": the same percentages with each layer's own thresholds) or with one
  "global" threshold pair over the sensitivities of all given layers together. Same
  convention as :func:`opnp.pruning.tail_mask`: prune S < percentile(S, low) and
  S > percentile(S, 100 - high), equal kept, 0 prunes nothing.
- :func:`pruned_model` (a masked deep copy) and :func:`pruning` (a context manager that
  zeroes the pruned parameters in place and restores them).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from opnp._validation import (
    check_choice,
    check_features,
    check_linear,
    check_percentage_pair,
    check_positive,
)
from opnp.pruning import percentile
from opnp.sensitivity import PRECISIONS, REDUCTIONS

MODES = ("per_layer", "layerwise", "global")


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """E = -T logsumexp(f / T) per row (the detection score is -E)."""
    return -temperature * torch.logsumexp(logits / temperature, dim=-1)


def _batches(inputs_or_loader, batch_size: int):
    if isinstance(inputs_or_loader, torch.Tensor):
        for start in range(0, len(inputs_or_loader), batch_size):
            yield inputs_or_loader[start : start + batch_size]
        return
    for item in inputs_or_loader:
        yield item[0] if isinstance(item, list | tuple) else item


def module_sensitivity(
    model: torch.nn.Module,
    inputs_or_loader,
    parameters: Sequence[str] | None = None,
    temperature: float = 1.0,
    reduction: str = "per_sample",
    batch_size: int = 64,
    device: str | torch.device | None = None,
    use_vmap: bool = True,
) -> dict[str, torch.Tensor]:
    """Mean absolute energy gradient of each named parameter, float64 tensors on CPU.

    ``inputs_or_loader``: a tensor (N, ...) (split into ``batch_size`` batches) or an
    iterable of tensors or ``(inputs, labels)`` pairs (e.g. a DataLoader).
    ``parameters``: names from ``model.named_parameters()`` (default: all).
    """
    t = check_positive(temperature, "temperature")
    check_choice(reduction, "reduction", ("per_sample", "batch"))
    named = dict(model.named_parameters())
    names = list(named) if parameters is None else list(parameters)
    unknown = [n for n in names if n not in named]
    if unknown:
        raise ValueError(f"parameters {unknown} not in the model; it has {list(named)}")
    if not names:
        raise ValueError("parameters is empty")
    if device is None:
        device = next(iter(named.values())).device
    was_training = model.training
    model.eval()
    acc = {n: torch.zeros(named[n].shape, dtype=torch.float64) for n in names}
    count = 0
    try:
        fixed = {k: v.detach() for k, v in named.items() if k not in names}
        buffers = dict(model.named_buffers())

        def sample_energy(params, x):
            out = torch.func.functional_call(model, ({**fixed, **params}, buffers), (x[None],))
            return energy(out, t).sum()

        per_sample = torch.func.vmap(torch.func.grad(sample_energy), in_dims=(None, 0))
        for xb in _batches(inputs_or_loader, batch_size):
            xb = xb.to(device)
            count += len(xb)
            params = {n: named[n].detach() for n in names}
            if reduction == "batch":
                with torch.enable_grad():
                    p_req = {n: p.clone().requires_grad_(True) for n, p in params.items()}
                    out = torch.func.functional_call(model, ({**fixed, **p_req}, buffers), (xb,))
                    grads = torch.autograd.grad(energy(out, t).sum(), list(p_req.values()))
                for n, g in zip(names, grads, strict=True):
                    acc[n] += g.detach().double().cpu()
                continue
            grads = None
            if use_vmap:
                try:
                    grads = per_sample(params, xb)
                except (RuntimeError, NotImplementedError):  # ops vmap cannot batch
                    use_vmap = False
            if grads is None:
                grads = {n: [] for n in names}
                for x in xb:
                    g = torch.func.grad(sample_energy)(params, x)
                    for n in names:
                        grads[n].append(g[n])
                grads = {n: torch.stack(v) for n, v in grads.items()}
            for n in names:
                acc[n] += grads[n].detach().abs().double().sum(0).cpu()
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("inputs_or_loader yielded no samples")
    return {n: (a.abs() if reduction == "batch" else a) / count for n, a in acc.items()}


def parameter_sensitivity_autograd(
    features: Any,
    weight: Any,
    bias: Any = None,
    temperature: float = 1.0,
    reduction: str = "per_sample",
    batch_size: int = 256,
    dtype: str = "float64",
) -> np.ndarray:
    """Reference path: S from autograd of the energy through an ``nn.Linear`` (needs torch).

    ``per_sample``: the gradient dE(x_k)/dW of every sample separately
    (``torch.func.vmap(grad(...))``, identical to calling ``energy.backward()`` once per
    sample), then the mean of absolute values. ``batch``: one backward of the summed
    energy of all samples, then |grad| / N. Used to test the closed form.
    """
    check_choice(reduction, "reduction", REDUCTIONS)
    check_choice(dtype, "dtype", PRECISIONS)
    w64, b64 = check_linear(weight, bias)
    h = check_features(features, "features", dim=w64.shape[1])
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    layer = torch.nn.Linear(w64.shape[1], w64.shape[0]).to(tdtype)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w64))
        layer.bias.copy_(torch.from_numpy(b64))
    inputs = torch.from_numpy(np.asarray(h, dtype=np.float64)).to(tdtype)
    sens = module_sensitivity(
        layer,
        inputs,
        ["weight"],
        temperature=temperature,
        reduction=reduction,
        batch_size=batch_size,
    )
    return sens["weight"].double().numpy()


def layer_pruning_masks(
    sensitivities: Mapping[str, torch.Tensor | np.ndarray],
    low: float = 0.0,
    high: float = 0.0,
    mode: str = "per_layer",
) -> dict[str, torch.Tensor]:
    """Boolean keep-masks (True = kept) for each layer's parameter sensitivity."""
    check_choice(mode, "mode", MODES)
    lo, hi = check_percentage_pair(low, high, "low", "high")
    if not sensitivities:
        raise ValueError("sensitivities is empty")
    arrays = {
        k: np.asarray(v.cpu() if hasattr(v, "cpu") else v, np.float64)
        for k, v in sensitivities.items()
    }
    if mode == "global":
        pooled = np.concatenate([a.ravel() for a in arrays.values()])
        thresholds = {k: _thresholds(pooled, lo, hi) for k in arrays}
    else:
        thresholds = {k: _thresholds(a, lo, hi) for k, a in arrays.items()}
    out = {}
    for k, a in arrays.items():
        t_lo, t_hi = thresholds[k]
        keep = np.ones(a.shape, dtype=bool)
        if t_lo is not None:
            keep &= ~(a < t_lo)
        if t_hi is not None:
            keep &= ~(a > t_hi)
        out[k] = torch.from_numpy(keep)
    return out


def _thresholds(values: np.ndarray, lo: float, hi: float):
    return (
        percentile(values, lo) if lo > 0 else None,
        percentile(values, 100.0 - hi) if hi > 0 else None,
    )


def conv_and_fc_weights(model: torch.nn.Module) -> list[str]:
    """Names of the weights of every convolution (``nn.Conv1d/2d/3d``, in network order)
    and of the FC layer ``fc``: what "global" and "layer-wise" pruning of Table 7 prune
    (paper appendix B.1: "all the weights in Convolution layer and FC layer")."""
    convs = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    names = [
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, convs) and name != "fc"
    ]
    if not isinstance(getattr(model, "fc", None), torch.nn.Linear):
        raise ValueError(f"{type(model).__name__} has no nn.Linear 'fc' layer")
    return [*names, "fc.weight"]


def network_logits(
    model: torch.nn.Module,
    dataset,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(logits (N, C) float64, labels (N,) int64)`` of ``model`` (eval mode) over a
    dataset of ``(input, label)`` pairs, in order."""
    if device is None:
        device = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        with torch.no_grad():
            for inputs, targets in loader:
                logits.append(model(inputs.to(device)).double().cpu().numpy())
                labels.append(np.asarray(targets, dtype=np.int64))
    finally:
        model.train(was_training)
    if not logits:
        raise ValueError(f"dataset {dataset!r} has no images")
    return np.concatenate(logits), np.concatenate(labels)


def in_memory(dataset, max_bytes: int, *, batch_size: int = 256, num_workers: int = 0):
    """``(dataset, bytes)``: a ``TensorDataset`` of the transformed inputs and labels of
    ``dataset`` and its size when that fits in ``max_bytes`` (estimated from the first
    input), else ``(dataset, 0)`` unchanged. For a dataset run through the network many
    times (Table 7: once per pruning setting): decoding and transforming the images again
    each time costs as much as the forward pass of a small network. The inputs are those
    ``dataset`` yields (deterministic evaluation transforms), so the logits are the same.
    """
    if len(dataset) == 0:
        return dataset, 0
    first = torch.as_tensor(dataset[0][0])
    size = first.element_size() * first.nelement() * len(dataset)
    if size > max_bytes:
        return dataset, 0
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
    inputs, labels = [], []
    for x, y in loader:
        inputs.append(x)
        labels.append(torch.as_tensor(y))
    return torch.utils.data.TensorDataset(torch.cat(inputs), torch.cat(labels)), size


def _check_masks(model: torch.nn.Module, masks: Mapping[str, torch.Tensor]) -> dict:
    named = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in named:
            raise ValueError(f"mask for unknown parameter {name!r}")
        if tuple(mask.shape) != tuple(named[name].shape):
            raise ValueError(
                f"mask for {name!r} has shape {tuple(mask.shape)}, parameter has "
                f"{tuple(named[name].shape)}"
            )
    return named


def pruned_model(model: torch.nn.Module, masks: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """A deep copy of ``model`` with every parameter entry whose mask is False set to 0."""
    clone = copy.deepcopy(model)
    named = _check_masks(clone, masks)
    with torch.no_grad():
        for name, mask in masks.items():
            named[name].mul_(mask.to(named[name].device, named[name].dtype))
    return clone


@contextlib.contextmanager
def pruning(model: torch.nn.Module, masks: Mapping[str, torch.Tensor]):
    """Zero the pruned entries of ``model`` in place inside the ``with`` block (no copy of
    the whole model), restoring the original values on exit."""
    named = _check_masks(model, masks)
    saved = {n: named[n].detach().clone() for n in masks}
    try:
        with torch.no_grad():
            for name, mask in masks.items():
                named[name].mul_(mask.to(named[name].device, named[name].dtype))
        yield model
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                named[name].copy_(value)


def mean_sensitivity(sensitivities: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Mean parameter sensitivity of each layer (Fig. 6)."""
    return {k: float(v.double().mean()) for k, v in sensitivities.items()}


__all__: Iterable[str] = [
    "conv_and_fc_weights",
    "energy",
    "in_memory",
    "layer_pruning_masks",
    "mean_sensitivity",
    "module_sensitivity",
    "network_logits",
    "parameter_sensitivity_autograd",
    "pruned_model",
    "pruning",
]
