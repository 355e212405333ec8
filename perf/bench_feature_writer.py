"""Peak RSS of writing a feature set: the store's file-handle writer against a memory map.

The feature store (opnp.features.ArrayWriters) writes each block of rows at its offset
through a file handle; before issue 28 it assigned the rows into a memory map of the
final file, so every written page stayed mapped and counted in the writing job's RSS
(5 GB of float16 features + 5 GB of float32 logits for ImageNet's 1.28M training rows).
This script writes the same synthetic feature set (opnp.synthetic: N x 2048 float16
features, N x 1000 float32 logits, labels) twice, each in its own child process: with the
store's writer (``file``) and with the former memory-map writer (``memmap``, replicated
here: ``open_memmap`` + slice assignment), and prints each child's wall seconds and peak
RSS (the kernel's VmHWM), checks that the files are byte-identical, and ends with the
lines below. The ``file`` time includes the store's commit (fsync, SHA-256 of each file,
rename), which the ``memmap`` replica leaves out (it only flushes), so the time ratio
overstates the writer's own cost.

    RESULT feature_writer_file_peak_rss_mib, RESULT feature_writer_memmap_peak_rss_mib,
    RESULT feature_writer_rss_ratio (memmap / file), RESULT feature_writer_time_ratio

    python perf/bench_feature_writer.py [--n 320000]
    python perf/bench_feature_writer.py --quick     # 80,000 rows (ImageNet N/16)
"""

from __future__ import annotations

import argparse
import filecmp
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
SPEC = {"arch": "synthetic", "num_classes": 1000, "feature_dim": 2048, "synthetic": {"seed": 0}}


def blocks(n: int):
    """The synthetic training set's blocks: (row, float16 features, logits, labels)."""
    from opnp.synthetic import BLOCK_ROWS, dataset_stream, generate_rows, model_head

    head = model_head(SPEC)
    for block, lo in enumerate(range(0, n, BLOCK_ROWS)):
        rows = min(BLOCK_ROWS, n - lo)
        h, logits, labels = generate_rows(
            head, 0, dataset_stream("train"), block, rows, lo, ood=False
        )
        yield lo, h.astype(np.float16), logits, labels


def child(folder: Path, mode: str, n: int) -> None:
    from opnp.features import ArrayWriters

    t0 = time.perf_counter()
    if mode == "file":
        writers = ArrayWriters(str(folder / "set"), n, np.dtype(np.float16))
        with writers:
            for row, h, logits, labels in blocks(n):
                writers.write(row, h, logits, labels)
            writers.commit()
    else:  # the former writer: slices of memory maps of the final files
        maps = {}
        for row, h, logits, labels in blocks(n):
            values = {"features": h, "logits": logits, "labels": labels}
            for kind, arr in values.items():
                if kind not in maps:
                    shape = (n, *arr.shape[1:])
                    path = folder / f"set.{kind}.npy"
                    maps[kind] = np.lib.format.open_memmap(path, "w+", arr.dtype, shape)
                maps[kind][row : row + len(arr)] = arr
        for mm in maps.values():
            mm.flush()
    seconds = time.perf_counter() - t0
    print_child_report(seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=320000, help="rows (default ImageNet N/4)")
    ap.add_argument("--quick", action="store_true", help="80,000 rows")
    ap.add_argument("--child", nargs=2, metavar=("FOLDER", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.n = 80000
    if args.child:
        child(Path(args.child[0]), args.child[1], args.n)
        return
    root = Path(tempfile.mkdtemp(prefix="bench_feature_writer."))
    try:
        runs = {}
        for mode in ("file", "memmap"):
            (root / mode).mkdir()
            proc = subprocess.run(
                [sys.executable, __file__, "--n", str(args.n), "--child", str(root / mode), mode],
                capture_output=True,
                text=True,
                check=True,
            )
            runs[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        size = sum(p.stat().st_size for p in (root / "file").iterdir()) / 2**20
        print(
            f"feature set of {args.n:,} rows (2048 float16 + 1000 float32 + label): {size:.0f} MiB"
        )
        for mode, run in runs.items():
            print(f"  {mode:<7} {run['seconds']:8.1f} s  {run['peak_rss_mib']:8.0f} MiB peak RSS")
        same = all(
            filecmp.cmp(root / "file" / f"set.{k}.npy", root / "memmap" / f"set.{k}.npy", False)
            for k in ("features", "logits", "labels")
        )
        print(f"  files byte-identical: {same}")
        if not same:
            raise SystemExit("the two writers wrote different files")
        file, memmap = runs["file"], runs["memmap"]
        print(f"RESULT feature_writer_file_peak_rss_mib {file['peak_rss_mib']:.0f}")
        print(f"RESULT feature_writer_memmap_peak_rss_mib {memmap['peak_rss_mib']:.0f}")
        print(
            f"RESULT feature_writer_rss_ratio {memmap['peak_rss_mib'] / file['peak_rss_mib']:.2f}"
        )
        print(f"RESULT feature_writer_time_ratio {file['seconds'] / memmap['seconds']:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
