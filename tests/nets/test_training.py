"""Seeded training loop and accuracy (opnp.nets.training)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from opnp.nets.architectures import small_cnn
from opnp.nets.training import evaluate_accuracy, random_crop_flip, train_classifier

REPO = Path(__file__).resolve().parents[2]


def _toy_images(n=96, seed=0):
    """Two classes of 8x8 images: a bright left half or a bright right half, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    x = 0.3 * torch.randn(n, 1, 8, 8, generator=g)
    x[labels == 0, :, :, :4] += 1.0
    x[labels == 1, :, :, 4:] += 1.0
    return TensorDataset(x, labels)


def _train(seed, epochs=2, **kw):
    torch.manual_seed(123)  # same initial weights; the training seed varies separately
    model = small_cnn(num_classes=2, in_channels=1, feature_dim=32)
    history = train_classifier(
        model,
        _toy_images(),
        epochs=epochs,
        lr=0.05,
        batch_size=16,
        weight_decay=5e-4,
        seed=seed,
        log=lambda *a: None,
        **kw,
    )
    return model, history


def test_training_is_deterministic_given_the_seed():
    before = torch.are_deterministic_algorithms_enabled()  # other tests may have set it
    torch.use_deterministic_algorithms(False)
    try:
        a, ha = _train(seed=0, augment="crop")
        # training switches deterministic algorithms on and restores the caller's state
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before)
    b, hb = _train(seed=0, augment="crop")
    c, _ = _train(seed=1, augment="crop")
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert ha["loss"] == hb["loss"]
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


def test_training_learns_and_follows_the_cosine_schedule():
    model, history = _train(seed=0, epochs=4)
    assert history["loss"][-1] < history["loss"][0]
    assert evaluate_accuracy(model, _toy_images(seed=1), batch_size=32) >= 95.0
    steps_per_epoch = 96 // 16
    total = 4 * steps_per_epoch
    expected = [
        0.05 * 0.5 * (1 + math.cos(math.pi * e * steps_per_epoch / total)) for e in range(4)
    ]
    assert history["lr"] == pytest.approx(expected)
    assert not model.training


def test_evaluate_accuracy_ignores_unlabelled_items():
    class Fixed(nn.Module):
        def forward(self, x):  # predicts class 1 when x > 0, else class 0
            return torch.cat([-x, x], dim=1)

    x = torch.tensor([[1.0], [-1.0], [2.0], [-3.0], [5.0]])
    labels = torch.tensor([1, 1, 0, 0, -1])  # right, wrong, wrong, right, unlabelled
    assert evaluate_accuracy(Fixed(), TensorDataset(x, labels), batch_size=2) == 50.0
    with pytest.raises(ValueError, match="no labelled"):
        evaluate_accuracy(Fixed(), TensorDataset(x, torch.full((5,), -1)), batch_size=2)


def test_random_crop_flip():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    torch.testing.assert_close(random_crop_flip(x, g, padding=0, flip=False), x)
    out = random_crop_flip(x, g, padding=2, flip=True)
    assert out.shape == x.shape
    # Every output row is a (possibly flipped) shifted window of the zero-padded input.
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, y : y + 4, c : c + 4] for y in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)


def test_invalid_arguments():
    model = small_cnn(num_classes=2, feature_dim=8)
    data = _toy_images(8)
    for kwargs, word in (
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"schedule": "step"}, "schedule"),
        ({"augment": "mixup"}, "augment"),
    ):
        args = {"epochs": 1, "lr": 0.1, "batch_size": 4, **kwargs}
        with pytest.raises(ValueError, match=word):
            train_classifier(model, data, log=lambda *a: None, **args)


# ------------------------------------------------------------- across CPU kernels

