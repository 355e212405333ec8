"""Feature extraction: exactness, sharding/resume, atomicity, NaN checks (opnp.nets.extraction, opnp.features)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from opnp.features import array_path, load_features, merge_feature_parts, part_rows
from opnp.nets.architectures import FeatureClassifier, small_cnn
from opnp.nets.extraction import extract_features, save_fc

N, D_IN, D, C = 47, 12, 6, 3


class Rows(Dataset):
    """(x_i, label_i) rows that records which indices were read and can fail on demand."""

    def __init__(self, x, labels, fail_at=None):
        self.x, self.labels, self.fail_at = x, labels, fail_at
        self.read = []
        self.name = "toy"

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if self.fail_at is not None and i >= self.fail_at:
            raise RuntimeError(f"simulated crash at item {i}")
        self.read.append(i)
        return self.x[i], int(self.labels[i])


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D_IN, generator=g)
    labels = torch.randint(-1, C, (N,), generator=g)
    return x, labels


def _model(seed=0):
    torch.manual_seed(seed)
    backbone = nn.Sequential(nn.Linear(D_IN, D), nn.ReLU())
    return FeatureClassifier(backbone, nn.Linear(D, C))


def _files(directory):
    return sorted(p.name for p in directory.rglob("*") if p.is_file())


def test_cached_arrays_equal_the_models_own_outputs(tmp_path):
    x, labels = _data()
    model = _model()
    stem = tmp_path / "out" / "toy"
    manifest = extract_features(
        model, Rows(x, labels), stem, batch_size=8, progress=False, meta={"model": "m"}
    )
    fs = load_features(stem, verify_checksums=True)
    with torch.no_grad():
        h = model.backbone(x).numpy()
        logits = model(x).numpy()
    np.testing.assert_allclose(fs.features, h, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fs.logits, logits, rtol=1e-6, atol=1e-6)
    w, b = model.fc.weight.detach().numpy(), model.fc.bias.detach().numpy()
    np.testing.assert_allclose(fs.logits, fs.features @ w.T + b, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fs.labels, labels.numpy())
    assert fs.features.dtype == np.float32 and fs.labels.dtype == np.int64
    assert isinstance(fs.features, np.memmap)
    assert manifest["n"] == N and manifest["model"] == "m" and manifest["dataset"] == "toy"
    for kind in ("features", "logits", "labels"):
        record = manifest["arrays"][kind]
        path = array_path(stem, kind)
        assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert json.loads(array_path(stem, "manifest").read_text()) == manifest
    assert not [f for f in _files(tmp_path) if f.endswith(".tmp")]


def test_small_cnn_features_are_its_penultimate_layer(tmp_path):
    torch.manual_seed(0)
    model = small_cnn(num_classes=10, in_channels=1).eval()
    images = torch.rand(20, 1, 16, 16)
    ds = Rows(images, torch.zeros(20, dtype=torch.long))
    extract_features(model, ds, tmp_path / "s", batch_size=7, progress=False)
    fs = load_features(tmp_path / "s")
    with torch.no_grad():
        b = model.backbone
        maps = b.stage3(b.pool(b.stage2(b.pool(b.stage1(images)))))
        h = maps.mean(dim=(2, 3))
    np.testing.assert_allclose(fs.features, h.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fs.logits, model(images).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_sharded_equals_single_pass_and_cleans_up(tmp_path):
    x, labels = _data()
    model = _model()
    extract_features(model, Rows(x, labels), tmp_path / "a", batch_size=8, progress=False)
    manifest = extract_features(
        model, Rows(x, labels), tmp_path / "b", batch_size=8, shard_size=10, progress=False
    )
    a, b = load_features(tmp_path / "a"), load_features(tmp_path / "b")
    # Shards change the batches (8 + 2 images): on CPU the portable convolutions are
    # GEMMs whose rounding depends on the batch size, a float32 ulp or so (atol).
    np.testing.assert_allclose(a.features, b.features, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert manifest["shards"] == {"computed": 5, "reused": 0}
    assert not (tmp_path / "b.shards").exists()


def test_resume_recomputes_only_missing_shards(tmp_path):
    x, labels = _data()
    model = _model()
    stem = tmp_path / "toy"
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract_features(
            model, Rows(x, labels, fail_at=25), stem, batch_size=5, shard_size=10, progress=False
        )
    shards = tmp_path / "toy.shards"
    assert sorted(p.name for p in shards.glob("shard-*")) == ["shard-00000.npz", "shard-00001.npz"]
    assert not array_path(stem, "manifest").exists() and not array_path(stem, "features").exists()
    assert not [f for f in _files(tmp_path) if f.endswith(".tmp")]

    # A write interrupted mid-shard leaves only a temporary name: never taken as finished.
    (shards / ".shard-00002.npz.abcd.tmp").write_bytes(b"partial")
    rerun = Rows(x, labels)
    manifest = extract_features(model, rerun, stem, batch_size=5, shard_size=10, progress=False)
    assert sorted(rerun.read) == list(range(20, N))
    assert manifest["shards"] == {"computed": 3, "reused": 2}
    reference = Rows(x, labels)
    extract_features(model, reference, tmp_path / "ref", batch_size=5, progress=False)
    np.testing.assert_allclose(
        load_features(stem).features, load_features(tmp_path / "ref").features, rtol=1e-6
    )
    assert not shards.exists()


def test_corrupt_or_stale_shards_are_recomputed(tmp_path):
    x, labels = _data()
    stem = tmp_path / "toy"
    with pytest.raises(RuntimeError):
        extract_features(
            _model(), Rows(x, labels, fail_at=25), stem, batch_size=5, shard_size=10, progress=False
        )
    shards = tmp_path / "toy.shards"
    (shards / "shard-00001.npz").write_bytes(b"truncated")  # e.g. a damaged disk
    rerun = Rows(x, labels)
    extract_features(_model(), rerun, stem, batch_size=5, shard_size=10, progress=False)
    assert sorted(rerun.read) == list(range(10, N))

    # Shards of other weights are never mixed into a new run.
    with pytest.raises(RuntimeError):
        extract_features(
            _model(), Rows(x, labels, fail_at=25), stem, batch_size=5, shard_size=10, progress=False
        )
    other = Rows(x, labels)
    extract_features(_model(seed=1), other, stem, batch_size=5, shard_size=10, progress=False)
    assert sorted(other.read) == list(range(N))
    with torch.no_grad():
        expected = _model(seed=1).backbone(x).numpy()
    np.testing.assert_allclose(load_features(stem).features, expected, rtol=1e-6, atol=1e-6)


class NaNRows(nn.Module):
    """ReLU features, but NaN for every row whose first input is above 100."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(D_IN, D)

    def forward(self, x):
        h = torch.relu(self.linear(x))
        return torch.where((x[:, :1] > 100).expand_as(h), torch.full_like(h, float("nan")), h)


