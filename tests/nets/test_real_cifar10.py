"""Real data: the JPEG CIFAR-10 test set, the public ResNet-20 checkpoint and Tiny
ImageNet as an OOD set (../shared/data/cifar10-real; skipped when absent)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from opnp.data import dataset_manifest, open_dataset
from opnp.features import load_features
from opnp.nets.extraction import extract_features
from opnp.nets.models import build_model, preprocessing
from opnp.nets.training import evaluate_accuracy

pytestmark = pytest.mark.real_data

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10-real"
RESNET20 = {
    "arch": "cifar_resnet20",
    "num_classes": 10,
    "in_channels": 3,
    "checkpoint": str(DATA / "checkpoints" / "resnet20-12fca82f.th"),
}
#: Tiny ImageNet images used here (the first ones in sorted order): enough to check the
#: OOD pipeline while keeping the test fast.
N_OOD = 1000


def _extract(archive: Path, prefix: str, out: Path, limit: int | None = None) -> Path:
    """Unpack only the regular files under ``prefix`` (member filtering; no links)."""
    with tarfile.open(archive) as tar:
        members = sorted(
            (m for m in tar.getmembers() if m.isfile() and m.name.startswith(prefix + "/")),
            key=lambda m: m.name,
        )[:limit]
        tar.extractall(out, members=members, filter="data")
    return out / prefix


@pytest.fixture(scope="session")
def real_data(tmp_path_factory):
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA} (it lies beside the repo on dev machines)")
    root = tmp_path_factory.mktemp("cifar10_real")
    test = _extract(DATA / "cifar10-jpeg.tar.gz", "cifar10/test", root)
    ood = _extract(DATA / "tinyimagenet-test-jpeg.tar.gz", "tinyimagenet-test/images", root, N_OOD)
    return {"test": test, "ood": ood}


def test_resnet20_accuracy_on_jpeg_test_set(real_data):
    manifest = dataset_manifest(
        "cifar10-test",
        {"path": str(real_data["test"]), "format": "folder", "expected_count": 10000},
    )
    assert manifest["classes"] == [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    ]  # fmt: skip
    assert manifest["class_counts"] == [1000] * 10
    model = build_model(RESNET20)
    transform, _, _ = preprocessing(RESNET20)
    accuracy = evaluate_accuracy(model, open_dataset(manifest, transform), batch_size=500)
    # The README: 91.78 % on the original images, about 81 % on these lossy JPEG copies.
    assert accuracy >= 78.0, accuracy


def test_tinyimagenet_as_ood_set(real_data, tmp_path):
    spec = {"path": str(real_data["ood"]), "format": "flat", "resize": 32}
    manifest = dataset_manifest("tinyimagenet", spec)
    assert manifest["n_images"] == N_OOD and manifest["classes"] == []
    transform, _, _ = preprocessing(RESNET20)
    ood = open_dataset(manifest, transform)
    x, label = ood[0]
    assert x.shape == (3, 32, 32) and label == -1
    model = build_model(RESNET20)
    out = extract_features(
        model, ood, tmp_path / "tin", batch_size=250, device="cpu", progress=False
    )
    fs = load_features(tmp_path / "tin", verify_checksums=True)
    assert fs.features.shape == (N_OOD, 64) and out["num_classes"] == 10
    assert (fs.labels == -1).all() and (np.asarray(fs.features) >= 0).all()
    # Cached logits are the checkpoint's FC layer applied to the cached features.
    w, b = model.fc.weight.detach().numpy(), model.fc.bias.detach().numpy()
    np.testing.assert_allclose(fs.logits, fs.features @ w.T + b, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        direct = model(torch.stack([ood[i][0] for i in range(4)])).numpy()
    np.testing.assert_allclose(fs.logits[:4], direct, rtol=1e-4, atol=1e-4)