_TRAIN_IN_SUBPROCESS = """
import sys
import numpy as np
import torch
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset
from opnp.features import load_features
from opnp.nets.architectures import small_cnn
from opnp.nets.extraction import extract_features
from opnp.nets.training import train_classifier

torch.set_num_threads(1)
digits = load_digits()
# 16x16 digits with their many exact ties (background zeros): max-pool and ReLU ties are
# where kernels that break ties differently would show.
images = np.kron(digits.images[:512], np.ones((2, 2))) / 16.0
x = torch.tensor((images - 0.3) / 0.4, dtype=torch.float32)[:, None]
y = torch.tensor(digits.target[:512])
torch.manual_seed(0)
model = small_cnn(num_classes=10, in_channels=1)
train_classifier(model, TensorDataset(x, y), epochs=2, lr=0.05, batch_size=64, seed=0,
                 log=lambda *a: None)
# The workflow's next step: the cached features and logits of the trained model.
stem = sys.argv[1] + ".features"
extract_features(model, TensorDataset(x[:200], y[:200]), stem, batch_size=64, device="cpu",
                 progress=False)
cached = load_features(stem)
out = {**model.state_dict(), "features": torch.tensor(np.array(cached.features)),
       "logits": torch.tensor(np.array(cached.logits))}
torch.save(out, sys.argv[1])
"""


def _cpu_flags() -> set[str]:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return set()
    return (
        set(re.findall(r"^flags\s*:\s*(.*)$", text, re.M)[0].split()) if "flags" in text else set()
    )


def _train_with_env(tmp_path, name: str, env: dict | None = None, **extra: str) -> dict:
    out = tmp_path / f"{name}.pt"
    subprocess.run(
        [sys.executable, "-c", _TRAIN_IN_SUBPROCESS, str(out)],
        env={
            **(os.environ if env is None else env),
            "PYTHONPATH": str(REPO),
            "OMP_NUM_THREADS": "1",
            **extra,
        },
        check=True,
        timeout=600,
    )
    return torch.load(out)


def _machines() -> list:
    """(ATen capability, MKL instruction set) pairs that stand for other x86-64 CPUs."""
    flags = _cpu_flags()
    avx512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags
    return [
        ("default", "SSE4_2"),
        pytest.param(
            "avx2", "AVX2", marks=pytest.mark.skipif("avx2" not in flags, reason="no AVX2")
        ),
        pytest.param(
            "avx512",
            "AVX512",
            marks=pytest.mark.skipif(not avx512, reason="this CPU has no AVX-512"),
        ),
    ]


@pytest.fixture(scope="module")
def weights_native_kernels(tmp_path_factory):
    """Trained with the kernels torch and MKL pick for this CPU."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
    }
    return _train_with_env(tmp_path_factory.mktemp("kernels"), "native", env=env)


@pytest.mark.parametrize(("capability", "mkl"), _machines())
def test_training_and_extraction_give_the_same_bits_on_every_cpu_kernel_set(
    capability, mkl, weights_native_kernels, tmp_path
):
    # ATen's CPU kernels are compiled once per capability and MKL picks its own by the
    # CPU: another x86-64 machine runs other kernels (opnp.nets.training's docstring
    # lists what used to differ: every weight, by percents after two epochs; the
    # extracted logits by ~3e-6 even from equal weights).
    weights = _train_with_env(
        tmp_path, capability, ATEN_CPU_CAPABILITY=capability, MKL_ENABLE_INSTRUCTIONS=mkl
    )
    assert list(weights) == list(weights_native_kernels)
    differing = [k for k, v in weights.items() if not torch.equal(v, weights_native_kernels[k])]
    assert not differing, f"ATen {capability} / MKL {mkl} changes {differing}"


def test_portable_cpu_batch_norm_matches_torchs():
    """The portable BatchNorm is nn.BatchNorm2d's arithmetic in another order: outputs,
    gradients and running statistics agree to float32 rounding, in both modes."""
    from opnp.nets.training import portable_cpu

    torch.manual_seed(0)
    reference = nn.BatchNorm2d(6)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-0.5, 0.5)
    portable = nn.Sequential(nn.BatchNorm2d(6))
    portable[0].load_state_dict(reference.state_dict())
    x = torch.randn(16, 6, 5, 5) * 3 + 1
    x_ref, x_port = x.clone().requires_grad_(), x.clone().requires_grad_()
    with portable_cpu(portable):
        out = portable(x_port)
        out.square().sum().backward()
    expected = reference(x_ref)
    expected.square().sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_port.grad, x_ref.grad, rtol=1e-4, atol=1e-4)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(portable[0].state_dict()[key], value, rtol=1e-6, atol=1e-6)
    reference.eval()
    portable.eval()
    with torch.no_grad(), portable_cpu(portable):
        torch.testing.assert_close(portable(x), reference(x), rtol=1e-5, atol=1e-5)
    # the module's own forward is back afterwards
    assert "forward" not in vars(portable[0])
