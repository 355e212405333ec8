"""The on-disk feature store: penultimate features, logits and labels of one (model,
dataset), written once by :func:`opnp.nets.extraction.extract_features` and read by every
detector, sensitivity and ablation downstream (linear algebra on these arrays).

Files of one feature set (the stem is e.g. ``results/digits/features/smallcnn/digits-test``):

- ``<stem>.features.npy`` (N, D) float32 (float16 on request), penultimate features h;
- ``<stem>.logits.npy`` (N, C) float32, ``fc(h)`` computed in float32;
- ``<stem>.labels.npy`` (N,) int64, -1 for unlabelled OOD images;
- ``<stem>.manifest.json``: shapes, dtypes and SHA-256 of each array, ``n``, the
  caller's ``meta`` (model and dataset names ...), the extraction's settings, timing and
  provenance. It is written last: its presence means the arrays are complete.

Every array is written to a temporary file (rows at their offsets through a file handle,
so written pages never stay in the writer's memory) that is renamed into place only when
complete (:class:`ArrayWriters`). A dataset too large for one job is extracted in
*parts*: each job extracts the rows :func:`part_rows` of its part (its manifest records
the range and the model's SHA-256); :func:`merge_feature_parts` checks that the parts
cover every row once, from the same weights, and streams them into one feature set.
:func:`select_feature_rows` writes a feature set of some rows of another (a replicate's
parts of its pool). Numpy only: this runs in the analysis environment, which has no torch.
"""

from __future__ import annotations

import json
import os
import time
from collections import namedtuple
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from opnp._validation import check_positive_int
from opnp.io import provenance, sha256_file, temporary_sibling, write_json_atomic

__all__ = [
    "ARRAYS",
    "FORMAT_VERSION",
    "FeatureSet",
    "array_path",
    "load_features",
    "merge_feature_parts",
    "part_rows",
    "select_feature_rows",
]


#: Version of the on-disk layout written here (recorded in each manifest).
FORMAT_VERSION = 1
ARRAYS = ("features", "logits", "labels")

FeatureSet = namedtuple("FeatureSet", ["features", "logits", "labels", "manifest"])
FeatureSet.__doc__ = "Cached arrays of one (model, dataset) and their manifest dict."


def array_path(out_stem: str | os.PathLike, kind: str) -> Path:
    """``<stem>.<kind>.npy`` (kind: features, logits, labels) or ``<stem>.manifest.json``."""
    stem = os.fspath(out_stem)
    return Path(f"{stem}.manifest.json" if kind == "manifest" else f"{stem}.{kind}.npy")


