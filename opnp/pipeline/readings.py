"""The readings ablation (issue 25): each of the paper's ambiguous choices
(:data:`opnp.detectors.optimal_pruning.READINGS`) run with every value, each selected on
the validation sets with the main selection's protocol and scored on the test sets.

A reading is named in the config (``ablations.readings.run``) by the keys of
:data:`READING_ABLATIONS`; each is one hyperparameter of one method. For every value
(the default one too: the reference row) the method's configured grid is searched with
that value fixed, each test family gets the setting chosen on its validation groups
(:func:`opnp.pipeline.selection.search_plan` / :func:`~opnp.pipeline.selection.mark_selected`,
the +react percentile from ReAct's selection per group) and is tested with it
(:func:`~opnp.pipeline.selection.settings_for_test_sets`). Rows: ``experiment="readings"``,
``variant="<reading>=<value>"``, with the pruned layer's ID test accuracy.

The readings that act where S is computed (``reduction``, ``sensitivity_features``) get
their own S here, over the same sensitivity set as the main one (the training features
and the unlabeled images of ``sensitivity.unlabeled``); every other row uses the main S.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from opnp._validation import iter_chunks
from opnp.detectors.optimal_pruning import READINGS
from opnp.pipeline.evaluation import FitData, build_detector, evaluate_configs
from opnp.pipeline.results import accuracy
from opnp.pipeline.selection import mark_selected, search_plan, settings_for_test_sets
from opnp.pruning import feature_percentile
from opnp.sensitivity import SensitivityAccumulator

EXPERIMENT = "readings"

#: Reading name of the config -> (the method it is run with, its hyperparameter). TNP's
#: ``statistic`` is renamed: ONP's ``neuron_statistic`` (Table 9) is another choice.
READING_ABLATIONS: dict[str, tuple[str, str]] = {
    "threshold_scope": ("opnp", "threshold_scope"),
    "reduction": ("opnp", "reduction"),
    "neuron_source": ("opnp", "neuron_source"),
    "sensitivity_features": ("opnp+react", "sensitivity_features"),
    "tnp_statistic": ("tnp", "statistic"),
}


def check_readings(names: Iterable[str], methods: Iterable[str], key: str) -> list[str]:
    """``names`` as a list, each a reading of :data:`READING_ABLATIONS` whose method is
    configured (``methods``); ValueError naming ``key`` otherwise."""
    names = list(names)
    methods = set(methods)
    for name in names:
        if name not in READING_ABLATIONS:
            raise ValueError(
                f"config key {key}: {name!r} is not a reading; known: {list(READING_ABLATIONS)}"
            )
        method = READING_ABLATIONS[name][0]
        if method not in methods:
            raise ValueError(
                f"config key {key}: reading {name!r} is run with {method!r}, which is not "
                "under 'methods'; add it or leave the reading out"
            )
    return names


def reading_values(name: str) -> list[str]:
    """The values of reading ``name``, its default (the reference row) first."""
    method, option = READING_ABLATIONS[name]
    reading = READINGS[option]
    return [reading.default, *(v for v in reading.values if v != reading.default)]


def variant_label(name: str, value: str) -> str:
    return f"{name}={value}"


def reading_sensitivity(
    sources: Sequence[Any],
    weight: Any,
    bias: Any,
    *,
    reduction: str = "per_sample",
    clip: float | None = None,
    temperature: float = 1.0,
    chunk_size: int = 4096,
) -> np.ndarray:
    """S (C, D) over the rows of every array of ``sources`` taken as one sample set
    (streamed chunk by chunk, nothing concatenated): one accumulator, so the batch
    reading's |sum| is over the whole set, and ``clip`` applies to every source alike.
    Equals :func:`opnp.sensitivity.parameter_sensitivity` of the stacked rows."""
    if not sources:
        raise ValueError("sources must hold at least one feature array")
    acc = SensitivityAccumulator(weight, bias, temperature, reduction, clip=clip)
    for source in sources:
        for _, chunk in iter_chunks(source, chunk_size, "features", dtype=acc.dtype):
            acc._add(chunk)  # iter_chunks has checked the chunk
    return acc.result()


def _with_reading(settings: Mapping[str, Any], option: str, value: str) -> dict:
    """The method's ``{"grid", "fixed"}`` with ``option`` fixed at ``value`` (a grid over
    it, if the config has one, is dropped: the reading is what varies here)."""
    grid = {k: v for k, v in dict(settings.get("grid", {})).items() if k != option}
    return {"grid": grid, "fixed": {**dict(settings.get("fixed", {})), option: value}}


class _SensitivityCache:
    """S for a method's params: the main S unless the params' reading changes how S is
    computed (batch reduction, clipped features), then computed once per distinct one."""

    def __init__(self, fit: FitData, sources: Sequence[Any], main_reduction: str):
        self.fit = fit
        self.sources = list(sources)
        self.main_reduction = main_reduction
        self._cache: dict[tuple, np.ndarray] = {}

    def __call__(self, params: Mapping[str, Any]) -> np.ndarray:
        reduction = params.get("reduction", self.main_reduction)
        clipped = params.get("sensitivity_features", "unclipped") == "clipped"
        clip = None
        if clipped:
            # The ReAct threshold of the +react detectors: a percentile of all training
            # activations (SensitivityPruning.sensitivity_for).
            clip = float(feature_percentile(self.fit.train_features, params["react_percentile"]))
        temperature = float(params.get("temperature", 1.0))
        if reduction == self.main_reduction and clip is None:
            return self.fit.sensitivity
        key = (reduction, clip, temperature)
        if key not in self._cache:
            self._cache[key] = reading_sensitivity(
                self.sources,
                self.fit.weight,
                self.fit.bias,
                reduction=reduction,
                clip=clip,
                temperature=temperature,
            )
        return self._cache[key]


def readings_rows(
    readings: Iterable[str],
    *,
    settings: Mapping[str, Mapping[str, Any]],
    fit: FitData,
    sensitivity_sources: Sequence[Any],
    main_reduction: str,
    id_val: Any,
    ood_val: Mapping[str, Any],
    id_test: Any,
    id_test_labels: Any,
    ood_test: Mapping[str, Any],
    validation_groups: Mapping[str, Iterable[str]],
    test_groups: Mapping[str, Iterable[str]],
    metric: str = "fpr95",
    react_selection: pd.DataFrame | None = None,
    uncertainty: Mapping[str, Any] | None = None,
    log: Callable[..., None] | None = None,
) -> list[dict]:
    """Validation and test rows of every value of every reading in ``readings``.

    ``settings``: method -> its configured ``{"grid", "fixed"}``; ``fit``: the FC head,
    training features and the main S (of ``main_reduction``, over
    ``sensitivity_sources``: the training features, then any unlabeled images).
    Test rows carry bootstrap intervals (``uncertainty``) and ``id_accuracy``: the ID
    test accuracy of the layer that scores the row (pruned, clipped for +react).
    """
    sensitivity_of = _SensitivityCache(fit, sensitivity_sources, main_reduction)
    val_sets = list(ood_val)
    rows: list[dict] = []
    for name in readings:
        method, option = READING_ABLATIONS[name]
        for value in reading_values(name):
            variant = variant_label(name, value)
            keys = {"experiment": EXPERIMENT, "variant": variant}
            method_settings = _with_reading(settings[method], option, value)
            plan = search_plan(
                method, method_settings, validation_groups, val_sets, react_selection
            )
            frames = []
            for part in plan:
                part_rows = _score_by_sensitivity(
                    method,
                    part.configs,
                    fit,
                    sensitivity_of,
                    id_features=id_val,
                    ood_features={s: ood_val[s] for s in part.val_sets},
                    split="val",
                    **keys,
                )
                rows += part_rows
                frame = mark_selected(pd.DataFrame(part_rows), metric, part.groups)
                frames.append(frame)
            selection = pd.concat(frames, ignore_index=True)
            rows += _test_selected(
                method,
                selection,
                test_groups,
                fit,
                sensitivity_of,
                (id_test, id_test_labels, ood_test),
                keys,
                uncertainty,
                log,
            )
    return rows


def _test_selected(
    method, selection, test_groups, fit, sensitivity_of, test_data, keys, uncertainty, log
) -> list[dict]:
    """Test rows of each setting ``selection`` (the validation rows, selected marked)
    chose, for the test sets it was chosen for, with the ID test accuracy of the layer
    that scores them. ``test_data``: (ID test features, their labels, OOD test sets)."""
    id_test, id_test_labels, ood_test = test_data
    rows: list[dict] = []
    for params, test_sets in settings_for_test_sets(selection, test_groups):
        setting_fit = fit.replace(sensitivity=sensitivity_of(params))
        test_rows, _ = evaluate_configs(
            method,
            [params],
            setting_fit,
            id_features=id_test,
            ood_features={s: ood_test[s] for s in test_sets},
            split="test",
            uncertainty=uncertainty,
            **keys,
        )
        detector = build_detector(method, params, setting_fit)
        id_accuracy = accuracy(detector.logits(id_test), id_test_labels)
        for row in test_rows:
            row["id_accuracy"] = id_accuracy
        rows += test_rows
        if log is not None:
            log(
                "%s %s: %s on %s, mean FPR95 %.2f, ID accuracy %.2f",
                method,
                keys["variant"],
                params,
                test_sets,
                np.mean([r["fpr95"] for r in test_rows]),
                id_accuracy,
            )
    return rows


def _score_by_sensitivity(method, configs, fit, sensitivity_of, **kwargs) -> list[dict]:
    """:func:`evaluate_configs` of ``configs``, those sharing one S together (a grid over
    the ReAct percentile with the clipped S has one S per percentile), in config order."""
    groups: dict[int, tuple[np.ndarray, list[int]]] = {}
    uses_s = fit.sensitivity is not None
    for index, params in enumerate(configs):
        sens = sensitivity_of(params) if uses_s else None
        groups.setdefault(id(sens), (sens, []))[1].append(index)
    found: dict[int, list[dict]] = {}
    for sens, indices in groups.values():
        rows, _ = evaluate_configs(
            method,
            [configs[i] for i in indices],
            fit.replace(sensitivity=sens) if uses_s else fit,
            **kwargs,
        )
        n_sets = len(kwargs["ood_features"])
        for j, i in enumerate(indices):
            found[i] = rows[j * n_sets : (j + 1) * n_sets]
    return [row for i in range(len(configs)) for row in found[i]]
