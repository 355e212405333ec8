"""KNN's bank streamed from the float16 feature store against the whole bank held in memory,
and its search (float32 screen + float64 recomputation) against a plain float64 scan.

The numpy KNN scorer (opnp.detectors.knn) reads the training features block by block
from their memory map and normalises each block while scanning; before issue 28 it held
the whole normalised bank as float32 (1.28M x 2048 = 10 GB at ImageNet scale). This
script writes N x D float16 training features (sparse ReLU-like, opnp.synthetic's
generator) and Q x D query rows to a temporary folder, then in two child processes (so
that each has its own peak RSS, the kernel's VmHWM) fits KNN on the memory map and
scores the queries: ``stream`` (the scorer as it is) and ``held`` (the bank built and
held first via ``train_bank``, what the scorer did before). Both must give identical
scores (checked). A third child, ``float64_scan``, scores the same queries with the
search the scorer used before opnp.nearest (a float64 product of every bank block and a
running ``np.partition``, still its fallback); its scores must equal the scorer's to
1e-12. It prints wall seconds and peak RSS of each and

    RESULT knn_bank_stream_peak_rss_mib, RESULT knn_bank_held_peak_rss_mib,
    RESULT knn_bank_rss_ratio (held / stream), RESULT knn_bank_time_ratio (stream / held)
    RESULT knn_search_speedup_vs_float64_scan (float64_scan seconds / stream seconds)
    RESULT knn_search_max_abs_diff_vs_float64_scan

    python perf/bench_knn_bank.py [--n 320000 --queries 4096 --dim 2048 --k 1000]
    python perf/bench_knn_bank.py --quick    # 40,000 x 2048, 1,024 queries
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from child_report import print_child_report  # perf/ is the script's folder

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_inputs(folder: Path, n: int, queries: int, dim: int) -> None:
    """Float16 training rows and float16 query rows of one synthetic model."""
    from opnp.synthetic import BLOCK_ROWS, generate_rows, synthetic_head

    head = synthetic_head(1000, dim, 0)
    for name, rows, ood in (("train", n, False), ("queries", queries, True)):
        out = np.lib.format.open_memmap(folder / f"{name}.npy", "w+", np.float16, (rows, dim))
        for block, lo in enumerate(range(0, rows, BLOCK_ROWS)):
            h, _, _ = generate_rows(
                head, 0, 1 + ood, block, min(BLOCK_ROWS, rows - lo), lo, ood=ood, shift=0.4
            )
            out[lo : lo + len(h)] = h
        out.flush()
        del out


def child(folder: Path, mode: str, k: int) -> None:
    """Fit and score in this process; print JSON with seconds and VmHWM."""
    from opnp.detectors import create_detector

    train = np.load(folder / "train.npy", mmap_mode="r")
    queries = np.load(folder / "queries.npy", mmap_mode="r")
    t0 = time.perf_counter()
    det = create_detector("knn", k=k).fit(train)
    if mode == "held":
        det.train_bank  # noqa: B018 - build and hold the whole bank (the former fit)
    if mode == "float64_scan":
        scores = float64_scan_scores(det, queries)
    else:
        scores = det.score(queries)
    seconds = time.perf_counter() - t0
    np.save(folder / f"scores_{mode}.npy", scores)
    print_child_report(seconds)


def float64_scan_scores(det, queries) -> np.ndarray:
    """KNN scores by the previous search: a float64 scan of the streamed bank."""
    from opnp.detectors.knn import l2_normalise
    from opnp.nearest import _plain_float64_scan

    k, out = det.params["k"], np.empty(len(queries))
    for start in range(0, len(queries), det.chunk_size):
        z = l2_normalise(np.asarray(queries[start : start + det.chunk_size], np.float64))
        kth = _plain_float64_scan(z, k, det._n_bank, det._exact_bank_rows, det.similarity_block)
        out[start : start + len(z)] = -np.sqrt(np.maximum(2.0 - 2.0 * kth, 0.0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=320000, help="training rows (ImageNet N/4)")
    ap.add_argument("--queries", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="40,000 rows, 1,024 queries")
    ap.add_argument("--child", nargs=2, metavar=("FOLDER", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1], args.k)
        return
    if args.quick:
        args.n, args.queries = 40000, 1024
    folder = Path(tempfile.mkdtemp(prefix="bench_knn_bank."))
    try:
        write_inputs(folder, args.n, args.queries, args.dim)
        size = (folder / "train.npy").stat().st_size / 2**20
        print(
            f"KNN k={args.k}: {args.n:,} x {args.dim} float16 training rows ({size:.0f} MiB "
            f"memory-mapped), {args.queries:,} queries; float32 bank would be {2 * size:.0f} MiB"
        )
        runs = {}
        for mode in ("stream", "held", "float64_scan"):
            proc = subprocess.run(
                [sys.executable, __file__, "--k", str(args.k), "--child", str(folder), mode],
                capture_output=True,
                text=True,
                check=True,
            )
            runs[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(
                f"  {mode:<7} {runs[mode]['seconds']:8.1f} s  {runs[mode]['peak_rss_mib']:8.0f} MiB"
            )
        same = np.array_equal(
            np.load(folder / "scores_stream.npy"), np.load(folder / "scores_held.npy")
        )
        print(f"  scores identical: {same}")
        if not same:
            raise SystemExit("the streamed and held banks give different scores")
        diff = np.max(
            np.abs(
                np.load(folder / "scores_stream.npy") - np.load(folder / "scores_float64_scan.npy")
            )
        )
        print(f"  max |scorer - float64 scan|: {diff:.3g}")
        if not diff <= 1e-12:
            raise SystemExit("the scorer differs from the float64 scan")
        stream, held = runs["stream"], runs["held"]
        print(f"RESULT knn_bank_stream_peak_rss_mib {stream['peak_rss_mib']:.0f}")
        print(f"RESULT knn_bank_held_peak_rss_mib {held['peak_rss_mib']:.0f}")
        print(f"RESULT knn_bank_rss_ratio {held['peak_rss_mib'] / stream['peak_rss_mib']:.2f}")
        print(f"RESULT knn_bank_time_ratio {stream['seconds'] / held['seconds']:.2f}")
        scan = runs["float64_scan"]["seconds"]
        print(f"RESULT knn_search_speedup_vs_float64_scan {scan / stream['seconds']:.2f}")
        print(f"RESULT knn_search_max_abs_diff_vs_float64_scan {diff:.3g}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
