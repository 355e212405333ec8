"""KNN's optional faiss backend equals the numpy path (exact flat index, float32)."""

from __future__ import annotations

import numpy as np
import pytest

import opnp


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    train = np.maximum(rng.normal(size=(3000, 64)), 0).astype(np.float32)
    test = np.maximum(rng.normal(size=(400, 64)) * 1.2, 0).astype(np.float32)
    test[0] = 0.0  # a zero row: distance sqrt(2) to every training feature
    return train, test


def test_default_backend_is_numpy_and_not_recorded():
    det = opnp.create_detector("knn", k=5)
    assert "backend" not in det.params
    assert "backend" not in opnp.create_detector("knn", k=5, backend="numpy").params


def test_bad_backend():
    with pytest.raises(ValueError, match="backend must be None, 'numpy' or 'faiss'"):
        opnp.create_detector("knn", backend="annoy")


@pytest.mark.parametrize("k", [1, 50, 1000])
def test_faiss_equals_numpy(data, k):
    pytest.importorskip("faiss", reason="faiss not installed (pip install faiss-cpu)")
    train, test = data
    ref = opnp.create_detector("knn", k=k).fit(train).score(test)
    det = opnp.create_detector("knn", k=k, backend="faiss", chunk_size=128).fit(train)
    assert det.params["backend"] == "faiss"
    got = det.score(test)
    # faiss: float32 inner products of unit vectors; numpy: float64 ones (opnp.detectors.knn)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6)
    assert got[0] == pytest.approx(-np.sqrt(2.0))


def test_faiss_with_subsampled_bank(data):
    pytest.importorskip("faiss", reason="faiss not installed (pip install faiss-cpu)")
    train, test = data
    kw = dict(k=10, max_train=1000, seed=3)
    ref = opnp.create_detector("knn", **kw).fit(train).score(test)
    got = opnp.create_detector("knn", backend="faiss", **kw).fit(train).score(test)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6)


def test_faiss_missing_is_a_clear_error(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("no faiss here")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    with pytest.raises(ValueError, match="pip install faiss-cpu"):
        opnp.create_detector("knn", backend="faiss")
