"""Image datasets: on-disk layouts, verification, the embedded digits benchmark, downloads.

Layouts (``format`` in a dataset spec)
--------------------------------------
``folder``
    ImageFolder style: ``root/<class>/**/<image>``. Labels are class indices in sorted
    class-folder order (the torchvision convention; for CIFAR-10, ImageNet and the digit
    folders written here the sorted order is the label order).
``flat``
    Unlabelled images anywhere below ``root`` (``tinyimagenet-test/images/*.JPEG``,
    ``iNaturalist/images``, DTD's ``images/<texture>/`` ...). Label -1 (OOD data).
    With ``labels: wnid_prefix`` the images are ImageNet-1k images named
    ``<wnid>_<anything>`` (``n01440764_tench.JPEG``): the label is the position of the
    wnid in the sorted list of the 1,000 ImageNet-1k wnids (the standard class order,
    :func:`imagenet_wnids`), so any subset of the images keeps the model's class indices.
``image_list``
    A text file of lines ``relative/path [label]`` (paths relative to ``root``; blank
    lines and lines starting with ``#`` are ignored; a missing label means -1).

Images are listed in sorted relative-path order, so ``skip_images``/``max_images`` slice
the same images on every machine. A dataset spec is the dict of one ``datasets.<name>``
config entry; the dataset rules turn it into a *manifest* (:func:`dataset_manifest`):
the spec plus the verified root, class names, image count, skipped bad images and a
SHA-256 of the file list. :func:`open_dataset` accepts a manifest, a spec, a manifest
file or a folder and returns a torch ``Dataset`` of ``(transform(image), label)``.

The embedded default benchmark (no internet) is built from data that ships with
scikit-learn by :func:`build_builtin_dataset` (one set) or :func:`build_digits_benchmark`
(all sets); see :data:`BUILDERS` and each builder's docstring.

Downloads (:func:`download_dataset`: CIFAR-10/100, SVHN, DTD) happen only when called,
from the projects' own URLs, with MD5 verification, and are converted to image folders.
Everything else (ImageNet, the MOS OOD subsets iNaturalist/SUN/Places/Textures, LSUN,
iSUN, Places365) is a local folder recorded by :func:`link_dataset` after verification.

Torch is imported lazily: the builders and verification work without it.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from opnp.io import apply_umask, sha256_file, write_json_atomic
from opnp.subsets import seeded_subset_indices

__all__ = [
    "IMAGE_EXTENSIONS",
    "FORMATS",
    "BUILDERS",
    "DOWNLOADS",
    "ImageDataset",
    "ResizeCenterCrop",
    "VerificationReport",
    "list_images",
    "imagenet_wnids",
    "verify_image_folder",
    "dataset_manifest",
    "manifest_files",
    "image_hashes",
    "open_dataset",
    "seeded_subset",
    "digits_splits",
    "build_digits_split",
    "build_photo_patches",
    "build_inverted_digits",
    "build_rotated_digits",
    "build_uniform_noise",
    "build_gaussian_noise",
    "build_builtin_dataset",
    "build_digits_benchmark",
    "fetch_file",
    "download_dataset",
    "link_dataset",
    "source_fingerprint",
]

#: File name endings recognised as images (case-insensitive).
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".ppm",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)
FORMATS = ("folder", "flat", "image_list")
#: How ``flat`` images get labels: none (-1) or from an ImageNet wnid file-name prefix.
LABELS = ("none", "wnid_prefix")
ON_BAD_IMAGE = ("fail", "skip")
#: What a manifest's ``image_hashes`` are: one per image, in manifest order, to find
#: identical images in sets that must be disjoint (opnp.data.splits). 64 bits keep an ImageNet
#: manifest small (~20 MB); a chance collision among 2M images has probability ~1e-7.
IMAGE_HASH = "sha256 of the file's bytes, first 16 hex digits"
IMAGE_HASH_DIGITS = 16
#: How many bad files an error message lists before "... and N more".
_MAX_LISTED = 5


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(str(i) for i in items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f" ... and {more} more" if more > 0 else "")


# ---------------------------------------------------------------------------------------
# Listing images in the three layouts
# ---------------------------------------------------------------------------------------


def _walk_images(directory: Path, root: Path) -> list[str]:
    """Relative POSIX paths of the image files below ``directory`` (recursive, sorted)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = Path(dirpath).relative_to(root)
        found.extend(
            (rel_dir / f).as_posix() for f in filenames if _is_image(f) and not f.startswith(".")
        )
    return sorted(found)


def _read_image_list(list_file: Path) -> tuple[list[str], list[int]]:
    paths, labels = [], []
    with open(list_file, encoding="utf-8") as handle:
        for lineno, raw in enumerate(handle, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.rsplit(maxsplit=1)
            label = -1
            if len(parts) == 2:
                try:
                    label = int(parts[1])
                    line = parts[0]
                except ValueError:
                    pass  # the last token is part of a path with spaces
            rel = PurePosixPath(line)
            if rel.is_absolute() or ".." in rel.parts:
                raise ValueError(
                    f"image list {list_file} line {lineno}: path {line!r} must be relative "
                    "to the dataset root and stay inside it"
                )
            paths.append(rel.as_posix())
            labels.append(label)
    return paths, labels


def imagenet_wnids() -> list[str]:
    """The 1,000 ImageNet-1k wnids in sorted order (= class index order), from timm."""
    from timm.data import ImageNetInfo

    wnids = list(ImageNetInfo("imagenet-1k").label_names())
    if len(wnids) != 1000 or wnids != sorted(wnids):  # pragma: no cover - timm's own data
        raise ValueError(f"timm's ImageNet-1k wnid list is not 1,000 sorted wnids ({len(wnids)})")
    return wnids


def _wnid_labels(paths: Sequence[str], root: Path) -> tuple[np.ndarray, list[str]]:
    """Labels of ``<wnid>_...`` file names: the wnid's index among the ImageNet-1k wnids."""
    wnids = imagenet_wnids()
    index = {w: i for i, w in enumerate(wnids)}
    labels, unknown = [], []
    for path in paths:
        wnid = PurePosixPath(path).name.split("_", 1)[0]
        labels.append(index.get(wnid, -1))
        if wnid not in index:
            unknown.append(path)
    if unknown:
        raise ValueError(
            f"dataset folder {root} (labels: wnid_prefix): {len(unknown)} file name(s) do not "
            f"start with an ImageNet-1k wnid and '_': {_listing(unknown)}"
        )
    return np.asarray(labels, np.int64), wnids


def list_images(
    root: str | os.PathLike,
    format: str = "folder",
    image_list: str | os.PathLike | None = None,
    labels: str | None = None,
) -> tuple[list[str], np.ndarray, list[str]]:
    """``(relative paths, labels (int64), class names)`` of a dataset in sorted path order.

    ``labels`` (``flat`` only): ``"none"`` (default, label -1) or ``"wnid_prefix"``
    (ImageNet-1k class index of the file name's wnid; class names = the 1,000 wnids).
    Raises ``FileNotFoundError`` for a missing root or image-list file and ``ValueError``
    for an empty dataset or empty class folders (naming them).
    """
    _check_choice(format, "format", FORMATS)
    labelling = _check_choice(labels or "none", "labels", LABELS)
    if labelling != "none" and format != "flat":
        raise ValueError(f"labels {labelling!r} needs format 'flat', got format {format!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset folder {root} does not exist (resolved: {root.resolve()}); put the images "
            "there or point the dataset's 'path' at the folder that holds them"
        )
    if format == "image_list":
        if image_list is None:
            raise ValueError(f"format 'image_list' needs an 'image_list' file (dataset {root})")
        list_file = Path(image_list)
        if not list_file.is_file():
            raise FileNotFoundError(
                f"image list {list_file} does not exist (the 'image_list' of dataset {root})"
            )
        paths, labels = _read_image_list(list_file)
        if not paths:
            raise ValueError(f"image list {list_file} names no images")
        order = np.argsort(np.array(paths, dtype=object), kind="stable")
        return [paths[i] for i in order], np.asarray(labels, np.int64)[order], []
    if format == "flat":
        paths = _walk_images(root, root)
        if not paths:
            raise ValueError(
                f"dataset folder {root} holds no image files ({', '.join(IMAGE_EXTENSIONS)})"
            )
        if labelling == "wnid_prefix":
            return paths, *_wnid_labels(paths, root)
        return paths, np.full(len(paths), -1, np.int64), []
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        loose = [p.name for p in root.iterdir() if _is_image(p.name)]
        hint = " (it holds images directly: use format 'flat')" if loose else ""
        raise ValueError(f"dataset folder {root} has no class sub-folders{hint}")
    paths, labels, empty = [], [], []
    for index, name in enumerate(classes):
        found = _walk_images(root / name, root)
        if not found:
            empty.append(name)
        paths.extend(found)
        labels.extend([index] * len(found))
    if empty:
        raise ValueError(
            f"dataset folder {root} has {len(empty)} empty class folder(s) with no images: "
            f"{_listing(empty)}; remove them or restore their images (labels follow the "
            "sorted class-folder order, so an empty folder would shift every label after it)"
        )
    return paths, np.asarray(labels, np.int64), classes


def _file_list_hash(paths: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for p in paths:
        digest.update(p.encode("utf-8") + b"\n")
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------


@dataclass
class VerificationReport:
    """What :func:`verify_image_folder` found. ``files``/``labels`` are the images kept."""

    root: str
    format: str
    classes: list[str]
    files: list[str]
    labels: np.ndarray
    n_found: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    check: str = "decode"
    #: content hash of each kept file (:data:`IMAGE_HASH`), in ``files`` order
    hashes: list[str] = field(default_factory=list)

    @property
    def n_images(self) -> int:
        return len(self.files)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    @property
    def file_list_sha256(self) -> str:
        return _file_list_hash(self.files)


def _check_image(path: Path, check: str) -> tuple[str | None, str | None]:
    """``(reason, content hash)``: reason None when the image is readable, else the error
    type and message; the hash (:data:`IMAGE_HASH`) of the file's bytes, read once for
    both."""
    try:
        data = path.read_bytes()
    except OSError as err:
        return f"{type(err).__name__}: {err}", None
    digest = hashlib.sha256(data).hexdigest()[:IMAGE_HASH_DIGITS]
    try:
        with Image.open(io.BytesIO(data)) as img:
            if check == "decode":
                img.load()  # full decode: finds truncated files
            else:
                img.verify()  # header and (for PNG) chunk checksums only
    except Exception as err:  # noqa: BLE001 - any decoder error marks the file bad
        return f"{type(err).__name__}: {err}", digest
    return None, digest


def _default_threads() -> int:
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, min(8, os.cpu_count() or 1))


def verify_image_folder(
    path: str | os.PathLike,
    expected_count: int | None = None,
    on_bad_image: str = "fail",
    *,
    format: str = "folder",
    image_list: str | os.PathLike | None = None,
    skip_images: int = 0,
    max_images: int | None = None,
    check: str = "decode",
    num_threads: int | None = None,
    labels: str | None = None,
) -> VerificationReport:
    """Check a dataset before any extraction: folder, classes, count and every image.

    - a missing folder or image list -> ``FileNotFoundError`` naming the path;
    - no images, empty class folders -> ``ValueError`` naming them;
    - ``expected_count`` is compared with the number of images found (before
      ``skip_images``/``max_images``) -> ``ValueError`` with both numbers;
    - each selected image is opened and fully decoded (``check="decode"``; ``"header"``
      only parses headers, much faster for ImageNet-size folders but blind to truncation)
      on ``num_threads`` threads (PIL releases the GIL while decoding). Unreadable or
      truncated files raise ``ValueError`` naming them (``on_bad_image="fail"``) or are
      excluded and counted in the report (``"skip"``).
    """
    _check_choice(on_bad_image, "on_bad_image", ON_BAD_IMAGE)
    _check_choice(check, "check", ("decode", "header"))
    if expected_count is not None and (isinstance(expected_count, bool) or expected_count < 1):
        raise ValueError(f"expected_count must be a positive integer, got {expected_count!r}")
    if skip_images < 0:
        raise ValueError(f"skip_images must be >= 0, got {skip_images!r}")
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be a positive integer, got {max_images!r}")
    root = Path(path)
    paths, labels, classes = list_images(root, format, image_list, labels)
    n_found = len(paths)
    if expected_count is not None and n_found != expected_count:
        raise ValueError(
            f"dataset folder {root} holds {n_found} images but expected_count is "
            f"{expected_count}: the folder is incomplete or not the intended one "
            "(re-download or re-extract it), or correct expected_count"
        )
    stop = None if max_images is None else skip_images + max_images
    paths, labels = paths[skip_images:stop], labels[skip_images:stop]
    if not paths:
        raise ValueError(
            f"dataset folder {root}: no images left after skip_images={skip_images} "
            f"(it holds {n_found})"
        )
    threads = num_threads or _default_threads()
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        checked = list(pool.map(lambda p: _check_image(root / p, check), paths, chunksize=64))
    reasons = [reason for reason, _ in checked]
    bad = [(p, r) for p, r in zip(paths, reasons, strict=True) if r is not None]
    if bad and on_bad_image == "fail":
        details = "; ".join(f"{root / p} ({r})" for p, r in bad[:_MAX_LISTED])
        more = f" ... and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
        raise ValueError(
            f"dataset folder {root} has {len(bad)} unreadable or truncated image(s): "
            f"{details}{more}. Replace or delete them, or set extraction.on_bad_image: skip "
            "to exclude (and count) them"
        )
    keep = np.array([r is None for r in reasons], dtype=bool)
    return VerificationReport(
        root=str(root.resolve()),
        format=format,
        classes=classes,
        files=[p for p, k in zip(paths, keep, strict=True) if k],
        labels=labels[keep],
        n_found=n_found,
        skipped=bad,
        check=check,
        hashes=[h for (r, h) in checked if r is None],
    )


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
        root = _spec_path(spec, "path", "?")
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


def _spec_path(spec: Mapping[str, Any], key: str, name: str) -> Path:
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
    root = _spec_path(spec, "path", name)
    fmt = spec.get("format", "folder")
    _check_choice(fmt, f"dataset {name!r} format", FORMATS)
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


# ---------------------------------------------------------------------------------------
# The torch Dataset
# ---------------------------------------------------------------------------------------


class ResizeCenterCrop:
    """Resize the shorter side to ``size`` (bilinear, antialiased), then center-crop to
    ``size`` x ``size``; a square image is simply resized. Used for a dataset's
    ``resize`` key (e.g. 64x64 Tiny ImageNet or Places365 as 32x32 CIFAR OOD data)."""

    def __init__(self, size: int):
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
            raise ValueError(f"resize must be a positive integer, got {size!r}")
        self.size = int(size)

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        s = self.size
        if (w, h) == (s, s):
            return img
        scale = s / min(w, h)
        nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - s) // 2, (nh - s) // 2
        return img.crop((left, top, left + s, top + s))

    def __repr__(self) -> str:
        return f"ResizeCenterCrop({self.size})"


def _load_image(path: Path) -> Image.Image:
    """Decode an image into L or RGB (palette, CMYK, alpha, 16-bit ... are converted)."""
    try:
        with Image.open(path) as img:
            img.load()  # decode now, while the file is open
        if img.mode in ("L", "RGB"):
            return img
        if img.mode.startswith("I") or img.mode == "F":  # 16/32-bit grayscale
            arr = np.asarray(img, dtype=np.float64)
            top = 65535.0 if arr.max() > 255 else 255.0
            return Image.fromarray(np.clip(np.rint(arr / top * 255), 0, 255).astype(np.uint8))
        if img.mode in ("1", "LA"):
            return img.convert("L")
        return img.convert("RGB")  # palette, RGBA, CMYK, YCbCr, ...
    except Exception as err:  # noqa: BLE001 - re-raised naming the file
        raise OSError(
            f"cannot read image {path}: {type(err).__name__}: {err} (verify the dataset with "
            "opnp.data.datasets.verify_image_folder; set on_bad_image: skip to exclude bad files)"
        ) from err


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
        img = _load_image(self.root / self.files[index])
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
    if expected is not None and _file_list_hash(paths) != expected:
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
    with concurrent.futures.ThreadPoolExecutor(max_workers=_default_threads()) as pool:
        return list(
            pool.map(lambda p: sha256_file(root / p)[:IMAGE_HASH_DIGITS], paths, chunksize=64)
        )


