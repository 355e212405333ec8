from __future__ import annotations

import numpy as np
import pytest

from opnp.detectors import create_detector


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_gradnorm_closed_form_equals_autograd(temperature):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w, b, h = rng.normal(size=(5, 7)), rng.normal(size=5), rng.normal(size=(6, 7))
    got = create_detector("gradnorm", weight=w, bias=b, temperature=temperature).score(h)
    layer = torch.nn.Linear(7, 5).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w))
        layer.bias.copy_(torch.from_numpy(b))
    ref = []
    for x in torch.from_numpy(h):
        layer.zero_grad()
        log_p = torch.log_softmax(layer(x[None]) / temperature, dim=1)
        loss = torch.sum(-torch.ones(1, 5, dtype=torch.float64) / 5 * log_p)  # KL(u||p) + const
        loss.backward()
        ref.append(layer.weight.grad.abs().sum().item())
    np.testing.assert_allclose(got, ref, rtol=1e-10)
