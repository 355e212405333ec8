"""Replicated evaluation: the whole benchmark repeated on seeded re-splits of small pools.

With a few hundred ID and OOD images (e.g. the 1,000-image ImageNet-1k sample and the
720-image DTD subset), one fixed split into fit / validation / test sets gives numbers
whose spread over splits is as large as the differences between methods. A config with
``replicates:`` therefore names *pools* (ordinary datasets, extracted once per model) and
how each pool is cut into named *parts* (the datasets that ``id:`` and ``ood:`` use), and
the workflow runs its whole evaluation - sensitivities, validation search, test scores,
ablations, figures - once per replicate seed on that seed's parts. Tables pooled over the
replicates show mean ± std over the split seeds; that std is no test, as replicates share
test data: :mod:`opnp.pipeline.pooled` gives intervals that resample what they share.

Numpy and pandas only: the workflow's steps on cached arrays use it.

A pool is cut ``by: image`` (a seeded permutation of its images; parts take consecutive
runs of ``size`` images) or ``by: class`` (a seeded permutation of its classes; parts take
``size`` whole classes, so no class is shared between, say, validation and test OOD).
Both draw a new permutation per replicate seed, so two replicates' test parts overlap
(with 250 of 1,000 images, by about a quarter) and their results are not independent.

``by: fold`` gives rotating folds instead: the pool is permuted once (by the pool's
``fold_seed``, the same for every replicate) and cut into ``folds`` equal folds (the
``n % folds`` images left over belong to no fold). Replicate ``i`` (its position in
``replicates.seeds``) gives a part with ``fold_offset: o`` fold ``(i + o) % folds``,
and the part with ``rest: true`` the images of the other folds and the leftover (all of
them, or its first ``size``). So the test parts (``fold_offset: 0``) of the replicates
are pairwise disjoint, and with as many replicates as folds their union is the pool
without the leftover; within a replicate every part is disjoint from every other.
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
    "check_split_spec",
    "fold_count",
    "resolve_split",
    "split_rows_of",
    "split_rows",
]

#: A hyperparameter value of a pooled row that differs between replicates (each chose its
#: own on its own validation split).
PER_REPLICATE_VALUE = "per replicate"
SPLIT_BY = ("image", "class", "fold")


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


def fold_count(spec: Mapping[str, Any], n_replicates: int) -> int:
    """Folds of a ``by: fold`` pool: its ``folds``, or one per replicate seed."""
    return int(spec.get("folds") or n_replicates)


def check_split_spec(
    pool: str, spec: Mapping[str, Any], n_replicates: int, n_images: int | None = None
) -> None:
    """Checks of one pool's split, ValueError naming the pool: run when the config is
    read, before anything is extracted. With ``n_images`` (e.g. the dataset's
    ``expected_count``) also whether image and fold sizes fit the pool."""
    by = spec.get("by")
    if by not in SPLIT_BY:
        raise ValueError(f"pool {pool!r}: 'by' must be one of {list(SPLIT_BY)}, got {by!r}")
    parts = list(spec.get("parts", []))
    names = [str(p.get("name")) for p in parts]
    if not parts:
        raise ValueError(f"pool {pool!r}: 'parts' must list at least one part")
    if len(set(names)) != len(names):
        raise ValueError(f"pool {pool!r}: part names must be unique, got {names}")
    if by == "fold":
        _check_fold_parts(pool, spec, parts, n_replicates, n_images)
    else:
        _check_sized_parts(pool, spec, parts, by, n_images)


def _check_sized_parts(pool, spec, parts, by, n_images) -> None:
    """A split by image or by class: parts of a positive size, no fold keys."""
    fold_keys = ("fold_offset", "rest")
    for key in ("folds", "fold_seed"):
        if key in spec:
            raise ValueError(f"pool {pool!r}: {key!r} only applies to 'by: fold'")
    for part in parts:
        if any(k in part for k in fold_keys) or "size" not in part:
            raise ValueError(
                f"pool {pool!r}, part {part.get('name')!r}: a 'by: {by}' part has a "
                "'size' and no 'fold_offset' or 'rest'"
            )
        if int(part["size"]) < 1:
            raise ValueError(f"pool {pool!r}: part sizes must be positive, got {part}")
    sizes = {str(p["name"]): int(p["size"]) for p in parts}
    if by == "image" and n_images is not None and sum(sizes.values()) > n_images:
        raise ValueError(
            f"pool {pool!r} has {n_images} images but its parts {sizes} take {sum(sizes.values())}"
        )


def _check_fold_parts(pool, spec, parts, n_replicates, n_images) -> None:
    """A 'by: fold' split: a fold seed, enough folds, each part one fold (its offset
    from the replicate's) or the one 'rest' part, and the sizes fit the pool."""
    if "fold_seed" not in spec:
        raise ValueError(
            f"pool {pool!r}: 'by: fold' needs a 'fold_seed' (the one permutation all "
            "replicates' folds come from)"
        )
    folds = fold_count(spec, n_replicates)
    if folds < 2:
        raise ValueError(f"pool {pool!r}: 'by: fold' needs at least 2 folds, got {folds}")
    if n_replicates > folds:
        raise ValueError(
            f"pool {pool!r}: {n_replicates} replicate seeds but {folds} folds; each replicate "
            "needs a test fold of its own (folds >= number of seeds)"
        )
    offsets, rest = [], []
    for part in parts:
        has_offset, is_rest = "fold_offset" in part, bool(part.get("rest", False))
        if has_offset == is_rest:
            raise ValueError(
                f"pool {pool!r}, part {part.get('name')!r}: a 'by: fold' part has exactly one "
                "of 'fold_offset' (which fold, counted from the replicate's) and 'rest: true'"
            )
        if has_offset:
            if "size" in part:
                raise ValueError(
                    f"pool {pool!r}, part {part['name']!r}: a fold part is a whole fold; "
                    "'size' only applies to the 'rest' part"
                )
            offset = part["fold_offset"]
            if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < folds:
                raise ValueError(
                    f"pool {pool!r}, part {part['name']!r}: fold_offset must be an integer "
                    f"in [0, {folds}), got {offset!r}"
                )
            offsets.append(offset)
        else:
            rest.append(part["name"])
            if "size" in part and int(part["size"]) < 1:
                raise ValueError(f"pool {pool!r}: part sizes must be positive, got {part}")
    if len(set(offsets)) != len(offsets):
        raise ValueError(f"pool {pool!r}: two parts have the same fold_offset {offsets}")
    if len(rest) > 1:
        raise ValueError(f"pool {pool!r}: at most one part may be 'rest', got {rest}")
    if len(offsets) == folds and rest:
        raise ValueError(
            f"pool {pool!r}: the fold parts take all {folds} folds; the 'rest' part "
            f"{rest[0]!r} would only get the leftover images"
        )
    if n_images is not None:
        fold_size = n_images // folds
        if fold_size < 1:
            raise ValueError(f"pool {pool!r} has {n_images} images, fewer than its {folds} folds")
        left = n_images - len(offsets) * fold_size
        for part in parts:
            if part.get("rest", False) and int(part.get("size", left)) > left:
                raise ValueError(
                    f"pool {pool!r}: part {part['name']!r} asks for {int(part['size'])} images "
                    f"but {left} are left outside the fold parts ({n_images} images, {folds} "
                    f"folds of {fold_size})"
                )


def _fold_rows(
    pool: str, n: int, parts: Sequence[Mapping], replicate: int, folds: int, fold_seed: int
) -> dict[str, np.ndarray]:
    fold_size = n // folds  # check_split_spec made sure the parts fit
    # One permutation per pool, independent of the replicate: the folds rotate, they are
    # not redrawn. Its own stream, so that fold_seed 0 is not replicate seed 0's draw.
    rng = np.random.default_rng([int(fold_seed), zlib.crc32(pool.encode("utf-8")), 1])
    order = rng.permutation(n)
    fold = [order[j * fold_size : (j + 1) * fold_size] for j in range(folds)]
    out, taken = {}, set()
    for part in parts:
        if "fold_offset" in part:
            j = (replicate + int(part["fold_offset"])) % folds
            taken.add(j)
            out[str(part["name"])] = fold[j]
    leftover = [order[folds * fold_size :]]
    rest = np.concatenate([f for j, f in enumerate(fold) if j not in taken] + leftover)
    for part in parts:
        if part.get("rest", False):
            out[str(part["name"])] = rest[: int(part.get("size", len(rest)))]
    return {name: np.sort(rows).astype(np.int64) for name, rows in out.items()}


def split_rows(
    pool: str,
    labels: Sequence[int] | np.ndarray,
    parts: Sequence[Mapping],
    seed: int,
    by: str = "image",
    *,
    replicate: int | None = None,
    folds: int | None = None,
    fold_seed: int | None = None,
) -> dict[str, np.ndarray]:
    """Rows (sorted int64 indices into the pool) of each named part for one replicate seed.

    ``parts`` is a list of ``{"name": ..., "size": ...}``; sizes count images (``by:
    image``) or classes (``by: class``, using ``labels``, one integer class per image).
    Parts are disjoint; their sizes may add up to less than the pool (the rest is unused).
    ``by: fold`` (module docstring) ignores ``seed`` and needs ``replicate`` (the
    replicate's position among the seeds), ``folds`` and ``fold_seed``; its parts are
    ``{"name", "fold_offset"}`` or ``{"name", "rest": True[, "size"]}``.
    Raises ``ValueError`` naming the pool when the parts do not fit.
    """
    labels = np.asarray(labels)
    if by == "fold":
        if replicate is None or folds is None or fold_seed is None:
            raise ValueError(
                f"pool {pool!r}: 'by: fold' needs the replicate index, folds and fold_seed"
            )
        spec = {"by": by, "parts": parts, "folds": folds, "fold_seed": fold_seed}
        check_split_spec(pool, spec, int(folds), n_images=len(labels))
        if not 0 <= int(replicate) < int(folds):
            raise ValueError(
                f"pool {pool!r}: replicate index {replicate} is not in [0, {folds}) folds"
            )
        return _fold_rows(pool, len(labels), parts, int(replicate), int(folds), int(fold_seed))
    check_split_spec(pool, {"by": by, "parts": parts}, 1)
    names = [str(p["name"]) for p in parts]
    sizes = [int(p["size"]) for p in parts]
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


def resolve_split(spec: Mapping[str, Any], seeds: Sequence[int], seed: int) -> dict:
    """A pool's config ``spec`` for replicate ``seed`` of ``seeds`` (the config's
    ``replicates.seeds``): a ``by: fold`` pool also gets ``replicate`` (the seed's
    position, which fold it tests on) and its resolved ``folds``."""
    spec = dict(spec)
    if spec["by"] == "fold":
        spec["replicate"] = list(seeds).index(int(seed))
        spec["folds"] = fold_count(spec, len(seeds))
    return spec


def split_rows_of(pool: str, labels, spec: Mapping[str, Any], seed: int) -> dict[str, np.ndarray]:
    """:func:`split_rows` with a :func:`resolve_split` spec."""
    return split_rows(
        pool,
        labels,
        spec["parts"],
        seed=seed,
        by=spec["by"],
        replicate=spec.get("replicate"),
        folds=spec.get("folds"),
        fold_seed=spec.get("fold_seed"),
    )


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
    extra = [c for c in ("n_id", "n_ood", "selected", "selected_for") if c in frame.columns]
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
