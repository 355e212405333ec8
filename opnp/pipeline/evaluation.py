"""Evaluation glue shared by the workflow's scripts: hyperparameter grids, metric rows in
the results schema, and selection on the validation split.

Results schema (one row per method x params x OOD set x split x seed), see
docs/architecture.md: metrics are in percent, ``params`` is JSON with sorted keys. Rows
scored with ``uncertainty`` settings (the workflow's test rows) also carry seeded, paired
bootstrap intervals and the resampled metrics (:mod:`opnp.bootstrap`), in percent too.
"""

from __future__ import annotations

import itertools
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
# Methods whose result depends on a random draw: run once per configured seed.
RANDOM_METHODS = frozenset({"rpp", "rnp"})
# Methods whose hyperparameters are percentages of the OPNP sensitivity masks.
SENSITIVITY_METHODS = frozenset({"opp", "onp", "opnp", "opnp+react", "opp+react", "opnp+msp"})
# Methods that need class labels of the training features.
LABELLED_METHODS = frozenset({"mahalanobis", "line"})


def expand_grid(grid: Mapping[str, Iterable] | None, fixed: Mapping[str, Any] | None = None):
    """Cartesian product of a grid, each config merged with the fixed values.

    The order is deterministic (keys sorted, values in the given order), so that ties in
    the selection are broken the same way in every run.
    """
    grid = dict(grid or {})
    fixed = dict(fixed or {})
    overlap = set(grid) & set(fixed)
    if overlap:
        raise ValueError(f"hyperparameters {sorted(overlap)} appear in both grid and fixed")
    keys = sorted(grid)
    for key in keys:
        if not isinstance(grid[key], list | tuple) or len(grid[key]) == 0:
            raise ValueError(f"grid[{key!r}] must be a non-empty list, got {grid[key]!r}")
    return [
        {**fixed, **dict(zip(keys, values, strict=True))}
        for values in itertools.product(*(grid[k] for k in keys))
    ]


def resolve_react_percentile(
    method: str, settings: Mapping[str, Any], react_selection: pd.DataFrame | None = None
) -> dict:
    """``settings`` ({"grid": ..., "fixed": ...}) of ``method`` with ReAct's
    validation-selected percentile put in ``fixed["react_percentile"]`` where the config
    leaves the percentile to ReAct's selection (:func:`opnp.pipeline.config.react_percentile_source`
    is "selected"); ``react_selection`` is ReAct's selection table (its ``percentile``).
    Settings of other methods, or with the percentile fixed or searched, come back as given.
    """
    from opnp.pipeline.config import REACT_SELECTED, react_percentile_source

    grid = dict(settings.get("grid", {}))
    fixed = dict(settings.get("fixed", {}))
    if react_percentile_source(method, {"grid": grid, "fixed": fixed}) != "selected":
        return {"grid": grid, "fixed": fixed}
    if react_selection is None:
        raise ValueError(
            f"method {method!r} uses ReAct's selected percentile (react_percentile "
            f"{fixed.get('react_percentile', REACT_SELECTED)!r}); pass ReAct's selection table"
        )
    react_params = selected_params(react_selection)
    if "percentile" not in react_params:
        raise ValueError(
            f"ReAct's selection has no 'percentile' (params {react_params}); {method!r} "
            "cannot take ReAct's selected percentile"
        )
    fixed["react_percentile"] = react_params["percentile"]
    return {"grid": grid, "fixed": fixed}


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


def select_best(val_results: pd.DataFrame, metric: str = "fpr95") -> dict:
    """The hyperparameters with the best mean validation metric over OOD sets and seeds.

    ``metric="fpr95"`` picks the lowest mean FPR95, ties broken by the highest mean
    AUROC; ``metric="auroc"`` the highest AUROC, ties broken by the lowest FPR95. Remaining
    ties go to the first config in grid order (``expand_grid`` is deterministic).
    """
    if metric not in ("fpr95", "auroc"):
        raise ValueError(f"selection metric must be 'fpr95' or 'auroc', got {metric!r}")
    val = val_results[val_results["split"] == "val"]
    if val.empty:
        raise ValueError("no validation rows to select hyperparameters from")
    order = {p: i for i, p in enumerate(dict.fromkeys(val["params"]))}
    means = val.groupby("params", sort=False)[["fpr95", "auroc"]].mean().reset_index()
    means["order"] = means["params"].map(order)
    if metric == "fpr95":
        means = means.sort_values(["fpr95", "auroc", "order"], ascending=[True, False, True])
    else:
        means = means.sort_values(["auroc", "fpr95", "order"], ascending=[False, True, True])
    return json.loads(means.iloc[0]["params"])


