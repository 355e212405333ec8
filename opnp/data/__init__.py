"""Image datasets: on-disk layouts and verification (:mod:`~opnp.data.images`), manifests
and the datasets opened from them (:mod:`~opnp.data.manifests`), the embedded digits
benchmark (:mod:`~opnp.data.builtin`), downloads and linked folders
(:mod:`~opnp.data.downloads`), archives (:mod:`~opnp.data.archives`) and the content check
of the split separation (:mod:`~opnp.data.splits`).

No torch at import time (only :func:`seeded_subset` imports it, when called).
"""

from opnp.data.archives import (
    extract_idx_images,
    extract_members,
    read_idx_images,
    unpack_dataset,
)
from opnp.data.builtin import (
    BUILDERS,
    PATCH_SIDE_RANGE,
    build_builtin_dataset,
    build_digits_benchmark,
    build_digits_split,
    build_gaussian_noise,
    build_inverted_digits,
    build_photo_patches,
    build_rotated_digits,
    build_uniform_noise,
    digits_splits,
)
from opnp.data.downloads import (
    DOWNLOADS,
    RemoteFile,
    download_dataset,
    fetch_file,
    link_dataset,
)
from opnp.data.images import (
    FORMATS,
    IMAGE_EXTENSIONS,
    IMAGE_HASH,
    IMAGE_HASH_DIGITS,
    ResizeCenterCrop,
    VerificationReport,
    imagenet_wnids,
    list_images,
    verify_image_folder,
)
from opnp.data.manifests import (
    ImageDataset,
    dataset_manifest,
    image_hashes,
    manifest_files,
    open_dataset,
    seeded_subset,
    source_fingerprint,
)
from opnp.data.splits import SplitLeakError, check_split_separation, split_pairs

__all__ = [
    "BUILDERS",
    "DOWNLOADS",
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "IMAGE_HASH",
    "IMAGE_HASH_DIGITS",
    "PATCH_SIDE_RANGE",
    "ImageDataset",
    "RemoteFile",
    "ResizeCenterCrop",
    "SplitLeakError",
    "VerificationReport",
    "build_builtin_dataset",
    "build_digits_benchmark",
    "build_digits_split",
    "build_gaussian_noise",
    "build_inverted_digits",
    "build_photo_patches",
    "build_rotated_digits",
    "build_uniform_noise",
    "check_split_separation",
    "dataset_manifest",
    "digits_splits",
    "download_dataset",
    "extract_idx_images",
    "extract_members",
    "read_idx_images",
    "unpack_dataset",
    "fetch_file",
    "image_hashes",
    "imagenet_wnids",
    "link_dataset",
    "list_images",
    "manifest_files",
    "open_dataset",
    "seeded_subset",
    "source_fingerprint",
    "split_pairs",
    "verify_image_folder",
]