class ArrayWriters:
    """Final arrays written to temporary ``.npy`` files, renamed only on success.

    Each file is created with its ``.npy`` header and full size, then rows are written
    at their offsets through a file handle, not a memory map: pages written that way are
    the kernel's page cache and never count in the writer's resident memory, which stays
    one block whatever N (a memory map kept every written page of the 5 GB ImageNet
    training features resident in the job). The bytes are the same. Used as a context
    manager, an exception discards the temporary files."""

    def __init__(self, out_stem: str, n: int, feature_dtype: np.dtype):
        self.out_stem = out_stem
        self.n = n
        self.feature_dtype = feature_dtype
        self.files: dict[str, Any] = {}
        self.layout: dict[str, tuple[int, int, tuple, np.dtype]] = {}
        self.tmp: dict[str, Path] = {}
        self.nonfinite = {"features": 0, "logits": 0}
        self.bad_rows = 0

    def _open(self, dims: dict[str, int]) -> None:
        dtypes = {"features": self.feature_dtype, "logits": np.float32, "labels": np.int64}
        for kind in ARRAYS:
            final = array_path(self.out_stem, kind)
            final.parent.mkdir(parents=True, exist_ok=True)
            name = temporary_sibling(final)
            self.tmp[kind] = name
            shape = (self.n,) if kind == "labels" else (self.n, dims[kind])
            dtype = np.dtype(dtypes[kind])
            # the header and the file's full size, as numpy writes them; no data pages
            created = np.lib.format.open_memmap(name, mode="w+", dtype=dtype, shape=shape)
            offset = created.offset
            del created
            row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
            self.layout[kind] = (offset, row_bytes, shape, dtype)
            self.files[kind] = open(name, "r+b")  # noqa: SIM115 - closed in commit/discard

    def write(self, row: int, features: np.ndarray, logits: np.ndarray, labels: np.ndarray):
        if not self.files:
            self._open({"features": features.shape[1], "logits": logits.shape[1]})
        bad_f = ~np.isfinite(features)
        bad_l = ~np.isfinite(logits)
        if bad_f.any() or bad_l.any():
            self.nonfinite["features"] += int(bad_f.sum())
            self.nonfinite["logits"] += int(bad_l.sum())
            self.bad_rows += int((bad_f.any(1) | bad_l.any(1)).sum())
        for kind, values in (("features", features), ("logits", logits), ("labels", labels)):
            offset, row_bytes, shape, dtype = self.layout[kind]
            block = np.ascontiguousarray(values, dtype=dtype)
            if block.shape[1:] != shape[1:] or row + len(block) > shape[0]:
                raise ValueError(
                    f"{kind} rows {row}..{row + len(block)} of shape {block.shape} do not fit "
                    f"the {shape} array"
                )
            handle = self.files[kind]
            handle.seek(offset + row * row_bytes)
            handle.write(memoryview(block).cast("B"))

    def _close(self) -> None:
        for handle in self.files.values():
            handle.close()
        self.files.clear()

    def discard(self) -> None:
        self._close()
        for path in self.tmp.values():
            path.unlink(missing_ok=True)

    def __enter__(self) -> ArrayWriters:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """An exception (before or during :meth:`commit`) removes the temporary files."""
        if exc_type is not None:
            self.discard()

    def commit(self) -> dict[str, dict]:
        """Flush, fsync, hash and rename the arrays into place; their manifest records."""
        records = {}
        for kind in ARRAYS:
            handle = self.files.pop(kind)
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            _, _, shape, dtype = self.layout[kind]
            tmp = self.tmp[kind]
            final = array_path(self.out_stem, kind)
            records[kind] = {
                "file": final.name,
                "shape": list(shape),
                "dtype": str(dtype),
                "sha256": sha256_file(tmp),
            }
            os.replace(tmp, final)
        return records


def feature_manifest(records: dict, n: int, model, dataset, meta: Mapping, **fields) -> dict:
    """The manifest of a feature set of ``n`` rows whose arrays :meth:`ArrayWriters.commit`
    recorded (``records``): sizes, names, ``meta``, the writer's ``fields``, provenance."""
    return {
        "n": n,
        "n_images": n,
        "feature_dim": records["features"]["shape"][1],
        "num_classes": records["logits"]["shape"][1],
        "arrays": records,
        "model": model,
        "dataset": dataset,
        "meta": dict(meta),
        **fields,
        "provenance": provenance(),
    }


def part_rows(n: int, parts: int, index: int) -> tuple[int, int]:
    """Rows ``(start, stop)`` of part ``index`` (0-based) when ``n`` images are split into
    ``parts`` contiguous parts as evenly as possible (sizes differ by at most one)."""
    n = check_positive_int(n, "n")
    parts = check_positive_int(parts, "parts")
    if parts > n:
        raise ValueError(f"cannot split {n} images into {parts} parts: fewer images than parts")
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or not 0 <= index < parts:
        raise ValueError(f"part index must be in 0..{parts - 1}, got {index!r}")
    return index * n // parts, (index + 1) * n // parts


#: Settings of the extraction a merged or selected feature set inherits from its source.
_INHERITED_KEYS = (
    "format_version",
    "seed",
    "device",
    "amp",
    "channels_last",
    "batch_size",
    "num_workers",
    "shard_size",
    "model_sha256",
)


def _derived_manifest(first: Mapping, records: dict, n: int, meta: Mapping, **extra) -> dict:
    """The manifest of a feature set written from another one's rows (a merge of parts,
    a selection of rows): the source's extraction settings, the new arrays, ``extra``."""
    inherited = {key: first[key] for key in _INHERITED_KEYS if key in first}
    model = meta.get("model", first.get("model"))
    dataset = meta.get("dataset", first.get("dataset"))
    return {**inherited, **feature_manifest(records, n, model, dataset, meta, **extra)}


