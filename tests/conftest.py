"""Shared fixtures: paths of the repo and of the optional real data beside it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from workflow_helpers import DEFAULT, REPO, SHARED_DATA, TINY, run_snakemake


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real data not found at {SHARED_DATA} (it lies beside the repo on the dev machines)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One clean run of tests/configs/tiny.yaml, shared by the workflow tests."""
    workdir = tmp_path_factory.mktemp("tiny")
    start = time.perf_counter()
    run_snakemake(workdir, "--cores", "2", configfile=TINY, timeout=1500)
    print(f"tiny workflow: {time.perf_counter() - start:.0f} s")
    return workdir


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """One clean local run of the default config, shared by the end-to-end and SLURM
    tests."""
    workdir = tmp_path_factory.mktemp("default")
    start = time.perf_counter()
    run_snakemake(workdir, "--cores", "2", configfile=DEFAULT, timeout=1800)
    print(f"default workflow: {time.perf_counter() - start:.0f} s")
    return workdir
