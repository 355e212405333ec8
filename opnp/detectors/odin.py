"""ODIN (Liang, Li & Srikant, ICLR 2018): temperature scaling and input perturbation.

A network-level detector (:class:`~opnp.detectors.base.NetworkDetector`): it perturbs
the input images and scores them with the model, so cached features cannot be scored.

x' = x - epsilon * sign(-grad_x log max_c softmax(f(x)/T)) / std, the step divided by
the per-channel standard deviation of the input normalisation (``std``), as the ODIN
code does for inputs normalised inside the data pipeline; the score is
max_c softmax(f(x')/T). Defaults (:attr:`ODIN.defaults`, their one home) T = 1000,
epsilon = 0.0014: the ODIN paper's CIFAR setting (it uses 0.005 for ImageNet). The
gradient is that of the cross-entropy loss at the predicted class,
-log softmax(f(x)/T)_{argmax}, which equals -grad log max softmax. ``sign`` is
``torch.sign`` (a zero gradient gives no step; the ODIN code maps it to +1 instead,
which only differs on exactly-zero gradients). Samples are independent (the model runs
in eval mode), so a batch is perturbed with one backward pass of the summed loss.

The model is any callable ``nn.Module``; torch is imported when a batch is scored, not
when the registry imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from opnp._validation import check_positive
from opnp.detectors.base import NetworkDetector
from opnp.detectors.registry import register_detector

if TYPE_CHECKING:
    import torch


@register_detector("odin")
class ODIN(NetworkDetector):
    """Max softmax at temperature T of the input-perturbed image (needs the network)."""

    label = "ODIN"
    defaults = {"temperature": 1000.0, "epsilon": 0.0014}
    default_grid = {"temperature": [1, 10, 100, 1000], "epsilon": [0.0, 0.0014, 0.005]}

    def _check_params(self) -> None:
        p = self._params
        p["temperature"] = check_positive(p["temperature"], "temperature")
        eps = p["epsilon"]
        try:
            value = float(eps)
        except (TypeError, ValueError):
            value = float("nan")
        if isinstance(eps, bool) or not (value >= 0 and np.isfinite(value)):
            raise ValueError(f"epsilon must be a nonnegative number, got {eps!r}")
        p["epsilon"] = value

    def score_batch(self, model, inputs, std=1.0) -> np.ndarray:
        """ODIN scores (B,) float64 of a batch of images (B, C, ...) under ``model``;
        ``std``: the per-channel standard deviation of the input normalisation."""
        import torch

        check_image_batch(inputs)
        std_t = channel_std(std, inputs)
        t, eps = self._params["temperature"], self._params["epsilon"]
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


def odin_scores(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    temperature: float = ODIN.defaults["temperature"],
    epsilon: float = ODIN.defaults["epsilon"],
    std: Sequence[float] | float = 1.0,
) -> np.ndarray:
    """ODIN scores (B,) float64 of a batch ``inputs`` (B, C, ...) (higher = ID): the
    function form of :meth:`ODIN.score_batch`."""
    return ODIN(temperature=temperature, epsilon=epsilon).score_batch(model, inputs, std=std)


def check_image_batch(inputs) -> None:
    """ValueError unless ``inputs`` is a finite tensor (B, C, ...)."""
    import torch

    if not isinstance(inputs, torch.Tensor) or inputs.ndim < 2:
        raise ValueError(f"inputs must be a tensor (B, C, ...), got {type(inputs).__name__}")
    if not torch.isfinite(inputs).all():
        raise ValueError(
            f"inputs has {int((~torch.isfinite(inputs)).sum())} NaN or infinite values"
        )


def channel_std(std, inputs):
    """``std`` (one value, or one per channel of ``inputs``) as a positive tensor that
    broadcasts over ``inputs`` (1, C or 1, 1, ...)."""
    import torch

    std_t = torch.as_tensor(std, dtype=inputs.dtype, device=inputs.device).reshape(-1)
    if std_t.numel() not in (1, inputs.shape[1]):
        raise ValueError(
            f"std must have 1 or {inputs.shape[1]} (channels) entries, got {std_t.numel()}"
        )
    if not (std_t > 0).all():
        raise ValueError(f"std must be positive, got {std}")
    return std_t.reshape((1, -1) + (1,) * (inputs.ndim - 2))
