"""The results schema: one row per method x params x OOD set x split x seed, as the
workflow writes it (the rows' metrics, ``params`` text and intervals come from
:mod:`opnp.result_rows`; here the benchmark, model, config hash and provenance columns,
the frames and their concatenation).

Metrics are in percent, ``params`` is JSON with sorted keys (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from opnp.result_rows import (  # noqa: F401 - re-exported: the workflow's modules import them here
    CI_COLUMNS,
    INTERVAL_METRICS,
    METRIC_COLUMNS,
    RESAMPLE_COLUMNS,
    interval_values,
    metric_values,
    params_json,
    score_rows,
)

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
