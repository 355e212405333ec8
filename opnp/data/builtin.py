"""The embedded default benchmark (no internet): image folders built from data that
ships with scikit-learn.

ID data are the 1,797 real 8x8 handwritten digits of ``sklearn.datasets.load_digits``
(:func:`build_digits_split`); the OOD sets are photo patches, transformed test-split
digits and noise (see :data:`BUILDERS` and each builder's docstring).
:func:`build_builtin_dataset` builds one set, :func:`build_digits_benchmark` all of
them. Every builder is deterministic given its seed: the same PNG bytes on every run.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from opnp._validation import check_choice, check_positive_int
from opnp.data.archives import AtomicFolder
from opnp.data.images import save_png
from opnp.data.manifests import dataset_manifest
from opnp.io import write_json_atomic

__all__ = [
    "BUILDERS",
    "PATCH_SIDE_RANGE",
    "digits_splits",
    "build_digits_split",
    "build_photo_patches",
    "build_inverted_digits",
    "build_rotated_digits",
    "build_uniform_noise",
    "build_gaussian_noise",
    "build_builtin_dataset",
    "build_digits_benchmark",
]


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
    check_choice(split, "split", ("train", "val", "test"))
    image_size = _check_image_size(image_size)
    indices = digits_splits(seed, val_fraction, test_fraction)
    images, targets = _load_digits()
    out_dir = Path(out_dir)
    with AtomicFolder(out_dir) as tmp:
        for digit in range(10):
            (tmp / str(digit)).mkdir()
        for i in indices[split]:
            save_png(_upsample(images[i], image_size), tmp / str(targets[i]) / f"{i:04d}.png")
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


def _test_digit_builder(builder: str, render: Callable, doc: str, exclude=()) -> Callable:
    """The builder (public name ``build_<builder>``, docstring ``doc``) of a flat folder of
    ``n_images`` test-split digits drawn by :func:`_sample_test_digits` (stream
    ``builder``, digits in ``exclude`` left out), each saved as ``render(position in the
    sample, digit index, 8x8 pixels) -> (pixels, file name)`` upsampled to ``image_size``."""

    def build(
        out_dir: str | os.PathLike,
        n_images: int = 400,
        seed: int = 0,
        image_size: int = 16,
        val_fraction: float = 0.2,
        test_fraction: float = 0.3,
        name: str = builder.replace("_", "-"),
    ) -> dict:
        image_size = _check_image_size(image_size)
        n_images = check_positive_int(n_images, "n_images")
        images, _ = _load_digits()
        chosen = _sample_test_digits(n_images, seed, val_fraction, test_fraction, builder, exclude)
        out_dir = Path(out_dir)
        with AtomicFolder(out_dir) as tmp:
            for position, i in enumerate(chosen):
                pixels, file_name = render(position, i, images[i])
                save_png(_upsample(pixels, image_size), tmp / file_name)
        return _builder_manifest(
            name,
            out_dir,
            "flat",
            builder=builder,
            builder_params={"n_images": n_images, "seed": seed, "image_size": image_size},
            indices=chosen.tolist(),
        )

    build.__name__ = build.__qualname__ = f"build_{builder}"
    build.__doc__ = doc
    return build


def _invert(_position: int, i: int, pixels: np.ndarray) -> tuple[np.ndarray, str]:
    return 255 - pixels, f"inverted_{i:04d}.png"


def _rotate(position: int, i: int, pixels: np.ndarray) -> tuple[np.ndarray, str]:
    k = 1 if position % 2 == 0 else 3  # np.rot90: k=1 counter-clockwise, 3 clockwise
    return np.rot90(pixels, k=k), f"rotated{90 * k}_{i:04d}.png"


build_inverted_digits = _test_digit_builder(
    "inverted_digits",
    _invert,
    """Test OOD (near-OOD): ID *test-split* digits with inverted intensities, 255 - x.

    Same strokes, but bright background and dark strokes: a contrast the model never saw.
    ``n_images`` digits are drawn (seeded, without replacement) from the test split; no
    training digit is used. Flat folder ``inverted_<index>.png``.
    """,
)
build_rotated_digits = _test_digit_builder(
    "rotated_digits",
    _rotate,
    """Test OOD (near-OOD): ID test-split digits rotated by 90 degrees (alternately
    counter-clockwise and clockwise, by position in the seeded sample).

    Choice: a quarter turn, not a half turn, because under 180 degrees 0, 1 and 8 stay
    themselves and 6 and 9 swap (they would remain digits); under 90 degrees 1 becomes a
    bar, 8 a lying eight, 6/9/2/... unreadable shapes. Zeros are excluded: a zero turned
    by 90 degrees is still an (oval) zero. No training digit is used.
    """,
    exclude=(0,),
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

    check_choice(photo, "photo", ("china", "flower"))
    image_size = _check_image_size(image_size)
    n_images = check_positive_int(n_images, "n_images")
    gray = Image.fromarray(load_sample_image(f"{photo}.jpg")).convert("L")
    width, height = gray.size
    rng = _rng(seed, "photo_patches", photo)
    lo, hi = PATCH_SIDE_RANGE
    sides = rng.integers(lo, hi + 1, size=n_images)
    lefts = rng.integers(0, width - sides + 1)
    tops = rng.integers(0, height - sides + 1)
    out_dir = Path(out_dir)
    with AtomicFolder(out_dir) as tmp:
        for k, (side, left, top) in enumerate(zip(sides, lefts, tops, strict=True)):
            box = (int(left), int(top), int(left + side), int(top + side))
            small = gray.crop(box).resize((DIGIT_SIZE, DIGIT_SIZE), Image.Resampling.BOX)
            save_png(_upsample(np.asarray(small), image_size), tmp / f"{photo}_{k:05d}.png")
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
    n_images = check_positive_int(n_images, "n_images")
    rng = _rng(seed, f"{family}_noise")
    shape = (n_images, image_size, image_size)
    if family == "uniform":
        pixels = rng.integers(0, 256, size=shape, dtype=np.int64)
    else:
        pixels = rng.normal(GAUSSIAN_NOISE_MEAN, GAUSSIAN_NOISE_STD, size=shape)
        pixels = np.clip(np.rint(pixels), 0, 255)
    pixels = pixels.astype(np.uint8)
    out_dir = Path(out_dir)
    with AtomicFolder(out_dir) as tmp:
        for k in range(n_images):
            save_png(Image.fromarray(pixels[k], mode="L"), tmp / f"{family}_{k:05d}.png")
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
    builder = check_choice(spec.get("builder"), f"datasets.{name}.builder", list(BUILDERS))
    common = {"seed": split_seed, "image_size": image_size, "name": name}
    split_kw = {"val_fraction": val_fraction, "test_fraction": test_fraction}
    if builder == "digits":
        split = spec.get("split")
        check_choice(split, f"datasets.{name}.split", ("train", "val", "test"))
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
