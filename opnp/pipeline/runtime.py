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


#: ``num_workers: auto`` never starts more data-loader workers than this.
MAX_AUTO_WORKERS = 8


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def loader_workers(value, cpus: int | None = None) -> int:
    """Data-loader worker processes for a config's ``num_workers``: an integer >= 0 as
    given, or ``"auto"``: one core fewer than this machine has (the main process decodes
    too), at most :data:`MAX_AUTO_WORKERS` (2 cores: 1 worker; 1 core: 0, in-process).
    ``cpus``: the core count to assume (default :func:`available_cpus`)."""
    if value == "auto":
        cpus = available_cpus() if cpus is None else int(cpus)
        return max(0, min(MAX_AUTO_WORKERS, cpus - 1))
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"num_workers must be an integer >= 0 or 'auto', got {value!r}")
    return value


def torch_device():
    """The device network jobs use: the first CUDA GPU when one is visible (on a GPU
    node SLURM exposes the allocated one), else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
