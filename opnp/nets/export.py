"""A fitted :class:`opnp.nets.model_api.ModelDetector` as one deployable ``nn.Module``.

``detector_module(md)`` returns ``DetectorModule``: ``forward(x) -> (logits, score)``,
where ``logits`` is the model's own output (the unpruned head) and ``score`` the
detector's score (B,) computed from the same features h (the head's input) in the same
forward pass, by a small TorchScript-compatible module holding the fitted detector's
arrays: the pruned / masked FC layer (OPNP family, DICE, TPP/TNP, RPP/RNP), the ReAct
clip, the ASH-S shaping, GradNorm's closed form, the KNN bank, the Mahalanobis
precision, LINe's per-class masks. The module scripts with ``torch.jit.script`` and
exports with ``torch.onnx.export`` (the TorchScript-based exporter, ``dynamo=False``; it
needs the ``onnx`` package).

The score head runs in ``score_dtype`` (default float64, the precision of the
feature-level detectors, so the scores equal :meth:`ModelDetector.score` to rounding;
``torch.float32`` for runtimes without double support, scores then agree to float32
rounding). ODIN cannot be exported: its score needs a gradient step on the input.
The backbone is a deep copy of the model with the head replaced by ``nn.Identity``, so
the model's output must be the head's output (checked on the first batch).
"""

# No "from __future__ import annotations": TorchScript reads the class annotations.
import copy
from typing import Tuple  # noqa: UP035 - TorchScript needs typing.Tuple

import numpy as np
import torch
from torch import nn

from opnp.detectors.ash import ASH
from opnp.detectors.base import LinearDetector
from opnp.detectors.gradnorm import GradNorm
from opnp.detectors.knn import KNN
from opnp.detectors.line import LINe
from opnp.detectors.mahalanobis import Mahalanobis

_KINDS = {"energy": 0, "msp": 1, "maxlogit": 2}


def _score_logits(f: torch.Tensor, kind: int, temperature: float) -> torch.Tensor:
    """Energy / MSP / max logit of each row, as :func:`opnp.detectors.base.score_logits`."""
    if kind == 2:
        return torch.amax(f, dim=1)
    z = f / temperature
    if kind == 1:
        return torch.amax(torch.softmax(z, dim=1), dim=1)
    return temperature * torch.logsumexp(z, dim=1)


class LinearScore(nn.Module):
    """Score of the logits of a (masked, clipped, ASH-shaped) FC layer."""

    clip: float
    use_clip: bool
    kind: int
    temperature: float
    ash_keep: int

    def __init__(self, weight, bias, clip, kind: str, temperature: float, ash_keep: int = -1):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.use_clip = clip is not None
        self.clip = float(clip) if clip is not None else 0.0
        self.kind = _KINDS[kind]
        self.temperature = float(temperature)
        self.ash_keep = int(ash_keep)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.ash_keep >= 0:
            h = _ash_s(h, self.ash_keep)
        if self.use_clip:
            h = torch.clamp(h, max=self.clip)
        f = torch.nn.functional.linear(h, self.weight, self.bias)
        return _score_logits(f, self.kind, self.temperature)


def _ash_s(h: torch.Tensor, keep: int) -> torch.Tensor:
    """ASH-S of each row (:func:`opnp.detectors.ash.ash_s`): keep the ``keep`` largest
    entries, scale them by exp(sum before / sum after)."""
    if keep <= 0:
        return torch.zeros_like(h)
    s1 = h.sum(dim=1)
    values, index = torch.topk(h, keep, dim=1)
    kept = torch.zeros_like(h).scatter(1, index, values)
    return kept * torch.exp(s1 / kept.sum(dim=1)).unsqueeze(1)


class GradNormScore(nn.Module):
    """(1/T) sum_c |softmax(f/T)_c - 1/C| * sum_j |h_j| (opnp.detectors.gradnorm)."""

    temperature: float

    def __init__(self, weight, bias, temperature: float):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.temperature = float(temperature)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        f = torch.nn.functional.linear(h, self.weight, self.bias)
        p = torch.softmax(f / self.temperature, dim=1)
        spread = torch.abs(p - 1.0 / p.shape[1]).sum(dim=1)
        return spread * torch.abs(h).sum(dim=1) / self.temperature


class KNNScore(nn.Module):
    """-(distance of the L2-normalised feature to its k-th nearest bank feature)."""

    k: int

    def __init__(self, bank, k: int):
        super().__init__()
        self.register_buffer("bank", bank)
        self.k = int(k)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(h, dim=1, keepdim=True)
        z = h / torch.where(norm > 0, norm, torch.ones_like(norm))
        sims = z @ self.bank.t()
        kth = torch.topk(sims, self.k, dim=1)[0][:, -1]
        return -torch.sqrt(torch.clamp(2.0 - 2.0 * kth, min=0.0))


