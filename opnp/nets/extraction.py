"""Penultimate features, logits and labels of one (model, dataset), cached on disk.

The network runs once per (model, dataset); every detector, sensitivity and ablation
downstream is linear algebra on these arrays. Files of one extraction (the stem is
e.g. ``results/digits/features/smallcnn/digits-test``):

- ``<stem>.features.npy`` (N, D) float32 (float16 on request), penultimate features h;
- ``<stem>.logits.npy`` (N, C) float32, ``fc(h)`` computed in float32;
- ``<stem>.labels.npy`` (N,) int64, -1 for unlabelled OOD images;
- ``<stem>.manifest.json``: shapes, dtypes and SHA-256 of each array, ``n``, the
  caller's ``meta`` (model and dataset names ...), device, precision, timing and
  provenance. It is written last: its presence means the arrays are complete.

Large sets are extracted in shards (``shard_size`` images each) written atomically to
``<stem>.shards/shard-<k>.npz``. A rerun after an interruption reuses every finished
shard (a shard exists under its final name only once complete; an unreadable one is
recomputed) and recomputes the rest; the shards are then streamed into the final
``.npy`` files through ``numpy.lib.format.open_memmap`` (memory stays bounded by one
shard) and removed. Every final file is written to a temporary name and renamed.

A dataset too large for one job is extracted in *parts*: each job calls
:func:`extract_features` with ``rows`` = :func:`part_rows` of its part and writes an
ordinary feature set of those rows (its manifest records the range and the model's
SHA-256); :func:`merge_feature_parts` checks that the parts cover every row once, from
the same weights, and streams them into the final files.

Torch is imported only by the functions that run a network: :func:`load_features`
works in the analysis environment, which has no torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from collections import namedtuple
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from opnp.io import apply_umask, provenance, save_npz_atomic, sha256_file, write_json_atomic

__all__ = [
    "FeatureSet",
    "array_path",
    "extract_features",
    "load_features",
    "merge_feature_parts",
    "part_rows",
    "select_feature_rows",
    "save_fc",
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


# ---------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------


def _check_positive_int(value: Any, name: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@contextlib.contextmanager
def _torch_threads(n: int | None):
    import torch

    if not n:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _seed_worker(worker_id: int) -> None:
    import torch

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 - transforms may use the legacy global RNG
    random.seed(seed)


def _model_fingerprint(model) -> str:
    """SHA-256 over the state dict (names, dtypes, shapes, bytes): which weights ran."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def _tensor_bytes(tensor) -> bytes:
    import torch

    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: hash the raw bits
        tensor = tensor.view(torch.int16)
    return tensor.numpy().tobytes()


class _Runner:
    """Runs batches of a dataset (or of an index range of it) through the model."""

    def __init__(
        self,
        model,
        dataset,
        *,
        batch_size,
        num_workers,
        device,
        amp,
        channels_last,
        seed,
        progress,
        name,
    ):
        import torch

        self.torch = torch
        self.model = model
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = device
        self.amp = amp
        self.channels_last = channels_last
        self.seed = seed
        self.name = name
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=len(dataset),
            unit="img",
            desc=f"extract {name}",
            disable=not progress,
            smoothing=0.1,
        )

    def batches(self, start: int, stop: int):
        """Yield ``(row offset, features, logits, labels)`` numpy batches for rows [start, stop)."""
        torch = self.torch
        subset = self.dataset
        if (start, stop) != (0, len(self.dataset)):
            subset = torch.utils.data.Subset(self.dataset, range(start, stop))
        loader = torch.utils.data.DataLoader(
            subset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_seed_worker,
            generator=torch.Generator().manual_seed(self.seed),
        )
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=self.amp)
            if self.amp is not None
            else contextlib.nullcontext()
        )
        row = start
        with torch.inference_mode(), autocast:
            for images, labels in loader:
                images = images.to(self.device, non_blocking=True)
                if self.channels_last and images.ndim == 4:
                    images = images.contiguous(memory_format=torch.channels_last)
                h, logits = self.model.features_and_logits(images)
                h = h.float().cpu().numpy()
                logits = logits.float().cpu().numpy()
                labels = np.asarray(labels, dtype=np.int64)
                yield row, h, logits, labels
                row += len(labels)
                self.bar.update(len(labels))
        if row != stop:
            raise RuntimeError(
                f"dataset {self.name}: expected rows {start}-{stop}, got up to {row}"
            )


