"""A fitted :class:`opnp.nets.model_api.ModelDetector` as one deployable ``nn.Module``.

``detector_module(md)`` returns ``DetectorModule``: ``forward(x) -> (logits, score)``,
where ``logits`` is the model's own output (the unpruned head) and ``score`` the
detector's score (B,) computed from the same features h (the head's input) in the same
forward pass, by a small score head holding the fitted detector's arrays: the pruned /
masked FC layer (OPNP family, DICE, TPP/TNP, RPP/RNP), the ReAct clip, the ASH-S
shaping, GradNorm's closed form, the KNN bank, the Mahalanobis precision, LINe's
per-class masks.

Deploying it (:func:`export_program`, :func:`export_onnx`): the supported exporters of
current torch, ``torch.export.export`` (an ``ExportedProgram``) and the dynamo-based
``torch.onnx.export(..., dynamo=True)`` (needs ``onnx`` and ``onnxscript``), with a
dynamic batch dimension; no warning on that path. Where they fail (an older torch, a
model torch.export cannot trace, no onnxscript), ``exporter="auto"`` falls back to the
deprecated ``torch.jit.script`` / TorchScript-based ONNX exporter (``dynamo=False``) with
one UserWarning saying why; ``exporter="script"`` / ``"torchscript"`` asks for them.

The score head runs in ``score_dtype`` (default float64, the precision of the
feature-level detectors, so the scores equal :meth:`ModelDetector.score` to 1e-10
relative, KNN included, tests/nets/test_model_api.py; ``torch.float32`` for runtimes without
double support, scores then agree to float32 rounding). An ONNX runtime runs the
backbone's float32 layers with its own kernels, so its features, and the scores, agree
to float32 rounding (1e-6 relative, tested with onnxruntime).

Inputs: floating images are cast to the model's dtype (e.g. float32 images for a float16
model). In eager mode and TorchScript the module raises for non-finite features (NaN or
infinite input rows): ValueError (``torch.jit.Error`` from TorchScript) naming the first
bad row. A traced graph (``torch.export``, ONNX) cannot raise on data: there a row with
NaN features gets a NaN score; check ``torch.isfinite(score)`` (or the inputs) before
trusting it. A network-level detector (``needs_network``, e.g. ODIN: a gradient step on
the input) cannot be exported: it runs the network itself. The backbone is a deep copy
of the model with the head replaced by ``nn.Identity``, so the model's output must be
the head's output (checked on the first batch).
"""

# No "from __future__ import annotations": TorchScript reads the class annotations.
import copy
import os
import warnings
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
    ash_all: bool

    def __init__(self, weight, bias, clip, kind: str, temperature: float, ash_keep: int = -1):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.use_clip = clip is not None
        self.clip = float(clip) if clip is not None else 0.0
        self.kind = _KINDS[kind]
        self.temperature = float(temperature)
        self.ash_keep = int(ash_keep)
        self.ash_all = self.ash_keep >= weight.shape[1]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.ash_keep >= 0:
            h = _ash_s(h, self.ash_keep, self.ash_all)
        if self.use_clip:
            h = torch.clamp(h, max=self.clip)
        f = torch.nn.functional.linear(h, self.weight, self.bias)
        return _score_logits(f, self.kind, self.temperature)


