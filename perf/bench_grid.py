"""Scoring a 5x5x5x5 OPNP grid: incremental group logits vs a naive per-config loop.

ImageNet shape by default: C=1000, D=2048, 50,000 ID + 40,000 OOD test features
(synthetic ReLU features), the 625 configs of config/config.yaml's OPNP grid. Prints
configs/second for the incremental scorer (:func:`opnp.grid.score_pruning_grid`) and for
the naive loop (masks -> masked W -> dense logits of all N rows -> energy), the naive
loop timed on a sample of configs and extrapolated to the grid (stated in the output),
in float64 (the precision of the exactness check) and in float32 for reference; the
largest relative difference of the scores; and the peak traced memory (tracemalloc) of
the scorer at N and at N/4 (scores written to a memory-mapped output, which is excluded).
The scorer's time includes building its plan (group masks and blocks), the naive loop's
its per-config masks; both sides are timed in this run, in this process.

    python perf/bench_grid.py [--n-id 50000 --n-ood 40000] [--naive-configs 4]
        [--threads K] [--quick]

``--quick`` runs the same code on 5,000 ID + 4,000 OOD rows (under 3 min on 2 cores).
The output ends with one ``RESULT <name> <value>`` line per headline figure.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

GRID = {
    "weight_low": [0, 10, 20, 40, 60],
    "weight_high": [0, 0.1, 0.5, 1, 2],
    "neuron_low": [0, 5, 10, 20, 40],
    "neuron_high": [0, 1, 5, 10, 20],
}


def naive_scores(h, w, b, s, n, cfg, dtype, chunk=8192):
    from opnp.pruning import masked_weight, pruning_masks
    from opnp.sensitivity import logsumexp

    wm, nm = pruning_masks(s, n, **cfg)
    wt = np.ascontiguousarray(masked_weight(w, wm, nm).T, dtype=dtype)
    out = np.empty(len(h))
    for start in range(0, len(h), chunk):
        f = h[start : start + chunk].astype(dtype) @ wt + b.astype(dtype)
        out[start : start + chunk] = logsumexp(f.astype(np.float64), axis=1)
    return out


def traced_peak(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, elapsed, peak


def main() -> None:
    from opnp.grid import default_threads, score_pruning_grid
    from opnp.grid_plan import GridPlan
    from opnp.sensitivity import neuron_sensitivity, parameter_sensitivity

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-id", type=int, default=50000)
    ap.add_argument("--n-ood", type=int, default=40000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--naive-configs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None, help="grid scorer threads")
    ap.add_argument("--quick", action="store_true", help="5,000 + 4,000 rows, 2 naive configs")
    args = ap.parse_args()
    if args.quick:
        args.n_id, args.n_ood, args.n_train, args.naive_configs = 5000, 4000, 5000, 2
    c, d = args.classes, args.dim
    rng = np.random.default_rng(0)
    w = rng.standard_normal((c, d)) * 0.05
    b = rng.standard_normal(c) * 0.1
    train = np.maximum(rng.standard_normal((args.n_train, d), dtype=np.float32), 0)
    s = parameter_sensitivity(train, w, b, precision="float32")
    ns = neuron_sensitivity(s)
    del train
    n_total = args.n_id + args.n_ood
    h = np.maximum(rng.standard_normal((n_total, d), dtype=np.float32), 0)
    h[args.n_id :] *= 1.3  # "OOD" rows
    configs = [dict(zip(GRID, v, strict=True)) for v in itertools.product(*GRID.values())]
    print(f"N={n_total} ({args.n_id} ID + {args.n_ood} OOD), C={c}, D={d}, {len(configs)} configs")

    t0 = time.perf_counter()
    plan = GridPlan(w, b, s, ns, configs)
    plan_time = time.perf_counter() - t0
    threads = default_threads() if args.threads is None else args.threads
    print(
        f"plan built in {plan_time:.1f} s; scorer threads: {threads}; separable: {plan.separable}"
    )
    print(
        f"groups: {len(plan.weight_axis.codes)} weight x {len(plan.neuron_axis.codes)} neuron, "
        f"{plan.n_pairs} nonempty pairs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for n_rows in (n_total // 4, n_total):
            out = np.lib.format.open_memmap(
                Path(tmp) / f"scores{n_rows}.npy", mode="w+", dtype=np.float64,
                shape=(len(configs), n_rows),
            )  # fmt: skip
            _, elapsed, peak = traced_peak(
                lambda out=out, n_rows=n_rows: score_pruning_grid(
                    h[:n_rows], w, b, s, ns, configs, out=out, plan=plan, n_threads=threads
                )
            )
            results[n_rows] = (out, elapsed, peak)
            print(
                f"incremental grid, N={n_rows}: {elapsed:.1f} s, "
                f"{len(configs) / elapsed:.2f} configs/s, peak traced memory {peak / 2**20:.0f} MiB"
            )
        fast, fast_time, _ = results[n_total]
        fast_time += plan_time
        peaks = {n_rows: r[2] for n_rows, r in results.items()}
        sample = [configs[i] for i in rng.choice(len(configs), args.naive_configs, replace=False)]
        idx = [configs.index(cfg) for cfg in sample]
        figures = {}
        for dtype in (np.float64, np.float32):
            t0 = time.perf_counter()
            naive = [naive_scores(h, w, b, s, ns, cfg, dtype) for cfg in sample]
            per_config = (time.perf_counter() - t0) / len(sample)
            total = per_config * len(configs)
            rel = max(
                np.max(np.abs(fast[i] - ref) / np.abs(ref))
                for i, ref in zip(idx, naive, strict=True)
            )
            name = np.dtype(dtype).name
            figures[name] = (total / fast_time, rel)
            print(
                f"naive dense loop ({name}): {per_config:.2f} s/config, "
                f"{1 / per_config:.3f} configs/s, timed on {len(sample)} sampled configs and "
                f"extrapolated to {len(configs)}: {total:.0f} s -> incremental (plan included) is "
                f"{total / fast_time:.1f}x faster; max relative score difference {rel:.1e}"
            )
    gpu_figures(args, w, b, s, ns, configs, h, fast)
    print(f"RESULT grid_speedup_vs_naive_float32 {figures['float32'][0]:.1f}")
    print(f"RESULT grid_speedup_vs_naive_float64 {figures['float64'][0]:.1f}")
    print(f"RESULT grid_max_rel_error_vs_float64 {figures['float64'][1]:.1e}")
    print(f"RESULT grid_configs_per_second {len(configs) / fast_time:.2f}")
    print(f"RESULT grid_peak_memory_mib {peaks[n_total] / 2**20:.0f}")
    print(
        f"RESULT grid_peak_memory_ratio_n_vs_quarter_n {peaks[n_total] / peaks[n_total // 4]:.2f}"
    )


def gpu_figures(args, w, b, s, ns, configs, h, reference) -> None:
    """The same grid on CUDA (torch), when a GPU is visible: time and agreement."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    if not torch.cuda.is_available():
        print("no CUDA device: GPU figures skipped")
        return
    from opnp.grid import score_pruning_grid

    name = torch.cuda.get_device_name(0)
    hg = torch.from_numpy(np.ascontiguousarray(h)).cuda()
    score_pruning_grid(hg[:1000], w, b, s, ns, configs)  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    got = score_pruning_grid(hg, w, b, s, ns, configs)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    rel = float(np.max(np.abs(np.asarray(got) - reference) / np.abs(reference)))
    print(f"GPU ({name}): {elapsed:.1f} s for the grid, max relative difference {rel:.1e}")
    print(f"RESULT grid_gpu_seconds {elapsed:.2f}")


if __name__ == "__main__":
    main()
