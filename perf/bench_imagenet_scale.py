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

Each job's ``cpu_time`` is read too: on a machine that other work shares, a job's wall
seconds grow with the contention and its CPU seconds much less, so the script also prints
each stage's CPU seconds and ``RESULT imagenet_scale_growth_exponent_cpu`` (the same slope
on total CPU seconds), and ``RESULT imagenet_scale_snakemake_wall_seconds`` (the whole
DAG's wall time at the largest scale, which the 2-hour target is about).

``--exclude TEXT`` leaves out, at every scale, the jobs whose benchmark path contains
TEXT (compare like with like when a kept folder lacks some jobs, e.g. ``--exclude /knn``
for a full-scale run whose KNN jobs were sized by perf/bench_knn_chunk.py instead).

``--separate TEXT`` makes the jobs whose benchmark path contains TEXT a stage of their
own, ``<rule> (<TEXT>)`` (e.g. ``--separate /knn``: KNN's two jobs, whose work grows as
N^2 here, beside the stages that grow linearly), still counted in the totals.

``--reuse SCALE=DIR`` takes a scale's jobs from a kept run folder instead of running it
(e.g. the full scale run on its own, in parts, or a folder kept with ``--keep``); its
Snakemake wall time is read from ``DIR/snakemake_wall_seconds`` (written by this script;
for a folder run by hand, write the sum of its Snakemake invocations' wall seconds
there). ``--csv`` writes every (scale, stage) row, ``--figure`` draws the growth curve
(seconds against training rows, log-log, with a slope-1 line for reference).

Scales (fractions of the paper's N): 1/16, 1/4 and 1 by default (the full scale targets
at most 2 h on 2 quiet cores); ``--quick``: 1/256, 1/64, 1/16. Jobs run with
``--cores`` (default 2) and ``resources.threads_per_job`` = ``--threads`` (default: the
cores), so BLAS never uses more threads than that. Snakemake samples a job's memory
every 0.5 s for its first ~15 s, then every 30 s: ``max_rss`` can miss a short peak.
Per-job start-up (Python, numpy, pandas imports: about 2 s a job) is part of each job's
``s``, so at small N the totals are mostly start-up and the exponent is well below 1.

    python perf/bench_imagenet_scale.py [--scales 0.0625 0.25 1] [--cores 2] [--keep]
    python perf/bench_imagenet_scale.py --quick
    python perf/bench_imagenet_scale.py --scales 0.0625 0.25 --reuse 1=RUN_DIR \
        --csv docs/scaling/imagenet_scale.csv --figure docs/scaling/imagenet_scale_growth.png
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
from collections.abc import Sequence
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
    """Every job's benchmark file under ``workdir``: ``{"rule", "job", "s", "cpu",
    "max_rss"}``.
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
                "cpu": number(record.get("cpu_time")),
                "max_rss": number(rss),
            }
        )
    return rows


def number(text) -> float:
    """A benchmark file's number; 0 for Snakemake's "NA" / "-" (not measured)."""
    return float(text) if text not in (None, "NA", "-", "") else 0.0


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
    (workdir / "snakemake_wall_seconds").write_text(f"{wall:.1f}\n")
    return wall, job_benchmarks(workdir, cfg["benchmark"]), workdir


def reuse_scale(workdir: Path, benchmark: str) -> tuple[float, list[dict]]:
    """A kept run folder's (Snakemake wall seconds or nan, job benchmark records)."""
    wall_file = workdir / "snakemake_wall_seconds"
    wall = float(wall_file.read_text()) if wall_file.exists() else float("nan")
    jobs = job_benchmarks(workdir, benchmark)
    if not jobs:
        raise SystemExit(f"{workdir}: no benchmark files under benchmarks/{benchmark}")
    return wall, jobs


def slope(xs, ys) -> float:
    """Least-squares slope of log ys against log xs (nan with fewer than 2 points)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len(pts) < 2:
        return float("nan")
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else float("nan")


def per_stage(runs: dict, separate: Sequence[str] = ()) -> dict:
    """scale -> stage -> {"s", "cpu", "max_rss", "jobs"} summed (max for max_rss). A
    stage is a rule, or ``"<rule> (<text>)"`` for the jobs whose benchmark path contains
    one of the ``separate`` texts."""
    table = {}
    for scale, jobs in runs.items():
        rules = table.setdefault(scale, {})
        for job in jobs:
            stage = job["rule"]
            for text in separate:
                if text in job["job"]:
                    stage = f"{job['rule']} ({text.strip('/')})"
                    break
            entry = rules.setdefault(stage, {"s": 0.0, "cpu": 0.0, "max_rss": 0.0, "jobs": 0})
            entry["s"] += job["s"]
            entry["cpu"] += job["cpu"]
            entry["max_rss"] = max(entry["max_rss"], job["max_rss"])
            entry["jobs"] += 1
    return table


def print_report(scales, walls, runs, stages, top_jobs: int) -> None:
    top = scales[-1]
    rules = sorted(stages[top], key=lambda r: -stages[top][r]["s"])
    head = "".join(f"{'s @ ' + format(s, 'g'):>14}" for s in scales)
    print(f"\nper stage (rule): summed job seconds (wall, and CPU at {top:g}), largest max_rss MiB")
    print(
        f"  {'rule':<34}{'jobs':>5}{head}{'cpu s':>10}{'max_rss':>9}{'exp wall':>9}{'exp cpu':>8}"
    )
    for rule in rules:
        secs = [stages[s].get(rule, {}).get("s", 0.0) for s in scales]
        cpus = [stages[s].get(rule, {}).get("cpu", 0.0) for s in scales]
        entry = stages[top][rule]
        print(
            f"  {rule:<34}{entry['jobs']:>5}" + "".join(f"{v:>14.1f}" for v in secs)
            + f"{entry['cpu']:>10.1f}{entry['max_rss']:>9.0f}"
            + f"{slope(scales[-2:], secs[-2:]):>9.2f}{slope(scales[-2:], cpus[-2:]):>8.2f}"
        )  # fmt: skip
    totals = [sum(j["s"] for j in runs[s]) for s in scales]
    cpu_totals = [sum(j["cpu"] for j in runs[s]) for s in scales]
    print(
        f"  {'total job seconds':<34}{len(runs[top]):>5}" + "".join(f"{v:>14.1f}" for v in totals)
    )
    print(f"  {'total CPU seconds':<34}{'':>5}" + "".join(f"{v:>14.1f}" for v in cpu_totals))
    print(f"  {'Snakemake wall':<34}{'':>5}" + "".join(f"{walls[s]:>14.1f}" for s in scales))
    print(f"\nheaviest jobs at scale {top:g} (s, cpu s, max_rss MiB):")
    for job in sorted(runs[top], key=lambda j: -j["s"])[:top_jobs]:
        print(
            f"  {job['s']:8.1f} {job['cpu']:8.1f} {job['max_rss']:8.0f}  {job['rule']}: {job['job']}"
        )
    print(f"largest max_rss at scale {top:g}:")
    for job in sorted(runs[top], key=lambda j: -j["max_rss"])[:5]:
        print(f"  {job['max_rss']:8.0f} MiB {job['s']:8.1f} s  {job['rule']}: {job['job']}")
    print()
    for rule in rules:
        print(f"RESULT imagenet_scale_{result_name(rule)}_seconds {stages[top][rule]['s']:.1f}")
    print(f"RESULT imagenet_scale_peak_rss_mib {max(j['max_rss'] for j in runs[top]):.0f}")
    print(f"RESULT imagenet_scale_snakemake_wall_seconds {walls[top]:.0f}")
    print(f"RESULT imagenet_scale_total_cpu_seconds {cpu_totals[-1]:.0f}")
    print(f"RESULT imagenet_scale_growth_exponent {slope(scales, totals):.2f}")
    print(f"RESULT imagenet_scale_growth_exponent_cpu {slope(scales, cpu_totals):.2f}")


def result_name(stage: str) -> str:
    """A stage's name in a RESULT line: ``evaluate_method (knn)`` -> ``evaluate_method_knn``."""
    return stage.replace(" (", "_").replace(")", "").replace("/", "_")


def write_csv(path: Path, scales, n_train: int, stages) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(
            ["scale", "train_rows", "rule", "jobs", "seconds", "cpu_seconds", "max_rss_mib"]
        )
        for scale in scales:
            for rule, e in sorted(stages[scale].items()):
                rows = max(1, round(n_train * scale))
                out.writerow(
                    [
                        scale,
                        rows,
                        rule,
                        e["jobs"],
                        round(e["s"], 2),
                        round(e["cpu"], 2),
                        round(e["max_rss"]),
                    ]
                )


def read_csv(path: Path) -> tuple[list[float], dict]:
    """The scales and the per-stage table of a CSV written by :func:`write_csv`."""
    stages: dict = {}
    with open(path) as handle:
        for row in csv.DictReader(handle):
            stages.setdefault(float(row["scale"]), {})[row["rule"]] = {
                "s": float(row["seconds"]),
                "cpu": float(row["cpu_seconds"]),
                "max_rss": float(row["max_rss_mib"]),
                "jobs": int(row["jobs"]),
            }
    return sorted(stages), stages


def markdown_table(scales, stages) -> str:
    """docs/scaling.md's stage table, a function of the CSV alone (a test rebuilds it):
    per stage, summed job wall seconds at each scale, CPU seconds, the largest max_rss
    and the CPU-seconds growth exponent at the largest scale, costliest first; totals."""
    top = scales[-1]
    names = [f"N/{round(1 / s)}" if s < 1 else ("N" if s == 1 else f"{s:g} N") for s in scales]
    head = " | ".join(f"wall s @ {n}" for n in names)
    lines = [
        f"| stage (rule) | jobs | {head} | CPU s @ {names[-1]} | max RSS MiB @ {names[-1]} "
        f"| exponent (CPU s, {names[-2]} -> {names[-1]}) |",
        "| --- | ---: |" + " ---: |" * (len(scales) + 3),
    ]
    for rule in sorted(stages[top], key=lambda r: -stages[top][r]["s"]):
        cells = " | ".join(f"{stages[s].get(rule, {}).get('s', 0.0):,.1f}" for s in scales)
        cpus = [stages[s].get(rule, {}).get("cpu", 0.0) for s in scales]
        e = stages[top][rule]
        lines.append(
            f"| {rule} | {e['jobs']} | {cells} | {e['cpu']:,.1f} | {e['max_rss']:,.0f} "
            f"| {slope(scales[-2:], cpus[-2:]):.2f} |"
        )
    totals = [sum(e["s"] for e in stages[s].values()) for s in scales]
    cpu_totals = [sum(e["cpu"] for e in stages[s].values()) for s in scales]
    peak = max(e["max_rss"] for e in stages[top].values())
    jobs = sum(e["jobs"] for e in stages[top].values())
    lines.append(
        f"| **all stages** | {jobs} | " + " | ".join(f"**{v:,.1f}**" for v in totals)
        + f" | **{cpu_totals[-1]:,.1f}** | **{peak:,.0f}** "
        + f"| **{slope(scales[-2:], cpu_totals[-2:]):.2f}** |"
    )  # fmt: skip
    return "\n".join(lines)


def draw_growth(path: Path, scales, n_train: int, stages, n_stages: int = 5) -> None:
    """Seconds against training rows, log-log: total job (wall) and CPU seconds, the
    ``n_stages`` costliest stages' CPU seconds, and a slope-1 line through the smallest
    total for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows = [max(1, round(n_train * s)) for s in scales]
    top = scales[-1]
    heavy = sorted(stages[top], key=lambda r: -stages[top][r]["cpu"])[:n_stages]
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    total = [sum(e["s"] for e in stages[s].values()) for s in scales]
    cpu = [sum(e["cpu"] for e in stages[s].values()) for s in scales]
    ax.plot(rows, total, "o-", color="black", label="all jobs, wall s")
    ax.plot(rows, cpu, "s--", color="black", label="all jobs, CPU s")
    for rule in heavy:
        ax.plot(
            rows,
            [stages[s].get(rule, {}).get("cpu", float("nan")) for s in scales],
            ".-",
            label=f"{rule}, CPU s",
        )
    ax.plot(
        rows, [total[0] * r / rows[0] for r in rows], ":", color="grey", label="slope 1 (linear)"
    )
    ax.set(
        xscale="log", yscale="log", xlabel="training rows N", ylabel="seconds (summed over jobs)"
    )
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("config/imagenet_scale.yaml: cost of the cached-feature DAG against N", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def parse_reuse(items) -> dict[float, Path]:
    out = {}
    for item in items or []:
        scale, _, folder = item.partition("=")
        if not folder or not Path(folder).is_dir():
            raise SystemExit(f"--reuse {item!r}: expected SCALE=DIR with an existing DIR")
        out[float(scale)] = Path(folder)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scales", type=float, nargs="+", default=[1 / 16, 1 / 4, 1.0])
    ap.add_argument("--quick", action="store_true", help="scales 1/256, 1/64, 1/16")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="per job; default: --cores")
    ap.add_argument("--top", type=int, default=12, help="heaviest jobs shown")
    ap.add_argument("--workdir", type=Path, default=None, help="parent of the run folders")
    ap.add_argument("--keep", action="store_true", help="keep the run folders")
    ap.add_argument("--reuse", action="append", metavar="SCALE=DIR", help="a kept run folder")
    ap.add_argument("--csv", type=Path, default=None, help="write (scale, stage) rows here")
    ap.add_argument("--figure", type=Path, default=None, help="draw the growth curve here")
    ap.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="TEXT",
        help="leave out jobs whose benchmark path contains TEXT (e.g. /knn), at every scale",
    )
    ap.add_argument(
        "--separate",
        action="append",
        default=[],
        metavar="TEXT",
        help="the jobs whose benchmark path contains TEXT form their own stage (e.g. /knn)",
    )
    args = ap.parse_args()
    reuse = parse_reuse(args.reuse)
    scales = [1 / 256, 1 / 64, 1 / 16] if args.quick else list(args.scales)
    scales = sorted(set(scales) | set(reuse))
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
            if scale in reuse:
                walls[scale], runs[scale] = reuse_scale(reuse[scale], base["benchmark"])
                how = f"reused {reuse[scale]}"
            else:
                walls[scale], runs[scale], workdir = run_scale(base, scale, args)
                dirs.append(workdir)
                how = "ran"
            runs[scale] = [j for j in runs[scale] if not any(t in j["job"] for t in args.exclude)]
            jobs = runs[scale]
            print(
                f"  scale {scale:g} ({how}): {len(jobs)} jobs, Snakemake wall {walls[scale]:.0f} s, "
                f"job seconds {sum(j['s'] for j in jobs):.0f}, CPU seconds "
                f"{sum(j['cpu'] for j in jobs):.0f}, load average {os.getloadavg()[0]:.2f}"
            )
        stages = per_stage(runs, args.separate)
        print_report(scales, walls, runs, stages, args.top)
        if args.csv:
            write_csv(args.csv, scales, n_train, stages)
            print(f"wrote {args.csv}; its table for docs/scaling.md:\n")
            print(markdown_table(*read_csv(args.csv)))
        if args.figure:
            draw_growth(args.figure, scales, n_train, stages)
            print(f"wrote {args.figure}")
    finally:
        for workdir in dirs:
            if args.keep:
                print(f"kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
