"""The 625-config OPNP grid search as the workflow's own Snakemake jobs, at ImageNet shape.

perf/bench_grid.py times the grid scorer as a library call; this script times the
same search as the jobs the workflow runs for it: rule ``select_hyperparameters`` for
method ``opnp`` (every config of config/imagenet.yaml's OPNP grid on the ID validation set
and the validation OOD set) and then rule ``evaluate_method`` for ``opnp`` (the selected
config on the ID test set and every test OOD set). It

1. derives a config from config/imagenet.yaml (same datasets, OPNP grid, sensitivity
   and selection settings; ``methods`` reduced to ``opnp`` and ``models`` to one model,
   which the schema allows) in a temporary work directory;
2. writes every input of the two jobs under the paths the rules expect, in the
   workflow's own formats (docs/architecture.md): synthetic ReLU features with their
   logits ``fc(h)``, labels and manifest (SHA-256 of each array) per (model, dataset)
   (and, in place of rule ``check_splits``' report, a gate file saying there are no
   images to compare);
   ``fc.npz`` (C=1000, D=2048); the full-training-set sensitivity ``.npz`` with every
   neuron statistic, computed by :func:`opnp.parameter_sensitivity` from the synthetic
   training features, as rule ``compute_sensitivity`` does. Every input is dated an
   hour back;
3. runs Snakemake on the repository's Snakefile, first as a dry run (it must plan
   exactly these two jobs and nothing upstream), then once per job (selection, then
   evaluation) with ``--allowed-rules select_hyperparameters evaluate_method
   --rerun-triggers mtime``;
4. prints the rule's own ``benchmark:`` files (wall seconds ``s``, ``cpu_time``,
   ``max_rss``) next to the peak RSS of the job's Python process (its kernel high-water
   mark ``VmHWM``, read from /proc every 0.2 s while it runs), the input sizes, and the
   peak RSS relative to the feature arrays each job streams. Snakemake samples memory
   every 0.5 s for the first ~15 s of a job, then every 30 s, so its ``max_rss`` can
   miss a short peak; ``VmHWM`` is the kernel's own maximum, so it cannot (except for
   growth in the last 0.2 s of the job).

Sizes (defaults: ImageNet): ID validation = ID test = imagenet-val, ``--n-id`` 50,000
rows (config/imagenet.yaml uses the same set for both, as the paper does); ``--n-ood``
40,000 rows split evenly over the four test OOD sets; ``--n-ood-val`` (default
``--n-ood`` / 4) rows of the validation OOD set. OOD rows are ID-like rows scaled by 0.9
(lower energy; Energy alone then has an FPR95 of about 20 %), so that the selection has
something to find. Features are float32 on disk, as the workflow's extraction writes
them (``--feature-dtype float16`` is the format's other option). The training features
(``--n-train``, default 20,000 rows) only feed the sensitivity written here: with a
precomputed sensitivity, both OPNP jobs memory-map the training set but never read its
rows, so its length does not change what is measured. The jobs read the features from
the page cache (they were just written; the ``read MiB`` column, the benchmark file's
``io_in``, shows what came from the disk). ``--breakdown`` then replays the selection
job's steps in this process with the same library calls and threads, and times each
(reading the features, building the grid plan, scoring, metrics).

    python perf/bench_grid_workflow.py [--n-id 50000 --n-ood 40000] [--cores 2]
        [--feature-dtype float32|float16] [--breakdown] [--workdir DIR] [--keep]
    python perf/bench_grid_workflow.py --quick    # 5,000 + 4,000 rows, same code

Ends with ``RESULT grid_workflow_<job>_seconds`` and ``..._peak_rss_mib`` lines.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout
sys.path.insert(0, str(REPO / "tests"))  # the workflow tests' Snakemake helpers

from workflow_helpers import jobs_per_rule  # noqa: E402

METHOD = "opnp"
RULES = ("select_hyperparameters", "evaluate_method")
MIB = 2**20


# ------------------------------------------------------------------ config and paths


def derive_config(base: dict, model: str) -> dict:
    """config/imagenet.yaml with ``methods`` = {opnp} and ``models`` = {model}."""
    cfg = copy.deepcopy(base)
    if METHOD not in cfg["methods"]:
        raise SystemExit(f"the config has no {METHOD!r} method")
    if model not in cfg["models"]:
        raise SystemExit(f"model {model!r} is not in the config ({sorted(cfg['models'])})")
    cfg["methods"] = {METHOD: cfg["methods"][METHOD]}
    cfg["models"] = {model: cfg["models"][model]}
    return cfg


class Layout:
    """The paths of workflow/rules/common.smk for one benchmark and model."""

    def __init__(self, workdir: Path, cfg: dict, model: str):
        self.workdir = workdir
        self.benchmark = cfg["benchmark"]
        self.model = model
        self.results = workdir / "results" / self.benchmark
        self.seed0 = cfg["seeds"][0]

    def stem(self, dataset: str) -> Path:
        return self.results / "features" / self.model / dataset

    def fc(self) -> Path:
        return self.results / "models" / self.model / "fc.npz"

    def sensitivity(self) -> Path:  # full_sensitivity(): fraction 100, first seed
        return self.results / "sensitivity" / self.model / f"fraction100_seed{self.seed0}.npz"

    def splits_check(self) -> str:  # rule check_splits' output
        return f"results/{self.benchmark}/splits_check/{self.model}.json"

    def selection(self) -> str:
        return f"results/{self.benchmark}/selection/{self.model}/{METHOD}.parquet"

    def evaluation(self) -> str:
        return f"results/{self.benchmark}/evaluation/{self.model}/{METHOD}.parquet"

    def bench_tsv(self, kind: str) -> Path:
        return self.workdir / "benchmarks" / self.benchmark / kind / self.model / f"{METHOD}.tsv"

    def job_log(self, kind: str) -> Path:
        return self.workdir / "logs" / self.benchmark / kind / self.model / f"{METHOD}.log"


# ------------------------------------------------------------------ synthetic inputs


def write_feature_set(stem: Path, n, w, b, rng, *, dtype, scale, labelled, meta, block=8192):
    """Synthetic ReLU features (N, D) with logits fc(h) in float32, labels (-1 for OOD)
    and a manifest of the form opnp.nets.extraction.extract_features writes."""
    from opnp.features import FORMAT_VERSION, array_path
    from opnp.io import provenance, sha256_file, write_json_atomic

    c, d = w.shape
    stem.parent.mkdir(parents=True, exist_ok=True)
    shapes = {"features": (n, d), "logits": (n, c), "labels": (n,)}
    dtypes = {"features": np.dtype(dtype), "logits": np.float32, "labels": np.int64}
    maps = {
        k: np.lib.format.open_memmap(array_path(stem, k), "w+", dtypes[k], shapes[k])
        for k in shapes
    }
    wt = np.ascontiguousarray(w.T)
    for start in range(0, n, block):
        rows = min(block, n - start)
        h = rng.standard_normal((rows, d), dtype=np.float32)
        np.maximum(h, 0, out=h)
        h *= scale
        maps["features"][start : start + rows] = h
        maps["logits"][start : start + rows] = h @ wt + b
        maps["labels"][start : start + rows] = (
            rng.integers(0, c, rows) if labelled else np.full(rows, -1)
        )
    records = {}
    for kind, mm in maps.items():
        mm.flush()
        path = array_path(stem, kind)
        records[kind] = {
            "file": path.name,
            "shape": list(mm.shape),
            "dtype": str(mm.dtype),
            "sha256": sha256_file(path),
        }
    maps.clear()
    manifest = {
        "format_version": FORMAT_VERSION,
        "n": n,
        "n_images": n,
        "feature_dim": d,
        "num_classes": c,
        "arrays": records,
        "model": meta["model"],
        "dataset": meta["dataset"],
        "meta": {**meta, "synthetic": "perf/bench_grid_workflow.py"},
        "seed": 0,
        "device": "cpu",
        "amp": None,
        "channels_last": False,
        "batch_size": block,
        "num_workers": 0,
        "shard_size": None,
        "shards": {"computed": 0, "reused": 0},
        "rows": None,
        "model_sha256": None,
        "timing": {"seconds": 0.0, "images_per_second": None},
        "provenance": provenance(),
    }
    write_json_atomic(array_path(stem, "manifest"), manifest)
    return {kind: array_path(stem, kind) for kind in (*shapes, "manifest")}


def dataset_sizes(cfg: dict, args) -> dict[str, int]:
    """Rows of every dataset the two jobs read (train, ID val/test, OOD val and test)."""
    tests, vals = cfg["ood"]["test"], cfg["ood"]["val"]
    sizes = {cfg["id"]["train"]: args.n_train}
    for key in ("val", "test"):  # imagenet: both are imagenet-val
        sizes[cfg["id"][key]] = args.n_id
    per_test = [args.n_ood // len(tests) + (i < args.n_ood % len(tests)) for i in range(len(tests))]
    sizes.update(zip(tests, per_test, strict=True))
    n_val = args.n_ood_val or max(1, args.n_ood // len(tests))
    sizes.update(dict.fromkeys(vals, n_val))
    return sizes


def write_inputs(layout: Layout, cfg: dict, args) -> dict:
    """Every input file of the two jobs; returns {dataset: (rows, bytes of features, all
    files)} and the seconds it took."""
    from opnp.io import save_npz_atomic
    from opnp.pipeline.artifacts import load_feature_set, save_sensitivity
    from opnp.sensitivity import NEURON_STATISTICS, neuron_sensitivity, parameter_sensitivity

    rng = np.random.default_rng(0)
    c, d = args.classes, args.dim
    w = (rng.standard_normal((c, d)) * 0.05).astype(np.float32)
    b = (rng.standard_normal(c) * 0.1).astype(np.float32)
    layout.fc().parent.mkdir(parents=True, exist_ok=True)
    save_npz_atomic(layout.fc(), weight=w, bias=b)  # as opnp.nets.extraction.save_fc
    ood = set(cfg["ood"]["test"]) | set(cfg["ood"]["val"])
    sizes = {}
    for dataset, n in dataset_sizes(cfg, args).items():
        files = write_feature_set(
            layout.stem(dataset),
            n,
            w,
            b,
            rng,
            dtype=args.feature_dtype,
            scale=0.9 if dataset in ood else 1.0,  # "OOD": smaller logits, lower energy
            labelled=dataset not in ood,
            meta={"model": layout.model, "dataset": dataset},
        )
        sizes[dataset] = (
            n,
            files["features"].stat().st_size,
            sum(p.stat().st_size for p in files.values()),
        )
    # Rule compute_sensitivity at fraction 100: every training row, every statistic.
    train = load_feature_set(f"{layout.stem(cfg['id']['train'])}.manifest.json")
    param = parameter_sensitivity(train.features, w, b, reduction=cfg["sensitivity"]["reduction"])
    neurons = {stat: neuron_sensitivity(param, stat) for stat in NEURON_STATISTICS}
    layout.sensitivity().parent.mkdir(parents=True, exist_ok=True)
    n_train = len(train.features)
    save_sensitivity(
        layout.sensitivity(),
        param,
        neurons,
        indices=np.arange(n_train),
        n_samples=n_train,
        seed=layout.seed0,
        fraction=100.0,
    )
    # Rule check_splits' output gates every selection job (no validation image is a test
    # image, by content). These features come from no images, so there is nothing to
    # check: the gate file says so instead of a report.
    gate = layout.workdir / layout.splits_check()
    gate.parent.mkdir(parents=True, exist_ok=True)
    gate.write_text(json.dumps({"synthetic": "perf/bench_grid_workflow.py: no images"}))
    # Inputs older than now, so that mtime never asks for an upstream rerun.
    past = time.time() - 3600
    for path in layout.results.rglob("*"):
        if path.is_file():
            os.utime(path, (past, past))
    return sizes


# ------------------------------------------------------------------ running Snakemake


def snakemake_cmd(workdir: Path, configfile: Path, cores: int, targets, *extra) -> list[str]:
    # Targets first: --allowed-rules and --rerun-triggers take several values each.
    return [
        sys.executable, "-m", "snakemake", *targets,
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(configfile),
        "--cores", str(cores),
        *extra,
        "--allowed-rules", *RULES,
        "--rerun-triggers", "mtime",
    ]  # fmt: skip


def planned_jobs(workdir, configfile, cores, targets) -> dict[str, int]:
    """Rule -> jobs of a dry run (``-n --quiet rules``)."""
    cmd = snakemake_cmd(workdir, configfile, cores, targets, "-n", "--quiet", "rules")
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"dry run failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return jobs_per_rule(proc.stdout)


class PeakWatcher(threading.Thread):
    """Largest ``VmHWM`` (peak RSS, kernel-tracked) of the descendants of ``pid`` whose
    command line mentions ``needle`` (the job's script), polled every ``interval`` s."""

    def __init__(self, pid: int, needle: str, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.needle, self.interval = pid, needle, interval
        self.done = threading.Event()
        self.peak_kib = 0
        self.matches: dict[int, bool] = {}

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self.done.is_set():
            try:
                children = root.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            for child in children:
                try:
                    if child.pid not in self.matches:
                        self.matches[child.pid] = any(self.needle in a for a in child.cmdline())
                    if self.matches[child.pid]:
                        self.peak_kib = max(self.peak_kib, vm_hwm_kib(child.pid))
                except (psutil.Error, OSError):
                    pass  # exited between listing and reading
            self.done.wait(self.interval)


def vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def run_snakemake(workdir, configfile, cores, target, rule, log_path) -> tuple[float, float, int]:
    """Run Snakemake for one target: its wall seconds, the peak RSS MiB of the job's
    Python and the threads Snakemake gave the job (from its log)."""
    cmd = snakemake_cmd(workdir, configfile, cores, [target])
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        watcher = PeakWatcher(proc.pid, f"{rule}.py")
        watcher.start()
        proc.wait()
        wall = time.perf_counter() - t0
        watcher.done.set()
        watcher.join()
    if proc.returncode != 0:
        print(Path(log_path).read_text()[-6000:], file=sys.stderr)
        raise SystemExit(f"snakemake failed for {target} (exit {proc.returncode}): {log_path}")
    if not watcher.peak_kib:
        raise SystemExit(f"no process running {rule}.py was seen under Snakemake")
    threads = re.findall(r"^\s*threads: (\d+)$", Path(log_path).read_text(), re.MULTILINE)
    if len(threads) != 1:
        raise SystemExit(f"{log_path}: expected one job with 'threads:', found {threads}")
    return wall, watcher.peak_kib / 1024, int(threads[0])


def read_tsv(path: Path) -> dict:
    with open(path) as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if len(rows) != 1:
        raise SystemExit(f"{path}: expected one benchmark row, got {len(rows)}")
    return rows[0]


def read_mib(tsv: dict) -> str:
    """The benchmark file's io_in (MiB read from storage), or "NA"."""
    value = tsv.get("io_in", "NA")
    return "NA" if value in ("", "NA") else f"{float(value):.0f}"


def log_span(path: Path) -> tuple[list[str], float | None]:
    """The job log's lines and the seconds between its first and last timestamps."""
    lines = path.read_text().splitlines()
    stamps = [
        time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
        for m in (re.match(r"^(\S+ \S+),(\d+) ", line) for line in lines)
        if m
    ]
    return lines, (stamps[-1] - stamps[0]) if len(stamps) > 1 else None


# ------------------------------------------------------------------ in-process breakdown


def breakdown(layout: Layout, cfg: dict, threads: int) -> list[tuple[str, float]]:
    """The selection job's steps in this process (same library calls, same threads),
    timed one by one. The grid scorer reads the features itself; the separate read pass
    shows how much of its time is reading and converting them to float64."""
    from threadpoolctl import threadpool_limits

    from opnp._validation import iter_chunks
    from opnp.grid import score_pruning_grid
    from opnp.grid_plan import GridPlan
    from opnp.pipeline.artifacts import (
        load_fc,
        load_feature_set,
        load_ood_features,
        load_sensitivity,
    )
    from opnp.pipeline.results import metric_values
    from opnp.pipeline.selection import expand_grid
    from opnp.sensitivity import neuron_sensitivity

    spec = cfg["methods"][METHOD]
    configs = expand_grid(spec.get("grid", {}), spec.get("fixed", {}))
    manifest = "{}.manifest.json".format
    steps = []
    with threadpool_limits(threads):
        t = time.perf_counter()
        w, b = load_fc(layout.fc())
        s = load_sensitivity(layout.sensitivity())
        id_val = load_feature_set(manifest(layout.stem(cfg["id"]["val"]))).features
        names = cfg["ood"]["val"]
        ood_val = load_ood_features([manifest(layout.stem(n)) for n in names])
        steps.append(("load fc.npz and sensitivity, memory-map the features", t))
        t = time.perf_counter()
        for arr in (id_val, *ood_val.values()):
            for _ in iter_chunks(arr, 4096, "features", dtype=np.float64):
                pass
        steps.append(("read every feature row as float64 (one pass, part of scoring)", t))
        t = time.perf_counter()
        neurons = neuron_sensitivity(s, cfg["sensitivity"]["statistic"])
        plan = GridPlan(w, b, s, neurons, configs)
        steps.append((f"GridPlan: {plan.n_pairs} (weight, neuron) group pairs", t))
        t = time.perf_counter()
        id_scores = score_pruning_grid(id_val, w, b, s, neurons, configs, plan=plan)
        steps.append((f"score {len(configs)} configs on ID val ({len(id_val):,} rows)", t))
        t = time.perf_counter()
        ood_scores = {
            n: score_pruning_grid(f, w, b, s, neurons, configs, plan=plan)
            for n, f in ood_val.items()
        }
        n_ood = sum(len(f) for f in ood_val.values())
        steps.append((f"score {len(configs)} configs on OOD val ({n_ood:,} rows)", t))
        t = time.perf_counter()
        for i in range(len(configs)):
            for scores in ood_scores.values():
                metric_values(id_scores[i], scores[i])
        steps.append((f"metrics of {len(configs)} configs x {len(ood_val)} OOD set(s)", t))
    # Each entry holds its start time until here; the next entry's start is its end.
    ends = [t for _, t in steps[1:]] + [time.perf_counter()]
    return [(name, end - start) for (name, start), end in zip(steps, ends, strict=True)]


# ------------------------------------------------------------------ report


def report(layout, cfg, args, sizes, runs, n_configs, threads) -> None:
    import pandas as pd

    from opnp.pipeline.selection import selected_params

    ood_test, ood_val = cfg["ood"]["test"], cfg["ood"]["val"]
    id_val, id_test, train = cfg["id"]["val"], cfg["id"]["test"], cfg["id"]["train"]
    roles = {train: "train (sensitivity only)"}
    roles[id_val] = "ID val" if id_val != id_test else "ID val = ID test"
    roles.setdefault(id_test, "ID test")
    roles.update(dict.fromkeys(ood_val, "OOD val"))
    roles.update(dict.fromkeys(ood_test, "OOD test"))
    print("\ninputs (synthetic; features as on disk):")
    print(f"  {'dataset':<18}{'role':<26}{'rows':>10}{'features MiB':>14}{'all files MiB':>15}")
    for name, (n, feat, total) in sizes.items():
        print(f"  {name:<18}{roles[name]:<26}{n:>10,}{feat / MIB:>14.1f}{total / MIB:>15.1f}")
    all_bytes = sum(t for _, _, t in sizes.values()) + sum(
        p.stat().st_size for p in (layout.fc(), layout.sensitivity())
    )
    print(
        f"  + fc.npz {layout.fc().stat().st_size / MIB:.1f} MiB, sensitivity "
        f"{layout.sensitivity().stat().st_size / MIB:.1f} MiB; all inputs {all_bytes / MIB:.0f} MiB"
    )

    streamed = {
        "selection": [id_val, *ood_val],
        "evaluation": [id_test, *ood_test],
    }
    print(
        f"\njobs (Snakemake --cores {args.cores}: {threads} threads per job; wall s, CPU s "
        "and max_rss from the rule's benchmark file; peak RSS: VmHWM of the job's Python)"
    )
    head = (
        f"  {'job':<31}{'wall s':>8}{'CPU s':>8}{'max_rss MiB':>13}{'peak RSS MiB':>14}"
        f"{'read MiB':>10}{'configs':>9}{'configs/s':>11}{'snakemake s':>13}"
    )
    print(head)
    for kind, rule in zip(("selection", "evaluation"), RULES, strict=True):
        wall, peak, tsv, _ = runs[kind]
        configs = n_configs if kind == "selection" else 1
        s = float(tsv["s"])
        print(
            f"  {rule + '[' + METHOD + ']':<31}{s:>8.1f}{float(tsv['cpu_time']):>8.1f}"
            f"{float(tsv['max_rss']):>13.0f}{peak:>14.0f}{read_mib(tsv):>10}{configs:>9}{configs / s:>11.2f}"
            f"{wall:>13.1f}"
        )
    print("  (snakemake s: the whole Snakemake run for that job, start-up and DAG included)")

    print("\nmemory against the feature arrays each job streams:")
    for kind in ("selection", "evaluation"):
        _, peak, tsv, _ = runs[kind]
        rows = sum(sizes[n][0] for n in streamed[kind])
        feat = sum(sizes[n][1] for n in streamed[kind])
        line = (
            f"  {kind:<11} {rows:>8,} rows, features {feat / MIB:7.0f} MiB; peak RSS "
            f"{peak:6.0f} MiB = {peak * MIB / feat:.2f}x the features"
        )
        if kind == "selection":
            scores = n_configs * rows * 8
            line += (
                f"; of it, the ({n_configs}, {rows:,}) float64 score matrices are "
                f"{scores / MIB:.0f} MiB"
            )
        print(line)

    frame = pd.read_parquet(layout.workdir / layout.selection())
    expected = n_configs * len(ood_val)
    if len(frame) != expected:
        raise SystemExit(f"selection has {len(frame)} rows, expected {expected}")
    chosen = selected_params(frame)
    best = frame[frame["selected"]]
    print(
        f"\nselection: {len(frame)} rows ({n_configs} configs x {len(ood_val)} OOD val set); "
        f"selected {json.dumps(chosen, sort_keys=True)} "
        f"(val FPR95 {best['fpr95'].mean():.2f}, AUROC {best['auroc'].mean():.2f})"
    )
    test = pd.read_parquet(layout.workdir / layout.evaluation())
    print(
        f"evaluation: {len(test)} rows ({', '.join(test['ood_set'])}); mean test FPR95 "
        f"{test['fpr95'].mean():.2f}, AUROC {test['auroc'].mean():.2f}"
    )
    lines, span = runs["selection"][3]
    if span is not None:
        print(
            f"selection job log: {span:.1f} s from its first line ({lines[0].split(' ', 3)[-1]!r},"
            " after imports and memory-mapping) to its last (grid, metrics, selection done)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-id", type=int, default=50000, help="ID validation/test rows")
    ap.add_argument("--n-ood", type=int, default=40000, help="test OOD rows, all sets")
    ap.add_argument("--n-ood-val", type=int, default=None, help="default: --n-ood / 4")
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--feature-dtype", choices=["float32", "float16"], default="float32")
    ap.add_argument("--configfile", type=Path, default=REPO / "config" / "imagenet.yaml")
    ap.add_argument("--model", default=None, help="default: the config's first model")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--breakdown", action="store_true", help="also time the steps in-process")
    ap.add_argument("--workdir", type=Path, default=None, help="new or empty; default: a temp dir")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--quick", action="store_true", help="5,000 ID + 4,000 OOD, 5,000 train")
    args = ap.parse_args()
    if args.quick:
        args.n_id, args.n_ood, args.n_train = 5000, 4000, 5000

    from opnp.pipeline.selection import expand_grid

    with open(args.configfile) as handle:
        base = yaml.safe_load(handle)
    model = args.model or next(iter(base["models"]))
    cfg = derive_config(base, model)
    spec = cfg["methods"][METHOD]
    n_configs = len(expand_grid(spec.get("grid", {}), spec.get("fixed", {})))
    if args.workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="bench_grid_workflow."))
    else:
        workdir = args.workdir.resolve()
        if workdir.exists() and any(workdir.iterdir()):
            raise SystemExit(f"--workdir {workdir} must be new or empty")
        workdir.mkdir(parents=True, exist_ok=True)
    layout = Layout(workdir, cfg, model)
    print(
        f"{METHOD} grid search as workflow jobs: config {args.configfile.name} "
        f"(benchmark {cfg['benchmark']}, model {model}), {n_configs} configs "
        f"({' x '.join(str(len(v)) for v in spec['grid'].values())}), C={args.classes}, "
        f"D={args.dim}, {args.feature_dtype} features; work dir {workdir}"
    )
    try:
        configfile = workdir / "config.yaml"
        with open(configfile, "w") as handle:
            yaml.safe_dump(cfg, handle, sort_keys=False)
        t0 = time.perf_counter()
        sizes = write_inputs(layout, cfg, args)
        print(f"wrote the inputs in {time.perf_counter() - t0:.0f} s")
        targets = [layout.selection(), layout.evaluation()]
        planned = planned_jobs(workdir, configfile, args.cores, targets)
        print(f"dry run plans: {planned}")
        if planned != dict.fromkeys(RULES, 1):
            raise SystemExit(f"expected one job of each of {RULES}, got {planned}")
        runs = {}
        for kind, rule, target in zip(("selection", "evaluation"), RULES, targets, strict=True):
            wall, peak, threads = run_snakemake(
                workdir, configfile, args.cores, target, rule, workdir / f"snakemake.{kind}.log"
            )
            runs[kind] = (wall, peak, read_tsv(layout.bench_tsv(kind)),
                          log_span(layout.job_log(kind)))  # fmt: skip
        report(layout, cfg, args, sizes, runs, n_configs, threads)
        for kind in ("selection", "evaluation"):
            print(f"RESULT grid_workflow_{kind}_seconds {runs[kind][0]:.1f}")
            print(f"RESULT grid_workflow_{kind}_peak_rss_mib {runs[kind][1]:.0f}")
        if args.breakdown:
            print(f"\nbreakdown: the selection job's steps in this process ({threads} threads)")
            for name, seconds in breakdown(layout, cfg, threads):
                print(f"  {seconds:8.1f} s  {name}")
    finally:
        if args.keep:
            print(f"\nkept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
