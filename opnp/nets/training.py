"""Seeded training of a classifier on the ID training split (the workflow's train rule).

SGD with momentum 0.9 and weight decay, cross-entropy, learning rate annealed with a
cosine schedule (the paper's appendix A: ResNet-50, 100 epochs, lr 0.01, cosine). The
schedule is applied per iteration: lr_t = lr * (1 + cos(pi * t / T)) / 2 over the
T = epochs * batches_per_epoch steps. On CPU two runs with the same seed give
bit-identical weights: deterministic algorithms are enforced for the duration, the
shuffling and augmentation draw from seeded ``torch.Generator`` objects, and DataLoader
workers are seeded from the base seed and their worker id.

Across CPUs. PyTorch compiles its CPU kernels once per instruction set (``default``,
``avx2``, ``avx512``; ``ATEN_CPU_CAPABILITY`` picks one) and oneDNN and MKL pick theirs at
run time, so the same seed used to give different weights on different x86-64 machines.
Measured with torch 2.14 (tests/nets/test_training.py runs each capability in a subprocess),
per training step: oneDNN convolutions differ; the ATen BatchNorm kernel reduces in
vector-width order; ``exp``/``log`` of (log-)softmax are vectorised approximations; and
the AVX2 builds fuse ``a + alpha * b`` (SGD's update, weight decay) and the uniform
init's scaling into one FMA; MKL's GEMM (convolutions, FC layer) picks its kernel by the
CPU (``MKL_ENABLE_INSTRUCTIONS`` simulates another one; ``MKL_CBWR=COMPATIBLE`` did not
make it equal). Elementwise ops, ReLU, pooling and means over dimensions gave the same
bits. On CPU training therefore runs :func:`portable_cpu`: convolutions without oneDNN
(ATen's im2col + GEMM), MKL pinned to its SSE4.2 kernels (:func:`pin_mkl_code_path`),
BatchNorm from means and elementwise ops, the loss in float64 (its exp/log rounded to
float32 gives the same float32 everywhere, barring a float64 result within 1e-16 of a
float32 rounding boundary), and the SGD update as separately rounded multiplications and
additions; ``small_cnn`` draws its initial weights the same way
(:mod:`opnp.nets.architectures`). With these, two epochs on the digits give bitwise equal
weights under every ATen capability and MKL instruction set this CPU has. Feature
extraction on CPU runs the same context (:mod:`opnp.nets.extraction`): the logits of a
trained model differed by ~3e-6 between capabilities before, and are equal with it. Not covered: a
CPU without SSE4.2, other torch/MKL versions (other kernels), and GPUs (unchanged).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from opnp._validation import check_positive_int

__all__ = [
    "train_classifier",
    "evaluate_accuracy",
    "random_crop_flip",
    "portable_cpu",
    "pin_mkl_code_path",
    "AUGMENTATIONS",
]


def random_crop_flip(
    x: torch.Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True
) -> torch.Tensor:
    """Per-sample random crop after zero-padding by ``padding`` px and (optionally)
    random horizontal flip, on a normalised batch (N, C, H, W). Zero padding of a
    normalised tensor pads with the mean colour, as in the usual CIFAR recipe."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).tolist()
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).tolist()
    out = torch.stack(
        [padded[i, :, y : y + h, c : c + w] for i, (y, c) in enumerate(zip(dy, dx, strict=True))]
    )
    if flip:
        flips = torch.rand(n, generator=generator) < 0.5
        out[flips] = out[flips].flip(-1)
    return out


