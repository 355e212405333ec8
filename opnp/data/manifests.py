"""A dataset's manifest (what its dataset rule verified) and the dataset opened from it.

A dataset spec is the dict of one ``datasets.<name>`` config entry; the dataset rules
turn it into a *manifest* (:func:`dataset_manifest`): the spec plus the verified root,
class names, image count, skipped bad images, a SHA-256 of the file list and a content
hash of every image. :func:`open_dataset` accepts a manifest, a spec, a manifest file or
a folder and returns a dataset of ``(transform(image), label)``;
:func:`source_fingerprint` tells the workflow when a linked folder changed.

Torch is imported only by :func:`seeded_subset`.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from opnp._validation import check_choice
from opnp.data.images import (
    FORMATS,
    IMAGE_HASH,
    IMAGE_HASH_DIGITS,
    ResizeCenterCrop,
    decode_threads,
    file_list_hash,
    is_image,
    list_images,
    load_image,
    verify_image_folder,
)
from opnp.io import sha256_file
from opnp.subsets import seeded_subset_indices

__all__ = [
    "ImageDataset",
    "dataset_manifest",
    "manifest_files",
    "image_hashes",
    "open_dataset",
    "seeded_subset",
    "source_fingerprint",
]


def source_fingerprint(spec: Mapping[str, Any]) -> str:
    """Short hash of what a linked dataset folder holds now, for the workflow to compare
    with the run that made its manifest (a Snakemake param: a change re-runs the job).

    Covers the listed images' relative paths, sizes and modification times (and the
    image-list file's), i.e. one ``stat`` per image; with ``fingerprint: content`` in
    the spec also every file's SHA-256. An unreadable source gives a fixed marker: the
    dataset job itself then fails with the precise error.
    """
    content = spec.get("fingerprint") == "content"
    digest = hashlib.sha256()
    try:
        root = spec_path(spec, "path", "?")
        image_list = spec.get("image_list")
        paths, _, _ = list_images(root, spec.get("format", "folder"), image_list)
        files = [(str(image_list), Path(image_list))] if image_list else []
        files += [(p, root / p) for p in paths]
        for name, path in files:
            st = os.stat(path)
            digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            if content:
                digest.update(sha256_file(path).encode())
    except (OSError, ValueError) as err:
        return f"unreadable ({type(err).__name__})"
    return digest.hexdigest()[:16]


def spec_path(spec: Mapping[str, Any], key: str, name: str) -> Path:
    """The path under ``key`` of dataset ``name``'s spec, ``~`` expanded (required)."""
    if key not in spec or spec[key] in (None, ""):
        raise ValueError(f"dataset {name!r}: spec key {key!r} is required, got spec {dict(spec)}")
    return Path(os.path.expanduser(str(spec[key])))


def dataset_manifest(
    name: str,
    spec: Mapping[str, Any],
    on_bad_image: str = "fail",
    check: str = "decode",
    **extra: Any,
) -> dict:
    """Verify the dataset that ``spec`` describes and return its manifest (a JSON dict).

    ``spec`` keys: ``path`` (root), ``format`` (default ``folder``), ``image_list``,
    ``expected_count``, ``skip_images``, ``max_images``, ``resize``. For ``source:
    archive`` the slicing was already applied when the archive was unpacked
    (:func:`opnp.data.archives.extract_members`), so it is not applied again here.
    ``extra`` items are stored in the manifest as they are (builder parameters ...).
    """
    spec = dict(spec)
    root = spec_path(spec, "path", name)
    fmt = spec.get("format", "folder")
    check_choice(fmt, f"dataset {name!r} format", FORMATS)
    sliced_already = spec.get("source") == "archive"
    skip_images = 0 if sliced_already else int(spec.get("skip_images", 0) or 0)
    max_images = None if sliced_already else spec.get("max_images")
    image_list = spec.get("image_list")
    report = verify_image_folder(
        root,
        expected_count=spec.get("expected_count"),
        on_bad_image=on_bad_image,
        format=fmt,
        image_list=image_list,
        skip_images=skip_images,
        max_images=max_images,
        check=check,
        labels=spec.get("labels"),
    )
    labels = report.labels
    return {
        "name": name,
        "source": spec.get("source"),
        "format": fmt,
        "root": report.root,
        "image_list": str(Path(image_list).resolve()) if image_list else None,
        "labels": spec.get("labels"),
        "classes": report.classes,
        "n_images": report.n_images,
        "n_found": report.n_found,
        "n_skipped": report.n_skipped,
        "skipped": [{"file": f, "reason": r} for f, r in report.skipped],
        "skip_images": skip_images,
        "max_images": max_images,
        "resize": spec.get("resize"),
        "labelled": bool((labels >= 0).any()),
        "class_counts": np.bincount(labels[labels >= 0]).tolist() if report.classes else [],
        "file_list_sha256": report.file_list_sha256,
        "image_hash": IMAGE_HASH,
        "image_hashes": report.hashes,
        "verified": report.check,
        "spec": spec,
        **extra,
    }


