from __future__ import annotations

import sys

import numpy as np
import pytest
from memory_helpers import resident_pages  # tests/ is on sys.path

from opnp.detectors import create_detector


def test_knn_kth_distance_hand_computed():
    train = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0]])
    det = create_detector("knn", k=2).fit(train)
    x = np.array([[5.0, 0.0]])  # normalised (1, 0)
    # distances to normalised train: 0, sqrt2, 2, sqrt(2 - sqrt2) -> sorted 0, 0.765, ...
    assert det.score(x)[0] == pytest.approx(-np.sqrt(2 - np.sqrt(2)), rel=1e-6)
    det3 = create_detector("knn", k=3).fit(train)
    assert det3.score(x)[0] == pytest.approx(-np.sqrt(2), rel=1e-6)


def test_knn_matches_brute_force_and_subsample():
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(300, 8)), rng.normal(size=(40, 8))
    det = create_detector("knn", k=7, chunk_size=16).fit(train)
    zt = train / np.linalg.norm(train, axis=1, keepdims=True)
    zq = test / np.linalg.norm(test, axis=1, keepdims=True)
    dist = np.linalg.norm(zq[:, None] - zt[None], axis=2)
    np.testing.assert_allclose(det.score(test), -np.sort(dist, axis=1)[:, 6], rtol=1e-5)
    sub = create_detector("knn", k=7, max_train=100, seed=3).fit(train)
    assert sub.train_bank.shape == (100, 8)
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        create_detector("knn", k=0)


@pytest.mark.parametrize("kwargs", [{}, {"max_train": 300, "seed": 2}])
def test_knn_streams_the_bank_from_the_memory_map_with_the_held_banks_scores(
    tmp_path, monkeypatch, kwargs
):
    from opnp.detectors.knn import KNN, l2_normalise

    rng = np.random.default_rng(1)
    train = np.maximum(rng.normal(size=(500, 16)), 0).astype(np.float16)
    np.save(tmp_path / "train.npy", train)
    memmap = np.load(tmp_path / "train.npy", mmap_mode="r")
    test = rng.normal(size=(60, 16))
    monkeypatch.setattr(KNN, "similarity_block", 60 * 37)  # bank blocks of 37 rows
    streamed = create_detector("knn", k=5, chunk_size=32, **kwargs).fit(memmap)
    scores = streamed.score(test)
    assert streamed._bank is None, "the numpy scorer built the whole bank"
    assert streamed._train is memmap, "the training features were copied"
    held = create_detector("knn", k=5, chunk_size=32, **kwargs).fit(memmap)
    rows = np.arange(500)
    if kwargs:
        rows = np.sort(np.random.default_rng(2).choice(500, size=300, replace=False))
    expected_bank = l2_normalise(train[rows].astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(held.train_bank, expected_bank)
    np.testing.assert_array_equal(held.score(test), scores)
    # and the same numbers as a brute-force search of that bank
    zq = l2_normalise(test)
    kth = -np.sort(-(zq @ expected_bank.astype(np.float64).T), axis=1)[:, 4]
    np.testing.assert_allclose(scores, -np.sqrt(np.maximum(2 - 2 * kth, 0)), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("k", [3, 100])
def test_knn_leaves_the_training_features_untouched_and_equals_float64_search(dtype, k):
    """The float32 screen scales a block of training rows by their inverse norms: it
    must be a copy (a float32 array's block used to be a view), and the recomputed k-th
    inner product must equal a float64 brute-force search of the stored bank."""
    from opnp.detectors.knn import l2_normalise

    rng = np.random.default_rng(k)
    train = np.maximum(rng.normal(size=(700, 24)), 0).astype(dtype)
    before = train.copy()
    test = rng.normal(size=(30, 24))
    scores = create_detector("knn", k=k, chunk_size=8).fit(train).score(test)
    np.testing.assert_array_equal(train, before)
    bank = l2_normalise(train.astype(np.float64)).astype(np.float32).astype(np.float64)
    kth = -np.sort(-(l2_normalise(test) @ bank.T), axis=1)[:, k - 1]
    np.testing.assert_allclose(scores, -np.sqrt(np.maximum(2 - 2 * kth, 0)), rtol=1e-13)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_knn_scan_does_not_keep_the_memory_mapped_bank_resident(tmp_path):
    """A scan of a memory-mapped bank drops each block's pages after reading it (the
    whole float16 store would otherwise stay in the job's RSS: 4.9 GiB on ImageNet)."""
    rng = np.random.default_rng(0)
    train = np.maximum(rng.normal(size=(8192, 1024)), 0).astype(np.float16)  # 16 MiB
    np.save(tmp_path / "train.npy", train)
    memmap = np.load(tmp_path / "train.npy", mmap_mode="r")
    det = create_detector("knn", k=20).fit(memmap)
    det.similarity_block = 64 * 512  # bank blocks of 512 rows for the 64 queries
    det.score(rng.normal(size=(64, 1024)))
    file_pages = train.nbytes // 4096
    assert resident_pages(memmap) < file_pages // 4, (resident_pages(memmap), file_pages)
