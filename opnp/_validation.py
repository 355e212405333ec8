"""Argument checks shared by the numerical modules.

Every check raises ``ValueError`` whose message names the argument and the bad value
(or, for arrays, the bad shape / the number of bad entries), and runs before any
expensive work. Arrays are accepted as numpy arrays (``np.memmap`` included, never
copied here), torch tensors (moved to CPU numpy without importing torch) or anything
``np.asarray`` understands.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

#: Rows per chunk when streaming (N, D) feature arrays: bounded memory, BLAS-sized blocks.
DEFAULT_CHUNK_ROWS = 4096


def to_numpy(x: Any, name: str) -> np.ndarray:
    """``x`` as a numpy array without copying where possible (torch via ``.numpy()``)."""
    if x is None:
        raise ValueError(f"{name} is required, got None")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):  # np.memmap is a subclass: stays memory-mapped
        return x
    try:
        return np.asarray(x)
    except Exception as err:  # noqa: BLE001 - re-raised with the argument's name
        raise ValueError(f"{name} could not be converted to an array: {err}") from err


def as_float_array(x: Any, name: str, ndim: int) -> np.ndarray:
    """A real floating (or integer/bool, converted to float64) array with ``ndim`` dims."""
    arr = to_numpy(x, name)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {tuple(arr.shape)}")
    if arr.dtype.kind in "biu":
        arr = arr.astype(np.float64)
    elif arr.dtype.kind != "f":
        raise ValueError(f"{name} must have a real floating dtype, got {arr.dtype}")
    return arr


def check_finite(
    arr: np.ndarray, name: str, row_offset: int = 0, row_index: np.ndarray | None = None
) -> None:
    """ValueError naming ``name`` and the count (and first row) of NaN/inf entries.

    The row is ``row_offset`` plus the position in ``arr``, or ``row_index[position]``
    when ``arr`` holds rows gathered from a larger array."""
    if arr.dtype.kind in "biu":
        return
    # Fast path: one reduction instead of a mask (NaN and inf propagate through a sum,
    # so a finite sum means finite entries; an overflowing sum takes the exact check).
    with np.errstate(over="ignore", invalid="ignore"):
        # float16 sums overflow at 65,504: accumulate them in float32
        acc = np.float32 if arr.dtype == np.float16 else None
        if arr.size and np.isfinite(np.add.reduce(arr, axis=None, dtype=acc)):
            return
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.nonzero(bad.reshape(len(arr), -1).any(axis=1))[0] if arr.ndim > 1 else None
        if rows is None:
            where = ""
        elif row_index is not None:
            where = f", first at row {int(row_index[rows[0]])}"
        else:
            where = f", first at row {row_offset + int(rows[0])}"
        raise ValueError(f"{name} has {int(bad.sum())} NaN or infinite values{where}")


def check_feature_shape(shape: tuple[int, ...], name: str, dim: int | None = None) -> None:
    """A 2-D feature array's shape: at least one row, and ``dim`` columns when given (the
    FC layer's input size). Shared by the numpy and the torch checks."""
    if shape[0] == 0:
        raise ValueError(f"{name} has no rows (shape {tuple(shape)})")
    if dim is not None and shape[1] != dim:
        raise ValueError(
            f"{name} has {shape[1]} columns but the FC weight has {dim} inputs "
            f"(features shape {tuple(shape)}, weight (C, {dim}))"
        )


def check_features(features: Any, name: str = "features", dim: int | None = None) -> np.ndarray:
    """(N, D) float features; ``dim`` checks D against the FC layer's input size.

    Finiteness is checked here only for in-memory arrays; memory-mapped arrays are checked
    chunk by chunk while they are streamed (one pass over the data, not two).
    """
    arr = as_float_array(features, name, 2)
    check_feature_shape(arr.shape, name, dim)
    if not isinstance(arr, np.memmap):
        check_finite(arr, name)
    return arr


def check_linear(weight: Any, bias: Any, name: str = "weight") -> tuple[np.ndarray, np.ndarray]:
    """FC weight (C, D) and bias (C,) as finite float64 arrays (bias None -> zeros)."""
    w = as_float_array(weight, name, 2).astype(np.float64, copy=False)
    if w.shape[0] == 0 or w.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty (C, D), got shape {tuple(w.shape)}")
    check_finite(w, name)
    if bias is None:
        b = np.zeros(w.shape[0])
    else:
        b = as_float_array(bias, "bias", 1).astype(np.float64, copy=False)
        if b.shape[0] != w.shape[0]:
            raise ValueError(
                f"bias has {b.shape[0]} entries but weight has {w.shape[0]} rows (classes)"
            )
        check_finite(b, "bias")
    return w, b


