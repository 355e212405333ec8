"""Per-job setup shared by the workflow's scripts: logging, threads, determinism."""

from __future__ import annotations

import logging
import os
import random
import sys

import numpy as np


def setup_job(log_path: str | None = None, threads: int = 1, seed: int = 0) -> logging.Logger:
    """Send this job's output to its log file and pin threads and seeds.

    Torch and BLAS use exactly ``threads`` threads (the rule's ``threads:``), so many
    jobs at once never oversubscribe the cores. Torch runs with deterministic
    algorithms so that two runs give byte-identical results on CPU.
    """
    if log_path:
        stream = open(log_path, "w", buffering=1)  # noqa: SIM115 - lives as long as the job
        sys.stdout = sys.stderr = stream
    threads = max(1, int(threads))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        pass
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - third-party code may draw from the legacy global RNG
    # Only a job that already imported torch (its script imports what it uses first)
    # pays for configuring it; importing torch costs seconds per job otherwise.
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=False)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        force=True,
    )
    return logging.getLogger("opnp")


def torch_device():
    """The device network jobs use: the first CUDA GPU when one is visible (on a GPU
    node SLURM exposes the allocated one), else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