def mark_selected(val_results: pd.DataFrame, metric: str = "fpr95") -> pd.DataFrame:
    """Add a boolean ``selected`` column to validation rows: True for the chosen params."""
    chosen = params_json(select_best(val_results, metric))
    out = val_results.copy()
    out["selected"] = out["params"] == chosen
    return out


def selected_params(selection: pd.DataFrame) -> dict:
    """The chosen params recorded by :func:`mark_selected` in a selection Parquet file."""
    chosen = selection.loc[selection["selected"], "params"].unique()
    if len(chosen) != 1:
        raise ValueError(f"selection table must mark exactly one params value, found {len(chosen)}")
    return json.loads(chosen[0])


def build_detector(
    method: str,
    params: Mapping[str, Any],
    *,
    weight,
    bias,
    train_features,
    train_labels=None,
    sensitivity=None,
    statistic: str = "mean",
    seed: int = 0,
):
    """Create and fit one detector of the registry with the workflow's conventions:
    sensitivity methods get the precomputed (C, D) sensitivity, random methods a seed."""
    from opnp.detectors import create_detector

    kwargs = dict(params)
    if method in SENSITIVITY_METHODS:
        if sensitivity is None:
            raise ValueError(f"method {method!r} needs a parameter sensitivity matrix")
        kwargs["param_sensitivity"] = sensitivity
        kwargs["neuron_statistic"] = statistic
    if method in RANDOM_METHODS:
        kwargs["seed"] = int(seed)
    detector = create_detector(method, weight=weight, bias=bias, **kwargs)
    return detector.fit(train_features, train_labels)


def evaluate_configs(
    method: str,
    configs: list[dict],
    *,
    weight,
    bias,
    train_features,
    train_labels,
    id_features,
    ood_features: Mapping[str, Any],
    split: str,
    sensitivity=None,
    statistic: str = "mean",
    seeds: Iterable[int] = (0,),
    experiment: str = "main",
    variant: str = "",
    keep_scores: bool = False,
    uncertainty: Mapping[str, Any] | None = None,
):
    """Score every config (and seed, for random methods) on ID and each OOD set.

    Returns ``(rows, scores)``: result rows in the schema (with bootstrap intervals when
    ``uncertainty`` settings are given, see :func:`score_rows`), and when ``keep_scores``
    a dict ``(params_json, seed) -> {"ID": scores, <ood name>: scores}``.
    """
    seeds = list(seeds) if method in RANDOM_METHODS else [0]
    rows: list[dict] = []
    kept: dict = {}
    fast = _grid_scores(
        method,
        configs,
        weight,
        bias,
        id_features,
        ood_features,
        sensitivity,
        statistic,
        train_features,
    )
    for params in configs:
        for seed in seeds:
            if fast is not None:
                id_scores, ood_scores = fast(params)
            else:
                detector = build_detector(
                    method,
                    params,
                    weight=weight,
                    bias=bias,
                    train_features=train_features,
                    train_labels=train_labels,
                    sensitivity=sensitivity,
                    statistic=statistic,
                    seed=seed,
                )
                id_scores = detector.score(id_features)
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


def _grid_scores(
    method, configs, weight, bias, id_features, ood_features, sensitivity, statistic, train_features
):
    """Vectorised scorer for pruning grids of the OPNP family (:mod:`opnp.grid`): pruned
    logits = full logits minus the contribution of the pruned entries, updated
    incrementally across nested percentiles. Returns ``params -> (id_scores, ood_scores)``,
    or None for other methods and single configs (the per-config detector path)."""
    if method not in SENSITIVITY_METHODS or len(configs) < 2:
        return None
    from opnp.grid import GridPlan, score_pruning_grid
    from opnp.pruning import feature_percentile
    from opnp.sensitivity import neuron_sensitivity

    temperatures = {float(c.get("temperature", 1.0)) for c in configs}
    react_percentiles = {c.get("react_percentile", 90.0) for c in configs}
    if len(temperatures) > 1 or len(react_percentiles) > 1:
        return None  # the grid varies more than the four percentages
    neurons = neuron_sensitivity(sensitivity, statistic)
    percentages = ("weight_low", "weight_high", "neuron_low", "neuron_high")
    grid_configs = [{k: c[k] for k in percentages if k in c} for c in configs]
    plan = GridPlan(weight, bias, sensitivity, neurons, grid_configs)
    kwargs = {
        "score": "msp" if method == "opnp+msp" else "energy",
        "temperature": temperatures.pop(),
        "react_threshold": (
            feature_percentile(train_features, react_percentiles.pop())
            if method in ("opnp+react", "opp+react")
            else None
        ),
        "plan": plan,
    }
    grid_args = (weight, bias, sensitivity, neurons, grid_configs)
    id_scores = score_pruning_grid(id_features, *grid_args, **kwargs)
    ood_scores = {
        name: score_pruning_grid(f, *grid_args, **kwargs) for name, f in ood_features.items()
    }
    index = {params_json(c): i for i, c in enumerate(configs)}

    def lookup(params):
        i = index[params_json(params)]
        return id_scores[i], {name: scores[i] for name, scores in ood_scores.items()}

    return lookup


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
    rows: list[dict] = []
    all_scores = []
    for params in configs:
        score_batch = make_scorer(params)
        kw = {"batch_size": batch_size, "num_workers": num_workers}
        id_scores = dataset_scores(score_batch, id_dataset, **kw)
        ood_scores = {
            name: dataset_scores(score_batch, ds, **kw) for name, ds in ood_datasets.items()
        }
        rows += score_rows(
            id_scores,
            ood_scores,
            method=method,
            params=params,
            split=split,
            experiment=experiment,
            variant=variant,
            uncertainty=uncertainty,
        )
        all_scores.append({"ID": id_scores, **ood_scores})
    return rows, all_scores