def _check_parts(stems: list[str], sets: list) -> int:
    """The dataset size ``n`` of the parts, after checking that they cover the rows
    ``0 .. n`` exactly once and in order and come from the same run as the first
    (ValueError naming the part otherwise)."""
    first = sets[0].manifest
    expected_row = 0
    for stem, part in zip(stems, sets, strict=True):
        m = part.manifest
        if not m.get("rows"):
            raise ValueError(
                f"{stem} is a whole extraction, not a part (no 'rows' in its manifest)"
            )
        rows = m["rows"]
        mismatch = [
            key
            for key in ("model_sha256", "feature_dim", "num_classes")
            if m.get(key) != first.get(key)
        ]
        mismatch += [
            f"{kind} dtype"
            for kind in ARRAYS
            if m["arrays"][kind]["dtype"] != first["arrays"][kind]["dtype"]
        ]
        if rows["of"] != first["rows"]["of"]:
            mismatch.append("dataset size")
        if mismatch:
            raise ValueError(
                f"part {stem} differs from {stems[0]} in {', '.join(mismatch)}: the parts come "
                "from different runs (model, dataset or settings); rerun the extraction"
            )
        if rows["start"] != expected_row:
            raise ValueError(
                f"part {stem} starts at row {rows['start']}, expected {expected_row}: parts are "
                "missing, duplicated or out of order"
            )
        expected_row = rows["stop"]
    n = first["rows"]["of"]
    if expected_row != n:
        raise ValueError(f"the parts end at row {expected_row} of {n}: the last parts are missing")
    return n


def merge_feature_parts(
    part_stems,
    out_stem: str | os.PathLike,
    *,
    meta: Mapping[str, Any] | None = None,
    chunk_rows: int = 65536,
    log=None,
) -> dict:
    """Concatenate the feature sets of a dataset's parts (each written by
    :func:`extract_features` with ``rows=``) into one feature set under ``out_stem``;
    returns its manifest, which has the same form as a single job's.

    Before anything is written, checks that the parts cover the rows ``0 .. n`` exactly
    once and in order, were extracted from the same dataset size by the same weights
    (model SHA-256) with the same feature width, classes and dtypes; any mismatch raises
    ``ValueError`` naming the part. Rows are copied ``chunk_rows`` at a time from memory
    maps, so memory stays bounded by one chunk whatever the dataset size.
    """
    stems = [os.fspath(p) for p in part_stems]
    if not stems:
        raise ValueError("no parts to merge")
    chunk_rows = check_positive_int(chunk_rows, "chunk_rows")
    log = log or (lambda message: None)
    sets = [load_features(stem) for stem in stems]
    first = sets[0].manifest
    n = _check_parts(stems, sets)
    start_time = time.perf_counter()
    writers = ArrayWriters(os.fspath(out_stem), n, np.dtype(first["arrays"]["features"]["dtype"]))
    with writers:
        for part in sets:
            offset = part.manifest["rows"]["start"]
            for lo in range(0, len(part.labels), chunk_rows):
                hi = min(lo + chunk_rows, len(part.labels))
                writers.write(
                    offset + lo,
                    np.asarray(part.features[lo:hi]),
                    np.asarray(part.logits[lo:hi]),
                    np.asarray(part.labels[lo:hi]),
                )
        if writers.bad_rows:
            raise ValueError(
                f"parts {stems}: {writers.bad_rows} rows with NaN or infinite values; no output "
                "was written"
            )
        records = writers.commit()
    extract_seconds = sum(s.manifest["timing"]["seconds"] for s in sets)
    # The first part's meta (dataset manifest, ...) without its part number.
    meta = {
        **{k: v for k, v in first.get("meta", {}).items() if k != "part"},
        **dict(meta or {}),
    }
    manifest = _derived_manifest(
        first,
        records,
        n,
        meta,
        parts=[
            {
                "stem": Path(stem).name,
                **s.manifest["rows"],
                "seconds": s.manifest["timing"]["seconds"],
            }
            for stem, s in zip(stems, sets, strict=True)
        ],
        timing={
            "seconds": extract_seconds,
            "images_per_second": n / extract_seconds if extract_seconds > 0 else None,
            "merge_seconds": time.perf_counter() - start_time,
        },
    )
    write_json_atomic(array_path(out_stem, "manifest"), manifest)
    log(f"merged {len(stems)} parts into {n} images of {manifest['dataset']}")
    return manifest


