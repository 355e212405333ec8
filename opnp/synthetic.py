"""A synthetic source for the cached-feature stages: an FC head and feature sets of any
size, with no network and no images, for measuring the workflow at ImageNet scale
(config/imagenet_scale.yaml, perf/bench_imagenet_scale.py).

A synthetic model (config ``models.<m>.arch: synthetic``) is a seeded *generator* of
penultimate features ``h`` (N, D) and its FC head ``(W, b)``:

- every class ``c`` has a non-negative sparse prototype ``P[c]`` (:data:`ACTIVE` of the
  ``D`` neurons, gamma-distributed amplitudes); each neuron has a baseline ``mu`` below
  zero, so that ``h = relu(mu + a * P[...] + sigma * noise)`` is sparse and
  non-negative, like the ReLU-then-average-pool features of a ResNet;
- an ID row of class ``y`` mixes its class prototype with a confusing class'
  (``(1 - m) P[y] + m P[y']``, ``m ~ Beta(1, CONFUSION)``), so the top-1 accuracy is
  about that of a trained ImageNet classifier (~75-80 %), not 100 %;
- the head is "trained-like": ``W = GAIN * (P - mean_c P)``, a small random bias, so
  the logits ``W h + b`` classify the ID rows by their prototype;
- an OOD row (a dataset with ``distribution: ood`` and ``shift`` s in [0, 1]) mixes the
  prototypes of :data:`OOD_MIX` random classes with Dirichlet weights at amplitude
  ``1 - s`` (less peaked: lower maximum logit and energy), with noise scaled by
  ``1 + s`` and rare large activations (what ReAct clips).

Rows are generated and written :data:`BLOCK_ROWS` at a time, each block from its own
seeded stream (``SeedSequence(model seed, dataset stream, block)``): memory stays
bounded by one block whatever N (1.28 M x 2048 float16 is 5 GB on disk), and the
result does not depend on anything but the seeds and the shapes. Features are written
in ``feature_dtype`` (float16 for the ImageNet shapes), logits ``fc(h)`` in float32 from
the float32 features (as :func:`opnp.nets.extraction.extract_features` computes them),
labels int64 (-1 for OOD), in the feature store's layout (:mod:`opnp.features`).
Numpy only.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from opnp.features import FORMAT_VERSION, ArrayWriters, array_path, feature_manifest
from opnp.io import write_json_atomic

__all__ = [
    "BLOCK_ROWS",
    "SyntheticHead",
    "dataset_stream",
    "generate_rows",
    "model_head",
    "synthetic_dataset_manifest",
    "synthetic_head",
    "synthetic_rows",
    "synthetic_split_report",
    "write_synthetic_features",
]

#: Rows per generated block (each block its own random stream).
BLOCK_ROWS = 8192
#: Active neurons of each class prototype.
ACTIVE = 48
#: Gamma shape and scale of a prototype's amplitudes (mean 1).
AMPLITUDE_SHAPE, AMPLITUDE_SCALE = 2.0, 0.5
#: Per-neuron baseline mean and spread (below zero: most neurons are off).
BASELINE_MEAN, BASELINE_STD = -0.3, 0.3
#: Standard deviation of the per-row noise of the pre-activation.
NOISE = 0.4
#: ID rows mix their class prototype with a confusing class' by m ~ Beta(1, CONFUSION).
CONFUSION = 2.2
#: Scale of the head: W = GAIN * (P - mean P); the maximum ID logit is then ~10-20.
GAIN = 0.3
#: OOD rows mix this many random prototypes.
OOD_MIX = 3
#: Probability (times shift) of a large activation on an OOD row's neuron, and its mean.
SPIKE_RATE, SPIKE_MEAN = 0.002, 3.0


@dataclass(frozen=True)
class SyntheticHead:
    """Class prototypes (C, D), neuron baselines (D,) and the FC head of a synthetic model."""

    prototypes: np.ndarray
    baseline: np.ndarray
    weight: np.ndarray
    bias: np.ndarray


def synthetic_head(num_classes: int, feature_dim: int, seed: int) -> SyntheticHead:
    """The prototypes and FC head of a synthetic model (float32, seeded)."""
    if num_classes < 2 or feature_dim < 2:
        raise ValueError(
            f"a synthetic model needs num_classes >= 2 and feature_dim >= 2, got "
            f"{num_classes} and {feature_dim}"
        )
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    active = min(ACTIVE, feature_dim)
    prototypes = np.zeros((num_classes, feature_dim), np.float32)
    for c in range(num_classes):
        cols = rng.choice(feature_dim, active, replace=False)
        prototypes[c, cols] = rng.gamma(AMPLITUDE_SHAPE, AMPLITUDE_SCALE, active)
    baseline = rng.normal(BASELINE_MEAN, BASELINE_STD, feature_dim).astype(np.float32)
    weight = (GAIN * (prototypes - prototypes.mean(0))).astype(np.float32)
    bias = rng.normal(0.0, 0.01, num_classes).astype(np.float32)
    return SyntheticHead(prototypes, baseline, weight, bias)


def model_head(spec: Mapping[str, Any], fc: tuple[np.ndarray, np.ndarray] | None = None):
    """The head of synthetic model config ``spec`` (``num_classes``, ``feature_dim``,
    ``synthetic.seed``). With ``fc`` = ``(weight, bias)`` (the model's saved fc.npz),
    ``ValueError`` unless they are this head's: features are generated for the head that
    the downstream jobs read."""
    head = synthetic_head(spec["num_classes"], spec["feature_dim"], spec["synthetic"]["seed"])
    if fc is not None:
        weight, bias = fc
        if not (np.array_equal(weight, head.weight) and np.array_equal(bias, head.bias)):
            raise ValueError(
                "the saved fc.npz is not the head of this synthetic model's config (seed, "
                "num_classes, feature_dim changed since it was written): rerun its model rule"
            )
    return head


def synthetic_rows(rows: int, scale: float) -> int:
    """Rows of a synthetic dataset of ``rows`` rows at scale 1 under ``scale``
    (rounded, at least 1)."""
    if not (isinstance(rows, int | np.integer) and rows >= 1):
        raise ValueError(f"rows must be an integer >= 1, got {rows!r}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    return max(1, int(round(rows * float(scale))))


def dataset_stream(name: str) -> int:
    """The random stream of dataset ``name`` (CRC-32 of its name): distinct datasets
    draw distinct rows."""
    return zlib.crc32(name.encode("utf-8"))


def generate_rows(
    head: SyntheticHead,
    seed: int,
    stream: int,
    block: int,
    rows: int,
    first_row: int,
    *,
    ood: bool,
    shift: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(features float32 (rows, D), logits float32 (rows, C), labels int64)`` of one
    block. ID labels are ``(first_row + i) mod C`` (balanced classes); OOD labels -1."""
    if not 0 <= shift <= 1:
        raise ValueError(f"shift must lie in [0, 1], got {shift!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(stream), int(block)]))
    c, d = head.prototypes.shape
    p = head.prototypes
    z = rng.standard_normal((rows, d), dtype=np.float32)
    if ood:
        z *= NOISE
        mix = rng.dirichlet(np.ones(OOD_MIX), rows).astype(np.float32) * (1.0 - shift)
        for k in range(OOD_MIX):
            z += mix[:, k : k + 1] * p[rng.integers(0, c, rows)]
        spikes = rng.random((rows, d), dtype=np.float32) < SPIKE_RATE * shift
        z[spikes] += rng.exponential(SPIKE_MEAN, int(spikes.sum())).astype(np.float32)
        labels = np.full(rows, -1, np.int64)
    else:
        z *= NOISE
        labels = (np.arange(first_row, first_row + rows, dtype=np.int64)) % c
        other = (labels + rng.integers(1, c, rows)) % c
        m = rng.beta(1.0, CONFUSION, rows).astype(np.float32)[:, None]
        amplitude = rng.lognormal(0.0, 0.25, rows).astype(np.float32)[:, None]
        z += amplitude * ((1.0 - m) * p[labels] + m * p[other])
    z += head.baseline
    np.maximum(z, 0.0, out=z)
    logits = z @ head.weight.T
    logits += head.bias
    return z, logits, labels


def synthetic_dataset_manifest(name: str, spec: Mapping[str, Any], scale: float) -> dict:
    """The dataset manifest of a synthetic dataset (config ``datasets.<name>`` with
    ``source: synthetic``) under ``synthetic.scale``: rows, distribution, shift, stream."""
    syn = spec["synthetic"]
    n = synthetic_rows(syn["rows"], scale)
    ood = syn["distribution"] == "ood"
    return {
        "name": name,
        "source": "synthetic",
        "n_images": n,
        "rows_at_scale_1": int(syn["rows"]),
        "scale": float(scale),
        "distribution": syn["distribution"],
        "shift": float(syn.get("shift", 0.0)) if ood else 0.0,
        "stream": dataset_stream(name),
    }


def write_synthetic_features(
    out_stem: str | os.PathLike,
    head: SyntheticHead,
    dataset: Mapping[str, Any],
    *,
    seed: int,
    feature_dtype: str = "float16",
    meta: Mapping[str, Any] | None = None,
    log=None,
) -> dict:
    """Write the feature set of synthetic ``dataset`` (its manifest,
    :func:`synthetic_dataset_manifest`) under ``out_stem``, block by block through the
    feature store's temporary memory maps; returns its manifest. ``head`` must be the
    head whose ``fc.npz`` the downstream jobs read (the logits are ``fc(h)``)."""
    if dataset.get("source") != "synthetic":
        raise ValueError(f"dataset {dataset.get('name')!r} is not synthetic")
    if feature_dtype not in ("float32", "float16"):
        raise ValueError(f"feature_dtype must be 'float32' or 'float16', got {feature_dtype!r}")
    log = log or (lambda message: None)
    n = int(dataset["n_images"])
    ood = dataset["distribution"] == "ood"
    start = time.perf_counter()
    writers = ArrayWriters(os.fspath(out_stem), n, np.dtype(feature_dtype))
    with writers:
        for block, lo in enumerate(range(0, n, BLOCK_ROWS)):
            rows = min(BLOCK_ROWS, n - lo)
            h, logits, labels = generate_rows(
                head, seed, dataset["stream"], block, rows, lo, ood=ood, shift=dataset["shift"]
            )
            writers.write(lo, h.astype(feature_dtype, copy=False), logits, labels)
        if writers.bad_rows:  # cannot happen with finite parameters; never write them
            raise ValueError(f"synthetic dataset {dataset['name']}: non-finite rows")
        records = writers.commit()
    seconds = time.perf_counter() - start
    meta = {**dict(meta or {}), "synthetic": dict(dataset)}
    manifest = feature_manifest(
        records,
        n,
        meta.get("model"),
        dataset["name"],
        meta,
        format_version=FORMAT_VERSION,
        seed=int(seed),
        device="synthetic",
        amp=None,
        channels_last=False,
        batch_size=BLOCK_ROWS,
        num_workers=0,
        shard_size=None,
        shards={"computed": 0, "reused": 0},
        rows=None,
        model_sha256=None,
        timing={"seconds": seconds, "images_per_second": n / seconds if seconds > 0 else None},
    )
    write_json_atomic(array_path(out_stem, "manifest"), manifest)
    log(f"generated {n} rows of {dataset['name']} in {seconds:.1f} s")
    return manifest


def synthetic_split_report(
    manifests: Mapping[str, Mapping[str, Any]],
    roles: Mapping[str, Any],
    id_val_may_be_id_test: bool = False,
) -> dict:
    """Rule check_splits' report for synthetic datasets: rows of distinct datasets come
    from distinct random streams, so two sets share rows only when they are the same
    stream. Raises :class:`opnp.data.splits.SplitLeakError` for a pair that must be
    disjoint but shares its stream (the same dataset in two roles)."""
    from opnp.data.splits import SplitLeakError, split_pairs

    not_synthetic = sorted(n for n, m in manifests.items() if m.get("source") != "synthetic")
    if not_synthetic:
        raise ValueError(
            f"datasets {not_synthetic} are not synthetic: their images are compared by "
            "content (opnp.data.splits.check_split_separation)"
        )
    checked, problems = [], []
    for a, role_a, b, role_b in split_pairs(roles, id_val_may_be_id_test):
        same = manifests[a]["stream"] == manifests[b]["stream"]
        shared = int(min(manifests[a]["n_images"], manifests[b]["n_images"])) if same else 0
        checked.append({"a": a, "role_a": role_a, "b": b, "role_b": role_b, "shared": shared})
        if shared:
            problems.append(f"{role_a} set {a!r} and {role_b} set {b!r} are the same rows")
    if problems:
        raise SplitLeakError("sets that must be disjoint share rows: " + "; ".join(problems))
    return {
        "id_val_may_be_id_test": bool(id_val_may_be_id_test),
        "synthetic": True,
        "pairs": checked,
    }