def _guess_format(root: Path) -> str:
    loose = any(_is_image(p.name) for p in root.iterdir() if p.is_file())
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
    root = _spec_path(spec, "path", name)
    fmt = spec.get("format", "folder")
    manifest = {
        "name": name,
        "root": str(root),
        "format": _check_choice(fmt, f"dataset {name!r} format", FORMATS),
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


# ---------------------------------------------------------------------------------------
# The embedded digits benchmark (scikit-learn's bundled data, no internet)
# ---------------------------------------------------------------------------------------

#: Native resolution of scikit-learn's digits.
DIGIT_SIZE = 8
#: Side (pixels, before downsampling to 8x8) of the photo patches: drawn uniformly.
PATCH_SIDE_RANGE = (24, 96)
#: Parameters of the Gaussian noise set: mean and standard deviation in 0-255 units.
GAUSSIAN_NOISE_MEAN, GAUSSIAN_NOISE_STD = 128.0, 64.0


def _rng(seed: int, *stream: str) -> np.random.Generator:
    """An independent, stable random stream per (seed, builder name ...)."""
    ids = [zlib.crc32(s.encode("utf-8")) for s in stream]
    return np.random.default_rng([int(seed), *ids])


def _load_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0..16 -> 0..255 (exact for the integer-valued digits), uint8 8x8 images.
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def _upsample(pixels: np.ndarray, image_size: int) -> Image.Image:
    """An 8x8 uint8 array as an ``image_size`` grayscale image (bilinear)."""
    img = Image.fromarray(np.ascontiguousarray(pixels), mode="L")
    if image_size != pixels.shape[0]:
        img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return img


def _check_split_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 1:
            raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1 (a training split must remain), got "
            f"{val_fraction} + {test_fraction}"
        )


def _check_image_size(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer):
        raise ValueError(f"image_size must be an integer >= {DIGIT_SIZE}, got {image_size!r}")
    if image_size < DIGIT_SIZE:
        raise ValueError(f"image_size must be >= {DIGIT_SIZE}, got {image_size!r}")
    return int(image_size)


def _check_count(n_images: int, name: str = "n_images") -> int:
    if isinstance(n_images, bool) or not isinstance(n_images, int | np.integer) or n_images < 1:
        raise ValueError(f"{name} must be a positive integer, got {n_images!r}")
    return int(n_images)


def digits_splits(
    seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.3
) -> dict[str, np.ndarray]:
    """Stratified, seeded train/val/test indices into ``sklearn.datasets.load_digits()``.

    Two calls of ``sklearn.model_selection.train_test_split`` (stratified by class,
    ``random_state=seed``): first ``test_fraction`` of all 1,797 digits is set apart,
    then ``val_fraction`` of all digits from the rest. Each index array is sorted.
    """
    from sklearn.model_selection import train_test_split

    _check_split_fractions(val_fraction, test_fraction)
    _, targets = _load_digits()
    everything = np.arange(len(targets))
    rest, test = train_test_split(
        everything, test_size=test_fraction, stratify=targets, random_state=seed
    )
    train, val = train_test_split(
        rest,
        test_size=val_fraction / (1 - test_fraction),
        stratify=targets[rest],
        random_state=seed,
    )
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


class _AtomicFolder:
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


def _save_png(img: Image.Image, path: Path) -> None:
    # Fixed compression settings and no metadata: byte-identical files across runs.
    img.save(path, format="PNG", optimize=False, compress_level=6)


def _builder_manifest(name: str, out_dir: Path, fmt: str, **record) -> dict:
    spec = {"source": "builtin", "path": str(out_dir), "format": fmt}
    return dataset_manifest(name, spec, on_bad_image="fail", **record)


def build_digits_split(
    out_dir: str | os.PathLike,
    split: str,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.3,
    image_size: int = 16,
    name: str | None = None,
) -> dict:
    """ID data: one split of scikit-learn's digits as an image folder ``out_dir/<digit>/``.

    The 1,797 real 8x8 handwritten digits (UCI optical recognition set, 0-16 intensities
    scaled to 0-255) are split by :func:`digits_splits`; each image is upsampled from 8x8
    to ``image_size`` with bilinear interpolation and saved as ``<digit>/<index>.png``
    (``index`` = position in ``load_digits()``). The manifest records the indices.
    """
    _check_choice(split, "split", ("train", "val", "test"))
    image_size = _check_image_size(image_size)
    indices = digits_splits(seed, val_fraction, test_fraction)
    images, targets = _load_digits()
    out_dir = Path(out_dir)
    with _AtomicFolder(out_dir) as tmp:
        for digit in range(10):
            (tmp / str(digit)).mkdir()
        for i in indices[split]:
            _save_png(_upsample(images[i], image_size), tmp / str(targets[i]) / f"{i:04d}.png")
    return _builder_manifest(
        name or f"digits-{split}",
        out_dir,
        "folder",
        builder="digits",
        builder_params={
            "split": split,
            "seed": seed,
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "image_size": image_size,
        },
        indices=indices[split].tolist(),
    )


