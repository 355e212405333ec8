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

An entry names everything that makes its outputs, so the workflow can check them before
any job runs (:func:`catalogue_gaps`, called when the workflow is parsed): its table
``layout`` (a key of ``opnp.report.paper_tables.TABLE_LAYOUTS``), its ``figures`` (file
stems and the plot function of each) and, for an ablation on cached features without a
rule of its own, its ``compute`` function (run by the workflow's generic
``feature_ablation`` rule, see :class:`AblationJob`).

Table captions are templates here (``{model}``); the numbers a caption states (n, seeds,
the bold rule) are appended by the report layer from the rows shown.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Methods of the with/without-OPNP tables (paper Tables 5 and 6), in row order.
WITH_WITHOUT_METHODS = ("msp", "opnp+msp", "energy", "opnp", "react", "opnp+react")
#: Methods of the pruning-method ablation (paper Table 4), in row order.
PRUNING_METHODS = ("rpp", "tpp", "opp", "rnp", "tnp", "onp")


@dataclass(frozen=True)
class Figure:
    """One figure of an experiment. Its file stem is ``<id>_<name>_<model>`` (``<id>_<name>``
    for a figure of all models), ``<id>`` being ``paper`` as a file prefix (``fig4``), else
    the experiment's paper id, else the experiment's name."""

    #: the paper's id (``Fig. 4``); None: the experiment's (from the config for Figs. 1/7/8)
    paper: str | None
    #: descriptive part of the file name
    name: str
    #: the function that draws it, ``module.function`` (checked at parse time)
    plot: str
    #: one figure per model; False: one figure of every model's first unit
    per_model: bool = True


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
    #: descriptive part of its table file names (default: its name)
    stem: str = ""
    #: its table layout (one table per model): a key of
    #: ``opnp.report.paper_tables.TABLE_LAYOUTS``; None: no table
    layout: str | None = None
    #: its figures
    figures: tuple[Figure, ...] = ()
    #: its table is built from main test rows only, so a pooled (replicated) table takes
    #: its bold rule's draws from the cluster bootstrap (rule ``pooled_intervals``)
    pooled_draws: bool = False
    #: ``module.function`` computing its result rows from cached features in the generic
    #: ``feature_ablation`` rule (:class:`AblationJob`); "": it has a rule of its own
    compute: str = ""
    caption: str = ""
    #: where the paper id comes from when the config chooses it (e.g. Table 5 or 6)
    paper_key: tuple[str, ...] = field(default_factory=tuple)

    @property
    def file_stem(self) -> str:
        return self.stem or self.name


@dataclass(frozen=True)
class AblationJob:
    """What the generic ``feature_ablation`` rule hands an experiment's ``compute``
    function, which returns the result rows (dicts as for
    ``opnp.pipeline.results.results_frame``, ``experiment`` = ``experiment``).

    ``inputs`` is an ``opnp.pipeline.artifacts.JobInputs`` of ``fc``, ``sensitivity``
    (the full training set's), ``train``, ``id_val``, ``ood_val``, ``id_test``,
    ``ood_test`` and ``selections`` (the validation selection file of each of the
    experiment's ``methods``, in that order)."""

    experiment: str
    inputs: Any
    #: the experiment's config block, ``ablations.<name>`` ({} when absent)
    settings: Mapping[str, Any]
    #: ``sensitivity.statistic`` of the config
    statistic: str
    #: ``selection.metric`` of the config
    metric: str
    #: ``uncertainty`` of the config: the bootstrap settings of test rows
    uncertainty: Mapping[str, Any]


