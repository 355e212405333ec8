"""The experiment catalogue: every table and figure of the paper the workflow produces,
in one place.

An experiment has one ``name``, used everywhere: its ``ablations.<name>`` config key
(where it has one), its Snakemake rule, its result file
``results/<benchmark>/ablations/<model>/<name>.parquet`` and the ``experiment`` column of
its result rows. The paper's id (``Table 3``, ``Fig. 4``) is its label and the prefix of
its table / figure files (``table3_pruned_accuracy_<model>.md``). Whether it runs is
decided by :func:`experiment_status` alone, and an experiment that is switched off or
cannot run with the configured methods is reported with the reason
(:func:`skipped_experiments`), never dropped silently.

Table captions are templates here (``{model}``); the numbers a caption states (n, seeds,
the bold rule) are appended by the report layer from the rows shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Methods of the with/without-OPNP tables (paper Tables 5 and 6), in row order.
WITH_WITHOUT_METHODS = ("msp", "opnp+msp", "energy", "opnp", "react", "opnp+react")
#: Methods of the pruning-method ablation (paper Table 4), in row order.
PRUNING_METHODS = ("rpp", "tpp", "opp", "rnp", "tnp", "onp")


@dataclass(frozen=True)
class Experiment:
    """One experiment of the paper (see the module docstring)."""

    name: str
    #: the paper's id; None where it depends on the config (``paper_key``) or is absent
    paper: str | None
    title: str
    #: methods that must be configured for it to run
    methods: tuple[str, ...] = ()
    #: it runs only when ``ablations.<name>`` is in the config (for ``layers``: and
    #: ``enabled`` is true)
    switched: bool = False
    #: it writes ``ablations/<model>/<name>.parquet`` (rows with experiment = name)
    result: bool = False
    #: descriptive part of its table / figure file names (default: its name)
    stem: str = ""
    #: it renders a table (one per model)
    table: bool = False
    #: its figure's paper id (one figure per model), if any
    figure: str | None = None
    #: descriptive part of the figure's file name when it differs from ``stem``
    figure_name: str = ""
    caption: str = ""
    #: where the paper id comes from when the config chooses it (e.g. Table 5 or 6)
    paper_key: tuple[str, ...] = field(default_factory=tuple)

    @property
    def file_stem(self) -> str:
        return self.stem or self.name


CATALOGUE: tuple[Experiment, ...] = (
    Experiment(
        "main",
        None,
        "main results: every method at its validation-selected setting",
        stem="main_results",
        table=True,
        paper_key=("models", "<model>", "main_table"),
        caption="Main results ({model}): FPR95 (lower is better) and AUROC (higher is "
        "better) per OOD set; hyperparameters chosen on the validation split.",
    ),
    Experiment(
        "selected",
        None,
        "hyperparameters chosen on the validation split",
        stem="selected_hyperparameters",
        table=True,
        caption="Hyperparameters chosen on the validation split ({model}), with their mean "
        "validation FPR95/AUROC.",
    ),
    Experiment(
        "protocols",
        None,
        "test results of the same methods under both selection protocols",
        stem="selection_protocols",
        table=True,
        caption="Selection protocols ({model}): each method of selection.compare_protocols "
        "tested with the setting chosen on the validation sets of the other OOD families "
        "(held-out family, the main tables' protocol) and with the one chosen on every "
        "validation set, the test family's own included (every family).",
    ),
    Experiment(
        "with_without",
        None,
        "MSP, Energy and ReAct with and without OPNP",
        methods=WITH_WITHOUT_METHODS,
        stem="with_without_opnp",
        table=True,
        paper_key=("report", "with_without_table"),
        caption="Post-hoc scores with and without OPNP ({model}), cells FPR95/AUROC "
        "(paper Tables 5/6).",
    ),
    Experiment(
        "pruned_accuracy",
        "Table 3",
        "ID accuracy of the OPNP-pruned FC layer",
        switched=True,
        result=True,
        table=True,
        caption="ID accuracy of the OPNP-pruned FC layer for single pruning percentages "
        "({model}, paper Table 3).",
    ),
    Experiment(
        "pruning_methods",
        "Table 4",
        "random, magnitude and sensitivity-guided pruning",
        methods=PRUNING_METHODS,
        table=True,
        caption="Random (RPP/RNP), magnitude (TPP/TNP) and sensitivity-guided (OPP/ONP) "
        "pruning, each at its validation-selected percentage; FPR95 ({model}, paper "
        "Table 4).",
    ),
    Experiment(
        "layers",
        "Table 7",
        "OPNP's weight pruning inside the network (and Fig. 6's layer sensitivities)",
        methods=("opnp",),
        switched=True,
        result=True,
        table=True,
        figure="Fig. 6",
        figure_name="layer_sensitivity",
    ),
    Experiment(
        "subsets",
        "Table 8",
        "OPP with sensitivities from 1-100 % of the training set",
        methods=("opp", "energy"),
        result=True,
        table=True,
        caption="OPP with sensitivities estimated on 1-100 % of the training set ({model}, "
        "paper Table 8), cells FPR95/AUROC, mean ± std over subset seeds.",
    ),
    Experiment(
        "statistics",
        "Table 9",
        "ONP with each neuron statistic",
        methods=("onp",),
        switched=True,
        result=True,
        table=True,
        caption="ONP with different neuron statistics ({model}, paper Table 9), cells FPR95/AUROC.",
    ),
    Experiment(
        "readings",
        None,
        "readings of the paper's ambiguous choices",
        switched=True,
        result=True,
        table=True,
        # not a paper figure: its id is the experiment's own name
        figure="readings",
        figure_name="average_fpr95",
        caption="Readings of the paper's ambiguous choices ({model}): each value of each "
        "reading selected like the main results (each family of test OOD sets tested with "
        "the setting chosen on the validation sets of the other families), the first value "
        "of each reading being the default (the reference row); Energy and ReAct from the "
        "main results for reference. ID acc.: ID test accuracy of the layer that scores "
        "the row (pruned, clipped for +ReAct; the unpruned layer for Energy and ReAct), the "
        "mean over the test families' settings where they differ. Judge differences by the "
        "paired intervals (the bold rule), not by the means.",
    ),
    Experiment(
        "sweep",
        "Fig. 3",
        "OPNP's metrics against each pruning percentage",
        switched=True,
        result=True,
        stem="percentage_sweep",
        figure="Fig. 3",
    ),
    Experiment(
        "calibration",
        "Fig. 4",
        "reliability diagrams of the original and the OPNP-pruned FC layer",
        methods=("opnp",),
        result=True,
        stem="reliability",
        figure="Fig. 4",
    ),
    Experiment(
        "pruning_before_after",
        "Fig. 2",
        "sensitivity distributions before and after OPNP's pruning",
        methods=("opnp",),
        figure="Fig. 2",
    ),
    Experiment(
        "score_distributions",
        "Fig. 5",
        "Energy and OPNP score distributions of ID and OOD",
        methods=("opnp",),
        figure="Fig. 5",
    ),
    Experiment(
        "pruned_weight_sensitivity",
        "Fig. 9",
        "sensitivities of the weights OPNP prunes on the low side",
        methods=("opnp",),
        figure="Fig. 9",
    ),
)

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in CATALOGUE}


def experiment(name: str) -> Experiment:
    """The catalogue entry ``name`` (ValueError listing the names if unknown)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def experiment_status(config: Mapping[str, Any], name: str) -> tuple[bool, str]:
    """``(runs, reason)`` of experiment ``name`` under ``config``: the one rule that
    switches experiments on. ``reason`` says why it does not run ("" when it runs)."""
    exp = experiment(name)
    ablations = config.get("ablations", {}) or {}
    if exp.switched:
        if exp.name not in ablations:
            return False, f"switched off (no ablations.{exp.name} in the config)"
        if exp.name == "layers" and not ablations["layers"].get("enabled", False):
            return False, "switched off (ablations.layers.enabled is false)"
    if exp.name == "protocols":
        selection = config.get("selection", {}) or {}
        if not selection.get("compare_protocols"):
            return False, "switched off (no selection.compare_protocols in the config)"
        if selection.get("validation", "held_out_family") != "held_out_family":
            return False, "switched off (selection.validation is not held_out_family)"
    missing = [m for m in exp.methods if m not in config["methods"]]
    if missing:
        return False, f"needs methods {missing}, which are not under 'methods'"
    return True, ""


