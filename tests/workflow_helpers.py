"""Helpers for tests that run the workflow through Snakemake's command line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TINY = REPO / "tests" / "configs" / "tiny.yaml"
DEFAULT = REPO / "config" / "config.yaml"


def snakemake_command(workdir: Path, *args: str, configfile: Path | None = None) -> list[str]:
    """The command line that runs the repo's workflow with outputs in ``workdir``."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile or DEFAULT),
        *args,
    ]


def run_snakemake(
    workdir: Path,
    *args: str,
    configfile: Path | None = None,
    timeout: int = 900,
    check: bool = True,
):
    """Run the repo's workflow with ``workdir`` as working directory (outputs land there)."""
    cmd = snakemake_command(workdir, *args, configfile=configfile)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir
    )
    if check and proc.returncode != 0:
        command = " ".join(args)
        raise AssertionError(
            f"workflow run '{command}' failed with exit code {proc.returncode}:\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc


def jobs_per_rule(rules_summary: str) -> dict[str, int]:
    """Rule -> job count from the table ``snakemake -n --quiet rules`` prints."""
    counts = {}
    for line in rules_summary.splitlines():
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if match and match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts
