"""The ablations that are not a method's main evaluation: Table 3 (ID accuracy of the
pruned FC layer), the reliability diagrams of Fig. 4, and Table 7 / Fig. 6 (OPNP's weight
pruning inside the network)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from opnp import metrics as _metrics
from opnp._validation import DEFAULT_CHUNK_ROWS, iter_chunks
from opnp.pipeline.evaluation import FitData, build_detector
from opnp.pipeline.results import METRIC_COLUMNS, accuracy, params_json, score_rows
from opnp.pruning import PERCENTAGE_NAMES
from opnp.scores import logsumexp, softmax


def pruned_accuracy_rows(
    grid: Mapping[str, Iterable[float]],
    fit: FitData,
    *,
    features,
    labels,
) -> list[dict]:
    """Table 3: ID accuracy of the OPNP-pruned FC layer (head and sensitivity of ``fit``)
    with no pruning and with each percentage of ``grid`` on its own (the others at 0)."""
    configs = [{}] + [{name: value} for name, values in grid.items() for value in values]
    rows = []
    for params in configs:
        detector = build_detector("opnp", params, fit)
        rows.append(
            {
                "experiment": "pruned_accuracy",
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
    probs = softmax(np.asarray(logits, dtype=np.float64))
    curve = _metrics.reliability_curve(probs, labels, n_bins=n_bins)
    frame = pd.DataFrame(curve)
    frame.insert(0, "method", method)
    frame["ece"] = 100.0 * float(_metrics.expected_calibration_error(probs, labels, n_bins=n_bins))
    return frame


#: Images per batch of Table 7's per-sample sensitivity pass over all conv weights.
SENSITIVITY_BATCH_SIZE = 32


def fc_opnp_keep_mask(param_sensitivity, params: Mapping[str, Any], statistic: str = "mean"):
    """(C, D) keep-mask of the FC weight for the OPNP setting ``params`` (weight and neuron
    percentages, and the mask readings ``threshold_scope`` / ``neuron_source`` when
    given): the weight mask with every pruned neuron's column removed, i.e. the
    layer the main OPNP result scores (f' = (W * M_w)(h * m_n) + b = (W * M_w * m_n) h + b).
    """
    from opnp.detectors.optimal_pruning import reading_value
    from opnp.pruning import opnp_masks

    sens = np.asarray(param_sensitivity, dtype=np.float64)
    weight_mask, neuron_mask, _ = opnp_masks(
        sens,
        statistic,
        **{k: float(params.get(k, 0)) for k in PERCENTAGE_NAMES},
        threshold_scope=reading_value(params, "threshold_scope"),
        neuron_source=reading_value(params, "neuron_source"),
    )
    return weight_mask & neuron_mask[None, :]


#: Most bytes of decoded images Table 7 keeps in memory across its validation and test
#: sets (each set is run once per pruning setting); sets beyond it are read each time.
IN_MEMORY_BYTES = 2 * 2**30

#: Tolerance (points) of the accuracy-loss comparison: accuracies are 100 * k / n in
#: float64, so a loss of exactly ``max_accuracy_loss`` may come out a rounding step above.
_ACCURACY_TOLERANCE = 1e-9

#: ``params`` keys of Table 7's in-network rows that record how their percentages were
#: selected (read by :func:`opnp.report.captions.layer_ablation_caption`).
VAL_ACCURACY_KEY = "val_id_accuracy"
NONE_ELIGIBLE_KEY = "none_eligible"


def select_layer_setting(
    candidates: Sequence[Mapping[str, Any]],
    *,
    baseline_accuracy: float,
    max_accuracy_loss: float | None,
    metric: str = "fpr95",
) -> dict:
    """Table 7: the validation-selected pruning setting of one in-network row.

    ``candidates``: one mapping per grid setting, in grid order, with ``params`` (the
    percentages), ``val_rows`` (validation result rows of :func:`score_rows`, one per
    validation OOD set) and ``val_id_accuracy`` (percent, the pruned network on the
    validation ID set). A setting is eligible when it loses at most
    ``max_accuracy_loss`` points of validation ID accuracy against the unpruned network
    (``baseline_accuracy``; ``None``: every setting is eligible). Among the eligible ones,
    :func:`opnp.pipeline.selection.select_best` with ``metric`` (the main selection's
    rule: mean over OOD sets, ties by the other metric, then grid order). When none is
    eligible the unpruned setting (every percentage 0) is chosen: a setting that breaks
    the classifier is no OOD detector to compare with.

    Returns ``{"params", "val_id_accuracy", "none_eligible", "eligible"}`` (``eligible``:
    one bool per candidate)."""
    from opnp.pipeline.selection import select_best

    if not candidates:
        raise ValueError("select_layer_setting: no candidate settings")
    if max_accuracy_loss is not None and not float(max_accuracy_loss) >= 0:
        raise ValueError(f"max_accuracy_loss must be >= 0 or None, got {max_accuracy_loss!r}")
    eligible = [
        max_accuracy_loss is None
        or float(baseline_accuracy) - float(c["val_id_accuracy"])
        <= float(max_accuracy_loss) + _ACCURACY_TOLERANCE
        for c in candidates
    ]
    pool = [c for c, ok in zip(candidates, eligible, strict=True) if ok]
    if not pool:
        zero = dict.fromkeys(candidates[0]["params"], 0)
        return {
            "params": zero,
            "val_id_accuracy": float(baseline_accuracy),
            "none_eligible": True,
            "eligible": eligible,
        }
    rows = pd.DataFrame([r for c in pool for r in c["val_rows"]])
    chosen = select_best(rows, metric)
    match = next(c for c in pool if params_json(c["params"]) == params_json(chosen))
    return {
        "params": dict(match["params"]),
        "val_id_accuracy": float(match["val_id_accuracy"]),
        "none_eligible": False,
        "eligible": eligible,
    }


def layer_ablation(
    model,
    train_dataset,
    id_dataset,
    ood_datasets: Mapping[str, Any],
    *,
    selected: Mapping[str, Any],
    fc_sensitivity,
    id_val_dataset,
    ood_val_datasets: Mapping[str, Any],
    grid: Mapping[str, Sequence[float]],
    metric: str = "fpr95",
    max_accuracy_loss: float | None = None,
    statistic: str = "mean",
    train_fraction: float | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    log=None,
    uncertainty: Mapping[str, Any] | None = None,
):
    """Table 7 and Fig. 6: OPNP's weight pruning inside the network, each row with its
    own validation-selected percentages.

    Rows (``variant``), each scored with Energy of the pruned network on ``id_dataset``
    and every OOD set, with the pruned network's ID test accuracy (``id_accuracy``):

    - ``fc``: the main OPNP result, the FC layer pruned with OPNP's validation-selected
      (``selected``) weight *and* neuron masks from ``fc_sensitivity`` (the
      full-training-set sensitivity).
    - ``layer1``..``layerK``: the ``weight_low`` / ``weight_high`` percent least / most
      sensitive weights of that stage's last convolution only.
    - ``layerwise``: those percentages in every convolution and the FC layer, with each
      layer's own thresholds; ``global``: one threshold pair over the sensitivities of
      all convolutions and the FC layer pooled (paper appendix B.1).
    - ``none``: the unpruned network (the Energy baseline and its accuracy).

    The in-network rows do not borrow the FC layer's percentages (what suits the head
    can destroy a convolution): each picks its own ``weight_low`` / ``weight_high`` from
    ``grid`` on the validation sets ``id_val_dataset`` / ``ood_val_datasets`` with the
    main selection's ``metric``, among the settings that lose at most
    ``max_accuracy_loss`` points of validation ID accuracy (:func:`select_layer_setting`;
    none eligible: nothing pruned, ``none_eligible`` true in the row's params). Every
    row's params record ``val_id_accuracy`` (the row's network on the validation ID set).
    What the network passes cost: :class:`_NetworkPasses`.

    In-network sensitivities (mean over ``train_dataset`` of |dE/dW|, per-sample autograd)
    use the training subset ``train_dataset`` (``train_fraction`` percent, recorded).
    Returns ``(rows, layer_means, val_grid)``: result rows (experiment "layers", with
    bootstrap intervals when ``uncertainty`` settings are given), a DataFrame of the mean
    sensitivity of each stage's last convolution and of the FC layer (Fig. 6), and a
    DataFrame of every validated setting per in-network row (mean validation FPR95 /
    AUROC over the OOD sets, validation ID accuracy and its loss, eligible, selected).
    """
    from opnp.pipeline.runtime import torch_device

    settings = _in_network_settings(grid)
    device = torch_device()
    model = model.to(device)
    stages, every, sensitivities, layer_means = _network_sensitivities(
        model, train_dataset, batch_size, num_workers, device
    )
    kw = {"batch_size": batch_size, "num_workers": num_workers, "device": device}
    val_sets, test_sets = (id_val_dataset, ood_val_datasets), (id_dataset, ood_datasets)
    passes = _NetworkPasses(model, kw, val_sets, test_sets, max_accuracy_loss)
    variants, grid_rows = _select_in_network(
        passes,
        _in_network_rows(stages, every, sensitivities),
        settings,
        grid,
        metric,
        "training subset" if train_fraction is None else f"{train_fraction:g} % of training",
        log,
    )
    variants["fc"] = _fc_variant(passes, fc_sensitivity, selected, statistic)
    rows = _test_rows(passes, variants, uncertainty, log)
    return rows, layer_means, pd.DataFrame(grid_rows)


def _in_network_settings(grid: Mapping[str, Sequence[float]]) -> list[dict]:
    """The in-network rows' settings: the grid over ``weight_low`` / ``weight_high``."""
    from opnp.pipeline.selection import expand_grid

    unknown = sorted(set(grid) - {"weight_low", "weight_high"})
    if unknown or not grid:
        raise ValueError(
            f"the in-network grid takes weight_low and weight_high, got keys {sorted(grid)}"
        )
    return expand_grid(grid)


