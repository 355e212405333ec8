"""Scoring configs of one method on ID and OOD sets into result rows: from cached
features through the detector registry (a detector class that offers a ``grid_scorer``
scores a whole pruning grid at once), or on images for methods that run the network."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from opnp.detectors import create_detector, detector_class
from opnp.pipeline.results import params_json, score_rows


@dataclass(frozen=True)
class FitData:
    """What a detector of the registry is built and fitted from: the FC head ``weight``
    (C, D) and ``bias`` (C,), the training features (and labels, for methods that need
    them), and the cached parameter sensitivity (C, D) with the neuron statistic the
    sensitivity methods reduce it by (paper Eq. 8)."""

    weight: Any
    bias: Any
    train_features: Any = None
    train_labels: Any = None
    sensitivity: Any = None
    statistic: str = "mean"

    def replace(self, **changes) -> FitData:
        return dataclasses.replace(self, **changes)


def build_detector(method: str, params: Mapping[str, Any], fit: FitData, *, seed: int = 0):
    """Create and fit one detector of the registry with the workflow's conventions:
    sensitivity methods get the precomputed (C, D) sensitivity, seeded methods a seed."""
    cls = detector_class(method)
    kwargs = dict(params)
    if cls.uses_sensitivity:
        if fit.sensitivity is None:
            raise ValueError(f"method {method!r} needs a parameter sensitivity matrix")
        kwargs["param_sensitivity"] = fit.sensitivity
        kwargs["neuron_statistic"] = fit.statistic
    if cls.seeded:
        kwargs["seed"] = int(seed)
    detector = create_detector(method, weight=fit.weight, bias=fit.bias, **kwargs)
    return detector.fit(fit.train_features, fit.train_labels)


def evaluate_configs(
    method: str,
    configs: list[dict],
    fit: FitData,
    *,
    id_features,
    ood_features: Mapping[str, Any],
    split: str,
    seeds: Iterable[int] = (0,),
    experiment: str = "main",
    variant: str = "",
    keep_scores: bool = False,
    uncertainty: Mapping[str, Any] | None = None,
    known_id_scores: Mapping[tuple[str, int], Any] | None = None,
    detector_id_scores: dict | None = None,
):
    """Score every config (and seed, for seeded methods) on ID and each OOD set.

    Returns ``(rows, scores)``: result rows in the schema (with bootstrap intervals when
    ``uncertainty`` settings are given, see :func:`score_rows`), and when ``keep_scores``
    a dict ``(params_json, seed) -> {"ID": scores, <ood name>: scores}``.

    Reusing ID scores across jobs (when the ID validation set is the ID test set, a
    selection job has already scored it): ``detector_id_scores``, a dict, receives the
    ID scores of the configs scored one fitted detector at a time, keyed
    ``(params_json, seed)``; ``known_id_scores`` holds such scores, and a config found
    there is not scored on ID again. Only the one-detector path fills and reads them: it
    is the path a single config takes, so a reused array is the one scoring would give.
    """
    cls = detector_class(method)
    seeds = list(seeds) if cls.seeded else [0]
    rows: list[dict] = []
    kept: dict = {}
    fast = None
    if hasattr(cls, "grid_scorer"):
        fast = cls.grid_scorer(
            configs,
            weight=fit.weight,
            bias=fit.bias,
            sensitivity=fit.sensitivity,
            statistic=fit.statistic,
            train_features=fit.train_features,
            features={"ID": id_features, **ood_features},
        )
    for index, params in enumerate(configs):
        for seed in seeds:
            if fast is not None:
                scores = fast(index)
                id_scores = scores.pop("ID")
                ood_scores = scores
            else:
                detector = build_detector(method, params, fit, seed=seed)
                key = (params_json(params), int(seed))
                if known_id_scores is not None and key in known_id_scores:
                    id_scores = known_scores(known_id_scores[key], id_features, key)
                else:
                    id_scores = detector.score(id_features)
                if detector_id_scores is not None:
                    detector_id_scores[key] = np.asarray(id_scores)
                ood_scores = {name: detector.score(f) for name, f in ood_features.items()}
            rows += score_rows(
                id_scores,
                ood_scores,
                method=method,
                params=params,
                split=split,
                seed=seed,
                experiment=experiment,
                variant=variant,
                uncertainty=uncertainty,
            )
            if keep_scores:
                kept[(params_json(params), seed)] = {
                    "ID": np.asarray(id_scores),
                    **{k: np.asarray(v) for k, v in ood_scores.items()},
                }
    return rows, kept


def known_scores(scores, features, key) -> np.ndarray:
    """Reused ID scores, checked against the features they stand for (one per row)."""
    scores = np.asarray(scores)
    if scores.shape != (len(features),):
        raise ValueError(
            f"reused ID scores of {key} have shape {scores.shape}, but the ID set has "
            f"{len(features)} rows: not the scores of these features"
        )
    return scores


def dataset_scores(
    score_batch, dataset, *, batch_size: int = 256, num_workers: int = 0
) -> np.ndarray:
    """Apply ``score_batch(inputs) -> (B,) scores`` to every image of a dataset, in order.

    For methods that need the network itself (ODIN, pruned networks in Table 7).
    """
    import torch

    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
    out = []
    for inputs, _ in loader:
        scores = score_batch(inputs)
        out.append(
            np.asarray(
                scores.detach().cpu() if hasattr(scores, "detach") else scores, dtype=np.float64
            )
        )
    if not out:
        raise ValueError(f"dataset {dataset!r} has no images")
    return np.concatenate(out)


def evaluate_network_configs(
    method: str,
    configs: list[dict],
    make_scorer,
    id_dataset,
    ood_datasets: Mapping[str, Any],
    *,
    split: str,
    batch_size: int = 256,
    num_workers: int = 0,
    experiment: str = "main",
    variant: str = "",
    uncertainty: Mapping[str, Any] | None = None,
):
    """Like :func:`evaluate_configs` for methods that run the network on images.

    ``make_scorer(params)`` returns a function from an input batch to scores. Returns
    ``(rows, scores)`` with ``scores[i]`` = {"ID": ..., <ood name>: ...} of ``configs[i]``.
    """
    row_keys = dict(method=method, split=split, experiment=experiment, variant=variant)
    kw = {"batch_size": batch_size, "num_workers": num_workers}
    rows: list[dict] = []
    all_scores = []
    for params in configs:
        score_batch = make_scorer(params)
        id_scores = dataset_scores(score_batch, id_dataset, **kw)
        scores = {name: dataset_scores(score_batch, ds, **kw) for name, ds in ood_datasets.items()}
        rows += score_rows(id_scores, scores, params=params, uncertainty=uncertainty, **row_keys)
        all_scores.append({"ID": id_scores, **scores})
    return rows, all_scores


def merge_setting_scores(per_setting: list[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """One score file's arrays from the scores of several settings of one method, each
    ``{"ID": ..., <its test OOD sets>: ...}`` (each test family scored with the setting
    chosen for it): the OOD arrays, ``"ID"`` of the first setting, and ``"ID@<ood>"``
    for an OOD set whose setting is another one (its ID scores differ)."""
    if not per_setting:
        raise ValueError("no scores to merge")
    merged: dict[str, np.ndarray] = {"ID": np.asarray(per_setting[0]["ID"])}
    for index, scores in enumerate(per_setting):
        for name, values in scores.items():
            if name == "ID":
                continue
            if name in merged:
                raise ValueError(f"OOD set {name!r} was scored by two settings")
            merged[name] = np.asarray(values)
            if index:
                merged[f"ID@{name}"] = np.asarray(scores["ID"])
    return merged
