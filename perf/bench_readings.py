"""The vectorised OPNP grid under each mask reading (READINGS): seconds for the 625
configs of the paper's grid (PAPER_GRID) with the default options, with
``threshold_scope="row"`` and with ``neuron_source="weight_pruned"`` (one grid over the
neuron percentages per (weight_low, weight_high) pair), against the exact per-config
detector path (``create_detector(...).fit().score()``), timed on ``--exact-configs``
configs and extrapolated to the grid (stated in the output). Every timed grid is checked
against the detector on those configs (largest relative difference of the scores).

ImageNet-like shape by default: C=1000, D=1280 (an EfficientNet / MobileNet head),
10,000 synthetic ReLU feature rows, S from 4,000 synthetic training rows.

    OMP_NUM_THREADS=1 python perf/bench_readings.py [--rows 10000] [--exact-configs 3]
        [--quick]

``--quick``: 1,000 rows (the same code, for a smoke run). The output ends with one
``RESULT <name> <value>`` line per headline figure.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

READING_CASES = {
    "default": {},
    "threshold_scope=row": {"threshold_scope": "row"},
    "neuron_source=weight_pruned": {"neuron_source": "weight_pruned"},
}


def main(argv=None) -> None:
    from opnp.detectors import create_detector, detector_class
    from opnp.detectors.optimal_pruning import PAPER_GRID
    from opnp.sensitivity import parameter_sensitivity

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--exact-configs", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    rows = 1000 if args.quick else args.rows
    rng = np.random.default_rng(0)
    c, d = args.classes, args.dim
    w = rng.normal(size=(c, d)) / np.sqrt(d)
    b = rng.normal(size=c) * 0.1
    scale = rng.gamma(2.0, 0.5, size=d)  # neurons of different magnitudes
    train = np.maximum(rng.normal(size=(4000, d)) * scale, 0)
    h = np.maximum(rng.normal(size=(rows, d)) * scale, 0)
    s = parameter_sensitivity(train, w, b)
    grid = [dict(zip(PAPER_GRID, v, strict=True)) for v in itertools.product(*PAPER_GRID.values())]
    pick = rng.choice(len(grid), args.exact_configs, replace=False)
    print(f"C={c} D={d} rows={rows} configs={len(grid)}", flush=True)
    results = {}
    for name, options in READING_CASES.items():
        configs = [cfg | options for cfg in grid]
        t0 = time.perf_counter()
        scorer = detector_class("opnp").grid_scorer(
            configs,
            weight=w,
            bias=b,
            sensitivity=s,
            statistic="mean",
            train_features=None,
            features={"ID": h},
        )
        grid_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        worst = 0.0
        for i in pick:
            det = create_detector("opnp", weight=w, bias=b, param_sensitivity=s, **configs[i])
            ref = det.fit().score(h)
            worst = max(worst, float(np.max(np.abs(scorer(i)["ID"] - ref) / np.abs(ref))))
        exact_s = (time.perf_counter() - t0) / len(pick) * len(grid)
        print(
            f"{name}: grid {grid_s:.1f} s for {len(grid)} configs; exact per-config path "
            f"{exact_s:.0f} s (extrapolated from {len(pick)} configs); largest relative "
            f"difference {worst:.1e}",
            flush=True,
        )
        results[name] = grid_s
        if worst > 1e-9:
            raise SystemExit(f"{name}: the grid differs from the detector by {worst:.1e}")
    for name, seconds in results.items():
        print(f"RESULT grid_seconds[{name}] {seconds:.1f}")


if __name__ == "__main__":
    main()
