"""The main-results part of config/cifar10_densenet.yaml on ../shared/data (DICE
DenseNet-BC-100, JPEG CIFAR-10, Textures and Tiny ImageNet as OOD), at reduced sizes."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import REPO, run_snakemake

pytestmark = [pytest.mark.real_data, pytest.mark.slow, pytest.mark.long]

#: Images per set in this test (the config's sizes cost ~10x more on 2 CPU cores):
#: DenseNet-BC-100 is the slow part; ODIN and Table 7 pass the sets through it again.
SIZES = {
    "cifar10-train": 1000,
    "cifar10-test": 500,
    "cifar10-val": 250,
    "tinyimagenet": 250,
    "tinyimagenet-val": 250,
}


def test_real_cifar10_densenet_main_results(shared_data, tmp_path):
    config = yaml.safe_load((REPO / "config" / "cifar10_densenet.yaml").read_text())
    for name, spec in config["datasets"].items():
        if "path" in spec:  # the config's paths are relative to the repo root
            spec["path"] = spec["path"].replace("../shared/data", str(shared_data))
        if name in SIZES:
            spec["max_images"] = SIZES[name]
    # The validation slice of the test set starts after this run's test slice.
    config["datasets"]["cifar10-val"]["skip_images"] = SIZES["cifar10-test"]
    config["builtin"]["ood_size"] = 250
    config["ablations"]["layers"]["enabled"] = False  # Table 7: not part of the main table
    model = config["models"]["densenet"]
    model["checkpoint"] = model["checkpoint"].replace("../shared/data", str(shared_data))
    path = tmp_path / "cifar10_densenet.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    results = tmp_path / "results" / config["benchmark"]
    table = f"results/{config['benchmark']}/tables/table1_main_results_densenet.md"
    start = time.perf_counter()
    run_snakemake(tmp_path, "--cores", "2", table, configfile=path, timeout=3000)
    print(f"real CIFAR-10 DenseNet main results: {time.perf_counter() - start:.0f} s")
    summary = json.loads((results / "models/densenet/summary.json").read_text())
    assert summary["id_test_accuracy"] >= 75.0, summary["id_test_accuracy"]  # 500 images
    rows = pd.concat(
        pd.read_parquet(p) for p in (results / "evaluation/densenet").glob("*.parquet")
    )
    for method in config["methods"]:
        for ood in config["ood"]["test"]:
            got = rows[(rows["method"] == method) & (rows["ood_set"] == ood)]
            assert len(got) >= 1, f"no row for {method} on {ood}"
            assert np.isfinite(got[["fpr95", "auroc", "aupr_in", "aupr_out"]].to_numpy()).all()
    text = (tmp_path / table).read_text()
    for label in ("OPNP", "Energy", "textures", "tinyimagenet"):
        assert label in text, label