def check_labels(labels: Any, n: int, name: str = "train_labels") -> np.ndarray:
    """Integer class labels (n,)."""
    arr = to_numpy(labels, name)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(arr.shape)}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    return arr


def check_percentage(value: Any, name: str) -> float:
    """A percentage in [0, 100)."""
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a number in [0, 100), got {value!r}") from err
    if not (0.0 <= v < 100.0) or not np.isfinite(v):
        raise ValueError(f"{name} must be in [0, 100), got {value!r}")
    return v


def check_percentage_pair(
    low: Any, high: Any, low_name: str, high_name: str
) -> tuple[float, float]:
    """Two percentages pruning both ends of one distribution: each in [0, 100), sum < 100."""
    lo = check_percentage(low, low_name)
    hi = check_percentage(high, high_name)
    if lo + hi >= 100.0:
        raise ValueError(
            f"{low_name} + {high_name} must be < 100 (they would prune everything), "
            f"got {low_name}={low!r}, {high_name}={high!r}"
        )
    return lo, hi


def check_positive(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a positive number, got {value!r}") from err
    if not (v > 0 and np.isfinite(v)):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return v


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; available: {', '.join(map(str, choices))}")
    return value


def check_positive_int(value: Any, name: str) -> int:
    """An integer >= 1 (bool and float refused) as a Python int."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_chunk_size(chunk_size: Any, name: str = "chunk_size") -> int:
    if chunk_size is None:
        return DEFAULT_CHUNK_ROWS
    return check_positive_int(chunk_size, name)


def check_rows(rows: Any, n: int, name: str = "rows") -> np.ndarray:
    """Strictly increasing, non-empty int64 row indices into ``n`` rows."""
    idx = np.asarray(rows)
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D array of row indices, got shape {idx.shape}"
        )
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"{name} must hold integer row indices, got dtype {idx.dtype}")
    idx = idx.astype(np.int64, copy=False)
    if idx[0] < 0 or idx[-1] >= n:
        raise ValueError(f"{name} must lie in [0, {n}), got {int(idx.min())}..{int(idx.max())}")
    if np.any(np.diff(idx) <= 0):
        raise ValueError(f"{name} must be strictly increasing (sorted, no repeats)")
    return idx


def iter_chunks(
    features: np.ndarray,
    chunk_size: int,
    name: str = "features",
    dtype=None,
    rows: np.ndarray | None = None,
):
    """Yield ``(start, chunk)`` over rows, each chunk a finite in-memory array in ``dtype``.

    Memory-mapped inputs are read one chunk at a time, so peak memory is a few chunks
    whatever N is; every chunk is checked for NaN/inf (error names the row). With
    ``rows`` (checked by :func:`check_rows`), only those rows are read, ``chunk_size`` at
    a time, and ``start`` counts positions in ``rows``.
    """
    n = features.shape[0] if rows is None else len(rows)
    release = page_releaser(features)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        if rows is None:
            select, first, last = slice(start, stop), start, stop
        else:  # rows are increasing: every file row before the chunk's last one is done
            select = rows[start:stop]
            first, last = int(select[0]), int(select[-1]) + 1
        chunk = np.asarray(features[select])
        if dtype is not None:
            chunk = chunk.astype(dtype, copy=False)
        if isinstance(features, np.memmap):
            check_finite(chunk, name, row_offset=first, row_index=None if rows is None else select)
        yield start, chunk
        release(first, last)


def page_releaser(features: np.ndarray):
    """For a memory map opened directly on a file (``np.load(mmap_mode="r")``), a function
    that drops the pages of rows already processed from this process (madvise
    MADV_DONTNEED): without it every page read stays resident and the RSS grows to the
    file size, although the data is only in the page cache. No-op otherwise."""
    import mmap

    mm = getattr(features, "_mmap", None)
    if (
        not isinstance(features, np.memmap)
        or not isinstance(mm, mmap.mmap)
        or features.base is not mm
        or not features.flags.c_contiguous
        or not hasattr(mm, "madvise")
        or not hasattr(mmap, "MADV_DONTNEED")
    ):
        return lambda start, stop: None
    row_bytes = features.strides[0]
    first = features.offset % mmap.ALLOCATIONGRANULARITY  # array start inside the map
    page = mmap.PAGESIZE

    def release(start: int, stop: int) -> None:
        lo = (first + start * row_bytes) // page * page
        hi = (first + stop * row_bytes) // page * page
        if hi > lo:
            try:
                mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
            except (OSError, ValueError):  # pragma: no cover - advisory only
                pass

    return release
