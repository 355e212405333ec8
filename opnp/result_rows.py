"""Result rows: the metrics (percent) of one method's scores on the ID set and each OOD
set, one row per OOD set, with the canonical text of its hyperparameters (``params``:
JSON with sorted keys, docs/architecture.md) and, with ``uncertainty`` settings, seeded
paired bootstrap intervals and the resampled metrics (:mod:`opnp.bootstrap`), in percent.

Torch- and workflow-free: the workflow's jobs (:mod:`opnp.pipeline.results` adds the
schema's provenance columns and writes the frames) and the model-level API's ``tune``
(:mod:`opnp.nets.model_api`) build their rows here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from opnp import bootstrap as _bootstrap
from opnp import metrics as _metrics

METRIC_COLUMNS = ["fpr95", "auroc", "aupr_in", "aupr_out"]
#: Metrics with a bootstrap interval (percent, like the metrics).
INTERVAL_METRICS = ["fpr95", "auroc"]
CI_COLUMNS = [f"{m}_ci_{side}" for m in INTERVAL_METRICS for side in ("low", "high")]
#: Per-resample metric (percent), a list per row: paired comparisons from Parquet alone.
RESAMPLE_COLUMNS = [f"{m}_resamples" for m in INTERVAL_METRICS]


def params_json(params: Mapping[str, Any]) -> str:
    """Canonical JSON of a hyperparameter dict (sorted keys): the ``params`` column."""
    return json.dumps(_plain(dict(params)), sort_keys=True)


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def metric_values(id_scores, ood_scores, convention: str = "paper") -> dict[str, float]:
    """FPR95, AUROC, AUPR-In, AUPR-Out in percent (ID is the positive class)."""
    values = _metrics.evaluate(id_scores, ood_scores, convention=convention)
    return {k: 100.0 * float(values[k]) for k in METRIC_COLUMNS}


def interval_values(
    id_scores, ood_scores, uncertainty: Mapping[str, Any] | None, ood_name: str = ""
) -> dict[str, Any]:
    """The interval columns of one row (percent): ``<metric>_ci_low/high`` and the
    resampled ``<metric>_resamples`` (float64 arrays), drawn by
    :func:`opnp.bootstrap.metric_intervals` with the ``uncertainty`` settings
    (``n_resamples``, ``confidence``, ``seed``); NaN / None when ``uncertainty`` is None."""
    if uncertainty is None:
        return {**dict.fromkeys(CI_COLUMNS, np.nan), **dict.fromkeys(RESAMPLE_COLUMNS)}
    settings = _bootstrap.check_settings(uncertainty)
    found = _bootstrap.metric_intervals(id_scores, ood_scores, ood_name=ood_name, **settings)
    out: dict[str, Any] = {}
    for metric in INTERVAL_METRICS:
        low, high = found[f"{metric}_ci"]
        out[f"{metric}_ci_low"] = 100.0 * low
        out[f"{metric}_ci_high"] = 100.0 * high
        out[f"{metric}_resamples"] = 100.0 * found[metric]
    return out


def score_rows(
    id_scores,
    ood_scores: Mapping[str, np.ndarray],
    *,
    method: str,
    params: Mapping[str, Any],
    split: str,
    seed: int = 0,
    experiment: str = "main",
    variant: str = "",
    id_accuracy: float | None = None,
    uncertainty: Mapping[str, Any] | None = None,
) -> list[dict]:
    """One row per OOD set for the scores of one (method, params, seed); with
    ``uncertainty`` settings also the bootstrap columns (:func:`interval_values`).

    Raises ValueError naming the method, params, split and score set when any score is
    NaN or infinite (a detector that divides by zero, a corrupt feature row), instead of
    a bare metric error that names none of them."""
    _check_finite_scores(id_scores, "the ID set", method, params, split, seed)
    for name, scores in ood_scores.items():
        _check_finite_scores(scores, f"OOD set {name!r}", method, params, split, seed)
    rows = []
    for name, scores in ood_scores.items():
        rows.append(
            {
                "experiment": experiment,
                "method": method,
                "variant": variant,
                "params": params_json(params),
                "ood_set": name,
                "split": split,
                "seed": int(seed),
                **metric_values(id_scores, scores),
                **interval_values(id_scores, scores, uncertainty, ood_name=name),
                "id_accuracy": np.nan if id_accuracy is None else float(id_accuracy),
                "n_id": int(len(id_scores)),
                "n_ood": int(len(scores)),
            }
        )
    return rows


def _check_finite_scores(scores, where: str, method, params, split, seed) -> None:
    values = np.asarray(scores, dtype=np.float64)
    nan = int(np.isnan(values).sum())
    inf = int(np.isinf(values).sum())
    if nan or inf:
        raise ValueError(
            f"method {method!r} with params {params_json(params)} (seed {int(seed)}) gave "
            f"{nan} NaN and {inf} infinite scores of {values.size} on {where} of split "
            f"{split!r}; the detector's score is undefined for these samples"
        )
