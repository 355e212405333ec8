"""The torch paths of the numerical core (opnp.backend) equal the numpy paths.

On a machine without a GPU the torch path runs on the CPU (``device="cpu"``); on a GPU
the same code runs with ``device="cuda"`` or CUDA tensors (the CUDA cases below skip
without one). No timing here.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import opnp
from opnp import backend, bootstrap
from opnp.grid import score_pruning_grid
from opnp.sensitivity import neuron_sensitivity, parameter_sensitivity

CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])


def count_calls(monkeypatch, module, name) -> dict:
    """Wrap ``module.name`` to count its calls (proves the torch path ran)."""
    calls = {"n": 0}
    real = getattr(module, name)

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)
    return calls


@pytest.fixture(scope="module")
def layer():
    rng = np.random.default_rng(11)
    w = rng.normal(size=(9, 40)) * 0.5
    b = rng.normal(size=9)
    train = np.maximum(rng.normal(size=(500, 40)), 0)
    test = np.maximum(rng.normal(size=(170, 40)) * 1.2, 0)
    labels = rng.integers(0, 9, 500)
    return w, b, train, test, labels


def test_device_choice():
    x = np.zeros((2, 3))
    assert backend.torch_device(x) is None
    assert backend.torch_device(torch.zeros(2, 3)) is None  # CPU tensors: numpy path
    assert backend.torch_device(x, "cpu") == torch.device("cpu")
    assert backend.is_tensor(torch.zeros(1)) and not backend.is_tensor(x)


def test_tensor_checks_name_the_problem():
    bad = torch.zeros(4, 3, dtype=torch.float64)
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="features has 1 NaN or infinite values, first at row 2"):
        backend.check_tensor_features(bad, "features")
    with pytest.raises(ValueError, match="3 columns but the FC weight has 5 inputs"):
        backend.check_tensor_features(torch.zeros(4, 3), "features", dim=5)
    with pytest.raises(ValueError, match="must be 2-dimensional"):
        backend.check_tensor_features(torch.zeros(4), "features")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["per_sample", "batch"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sensitivity_torch_equals_numpy(layer, device, reduction, temperature, monkeypatch):
    w, b, train, _, _ = layer
    calls = count_calls(monkeypatch, opnp.sensitivity, "_sensitivity_torch")
    signed = train - 0.3  # signed features: the two reductions differ
    ref = parameter_sensitivity(
        signed, w, b, temperature=temperature, reduction=reduction, chunk_size=64
    )
    for features in (signed, torch.from_numpy(signed)):
        got = parameter_sensitivity(
            features, w, b, temperature=temperature, reduction=reduction, chunk_size=64,
            device=device,
        )  # fmt: skip
        assert isinstance(got, np.ndarray) and got.dtype == np.float64
        np.testing.assert_allclose(got, ref, rtol=1e-12)
    assert calls["n"] == 2


def test_sensitivity_torch_rows_memmap_and_float32(layer, tmp_path):
    w, b, train, _, _ = layer
    path = tmp_path / "train.npy"
    np.save(path, train.astype(np.float32))
    mm = np.load(path, mmap_mode="r")
    rows = np.arange(3, 500, 7)
    ref = parameter_sensitivity(mm, w, b, rows=rows, chunk_size=20)
    got = parameter_sensitivity(mm, w, b, rows=rows, chunk_size=20, device="cpu")
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    got_t = parameter_sensitivity(torch.from_numpy(train), w, b, rows=rows, device="cpu")
    np.testing.assert_allclose(got_t, parameter_sensitivity(train[rows], w, b), rtol=1e-12)
    ref32 = parameter_sensitivity(train, w, b, precision="float32")
    got32 = parameter_sensitivity(train, w, b, precision="float32", device="cpu")
    np.testing.assert_allclose(got32, ref32, rtol=1e-5)  # float32 sums, another order


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("score", ["energy", "msp", "maxlogit"])
def test_grid_torch_equals_numpy(layer, device, score, monkeypatch):
    w, b, train, test, _ = layer
    calls = count_calls(monkeypatch, opnp.grid, "score_grid_torch")
    s = parameter_sensitivity(train, w, b)
    n = neuron_sensitivity(s)
    configs = [
        dict(weight_low=a, weight_high=b_, neuron_low=c, neuron_high=d)
        for a, b_, c, d in itertools.product([0, 10, 40], [0, 1, 5], [0, 10], [0, 5, 20])
    ]
    kw = dict(score=score, temperature=1.5, react_threshold=1.4, chunk_size=60)
    ref = score_pruning_grid(test, w, b, s, n, configs, **kw)
    got = score_pruning_grid(torch.from_numpy(test), w, b, s, n, configs, device=device, **kw)
    np.testing.assert_allclose(got, ref, rtol=1e-9)
    assert calls["n"] == 1


DETECTORS = [
    ("energy", {}),
    ("msp", {"temperature": 2.0}),
    ("maxlogit", {}),
    ("react", {"percentile": 80}),
    ("dice", {"percentile": 70}),
    ("dice+react", {}),
    ("ash", {"percentile": 65}),
    ("gradnorm", {}),
    ("mahalanobis", {}),
    ("opnp", {"weight_low": 10, "neuron_high": 5}),
    ("opnp+react", {"weight_high": 1}),
    ("rpp", {"percentage": 20}),
    ("line", {}),  # its own score(): grouped by predicted class, on the device too
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("name", "params"), DETECTORS, ids=[d[0] for d in DETECTORS])
def test_detector_torch_scores_equal_numpy(layer, device, name, params):
    w, b, train, test, labels = layer
    ref_det = opnp.create_detector(name, weight=w, bias=b, **params).fit(train, labels)
    det = opnp.create_detector(name, weight=w, bias=b, device=device, chunk_size=50, **params)
    det.fit(train, labels)
    assert name == "line" or det._has_torch_scorer()  # LINe has its own score()
    ref = ref_det.score(test)
    np.testing.assert_allclose(det.score(test), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(det.score(torch.from_numpy(test)), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_knn_torch_equals_numpy(layer, device):
    _, _, train, test, _ = layer
    ref = opnp.create_detector("knn", k=7).fit(train).score(test)
    got = opnp.create_detector("knn", k=7, device=device).fit(train).score(test)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)  # float64 inner products
    fast = opnp.create_detector("knn", k=7, device=device, compute_dtype="float32")
    np.testing.assert_allclose(fast.fit(train).score(test), ref, rtol=0, atol=2e-6)


def test_detector_torch_path_checks_dimensions(layer):
    w, b, _, test, _ = layer
    det = opnp.create_detector("energy", weight=w, bias=b, device="cpu")
    with pytest.raises(ValueError, match="columns but the FC weight has 40 inputs"):
        det.score(torch.from_numpy(test[:, :10]))


@pytest.mark.parametrize("device", DEVICES)
def test_bootstrap_torch_identical_to_numpy(device, monkeypatch):
    rng = np.random.default_rng(2)
    ids = np.round(rng.normal(1.0, 1.0, 700), 1)  # rounded: ties between and within sets
    oods = np.round(rng.normal(0.0, 1.0, 300), 1)
    ref = bootstrap.bootstrap_metrics(ids, oods, n_resamples=37, seed=4, ood_name="x")
    calls = count_calls(monkeypatch, bootstrap, "_bootstrap_torch")
    got = bootstrap.bootstrap_metrics(
        ids, oods, n_resamples=37, seed=4, ood_name="x", block=10, device=device
    )
    assert calls["n"] == 1
    for metric in ("fpr95", "auroc"):
        np.testing.assert_array_equal(got[metric], ref[metric])


def test_line_scores_with_torch_on_the_device(layer, monkeypatch):
    """LINe's own score() takes the torch path with device= (not numpy on the host)."""
    from opnp.detectors.line import LINe

    w, b, train, test, labels = layer
    ref = opnp.create_detector("line", weight=w, bias=b).fit(train, labels).score(test)
    det = opnp.create_detector("line", weight=w, bias=b, device="cpu").fit(train, labels)

    def numpy_path(*args):
        raise AssertionError("numpy path used")

    monkeypatch.setattr(LINe, "_by_predicted_class", numpy_path)
    np.testing.assert_allclose(det.score(test), ref, rtol=1e-10, atol=1e-12)
