"""Folders that appear atomically; unpacking part of a local tar archive into one safely."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from opnp.io import apply_umask


class AtomicFolder:
    """Write a folder under a temporary sibling name; rename it into place on success."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)

    def __enter__(self) -> Path:
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(
            tempfile.mkdtemp(
                prefix=f".{self.out_dir.name}.", suffix=".tmp", dir=self.out_dir.parent
            )
        )
        apply_umask(self.tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if self.out_dir.is_symlink() or self.out_dir.is_file():
            self.out_dir.unlink()
        elif self.out_dir.exists():
            shutil.rmtree(self.out_dir)
        os.replace(self.tmp, self.out_dir)


def extract_members(
    archive: str | Path,
    member: str,
    out_dir: str | Path,
    max_images: int | None = None,
    skip_images: int = 0,
    classes: Sequence[str] | None = None,
    shuffle_seed: int | None = None,
) -> int:
    """Extract the regular files under ``member/`` of ``archive`` into ``out_dir``.

    Paths keep their layout below ``member`` (``cifar10/test/cat/1.jpg`` with member
    ``cifar10/test`` -> ``out_dir/cat/1.jpg``). Members that would land outside
    ``out_dir`` (absolute paths, ``..``) or that are links are refused. With
    ``skip_images``/``max_images``, the files in sorted path order are sliced
    ``[skip_images : skip_images + max_images]`` (disjoint halves of one folder).
    ``classes`` keeps only the files below these top-level folders of ``member`` (e.g.
    some DTD texture classes, so that validation and test classes are disjoint).
    ``shuffle_seed`` slices a seeded permutation of the sorted files instead
    (``numpy.random.default_rng(shuffle_seed).permutation``), so that the slices of a
    class-ordered folder (``cifar10/test/<class>/``) are random images of every class
    while equal seeds still give disjoint slices; the files extracted keep their paths.
    The folder appears only when complete: files go to a temporary sibling folder that
    is renamed at the end, so an interrupted extraction never looks finished.
    Returns the number of files extracted.
    """
    archive = Path(archive)
    out_dir = Path(out_dir)
    if not archive.is_file():
        raise FileNotFoundError(
            f"archive {archive} does not exist (config key datasets.<name>.path)"
        )
    prefix = PurePosixPath(member.strip("/"))
    with AtomicFolder(out_dir) as tmp, tarfile.open(archive) as tar:
        selected = []
        for info in tar.getmembers():
            path = PurePosixPath(info.name)
            if not info.isfile() or prefix not in path.parents:
                continue
            relative = path.relative_to(prefix)
            if relative.is_absolute() or ".." in relative.parts:
                raise ValueError(
                    f"archive {archive} member {info.name!r} escapes the target folder"
                )
            selected.append((str(relative), info))
        if not selected:
            raise ValueError(f"archive {archive} has no files under {member!r}")
        if classes is not None:
            found = {PurePosixPath(relative).parts[0] for relative, _ in selected}
            missing = sorted(set(classes) - found)
            if missing:
                raise ValueError(
                    f"archive {archive}: classes {missing} are not folders under "
                    f"{member!r} (it has {sorted(found)})"
                )
            wanted = set(classes)
            selected = [item for item in selected if PurePosixPath(item[0]).parts[0] in wanted]
        selected.sort(key=lambda item: item[0])
        if shuffle_seed is not None:
            order = np.random.default_rng(shuffle_seed).permutation(len(selected))
            selected = [selected[i] for i in order]
        stop = None if max_images is None else skip_images + max_images
        selected = selected[skip_images:stop]
        if not selected:
            raise ValueError(
                f"archive {archive}: no files left under {member!r} after skipping {skip_images}"
            )
        # Read in archive order: a compressed stream seeks backwards only by
        # decompressing again from its start.
        for relative, info in sorted(selected, key=lambda item: item[1].offset):
            target = tmp / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(info)
            if source is None:  # pragma: no cover - regular files always have data
                raise ValueError(f"archive {archive} member {info.name!r} has no data")
            with source, open(target, "wb") as handle:
                shutil.copyfileobj(source, handle)
    return len(selected)


#: IDX magic numbers (big-endian int32): unsigned-byte images of rank 3, labels of rank 1.
_IDX_IMAGES_MAGIC = 2051


def read_idx_images(path: str | Path) -> np.ndarray:
    """The (N, rows, cols) uint8 images of an IDX file (MNIST / Fashion-MNIST layout,
    gzip-compressed or not): a big-endian header (magic 2051, count, rows, cols) followed by
    the pixels. A truncated file or another magic raises ``ValueError`` naming the file."""
    import gzip

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {path} does not exist (config key datasets.<name>.path)")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 16:
        raise ValueError(f"IDX file {path} is too short for its 16-byte header")
    magic, count, rows, cols = (int(v) for v in np.frombuffer(raw[:16], dtype=">i4"))
    if magic != _IDX_IMAGES_MAGIC:
        raise ValueError(
            f"IDX file {path} has magic {magic}, not {_IDX_IMAGES_MAGIC} (uint8 images): "
            "is it a labels file?"
        )
    expected = 16 + count * rows * cols
    if len(raw) != expected:
        raise ValueError(
            f"IDX file {path} holds {len(raw)} bytes; its header ({count} images of "
            f"{rows}x{cols}) needs {expected}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows, cols)


def extract_idx_images(
    path: str | Path,
    out_dir: str | Path,
    max_images: int | None = None,
    skip_images: int = 0,
    shuffle_seed: int | None = None,
) -> int:
    """Write the images of an IDX file as grayscale PNGs ``<index>.png`` (the index in the
    file, zero-padded) into ``out_dir``, a flat folder, so that the IDX sets (Fashion-MNIST)
    go through the same manifests and checks as image folders. ``skip_images`` /
    ``max_images`` / ``shuffle_seed`` slice the images as :func:`extract_members` slices
    files. The folder appears only when complete. Returns the number of images written."""
    from PIL import Image

    images = read_idx_images(path)
    order = np.arange(len(images))
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(images))
    stop = None if max_images is None else skip_images + max_images
    order = order[skip_images:stop]
    if len(order) == 0:
        raise ValueError(f"IDX file {path}: no images left after skipping {skip_images}")
    width = len(str(len(images) - 1))
    with AtomicFolder(out_dir) as tmp:
        for index in order:
            # Fixed PNG settings and no metadata: byte-identical files across runs.
            Image.fromarray(images[index], mode="L").save(
                tmp / f"{index:0{width}d}.png", format="PNG", optimize=False, compress_level=6
            )
    return len(order)


def unpack_dataset(spec, out_dir: str | Path, path: str | Path | None = None) -> int:
    """Unpack a ``source: archive`` dataset's images as the workflow does: the IDX images
    of ``format: idx``, else the ``member`` folder of a tar archive, sliced by
    ``max_images`` / ``skip_images`` / ``shuffle_seed``. ``path`` overrides
    ``spec["path"]``. Returns the number of files written."""
    path = spec["path"] if path is None else path
    slices = {
        "max_images": spec.get("max_images"),
        "skip_images": spec.get("skip_images", 0),
        "shuffle_seed": spec.get("shuffle_seed"),
    }
    if spec.get("format") == "idx":
        return extract_idx_images(path, out_dir, **slices)
    return extract_members(path, spec["member"], out_dir, classes=spec.get("classes"), **slices)
