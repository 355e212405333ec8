"""No validation image (ID or OOD) is byte-identical to a test image in the real-data
configs (paper section 4.1: hyperparameters are chosen on data no test set holds)."""

from __future__ import annotations

import hashlib

import pytest
import yaml
from workflow_helpers import REPO

from opnp.data.archives import unpack_dataset

pytestmark = pytest.mark.real_data


def _digests(spec, shared_data, out) -> dict[str, str]:
    """sha256 of each file of an archive dataset, as the workflow unpacks it."""
    unpack_dataset(spec, out, path=spec["path"].replace("../shared/data", str(shared_data)))
    return {
        hashlib.sha256(p.read_bytes()).hexdigest(): p.relative_to(out).as_posix()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("name", ["cifar10_densenet.yaml", "cifar10_real.yaml"])
def test_validation_images_are_not_test_images(name, shared_data, tmp_path):
    config = yaml.safe_load((REPO / "config" / name).read_text())
    datasets = config["datasets"]
    val = list(config["ood"]["val"])
    test = list(config["ood"]["test"])
    if config["id"]["val"] != config["id"]["test"]:  # else: the paper's protocol, stated
        val.append(config["id"]["val"])
        test.append(config["id"]["test"])
    archived = {n for n in val + test if datasets[n]["source"] == "archive"}
    digests = {n: _digests(datasets[n], shared_data, tmp_path / n) for n in sorted(archived)}
    for v in val:
        assert datasets[v]["source"] != "builtin", f"{name}: validation set {v} is synthetic"
        for t in test:
            if t not in digests:
                continue  # builtin noise: generated, not images from a source
            shared = set(digests[v]) & set(digests[t])
            examples = sorted(digests[v][d] for d in shared)[:3]
            assert not shared, f"{name}: {len(shared)} images of {v} are in {t}: {examples}"