def _network_sensitivities(model, train_dataset, batch_size, num_workers, device):
    """The weight of each stage's last convolution and the FC weight (``stages``), every
    conv weight and the FC weight (``every``), their per-sample autograd sensitivities
    over ``train_dataset`` and the mean sensitivity of each stage's weight (Fig. 6)."""
    import torch

    from opnp.nets.network import conv_and_fc_weights, mean_sensitivity, module_sensitivity

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
    return stages, every, sensitivities, layer_means


def _in_network_rows(stages, every, sensitivities) -> dict[str, tuple[dict, str, list[str]]]:
    """Each in-network row's sensitivities, pruning mode and pruned parameters: one per
    stage's last convolution, then ``global`` and ``layerwise`` over every weight."""
    pooled = {name: sensitivities[name] for name in every}
    in_network: dict[str, tuple[dict, str, list[str]]] = {
        label: ({name: sensitivities[name]}, "per_layer", [name])
        for label, name in stages.items()
        if label != "fc"
    }
    in_network["global"] = (pooled, "global", every)
    in_network["layerwise"] = (pooled, "layerwise", every)
    return in_network


def _fc_variant(passes, fc_sensitivity, selected, statistic) -> tuple[dict, dict]:
    """The ``fc`` row's mask (OPNP's selected weight and neuron masks of the FC layer)
    and params, with its validation ID accuracy."""
    import torch

    from opnp.nets.network import network_logits, pruning

    fc_keep = torch.from_numpy(fc_opnp_keep_mask(fc_sensitivity, selected, statistic))
    with pruning(passes.model, {"fc.weight": fc_keep}):
        fc_val_logits, fc_val_labels = network_logits(passes.model, passes.id_val, **passes.kw)
    return (
        {"fc.weight": fc_keep},
        {
            **dict(selected),
            "sensitivity": "full training set",
            "parameters": ["fc.weight"],
            VAL_ACCURACY_KEY: accuracy(fc_val_logits, fc_val_labels),
        },
    )