def _sample_test_digits(n_images, seed, val_fraction, test_fraction, stream, exclude=()):
    """Seeded sample (without replacement) of ID test-split digit indices."""
    test = digits_splits(seed, val_fraction, test_fraction)["test"]
    _, targets = _load_digits()
    pool = test[~np.isin(targets[test], list(exclude))]
    if n_images > len(pool):
        raise ValueError(
            f"n_images (builtin.ood_size) is {n_images} but only {len(pool)} test digits are "
            f"available for {stream}; lower builtin.ood_size or raise builtin.test_fraction"
        )
    return np.sort(_rng(seed, stream).choice(pool, size=n_images, replace=False))


def build_inverted_digits(
    out_dir: str | os.PathLike,
    n_images: int = 400,
    seed: int = 0,
    image_size: int = 16,
    val_fraction: float = 0.2,
    test_fraction: float = 0.3,
    name: str = "inverted-digits",
) -> dict:
    """Test OOD (near-OOD): ID *test-split* digits with inverted intensities, 255 - x.

    Same strokes, but bright background and dark strokes: a contrast the model never saw.
    ``n_images`` digits are drawn (seeded, without replacement) from the test split; no
    training digit is used. Flat folder ``inverted_<index>.png``.
    """
    image_size = _check_image_size(image_size)
    n_images = _check_count(n_images)
    images, _ = _load_digits()
    chosen = _sample_test_digits(n_images, seed, val_fraction, test_fraction, "inverted_digits")
    out_dir = Path(out_dir)
    with _AtomicFolder(out_dir) as tmp:
        for i in chosen:
            _save_png(_upsample(255 - images[i], image_size), tmp / f"inverted_{i:04d}.png")
    return _builder_manifest(
        name,
        out_dir,
        "flat",
        builder="inverted_digits",
        builder_params={"n_images": n_images, "seed": seed, "image_size": image_size},
        indices=chosen.tolist(),
    )


def build_rotated_digits(
    out_dir: str | os.PathLike,
    n_images: int = 400,
    seed: int = 0,
    image_size: int = 16,
    val_fraction: float = 0.2,
    test_fraction: float = 0.3,
    name: str = "rotated-digits",
) -> dict:
    """Test OOD (near-OOD): ID test-split digits rotated by 90 degrees (alternately
    counter-clockwise and clockwise, by position in the seeded sample).

    Choice: a quarter turn, not a half turn, because under 180 degrees 0, 1 and 8 stay
    themselves and 6 and 9 swap (they would remain digits); under 90 degrees 1 becomes a
    bar, 8 a lying eight, 6/9/2/... unreadable shapes. Zeros are excluded: a zero turned
    by 90 degrees is still an (oval) zero. No training digit is used.
    """
    image_size = _check_image_size(image_size)
    n_images = _check_count(n_images)
    images, _ = _load_digits()
    chosen = _sample_test_digits(
        n_images, seed, val_fraction, test_fraction, "rotated_digits", exclude=(0,)
    )
    out_dir = Path(out_dir)
    with _AtomicFolder(out_dir) as tmp:
        for position, i in enumerate(chosen):
            k = 1 if position % 2 == 0 else 3  # np.rot90: k=1 counter-clockwise, 3 clockwise
            rotated = np.rot90(images[i], k=k)
            _save_png(_upsample(rotated, image_size), tmp / f"rotated{90 * k}_{i:04d}.png")
    return _builder_manifest(
        name,
        out_dir,
        "flat",
        builder="rotated_digits",
        builder_params={"n_images": n_images, "seed": seed, "image_size": image_size},
        indices=chosen.tolist(),
    )


def build_photo_patches(
    out_dir: str | os.PathLike,
    photo: str = "china",
    n_images: int = 400,
    seed: int = 0,
    image_size: int = 16,
    name: str | None = None,
) -> dict:
    """Far OOD: patches of a real photograph bundled with scikit-learn, at digit size.

    ``photo`` is ``china`` (``china.jpg``, a temple; the default *test* set) or ``flower``
    (``flower.jpg``; the default *validation* set, so validation and test OOD images
    come from different photographs). Each patch is a square of side drawn uniformly
    from 24-96 px at a uniform position, converted to grayscale (PIL "L", ITU-R 601
    luma), area-averaged down to 8x8 (the digits' resolution) and then upsampled to
    ``image_size`` exactly like the digits.
    """
    from sklearn.datasets import load_sample_image

    _check_choice(photo, "photo", ("china", "flower"))
    image_size = _check_image_size(image_size)
    n_images = _check_count(n_images)
    gray = Image.fromarray(load_sample_image(f"{photo}.jpg")).convert("L")
    width, height = gray.size
    rng = _rng(seed, "photo_patches", photo)
    lo, hi = PATCH_SIDE_RANGE
    sides = rng.integers(lo, hi + 1, size=n_images)
    lefts = rng.integers(0, width - sides + 1)
    tops = rng.integers(0, height - sides + 1)
    out_dir = Path(out_dir)
    with _AtomicFolder(out_dir) as tmp:
        for k, (side, left, top) in enumerate(zip(sides, lefts, tops, strict=True)):
            box = (int(left), int(top), int(left + side), int(top + side))
            small = gray.crop(box).resize((DIGIT_SIZE, DIGIT_SIZE), Image.Resampling.BOX)
            _save_png(_upsample(np.asarray(small), image_size), tmp / f"{photo}_{k:05d}.png")
    return _builder_manifest(
        name or f"photo-patches-{photo}",
        out_dir,
        "flat",
        builder="photo_patches",
        builder_params={
            "photo": photo,
            "n_images": n_images,
            "seed": seed,
            "image_size": image_size,
        },
        patches=[
            [int(t), int(left), int(s)] for t, left, s in zip(tops, lefts, sides, strict=True)
        ],
    )