def active_experiments(config: Mapping[str, Any]) -> list[Experiment]:
    """The experiments that run under ``config``, in catalogue order."""
    return [e for e in CATALOGUE if experiment_status(config, e.name)[0]]


def skipped_experiments(config: Mapping[str, Any]) -> dict[str, str]:
    """``label -> reason`` of every experiment that does not run under ``config``."""
    out = {}
    for exp in CATALOGUE:
        runs, reason = experiment_status(config, exp.name)
        if not runs:
            out[label(exp, config)] = reason
    return out


def paper_id(exp: Experiment, config: Mapping[str, Any], model: str | None = None) -> str:
    """The paper id of ``exp`` under ``config`` as a file prefix (``table3``, ``fig4``),
    "" when it has none; ``model`` is the configured model for ids chosen per model."""
    if exp.paper_key:
        value: Any = config
        for key in exp.paper_key:
            value = value[model if key == "<model>" else key]
        return str(value)
    text = exp.paper if exp.table or not exp.figure else exp.figure
    return "" if text is None else _file_prefix(text)


def label(exp: Experiment, config: Mapping[str, Any] | None = None) -> str:
    """``"Table 3 (pruned_accuracy)"``: how messages name an experiment."""
    paper = exp.paper or exp.figure
    per_model = "<model>" in exp.paper_key  # no single id without a model
    if paper is None and exp.paper_key and config is not None and not per_model:
        paper = paper_id(exp, config)
    return f"{paper} ({exp.name})" if paper and paper != exp.name else exp.name


def table_stem(exp: Experiment, config: Mapping[str, Any], model: str, base: str) -> str:
    """File stem of ``exp``'s table for unit ``model`` of configured model ``base``."""
    prefix = paper_id(exp, config, base)
    return f"{prefix}_{exp.file_stem}_{model}" if prefix else f"{exp.file_stem}_{model}"


def figure_stem(exp: Experiment, model: str) -> str:
    """File stem of ``exp``'s figure for ``model`` (``fig3_percentage_sweep_<model>``)."""
    assert exp.figure is not None, exp.name
    return f"{_file_prefix(exp.figure)}_{exp.figure_name or exp.file_stem}_{model}"


def _file_prefix(paper: str) -> str:
    """``"Table 3"`` -> ``"table3"``, ``"Fig. 6"`` -> ``"fig6"``."""
    return paper.lower().replace("fig. ", "fig").replace("table ", "table")
