"""Run a network once per (model, dataset) and cache its features, logits and labels in
the feature store (:mod:`opnp.features`: layout, manifests, parts and their merge).

Large sets are extracted in shards (``shard_size`` images each) written atomically to
``<stem>.shards/shard-<k>.npz``. A rerun after an interruption reuses every finished
shard (a shard exists under its final name only once complete; an unreadable one is
recomputed) and recomputes the rest; the shards are then streamed into the final
``.npy`` files through ``numpy.lib.format.open_memmap`` (memory stays bounded by one
shard) and removed. Every final file is written to a temporary name and renamed.
:func:`save_fc` writes the FC head next to the features.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from opnp._validation import check_positive_int
from opnp.features import ARRAYS, FORMAT_VERSION, ArrayWriters, array_path, feature_manifest
from opnp.io import save_npz_atomic, write_json_atomic
from opnp.nets.training import portable_cpu, resolve_device, seed_worker

__all__ = ["extract_features", "save_fc"]


@contextlib.contextmanager
def _torch_threads(n: int | None):
    if not n:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _model_fingerprint(model) -> str:
    """SHA-256 over the state dict (names, dtypes, shapes, bytes): which weights ran."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def _tensor_bytes(tensor) -> bytes:
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: hash the raw bits
        tensor = tensor.view(torch.int16)
    return tensor.numpy().tobytes()


@dataclass
class _Runner:
    """Runs batches of a dataset (or of an index range of it) through the model."""

    model: Any
    dataset: Any
    batch_size: int
    num_workers: int
    device: torch.device
    amp: Any
    channels_last: bool
    seed: int
    progress: bool
    name: str

    def __post_init__(self) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=len(self.dataset),
            unit="img",
            desc=f"extract {self.name}",
            disable=not self.progress,
            smoothing=0.1,
        )

    def batches(self, start: int, stop: int):
        """Yield ``(row offset, features, logits, labels)`` numpy batches for rows [start, stop)."""
        subset = self.dataset
        if (start, stop) != (0, len(self.dataset)):
            subset = torch.utils.data.Subset(self.dataset, range(start, stop))
        loader = torch.utils.data.DataLoader(
            subset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=seed_worker,
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
    """Run ``model`` (a :class:`opnp.nets.architectures.FeatureClassifier`) over ``dataset`` once and
    cache features, logits and labels under ``out_stem``; returns the manifest dict.

    ``device``: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...; ``amp``:
    autocast of the backbone (default: float16 on CUDA, off on CPU; logits are always
    ``fc(h)`` in float32); ``channels_last``: default on CUDA; ``shard_size``: images
    per resumable shard (None or 0: a single pass straight into the final files);
    ``torch_threads``: intra-op CPU threads for the duration; ``meta``: recorded in the
    manifest (``model``, ``dataset`` names ...); ``rows``: ``(start, stop)`` extracts only
    those images of ``dataset`` (one part of a dataset split over several jobs, see
    :func:`opnp.features.part_rows` and :func:`opnp.features.merge_feature_parts`; the
    manifest records the range and the model's SHA-256 so that the merge can check the parts
    belong together). NaN or infinite features/logits raise ``ValueError`` naming the
    dataset and the count before any final file is written.
    """
    batch_size, shard_size = _check_arguments(
        model, batch_size, num_workers, shard_size, feature_dtype
    )
    meta = dict(meta or {})
    out_stem = os.fspath(out_stem)
    name = meta.get("dataset") or getattr(dataset, "name", None) or Path(out_stem).name
    start, stop, total = _row_range(dataset, rows, name)
    n = stop - start
    log = log or (lambda message: None)
    device = resolve_device(device)
    amp_dtype = _resolve_amp(amp, device)
    if channels_last is None:
        channels_last = device.type == "cuda"
    was_training = model.training
    _place_model(model, device, channels_last)
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
    writers = ArrayWriters(out_stem, n, np.dtype(feature_dtype))
    shards_dir = Path(f"{out_stem}.shards")
    try:
        records, shards = _write_rows(
            runner, writers, (start, stop), shard_size, shards_dir, meta, feature_dtype,
            torch_threads, log,
        )  # fmt: skip
    finally:
        runner.bar.close()
        model.train(was_training)
    seconds = time.perf_counter() - start_time
    manifest = _extraction_manifest(
        records, runner, meta, n=n, shard_size=shard_size, shards=shards, seconds=seconds,
        rows=None if rows is None else {"start": start, "stop": stop, "of": total},
    )  # fmt: skip
    write_json_atomic(array_path(out_stem, "manifest"), manifest)
    log(f"extracted {n} images of {name} in {seconds:.1f} s")
    return manifest


def _place_model(model, device, channels_last: bool) -> None:
    """The model in eval mode on ``device``, in channels-last memory where asked."""
    model.eval().to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)


