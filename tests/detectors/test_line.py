from __future__ import annotations

import numpy as np
import pytest

from opnp.detectors import create_detector


def _setup():
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(3, 6)), rng.normal(size=3)
    train = np.maximum(rng.normal(size=(90, 6)), 0)
    labels = np.repeat([0, 1, 2], 30)
    return w, b, train, labels


def test_contribution_equals_taylor_autograd():
    """A_cj = mean over class-c samples of h_j * d f_c / d h_j (activation x gradient)."""
    torch = pytest.importorskip("torch")
    w, b, train, labels = _setup()
    det = create_detector("line", weight=w, bias=b, p_w=50, p_a=50, clip=1.0).fit(train, labels)
    layer = torch.nn.Linear(6, 3).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w))
        layer.bias.copy_(torch.from_numpy(b))
    ref = np.zeros((3, 6))
    for x, y in zip(torch.from_numpy(train), labels, strict=True):
        x = x.clone().requires_grad_(True)
        layer(x[None])[0, y].backward()
        ref[y] += (x * x.grad).detach().numpy() / 30
    np.testing.assert_allclose(det.contribution, ref, rtol=1e-12)


def test_line_score_hand_assembled():
    w, b, train, labels = _setup()
    det = create_detector("line", weight=w, bias=b, p_w=30, p_a=40, clip=0.7).fit(train, labels)
    x = np.maximum(np.random.default_rng(1).normal(size=(12, 6)), 0)
    expected = []
    for h in x:
        hc = np.minimum(h, 0.7)
        k = np.argmax(w @ hc + b)
        a = det.contribution[k]
        imp = np.abs(a)[None, :] * w
        wmask = imp > np.percentile(imp, 30)
        nmask = a > np.percentile(a, 40)
        f = (w * wmask) @ (hc * nmask) + b
        expected.append(np.log(np.exp(f).sum()))
    np.testing.assert_allclose(det.score(x), expected, rtol=1e-12)
    np.testing.assert_allclose(np.log(np.exp(det.logits(x)).sum(1)), expected, rtol=1e-12)
