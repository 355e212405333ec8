"""Pooled results of a replicated benchmark with cluster-bootstrap intervals.

The workflow's rule ``pooled_intervals`` calls :func:`pooled_frame` per configured model
with the test scores that every replicate's evaluation saved
(``results/<benchmark>/scores/<unit>/<method>.npz``) and the test images' resampling
units, read from the datasets' manifests by :func:`image_units` (ID: the image, as its
row of the pool) and :func:`class_units` (OOD: the class, where the pool has class
folders). :mod:`opnp.pooled_bootstrap` resamples them; every method gets the same draws,
so the difference of a method to the best one per metric and OOD set has a paired
interval, and ``<metric>_within_noise`` says whether it includes 0 (the tables' bold
rule, :mod:`opnp.report.render`, on the pooled draws).

Numpy and pandas only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from opnp import bootstrap as _bootstrap
from opnp import pooled_bootstrap as _pooled
from opnp.bootstrap import check_settings
from opnp.pipeline.replicates import pool_labels

__all__ = [
    "POOLED_COLUMNS",
    "POOLED_DRAW_NOTE",
    "apply_pooled_draws",
    "class_units",
    "image_units",
    "pooled_frame",
    "seed_scores",
]

#: Lower is better for FPR95, higher for AUROC (the best method per OOD set).
_BETTER = {"fpr95": np.argmin, "auroc": np.argmax}

POOLED_COLUMNS = [
    "model",
    "method",
    "ood_set",
    "n_replicates",
    *[
        f"{m}{suffix}"
        for m in _pooled.METRICS
        for suffix in ("", "_ci_low", "_ci_high", "_best", "_diff_ci_low", "_diff_ci_high")
    ],
    *[f"{m}_within_noise" for m in _pooled.METRICS],
    "n_id_units",
    "n_ood_clusters",
    "n_resamples",
    "n_partial",
    "confidence",
]


def image_units(manifest: Mapping[str, Any]) -> np.ndarray:
    """Each image of a dataset as its own unit: its row of the pool for a replicate part
    (so an image shared by two replicates is one unit), else its position."""
    if "rows" in manifest:
        return np.asarray(manifest["rows"], dtype=np.int64)
    return np.arange(int(manifest["n_images"]), dtype=np.int64)


def class_units(
    manifest: Mapping[str, Any], pool_manifest: Mapping[str, Any] | None = None
) -> np.ndarray:
    """The class of each image of a dataset, the unit its images are resampled by, where
    the dataset (or the pool a replicate part is cut from) has class folders; otherwise
    each image is its own unit (:func:`image_units`)."""
    source = pool_manifest if "rows" in manifest else manifest
    if source is None:
        raise ValueError(
            f"dataset {manifest.get('name')!r} is a part of pool {manifest.get('pool')!r}: "
            "its classes come from the pool's manifest, which was not given"
        )
    if not source.get("class_counts"):
        return image_units(manifest)
    labels = pool_labels(source, by="class")
    return labels[image_units(manifest)] if "rows" in manifest else labels


def seed_scores(arrays: Mapping[str, np.ndarray], n_seeds: int, what: str) -> list[dict]:
    """One ``{"ID": ..., <ood set>: ...}`` per seed from a saved scores file: the first
    seed's under the set names, the others' under ``"<set>@seed<seed>"`` (seeds
    ascending). ValueError naming ``what`` unless there are ``n_seeds`` of them."""
    by_seed: dict[int, dict] = {}
    first = {}
    for key, values in arrays.items():
        name, _, seed = key.partition("@seed")
        if seed:
            by_seed.setdefault(int(seed), {})[name] = np.asarray(values)
        else:
            first[name] = np.asarray(values)
    found = [first, *(by_seed[s] for s in sorted(by_seed))]
    if len(found) != n_seeds:
        raise ValueError(
            f"{what} holds the test scores of {len(found)} seeds, but the method's results "
            f"average {n_seeds}: rerun its evaluation (rule evaluate_method) to save them all"
        )
    return found


def _paired(draws: Mapping[str, np.ndarray], estimates: Mapping[str, float], metric, confidence):
    """Best method by its estimate, and each method's paired interval to it."""
    methods = list(draws)
    best = methods[int(_BETTER[metric]([estimates[m] for m in methods]))]
    out = {}
    for m in methods:
        low, high = _bootstrap.paired_difference_interval(
            draws[m], draws[best], confidence, drop_undefined=True
        )
        out[m] = (best, low, high)
    return best, out