class _NetworkPasses:
    """The network pruned with given masks, run over the validation and test sets, and
    the unpruned network's validation result (``baseline``, ``baseline_accuracy``) that
    the in-network settings are judged by.

    Each grid setting costs one network pass over the validation sets per in-network row:
    over the ID set only when it already loses too much accuracy (its OOD metrics are
    then NaN in ``val_grid``), none when it prunes no weight (the unpruned pass). The
    validation and test sets are decoded once into memory (up to
    :data:`IN_MEMORY_BYTES`), since each is run once per setting."""

    def __init__(self, model, kw, val_sets, test_sets, max_accuracy_loss):
        """``val_sets``, ``test_sets``: (ID dataset, {name: OOD dataset}) each."""
        from opnp.nets.network import in_memory

        self.model, self.kw, self.max_accuracy_loss = model, kw, max_accuracy_loss
        (id_val_dataset, ood_val_datasets), (id_dataset, ood_datasets) = val_sets, test_sets
        budget = IN_MEMORY_BYTES
        cached = {}
        for key, ds in (
            ("id_val", id_val_dataset),
            *((("ood_val", name), d) for name, d in ood_val_datasets.items()),
            ("id_test", id_dataset),
            *((("ood_test", name), d) for name, d in ood_datasets.items()),
        ):
            cached[key], used = in_memory(
                ds, budget, batch_size=kw["batch_size"], num_workers=kw["num_workers"]
            )
            budget -= used
        self.id_val = cached["id_val"]
        self.ood_val = {name: cached["ood_val", name] for name in ood_val_datasets}
        self.id_test = cached["id_test"]
        self.ood_test = {name: cached["ood_test", name] for name in ood_datasets}
        self.baseline = self.validate({}, {}, "none", screen=False)
        self.baseline_accuracy = self.baseline["val_id_accuracy"]

    def run(self, masks, id_set, ood_sets, keep_going=None):
        """Logits of the ID set, its accuracy and the OOD sets' Energy scores of the
        network pruned with ``masks``; the OOD sets only if ``keep_going(accuracy)``."""
        from opnp.nets.network import network_logits, pruning

        with pruning(self.model, masks):
            id_logits, id_labels = network_logits(self.model, id_set, **self.kw)
            acc = accuracy(id_logits, id_labels)
            if keep_going is not None and not keep_going(acc):
                return id_logits, acc, None
            ood_scores = {
                name: logsumexp(network_logits(self.model, ds, **self.kw)[0], axis=1)
                for name, ds in ood_sets.items()
            }
        return id_logits, acc, ood_scores

    def eligible(self, acc):
        return (
            self.max_accuracy_loss is None
            or self.baseline_accuracy - acc <= float(self.max_accuracy_loss) + _ACCURACY_TOLERANCE
        )

    def validate(self, masks, params, variant, screen=True):
        # A setting that loses too much ID accuracy cannot be selected: its OOD sets are
        # not run (select_layer_setting decides from val_id_accuracy alone).
        id_logits, acc, ood_scores = self.run(
            masks, self.id_val, self.ood_val, self.eligible if screen else None
        )
        rows = (
            []
            if ood_scores is None
            else score_rows(
                logsumexp(id_logits, axis=1),
                ood_scores,
                method="opnp",
                params=params,
                split="val",
                experiment="layers",
                variant=variant,
                id_accuracy=acc,
            )
        )
        return {"params": params, "val_rows": rows, "val_id_accuracy": acc}