def select_feature_rows(
    in_stem: str | os.PathLike,
    rows,
    out_stem: str | os.PathLike,
    *,
    meta: Mapping[str, Any] | None = None,
    chunk_rows: int = 65536,
) -> dict:
    """Write the feature set of ``rows`` (int indices, in the given order) of the feature
    set at ``in_stem`` under ``out_stem``, with a manifest of the same form as an
    extraction's that records where the rows came from. No network runs: a replicate's
    fit / validation / test parts are rows of its pool's one extraction. Memory stays
    bounded by ``chunk_rows`` rows."""
    source = load_features(in_stem)
    rows = np.asarray(rows, dtype=np.int64)
    n_source = len(source.labels)
    if rows.ndim != 1 or len(rows) == 0:
        raise ValueError(f"rows of {in_stem} must be a non-empty 1-d list, got shape {rows.shape}")
    if rows.min() < 0 or rows.max() >= n_source:
        raise ValueError(
            f"rows of {in_stem} must lie in 0..{n_source - 1}, got {rows.min()}..{rows.max()}"
        )
    chunk_rows = check_positive_int(chunk_rows, "chunk_rows")
    first = source.manifest
    writers = ArrayWriters(
        os.fspath(out_stem), len(rows), np.dtype(first["arrays"]["features"]["dtype"])
    )
    with writers:
        for lo in range(0, len(rows), chunk_rows):
            index = rows[lo : lo + chunk_rows]
            writers.write(
                lo,
                np.asarray(source.features[index]),
                np.asarray(source.logits[index]),
                np.asarray(source.labels[index]),
            )
        records = writers.commit()
    meta = {**first.get("meta", {}), **dict(meta or {})}
    manifest = _derived_manifest(
        first,
        records,
        len(rows),
        meta,
        selected_from={
            "stem": os.fspath(in_stem),
            "n": n_source,
            "features_sha256": first["arrays"]["features"]["sha256"],
        },
        timing={"seconds": 0.0, "images_per_second": None},
    )
    write_json_atomic(array_path(out_stem, "manifest"), manifest)
    return manifest


def load_features(
    out_stem: str | os.PathLike, mmap: bool = True, verify_checksums: bool = False
) -> FeatureSet:
    """The cached arrays of ``out_stem`` (memory-mapped read-only by default).

    Shapes and dtypes are checked against the manifest (and, with
    ``verify_checksums``, the SHA-256 of each file); any disagreement raises
    ``ValueError`` telling to rerun the extraction. Needs no torch.
    """
    manifest_path = array_path(out_stem, "manifest")
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"feature manifest {manifest_path} does not exist: the extraction of {out_stem} "
            "did not finish (rerun it)"
        )
    with open(manifest_path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    arrays = {}
    for kind in ARRAYS:
        path = array_path(out_stem, kind)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing although {manifest_path} exists; rerun")
        record = manifest["arrays"][kind]
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        if list(arr.shape) != list(record["shape"]) or str(arr.dtype) != record["dtype"]:
            raise ValueError(
                f"{path} has shape {list(arr.shape)} dtype {arr.dtype} but its manifest says "
                f"{record['shape']} {record['dtype']}: the files are from different runs; rerun "
                "the extraction"
            )
        if verify_checksums and sha256_file(path) != record["sha256"]:
            raise ValueError(f"{path}: SHA-256 differs from its manifest (corrupt or replaced)")
        arrays[kind] = arr
    n = {len(a) for a in arrays.values()}
    if len(n) != 1:
        raise ValueError(f"{out_stem}: features, logits and labels have different lengths {n}")
    return FeatureSet(arrays["features"], arrays["logits"], arrays["labels"], manifest)
