"""Cross-checks against an independent library, pytorch-ood (PyPI ``pytorch-ood``).

pytorch-ood returns *outlier* scores (higher = OOD); opnp returns ID-confidence scores
(higher = ID). Its documented conventions, read from its source (version 0.4):

- MaxSoftmax, MaxLogit, EnergyBased, ODIN, KNN, GradNorm: the negated score (KNN: the
  distance itself; GradNorm: minus the L1 norm), so opnp == -peer.
- ReAct, DICE, ASH: hyperparameters are fractions in [0, 1] (opnp: percent); the score of
  the shaped / masked logits is EnergyBased, so opnp == -peer.
- Mahalanobis: the covariance is the class-centred scatter *not* divided by N, plus a
  ridge 1e-6 * I, inverted with ``torch.linalg.inv``; the score is half the squared
  distance. opnp divides by N and uses the pseudo-inverse (as the original Mahalanobis
  code, sklearn's EmpiricalCovariance, does), so on a non-singular covariance
  opnp == -2 N * peer (up to the ridge, ~1e-9 relative here). On a singular covariance
  (a feature dead on all training data) the two differ by design: the ridge puts
  1e6 on the null direction, the pseudo-inverse ignores it; the test below pins the
  exact difference.

Features are float32-representable (pytorch-ood casts some of them to float32), so the
comparisons are tight. Marked ``peer``; run by ``.ci/run`` with the rest of the suite.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import opnp

pood = pytest.importorskip("pytorch_ood.detector")

pytestmark = pytest.mark.peer

C, D, N_TRAIN, N_TEST = 7, 32, 400, 120


def f32(a: np.ndarray) -> np.ndarray:
    """float64 values that float32 represents exactly."""
    return a.astype(np.float32).astype(np.float64)


@pytest.fixture(scope="module", params=["random", "relu"])
def feats(request):
    rng = np.random.default_rng(0)
    w, b = f32(rng.normal(size=(C, D)) / np.sqrt(D)), f32(rng.normal(size=C))
    train, test = rng.normal(size=(N_TRAIN, D)), rng.normal(size=(N_TEST, D))
    if request.param == "relu":
        train, test = np.maximum(train, 0), np.maximum(test, 0)
    labels = rng.integers(0, C, N_TRAIN)
    return {
        "kind": request.param,
        "w": w,
        "b": b,
        "train": f32(train),
        "test": f32(test),
        "labels": labels,
    }


def t(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a))


def logits(f) -> torch.Tensor:
    return t(f["test"]) @ t(f["w"]).T + t(f["b"])


def head(f):
    w, b = t(f["w"]), t(f["b"])
    return lambda h: h.flatten(1) @ w.T + b


def ours(name, f, **params):
    det = opnp.create_detector(name, weight=f["w"], bias=f["b"], **params)
    return det.fit(f["train"], f["labels"])


def close(actual, expected, rtol=1e-12):
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().cpu().numpy()
    np.testing.assert_allclose(
        actual, np.asarray(expected, dtype=np.float64), rtol=rtol, atol=1e-12
    )


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_msp_maxlogit_energy(feats, temperature):
    f = logits(feats)
    msp = ours("msp", feats, temperature=temperature).score(feats["test"])
    close(msp, -pood.MaxSoftmax.score(f, temperature))
    close(ours("maxlogit", feats).score(feats["test"]), -pood.MaxLogit.score(f))
    energy = ours("energy", feats, temperature=temperature).score(feats["test"])
    close(energy, -pood.EnergyBased.score(f, temperature))


@pytest.mark.parametrize("percentile", [80, 90])
def test_react(feats, percentile):
    det = ours("react", feats, percentile=percentile)
    peer = pood.ReAct(backbone=lambda x: x, head=head(feats), percentile=percentile / 100)
    peer.fit_feature_maps(t(feats["train"]), t(feats["labels"]))
    assert det.threshold == pytest.approx(peer.threshold, rel=1e-12)
    close(det.score(feats["test"]), -peer.predict_feature_maps(t(feats["test"])))


@pytest.mark.parametrize("percentile", [30, 70, 90])
def test_dice(feats, percentile):
    det = ours("dice", feats, percentile=percentile)
    peer = pood.DICE(None, t(feats["w"]), t(feats["b"]), p=percentile / 100)
    peer.fit_features(t(feats["train"]), t(feats["labels"]))
    # the peer computes the mean and the threshold in float32: the same mask
    np.testing.assert_array_equal(det.weight_mask, (peer.masked_w != 0).numpy())
    close(det.score(feats["test"]), -peer.predict_features(t(feats["test"])), rtol=1e-6)


@pytest.mark.parametrize("percentile", [65, 90])
def test_ash_s(feats, percentile):
    if feats["kind"] != "relu":
        pytest.skip("ASH-S is defined for nonnegative activations (sum after pruning > 0)")
    det = ours("ash", feats, percentile=percentile)
    peer = pood.ASH(lambda x: x, head(feats), variant="ash-s", percentile=percentile / 100)
    maps = t(feats["test"])[:, :, None, None]
    close(det.score(feats["test"]), -peer.predict_feature_maps(maps), rtol=1e-10)


@pytest.mark.parametrize("k", [1, 10])
def test_knn(feats, k):
    det = ours("knn", feats, k=k)
    peer = pood.KNN(None, k=k).fit_features(t(feats["train"]), t(feats["labels"]))
    # opnp's similarities are float32 products (opnp.detectors.knn)
    close(det.score(feats["test"]), -peer.predict_features(t(feats["test"])), rtol=2e-6)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_gradnorm(feats, temperature):
    layer = nn.Linear(D, C).double()
    with torch.no_grad():
        layer.weight.copy_(t(feats["w"]))
        layer.bias.copy_(t(feats["b"]))
    peer = pood.GradNorm(layer, param_filter=lambda n: n == "weight", temperature=temperature)
    expected = -peer.predict(t(feats["test"]))
    close(ours("gradnorm", feats, temperature=temperature).score(feats["test"]), expected, 1e-10)


def peer_mahalanobis(train, labels, test):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # its means / covariance follow the default dtype
    try:
        peer = pood.Mahalanobis(None).fit_features(t(train), t(labels))
        return peer.predict_features(t(test)).numpy()
    finally:
        torch.set_default_dtype(previous)


def test_mahalanobis_non_singular(feats):
    det = ours("mahalanobis", feats)
    peer = peer_mahalanobis(feats["train"], feats["labels"], feats["test"])
    # opnp: -(h-mu)^T (S/N)^+ (h-mu); peer: 0.5 (h-mu)^T (S + 1e-6 I)^-1 (h-mu)
    close(det.score(feats["test"]), -2 * N_TRAIN * peer, rtol=1e-7)


def test_mahalanobis_singular_covariance_differs_by_the_ridge():
    rng = np.random.default_rng(1)
    train = f32(np.maximum(rng.normal(size=(N_TRAIN, D)), 0))
    test = f32(np.maximum(rng.normal(size=(N_TEST, D)), 0))
    labels = rng.integers(0, C, N_TRAIN)
    dead = 3
    train[:, dead] = 0.0  # a unit never active on the training data: S is singular
    det = opnp.create_detector("mahalanobis").fit(train, labels)
    assert np.linalg.matrix_rank(det.covariance) == D - 1
    # Test features that are zero on the dead unit: both agree up to the scale.
    quiet = test.copy()
    quiet[:, dead] = 0.0
    peer_quiet = peer_mahalanobis(train, labels, quiet)
    close(det.score(quiet), -2 * N_TRAIN * peer_quiet, rtol=1e-7)
    # Active on the dead unit: the pseudo-inverse ignores the null direction (the score
    # of the quiet copy), the ridge inverse adds 0.5 * x^2 / 1e-6 to the peer's distance.
    close(det.score(test), det.score(quiet), rtol=1e-10)
    peer = peer_mahalanobis(train, labels, test)
    close(peer - peer_quiet, 0.5 * test[:, dead] ** 2 / 1e-6, rtol=1e-6)


# -- one small real model, through opnp.from_model -------------------------------------


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(48, 6)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = SmallNet().eval()
    trunk = copy.deepcopy(model)
    trunk.fc = nn.Identity()
    g = torch.Generator().manual_seed(3)
    x_train = torch.randn(120, 3, 8, 8, generator=g)
    y_train = torch.arange(120) % 6
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x_train, y_train), batch_size=32
    )
    return model, trunk, loader, torch.randn(30, 3, 8, 8, generator=g)


def from_model(model, method, loader, **params):
    return opnp.from_model(model, method, progress=False, **params).fit(loader)


def test_model_energy_msp_gradnorm(net):
    model, _, loader, x = net
    close(from_model(model, "energy", loader).score(x), -pood.EnergyBased(model)(x), 1e-6)
    close(from_model(model, "msp", loader).score(x), -pood.MaxSoftmax(model)(x), 1e-6)
    peer = pood.GradNorm(model, param_filter=lambda n: n == "fc.weight")
    close(from_model(model, "gradnorm", loader).score(x), -peer(x), 1e-5)


def test_model_react_knn_dice_mahalanobis(net):
    model, trunk, loader, x = net
    react = pood.ReAct(trunk, model.fc, percentile=0.85).fit(loader)
    ours_react = from_model(model, "react", loader, percentile=85)
    assert ours_react.detector.threshold == pytest.approx(react.threshold, rel=1e-6)
    close(ours_react.score(x), -react(x), 1e-5)
    knn = pood.KNN(trunk, k=7).fit(loader)
    close(from_model(model, "knn", loader, k=7).score(x), -knn(x), 2e-5)
    dice = pood.DICE(trunk, model.fc.weight, model.fc.bias, p=0.7).fit(loader)
    close(from_model(model, "dice", loader, percentile=70).score(x), -dice(x), 1e-5)
    with torch.no_grad():
        h_train = torch.cat([trunk(xb) for xb, _ in loader]).double().numpy()
        h_test = trunk(x).double().numpy()
    peer = peer_mahalanobis(h_train, np.arange(120) % 6, h_test)
    maha = from_model(model, "mahalanobis", loader)
    # These features have small variances, so the peer's ridge shows (1e-5 relative);
    # with the ridge added to opnp's covariance the two agree to rounding.
    close(maha.score(x), -2 * 120 * peer, 1e-4)
    fitted = maha.detector
    ridged = opnp.create_detector("mahalanobis").fit_gaussian(
        fitted.classes, fitted.class_means, fitted.covariance + np.eye(48) * 1e-6 / 120
    )
    close(ridged.score(h_test), -2 * 120 * peer, 1e-9)


@pytest.mark.parametrize(("temperature", "epsilon"), [(1000.0, 0.0014), (10.0, 0.01)])
def test_model_odin(net, temperature, epsilon):
    model, _, loader, x = net
    std = [0.5, 0.25, 1.0]
    peer = pood.ODIN(model, eps=epsilon, temperature=temperature, norm_std=std)
    ours_odin = from_model(model, "odin", loader, temperature=temperature, epsilon=epsilon, std=std)
    close(ours_odin.score(x), -peer(x), 1e-6)