@pytest.mark.parametrize("shard_size", [None, 10])
def test_nan_features_raise_before_any_output(tmp_path, shard_size):
    x, labels = _data()
    x[[3, 30], 0] = 1000.0
    model = FeatureClassifier(NaNRows(), nn.Linear(D, C))
    stem = tmp_path / "toy"
    with pytest.raises(
        ValueError,
        match=r"dataset toy: 12 NaN or infinite feature values and 6 in the logits, in 2 of 47",
    ):
        extract_features(
            model, Rows(x, labels), stem, batch_size=8, shard_size=shard_size, progress=False
        )
    assert not any(
        array_path(stem, k).exists() for k in ("features", "logits", "labels", "manifest")
    )
    assert not [f for f in _files(tmp_path) if f.endswith(".tmp")]


def test_old_outputs_survive_a_failed_rerun(tmp_path):
    x, labels = _data()
    stem = tmp_path / "toy"
    extract_features(_model(), Rows(x, labels), stem, batch_size=8, progress=False)
    before = array_path(stem, "features").read_bytes()
    with pytest.raises(RuntimeError):
        extract_features(_model(1), Rows(x, labels, fail_at=30), stem, batch_size=8, progress=False)
    assert array_path(stem, "features").read_bytes() == before


def test_load_features_checks_the_manifest(tmp_path):
    x, labels = _data()
    stem = tmp_path / "toy"
    extract_features(_model(), Rows(x, labels), stem, batch_size=8, progress=False)
    np.save(array_path(stem, "labels"), np.zeros(N - 1, np.int64))
    with pytest.raises(ValueError, match=r"labels\.npy has shape \[46\]"):
        load_features(stem)
    np.save(array_path(stem, "labels"), np.zeros(N, np.int64))
    load_features(stem)  # shapes agree again
    with pytest.raises(ValueError, match="SHA-256"):
        load_features(stem, verify_checksums=True)
    with pytest.raises(FileNotFoundError, match="did not finish"):
        load_features(tmp_path / "never")


def test_invalid_arguments(tmp_path):
    x, labels = _data()
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(_model(), Rows(x, labels), tmp_path / "t", batch_size=0)
    with pytest.raises(ValueError, match="features_and_logits"):
        extract_features(nn.Linear(2, 2), Rows(x, labels), tmp_path / "t")
    with pytest.raises(ValueError, match="empty"):
        extract_features(_model(), Rows(x[:0], labels[:0]), tmp_path / "t")