class _Writers:
    """Final arrays written through temporary memory maps, renamed only on success."""

    def __init__(self, out_stem: str, n: int, feature_dtype: np.dtype):
        self.out_stem = out_stem
        self.n = n
        self.feature_dtype = feature_dtype
        self.maps: dict[str, np.memmap] = {}
        self.tmp: dict[str, Path] = {}
        self.nonfinite = {"features": 0, "logits": 0}
        self.bad_rows = 0

    def _open(self, dims: dict[str, int]) -> None:
        dtypes = {"features": self.feature_dtype, "logits": np.float32, "labels": np.int64}
        for kind in ARRAYS:
            final = array_path(self.out_stem, kind)
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
            os.close(fd)
            apply_umask(name)
            self.tmp[kind] = Path(name)
            shape = (self.n,) if kind == "labels" else (self.n, dims[kind])
            self.maps[kind] = np.lib.format.open_memmap(
                name, mode="w+", dtype=dtypes[kind], shape=shape
            )

    def write(self, row: int, features: np.ndarray, logits: np.ndarray, labels: np.ndarray):
        if not self.maps:
            self._open({"features": features.shape[1], "logits": logits.shape[1]})
        stop = row + len(labels)
        bad_f = ~np.isfinite(features)
        bad_l = ~np.isfinite(logits)
        if bad_f.any() or bad_l.any():
            self.nonfinite["features"] += int(bad_f.sum())
            self.nonfinite["logits"] += int(bad_l.sum())
            self.bad_rows += int((bad_f.any(1) | bad_l.any(1)).sum())
        self.maps["features"][row:stop] = features
        self.maps["logits"][row:stop] = logits
        self.maps["labels"][row:stop] = labels

    def discard(self) -> None:
        self.maps.clear()
        for path in self.tmp.values():
            path.unlink(missing_ok=True)

    def commit(self) -> dict[str, dict]:
        """Flush, fsync, hash and rename the arrays into place; their manifest records."""
        records = {}
        for kind in ARRAYS:
            mm = self.maps.pop(kind)
            mm.flush()
            shape, dtype = list(mm.shape), str(mm.dtype)
            del mm
            tmp = self.tmp[kind]
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            final = array_path(self.out_stem, kind)
            records[kind] = {
                "file": final.name,
                "shape": shape,
                "dtype": dtype,
                "sha256": sha256_file(tmp),
            }
            os.replace(tmp, final)
        return records


def _shard_ok(path: Path, rows: int) -> bool:
    """A finished shard: readable, all three arrays, the expected number of rows."""
    try:
        with np.load(path) as data:
            return all(k in data.files for k in ARRAYS) and all(
                data[k].shape[0] == rows for k in ARRAYS
            )
    except Exception:  # noqa: BLE001 - any read failure means "recompute it"
        return False


def _resolve_amp(amp, device) -> Any:
    import torch

    if amp is None:
        amp = device.type == "cuda"
    if amp is False:
        return None
    if amp is True:
        return torch.float16
    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16}
    if amp not in dtypes:
        raise ValueError(f"amp must be None, a bool, 'float16' or 'bfloat16', got {amp!r}")
    if device.type != "cuda" and amp == "float16":
        raise ValueError("amp='float16' needs a CUDA device; use 'bfloat16' on CPU")
    return dtypes[amp]


def extract_features(
    model,
    dataset,
    out_stem: str | os.PathLike,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str = "auto",
    shard_size: int | None = None,
    amp: bool | str | None = None,
    channels_last: bool | None = None,
    seed: int = 0,
    progress: bool = True,
    torch_threads: int | None = None,
    meta: Mapping[str, Any] | None = None,
    feature_dtype: str = "float32",
    rows: tuple[int, int] | None = None,
    log=None,
) -> dict:
    """Run ``model`` (a :class:`opnp.nets.models.FeatureClassifier`) over ``dataset`` once and
    cache features, logits and labels under ``out_stem``; returns the manifest dict.

    ``device``: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...; ``amp``:
    autocast of the backbone (default: float16 on CUDA, off on CPU; logits are always
    ``fc(h)`` in float32); ``channels_last``: default on CUDA; ``shard_size``: images
    per resumable shard (None or 0: a single pass straight into the final files);
    ``torch_threads``: intra-op CPU threads for the duration; ``meta``: recorded in the
    manifest (``model``, ``dataset`` names ...); ``rows``: ``(start, stop)`` extracts only
    those images of ``dataset`` (one part of a dataset split over several jobs, see
    :func:`part_rows` and :func:`merge_feature_parts`; the manifest records the range and
    the model's SHA-256 so that the merge can check the parts belong together). NaN or infinite features/logits raise
    ``ValueError`` naming the dataset and the count before any final file is written.
    """
    import torch

    batch_size = _check_positive_int(batch_size, "batch_size")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
    shard_size = _check_positive_int(shard_size or None, "shard_size", allow_none=True)
    if feature_dtype not in ("float32", "float16"):
        raise ValueError(f"feature_dtype must be 'float32' or 'float16', got {feature_dtype!r}")
    if not hasattr(model, "features_and_logits"):
        raise ValueError(
            f"model must provide features_and_logits(x) (an opnp.nets.models.FeatureClassifier), got "
            f"{type(model).__name__}"
        )
    meta = dict(meta or {})
    out_stem = os.fspath(out_stem)
    name = meta.get("dataset") or getattr(dataset, "name", None) or Path(out_stem).name
    total = len(dataset)
    if total == 0:
        raise ValueError(f"dataset {name} is empty: nothing to extract")
    start, stop = (0, total) if rows is None else (int(rows[0]), int(rows[1]))
    if not 0 <= start < stop <= total:
        raise ValueError(f"rows {rows!r} are not a non-empty range of the {total} images of {name}")
    n = stop - start
    log = log or (lambda message: None)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    )
    amp_dtype = _resolve_amp(amp, device)
    if channels_last is None:
        channels_last = device.type == "cuda"
    was_training = model.training
    model.eval().to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    start_time = time.perf_counter()
    runner = _Runner(
        model,
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        amp=amp_dtype,
        channels_last=channels_last,
        seed=seed,
        progress=progress,
        name=name,
    )
    writers = _Writers(out_stem, n, np.dtype(feature_dtype))
    shards_dir = Path(f"{out_stem}.shards")
    computed_shards = reused_shards = 0
    try:
        with _torch_threads(torch_threads):
            if shard_size is None:
                for row, h, logits, labels in runner.batches(start, stop):
                    h = h.astype(feature_dtype, copy=False)
                    writers.write(row - start, h, logits, labels)
            else:
                computed_shards, reused_shards = _run_shards(
                    runner,
                    writers,
                    shards_dir,
                    (start, stop),
                    shard_size,
                    model,
                    meta,
                    feature_dtype,
                    log,
                )
        if writers.bad_rows:
            raise ValueError(
                f"dataset {name}: {writers.nonfinite['features']} NaN or infinite feature values "
                f"and {writers.nonfinite['logits']} in the logits, in {writers.bad_rows} of {n} "
                "images; no output was written. Check the model's weights and the input "
                "normalisation (or run without amp)"
            )
        records = writers.commit()
    except BaseException:
        writers.discard()
        raise
    finally:
        runner.bar.close()
        model.train(was_training)
    seconds = time.perf_counter() - start_time
    if shard_size is not None:
        shutil.rmtree(shards_dir, ignore_errors=True)
    manifest = {
        "format_version": FORMAT_VERSION,
        "n": n,
        "n_images": n,
        "feature_dim": records["features"]["shape"][1],
        "num_classes": records["logits"]["shape"][1],
        "arrays": records,
        "model": meta.get("model"),
        "dataset": meta.get("dataset", name),
        "meta": meta,
        "seed": seed,
        "device": str(device),
        "amp": None if amp_dtype is None else str(amp_dtype).replace("torch.", ""),
        "channels_last": bool(channels_last),
        "batch_size": batch_size,
        "num_workers": num_workers,
        "shard_size": shard_size,
        "shards": {"computed": computed_shards, "reused": reused_shards},
        "rows": None if rows is None else {"start": start, "stop": stop, "of": total},
        "model_sha256": None if rows is None else _model_fingerprint(model),
        "timing": {"seconds": seconds, "images_per_second": n / seconds if seconds > 0 else None},
        "provenance": provenance(),
    }
    write_json_atomic(array_path(out_stem, "manifest"), manifest)
    log(f"extracted {n} images of {name} in {seconds:.1f} s")
    return manifest


