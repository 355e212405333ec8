"""Extraction throughput against the bare model forward, measured in one run.

    python perf/bench_extraction.py                      # CPU, ResNet-20, 32x32
    python perf/bench_extraction.py --source images      # decode PNG files too
    python perf/bench_extraction.py --device cuda --arch torchvision:resnet50 \
        --image-size 224 --n 20000 --batch-size 256 --num-workers 8

Bare forward: ``model.features_and_logits`` over pre-built batches already in memory
(on the device, under the same autocast / channels_last settings as extraction). Extraction:
the whole ``opnp.nets.extraction.extract_features`` call (DataLoader, host transfer, NaN
checks, writes through memory maps, SHA-256 of every file, manifest) on a dataset of the
same images. ``--source synthetic`` serves ready tensors (the overhead of the extraction
machinery itself); ``--source images`` decodes PNG files with the model's preprocessing
(the end-to-end rate, bounded by JPEG/PNG decoding on few cores). Best of ``--repeats``.

``--quick``: 1,000 images, 2 repeats (same code). ``--gpu-suite`` (needs CUDA): ResNet-50,
ViT-B/16 and EfficientNet-Lite0 at 224 px, each as a fraction of its bare forward
(``torchvision:resnet50``, ``torchvision:vit_b_16``, ``efficientnet_lite0``). Ends
with ``RESULT extraction_fraction_of_forward[_<arch>] <value>`` lines.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from opnp.data import open_dataset
from opnp.nets.extraction import extract_features
from opnp.nets.models import build_model, preprocessing


class TensorRows(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], 0


def bare_forward(model, images, batch_size, device, amp, channels_last) -> float:
    """Seconds for features_and_logits over all images, batches already on the device."""
    batches = [images[i : i + batch_size].to(device) for i in range(0, len(images), batch_size)]
    if channels_last:
        batches = [b.contiguous(memory_format=torch.channels_last) for b in batches]
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.float16)
        if amp
        else contextlib.nullcontext()
    )
    with torch.inference_mode(), autocast:
        model.features_and_logits(batches[0])  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for batch in batches:
            h, logits = model.features_and_logits(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default="cifar_resnet20")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--source", choices=["synthetic", "images"], default="synthetic")
    parser.add_argument("--quick", action="store_true", help="1,000 images, 2 repeats")
    parser.add_argument("--gpu-suite", action="store_true", help="the three ImageNet models")
    args = parser.parse_args()
    if args.quick:
        args.n, args.repeats = min(args.n, 1000), 2
    if args.gpu_suite:
        if not torch.cuda.is_available():
            print("no CUDA device: GPU suite skipped")
            return
        name = torch.cuda.get_device_name(0)
        suite = ("torchvision:resnet50", "torchvision:vit_b_16", "efficientnet_lite0")
        for arch in suite:
            args.arch, args.num_classes, args.image_size, args.device = arch, 1000, 224, "cuda"
            ratio = run(args)
            tag = arch.split(":")[-1]
            print(f"GPU ({name}) {arch}: extraction at {ratio:.3f} of the bare forward")
            print(f"RESULT extraction_fraction_of_forward_{tag} {ratio:.3f}")
        return
    print(f"RESULT extraction_fraction_of_forward {run(args):.3f}")


def run(args) -> float:
    """One measurement; prints the rates and returns extraction / bare forward."""

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    spec = {"arch": args.arch, "num_classes": args.num_classes}
    model = build_model(spec).to(device)
    if on_cuda:
        model.to(memory_format=torch.channels_last)
    transform, _, _ = preprocessing(spec)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (args.n, args.image_size, args.image_size, 3), dtype=np.uint8)
    images = torch.stack([transform(Image.fromarray(p)) for p in pixels])

    with tempfile.TemporaryDirectory() as tmp:
        if args.source == "images":
            folder = Path(tmp) / "images"
            folder.mkdir()
            for i, p in enumerate(pixels):
                Image.fromarray(p).save(folder / f"{i:06d}.png")
            dataset = open_dataset({"path": str(folder), "format": "flat"}, transform)
        else:
            dataset = TensorRows(images)
        forward_s = min(
            bare_forward(model, images, args.batch_size, device, on_cuda, on_cuda)
            for _ in range(args.repeats)
        )
        extract_s = []
        for r in range(args.repeats):
            start = time.perf_counter()
            extract_features(
                model,
                dataset,
                Path(tmp) / f"run{r}",
                batch_size=args.batch_size,
                num_workers=args.num_workers,
                device=str(device),
                progress=False,
            )
            extract_s.append(time.perf_counter() - start)
    forward_rate = args.n / forward_s
    extract_rate = args.n / min(extract_s)
    print(
        f"device={device} arch={args.arch} n={args.n} image={args.image_size}px "
        f"batch={args.batch_size} workers={args.num_workers} threads={torch.get_num_threads()} "
        f"source={args.source}"
    )
    print(f"bare forward       : {forward_rate:10.1f} images/s")
    print(f"extract_features   : {extract_rate:10.1f} images/s")
    print(f"ratio (extract/fwd): {extract_rate / forward_rate:10.3f}")
    return extract_rate / forward_rate


if __name__ == "__main__":
    main()