def _select_in_network(passes, in_network, settings, grid, metric, subset, log):
    """Each in-network row's masks and params, its setting selected on validation
    (``variants``, with the unpruned ``none`` first), and every validated setting
    (``grid_rows``)."""
    from opnp.nets.network import layer_pruning_masks

    max_accuracy_loss = passes.max_accuracy_loss
    selected_on = {
        "grid": {k: [float(v) for v in grid[k]] for k in sorted(grid)},
        "selection_metric": metric,
        "max_accuracy_loss": None if max_accuracy_loss is None else float(max_accuracy_loss),
    }
    variants: dict[str, tuple[dict, dict]] = {
        "none": ({}, {"parameters": [], VAL_ACCURACY_KEY: passes.baseline_accuracy})
    }
    grid_rows = []
    for label, (sens, mode, parameters) in in_network.items():
        choice, validated = _select_layer_row(passes, label, sens, mode, settings, grid, metric)
        grid_rows += validated
        low, high = (float(choice["params"].get(k, 0)) for k in ("weight_low", "weight_high"))
        variants[label] = (
            layer_pruning_masks(sens, low, high, mode),
            {
                "weight_low": low,
                "weight_high": high,
                "sensitivity": subset,
                "parameters": parameters,
                **selected_on,
                VAL_ACCURACY_KEY: choice["val_id_accuracy"],
                NONE_ELIGIBLE_KEY: choice["none_eligible"],
            },
        )
        if log is not None:
            log.info(
                "%s: selected weight_low %g, weight_high %g on validation (ID accuracy %.2f, "
                "unpruned %.2f)%s",
                label,
                low,
                high,
                choice["val_id_accuracy"],
                passes.baseline_accuracy,
                "; no setting within the accuracy limit, nothing pruned"
                if choice["none_eligible"]
                else "",
            )
    return variants, grid_rows


