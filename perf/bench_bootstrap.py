"""Bootstrap intervals of FPR95 and AUROC: vectorised resamples vs a naive loop.

ImageNet shape by default: 50,000 ID + 10,000 OOD test scores (synthetic normal scores,
rounded so that ties occur), 1,000 resamples. Prints the time of
:func:`opnp.bootstrap.bootstrap_metrics` (sorted scores, multiplicities and cumulative
counts per block of resamples) and of a naive loop that draws the same resamples and calls
:func:`opnp.metrics.fpr_at_95_tpr` and :func:`opnp.metrics.auroc` on each resampled pair
of arrays (timed on a sample of resamples and extrapolated to all, as stated in the
output), the largest difference between the two on the sampled resamples (0: exact), and
the intervals. Ends with ``RESULT <name> <value>`` lines.

    python perf/bench_bootstrap.py [--quick] [--n-id 50000 --n-ood 10000]
        [--resamples 1000] [--naive-resamples 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout


def main() -> None:
    from opnp import bootstrap, metrics

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-id", type=int, default=50_000)
    ap.add_argument("--n-ood", type=int, default=10_000)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--naive-resamples", type=int, default=20)
    ap.add_argument(
        "--quick", action="store_true", help="5,000 + 1,000 scores, 200 resamples (seconds)"
    )
    args = ap.parse_args()
    if args.quick:
        args.n_id, args.n_ood, args.resamples, args.naive_resamples = 5000, 1000, 200, 10
    rng = np.random.default_rng(0)
    ids = np.round(rng.normal(1.0, 1.0, args.n_id), 3)
    oods = np.round(rng.normal(0.0, 1.0, args.n_ood), 3)
    print(
        f"{args.n_id} ID + {args.n_ood} OOD scores, {args.resamples} resamples "
        f"(blocks of {bootstrap.block_size(args.n_id, args.n_ood)})"
    )

    start = time.perf_counter()
    fast = bootstrap.bootstrap_metrics(ids, oods, n_resamples=args.resamples, ood_name="ood")
    fast_time = time.perf_counter() - start
    print(f"vectorised: {fast_time:.2f} s ({args.resamples / fast_time:.0f} resamples/s)")

    metrics.auroc(ids[:10], oods[:10])  # warm-up: imports scipy.stats outside the timing
    sample = sorted(rng.choice(args.resamples, args.naive_resamples, replace=False).tolist())
    start = time.perf_counter()
    id_idx = bootstrap.resample_indices(args.n_id, sample, stream=bootstrap.ID_STREAM)
    ood_idx = bootstrap.resample_indices(args.n_ood, sample, stream=bootstrap.ood_stream("ood"))
    naive = {"fpr95": [], "auroc": []}
    for i in range(len(sample)):
        resampled_id, resampled_ood = ids[id_idx[i]], oods[ood_idx[i]]
        naive["fpr95"].append(metrics.fpr_at_95_tpr(resampled_id, resampled_ood))
        naive["auroc"].append(metrics.auroc(resampled_id, resampled_ood))
    per_resample = (time.perf_counter() - start) / len(sample)
    naive_time = per_resample * args.resamples
    diff = max(np.max(np.abs(np.asarray(naive[m]) - fast[m][sample])) for m in naive)
    speedup = naive_time / fast_time
    print(
        f"naive loop (opnp.metrics per resample): {per_resample * 1e3:.1f} ms/resample, timed "
        f"on {len(sample)} sampled resamples and extrapolated to {args.resamples}: "
        f"{naive_time:.1f} s -> vectorised is {speedup:.1f}x faster; "
        f"max |difference| on the sampled resamples {diff:.1e}"
    )
    for metric in ("fpr95", "auroc"):
        value = getattr(metrics, "fpr_at_95_tpr" if metric == "fpr95" else "auroc")(ids, oods)
        low, high = bootstrap.percentile_interval(fast[metric], 95)
        print(f"{metric}: {100 * value:.2f} %, 95 % interval [{100 * low:.2f}, {100 * high:.2f}]")
    gpu_figures(ids, oods, args.resamples, fast)
    print(f"RESULT bootstrap_seconds {fast_time:.3f}")
    print(f"RESULT bootstrap_speedup_vs_loop {speedup:.1f}")


def gpu_figures(ids, oods, resamples, reference) -> None:
    """The torch path on CUDA (``device="cuda"``), when a GPU is visible."""
    import torch

    from opnp import bootstrap

    if not torch.cuda.is_available():
        print("no CUDA device: GPU figures skipped")
        return
    name = torch.cuda.get_device_name(0)
    bootstrap.bootstrap_metrics(ids, oods, n_resamples=4, device="cuda")  # warm-up
    start = time.perf_counter()
    got = bootstrap.bootstrap_metrics(ids, oods, n_resamples=resamples, device="cuda")
    elapsed = time.perf_counter() - start
    same = all(np.array_equal(got[m], reference[m]) for m in got)
    print(f"GPU ({name}): {elapsed:.3f} s for {resamples} resamples, identical: {same}")
    print(f"RESULT bootstrap_gpu_seconds {elapsed:.3f}")


if __name__ == "__main__":
    main()