def test_save_fc(tmp_path):
    model = _model()
    save_fc(model, tmp_path / "fc.npz")
    with np.load(tmp_path / "fc.npz") as data:
        np.testing.assert_array_equal(data["weight"], model.fc.weight.detach().numpy())
        np.testing.assert_array_equal(data["bias"], model.fc.bias.detach().numpy())
    save_fc(nn.Linear(4, 2, bias=False), tmp_path / "nobias.npz")
    with np.load(tmp_path / "nobias.npz") as data:
        np.testing.assert_array_equal(data["bias"], np.zeros(2, np.float32))


# ------------------------------------------------------------ parts: one set, many jobs


def test_part_rows_cover_every_image_once_in_even_parts():
    for n, parts in [(47, 1), (47, 5), (10, 10), (1_281_167, 26)]:
        bounds = [part_rows(n, parts, i) for i in range(parts)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
        sizes = [stop - start for start, stop in bounds]
        assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="fewer images than parts"):
        part_rows(3, 4, 0)
    with pytest.raises(ValueError, match="part index"):
        part_rows(10, 2, 2)


def _extract_parts(tmp_path, model, dataset, parts, **kwargs):
    stems = []
    for i in range(parts):
        stem = tmp_path / "parts" / f"part{i}"
        rows = part_rows(len(dataset), parts, i)
        manifest = extract_features(
            model, dataset, stem, batch_size=5, progress=False, rows=rows, **kwargs
        )
        assert manifest["n"] == rows[1] - rows[0]
        assert manifest["rows"] == {"start": rows[0], "stop": rows[1], "of": len(dataset)}
        stems.append(stem)
    return stems


@pytest.mark.parametrize("shard_size", [None, 4])
def test_merged_parts_equal_one_extraction_of_the_whole_set(tmp_path, shard_size):
    x, labels = _data()
    model = _model()
    whole = extract_features(model, Rows(x, labels), tmp_path / "whole", progress=False)
    dataset = Rows(x, labels)
    stems = _extract_parts(tmp_path, model, dataset, 3, shard_size=shard_size)
    assert sorted(dataset.read) == list(range(N))  # each image read once over all parts
    merged = merge_feature_parts(stems, tmp_path / "merged", meta={"dataset": "toy"})
    a, b = load_features(tmp_path / "whole"), load_features(tmp_path / "merged", True, True)
    np.testing.assert_allclose(b.features, a.features, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(b.logits, a.logits, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(b.labels, a.labels)
    assert merged["n"] == whole["n"] == N
    assert [p["start"] for p in merged["parts"]] == [0, 15, 31]
    assert "part" not in merged["meta"] and merged["dataset"] == "toy"


def test_merge_chunks_bound_memory_and_give_the_same_arrays(tmp_path):
    x, labels = _data()
    stems = _extract_parts(tmp_path, _model(), Rows(x, labels), 2)
    merge_feature_parts(stems, tmp_path / "big")
    merge_feature_parts(stems, tmp_path / "small", chunk_rows=3)
    big, small = load_features(tmp_path / "big"), load_features(tmp_path / "small")
    for kind in ("features", "logits", "labels"):
        np.testing.assert_array_equal(getattr(small, kind), getattr(big, kind))


def test_merge_refuses_parts_that_do_not_belong_together(tmp_path):
    x, labels = _data()
    stems = _extract_parts(tmp_path, _model(), Rows(x, labels), 3)
    out = tmp_path / "merged"
    with pytest.raises(ValueError, match="expected 15: parts are missing"):
        merge_feature_parts([stems[0], stems[2]], out)
    with pytest.raises(ValueError, match="last parts are missing"):
        merge_feature_parts(stems[:2], out)
    with pytest.raises(ValueError, match="starts at row 15, expected 0"):
        merge_feature_parts([stems[1], stems[0], stems[2]], out)
    other = tmp_path / "other"
    extract_features(
        _model(seed=1), Rows(x, labels), other, progress=False, rows=part_rows(N, 3, 1)
    )
    with pytest.raises(ValueError, match=r"part .*other differs .* in model_sha256"):
        merge_feature_parts([stems[0], other, stems[2]], out)
    extract_features(_model(), Rows(x, labels), tmp_path / "whole", progress=False)
    with pytest.raises(ValueError, match="whole extraction, not a part"):
        merge_feature_parts([tmp_path / "whole"], out)
    assert not list(tmp_path.glob("*merged*")), "a refused merge must write nothing"


def test_rows_out_of_range_are_refused_before_running_the_model(tmp_path):
    x, labels = _data()
    dataset = Rows(x, labels)
    for rows in [(0, N + 1), (5, 5), (-1, 3)]:
        with pytest.raises(ValueError, match="not a non-empty range"):
            extract_features(_model(), dataset, tmp_path / "s", progress=False, rows=rows)
    assert dataset.read == []
