"""ODIN on a tiny linear model against a hand-computed perturbation."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from opnp.detectors.odin import odin_scores  # noqa: E402


def test_odin_hand_computed_linear_model():
    # Model f(x) = W x, 2 classes, inputs (B, 2) with "channels" = 2.
    w = torch.tensor([[2.0, -1.0], [0.5, 1.0]], dtype=torch.float64)
    model = torch.nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(w)
    x = torch.tensor([[1.0, 0.5], [-1.0, 2.0]], dtype=torch.float64)
    t, eps, std = 10.0, 0.1, (0.5, 2.0)
    got = odin_scores(model, x, temperature=t, epsilon=eps, std=std)
    expected = []
    for xi in x.numpy():
        f = w.numpy() @ xi / t
        p = np.exp(f - f.max())
        p /= p.sum()
        k = int(np.argmax(f))
        # d/dx of -log p_k(x) = -(W_k - sum_c p_c W_c) / T
        grad = -(w.numpy()[k] - p @ w.numpy()) / t
        x2 = xi - eps * np.sign(grad) / np.array(std)
        f2 = w.numpy() @ x2 / t
        p2 = np.exp(f2 - f2.max())
        expected.append((p2 / p2.sum()).max())
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # epsilon 0 is temperature-scaled MSP
    plain = torch.softmax(model(x) / t, dim=1).max(1).values.detach().numpy()
    np.testing.assert_allclose(odin_scores(model, x, t, 0.0, std), plain, rtol=1e-12)


def test_odin_bad_input():
    model = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError, match="std must have 1 or 3"):
        odin_scores(model, torch.zeros(2, 3), std=(1.0, 2.0))
    with pytest.raises(ValueError, match="epsilon must be a nonnegative number, got -1"):
        odin_scores(model, torch.zeros(2, 3), epsilon=-1)