def pooled_frame(
    model: str,
    scores: Mapping[str, Sequence[Mapping[str, np.ndarray]]],
    id_units: Sequence[np.ndarray],
    ood_clusters: Mapping[str, Sequence[np.ndarray]],
    uncertainty: Mapping[str, Any] | None = None,
    average: str | None = None,
) -> tuple[pd.DataFrame, dict[tuple[str, str], dict[str, np.ndarray]]]:
    """One row per method and OOD set: the mean over replicates of FPR95 and AUROC
    (percent), their cluster-bootstrap interval, the best method per metric and OOD set
    and each method's paired interval of the difference to it.

    ``scores[method][r]`` is replicate ``r``'s ``{"ID": ..., <ood set>: ...}``, or a list
    of them, one per seed (the same number in every replicate): then each draw is the
    mean over seeds and replicates, as the pooled tables average them,
    ``id_units[r]`` the unit of each of its ID test images, ``ood_clusters[ood_set][r]``
    the class of each of its OOD images. ``uncertainty``: ``n_resamples``,
    ``confidence``, ``seed`` (:func:`opnp.bootstrap.check_settings`). With ``average`` (a
    label) and several OOD sets, also a row per method averaged over the sets, draw by
    draw (one ID draw for all sets, an independent draw per OOD set).

    Returns the frame and the draws (percent) per ``(method, ood_set)``.
    """
    settings = check_settings(uncertainty)
    methods = sorted(scores)
    if not methods:
        raise ValueError(f"model {model!r}: no method scores to pool")
    k = len(id_units)
    for method in methods:
        if len(scores[method]) != k:
            raise ValueError(
                f"model {model!r}: method {method!r} has scores of {len(scores[method])} "
                f"replicates, the ID units {k}"
            )
    draws: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    info: dict[tuple[str, str], dict[str, Any]] = {}
    for ood_set, clusters in ood_clusters.items():
        for method in methods:
            draws[method, ood_set], info[method, ood_set] = _method_draws(
                model, method, scores[method], ood_set, clusters, id_units, settings
            )
    sets = list(ood_clusters)
    if average is not None and len(sets) > 1:
        _average_over_sets(draws, info, methods, sets, average)
        sets.append(average)
    n_id_units = len(np.unique(np.concatenate([np.asarray(u) for u in id_units])))
    rows = [
        {
            "model": model,
            "method": method,
            "ood_set": ood_set,
            "n_replicates": k,
            **row,
            "n_id_units": n_id_units,
            "n_ood_clusters": info[method, ood_set]["n_ood_clusters"],
            "n_resamples": settings["n_resamples"],
            "n_partial": info[method, ood_set]["n_partial"],
            "confidence": settings["confidence"],
        }
        for ood_set in sets
        for method, row in _metric_columns(methods, ood_set, draws, info, settings).items()
    ]
    return pd.DataFrame(rows, columns=POOLED_COLUMNS), draws


def _method_draws(model, method, method_scores, ood_set, clusters, id_units, settings):
    """The draws (percent) of one method on one OOD set, each the mean over seeds, and
    its estimates (the mean over seeds of each metric), ``n_partial`` and the number of
    OOD clusters."""
    per_replicate = [s if isinstance(s, list) else [s] for s in method_scores]
    n_seeds = {len(s) for s in per_replicate}
    if len(n_seeds) != 1:
        raise ValueError(
            f"model {model!r}: method {method!r} has scores of {sorted(n_seeds)} "
            "seeds in different replicates"
        )
    missing = [r for r, s in enumerate(per_replicate) if any(ood_set not in x for x in s)]
    if missing:
        raise ValueError(
            f"model {model!r}: the scores of {method!r} of replicates {missing} "
            f"lack OOD set {ood_set!r}"
        )
    # The same units, so the same draws for every seed: averaging them draw by
    # draw is the bootstrap of the mean over seeds.
    per_seed = [
        _pooled.pooled_bootstrap(
            # the ID scores of the setting that scored this OOD set
            [s[i].get(f"ID@{ood_set}", s[i]["ID"]) for s in per_replicate],
            [s[i][ood_set] for s in per_replicate],
            clusters,
            id_units,
            n_resamples=settings["n_resamples"],
            seed=settings["seed"],
            ood_name=ood_set,
        )
        for i in range(n_seeds.pop())
    ]
    draws = {
        m: 100.0 * np.mean([f[f"{m}_resamples"] for f in per_seed], axis=0) for m in _pooled.METRICS
    }
    info = {
        **{m: 100.0 * float(np.mean([f[m] for f in per_seed])) for m in _pooled.METRICS},
        "n_partial": max(f["n_partial"] for f in per_seed),
        "n_ood_clusters": len(np.unique(np.concatenate([np.asarray(c) for c in clusters]))),
    }
    return draws, info


