"""The ablations that are not a method's main evaluation: Table 3 (ID accuracy of the
pruned FC layer), the reliability diagrams of Fig. 4, and Table 7 / Fig. 6 (OPNP's weight
pruning inside the network)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from opnp import metrics as _metrics
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
    Returns ``(rows, layer_means)``: result rows (experiment "layers", with bootstrap
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
            experiment="layers",
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
            predicted = np.argmax(np.asarray(block)[own], axis=1)
            counts += np.bincount(predicted, minlength=num_classes)
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
