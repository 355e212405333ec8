"""Replicated evaluation: the whole benchmark repeated on seeded re-splits of small pools.

With a few hundred ID and OOD images (e.g. the 1,000-image ImageNet-1k sample and the
720-image DTD subset), one fixed split into fit / validation / test sets gives numbers
whose spread over splits is as large as the differences between methods. A config with
``replicates:`` therefore names *pools* (ordinary datasets, extracted once per model) and
how each pool is cut into named *parts* (the datasets that ``id:`` and ``ood:`` use), and
the workflow runs its whole evaluation - sensitivities, validation search, test scores,
ablations, figures - once per replicate seed on that seed's parts. Tables pooled over the
replicates show mean ± std over the split seeds.

Numpy and pandas only: the workflow's steps on cached arrays use it.

A pool is cut ``by: image`` (a seeded permutation of its images; parts take consecutive
runs of ``size`` images) or ``by: class`` (a seeded permutation of its classes; parts take
``size`` whole classes, so no class is shared between, say, validation and test OOD).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "PER_REPLICATE_VALUE",
    "REPLICATE_TAGS",
    "pool_labels",
    "split_manifest",
    "pool_replicates",
    "replicate_unit",
    "split_rows",
]

#: A hyperparameter value of a pooled row that differs between replicates (each chose its
#: own on its own validation split).
PER_REPLICATE_VALUE = "per replicate"
SPLIT_BY = ("image", "class")


#: What a replicate seed varies (config ``replicates.vary``) -> the tag of its unit names.
REPLICATE_TAGS = {"split": "split", "training": "seed"}


def replicate_unit(model: str, seed: int, vary: str = "split") -> str:
    """The name of one replicate of ``model``: its results, tables and figures use it.
    ``vary``: ``split`` (``<model>-split<seed>``) or ``training`` (``<model>-seed<seed>``:
    the model trained with that seed)."""
    if vary not in REPLICATE_TAGS:
        raise ValueError(f"vary must be one of {sorted(REPLICATE_TAGS)}, got {vary!r}")
    return f"{model}-{REPLICATE_TAGS[vary]}{int(seed)}"


def _rng(seed: int, pool: str) -> np.random.Generator:
    # One independent, stable stream per (replicate seed, pool name).
    return np.random.default_rng([int(seed), zlib.crc32(pool.encode("utf-8"))])


def split_rows(
    pool: str,
    labels: Sequence[int] | np.ndarray,
    parts: Sequence[Mapping],
    seed: int,
    by: str = "image",
) -> dict[str, np.ndarray]:
    """Rows (sorted int64 indices into the pool) of each named part for one replicate seed.

    ``parts`` is a list of ``{"name": ..., "size": ...}``; sizes count images (``by:
    image``) or classes (``by: class``, using ``labels``, one integer class per image).
    Parts are disjoint; their sizes may add up to less than the pool (the rest is unused).
    Raises ``ValueError`` naming the pool when the sizes do not fit.
    """
    if by not in SPLIT_BY:
        raise ValueError(f"pool {pool!r}: 'by' must be one of {list(SPLIT_BY)}, got {by!r}")
    labels = np.asarray(labels)
    names = [str(p["name"]) for p in parts]
    sizes = [int(p["size"]) for p in parts]
    if len(set(names)) != len(names):
        raise ValueError(f"pool {pool!r}: part names must be unique, got {names}")
    if any(s < 1 for s in sizes):
        raise ValueError(f"pool {pool!r}: part sizes must be positive, got {sizes}")
    rng = _rng(seed, pool)
    if by == "image":
        n = len(labels)
        if sum(sizes) > n:
            raise ValueError(
                f"pool {pool!r} has {n} images but its parts {dict(zip(names, sizes, strict=True))} "
                f"take {sum(sizes)}"
            )
        order = rng.permutation(n)
        bounds = np.cumsum([0, *sizes])
        return {
            name: np.sort(order[bounds[i] : bounds[i + 1]]).astype(np.int64)
            for i, name in enumerate(names)
        }
    if (labels < 0).any():
        raise ValueError(
            f"pool {pool!r} is split by class but has unlabelled images (label -1): give it a "
            "class-folder layout (format: folder)"
        )
    classes = np.unique(labels)
    if sum(sizes) > len(classes):
        raise ValueError(
            f"pool {pool!r} has {len(classes)} classes but its parts "
            f"{dict(zip(names, sizes, strict=True))} take {sum(sizes)}"
        )
    order = classes[rng.permutation(len(classes))]
    bounds = np.cumsum([0, *sizes])
    return {
        name: np.flatnonzero(np.isin(labels, order[bounds[i] : bounds[i + 1]])).astype(np.int64)
        for i, name in enumerate(names)
    }


def pool_labels(pool_manifest: Mapping[str, Any], by: str = "image") -> np.ndarray:
    """What :func:`split_rows` needs of a pool, from its manifest alone (no image is read):
    one entry per image, and for ``by: class`` the class of each image - images are listed
    class folder by class folder, so the labels are the classes repeated by their counts."""
    n = int(pool_manifest["n_images"])
    if by != "class":
        return np.zeros(n, np.int64)
    counts = pool_manifest.get("class_counts") or []
    if not counts or sum(counts) != n:
        raise ValueError(
            f"pool {pool_manifest.get('name')!r} is split by class but its manifest has no "
            f"class counts for its {n} images: give it a class-folder layout (format: folder)"
        )
    return np.repeat(np.arange(len(counts), dtype=np.int64), counts)


def split_manifest(pool_manifest: Mapping[str, Any], name: str, rows, **extra: Any) -> dict:
    """The manifest of dataset ``name`` made of ``rows`` (indices into the verified image
    list) of the pool that ``pool_manifest`` describes: :func:`open_dataset` yields those
    images of the pool, in that order. ``extra`` items (replicate seed ...) are recorded."""
    rows = np.asarray(rows, dtype=np.int64)
    n_pool = int(pool_manifest["n_images"])
    if rows.ndim != 1 or len(rows) == 0 or rows.min() < 0 or rows.max() >= n_pool:
        raise ValueError(
            f"dataset {name!r}: rows must be a non-empty list of indices into the "
            f"{n_pool} images of pool {pool_manifest.get('name')!r}"
        )
    return {
        **pool_manifest,
        "name": name,
        "pool": pool_manifest.get("name"),
        "rows": rows.tolist(),
        "n_images": len(rows),
        "skipped": list(pool_manifest.get("skipped", [])),
        "class_counts": [],
        **extra,
    }


# Columns that identify one result within a replicate (besides its seed).
_KEY = ["experiment", "method", "variant", "ood_set", "split"]


def _mean_of_arrays(values: pd.Series):
    """Elementwise mean of the resampled-metric arrays of several seeds (None if absent)."""
    arrays = [np.asarray(v, dtype=np.float64) for v in values if v is not None]
    return np.mean(arrays, axis=0) if arrays else None


def _merged_params(texts: Sequence[str]) -> str:
    """One params JSON for a result chosen per replicate: the values all replicates share,
    and :data:`PER_REPLICATE_VALUE` for the others."""
    dicts = [json.loads(t) for t in texts]
    keys = sorted(set().union(*dicts))
    merged = {
        k: dicts[0][k]
        if all(k in d and d[k] == dicts[0][k] for d in dicts)
        else PER_REPLICATE_VALUE
        for k in keys
    }
    return json.dumps(merged, sort_keys=True)


def pool_replicates(results: pd.DataFrame, units: Mapping[str, int], model: str) -> pd.DataFrame:
    """The rows of the replicate ``units`` (unit name -> replicate seed) as rows of
    ``model`` with ``seed`` = the replicate seed, so that the table builders show mean ±
    std over replicates.

    Within a replicate, rows that several seeds produced (random pruning, subset draws)
    are averaged first, their resampled metrics elementwise (the bootstrap resamples
    depend on the test set only, so they stay paired across methods). Where the
    ``params`` of one result differ between replicates (each replicate chose its own on
    its own validation split) the differing values become :data:`PER_REPLICATE_VALUE`;
    values all replicates share (fixed settings, subset sizes) are kept. Interval columns,
    which describe one replicate's test samples, are dropped.
    """
    missing = sorted(set(units) - set(results["model"]))
    if missing:
        raise ValueError(f"no result rows for replicates {missing} of model {model!r}")
    frame = results[results["model"].isin(list(units))].copy()
    frame = frame.drop(columns=[c for c in frame.columns if "_ci_" in c])
    metrics = [
        c for c in ("fpr95", "auroc", "aupr_in", "aupr_out", "id_accuracy") if c in frame.columns
    ]
    resampled = [c for c in frame.columns if c.endswith("_resamples")]
    keys = ["model", *[k for k in _KEY if k in frame.columns], "params"]
    # ``selected`` marks validation rows; a pooled table never needs it per row.
    extra = [c for c in ("n_id", "n_ood", "selected") if c in frame.columns]
    agg = (
        {m: "mean" for m in metrics}
        | {c: _mean_of_arrays for c in resampled}
        | {c: "first" for c in extra}
    )
    per_unit = frame.groupby(keys, sort=False, dropna=False).agg(agg).reset_index()
    result_key = [k for k in keys if k not in ("model", "params")]
    # A result with one params value per replicate was chosen per replicate; where a
    # replicate has several (Table 3's percentages), the params name the result.
    per_replicate = per_unit.groupby([*result_key, "model"], dropna=False)["params"].transform(
        "nunique"
    )
    chosen = (
        per_replicate.groupby([per_unit[k] for k in result_key], dropna=False).transform("max") == 1
    )
    overall = per_unit.groupby(result_key, dropna=False)["params"].transform("nunique")
    differs = chosen & (overall > 1)
    if differs.any():
        merged = (
            per_unit[differs]
            .groupby(result_key, dropna=False)["params"]
            .transform(lambda texts: _merged_params(list(texts)))
        )
        per_unit.loc[differs, "params"] = merged
    per_unit["seed"] = per_unit["model"].map(units).astype("int64")
    per_unit["model"] = model
    return per_unit
