"""Public datasets downloaded on request, and local folders linked after verification.

:func:`download_dataset` (CIFAR-10/100, SVHN, DTD) runs only when called, fetches from
the projects' own URLs with MD5 verification (:func:`fetch_file`) and converts the
archives once to image folders. Everything else (ImageNet, the MOS OOD subsets
iNaturalist/SUN/Places/Textures, LSUN, iSUN, Places365) is a local folder recorded by
:func:`link_dataset` after verification. Both return the dataset's manifest
(:func:`opnp.data.manifests.dataset_manifest`).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from opnp._validation import check_choice
from opnp.data.archives import AtomicFolder
from opnp.data.images import is_image, save_png
from opnp.data.manifests import dataset_manifest, spec_path
from opnp.io import apply_umask

__all__ = ["DOWNLOADS", "RemoteFile", "fetch_file", "download_dataset", "link_dataset"]


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


def _convert_cifar(archive: Path, split: str, out: Path) -> None:
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
            save_png(img, out / folders[label] / f"{index:05d}.png")
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
        save_png(Image.fromarray(pixels, mode="RGB"), out / str(label) / f"{index:05d}.png")


def _convert_dtd(archive: Path, out: Path) -> None:
    """DTD tarball -> ``out/<texture>/<file>.jpg`` (the JPEG bytes as they are)."""
    with tarfile.open(archive) as tar:
        n = 0
        for member in tar.getmembers():
            path = PurePosixPath(member.name)
            if not member.isfile() or "images" not in path.parts or not is_image(path.name):
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
    check_choice(dataset, f"datasets.{name}.name", list(DOWNLOADS))
    info = DOWNLOADS[dataset]
    split = spec.get("split", info["splits"][0])
    check_choice(split, f"datasets.{name}.split", info["splits"])
    base = spec.get("path") or os.path.join(
        os.environ.get("OPNP_DOWNLOAD_DIR", DEFAULT_DOWNLOAD_DIR), dataset
    )
    base = Path(os.path.expanduser(str(base)))
    images_dir = base / split
    if not images_dir.is_dir():
        remote = info["files"].get(split, info["files"].get("all"))
        archive = fetch_file(remote.url, base / "archives" / remote.filename, remote.md5, log=log)
        log(f"converting {archive} ({split}) -> {images_dir}")
        with AtomicFolder(images_dir) as tmp:
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
    root = spec_path(spec, "path", name)
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