CATALOGUE: tuple[Experiment, ...] = (
    Experiment(
        "main",
        None,
        "main results: every method at its validation-selected setting",
        stem="main_results",
        layout="main",
        pooled_draws=True,
        paper_key=("models", "<model>", "main_table"),
        caption="Main results ({model}): FPR95 (lower is better) and AUROC (higher is "
        "better) per OOD set; hyperparameters chosen on the validation split.",
    ),
    Experiment(
        "selected",
        None,
        "hyperparameters chosen on the validation split",
        stem="selected_hyperparameters",
        layout="selected",
        caption="Hyperparameters chosen on the validation split ({model}), with their mean "
        "validation FPR95/AUROC.",
    ),
    Experiment(
        "protocols",
        None,
        "test results of the same methods under both selection protocols",
        stem="selection_protocols",
        layout="protocols",
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
        layout="with_without",
        pooled_draws=True,
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
        layout="pruned_accuracy",
        caption="ID accuracy of the OPNP-pruned FC layer for single pruning percentages "
        "({model}, paper Table 3).",
    ),
    Experiment(
        "pruning_methods",
        "Table 4",
        "random, magnitude and sensitivity-guided pruning",
        methods=PRUNING_METHODS,
        layout="pruning_methods",
        pooled_draws=True,
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
        layout="layers",
        figures=(
            Figure(
                "Fig. 6",
                "layer_sensitivity",
                "opnp.report.figure_sensitivity.plot_layer_sensitivity",
            ),
        ),
    ),
    Experiment(
        "subsets",
        "Table 8",
        "OPP with sensitivities from 1-100 % of the training set",
        methods=("opp", "energy"),
        result=True,
        layout="subsets",
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
        layout="statistics",
        caption="ONP with different neuron statistics ({model}, paper Table 9), cells FPR95/AUROC.",
    ),
    Experiment(
        "readings",
        None,
        "readings of the paper's ambiguous choices",
        switched=True,
        result=True,
        layout="readings",
        # not a paper figure: its file prefix is the experiment's own name
        figures=(Figure(None, "average_fpr95", "opnp.report.figure_readings.plot_readings"),),
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
        figures=(
            Figure(None, "percentage_sweep", "opnp.report.figure_pruning.plot_percentage_sweep"),
        ),
    ),
    Experiment(
        "calibration",
        "Fig. 4",
        "reliability diagrams of the original and the OPNP-pruned FC layer",
        methods=("opnp",),
        result=True,
        figures=(Figure(None, "reliability", "opnp.report.figure_results.plot_reliability"),),
    ),
    Experiment(
        "sensitivity_distribution",
        None,
        "FC-layer parameter and neuron sensitivity distributions of every model",
        # one figure of all models; the paper shows it for ImageNet (Fig. 1), CIFAR-10
        # (Fig. 7) and CIFAR-100 (Fig. 8), so the config says which one a run reproduces
        figures=(
            Figure(
                None,
                "sensitivity_distribution",
                "opnp.report.figure_sensitivity.plot_sensitivity_distribution",
                per_model=False,
            ),
        ),
        paper_key=("report", "sensitivity_figure"),
    ),
    Experiment(
        "pruning_before_after",
        "Fig. 2",
        "sensitivity distributions before and after OPNP's pruning",
        methods=("opnp",),
        figures=(
            Figure(
                None, "pruning_before_after", "opnp.report.figure_pruning.plot_pruning_before_after"
            ),
        ),
    ),
    Experiment(
        "score_distributions",
        "Fig. 5",
        "Energy and OPNP score distributions of ID and OOD",
        methods=("opnp",),
        figures=(
            Figure(
                None, "score_distributions", "opnp.report.figure_results.plot_score_distributions"
            ),
        ),
    ),
    Experiment(
        "pruned_weight_sensitivity",
        "Fig. 9",
        "sensitivities of the weights OPNP prunes on the low side",
        methods=("opnp",),
        figures=(
            Figure(
                None,
                "pruned_weight_sensitivity",
                "opnp.report.figure_sensitivity.plot_pruned_weight_sensitivity",
            ),
        ),
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
    return "" if exp.paper is None else _file_prefix(exp.paper)


def label(exp: Experiment, config: Mapping[str, Any] | None = None) -> str:
    """``"Table 3 (pruned_accuracy)"``: how messages name an experiment."""
    paper = exp.paper or next((f.paper for f in exp.figures if f.paper), None)
    per_model = "<model>" in exp.paper_key  # no single id without a model
    if paper is None and exp.paper_key and config is not None and not per_model:
        paper = paper_id(exp, config)
    return f"{paper} ({exp.name})" if paper and paper != exp.name else exp.name


def table_stem(exp: Experiment, config: Mapping[str, Any], model: str, base: str) -> str:
    """File stem of ``exp``'s table for unit ``model`` of configured model ``base``."""
    prefix = paper_id(exp, config, base)
    return f"{prefix}_{exp.file_stem}_{model}" if prefix else f"{exp.file_stem}_{model}"


def figure_id(exp: Experiment, figure: Figure, config: Mapping[str, Any]) -> str:
    """The file prefix of ``figure`` of ``exp`` (``fig4``; see :class:`Figure`)."""
    if figure.paper is not None:
        return _file_prefix(figure.paper)
    return paper_id(exp, config) or exp.name


def figure_stem(
    exp: Experiment, figure: Figure, config: Mapping[str, Any], model: str | None = None
) -> str:
    """File stem of ``figure`` of ``exp``: ``fig3_percentage_sweep_<model>``, without the
    model for a figure of all models (``fig1_sensitivity_distribution``)."""
    stem = f"{figure_id(exp, figure, config)}_{figure.name}"
    if figure.per_model:
        assert model is not None, f"{exp.name}: a figure per model needs the model"
        return f"{stem}_{model}"
    return stem


def function_at(path: str) -> Callable[..., Any]:
    """The function ``module.function`` (ImportError / AttributeError when absent)."""
    module, _, name = path.rpartition(".")
    function = getattr(importlib.import_module(module), name)
    if not callable(function):
        raise TypeError(f"{path} is not a function")
    return function


def catalogue_gaps(experiments: Iterable[Experiment], layouts: Container[str]) -> list[str]:
    """One message per thing an entry of ``experiments`` names that does not exist: a
    table layout not in ``layouts``, a plot or compute function that does not import.
    The workflow calls it on the active experiments when it is parsed, so a dry run,
    not a late job, names the gap."""
    gaps = []
    for exp in experiments:
        if exp.layout is not None and exp.layout not in layouts:
            gaps.append(
                f"{exp.name}: table layout {exp.layout!r} is not registered "
                "(opnp.report.paper_tables.TABLE_LAYOUTS, the @table_layout decorator)"
            )
        named = [("plot", f.plot) for f in exp.figures]
        named += [("compute", exp.compute)] if exp.compute else []
        for kind, path in named:
            try:
                function_at(path)
            except (ImportError, AttributeError, TypeError, ValueError) as error:
                gaps.append(f"{exp.name}: {kind} function {path!r} not found ({error})")
    return gaps


def _file_prefix(paper: str) -> str:
    """``"Table 3"`` -> ``"table3"``, ``"Fig. 6"`` -> ``"fig6"``."""
    return paper.lower().replace("fig. ", "fig").replace("table ", "table")