class MahalanobisScore(nn.Module):
    """max_c -(h - mu_c)^T P (h - mu_c), expanded as in opnp.detectors.mahalanobis."""

    def __init__(self, precision, p_mu, mu_p_mu):
        super().__init__()
        self.register_buffer("precision", precision)
        self.register_buffer("p_mu", p_mu)
        self.register_buffer("mu_p_mu", mu_p_mu)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h_p_h = ((h @ self.precision) * h).sum(dim=1)
        neg = 2.0 * (h @ self.p_mu) - self.mu_p_mu.unsqueeze(0) - h_p_h.unsqueeze(1)
        return torch.amax(neg, dim=1)


class LINeScore(nn.Module):
    """LINe: each sample through the masks of its predicted class (opnp.detectors.line).
    Memory per batch: B x C x D (the masks are built per sample, not stored per class)."""

    clip: float
    temperature: float

    def __init__(self, weight, bias, contribution, weight_thr, neuron_thr, clip, temperature):
        super().__init__()
        for name, value in (
            ("weight", weight), ("bias", bias), ("contribution", contribution),
            ("weight_thr", weight_thr), ("neuron_thr", neuron_thr),
        ):  # fmt: skip
            self.register_buffer(name, value)
        self.clip = float(clip)
        self.temperature = float(temperature)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        hc = torch.clamp(h, max=self.clip)
        pred = torch.argmax(torch.nn.functional.linear(hc, self.weight, self.bias), dim=1)
        a = self.contribution[pred]  # (B, D)
        importance = torch.abs(a).unsqueeze(1) * self.weight.unsqueeze(0)  # (B, C, D)
        wmask = importance > self.weight_thr[pred].view(-1, 1, 1)
        nmask = a > self.neuron_thr[pred].view(-1, 1)
        masked = torch.where(wmask, self.weight.unsqueeze(0), torch.zeros_like(importance))
        f = (masked @ (hc * nmask.to(hc.dtype)).unsqueeze(2)).squeeze(2) + self.bias
        return self.temperature * torch.logsumexp(f / self.temperature, dim=1)


class DetectorModule(nn.Module):
    """x -> (logits, score): the backbone once, the original head and the score head."""

    def __init__(self, backbone: nn.Module, head: nn.Module, scorer: nn.Module, score_dtype):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.scorer = scorer
        self.score_dtype = score_dtype

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:  # noqa: UP006
        h = self.backbone(x)
        return self.head(h), self.scorer(h.to(self.score_dtype))


def score_head(detector, dtype=torch.float64) -> nn.Module:
    """The TorchScript-compatible scoring module of a fitted feature-level detector."""

    def t(a) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a), dtype=dtype).clone()

    name = getattr(detector, "name", type(detector).__name__)
    if isinstance(detector, KNN):
        return KNNScore(t(detector.train_bank), detector.params["k"])
    if isinstance(detector, Mahalanobis):
        return MahalanobisScore(t(detector.precision), t(detector._p_mu), t(detector._mu_p_mu))
    if isinstance(detector, LINe):
        p = detector.params
        return LINeScore(
            t(detector.weight), t(detector.bias), t(detector.contribution),
            t(detector.weight_thresholds), t(detector.neuron_thresholds),
            p["clip"], p["temperature"],
        )  # fmt: skip
    if isinstance(detector, GradNorm):
        return GradNormScore(t(detector.weight), t(detector.bias), detector.temperature)
    if isinstance(detector, ASH):
        d = detector.weight.shape[1]
        keep = d - int(np.round(d * detector.params["percentile"] / 100.0))
        return LinearScore(
            t(detector.weight), t(detector.bias), None, "energy", detector.temperature, keep
        )
    cls = type(detector)
    if (
        isinstance(detector, LinearDetector)
        and cls._score_chunk is LinearDetector._score_chunk
        and cls._logits_chunk is LinearDetector._logits_chunk
    ):
        return LinearScore(
            t(detector._w), t(detector.bias), detector._clip, cls.score_kind, detector.temperature
        )
    raise ValueError(f"detector {name!r} has no exportable score head")


def detector_module(model_detector, score_dtype=None) -> DetectorModule:
    """:class:`DetectorModule` of a fitted :class:`opnp.nets.model_api.ModelDetector`."""
    md = model_detector
    if md.method == "odin":
        raise ValueError(
            "odin cannot be exported as one forward pass: its score needs the gradient of the "
            "loss with respect to the input; use ModelDetector.score"
        )
    if md._head is None or md.weight is None:
        raise ValueError("to_module needs the head: call fit(...) (or score a batch) first")
    if not md._output_is_head:
        raise ValueError(
            f"the model's output is not the output of head {md.head_name!r} (something runs "
            "after it), so replacing the head by the score head would change the logits; "
            "to_module needs a model whose forward returns head(h)"
        )
    scorer = score_head(md._detector(), score_dtype or torch.float64)
    backbone = copy.deepcopy(md.model)
    parent_name, _, child = md.head_name.rpartition(".")
    parent = backbone.get_submodule(parent_name) if parent_name else backbone
    setattr(parent, child, nn.Identity())
    head = copy.deepcopy(md._head)
    module = DetectorModule(backbone, head, scorer, score_dtype or torch.float64)
    return module.to(md.device).eval()
