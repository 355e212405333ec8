"""The results schema and its rows: one row per method x params x OOD set x split x seed.

Metrics are in percent, ``params`` is JSON with sorted keys (docs/architecture.md).
Rows scored with ``uncertainty`` settings (the workflow's test rows) also carry seeded,
paired bootstrap intervals and the resampled metrics (:mod:`opnp.bootstrap`), in percent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from opnp import bootstrap as _bootstrap
from opnp import metrics as _metrics

METRIC_COLUMNS = ["fpr95", "auroc", "aupr_in", "aupr_out"]
#: Metrics with a bootstrap interval (percent, like the metrics).
INTERVAL_METRICS = ["fpr95", "auroc"]
CI_COLUMNS = [f"{m}_ci_{side}" for m in INTERVAL_METRICS for side in ("low", "high")]
#: Per-resample metric (percent), a list per row: paired comparisons from Parquet alone.
RESAMPLE_COLUMNS = [f"{m}_resamples" for m in INTERVAL_METRICS]
RESULT_COLUMNS = [
    "benchmark",
    "model",
    "experiment",
    "method",
    "variant",
    "params",
    "ood_set",
    "split",
    "seed",
    *METRIC_COLUMNS,
    *CI_COLUMNS,
    *RESAMPLE_COLUMNS,
    "id_accuracy",
    "n_id",
    "n_ood",
    "config_hash",
    "opnp_version",
    "git_commit",
]


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


def accuracy(logits, labels) -> float:
    """Top-1 accuracy in percent of logits (N, C) against integer labels (N,)."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if len(logits) != len(labels):
        raise ValueError(f"logits has {len(logits)} rows but labels has {len(labels)}")
    return 100.0 * float(np.mean(np.argmax(logits, axis=1) == labels))


def results_frame(
    rows: list[dict], *, benchmark: str, model: str, config_hash: str, provenance: Mapping[str, Any]
) -> pd.DataFrame:
    """Rows -> DataFrame with the results schema's columns, in its order and dtypes."""
    if not rows:
        raise ValueError("no result rows to write")
    frame = pd.DataFrame(rows)
    frame["benchmark"] = benchmark
    frame["model"] = model
    frame["config_hash"] = config_hash
    frame["opnp_version"] = str(provenance.get("opnp_version", "unknown"))
    frame["git_commit"] = str(provenance.get("git_commit", "unknown"))
    defaults = {
        "id_accuracy": np.nan,
        "n_id": 0,
        "n_ood": 0,
        "seed": 0,
        **dict.fromkeys(CI_COLUMNS, np.nan),
        **dict.fromkeys(RESAMPLE_COLUMNS),
    }
    for column in RESULT_COLUMNS:
        if column not in frame:
            frame[column] = defaults.get(column, "")
    frame = frame[RESULT_COLUMNS]
    # Rows about an OOD set must have every metric; rows that are not (ood_set "", e.g.
    # Table 3's pruned-layer accuracy) carry NaN metrics by design.
    bad = (frame["ood_set"] != "") & frame[METRIC_COLUMNS].isna().any(axis=1)
    if bad.any():
        first = frame.loc[bad].iloc[0]
        raise ValueError(
            f"{int(bad.sum())} result rows have NaN metrics, e.g. method {first['method']!r} "
            f"params {first['params']} on {first['ood_set']!r}"
        )
    return frame.astype(
        {
            "seed": "int64",
            "n_id": "int64",
            "n_ood": "int64",
            "id_accuracy": "float64",
            **dict.fromkeys(CI_COLUMNS, "float64"),
        }
    )


def concat_results(paths: Iterable[str]) -> pd.DataFrame:
    """Concatenate result Parquet files; ``selected`` (validation rows) defaults to False,
    ``selected_for`` (the test groups that chose a validation row's params) to ``"{}"``."""
    frames = [pd.read_parquet(p) for p in paths]
    if not frames:
        raise ValueError("no result files to aggregate")
    for path, frame in zip(paths, frames, strict=True):
        missing = [c for c in RESULT_COLUMNS if c not in frame]
        if missing:
            raise ValueError(f"{path} lacks result columns {missing}")
    frame = pd.concat(frames, ignore_index=True)
    if "selected" not in frame:
        frame["selected"] = False
    frame["selected"] = frame["selected"].fillna(False).astype(bool)
    if "selected_for" not in frame:
        frame["selected_for"] = "{}"
    frame["selected_for"] = frame["selected_for"].fillna("{}").astype(str)
    return frame
