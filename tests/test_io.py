"""Atomic writes, checksums, provenance and config hashes (opnp.io)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from opnp import io


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    with io.atomic_write(target, "w") as handle:
        handle.write("first")
    assert target.read_text() == "first"

    with pytest.raises(RuntimeError, match="boom"), io.atomic_write(target, "w") as handle:
        handle.write("half-written")
        raise RuntimeError("boom")
    # The old content survives and no temporary file is left behind.
    assert target.read_text() == "first"
    assert _leftovers(target.parent) == []


def test_atomic_write_rejects_read_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"), io.atomic_write(tmp_path / "x", "rb"):
        pass


def test_npy_npz_json_parquet_roundtrip(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    io.save_npy_atomic(tmp_path / "a.npy", arr)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), arr)

    io.save_npz_atomic(tmp_path / "fc.npz", weight=arr, bias=np.ones(3))
    with np.load(tmp_path / "fc.npz") as data:
        np.testing.assert_array_equal(data["weight"], arr)
        np.testing.assert_array_equal(data["bias"], np.ones(3))

    io.write_json_atomic(tmp_path / "r.json", {"b": np.int64(2), "a": np.arange(2)})
    text = (tmp_path / "r.json").read_text()
    assert json.loads(text) == {"a": [0, 1], "b": 2}
    assert text.index('"a"') < text.index('"b"')  # sorted keys

    frame = pd.DataFrame({"x": [1, 2], "y": ["p", "q"]})
    io.write_parquet_atomic(frame, tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "t.parquet"), frame)
    assert _leftovers(tmp_path) == []


def test_sha256_file_matches_hashlib(tmp_path):
    data = np.random.default_rng(0).bytes(5_000_000)  # more than one read chunk
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert io.sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_config_hash_is_canonical():
    a = {"x": 1, "y": {"b": [1, 2], "a": 0.5}}
    b = {"y": {"a": 0.5, "b": [1, 2]}, "x": 1}
    assert io.config_hash(a) == io.config_hash(b)
    assert io.config_hash(a) != io.config_hash({**a, "x": 2})
    expected = hashlib.sha256(
        json.dumps(a, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:12]
    assert io.config_hash(a) == expected
    # a job's settings may be a list (workflow/rules/common.smk: result_keys)
    settings = [[0.1, 1.0], [0, 1]]
    assert io.config_hash(settings) == hashlib.sha256(b"[[0.1,1.0],[0,1]]").hexdigest()[:12]
    assert io.config_hash({"seeds": np.arange(2)}) == io.config_hash({"seeds": [0, 1]})


def test_provenance_fields(monkeypatch):
    record = io.provenance()
    assert set(record) >= {"opnp_version", "git_commit", "python"}
    assert record["python"] == ".".join(map(str, sys.version_info[:3]))
    assert record["opnp_version"] != ""

    # Without git the commit is "unknown", never an exception.
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    io._git_commit.cache_clear()
    monkeypatch.setattr(subprocess, "run", no_git)
    try:
        assert io.provenance()["git_commit"] == "unknown"
    finally:
        io._git_commit.cache_clear()


def test_atomic_write_removes_a_killed_writers_temporary_files(tmp_path):
    """A writer killed mid-write (no cleanup ran) leaves .<name>.<random>.tmp; the next
    write of the same path removes it, and leaves other files' temporaries alone."""
    stale = tmp_path / ".scores.npy.k1ll3d_0.tmp"
    stale.write_bytes(b"half")
    other = tmp_path / ".scores.npy.sha.abcdefgh.tmp"  # scores.npy.sha's temporary
    other.write_bytes(b"other")
    io.save_npy_atomic(tmp_path / "scores.npy", np.arange(3))
    assert not stale.exists()
    assert other.exists()
    np.testing.assert_array_equal(np.load(tmp_path / "scores.npy"), np.arange(3))


def test_feature_store_removes_a_killed_writers_temporary_files(tmp_path):
    """The feature store's memory-mapped writers share the temporaries' naming and
    cleanup (opnp.io.temporary_sibling)."""
    from opnp.features import ArrayWriters

    stale = tmp_path / ".set.labels.npy.k1ll3d_0.tmp"
    stale.write_bytes(b"half")
    with ArrayWriters(str(tmp_path / "set"), 2, np.dtype(np.float32)) as writers:
        writers.write(0, np.ones((2, 3)), np.ones((2, 4)), np.arange(2))
        writers.commit()
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "set.features.npy", "set.labels.npy", "set.logits.npy"
    ]  # fmt: skip
