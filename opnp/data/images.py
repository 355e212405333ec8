"""Image files of a dataset: the three on-disk layouts, listing, verification, decoding.

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
the same images on every machine. :func:`verify_image_folder` decodes every image
before any extraction (:mod:`opnp.data.manifests` records what it found); PNGs that
this package writes (builtin sets, downloads) are byte-reproducible (:func:`save_png`).
No torch here.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from opnp._validation import check_choice, check_positive_int

__all__ = [
    "IMAGE_EXTENSIONS",
    "FORMATS",
    "IMAGE_HASH",
    "IMAGE_HASH_DIGITS",
    "ResizeCenterCrop",
    "VerificationReport",
    "list_images",
    "imagenet_wnids",
    "verify_image_folder",
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


def is_image(name: str) -> bool:
    """Whether the file name has an image extension (IMAGE_EXTENSIONS, any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


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
            (rel_dir / f).as_posix() for f in filenames if is_image(f) and not f.startswith(".")
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
    check_choice(format, "format", FORMATS)
    labelling = check_choice(labels or "none", "labels", LABELS)
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
        loose = [p.name for p in root.iterdir() if is_image(p.name)]
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


def file_list_hash(paths: Sequence[str]) -> str:
    """sha256 of the paths, one per line, in the given order."""
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
        return file_list_hash(self.files)


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


def decode_threads() -> int:
    """Threads for decoding images: the CPUs this process may use, at most 8."""
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
    check_choice(on_bad_image, "on_bad_image", ON_BAD_IMAGE)
    check_choice(check, "check", ("decode", "header"))
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
    threads = num_threads or decode_threads()
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


# ---------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------


class ResizeCenterCrop:
    """Resize the shorter side to ``size`` (bilinear, antialiased), then center-crop to
    ``size`` x ``size``; a square image is simply resized. Used for a dataset's
    ``resize`` key (e.g. 64x64 Tiny ImageNet or Places365 as 32x32 CIFAR OOD data)."""

    def __init__(self, size: int):
        self.size = check_positive_int(size, "resize")

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


def load_image(path: Path) -> Image.Image:
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
            "opnp.data.images.verify_image_folder; set on_bad_image: skip to exclude bad files)"
        ) from err


def save_png(img: Image.Image, path: Path) -> None:
    """Write ``img`` as PNG, byte-identical across runs."""
    # Fixed compression settings and no metadata: byte-identical files across runs.
    img.save(path, format="PNG", optimize=False, compress_level=6)