def pruned_accuracy_rows(
    grid: Mapping[str, Iterable[float]],
    *,
    weight,
    bias,
    features,
    labels,
    sensitivity,
    statistic: str = "mean",
) -> list[dict]:
    """Table 3: ID accuracy of the OPNP-pruned FC layer with no pruning and with each
    percentage of ``grid`` on its own (the others at 0)."""
    configs = [{}] + [{name: value} for name, values in grid.items() for value in values]
    rows = []
    for params in configs:
        detector = build_detector(
            "opnp",
            params,
            weight=weight,
            bias=bias,
            train_features=None,
            sensitivity=sensitivity,
            statistic=statistic,
        )
        rows.append(
            {
                "experiment": "table3",
                "method": "opnp",
                "variant": next(iter(params), "none"),
                "params": params_json(params),
                "ood_set": "",
                "split": "test",
                "seed": 0,
                **dict.fromkeys(METRIC_COLUMNS, np.nan),
                "id_accuracy": accuracy(detector.logits(features), labels),
                "n_id": len(labels),
                "n_ood": 0,
            }
        )
    return rows


def calibration_frame(method: str, logits, labels, n_bins: int = 15) -> pd.DataFrame:
    """Reliability curve (per confidence bin) and ECE of softmax(logits) against labels."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    curve = _metrics.reliability_curve(probs, labels, n_bins=n_bins)
    frame = pd.DataFrame(curve)
    frame.insert(0, "method", method)
    frame["ece"] = 100.0 * float(_metrics.expected_calibration_error(probs, labels, n_bins=n_bins))
    return frame


def concat_results(paths: Iterable[str]) -> pd.DataFrame:
    """Concatenate result Parquet files; ``selected`` (validation rows) defaults to False."""
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
    return frame


#: Images per batch of Table 7's per-sample sensitivity pass over all conv weights.
SENSITIVITY_BATCH_SIZE = 32


def fc_opnp_keep_mask(param_sensitivity, params: Mapping[str, Any], statistic: str = "mean"):
    """(C, D) keep-mask of the FC weight for the OPNP setting ``params`` (weight and neuron
    percentages): the weight mask with every pruned neuron's column removed, i.e. the
    layer the main OPNP result scores (f' = (W * M_w)(h * m_n) + b = (W * M_w * m_n) h + b).
    """
    from opnp.pruning import pruning_masks
    from opnp.sensitivity import neuron_sensitivity

    percentages = ("weight_low", "weight_high", "neuron_low", "neuron_high")
    sens = np.asarray(param_sensitivity, dtype=np.float64)
    weight_mask, neuron_mask = pruning_masks(
        sens,
        neuron_sensitivity(sens, statistic),
        **{k: float(params.get(k, 0)) for k in percentages},
    )
    return weight_mask & neuron_mask[None, :]


def layer_ablation(
    model,
    train_dataset,
    id_dataset,
    ood_datasets: Mapping[str, Any],
    *,
    selected: Mapping[str, Any],
    fc_sensitivity,
    statistic: str = "mean",
    train_fraction: float | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    log=None,
    uncertainty: Mapping[str, Any] | None = None,
):
    """Table 7 and Fig. 6: OPNP's weight pruning inside the network, like with like.

    ``selected``: OPNP's validation-selected percentages; every row prunes with them.
    Rows (``variant``), each scored with Energy of the pruned network on ``id_dataset``
    and every OOD set, with the pruned network's ID accuracy (``id_accuracy``):

    - ``fc``: the main OPNP result, the FC layer pruned with the selected weight *and*
      neuron masks from ``fc_sensitivity`` (the full-training-set sensitivity).
    - ``layer1``..``layerK``: the selected ``weight_low`` / ``weight_high`` percent least /
      most sensitive weights of that stage's last convolution only.
    - ``layerwise``: the same percentages in every convolution and the FC layer, with
      each layer's own thresholds; ``global``: one threshold pair over the sensitivities
      of all convolutions and the FC layer pooled (paper appendix B.1).
    - ``none``: the unpruned network (the Energy baseline and its accuracy).

    In-network sensitivities (mean over ``train_dataset`` of |dE/dW|, per-sample autograd)
    use the training subset ``train_dataset`` (``train_fraction`` percent, recorded).
    Returns ``(rows, layer_means)``: result rows (experiment "table7", with bootstrap
    intervals when ``uncertainty`` settings are given) and a DataFrame of
    the mean sensitivity of each stage's last convolution and of the FC layer (Fig. 6).
    """
    import torch

    from opnp.nets.network import (
        conv_and_fc_weights,
        layer_pruning_masks,
        mean_sensitivity,
        module_sensitivity,
        network_logits,
        pruning,
    )
    from opnp.pipeline.runtime import torch_device

    device = torch_device()
    model = model.to(device)
    low = float(selected.get("weight_low", 0))
    high = float(selected.get("weight_high", 0))
    stages = {label: f"{module}.weight" for label, module in model.stage_layers().items()}
    stages["fc"] = "fc.weight"
    every = conv_and_fc_weights(model)
    # Per-sample gradients of every conv weight take batch x (all weights) memory (25M
    # weights for ResNet-50): small batches here, the scoring passes use ``batch_size``.
    loader = torch.utils.data.DataLoader(
        train_dataset,
        batch_size=min(batch_size, SENSITIVITY_BATCH_SIZE),
        shuffle=False,
        num_workers=num_workers,
    )
    names = list(dict.fromkeys([*every, *stages.values()]))
    sensitivities = module_sensitivity(model, loader, names, device=device)
    means = mean_sensitivity(sensitivities)
    layer_means = pd.DataFrame(
        {
            "layer": list(stages),
            "parameter": list(stages.values()),
            "mean_sensitivity": [means[name] for name in stages.values()],
            "n_parameters": [int(sensitivities[name].numel()) for name in stages.values()],
        }
    )
    subset = "training subset" if train_fraction is None else f"{train_fraction:g} % of training"
    in_network = {"weight_low": low, "weight_high": high, "sensitivity": subset}
    variants: dict[str, tuple[dict, dict]] = {"none": ({}, {"parameters": []})}
    for label, name in stages.items():
        if label == "fc":
            continue
        masks = layer_pruning_masks({name: sensitivities[name]}, low, high, "per_layer")
        variants[label] = (masks, {**in_network, "parameters": [name]})
    pooled = {name: sensitivities[name] for name in every}
    for mode, label in (("global", "global"), ("layerwise", "layerwise")):
        masks = layer_pruning_masks(pooled, low, high, mode)
        variants[label] = (masks, {**in_network, "parameters": every})
    fc_keep = torch.from_numpy(fc_opnp_keep_mask(fc_sensitivity, selected, statistic))
    variants["fc"] = (
        {"fc.weight": fc_keep},
        {**dict(selected), "sensitivity": "full training set", "parameters": ["fc.weight"]},
    )

    from opnp.sensitivity import logsumexp

    kw = {"batch_size": batch_size, "num_workers": num_workers, "device": device}
    rows = []
    for variant, (masks, params) in variants.items():
        with pruning(model, masks):
            id_logits, id_labels = network_logits(model, id_dataset, **kw)
            ood_scores = {
                name: logsumexp(network_logits(model, ds, **kw)[0], axis=1)
                for name, ds in ood_datasets.items()
            }
        pruned = sum(int((~m).sum()) for m in masks.values())
        variant_rows = score_rows(
            logsumexp(id_logits, axis=1),
            ood_scores,
            method="opnp",
            params={**params, "n_pruned": pruned},
            split="test",
            experiment="table7",
            variant=variant,
            id_accuracy=accuracy(id_logits, id_labels),
            uncertainty=uncertainty,
        )
        rows += variant_rows
        if log is not None:
            log.info(
                "%s: %d weights pruned, mean FPR95 %.2f, ID accuracy %.2f",
                variant,
                pruned,
                np.mean([r["fpr95"] for r in variant_rows]),
                variant_rows[0]["id_accuracy"],
            )
    return rows, layer_means