def _build_noise(out_dir, n_images, seed, image_size, name, family) -> dict:
    image_size = _check_image_size(image_size)
    n_images = _check_count(n_images)
    rng = _rng(seed, f"{family}_noise")
    shape = (n_images, image_size, image_size)
    if family == "uniform":
        pixels = rng.integers(0, 256, size=shape, dtype=np.int64)
    else:
        pixels = rng.normal(GAUSSIAN_NOISE_MEAN, GAUSSIAN_NOISE_STD, size=shape)
        pixels = np.clip(np.rint(pixels), 0, 255)
    pixels = pixels.astype(np.uint8)
    out_dir = Path(out_dir)
    with _AtomicFolder(out_dir) as tmp:
        for k in range(n_images):
            _save_png(Image.fromarray(pixels[k], mode="L"), tmp / f"{family}_{k:05d}.png")
    return _builder_manifest(
        name,
        out_dir,
        "flat",
        builder=f"{family}_noise",
        builder_params={"n_images": n_images, "seed": seed, "image_size": image_size},
    )


def build_uniform_noise(
    out_dir: str | os.PathLike,
    n_images: int = 400,
    seed: int = 0,
    image_size: int = 16,
    name: str = "uniform-noise",
) -> dict:
    """Test OOD (synthetic): i.i.d. uniform pixels in {0, ..., 255}, grayscale,
    ``image_size`` x ``image_size`` (drawn at full resolution, not upsampled)."""
    return _build_noise(out_dir, n_images, seed, image_size, name, "uniform")


def build_gaussian_noise(
    out_dir: str | os.PathLike,
    n_images: int = 400,
    seed: int = 0,
    image_size: int = 16,
    name: str = "gaussian-noise",
) -> dict:
    """Validation OOD (synthetic): i.i.d. Gaussian pixels, mean 128, standard deviation 64,
    rounded and clipped to [0, 255], grayscale. A different noise family from the uniform
    test set, so no test OOD set is seen during hyperparameter selection."""
    return _build_noise(out_dir, n_images, seed, image_size, name, "gaussian")


#: Builders of the embedded benchmark (config key ``datasets.<name>.builder``).
BUILDERS: dict[str, Callable[..., dict]] = {
    "digits": build_digits_split,
    "photo_patches": build_photo_patches,
    "inverted_digits": build_inverted_digits,
    "rotated_digits": build_rotated_digits,
    "uniform_noise": build_uniform_noise,
    "gaussian_noise": build_gaussian_noise,
}


def build_builtin_dataset(
    name: str,
    spec: Mapping[str, Any],
    out_dir: str | os.PathLike,
    split_seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.3,
    ood_size: int = 400,
    image_size: int = 16,
) -> dict:
    """Build the ``builtin`` dataset ``spec`` (keys ``builder``, ``split``, ``photo``) into
    ``out_dir`` with the config's ``builtin`` parameters; returns its manifest.

    Every builder is deterministic given ``split_seed``: the same PNG bytes on every run.
    """
    builder = _check_choice(spec.get("builder"), f"datasets.{name}.builder", list(BUILDERS))
    common = {"seed": split_seed, "image_size": image_size, "name": name}
    split_kw = {"val_fraction": val_fraction, "test_fraction": test_fraction}
    if builder == "digits":
        split = spec.get("split")
        _check_choice(split, f"datasets.{name}.split", ("train", "val", "test"))
        manifest = build_digits_split(out_dir, split, **split_kw, **common)
    elif builder == "photo_patches":
        manifest = build_photo_patches(
            out_dir, spec.get("photo", "china"), n_images=ood_size, **common
        )
    elif builder in ("inverted_digits", "rotated_digits"):
        manifest = BUILDERS[builder](out_dir, n_images=ood_size, **split_kw, **common)
    else:
        manifest = BUILDERS[builder](out_dir, n_images=ood_size, **common)
    manifest["spec"] = {**dict(spec), "path": str(Path(out_dir))}
    return manifest


