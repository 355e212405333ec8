"""Sensitivity over a memory-mapped ImageNet-train-sized feature file (issue 6).

Writes a synthetic (N, 2048) float16 .npy (default N = 1,281,167, about 5.2 GB; ReLU
features) to a temporary directory with plain file writes, then computes the closed-form
parameter sensitivity (C = 1000) from ``np.load(..., mmap_mode="r")`` in a fresh child
process and reports time, throughput and the child's peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and peak traced allocations
(``tracemalloc``), for N and for N/4: peak memory is set by the chunk size, not by N.
A third run takes a seeded random ``--fraction`` % subset of the N rows the way the
workflow's ``compute_sensitivity`` does (``rows=``: gathered chunk by chunk from the
memory map, never copied out), so its memory is that of a chunk too.

    python perf/bench_sensitivity_scale.py [--n 1281167] [--chunk 4096]
        [--precision float32|float64] [--fraction 20] [--device cuda] [--quick]

``--quick``: N = 60,000 (same code). ``--device cuda``: the torch path on the GPU
(chunks of the memory map moved there one at a time; the default chunk is then 65,536).
The output ends with ``RESULT`` lines (seconds and rows/s at N, peak RSS, and the peak
RSS at N over that at N/4: memory independent of N).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout


def write_features(path: Path, n: int, d: int, block: int = 16384) -> None:
    """Synthetic float16 ReLU features, written block by block (never all in memory)."""
    rng = np.random.default_rng(0)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)),
              "fortran_order": False, "shape": (n, d)}  # fmt: skip
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for start in range(0, n, block):
            rows = min(block, n - start)
            x = rng.standard_normal((rows, d), dtype=np.float32)
            np.maximum(x, 0, out=x)
            f.write(x.astype(np.float16).tobytes())


def worker(
    path: str, n_rows: int, fraction: float, chunk: int, precision: str, device=None
) -> None:
    """Child process: sensitivity over the first n_rows of the memory map, or over a
    random ``fraction`` % of them (below 100); prints JSON."""
    from opnp.sensitivity import parameter_sensitivity
    from opnp.subsets import seeded_subset_indices

    rng = np.random.default_rng(1)
    w = rng.standard_normal((1000, 2048)) * 0.05
    b = rng.standard_normal(1000) * 0.1
    features = np.load(path, mmap_mode="r")
    if n_rows < len(features):  # a shorter memory map on the same file
        features = np.memmap(path, dtype=features.dtype, mode="r", offset=features.offset,
                             shape=(n_rows, features.shape[1]))  # fmt: skip
    # the subset workflow/scripts/compute_sensitivity.py draws (seed 0)
    rows = seeded_subset_indices(n_rows, fraction, seed=0)
    n_used = len(rows)
    if n_used == n_rows:
        rows = None  # the whole map, read as plain slices
    tracemalloc.start()
    t0 = time.perf_counter()
    s = parameter_sensitivity(
        features, w, b, chunk_size=chunk, precision=precision, rows=rows, device=device
    )
    if device is not None and str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "traced": traced,
                "rss": rss,
                "rows": n_used,
                "sum": float(s.sum()),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1281167)
    ap.add_argument("--chunk", type=int, default=None, help="default 4096 (GPU: 65536)")
    ap.add_argument("--device", default=None, help="e.g. cuda: the torch path there")
    ap.add_argument("--quick", action="store_true", help="N = 60,000")
    ap.add_argument("--precision", default="float32", choices=["float32", "float64"])
    ap.add_argument("--fraction", type=float, default=20.0)
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.chunk is None:
        args.chunk = 65536 if args.device else 4096
    if args.quick:
        args.n = 60000
    if args.worker:
        path, n_rows, fraction = args.worker
        worker(path, int(n_rows), float(fraction), args.chunk, args.precision, args.device)
        return
    d = 2048
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.features.npy"
        t0 = time.perf_counter()
        write_features(path, args.n, d)
        size = path.stat().st_size
        print(
            f"wrote {args.n} x {d} float16 ({size / 2**30:.2f} GiB) in {time.perf_counter() - t0:.0f} s"
        )
        runs = {}
        for n_rows, fraction in ((args.n // 4, 100.0), (args.n, 100.0), (args.n, args.fraction)):
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", str(path), str(n_rows), str(fraction),
                 "--chunk", str(args.chunk), "--precision", args.precision]
                + (["--device", args.device] if args.device else []),
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[(n_rows, fraction)] = r
            used = r["rows"]
            gflops = 4.0 * used * d * 1000 / r["seconds"] / 1e9
            what = (
                f"N={n_rows}" if fraction >= 100 else f"{fraction:g} % of N={n_rows} ({used} rows)"
            )
            print(
                f"{what} ({args.precision}, chunk {args.chunk}): {r['seconds']:.1f} s, "
                f"{used / r['seconds']:.0f} rows/s, {gflops:.1f} GFLOP/s; "
                f"peak RSS {r['rss'] / 2**20:.0f} MiB, peak traced {r['traced'] / 2**20:.0f} MiB "
                f"(file {n_rows * d * 2 / 2**20:.0f} MiB)"
            )

    full, quarter = runs[(args.n, 100.0)], runs[(args.n // 4, 100.0)]
    tag = "" if not args.device else f"_{args.device.split(':')[0]}"
    print(f"RESULT sensitivity_scale{tag}_seconds {full['seconds']:.1f}")
    print(f"RESULT sensitivity_scale{tag}_rows_per_second {full['rows'] / full['seconds']:.0f}")
    print(f"RESULT sensitivity_scale{tag}_peak_rss_mib {full['rss'] / 2**20:.0f}")
    print(
        f"RESULT sensitivity_scale{tag}_rss_ratio_n_vs_quarter_n {full['rss'] / quarter['rss']:.2f}"
    )


if __name__ == "__main__":
    main()