def _check_arguments(model, batch_size, num_workers, shard_size, feature_dtype):
    """``(batch_size, shard_size)`` checked (None: no shards); ValueError naming a bad
    argument."""
    batch_size = check_positive_int(batch_size, "batch_size")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
    shard_size = check_positive_int(shard_size, "shard_size") if shard_size else None
    if feature_dtype not in ("float32", "float16"):
        raise ValueError(f"feature_dtype must be 'float32' or 'float16', got {feature_dtype!r}")
    if not hasattr(model, "features_and_logits"):
        raise ValueError(
            "model must provide features_and_logits(x) (an "
            f"opnp.nets.architectures.FeatureClassifier), got {type(model).__name__}"
        )
    return batch_size, shard_size


def _row_range(dataset, rows, name: str) -> tuple[int, int, int]:
    """``(start, stop, total)``: the images of ``dataset`` to extract (all without
    ``rows``) and its size; ValueError for an empty dataset or range."""
    total = len(dataset)
    if total == 0:
        raise ValueError(f"dataset {name} is empty: nothing to extract")
    start, stop = (0, total) if rows is None else (int(rows[0]), int(rows[1]))
    if not 0 <= start < stop <= total:
        raise ValueError(f"rows {rows!r} are not a non-empty range of the {total} images of {name}")
    return start, stop, total


def _write_rows(
    runner, writers, rows, shard_size, shards_dir, meta, feature_dtype, torch_threads, log
):
    """Run the model over ``rows`` = (start, stop) into ``writers`` (straight, or through
    resumable shards, removed once the final arrays are committed); returns
    ``(records, shards)``: ``writers.commit()``'s records and the shards computed and
    reused. Raises before any final file is written when a feature or logit is NaN or
    infinite."""
    start, stop = rows
    computed_shards = reused_shards = 0
    # On CPU, ops that give the same bits on every x86-64 CPU (opnp.nets.training):
    # the trained weights are portable, so are the cached features.
    device = runner.device
    model = runner.model
    portable = portable_cpu(model) if device.type == "cpu" else contextlib.nullcontext(True)
    with writers, portable as pinned:
        if not pinned:
            log("MKL's code path could not be pinned: features may differ by CPU")
        with _torch_threads(torch_threads):
            if shard_size is None:
                for row, h, logits, labels in runner.batches(start, stop):
                    h = h.astype(feature_dtype, copy=False)
                    writers.write(row - start, h, logits, labels)
            else:
                computed_shards, reused_shards = _run_shards(
                    runner, writers, shards_dir, rows, shard_size, model, meta, feature_dtype,
                    log,
                )  # fmt: skip
        if writers.bad_rows:
            raise ValueError(
                f"dataset {runner.name}: {writers.nonfinite['features']} NaN or infinite "
                f"feature values and {writers.nonfinite['logits']} in the logits, in "
                f"{writers.bad_rows} of {stop - start} images; no output was written. Check "
                "the model's weights and the input normalisation (or run without amp)"
            )
        records = writers.commit()
    if shard_size is not None:
        shutil.rmtree(shards_dir, ignore_errors=True)
    return records, {"computed": computed_shards, "reused": reused_shards}


def _extraction_manifest(records, runner, meta, *, n, shard_size, shards, seconds, rows):
    """The manifest of one extraction of ``n`` images: the arrays' records, the run's
    settings (from ``runner``), ``rows`` (the range of a part, None for a whole dataset;
    a part also records the model's SHA-256) and the timing."""
    return feature_manifest(
        records,
        n,
        meta.get("model"),
        meta.get("dataset", runner.name),
        meta,
        format_version=FORMAT_VERSION,
        seed=runner.seed,
        device=str(runner.device),
        amp=None if runner.amp is None else str(runner.amp).replace("torch.", ""),
        channels_last=bool(runner.channels_last),
        batch_size=runner.batch_size,
        num_workers=runner.num_workers,
        shard_size=shard_size,
        shards=shards,
        rows=rows,
        model_sha256=None if rows is None else _model_fingerprint(runner.model),
        timing={"seconds": seconds, "images_per_second": n / seconds if seconds > 0 else None},
    )


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


def save_fc(model, path: str | os.PathLike) -> None:
    """Write the FC head as ``fc.npz``: ``weight`` (C, D) and ``bias`` (C,), float32.

    ``model`` is a :class:`opnp.nets.architectures.FeatureClassifier` (its ``fc``) or an
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