def _average_over_sets(draws, info, methods, sets, average) -> None:
    """Add each method's draws and estimates averaged over the OOD sets ``sets``, draw
    by draw, under the OOD set name ``average``."""
    for method in methods:
        draws[method, average] = {
            m: np.mean([draws[method, s][m] for s in sets], axis=0) for m in _pooled.METRICS
        }
        info[method, average] = {
            **{m: float(np.mean([info[method, s][m] for s in sets])) for m in _pooled.METRICS},
            "n_partial": max(info[method, s]["n_partial"] for s in sets),
            "n_ood_clusters": sum(info[methods[0], s]["n_ood_clusters"] for s in sets),
        }


def _metric_columns(methods, ood_set, draws, info, settings) -> dict[str, dict]:
    """Per method, the metric columns of its row on ``ood_set``: estimate, interval,
    the best method and the paired interval of the difference to it."""
    paired = {}
    for metric in _pooled.METRICS:
        _, paired[metric] = _paired(
            {m: draws[m, ood_set][metric] for m in methods},
            {m: info[m, ood_set][metric] for m in methods},
            metric,
            settings["confidence"],
        )
    columns = {}
    for method in methods:
        row = {}
        for metric in _pooled.METRICS:
            low, high = _bootstrap.percentile_interval(
                draws[method, ood_set][metric], settings["confidence"], drop_undefined=True
            )
            best, diff_low, diff_high = paired[metric][method]
            row |= {
                metric: info[method, ood_set][metric],
                f"{metric}_ci_low": low,
                f"{metric}_ci_high": high,
                f"{metric}_best": best,
                f"{metric}_diff_ci_low": diff_low,
                f"{metric}_diff_ci_high": diff_high,
                f"{metric}_within_noise": bool(diff_low <= 0.0 <= diff_high),
            }
        columns[method] = row
    return columns


#: Caption sentence of a pooled table whose bold rule uses :func:`apply_pooled_draws`.
POOLED_DRAW_NOTE = (
    "Pooled intervals: the bold rule's paired intervals come from a cluster bootstrap over "
    "the replicates (each draw resamples the OOD test classes and the ID test images once, "
    "for every replicate that contains them, the same draws for every method; approximate "
    "with few OOD classes), not from the per-replicate resamples."
)


def apply_pooled_draws(pooled: pd.DataFrame, draws: pd.DataFrame) -> pd.DataFrame:
    """``pooled`` (rows of :func:`opnp.pipeline.replicates.pool_replicates`, one per
    replicate) with the resampled metrics of its main test rows replaced by the pooled
    cluster-bootstrap draws of ``draws`` (the Parquet of rule ``pooled_intervals``:
    ``method``, ``ood_set``, ``<metric>_resamples``), so that a table's bold rule, which
    averages a cell's resamples over its rows, compares methods on those draws.

    Every replicate row of a (method, OOD set) gets the same draws (their mean is the
    draws). Main test rows without draws (methods not pooled) get None: their cells are
    bold only on ties, never compared on draws of another kind. Rows of other experiments
    are unchanged."""
    out = pooled.copy()
    main = (out["experiment"] == "main") & (out["split"] == "test")
    lookup = {(row.method, row.ood_set): row for row in draws.itertuples(index=False)}
    for metric in _pooled.METRICS:
        column = f"{metric}_resamples"
        if column not in out:
            continue
        values = out[column].astype(object).tolist()
        for i, (is_main, method, ood_set) in enumerate(
            zip(main, out["method"], out["ood_set"], strict=True)
        ):
            if is_main:
                found = lookup.get((method, ood_set))
                values[i] = None if found is None else np.asarray(getattr(found, column))
        out[column] = pd.Series(values, index=out.index, dtype=object)
    return out