#: Named batch augmentations (config ``train.augment``). ``crop``: random crop only
#: (digits must not be mirrored); ``crop_flip``: random crop + horizontal flip (CIFAR).
AUGMENTATIONS: dict[str, Callable] = {
    "crop": lambda x, g: random_crop_flip(x, g, padding=max(1, x.shape[-1] // 8), flip=False),
    "crop_flip": lambda x, g: random_crop_flip(x, g, padding=4, flip=True),
}


@contextlib.contextmanager
def _deterministic():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def _portable_batch_norm(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """``self(x)`` from means and elementwise ops only (every step exactly rounded or
    reduced in the same order on every CPU; see the module docstring). In training mode it
    normalises by the batch statistics and updates the running ones as ``nn.BatchNorm``
    does (momentum, unbiased var); in eval mode by the running statistics."""
    if not self.track_running_stats or self.momentum is None:
        raise ValueError("portable BatchNorm covers running statistics with a momentum only")
    dims = [d for d in range(x.dim()) if d != 1]
    shape = [1, -1] + [1] * (x.dim() - 2)
    if self.training:
        mean = x.mean(dims)
        centred = x - mean.view(shape)
        var = (centred * centred).mean(dims)
    else:
        centred = x - self.running_mean.view(shape)
        var = self.running_var
    out = centred / (var + self.eps).sqrt().view(shape)
    if self.affine:
        out = out * self.weight.view(shape) + self.bias.view(shape)
    if self.training:
        with torch.no_grad():
            n = x.numel() // x.shape[1]
            unbiased = var * (n / max(n - 1, 1))
            self.running_mean.mul_(1.0 - self.momentum).add_(mean * self.momentum)
            self.running_var.mul_(1.0 - self.momentum).add_(unbiased * self.momentum)
            self.num_batches_tracked.add_(1)
    return out


def pin_mkl_code_path() -> bool:
    """Make MKL run its SSE4.2 kernels on every CPU (what ``MKL_ENABLE_INSTRUCTIONS=SSE4_2``
    does); True if they are in use. MKL otherwise picks its GEMM kernels by the CPU at run
    time, and a different kernel is a different rounding of every convolution and FC
    product: the trained weights differed by percents after two epochs (measured with
    ``MKL_ENABLE_INSTRUCTIONS``). MKL accepts this only before its first call; it is linked
    into libtorch_cpu, whose symbols torch loads without exporting them."""
    library = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    try:
        enable = ctypes.CDLL(str(library)).mkl_serv_enable_instructions
    except (AttributeError, OSError):
        return False
    return enable(0) == 1  # MKL_ENABLE_SSE4_2


@contextlib.contextmanager
def portable_cpu(model: nn.Module) -> Iterator[bool]:
    """Run ``model`` (training or inference) on CPU with ops that give the same bits on
    every x86-64 CPU (module docstring): no oneDNN, portable BatchNorm, MKL pinned. Yields
    whether MKL could be pinned (not after its first call in this process)."""
    pinned = pin_mkl_code_path()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.forward = _portable_batch_norm.__get__(m)
    # (mkldnn.flags() would also reset oneDNN's TF32 switch, with a warning on CPU)
    onednn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield pinned
    finally:
        torch.backends.mkldnn.enabled = onednn
        for m in norms:
            del m.forward


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor, portable: bool) -> torch.Tensor:
    if portable:  # exp/log in float64, rounded once to float32 (module docstring)
        return F.cross_entropy(logits.double(), labels).float()
    return F.cross_entropy(logits, labels)


@torch.no_grad()
def _sgd_step(params, buffers, lr: float, momentum: float, weight_decay: float) -> None:
    """``torch.optim.SGD``'s update (momentum, no dampening, coupled weight decay), each
    multiply and add its own rounded operation: the fused ``add(..., alpha=)`` of the
    optimizer rounds once on AVX2 builds and twice on others."""
    for index, p in enumerate(params):
        if p.grad is None:
            continue
        d = p.grad + p * weight_decay if weight_decay else p.grad
        if buffers[index] is None:
            buffers[index] = d.clone()
        else:
            buffers[index].mul_(momentum).add_(d)
        p.sub_(buffers[index] * lr)


def seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32  # set by the DataLoader from its generator
    np.random.seed(seed)  # noqa: NPY002 - transforms may use the legacy global RNG
    random.seed(seed)


def resolve_device(device: str | torch.device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def train_classifier(
    model: nn.Module,
    train_dataset,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float = 5e-4,
    seed: int = 0,
    num_workers: int = 0,
    schedule: str = "cosine",
    augment: str | Callable | None = None,
    momentum: float = 0.9,
    device: str | torch.device = "cpu",
    log: Callable[..., object] = print,
) -> dict:
    """Train ``model`` in place on ``(image, label)`` pairs; returns the history.

    ``schedule``: ``"cosine"`` (per iteration, to 0) or ``"constant"``. ``augment``:
    None, a name in :data:`AUGMENTATIONS` or ``f(batch, generator) -> batch``. The last
    incomplete batch of each epoch is dropped (BatchNorm statistics of a tiny batch are
    noise) unless the dataset is smaller than one batch. History: per-epoch ``loss``,
    ``train_accuracy`` (percent, on the augmented batches), ``lr`` (at the epoch's
    start), and ``seconds``.
    """
    epochs, batch_size, augment = _check_training_arguments(
        train_dataset, epochs, lr, batch_size, weight_decay, schedule, augment
    )
    device = resolve_device(device)
    torch.manual_seed(seed)
    loader = _shuffled_loader(train_dataset, batch_size, num_workers, seed, device)
    augment_gen = torch.Generator().manual_seed(seed + 1)
    model.to(device)
    portable = device.type == "cpu"
    sgd = _SGD(
        [p for p in model.parameters() if p.requires_grad],
        _learning_rate(schedule, lr, epochs * len(loader)),
        momentum,
        weight_decay,
    )
    history = {"epoch": [], "loss": [], "train_accuracy": [], "lr": [], "seconds": 0.0}
    start = time.perf_counter()
    with (
        _deterministic(),
        portable_cpu(model) if portable else contextlib.nullcontext(True) as pinned,
    ):
        if not pinned:
            log("MKL's code path could not be pinned (MKL already ran): weights may differ by CPU")
        for epoch in range(1, epochs + 1):
            model.train()
            epoch_lr = sgd.lr()
            loss_sum, correct, seen = _train_epoch(
                model, loader, sgd, augment, augment_gen, device, portable
            )
            history["epoch"].append(epoch)
            history["loss"].append(loss_sum / seen)
            history["train_accuracy"].append(100.0 * correct / seen)
            history["lr"].append(epoch_lr)
            log(
                f"epoch {epoch}/{epochs}: loss {loss_sum / seen:.4f}, "
                f"train accuracy {100.0 * correct / seen:.2f} %, lr {epoch_lr:.5f}"
            )
    model.eval()
    history["seconds"] = time.perf_counter() - start
    return history


def _check_training_arguments(
    train_dataset, epochs, lr, batch_size, weight_decay, schedule, augment
):
    """``(epochs, batch_size, augment)`` checked, ``augment`` resolved to a function (or
    None); ValueError naming a bad argument."""
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    if not (isinstance(lr, int | float) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not (isinstance(weight_decay, int | float) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    if isinstance(augment, str):
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {sorted(AUGMENTATIONS)}, got {augment!r}")
        augment = AUGMENTATIONS[augment]
    if len(train_dataset) == 0:
        raise ValueError("train_dataset is empty")
    return epochs, batch_size, augment


def _shuffled_loader(train_dataset, batch_size: int, num_workers: int, seed: int, device):
    """The training batches: shuffled by a generator seeded with ``seed``; the last
    incomplete batch dropped unless the dataset is smaller than one batch."""
    return DataLoader(
        train_dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(train_dataset) >= batch_size,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=seed_worker,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
    )


def _learning_rate(schedule: str, lr: float, total_steps: int) -> Callable[[int], float]:
    """The learning rate at each step: constant, or cosine from ``lr`` to 0 over
    ``total_steps``."""

    def lr_at(step: int) -> float:
        if schedule == "constant":
            return lr
        return lr * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))

    return lr_at


class _SGD:
    """SGD with momentum and weight decay (:func:`_sgd_step`) on ``params``, its
    learning rate ``lr_at(step)`` of the step count it keeps."""

    def __init__(self, params, lr_at: Callable[[int], float], momentum, weight_decay):
        self.params = params
        self.buffers: list[torch.Tensor | None] = [None] * len(params)
        self.lr_at = lr_at
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.step_count = 0

    def lr(self) -> float:
        """The learning rate of the next step."""
        return self.lr_at(self.step_count)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        _sgd_step(self.params, self.buffers, self.lr(), self.momentum, self.weight_decay)
        self.step_count += 1


def _train_epoch(model, loader, sgd: _SGD, augment, augment_gen, device, portable: bool):
    """One pass over ``loader``, one SGD step per batch; returns the summed loss (over
    samples), the correct predictions and the samples seen (augmented batches)."""
    loss_sum, correct, seen = 0.0, 0, 0
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if augment is not None:
            images = augment(images, augment_gen)
        logits = model(images)
        loss = _cross_entropy(logits, labels, portable)
        sgd.zero_grad()
        loss.backward()
        sgd.step()
        loss_sum += float(loss.detach()) * len(labels)
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
    return loss_sum, correct, seen


@torch.inference_mode()
def evaluate_accuracy(
    model: nn.Module,
    dataset,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> float:
    """Top-1 accuracy in percent over the labelled items (label >= 0) of ``dataset``."""
    batch_size = check_positive_int(batch_size, "batch_size")
    device = resolve_device(device)
    model.to(device).eval()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    correct, total = 0, 0
    for images, labels in loader:
        labels = labels.to(device)
        keep = labels >= 0
        if not keep.any():
            continue
        predictions = model(images.to(device, non_blocking=True)).argmax(1)
        correct += int((predictions[keep] == labels[keep]).sum())
        total += int(keep.sum())
    if total == 0:
        raise ValueError(
            f"dataset {getattr(dataset, 'name', type(dataset).__name__)} has no labelled items "
            "(all labels are -1): accuracy is undefined"
        )
    return 100.0 * correct / total
