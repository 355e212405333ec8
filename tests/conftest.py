"""Shared fixtures: paths of the repo and of the optional real data beside it."""

from __future__ import annotations

from pathlib import Path

import pytest
from workflow_helpers import REPO, SHARED_DATA


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
