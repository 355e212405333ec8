"""The whole cached-feature DAG of config/imagenet_scale.yaml at growing N (issue 28).

config/imagenet_scale.yaml is the ImageNet benchmark at the paper's shapes with a
synthetic model (opnp.synthetic) in place of ResNet50 and the images: 1,281,167 x 2048
float16 training features, 50,000 ID test rows, 4 x 10,000 test OOD rows, 10,000
validation OOD rows, C = 1000, and every method and ablation of config/imagenet.yaml
that needs no network. This script runs that DAG from nothing (the synthetic features
included) once per scale in a fresh temporary work directory, with the repository's
Snakefile, and reads each job's own ``benchmark:`` file (wall seconds ``s``, ``max_rss``
MiB). It prints, per rule (stage) and scale, the jobs' summed wall seconds and their
largest ``max_rss``, the growth exponent of each stage (slope of log seconds against
log N between the two largest scales), the heaviest jobs at the largest scale, and

    RESULT imagenet_scale_<rule>_seconds S      (summed job seconds at the largest scale)
    RESULT imagenet_scale_peak_rss_mib M        (largest max_rss of any job there)
    RESULT imagenet_scale_growth_exponent E     (slope of log total job seconds vs log N
                                                 over all scales, least squares)

Scales (fractions of the paper's N): 1/16, 1/4 and 1 by default (the full scale targets
at most 2 h on 2 quiet cores); ``--quick``: 1/256, 1/64, 1/16. Jobs run with
``--cores`` (default 2) and ``resources.threads_per_job`` = ``--threads`` (default: the
cores), so BLAS never uses more threads than that. Snakemake samples a job's memory
every 0.5 s for its first ~15 s, then every 30 s: ``max_rss`` can miss a short peak.
Per-job start-up (Python, numpy, pandas imports: about 2 s a job) is part of each job's
``s``, so at small N the totals are mostly start-up and the exponent is well below 1.

    python perf/bench_imagenet_scale.py [--scales 0.0625 0.25 1] [--cores 2] [--keep]
    python perf/bench_imagenet_scale.py --quick
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "imagenet_scale.yaml"


def derive_config(base: dict, scale: float, threads: int) -> dict:
    """config/imagenet_scale.yaml at ``scale`` with ``threads`` per job."""
    cfg = copy.deepcopy(base)
    cfg.setdefault("synthetic", {})["scale"] = float(scale)
    cfg.setdefault("resources", {})["threads_per_job"] = int(threads)
    return cfg


def job_benchmarks(workdir: Path, benchmark: str) -> list[dict]:
    """Every job's benchmark file under ``workdir``: ``{"rule", "job", "s", "max_rss"}``.
    The rule is read from Snakemake's own job records, by benchmark path."""
    root = workdir / "benchmarks" / benchmark
    rules = rule_of_benchmark(workdir)
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        with open(path) as handle:
            record = next(csv.DictReader(handle, delimiter="\t"))
        rel = str(path.relative_to(workdir))
        rss = record.get("max_rss", "NA")
        rows.append(
            {
                "rule": rules.get(rel, "?"),
                "job": str(path.relative_to(root).with_suffix("")),
                "s": float(record["s"]),
                "max_rss": float(rss) if rss not in ("NA", "-", "") else 0.0,
            }
        )
    return rows


