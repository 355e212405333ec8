"""Atomic file writes, checksums and provenance records.

Every file the package writes goes through :func:`atomic_write`: the bytes go to a
temporary file in the destination's directory (same file system, so the final
``os.replace`` is atomic), are flushed and fsynced, and only then renamed over the
destination. A reader (or Snakemake after a crash) therefore sees either the old file,
or no file, or the complete new one, never a truncated one. On an exception the
temporary file is removed and the destination is left untouched.

This module imports neither torch nor pandas at import time: the analysis environment
(no torch) uses it too.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "atomic_write",
    "save_npy_atomic",
    "save_npz_atomic",
    "write_json_atomic",
    "write_parquet_atomic",
    "sha256_file",
    "provenance",
    "config_hash",
    "apply_umask",
]

#: Bytes read per step when hashing files (bounded memory for multi-GB arrays).
_HASH_CHUNK = 1 << 22


def _fsync_dir(directory: Path) -> None:
    """Persist a rename: fsync the directory entry (a no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _current_umask() -> int:
    """The process's umask, read without changing it where Linux allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):  # pragma: no cover - not Linux
        pass
    mask = os.umask(0o022)  # pragma: no cover - the only portable way to read it
    os.umask(mask)  # pragma: no cover
    return mask  # pragma: no cover


def apply_umask(path: str | os.PathLike) -> None:
    """Give a file or folder made by ``tempfile`` the mode a plain ``open``/``mkdir`` would.

    ``tempfile.mkstemp`` creates files 0600 and ``mkdtemp`` folders 0700 whatever the
    umask (they are meant to be private). Renamed into place as results, they would be
    unreadable to everyone else on a shared file system; this sets 0666 (files) or 0777
    (folders) less the process's umask, e.g. 0644 / 0755 under umask 022.
    """
    full = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, full & ~_current_umask())


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A new empty file ``.<name>.<random>.tmp`` beside ``path`` (the folder must exist),
    with the umask's permissions, to be renamed onto ``path`` when complete.

    Temporary files of ``path`` left by an earlier writer that was killed (SIGKILL, a
    lost node: no cleanup ran) are removed first; one job writes a given path.
    """
    path = Path(path)
    # mkstemp's random part is 8 characters: exactly 8 keeps the temporaries of another
    # target whose name starts with this one's (``a.npy.sha``) out of the match.
    for stale in path.parent.glob(f".{glob.escape(path.name)}.????????.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    apply_umask(name)
    return Path(name)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it to ``path`` on success.

    ``mode`` is ``"wb"`` or ``"w"`` (text; ``open_kwargs`` such as ``encoding`` are
    passed to :func:`open`). Parent folders are created. The temporary file is named
    ``.<name>.<random>.tmp`` so it never matches the final name (nor a glob on it);
    see :func:`temporary_sibling`.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "w":
        open_kwargs.setdefault("encoding", "utf-8")
    tmp = temporary_sibling(path)
    try:
        with open(tmp, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def save_npy_atomic(path: str | os.PathLike, array: Any) -> None:
    """``np.save`` to exactly ``path`` (no ``.npy`` appended), atomically."""
    with atomic_write(path, "wb") as handle:
        np.save(handle, np.asarray(array), allow_pickle=False)


def save_npz_atomic(path: str | os.PathLike, **arrays: Any) -> None:
    """Uncompressed ``np.savez`` of ``arrays`` to exactly ``path``, atomically."""
    if not arrays:
        raise ValueError(f"save_npz_atomic({path}): no arrays given")
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **{k: np.asarray(v) for k, v in arrays.items()})


def _json_default(obj: Any) -> Any:
    """numpy scalars/arrays and paths in JSON records."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable: {obj!r}")


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """JSON with sorted keys (stable diffs), numpy scalars/arrays converted, atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=True, default=_json_default)
    with atomic_write(path, "w") as handle:
        handle.write(text + "\n")


def write_parquet_atomic(df, path: str | os.PathLike) -> None:
    """``df.to_parquet`` (pyarrow, no index) to ``path``, atomically."""
    with atomic_write(path, "wb") as handle:
        df.to_parquet(handle, index=False)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _package_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("opnp")
    except PackageNotFoundError:
        pass
    # Not installed (run from a checkout): read the version from pyproject.toml.
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        import tomllib

        with open(pyproject, "rb") as handle:
            return str(tomllib.load(handle)["project"]["version"])
    except Exception:  # noqa: BLE001 - provenance must never fail a job
        return "unknown"


@functools.lru_cache(maxsize=1)
def _git_commit() -> str:
    """HEAD of the checkout holding this package ("unknown" without git or a checkout)."""
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = proc.stdout.strip()
    return commit if proc.returncode == 0 and commit else "unknown"


def provenance() -> dict[str, str]:
    """Where a result came from: ``opnp_version``, ``git_commit``, ``python``, ``torch``.

    ``git_commit`` is the HEAD of the checkout that holds this package, or ``"unknown"``
    when it is not a git checkout (an installed wheel) or git is missing. ``torch`` is
    present only when the calling job has imported torch.
    """
    record = {
        "opnp_version": _package_version(),
        "git_commit": _git_commit(),
        "python": platform.python_version(),
    }
    # Only when the job already uses torch: importing it costs seconds per job.
    torch = sys.modules.get("torch")
    if torch is not None:
        record["torch"] = str(torch.__version__)
    return record


def config_hash(settings: Any, length: int = 12) -> str:
    """Short SHA-256 of the canonical JSON of ``settings`` (sorted keys, no whitespace):
    a config or a job's settings, any JSON value (numpy values, paths and sets as in the
    provenance records). The workflow records it in every result row (``config_hash``)
    and passes it as a param, so that changing one method's settings re-runs only that
    method's jobs.

    Two values that differ only in key order or in YAML formatting hash the same.
    """
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]