def build_digits_benchmark(
    out_dir: str | os.PathLike,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.3,
    image_size: int = 16,
    ood_size: int = 400,
) -> dict[str, dict]:
    """Every set of the embedded benchmark under ``out_dir/<name>/``; returns the
    manifests by name and writes them, with the split indices, to ``out_dir/splits.json``.

    ID: ``digits-train``, ``digits-val``, ``digits-test``. Test OOD: ``photo-patches``
    (china.jpg), ``inverted-digits``, ``rotated-digits``, ``uniform-noise``. Validation
    OOD (disjoint from every test OOD set): ``photo-patches-val`` (flower.jpg),
    ``gaussian-noise-val``.
    """
    specs = {
        "digits-train": {"builder": "digits", "split": "train"},
        "digits-val": {"builder": "digits", "split": "val"},
        "digits-test": {"builder": "digits", "split": "test"},
        "photo-patches": {"builder": "photo_patches", "photo": "china"},
        "inverted-digits": {"builder": "inverted_digits"},
        "rotated-digits": {"builder": "rotated_digits"},
        "uniform-noise": {"builder": "uniform_noise"},
        "photo-patches-val": {"builder": "photo_patches", "photo": "flower"},
        "gaussian-noise-val": {"builder": "gaussian_noise"},
    }
    out_dir = Path(out_dir)
    manifests = {
        name: build_builtin_dataset(
            name,
            {"source": "builtin", **spec},
            out_dir / name,
            split_seed=seed,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            ood_size=ood_size,
            image_size=image_size,
        )
        for name, spec in specs.items()
    }
    splits = digits_splits(seed, val_fraction, test_fraction)
    write_json_atomic(
        out_dir / "splits.json",
        {"seed": seed, "splits": {k: v.tolist() for k, v in splits.items()}, "sets": manifests},
    )
    return manifests


# ---------------------------------------------------------------------------------------
# Downloads (only when asked) and local folders
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """One file of a public dataset: where it lives and its published MD5."""

    url: str
    filename: str
    md5: str


