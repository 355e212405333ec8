"""Size SLURM memory and runtime requests from the benchmark files of a real run.

Every rule of the workflow writes a Snakemake benchmark file (``benchmarks/<benchmark>/
...tsv``: wall seconds ``s`` and peak resident memory ``max_rss`` in MB, among others).
This script maps each file to its rule (through a forced dry run of the same workflow
and config, which lists every job's benchmark path), takes the largest value per rule
and prints

- a Markdown table: rule, jobs, max wall time, max RSS, summed wall time;
- a ``set-resources`` block for profiles/slurm/profile.yaml with ``mem_mb`` =
  ``headroom`` x (max RSS) x ``scale``, rounded up to 256 MB, at least 512 MB, and
  ``runtime`` = ``headroom`` x (max wall time) x ``scale`` in minutes, at least 5.

``scale`` projects a small run to a larger one (e.g. the ratio of image counts) and is
only a first guess; a run at the target scale, measured with this script, replaces it.

Usage (from the repository root, after ``snakemake --cores N --configfile C`` in DIR):

    python profiles/slurm/resources_from_benchmarks.py --directory DIR --configfile C
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def benchmark_rules(directory: Path, configfile: Path) -> dict[str, str]:
    """Benchmark file path (relative to ``directory``) -> rule, from a forced dry run."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(directory),
            "--configfile",
            str(configfile),
            "-n",
            "-F",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dry run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    rules, rule = {}, None
    for line in proc.stdout.splitlines():
        match = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if match:
            rule = match.group(1)
        elif line.strip().startswith("benchmark:") and rule is not None:
            rules[line.split(":", 1)[1].strip()] = rule
    return rules


def read_benchmark(path: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one benchmark file (the max over its repeats)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows:
        raise ValueError(f"benchmark file {path} has no rows")

    def number(value: str) -> float:
        return float(value) if value not in ("", "NA", "-") else 0.0

    return (
        max(number(r["s"]) for r in rows),
        max(number(r.get("max_rss", "0")) for r in rows),
    )


def summarise(directory: Path, configfile: Path) -> dict[str, dict[str, float]]:
    """Rule -> jobs, max_s, max_rss_mb, total_s over the benchmark files present."""
    stats: dict[str, dict[str, float]] = defaultdict(
        lambda: {"jobs": 0, "max_s": 0.0, "max_rss_mb": 0.0, "total_s": 0.0}
    )
    for relative, rule in benchmark_rules(directory, configfile).items():
        path = directory / relative
        if not path.is_file():
            continue
        seconds, rss = read_benchmark(path)
        entry = stats[rule]
        entry["jobs"] += 1
        entry["max_s"] = max(entry["max_s"], seconds)
        entry["max_rss_mb"] = max(entry["max_rss_mb"], rss)
        entry["total_s"] += seconds
    if not stats:
        raise FileNotFoundError(f"no benchmark files of this workflow found under {directory}")
    return dict(stats)


def request(stats: dict[str, float], headroom: float, scale: float) -> tuple[int, int]:
    """(mem_mb, runtime minutes) for one rule."""
    mem_mb = max(512, 256 * math.ceil(headroom * stats["max_rss_mb"] * scale / 256))
    runtime = max(5, math.ceil(headroom * stats["max_s"] * scale / 60))
    return mem_mb, runtime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--directory", type=Path, required=True, help="working dir of the run")
    parser.add_argument("--configfile", type=Path, required=True, help="config of the run")
    parser.add_argument("--headroom", type=float, default=2.0, help="safety factor (2.0)")
    parser.add_argument("--scale", type=float, default=1.0, help="size ratio target/run (1.0)")
    args = parser.parse_args(argv)
    if args.headroom < 1:
        raise ValueError(f"--headroom must be >= 1, got {args.headroom}")
    if args.scale <= 0:
        raise ValueError(f"--scale must be > 0, got {args.scale}")
    if not args.directory.is_dir():
        raise FileNotFoundError(f"--directory {args.directory} is not a directory")
    if not args.configfile.is_file():
        raise FileNotFoundError(f"--configfile {args.configfile} does not exist")

    stats = summarise(args.directory.resolve(), args.configfile.resolve())
    print("| rule | jobs | max wall s | max RSS MB | total wall s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for rule, s in sorted(stats.items(), key=lambda item: -item[1]["total_s"]):
        print(
            f"| {rule} | {int(s['jobs'])} | {s['max_s']:.1f} | {s['max_rss_mb']:.0f} "
            f"| {s['total_s']:.1f} |"
        )
    total = sum(s["total_s"] for s in stats.values())
    print(
        f"\nsum of wall times: {total:.0f} s over {sum(s['jobs'] for s in stats.values()):.0f} jobs"
    )
    print(f"\nset-resources:  # headroom {args.headroom}, scale {args.scale}")
    for rule, s in sorted(stats.items()):
        mem_mb, runtime = request(s, args.headroom, args.scale)
        print(f"  {rule}: {{mem_mb: {mem_mb}, runtime: {runtime}}}")


if __name__ == "__main__":
    main()