def _run_shards(runner, writers, shards_dir, rows, shard_size, model, meta, feature_dtype, log):
    """Compute missing shards of ``rows`` = (start, stop), then stream them into the
    final arrays."""
    first, last = rows
    run = {
        "n": last - first,
        "rows": [first, last],
        "shard_size": shard_size,
        "feature_dtype": feature_dtype,
        "model_sha256": _model_fingerprint(model),
        "meta": json.loads(json.dumps(meta, default=str)),
    }
    run_file = shards_dir / "run.json"
    if shards_dir.is_dir():
        try:
            previous = json.loads(run_file.read_text())
        except (OSError, ValueError):
            previous = None
        if previous != run:
            log(f"{shards_dir} holds shards of another run (model, dataset or settings): removed")
            shutil.rmtree(shards_dir)
    shards_dir.mkdir(parents=True, exist_ok=True)
    for leftover in shards_dir.glob(".*.tmp"):  # an interrupted write, never a finished shard
        leftover.unlink(missing_ok=True)
    if not run_file.is_file():
        write_json_atomic(run_file, run)
    bounds = [(s, min(s + shard_size, last)) for s in range(first, last, shard_size)]
    computed = reused = 0
    for index, (start, stop) in enumerate(bounds):
        path = shards_dir / f"shard-{index:05d}.npz"
        if path.is_file() and _shard_ok(path, stop - start):
            reused += 1
            runner.bar.update(stop - start)
            continue
        parts = list(runner.batches(start, stop))
        save_npz_atomic(
            path,
            features=np.concatenate([p[1] for p in parts]).astype(feature_dtype, copy=False),
            logits=np.concatenate([p[2] for p in parts]),
            labels=np.concatenate([p[3] for p in parts]),
        )
        computed += 1
    log(f"shards: {computed} computed, {reused} reused from an earlier run")
    for index, (start, _) in enumerate(bounds):
        with np.load(shards_dir / f"shard-{index:05d}.npz") as data:
            writers.write(start - first, data["features"], data["logits"], data["labels"])
    return computed, reused


# ---------------------------------------------------------------------------------------
# One dataset over several jobs: parts and their merge
# ---------------------------------------------------------------------------------------


def part_rows(n: int, parts: int, index: int) -> tuple[int, int]:
    """Rows ``(start, stop)`` of part ``index`` (0-based) when ``n`` images are split into
    ``parts`` contiguous parts as evenly as possible (sizes differ by at most one)."""
    n = _check_positive_int(n, "n")
    parts = _check_positive_int(parts, "parts")
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
    manifest = {key: first[key] for key in _INHERITED_KEYS if key in first}
    manifest.update(
        n=n,
        n_images=n,
        feature_dim=records["features"]["shape"][1],
        num_classes=records["logits"]["shape"][1],
        arrays=records,
        model=meta.get("model", first.get("model")),
        dataset=meta.get("dataset", first.get("dataset")),
        meta=dict(meta),
        **extra,
        provenance=provenance(),
    )
    return manifest


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
    chunk_rows = _check_positive_int(chunk_rows, "chunk_rows")
    log = log or (lambda message: None)
    sets = [load_features(stem) for stem in stems]
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
    start_time = time.perf_counter()
    writers = _Writers(os.fspath(out_stem), n, np.dtype(first["arrays"]["features"]["dtype"]))
    try:
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
    except BaseException:
        writers.discard()
        raise
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
    chunk_rows = _check_positive_int(chunk_rows, "chunk_rows")
    first = source.manifest
    writers = _Writers(
        os.fspath(out_stem), len(rows), np.dtype(first["arrays"]["features"]["dtype"])
    )
    try:
        for lo in range(0, len(rows), chunk_rows):
            index = rows[lo : lo + chunk_rows]
            writers.write(
                lo,
                np.asarray(source.features[index]),
                np.asarray(source.logits[index]),
                np.asarray(source.labels[index]),
            )
        records = writers.commit()
    except BaseException:
        writers.discard()
        raise
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


# ---------------------------------------------------------------------------------------
# Loading and the FC head
# ---------------------------------------------------------------------------------------


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


def save_fc(model, path: str | os.PathLike) -> None:
    """Write the FC head as ``fc.npz``: ``weight`` (C, D) and ``bias`` (C,), float32.

    ``model`` is a :class:`opnp.nets.models.FeatureClassifier` (its ``fc``) or an
    ``nn.Linear``; a missing bias is saved as zeros.
    """
    fc = getattr(model, "fc", model)
    weight = getattr(fc, "weight", None)
    if weight is None or weight.ndim != 2:
        raise ValueError(f"model has no linear FC layer with a 2-d weight ({type(fc).__name__})")
    w = weight.detach().float().cpu().numpy()
    bias = getattr(fc, "bias", None)
    b = np.zeros(w.shape[0], np.float32) if bias is None else bias.detach().float().cpu().numpy()
    save_npz_atomic(path, weight=w, bias=b)
