"""Closed-form parameter sensitivity vs per-sample autograd at ImageNet shape.

Prints, measured in this run: this machine's float32 GEMM throughput; the closed form's
throughput (two matrix products per chunk: logits and P^T |H|) as a share of it; the
per-sample autograd time (one ``energy.backward()`` per sample through ``nn.Linear``,
measured on a subset of N and extrapolated per sample, as stated in the output) and the
speedup; and the agreement of the closed form with per-sample autograd in float64.

    python perf/bench_sensitivity.py [--n 20000] [--classes 1000] [--dim 2048] [--quick]

``--quick``: N = 8,192, autograd timed on 40 samples, the check on 300 (same code). With
CUDA available, the torch path on the GPU is timed too (``device="cuda"``). The output
ends with ``RESULT`` lines: the default setting's (``precision="float64"``) fraction of
the float32 GEMM peak and largest elementwise relative error against float64 per-sample
autograd (the largest over the ReLU and signed features), and the same for float32.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout


def gemm_gflops(rows: int, dim: int, classes: int, repeats: int = 5) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((rows, dim), dtype=np.float32)
    b = rng.standard_normal((dim, classes), dtype=np.float32)
    a @ b  # warm-up
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * rows * dim * classes / best / 1e9


def autograd_seconds_per_sample(h, w, b, n: int) -> float:
    """Per-sample backward loop in float32 (the paper's energy_score.backward())."""
    import torch

    layer = torch.nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w.astype(np.float32)))
        layer.bias.copy_(torch.from_numpy(b.astype(np.float32)))
    x = torch.from_numpy(np.ascontiguousarray(h[:n], dtype=np.float32))
    acc = torch.zeros_like(layer.weight)
    t0 = time.perf_counter()
    for xi in x:
        layer.zero_grad(set_to_none=True)
        energy = -torch.logsumexp(layer(xi[None]), dim=1).sum()
        energy.backward()
        acc += layer.weight.grad.abs()
    return (time.perf_counter() - t0) / n


def main() -> None:
    from opnp.nets.network import parameter_sensitivity_autograd
    from opnp.sensitivity import parameter_sensitivity

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--autograd-n", type=int, default=300, help="subset timed for autograd")
    ap.add_argument("--check-n", type=int, default=1000, help="subset for the float64 check")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.n, args.autograd_n, args.check_n = 8192, 40, 300
    fraction: dict[str, list[float]] = {"float64": [], "float32": []}
    error: dict[str, list[float]] = {"float64": [], "float32": []}
    speedup = []
    n, c, d = args.n, args.classes, args.dim
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((c, d)) * 0.05).astype(np.float32)
    b = (rng.standard_normal(c) * 0.1).astype(np.float32)
    peak = gemm_gflops(args.chunk, d, c)
    print(f"machine float32 GEMM ({args.chunk}x{d} @ {d}x{c}): {peak:.1f} GFLOP/s")
    flops = 4.0 * n * d * c  # logits (2NDC) + P^T|H| (2NCD)
    for kind in ("relu", "signed"):
        h = rng.standard_normal((n, d), dtype=np.float32)
        if kind == "relu":
            np.maximum(h, 0, out=h)
        print(f"\n== {kind} features, N={n}, C={c}, D={d} ==")
        timings = {}
        # The peak is re-measured next to each timing: other load on the machine changes it.
        peak = gemm_gflops(args.chunk, d, c)
        print(f"float32 GEMM peak measured now: {peak:.1f} GFLOP/s")
        for precision in ("float32", "float64"):
            parameter_sensitivity(h[: args.chunk], w, b, precision=precision)  # warm-up
            t0 = time.perf_counter()
            parameter_sensitivity(h, w, b, precision=precision, chunk_size=args.chunk)
            timings[precision] = time.perf_counter() - t0
            gf = flops / timings[precision] / 1e9
            fraction[precision].append(gf / peak)
            print(
                f"closed form ({precision}): {timings[precision]:.2f} s, {gf:.1f} GFLOP/s = "
                f"{100 * gf / peak:.0f} % of the float32 GEMM peak"
            )
        per_sample = autograd_seconds_per_sample(h, w, b, args.autograd_n)
        auto_total = per_sample * n
        speedup.append(auto_total / timings["float64"])
        print(
            f"per-sample autograd (float32 loop): {1e3 * per_sample:.2f} ms/sample, measured on "
            f"{args.autograd_n} samples and extrapolated to N={n}: {auto_total:.1f} s"
        )
        print(
            f"speedup of the closed form over per-sample autograd: "
            f"{auto_total / timings['float32']:.1f}x (float32), "
            f"{auto_total / timings['float64']:.1f}x (float64)"
        )
        sub = h[: args.check_n].astype(np.float64)
        ref = parameter_sensitivity_autograd(sub, w, b, batch_size=50)
        for precision in ("float64", "float32"):
            got = parameter_sensitivity(h[: args.check_n], w, b, precision=precision)
            elem = np.max(np.abs(got - ref) / np.abs(ref))
            norm = np.linalg.norm(got - ref) / np.linalg.norm(ref)
            error[precision].append(elem)
            print(
                f"agreement with float64 per-sample autograd on {args.check_n} samples "
                f"({precision}): max elementwise rel. error {elem:.2e}, norm-wise {norm:.2e}"
            )
        if kind == "signed":
            batch = parameter_sensitivity(sub, w, b, reduction="batch")
            full = parameter_sensitivity(sub, w, b)
            print(
                "signed features: reduction='batch' differs from per-sample by "
                f"{np.linalg.norm(batch - full) / np.linalg.norm(full):.2f} (norm-wise relative)"
            )

    gpu_figures(args, w, b)
    print(f"RESULT sensitivity_fraction_of_gemm_peak {min(fraction['float64']):.2f}")
    print(f"RESULT sensitivity_max_rel_error {max(error['float64']):.1e}")
    print(f"RESULT sensitivity_float32_fraction_of_gemm_peak {min(fraction['float32']):.2f}")
    print(f"RESULT sensitivity_float32_max_rel_error {max(error['float32']):.1e}")
    print(f"RESULT sensitivity_speedup_vs_autograd {min(speedup):.0f}")


def gpu_figures(args, w, b) -> None:
    """The torch path on CUDA, when a GPU is visible: throughput and agreement."""
    import torch

    from opnp.sensitivity import parameter_sensitivity

    if not torch.cuda.is_available():
        print("no CUDA device: GPU figures skipped")
        return
    name = torch.cuda.get_device_name(0)
    rng = np.random.default_rng(1)
    h = np.maximum(rng.standard_normal((args.n, args.dim), dtype=np.float32), 0)
    hg = torch.from_numpy(h).cuda()
    ref = parameter_sensitivity(h, w, b)
    for precision in ("float64", "float32"):
        parameter_sensitivity(hg[:4096], w, b, precision=precision)  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        got = parameter_sensitivity(hg, w, b, precision=precision, chunk_size=16384)
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        rel = np.max(np.abs(got - ref) / np.abs(ref))
        print(
            f"GPU ({name}) {precision}: {elapsed:.3f} s for N={args.n}, "
            f"{args.n / elapsed:.0f} rows/s; max rel. difference to the CPU float64: {rel:.1e}"
        )
        print(f"RESULT sensitivity_gpu_{precision}_rows_per_second {args.n / elapsed:.0f}")


if __name__ == "__main__":
    main()