def _ash_s(h: torch.Tensor, keep: int, keep_all: bool) -> torch.Tensor:
    """ASH-S of each row (:func:`opnp.detectors.ash.ash_s`): keep the ``keep`` largest
    entries (ties: the lowest-indexed), scale them by exp(sum before / sum after), not
    scaled where the kept entries sum to 0. ``keep_all``: ``keep`` >= the feature size."""
    if keep <= 0:
        return torch.zeros_like(h)
    s1 = h.sum(dim=1)
    if not keep_all:
        kth = torch.topk(h, keep, dim=1)[0][:, -1:]
        above = h > kth
        tied = h == kth
        room = keep - above.sum(dim=1, keepdim=True)
        mask = above | (tied & (torch.cumsum(tied.to(torch.int64), dim=1) <= room))
        kept = torch.where(mask, h, torch.zeros_like(h))
    else:
        kept = h
    s2 = kept.sum(dim=1)
    zero = s2 == 0
    scale = torch.exp(s1 / torch.where(zero, torch.ones_like(s2), s2))
    return kept * torch.where(zero, torch.ones_like(scale), scale).unsqueeze(1)


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
    """x -> (logits, score): the backbone once, the original head and the score head.
    Floating inputs are cast to the model's dtype; non-finite features raise in eager
    mode and TorchScript (see the module docstring)."""

    check_finite: bool

    def __init__(
        self, backbone: nn.Module, head: nn.Module, scorer: nn.Module, score_dtype, input_dtype
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.scorer = scorer
        self.score_dtype = score_dtype
        self.input_dtype = input_dtype
        self.check_finite = True

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:  # noqa: UP006
        if x.is_floating_point():
            x = x.to(self.input_dtype)
        h = self.backbone(x)
        if self.check_finite and not (torch.compiler.is_compiling() or torch.jit.is_tracing()):
            bad = ~torch.isfinite(h).all(dim=1)
            if bool(bad.any()):
                row = int(torch.nonzero(bad)[0, 0])
                raise ValueError(
                    "the features (head input) of input row "
                    + str(row)
                    + " are NaN or infinite (NaN in the input or the model): no score"
                )
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
    if md.needs_network:
        raise ValueError(
            f"{md.method} cannot be exported as one forward pass: it runs the network on the "
            "input images itself (needs_network; ODIN: a gradient step on the input); use "
            "ModelDetector.score"
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
    module = DetectorModule(backbone, head, scorer, score_dtype or torch.float64, md.input_dtype)
    return module.to(md.device).eval()


EXPORTERS = ("auto", "export", "script")
ONNX_EXPORTERS = ("auto", "dynamo", "torchscript")


def _as_module(module) -> nn.Module:
    """A DetectorModule (or any nn.Module); a fitted ModelDetector is exported through
    its ``to_module()``."""
    if hasattr(module, "to_module") and not isinstance(module, nn.Module):
        module = module.to_module()
    if not isinstance(module, nn.Module):
        raise ValueError(f"expected an nn.Module or a ModelDetector, got {type(module).__name__}")
    return module


def _example(example) -> torch.Tensor:
    if not isinstance(example, torch.Tensor) or example.ndim < 1 or len(example) < 2:
        raise ValueError(
            "example must be a batch tensor of at least 2 inputs (the batch dimension is "
            f"exported as dynamic), got {getattr(example, 'shape', type(example).__name__)}"
        )
    return example


def _batch_dim():
    return ({0: torch.export.Dim("batch")},)


def _fallback_warning(what: str, old: str, err: Exception) -> None:
    warnings.warn(
        f"{what} failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
        f"used the deprecated {old} instead",
        UserWarning,
        stacklevel=3,
    )


def _script(module: nn.Module):
    with warnings.catch_warnings():  # deprecated in recent torch: chosen knowingly here
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
        return torch.jit.script(module)


def export_program(module, example, exporter: str = "auto"):
    """``module`` (a :class:`DetectorModule`, or a fitted ModelDetector) as a deployable
    graph: ``torch.export.export`` with a dynamic batch dimension (``exporter="export"``;
    call ``.module()`` on the result to run it), or a ``torch.jit.script`` module
    (``"script"``, deprecated in recent torch). ``"auto"``: torch.export, falling back to
    TorchScript with a UserWarning where torch.export fails. ``example``: a batch of at
    least 2 inputs."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    module = _as_module(module)
    example = _example(example)
    if exporter == "script":
        return _script(module)
    try:
        return torch.export.export(module, (example,), dynamic_shapes=_batch_dim())
    except Exception as err:
        if exporter == "export":
            raise
        _fallback_warning("torch.export.export", "torch.jit.script", err)
        return _script(module)


def export_onnx(module, example, path, exporter: str = "auto") -> str:
    """Write ``module`` (a :class:`DetectorModule`, or a fitted ModelDetector) to the ONNX
    file ``path``: inputs ``x``, outputs ``logits`` and ``score``, dynamic batch. Returns
    the exporter used: ``"dynamo"`` (``torch.onnx.export(dynamo=True)``, needs ``onnx``
    and ``onnxscript``) or ``"torchscript"`` (``dynamo=False``, deprecated in recent
    torch; needs ``onnx``). ``"auto"``: dynamo, falling back to the TorchScript-based
    exporter with a UserWarning where dynamo fails (e.g. onnxscript is not installed)."""
    if exporter not in ONNX_EXPORTERS:
        raise ValueError(f"exporter must be one of {ONNX_EXPORTERS}, got {exporter!r}")
    module = _as_module(module)
    example = _example(example)
    path = os.fspath(path)
    names = {"input_names": ["x"], "output_names": ["logits", "score"]}
    if exporter in ("auto", "dynamo"):
        try:
            program = torch.onnx.export(
                module, (example,), dynamo=True, dynamic_shapes=_batch_dim(), verbose=False,
                **names,
            )  # fmt: skip
            program.save(path)
            return "dynamo"
        except Exception as err:
            if exporter == "dynamo":
                raise
            _fallback_warning("the dynamo ONNX exporter", "TorchScript-based exporter", err)
    with warnings.catch_warnings():  # deprecated in recent torch: chosen knowingly here
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
        torch.onnx.export(
            module, (example,), path, dynamo=False,
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}, "score": {0: "batch"}},
            **names,
        )  # fmt: skip
    return "torchscript"