def rule_of_benchmark(workdir: Path) -> dict[str, str]:
    """Benchmark path (relative to ``workdir``) -> rule, from Snakemake's dry-run listing
    of every job of the DAG (``--dry-run --forceall --printshellcmds`` prints each job's
    rule and its benchmark file)."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"),
         "--dry-run", "--forceall", "--cores", "1"],
        cwd=workdir, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"dry run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    mapping, rule = {}, None
    for line in proc.stdout.splitlines():
        text = line.strip()
        if text.startswith(("rule ", "localrule ")):
            rule = text.split()[1].rstrip(":")
        elif text.startswith("benchmark:") and rule:
            mapping[text.split(":", 1)[1].strip()] = rule
    return mapping


def run_scale(base: dict, scale: float, args) -> tuple[float, list[dict], Path]:
    """Run the whole DAG at ``scale`` in a new work directory: (Snakemake wall seconds,
    the jobs' benchmark records, the directory)."""
    parent = args.workdir or Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"bench_imagenet_scale.{scale:g}.", dir=parent))
    cfg = derive_config(base, scale, args.threads or args.cores)
    with open(workdir / "config.yaml", "w") as handle:
        yaml.safe_dump(cfg, handle, sort_keys=False)
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"),
        "--cores", str(args.cores), "--quiet",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    t0 = time.perf_counter()
    with open(workdir / "snakemake.log", "w") as log:
        proc = subprocess.run(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (workdir / "snakemake.log").read_text()[-4000:]
        raise SystemExit(f"scale {scale:g}: Snakemake failed (work dir {workdir}):\n{tail}")
    return wall, job_benchmarks(workdir, cfg["benchmark"]), workdir


def slope(xs, ys) -> float:
    """Least-squares slope of log ys against log xs (nan with fewer than 2 points)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len(pts) < 2:
        return float("nan")
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scales", type=float, nargs="+", default=[1 / 16, 1 / 4, 1.0])
    ap.add_argument("--quick", action="store_true", help="scales 1/256, 1/64, 1/16")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="per job; default: --cores")
    ap.add_argument("--top", type=int, default=12, help="heaviest jobs shown")
    ap.add_argument("--workdir", type=Path, default=None, help="parent of the run folders")
    ap.add_argument("--keep", action="store_true", help="keep the run folders")
    args = ap.parse_args()
    scales = [1 / 256, 1 / 64, 1 / 16] if args.quick else sorted(args.scales)
    with open(CONFIG) as handle:
        base = yaml.safe_load(handle)
    n_train = base["datasets"][base["id"]["train"]]["synthetic"]["rows"]
    print(
        f"config/imagenet_scale.yaml DAG at scales {[f'1/{round(1 / s)}' if s < 1 else f'{s:g}' for s in scales]}"
        f" (training rows {[max(1, round(n_train * s)) for s in scales]}), --cores {args.cores}, "
        f"{args.threads or args.cores} thread(s) per job; load average {os.getloadavg()[0]:.2f} "
        f"at start, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    walls, runs, dirs = {}, {}, []
    try:
        for scale in scales:
            wall, jobs, workdir = run_scale(base, scale, args)
            dirs.append(workdir)
            walls[scale], runs[scale] = wall, jobs
            print(
                f"  scale {scale:g}: {len(jobs)} jobs, Snakemake wall {wall:.0f} s, job seconds "
                f"{sum(j['s'] for j in jobs):.0f}, load average {os.getloadavg()[0]:.2f}"
            )
        per_rule = {s: defaultdict(lambda: [0.0, 0.0, 0]) for s in scales}
        for s in scales:
            for job in runs[s]:
                entry = per_rule[s][job["rule"]]
                entry[0] += job["s"]
                entry[1] = max(entry[1], job["max_rss"])
                entry[2] += 1
        top = scales[-1]
        rules = sorted(per_rule[top], key=lambda r: -per_rule[top][r][0])
        head = "".join(f"{'s @ ' + format(s, 'g'):>16}" for s in scales)
        print(f"\nper stage (rule): summed job wall seconds, largest max_rss MiB at scale {top:g}")
        print(f"  {'rule':<34}{'jobs':>5}{head}{'max_rss MiB':>13}{'exponent':>10}")
        for rule in rules:
            secs = [per_rule[s][rule][0] for s in scales]
            cells = "".join(f"{v:>16.1f}" for v in secs)
            exp = slope(scales[-2:], secs[-2:])
            print(
                f"  {rule:<34}{per_rule[top][rule][2]:>5}{cells}{per_rule[top][rule][1]:>13.0f}"
                f"{exp:>10.2f}"
            )
        totals = [sum(j["s"] for j in runs[s]) for s in scales]
        print(f"  {'total':<34}{len(runs[top]):>5}" + "".join(f"{v:>16.1f}" for v in totals))
        print(f"  {'Snakemake wall':<34}{'':>5}" + "".join(f"{walls[s]:>16.1f}" for s in scales))
        print(f"\nheaviest jobs at scale {top:g} (s, max_rss MiB):")
        for job in sorted(runs[top], key=lambda j: -j["s"])[: args.top]:
            print(f"  {job['s']:8.1f} {job['max_rss']:8.0f}  {job['rule']}: {job['job']}")
        print(f"largest max_rss at scale {top:g}:")
        for job in sorted(runs[top], key=lambda j: -j["max_rss"])[:5]:
            print(f"  {job['max_rss']:8.0f} MiB {job['s']:8.1f} s  {job['rule']}: {job['job']}")
        print()
        for rule in rules:
            print(f"RESULT imagenet_scale_{rule}_seconds {per_rule[top][rule][0]:.1f}")
        print(f"RESULT imagenet_scale_peak_rss_mib {max(j['max_rss'] for j in runs[top]):.0f}")
        print(f"RESULT imagenet_scale_growth_exponent {slope(scales, totals):.2f}")
    finally:
        for workdir in dirs:
            if args.keep:
                print(f"kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
