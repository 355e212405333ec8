"""The main-results part of the workflow on the real CIFAR-10 benchmark in ../shared/data
(config/cifar10_real.yaml): ResNet-20 checkpoint, JPEG CIFAR-10, Tiny ImageNet as OOD."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import REPO, run_snakemake

# about 8 min on 2 cores: left out of the default run (python -m pytest -m long runs it)
pytestmark = [pytest.mark.real_data, pytest.mark.slow, pytest.mark.long]


def test_real_cifar10_main_results(shared_data, tmp_path):
    config = yaml.safe_load((REPO / "config" / "cifar10_real.yaml").read_text())
    # The config's paths are relative to the repo root; the run happens in tmp_path.
    for spec in config["datasets"].values():
        if "path" in spec:
            spec["path"] = spec["path"].replace("../shared/data", str(shared_data))
    config["models"]["resnet20"]["checkpoint"] = config["models"]["resnet20"]["checkpoint"].replace(
        "../shared/data", str(shared_data)
    )
    path = tmp_path / "cifar10_real.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    results = tmp_path / "results" / config["benchmark"]
    start = time.perf_counter()
    run_snakemake(
        tmp_path,
        "--cores",
        "2",
        f"results/{config['benchmark']}/tables/table1_main_results_resnet20.md",
        configfile=path,
        timeout=3000,
    )
    print(f"real CIFAR-10 main results: {time.perf_counter() - start:.0f} s")
    summary = json.loads((results / "models/resnet20/summary.json").read_text())
    assert summary["id_test_accuracy"] >= 78.0, summary["id_test_accuracy"]
    rows = pd.concat(
        pd.read_parquet(p) for p in (results / "evaluation/resnet20").glob("*.parquet")
    )
    for method in config["methods"]:
        for ood in config["ood"]["test"]:
            got = rows[(rows["method"] == method) & (rows["ood_set"] == ood)]
            assert len(got) >= 1, f"no row for {method} on {ood}"
            assert np.isfinite(got[["fpr95", "auroc", "aupr_in", "aupr_out"]].to_numpy()).all()
    table = (results / "tables/table1_main_results_resnet20.md").read_text()
    assert "OPNP" in table and "Energy" in table
