"""ODIN's input perturbation (Liang, Li & Srikant, 2018); the detector, its
hyperparameters and defaults are :class:`opnp.detectors.odin.ODIN`.

x' = x - epsilon * sign(-grad_x log max_c softmax(f(x)/T)) / std, the step divided by
the per-channel standard deviation of the input normalisation (``std``), as the ODIN
code does for inputs normalised inside the data pipeline; the score is
max_c softmax(f(x')/T). Defaults T = 1000, epsilon = 0.0014 (CIFAR; the ODIN paper uses
0.005 for ImageNet). The gradient is that of the cross-entropy loss at the predicted class,
-log softmax(f(x)/T)_{argmax}, which equals -grad log max softmax. ``sign`` is
``torch.sign`` (a zero gradient gives no step; the ODIN code maps it to +1 instead,
which only differs on exactly-zero gradients). Samples are independent (the model runs
in eval mode), so a batch is perturbed with one backward pass of the summed loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


def check_odin_params(**params: Any) -> dict:
    """ODIN's hyperparameters, checked by its detector class (ValueError naming the bad
    one), defaults filled. Torch-free, so the workflow checks a config before any job."""
    from opnp.detectors import create_detector

    return dict(create_detector("odin", **params).params)


def odin_scores(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    temperature: float = 1000.0,
    epsilon: float = 0.0014,
    std: Sequence[float] | float = 1.0,
) -> np.ndarray:
    """ODIN scores (B,) float64 of a batch ``inputs`` (B, C, ...) (higher = ID)."""
    import torch

    checked = check_odin_params(temperature=temperature, epsilon=epsilon)
    t, eps = checked["temperature"], checked["epsilon"]
    if not isinstance(inputs, torch.Tensor) or inputs.ndim < 2:
        raise ValueError(f"inputs must be a tensor (B, C, ...), got {type(inputs).__name__}")
    if not torch.isfinite(inputs).all():
        raise ValueError(
            f"inputs has {int((~torch.isfinite(inputs)).sum())} NaN or infinite values"
        )
    std_t = torch.as_tensor(std, dtype=inputs.dtype, device=inputs.device).reshape(-1)
    if std_t.numel() not in (1, inputs.shape[1]):
        raise ValueError(
            f"std must have 1 or {inputs.shape[1]} (channels) entries, got {std_t.numel()}"
        )
    if not (std_t > 0).all():
        raise ValueError(f"std must be positive, got {std}")
    std_t = std_t.reshape((1, -1) + (1,) * (inputs.ndim - 2))
    was_training = model.training
    model.eval()
    try:
        x = inputs.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            log_probs = torch.log_softmax(model(x) / t, dim=1)
            loss = -log_probs.max(dim=1).values.sum()  # cross-entropy at the predicted class
            (grad,) = torch.autograd.grad(loss, x)
        perturbed = x.detach() - eps * torch.sign(grad) / std_t
        with torch.no_grad():
            probs = torch.softmax(model(perturbed) / t, dim=1)
        return probs.max(dim=1).values.double().cpu().numpy()
    finally:
        model.train(was_training)