#: Public datasets that :func:`download_dataset` can fetch (URLs and MD5s as published by
#: the dataset authors; the same as torchvision's). ``layout``: how images are written.
DOWNLOADS: dict[str, dict[str, Any]] = {
    "cifar10": {
        "files": {
            "all": RemoteFile(
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a",
            )
        },
        "splits": ("train", "test"),
        "format": "folder",
    },
    "cifar100": {
        "files": {
            "all": RemoteFile(
                "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                "cifar-100-python.tar.gz",
                "eb9058c3a382ffc7106e4002c42a8d85",
            )
        },
        "splits": ("train", "test"),
        "format": "folder",
    },
    "svhn": {
        "files": {
            "train": RemoteFile(
                "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
                "train_32x32.mat",
                "e26dedcc434d2e4c54c9b2d4a06d8373",
            ),
            "test": RemoteFile(
                "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
                "test_32x32.mat",
                "eb5a983be6a315427106f1b164d9cef3",
            ),
        },
        "splits": ("train", "test"),
        "format": "folder",
    },
    "dtd": {
        "files": {
            "all": RemoteFile(
                "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
                "dtd-r1.0.1.tar.gz",
                "fff73e5086ae6bdbea199a49dfb8a4c1",
            )
        },
        # All 5,640 images: the Textures OOD set of the OOD literature.
        "splits": ("all",),
        "format": "flat",
    },
}
#: Where downloads go when the spec has no ``path``: ``$OPNP_DOWNLOAD_DIR`` or this.
DEFAULT_DOWNLOAD_DIR = "data/downloads"


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_file(url: str, dest: str | os.PathLike, md5: str, log: Callable = print) -> Path:
    """Download ``url`` to ``dest`` and verify its MD5 (any urllib URL, ``file://`` too).

    An existing ``dest`` with the right MD5 is reused. The bytes go to a temporary file
    that becomes ``dest`` only after the checksum matched; a mismatch raises
    ``ValueError`` naming the URL, both checksums and what to do.
    """
    dest = Path(dest)
    if dest.is_file() and _md5(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    log(f"downloading {url} -> {dest}")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        apply_umask(tmp)
        request = urllib.request.Request(url, headers={"User-Agent": "opnp"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=60) as response:
            shutil.copyfileobj(response, out, length=1 << 20)
        actual = _md5(tmp)
        if actual != md5:
            raise ValueError(
                f"checksum mismatch for {url}: MD5 {actual}, expected {md5}. The download is "
                "corrupt or the file changed upstream; delete it and retry, or place a "
                f"verified copy at {dest}"
            )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _unpickle(data: bytes) -> dict:
    # The CIFAR batches are Python-2 pickles of numpy arrays, verified by MD5 above.
    return pickle.loads(data, encoding="bytes")  # noqa: S301


def _convert_cifar(archive: Path, split: str, out: Path, coarse: bool = False) -> None:
    """CIFAR python batches -> ``out/<class>/<index>.png`` (lossless)."""
    is_100 = "100" in archive.name
    wanted = (
        {"train": ["train"], "test": ["test"]}[split]
        if is_100
        else {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}[split]
    )
    meta_name = "meta" if is_100 else "batches.meta"
    label_key = b"fine_labels" if is_100 else b"labels"
    names_key = b"fine_label_names" if is_100 else b"label_names"
    batches, meta = {}, None
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            base = PurePosixPath(member.name).name
            if not member.isfile():
                continue
            if base in wanted or base == meta_name:
                handle = tar.extractfile(member)
                content = _unpickle(handle.read())
                if base == meta_name:
                    meta = content
                else:
                    batches[base] = content
    missing = [w for w in wanted if w not in batches]
    if meta is None or missing:
        raise ValueError(f"archive {archive} lacks {missing or [meta_name]}: not a CIFAR archive")
    class_names = [n.decode() for n in meta[names_key]]
    folders = (
        class_names
        if sorted(class_names) == class_names
        else [f"{i:03d}_{n}" for i, n in enumerate(class_names)]
    )
    for folder in folders:
        (out / folder).mkdir(parents=True, exist_ok=True)
    index = 0
    for name in wanted:
        batch = batches[name]
        images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        for pixels, label in zip(images, batch[label_key], strict=True):
            img = Image.fromarray(pixels.transpose(1, 2, 0), mode="RGB")
            _save_png(img, out / folders[label] / f"{index:05d}.png")
            index += 1


def _convert_svhn(mat_file: Path, out: Path) -> None:
    """SVHN ``.mat`` (X (32, 32, 3, N), y with 10 meaning digit 0) -> ``out/<digit>/``."""
    from scipy.io import loadmat

    data = loadmat(mat_file)
    images = np.asarray(data["X"], dtype=np.uint8).transpose(3, 0, 1, 2)
    labels = np.asarray(data["y"]).reshape(-1) % 10
    for digit in range(10):
        (out / str(digit)).mkdir(parents=True, exist_ok=True)
    for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        _save_png(Image.fromarray(pixels, mode="RGB"), out / str(label) / f"{index:05d}.png")


def _convert_dtd(archive: Path, out: Path) -> None:
    """DTD tarball -> ``out/<texture>/<file>.jpg`` (the JPEG bytes as they are)."""
    with tarfile.open(archive) as tar:
        n = 0
        for member in tar.getmembers():
            path = PurePosixPath(member.name)
            if not member.isfile() or "images" not in path.parts or not _is_image(path.name):
                continue
            rel = PurePosixPath(*path.parts[path.parts.index("images") + 1 :])
            if ".." in rel.parts or len(rel.parts) != 2:
                continue
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            n += 1
    if n == 0:
        raise ValueError(f"archive {archive} holds no images/<texture>/*.jpg: not a DTD archive")


def download_dataset(
    name: str,
    spec: Mapping[str, Any],
    on_bad_image: str = "fail",
    log: Callable = print,
) -> dict:
    """Download (only if not already there) a public dataset and return its manifest.

    ``spec["name"]`` is one of :data:`DOWNLOADS` (cifar10, cifar100, svhn, dtd),
    ``spec["split"]`` train/test (dtd: all 5,640 images), ``spec["path"]`` the download
    folder (default ``$OPNP_DOWNLOAD_DIR/<name>`` or ``data/downloads/<name>``). The
    archive is verified by MD5 (:func:`fetch_file`) and converted once to
    ``<path>/<split>/``: CIFAR/SVHN as lossless PNG class folders (CIFAR's class names,
    SVHN digits 0-9), DTD as ``images/<texture>/*.jpg`` read as a flat unlabelled set
    (set ``format: folder`` to get its 47 texture labels). The conversion is atomic.
    """
    dataset = spec.get("name")
    _check_choice(dataset, f"datasets.{name}.name", list(DOWNLOADS))
    info = DOWNLOADS[dataset]
    split = spec.get("split", info["splits"][0])
    _check_choice(split, f"datasets.{name}.split", info["splits"])
    base = spec.get("path") or os.path.join(
        os.environ.get("OPNP_DOWNLOAD_DIR", DEFAULT_DOWNLOAD_DIR), dataset
    )
    base = Path(os.path.expanduser(str(base)))
    images_dir = base / split
    if not images_dir.is_dir():
        remote = info["files"].get(split, info["files"].get("all"))
        archive = fetch_file(remote.url, base / "archives" / remote.filename, remote.md5, log=log)
        log(f"converting {archive} ({split}) -> {images_dir}")
        with _AtomicFolder(images_dir) as tmp:
            if dataset in ("cifar10", "cifar100"):
                _convert_cifar(archive, split, tmp)
            elif dataset == "svhn":
                _convert_svhn(archive, tmp)
            else:
                _convert_dtd(archive, tmp)
    manifest_spec = {**dict(spec), "path": str(images_dir)}
    manifest_spec.setdefault("format", info["format"])
    return dataset_manifest(name, manifest_spec, on_bad_image=on_bad_image, downloaded_from=dataset)


def link_dataset(
    name: str,
    spec: Mapping[str, Any],
    on_bad_image: str = "fail",
    dst: str | os.PathLike | None = None,
) -> dict:
    """Verify a user-provided local folder and return its manifest; optionally symlink it.

    For data that cannot be downloaded here (ImageNet, the MOS OOD subsets iNaturalist /
    SUN / Places / Textures, LSUN, iSUN, Places365, ...). ``spec`` keys as in
    :func:`dataset_manifest`. With ``dst``, ``dst`` becomes a symlink to the verified
    folder (an existing symlink is replaced atomically; any other existing file is an
    error) and the manifest's root is ``dst``.
    """
    root = _spec_path(spec, "path", name)
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset {name!r}: folder {root} (resolved {root.resolve()}) does not exist. "
            f"Put the data there or set config key datasets.{name}.path to its folder "
            "(see config/README.md for the expected layout)"
        )
    manifest = dataset_manifest(name, spec, on_bad_image=on_bad_image)
    if dst is not None:
        dst = Path(dst)
        if dst.exists() and not dst.is_symlink():
            raise FileExistsError(f"cannot link dataset {name!r}: {dst} exists and is no symlink")
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.parent / f".{dst.name}.link.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(manifest["root"], tmp, target_is_directory=True)
        os.replace(tmp, dst)
        manifest["linked_from"] = manifest["root"]
        manifest["root"] = str(dst.absolute())
    return manifest