class ImageDataset:
    """A map-style dataset of ``(transform(image), label)`` over a fixed file list.

    ``labels`` (int64, -1 for unlabelled) is available without decoding any image.
    It is a plain class (``torch.utils.data.Dataset`` only adds ``__add__``), so
    it can be built and pickled without importing torch.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        files: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        transform: Callable | None = None,
        *,
        resize: int | None = None,
        classes: Sequence[str] = (),
        name: str | None = None,
    ):
        if len(files) != len(labels):
            raise ValueError(f"{len(files)} files but {len(labels)} labels")
        self.root = Path(root)
        self.files = list(files)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.resize = ResizeCenterCrop(resize) if resize else None
        self.classes = list(classes)
        self.name = name or self.root.name

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        img = load_image(self.root / self.files[index])
        if self.resize is not None:
            img = self.resize(img)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.labels[index])

    def __repr__(self) -> str:
        return f"ImageDataset(name={self.name!r}, root={str(self.root)!r}, n={len(self)})"


def _dataset_from_manifest(manifest: Mapping[str, Any], transform) -> ImageDataset:
    paths, labels, classes = manifest_files(manifest)
    return ImageDataset(
        manifest["root"],
        paths,
        labels,
        transform,
        resize=manifest.get("resize"),
        classes=classes,
        name=manifest.get("name"),
    )


def manifest_files(manifest: Mapping[str, Any]) -> tuple[list[str], np.ndarray, list[str]]:
    """``(relative paths, labels, class names)`` of the images a manifest verified, in
    manifest order; ``ValueError`` when the folder changed since (file list hash)."""
    name = manifest.get("name")
    paths, labels, classes = list_images(
        manifest["root"],
        manifest.get("format", "folder"),
        manifest.get("image_list"),
        manifest.get("labels"),
    )
    skip = int(manifest.get("skip_images") or 0)
    stop = None if manifest.get("max_images") is None else skip + int(manifest["max_images"])
    paths, labels = paths[skip:stop], labels[skip:stop]
    bad = {entry["file"] for entry in manifest.get("skipped", [])}
    if bad:
        keep = np.array([p not in bad for p in paths], dtype=bool)
        paths, labels = [p for p, k in zip(paths, keep, strict=True) if k], labels[keep]
    expected = manifest.get("file_list_sha256")
    if expected is not None and file_list_hash(paths) != expected:
        raise ValueError(
            f"dataset {name!r} at {manifest['root']} changed since it was verified "
            f"({len(paths)} images now, {manifest.get('n_images')} in the manifest): rerun its "
            "dataset rule (delete the manifest) so that it is verified again"
        )
    if manifest.get("rows") is not None:
        # A part of a pool (replicated benchmarks): the pool's verified list, then the rows.
        rows = np.asarray(manifest["rows"], dtype=np.int64)
        paths, labels = [paths[i] for i in rows], labels[rows]
    return paths, labels, classes


def image_hashes(manifest: Mapping[str, Any]) -> list[str]:
    """The content hash of every image of a manifest, in manifest order: recorded by the
    dataset rule, or (manifests written before hashes were recorded) read from the files
    now, in one streamed pass. A replicate part's are its rows of the pool's hashes."""
    recorded = manifest.get("image_hashes")
    if recorded is not None and manifest.get("image_hash") == IMAGE_HASH:
        if manifest.get("rows") is not None:
            return [recorded[i] for i in manifest["rows"]]
        return list(recorded)
    root = Path(manifest["root"])
    paths, _, _ = manifest_files(manifest)
    with concurrent.futures.ThreadPoolExecutor(max_workers=decode_threads()) as pool:
        return list(
            pool.map(lambda p: sha256_file(root / p)[:IMAGE_HASH_DIGITS], paths, chunksize=64)
        )


def _guess_format(root: Path) -> str:
    loose = any(is_image(p.name) for p in root.iterdir() if p.is_file())
    subdirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return "folder" if subdirs and not loose else "flat"


def open_dataset(spec_or_path: Mapping[str, Any] | str | os.PathLike, transform=None):
    """A dataset of ``(transform(image), label)`` (label -1 for unlabelled images).

    ``spec_or_path`` is one of: a manifest dict (from :func:`dataset_manifest`, the
    builders, :func:`link_dataset` or :func:`download_dataset`: the file list is checked
    against the recorded SHA-256, and skipped bad images stay excluded); a dataset spec
    dict with ``path`` (and ``format`` ...; not verified); a manifest ``.json`` file; or
    an image folder (``folder`` layout when it holds only sub-folders, else ``flat``).
    """
    if isinstance(spec_or_path, str | os.PathLike):
        path = Path(spec_or_path)
        if path.suffix == ".json":
            if not path.is_file():
                raise FileNotFoundError(f"dataset manifest {path} does not exist")
            with open(path, encoding="utf-8") as handle:
                return _dataset_from_manifest(json.load(handle), transform)
        if not path.is_dir():
            raise FileNotFoundError(f"dataset folder {path} does not exist")
        fmt = _guess_format(path)
        paths, labels, classes = list_images(path, fmt)
        return ImageDataset(path, paths, labels, transform, classes=classes)
    if not isinstance(spec_or_path, Mapping):
        raise ValueError(
            "open_dataset expects a manifest/spec dict, a manifest .json file or a folder, "
            f"got {type(spec_or_path).__name__}"
        )
    if "root" in spec_or_path:
        return _dataset_from_manifest(spec_or_path, transform)
    spec = dict(spec_or_path)
    name = spec.get("name", "dataset")
    root = spec_path(spec, "path", name)
    fmt = spec.get("format", "folder")
    manifest = {
        "name": name,
        "root": str(root),
        "format": check_choice(fmt, f"dataset {name!r} format", FORMATS),
        "image_list": spec.get("image_list"),
        "labels": spec.get("labels"),
        "skip_images": spec.get("skip_images", 0),
        "max_images": spec.get("max_images"),
        "resize": spec.get("resize"),
    }
    return _dataset_from_manifest(manifest, transform)


def seeded_subset(dataset, fraction: float, seed: int = 0, max_items: int | None = None):
    """A seeded uniform random subset of ``fraction`` percent (0, 100] of ``dataset``
    (indices from :func:`opnp.subsets.seeded_subset_indices`). Returns a ``torch.utils.data.Subset``.
    """
    import torch.utils.data

    indices = seeded_subset_indices(len(dataset), fraction, seed, max_items)
    return torch.utils.data.Subset(dataset, indices.tolist())