def _select_layer_row(passes, label, sens, mode, settings, grid, metric):
    """One in-network row: every grid setting validated, the selection
    (:func:`select_layer_setting`) and the row's ``val_grid`` rows."""
    from opnp.nets.network import layer_pruning_masks

    baseline, baseline_accuracy = passes.baseline, passes.baseline_accuracy
    candidates = []
    for setting in settings:
        low, high = (float(setting.get(k, 0)) for k in ("weight_low", "weight_high"))
        masks = layer_pruning_masks(sens, low, high, mode)
        pruned = sum(int((~m).sum()) for m in masks.values())
        # A setting that prunes nothing is the unpruned network: no second pass.
        found = (
            {**baseline, "params": setting, "val_rows": _relabel(baseline, setting, label)}
            if pruned == 0
            else passes.validate(masks, setting, label)
        )
        candidates.append({**found, "n_pruned": pruned})
    choice = select_layer_setting(
        candidates,
        baseline_accuracy=baseline_accuracy,
        max_accuracy_loss=passes.max_accuracy_loss,
        metric=metric,
    )
    grid_rows = []
    for candidate, ok in zip(candidates, choice["eligible"], strict=True):
        # no OOD rows: screened out by its ID accuracy, the metrics were not computed
        val = pd.DataFrame(candidate["val_rows"], columns=["fpr95", "auroc"])
        grid_rows.append(
            {
                "variant": label,
                **{k: float(candidate["params"].get(k, 0)) for k in grid},
                "n_pruned": candidate["n_pruned"],
                "fpr95": float(val["fpr95"].mean()) if len(val) else np.nan,
                "auroc": float(val["auroc"].mean()) if len(val) else np.nan,
                VAL_ACCURACY_KEY: candidate["val_id_accuracy"],
                "accuracy_loss": baseline_accuracy - candidate["val_id_accuracy"],
                "eligible": bool(ok),
                "selected": not choice["none_eligible"]
                and params_json(candidate["params"]) == params_json(choice["params"]),
            }
        )
    return choice, grid_rows


def _test_rows(passes, variants, uncertainty, log):
    """Test result rows of every variant (its network pruned with its masks)."""
    rows = []
    unpruned = None
    for variant, (masks, params) in variants.items():
        pruned = sum(int((~m).sum()) for m in masks.values())
        # rows that prune nothing (an in-network row whose selection kept every weight)
        # score the unpruned network: one test pass for all of them
        if pruned or unpruned is None:
            id_logits, id_accuracy, ood_scores = passes.run(masks, passes.id_test, passes.ood_test)
            if not pruned:
                unpruned = id_logits, id_accuracy, ood_scores
        else:
            id_logits, id_accuracy, ood_scores = unpruned
        variant_rows = score_rows(
            logsumexp(id_logits, axis=1),
            ood_scores,
            method="opnp",
            params={**params, "n_pruned": pruned},
            split="test",
            experiment="layers",
            variant=variant,
            id_accuracy=id_accuracy,
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
    return rows


def _relabel(found: Mapping[str, Any], params: Mapping[str, Any], variant: str) -> list[dict]:
    """``found``'s validation rows under another setting's params and variant."""
    return [{**row, "params": params_json(params), "variant": variant} for row in found["val_rows"]]


def predicted_class_counts(logits: Sequence[Any], rows: Any, num_classes: int) -> np.ndarray:
    """(C,) int64: how many of the chosen ``rows`` of the stacked ``logits`` arrays (the
    sensitivity set: training features, then unlabeled images) are predicted (argmax) as
    each class."""
    counts = np.zeros(num_classes, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    start = 0
    for block in logits:
        own = rows[(rows >= start) & (rows < start + len(block))] - start
        if len(own):
            # chunk by chunk: all 1.28M ImageNet rows at once would copy 5 GB of logits
            # (iter_chunks also drops a memory map's pages after each chunk)
            for _, chunk in iter_chunks(block, DEFAULT_CHUNK_ROWS, "logits", rows=own):
                counts += np.bincount(np.argmax(chunk, axis=1), minlength=num_classes)
        start += len(block)
    return counts


def sensitivity_coverage(
    class_counts: Any, test_labels: Any, param_sensitivity: Any, top_percent: float = 1.0
) -> dict[str, float]:
    """How well the sensitivity set covers the tested classes (percent):
    ``test_images_covered``: ID test images whose class some sensitivity image is
    predicted as; ``test_classes_covered``: the same over the distinct test classes;
    ``top_weights_in_test_rows``: of the ``top_percent`` % most sensitive weights (what
    ``weight_high`` = ``top_percent`` prunes), the share in the test classes' rows, and
    ``test_rows_share``: those rows' share of all rows (the value without any bias)."""
    counts = np.asarray(class_counts)
    labels = np.asarray(test_labels, dtype=np.int64)
    sens = np.asarray(param_sensitivity)
    covered = counts[labels] > 0
    classes = np.unique(labels)
    k = max(1, int(round(sens.size * top_percent / 100)))
    top_rows = np.argpartition(sens.ravel(), sens.size - k)[sens.size - k :] // sens.shape[1]
    return {
        "test_images_covered": 100.0 * float(covered.mean()),
        "test_classes_covered": 100.0 * float((counts[classes] > 0).mean()),
        "top_weights_in_test_rows": 100.0 * float(np.isin(top_rows, classes).mean()),
        "test_rows_share": 100.0 * len(classes) / sens.shape[0],
        "sensitivity_classes_predicted": int((counts > 0).sum()),
    }
