"""One query chunk of a KNN job against a full-size stored bank, to size the whole job.

KNN's cost is the same for every chunk of queries (each chunk scans the whole bank), so
a job's time is its number of query rows times the seconds per query row of one chunk,
plus the per-job start-up (imports, the bank's norms: one pass over the training
features). This script scores the first ``--rows`` rows of a stored query set against a
stored training set (float16 feature-store files, memory-mapped, e.g. the
config/imagenet_scale.yaml run's ``imagenet-train.features.npy`` and
``imagenet-val.features.npy``) in a child process per search:

- ``scorer``: :class:`opnp.detectors.knn.KNN` as the workflow runs it (float32 screen,
  float64 recomputation of the candidates near the k-th, :mod:`opnp.nearest`);
- ``float64_scan`` (with ``--scan``): the search the scorer used before, a float64
  product of every bank block and a running ``np.partition``;

checks that both give the same scores (1e-12), and prints each one's seconds (fit = the
norms' pass, and scoring), its peak RSS (VmHWM) and

    RESULT knn_chunk_seconds_per_query_row     (scorer, scoring only)
    RESULT knn_chunk_fit_seconds               (scorer: the bank's norms)
    RESULT knn_chunk_peak_rss_mib              (scorer)
    RESULT knn_chunk_speedup_vs_float64_scan   (with --scan: scan seconds / scorer seconds)
    RESULT knn_job_projected_seconds_<n>       (fit + n x seconds per query row, for each
                                                --project n)

    python perf/bench_knn_chunk.py --train RUN/results/imagenet_scale/features/M/imagenet-train.features.npy \\
        --queries RUN/results/imagenet_scale/features/M/imagenet-val.features.npy \\
        --rows 4096 --scan --project 60000 90000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from child_report import peak_rss_mib  # perf/ is the script's folder

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def child(train_path: str, queries_path: str, rows: int, k: int, mode: str, out: str) -> None:
    from bench_knn_bank import float64_scan_scores

    from opnp.detectors import create_detector

    train = np.load(train_path, mmap_mode="r")
    queries = np.asarray(np.load(queries_path, mmap_mode="r")[:rows])
    t0 = time.perf_counter()
    det = create_detector("knn", k=k).fit(train)
    det._norms  # noqa: B018 - the norms' pass over the bank, timed as the fit
    fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = float64_scan_scores(det, queries) if mode == "float64_scan" else det.score(queries)
    score = time.perf_counter() - t0
    np.save(out, scores)
    print(json.dumps({"fit": fit, "score": score, "peak_rss_mib": peak_rss_mib()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", required=True, help="training features (.npy, N x D)")
    ap.add_argument("--queries", required=True, help="query features (.npy)")
    ap.add_argument("--rows", type=int, default=4096, help="query rows scored (one chunk)")
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--scan", action="store_true", help="also time the float64 scan")
    ap.add_argument("--project", type=int, nargs="*", default=[], help="job query rows")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.train, args.queries, args.rows, args.k, *args.child)
        return
    for path in (args.train, args.queries):
        if not Path(path).is_file():
            raise SystemExit(f"{path}: no such feature file")
    shape = np.load(args.train, mmap_mode="r").shape
    print(
        f"KNN k={args.k}: {args.rows:,} query rows against {shape[0]:,} x {shape[1]} training rows"
    )
    runs, scores = {}, {}
    with tempfile.TemporaryDirectory(prefix="bench_knn_chunk.") as folder:
        for mode in ("scorer", "float64_scan") if args.scan else ("scorer",):
            out = str(Path(folder) / f"{mode}.npy")
            cmd = [sys.executable, __file__, "--train", args.train, "--queries", args.queries]
            cmd += ["--rows", str(args.rows), "--k", str(args.k), "--child", mode, out]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
            scores[mode] = np.load(out)
            r = runs[mode]
            print(
                f"  {mode:<13} fit {r['fit']:7.1f} s  score {r['score']:8.1f} s  {r['peak_rss_mib']:6.0f} MiB"
            )
    scorer = runs["scorer"]
    per_row = scorer["score"] / args.rows
    print(f"RESULT knn_chunk_seconds_per_query_row {per_row:.5f}")
    print(f"RESULT knn_chunk_fit_seconds {scorer['fit']:.1f}")
    print(f"RESULT knn_chunk_peak_rss_mib {scorer['peak_rss_mib']:.0f}")
    if args.scan:
        diff = float(np.max(np.abs(scores["scorer"] - scores["float64_scan"])))
        print(f"  max |scorer - float64 scan| = {diff:.3g}")
        if not diff <= 1e-12:
            raise SystemExit("the scorer differs from the float64 scan")
        speedup = runs["float64_scan"]["score"] / scorer["score"]
        print(f"RESULT knn_chunk_speedup_vs_float64_scan {speedup:.2f}")
    for n in args.project:
        print(f"RESULT knn_job_projected_seconds_{n} {scorer['fit'] + n * per_row:.0f}")


if __name__ == "__main__":
    main()
