import json
import os
import re
import sys

from snakemake.utils import min_version, validate

min_version("9.0")


# Scripts import the package from this checkout, also inside conda envs and on
# cluster nodes (jobs inherit the environment).
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        p for p in (workflow.basedir, os.environ.get("PYTHONPATH")) if p
    )
)

sys.path.insert(0, workflow.basedir)
from opnp.pipeline.config import (  # noqa: E402 - needs the path above
    check_config,
    replicate_parts,
    selection_groups,
    synthetic_models,
)
from opnp.data import source_fingerprint  # noqa: E402
from opnp.detectors import detector_class  # noqa: E402
from opnp.io import config_hash  # noqa: E402
from opnp.pipeline.experiments import (  # noqa: E402
    EXPERIMENTS,
    active_experiments,
    catalogue_gaps,
    figure_id,
    figure_stem,
    skipped_experiments,
    table_stem,
)
from opnp.report.paper_tables import TABLE_LAYOUTS  # noqa: E402
from opnp.pipeline.readings import READING_ABLATIONS  # noqa: E402
from opnp.pipeline.replicates import replicate_unit, resolve_split  # noqa: E402
from opnp.pipeline.selection import react_percentile_source  # noqa: E402

validate(config, schema="../schemas/config.schema.yaml")


check_config(config)


def canonical(obj):
    """``obj`` with every dict's keys sorted: params compare by their text, so the order
    of keys in a config file must not make Snakemake re-run a job."""
    if isinstance(obj, dict):
        return {k: canonical(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    return obj


BENCHMARK = config["benchmark"]
RESULTS = f"results/{BENCHMARK}"
RESOURCES = f"resources/{BENCHMARK}"
LOGS = f"logs/{BENCHMARK}"
BENCHMARKS = f"benchmarks/{BENCHMARK}"

BASE_MODELS = list(config["models"])
# Synthetic models (arch: synthetic, opnp.synthetic) generate their features: no network
# job runs for them; the network models run extraction on images.
SYNTHETIC_MODELS = synthetic_models(config)
NETWORK_MODELS = [m for m in BASE_MODELS if m not in SYNTHETIC_MODELS]
SYNTHETIC_SCALE = config["synthetic"]["scale"]
# Replicated benchmarks (config `replicates`): every model is evaluated once per seed, as
# a unit. vary: split - the unit <model>-split<seed> uses that seed's parts of the pooled
# datasets, rows of the pools' one extraction per model. vary: training - the unit
# <model>-seed<seed> is the model trained with that seed: its own model file and
# extractions. Without replicates a unit is a model.
REPLICATE_SEEDS = list(config.get("replicates", {}).get("seeds", []))
REPLICATES_VARY = config.get("replicates", {}).get("vary", "split")
SPLIT_PARTS = replicate_parts(config)


def split_spec(part, seed):
    """The config of the pool that ``part`` is cut from, resolved for replicate
    ``seed`` (resolve_split: the fold a `by: fold` replicate tests on)."""
    pool = SPLIT_PARTS[part]["pool"]
    return resolve_split(config["replicates"]["pools"][pool], REPLICATE_SEEDS, seed)


UNITS = {
    replicate_unit(m, seed, REPLICATES_VARY): (m, seed)
    for m in BASE_MODELS
    for seed in REPLICATE_SEEDS
}
MODELS = list(UNITS) if UNITS else BASE_MODELS
# Units that run the network themselves (own weights): the trained replicates, or the
# configured models; split replicates take rows of their model's extraction.
TRAINED_UNITS = REPLICATES_VARY == "training" and bool(UNITS)
NETWORK_UNITS = list(UNITS) if TRAINED_UNITS else NETWORK_MODELS
SPLIT_UNITS = [] if TRAINED_UNITS else list(UNITS)
METHODS = list(config["methods"])
SEEDS = list(config["seeds"])
ID_TRAIN = config["id"]["train"]
ID_VAL = config["id"]["val"]
ID_TEST = config["id"]["test"]
OOD_TEST = list(config["ood"]["test"])
OOD_VAL = list(config["ood"]["val"])
FRACTIONS = list(config["sensitivity"]["fractions"])
# Unlabeled images that join the training features in every sensitivity estimate.
SENSITIVITY_UNLABELED = list(config["sensitivity"]["unlabeled"])
ABLATIONS = canonical(config.get("ablations", {}))
# Bootstrap settings of the test rows' intervals and of the tables' bold rule.
UNCERTAINTY = canonical(config["uncertainty"])
# Threads of each compute job; torch and BLAS follow it (no oversubscription).
THREADS_PER_JOB = config["resources"]["threads_per_job"]
# GPUs requested by jobs that run the network (extraction, training, network-level
# methods such as ODIN, Table 7):
# 0 on CPU machines; 1 on a GPU cluster so SLURM schedules them on GPU nodes.
GPUS_PER_NETWORK_JOB = config["resources"]["gpus_per_network_job"]
# Under a cluster executor, the CPU steps on cached arrays run in the Snakemake process
# itself (`localrule:`) when the config says a cluster job would cost more than the
# work; the network jobs are always submitted.
LOCAL_CPU_JOBS = config["resources"]["local_cpu_jobs"]

# What the DAG needs to know about a method comes from its detector class: whether it
# runs the network (needs_network, e.g. ODIN: the rules select_network_method and
# evaluate_network_method, on images) and whether it prunes by the OPNP sensitivities
# (its jobs read the cached sensitivity matrix).
NETWORK_METHODS = [m for m in METHODS if detector_class(m).needs_network]
FEATURE_METHODS = [m for m in METHODS if m not in NETWORK_METHODS]
SENSITIVITY_METHODS = {m for m in METHODS if detector_class(m).uses_sensitivity}
# The experiment catalogue (opnp.pipeline.experiments) decides which tables, figures and
# ablations run; the ones that do not are named, with the reason, on every invocation.
ACTIVE_EXPERIMENTS = active_experiments(config)
# What an active experiment's entry names must exist (table layout, plot and compute
# functions): checked here, so the dry run names the gap, not a failing job at the end.
_gaps = catalogue_gaps(ACTIVE_EXPERIMENTS, TABLE_LAYOUTS)
if _gaps:
    raise ValueError(
        "experiment catalogue (opnp.pipeline.experiments): " + "; ".join(_gaps)
    )
# Which validation OOD sets choose each test family's setting (selection.validation).
SELECTION_GROUPS = selection_groups(config)
VALIDATION_GROUPS = {g: sets["val"] for g, sets in SELECTION_GROUPS.items()}
TEST_GROUPS = {g: sets["test"] for g, sets in SELECTION_GROUPS.items()}
# Methods also tested with the setting chosen on every validation set (table
# selection_protocols), when that experiment runs.
COMPARED_PROTOCOL_METHODS = (
    list(config["selection"]["compare_protocols"])
    if any(e.name == "protocols" for e in ACTIVE_EXPERIMENTS)
    else []
)
for _label, _reason in skipped_experiments(config).items():
    print(f"Not produced: {_label}: {_reason}", file=sys.stderr)


def _names_regex(names):
    return "|".join(re.escape(n) for n in names) or "^$"


def image_spec(name):
    """A dataset's config entry without the keys that do not change its images (its OOD
    family): a new family re-runs no dataset or extraction job."""
    return canonical(
        {k: v for k, v in config["datasets"][name].items() if k != "family"}
    )


def download_spec(name):
    """A download lands in resources/downloads/<source name>/ unless the config gives a
    path: shared by the benchmarks, and inside the folders the workflow may write."""
    spec = dict(image_spec(name))
    spec.setdefault("path", f"resources/downloads/{spec['name']}")
    return canonical(spec)


def datasets_by_source(source):
    return [n for n, s in config["datasets"].items() if s["source"] == source]


wildcard_constraints:
    model=_names_regex([*BASE_MODELS, *UNITS]),
    method=_names_regex(METHODS),
    dataset=_names_regex([*config["datasets"], *SPLIT_PARTS]),
    fraction=r"\d+(\.\d+)?",
    seed=r"\d+",


def result_keys(settings):
    """Input function of a results rule's ``params.results``: the benchmark, the job's
    model and the hash of ``settings`` (or of ``settings(wildcards)``), what every result
    row records (opnp.pipeline.artifacts.write_job_results)."""

    def keys(wildcards):
        hashed = settings(wildcards) if callable(settings) else settings
        return {
            "benchmark": BENCHMARK,
            "model": wildcards.model,
            "config_hash": config_hash(hashed),
        }

    return keys


def fraction_label(fraction):
    """1 -> '1', 0.5 -> '0.5': the string used in sensitivity file names."""
    return f"{float(fraction):g}"


def sensitivity_seeds(fraction):
    """A subset of 100 % is the whole set: one seed is enough."""
    return [SEEDS[0]] if float(fraction) >= 100 else SEEDS


# ---------------------------------------------------------------- paths


def dataset_manifest(name, unit=None):
    """The manifest of dataset ``name``; a replicate part's is the one of ``unit``'s split
    seed (without a unit: its whole pool, e.g. for a loaded model's accuracy check)."""
    if name in SPLIT_PARTS:
        if unit is None:
            return f"{RESOURCES}/datasets/{SPLIT_PARTS[name]['pool']}.json"
        return f"{RESOURCES}/datasets/split{UNITS[unit][1]}/{name}.json"
    return f"{RESOURCES}/datasets/{name}.json"


def unit_manifests(*names):
    """Input function: the manifests of ``names`` for the job's model (unit)."""
    return lambda wildcards: [dataset_manifest(n, wildcards.model) for n in names]


def model_base(name):
    """The configured model of a unit (itself without replicates)."""
    return UNITS[name][0] if name in UNITS else name


def model_spec(name):
    """The config of a unit's model; a trained replicate trains with its own seed."""
    spec = dict(config["models"][model_base(name)])
    if TRAINED_UNITS and name in UNITS:
        spec["train"] = {**spec["train"], "seed": UNITS[name][1]}
    return canonical(spec)


def model_dir(name):
    """A unit's model files: its own when trained per seed; split replicates share their
    model's weights (no copy per unit)."""
    return f"{RESULTS}/models/{name if name in NETWORK_UNITS else model_base(name)}"


def first_units():
    """Each configured model's first unit (itself without replicates)."""
    return [
        next(u for u, (b, _) in UNITS.items() if b == m) if UNITS else m
        for m in BASE_MODELS
    ]


def unit_experiments(name):
    """The active experiments of a unit. Trained replicates exist to pool the tables of
    the methods' selection and test rows (Table 1 ...): the ablations and figures, each a
    network job or a sweep per unit, run on each model's first unit only (time)."""
    if TRAINED_UNITS and name not in first_units():
        return [e for e in ACTIVE_EXPERIMENTS if not e.result and not e.figures]
    return ACTIVE_EXPERIMENTS


# The sets whose images must be disjoint (opnp.data.splits), checked per unit (a replicate
# checks its own parts): the check's file is an input of every selection job.
SPLIT_ROLES = {
    "id_train": ID_TRAIN,
    "id_val": ID_VAL,
    "id_test": ID_TEST,
    "ood_val": OOD_VAL,
    "ood_test": OOD_TEST,
    "sensitivity": SENSITIVITY_UNLABELED,
}
SPLIT_DATASETS = list(
    dict.fromkeys(
        [ID_TRAIN, ID_VAL, ID_TEST, *OOD_VAL, *OOD_TEST, *SENSITIVITY_UNLABELED]
    )
)


def splits_check(model):
    return f"{RESULTS}/splits_check/{model}.json"


def features_of(model, dataset):
    """The four cached arrays and the manifest of one (model, dataset)."""
    stem = f"{RESULTS}/features/{model}/{dataset}"
    return {
        "features": f"{stem}.features.npy",
        "logits": f"{stem}.logits.npy",
        "labels": f"{stem}.labels.npy",
        "manifest": f"{stem}.manifest.json",
    }


# Datasets extracted by several jobs (config extraction.parts), each job one contiguous
# part of the images, then merged; every other dataset is extracted by one job.
EXTRACTION_PARTS = {
    name: count
    for name, count in config["extraction"].get("parts", {}).items()
    if count > 1
}
WHOLE_DATASETS = [d for d in config["datasets"] if d not in EXTRACTION_PARTS]
# The settings of every job that runs the network over images (a param: a change
# re-runs them); the split into parts is not one of them.
EXTRACTION_SETTINGS = canonical(
    {k: v for k, v in config["extraction"].items() if k != "parts"}
)


def feature_part(model, dataset, part):
    """The cached arrays and manifest of one part of a dataset split over jobs."""
    stem = f"{RESULTS}/features/{model}/{dataset}.parts/{part}"
    return {
        kind: f"{stem}.{kind}.{'json' if kind == 'manifest' else 'npy'}"
        for kind in ("features", "logits", "labels", "manifest")
    }


def feature_parts(wildcards):
    """Every part's manifest and arrays of the merge job's (model, dataset)."""
    return [
        path
        for part in range(EXTRACTION_PARTS[wildcards.dataset])
        for path in feature_part(wildcards.model, wildcards.dataset, part).values()
    ]


def feature_manifests(model, datasets):
    return [features_of(model, d)["manifest"] for d in datasets]


def full_sensitivity(model):
    return f"{RESULTS}/sensitivity/{model}/fraction100_seed{SEEDS[0]}.npz"


def subset_sensitivities(model):
    return [
        f"{RESULTS}/sensitivity/{model}/fraction{fraction_label(f)}_seed{s}.npz"
        for f in FRACTIONS
        for s in sensitivity_seeds(f)
    ]


def method_settings(method):
    spec = config["methods"][method]
    return canonical({"grid": spec.get("grid", {}), "fixed": spec.get("fixed", {})})


# ---------------------------------------------------------------- input functions


def trained_models():
    """The units that train_model makes (each trained model, or its replicates)."""
    trained = [m for m, s in config["models"].items() if "train" in s]
    if TRAINED_UNITS:
        return [u for u, (m, _) in UNITS.items() if m in trained]
    return trained


def loaded_models():
    return [m for m in NETWORK_MODELS if "train" not in config["models"][m]]


def model_checkpoint(wildcards):
    """The local checkpoint file of a loaded model (none for cached pretrained weights)."""
    return config["models"][wildcards.model].get("checkpoint", [])


def model_fc(wildcards):
    return f"{model_dir(wildcards.model)}/fc.npz"


def model_file(wildcards):
    return f"{model_dir(wildcards.model)}/model.pt"


def replicate_feature_inputs(wildcards):
    """A unit's features of a dataset: rows of its model's one extraction of the pool (a
    replicate part) or of the whole dataset."""
    # (split replicates only: trained replicates extract their own features)
    base = model_base(wildcards.model)
    name = wildcards.dataset
    if name in SPLIT_PARTS:
        return {
            "source": features_of(base, SPLIT_PARTS[name]["pool"])["manifest"],
            "split": dataset_manifest(name, wildcards.model),
        }
    return {"source": features_of(base, name)["manifest"]}


def selection_inputs(wildcards):
    """Validation data only: test OOD sets never reach the hyperparameter choice."""
    m = wildcards.model
    inputs = {
        "splits": splits_check(m),
        "fc": model_fc(wildcards),
        "train": features_of(m, ID_TRAIN)["manifest"],
        "id_val": features_of(m, ID_VAL)["manifest"],
        "ood_val": feature_manifests(m, OOD_VAL),
    }
    if wildcards.method in SENSITIVITY_METHODS:
        inputs["sensitivity"] = full_sensitivity(m)
    source = react_percentile_source(
        wildcards.method, config["methods"][wildcards.method]
    )
    if source == "selected":
        # The combination clips at ReAct's validation-selected percentile.
        inputs["react_selection"] = f"{RESULTS}/selection/{m}/react.parquet"
    return inputs


def evaluation_inputs(wildcards):
    m = wildcards.model
    inputs = {
        "selection": f"{RESULTS}/selection/{m}/{wildcards.method}.parquet",
        "fc": model_fc(wildcards),
        "train": features_of(m, ID_TRAIN)["manifest"],
        "id_test": features_of(m, ID_TEST)["manifest"],
        "ood_test": feature_manifests(m, OOD_TEST),
    }
    if wildcards.method in SENSITIVITY_METHODS:
        inputs["sensitivity"] = full_sensitivity(m)
    if inputs["id_test"] == features_of(m, ID_VAL)["manifest"]:
        # The selection scored these ID rows already (selection.id_val_may_be_id_test).
        inputs["id_val_scores"] = (
            f"{RESULTS}/selection/{m}/{wildcards.method}.id_val_scores.npz"
        )
    return inputs


# The readings ablation's readings (schema default: every one) and the methods they run.
READINGS_RUN = list(ABLATIONS.get("readings", {}).get("run", []))
READING_METHODS = list(dict.fromkeys(READING_ABLATIONS[r][0] for r in READINGS_RUN))


def readings_inputs(wildcards):
    """Like a selection job's inputs and an evaluation job's together: validation sets
    choose each reading's setting, the test sets score it; the unlabeled images join the
    training features where a reading computes its own sensitivity."""
    m = wildcards.model
    inputs = {
        "splits": splits_check(m),
        "fc": model_fc(wildcards),
        "train": features_of(m, ID_TRAIN)["manifest"],
        "unlabeled": feature_manifests(m, SENSITIVITY_UNLABELED),
        "sensitivity": full_sensitivity(m),
        "id_val": features_of(m, ID_VAL)["manifest"],
        "ood_val": feature_manifests(m, OOD_VAL),
        "id_test": features_of(m, ID_TEST)["manifest"],
        "ood_test": feature_manifests(m, OOD_TEST),
    }
    if any(
        react_percentile_source(x, config["methods"][x]) == "selected"
        for x in READING_METHODS
    ):
        # opnp+react clips at ReAct's choice for each test group, as in its main result
        inputs["react_selection"] = f"{RESULTS}/selection/{m}/react.parquet"
    return inputs


# Ablations on cached features whose catalogue entry names the function computing their
# rows (Experiment.compute, opnp.pipeline.experiments.AblationJob): the generic
# feature_ablation job gives it every cached input a feature-level ablation reads.
FEATURE_ABLATIONS = [e.name for e in ACTIVE_EXPERIMENTS if e.compute]


def feature_ablation_inputs(wildcards):
    """The inputs of a feature_ablation job (opnp.pipeline.experiments.AblationJob)."""
    m = wildcards.model
    return {
        "splits": splits_check(m),
        "fc": model_fc(wildcards),
        "sensitivity": full_sensitivity(m),
        "train": features_of(m, ID_TRAIN)["manifest"],
        "id_val": features_of(m, ID_VAL)["manifest"],
        "ood_val": feature_manifests(m, OOD_VAL),
        "id_test": features_of(m, ID_TEST)["manifest"],
        "ood_test": feature_manifests(m, OOD_TEST),
        "selections": [
            f"{RESULTS}/selection/{m}/{x}.parquet"
            for x in EXPERIMENTS[wildcards.experiment].methods
        ],
    }


def feature_ablation_settings(wildcards):
    """What the rows of a feature ablation depend on besides its inputs' files."""
    return {
        "settings": ABLATIONS.get(wildcards.experiment, {}),
        "statistic": config["sensitivity"]["statistic"],
        "metric": config["selection"]["metric"],
        "methods": {
            x: method_settings(x) for x in EXPERIMENTS[wildcards.experiment].methods
        },
    }


# ---------------------------------------------------------------- final targets


def ablation_result(name, model="{model}"):
    """The result file of an ablation experiment (rows with experiment = its name)."""
    assert EXPERIMENTS[name].result, name
    return f"{RESULTS}/ablations/{model}/{name}.parquet"


# Fig. 9 (the low-sensitivity pruned weights of Eq. 11) when the selected OPNP config
# has weight_low 0: the largest low-sensitivity percentage of the OPNP grid (at least 10 %).
FIG9_FALLBACK_WEIGHT_LOW = max(
    [10, *config["methods"].get("opnp", {}).get("grid", {}).get("weight_low", [])]
)


def table_specs():
    """Table file stem -> {"experiment", "model"} for every active experiment with a
    table; with replicates also the pooled tables (mean ± std over split seeds; the
    selected hyperparameters stay per unit)."""
    specs = {}
    for m in MODELS:
        for exp in unit_experiments(m):
            if exp.layout is not None:
                stem = table_stem(exp, config, m, model_base(m))
                specs[stem] = {"experiment": exp.name, "model": m}
    for base in BASE_MODELS if UNITS else []:
        units = {u: seed for u, (b, seed) in UNITS.items() if b == base}
        first = next(iter(units))
        # (pooled: the experiments every unit ran)
        everywhere = set.intersection(
            *({e.name for e in unit_experiments(u)} for u in units)
        )
        for stem, spec in list(specs.items()):
            if (
                spec["model"] == first
                and spec["experiment"] != "selected"
                and spec["experiment"] in everywhere
            ):
                pooled = stem[: -len(first)] + base
                specs[pooled] = {
                    **spec,
                    "model": base,
                    "replicates": units,
                    "vary": REPLICATES_VARY,
                }
    return specs


TABLE_SPECS = table_specs()


def figure_ids(model):
    """The stems of ``model``'s figures (one per model)."""
    return [
        figure_stem(exp, fig, config, model)
        for exp in unit_experiments(model)
        for fig in exp.figures
        if fig.per_model
    ]


def final_tables():
    return [
        f"{RESULTS}/tables/{t}.{ext}"
        for t in TABLE_SPECS
        for ext in ("md", "tex", "csv")
    ]


def final_figures():
    figures = [  # the figures of every model (Fig. 1), then each model's
        f"{RESULTS}/figures/{figure_stem(exp, fig, config)}.png"
        for exp in ACTIVE_EXPERIMENTS
        for fig in exp.figures
        if not fig.per_model
    ]
    figures += [f"{RESULTS}/figures/{f}.png" for m in MODELS for f in figure_ids(m)]
    return figures


def figure_facts(wildcards, output):
    """The numbers a figure's caption quotes (its <stem>.facts.json, see opnp.report.figure_style),
    for the caption template as snakemake.params.facts; {} before the figure exists.
    A function of the output, so Snakemake does not count it among the params whose
    change triggers a rerun: `snakemake --report` reads it after the run."""
    if not os.path.isfile(output.facts):
        return {}
    with open(output.facts, encoding="utf-8") as handle:
        return json.load(handle)


def figure_files(stem, caption, labels):
    """Outputs of a figure rule: the PNG (in the report, with its caption), the vector
    PDF and the facts JSON that opnp.report.figure_style writes beside it."""
    return {
        "png": report(
            f"{RESULTS}/figures/{stem}.png",
            caption=caption,
            category="Figures",
            labels=labels,
        ),
        "pdf": f"{RESULTS}/figures/{stem}.pdf",
        "facts": f"{RESULTS}/figures/{stem}.facts.json",
    }


def experiment_figure_files(name, caption):
    """figure_files of experiment ``name``'s figure (its only one), the stem and report
    labels from the catalogue; a figure per model has a ``{model}`` wildcard."""
    exp = EXPERIMENTS[name]
    (fig,) = exp.figures
    labels = {"figure": figure_id(exp, fig, config)}
    if fig.per_model:
        labels["model"] = "{model}"
    stem = figure_stem(exp, fig, config, "{model}" if fig.per_model else None)
    return figure_files(stem, caption, labels)


def final_outputs():
    return [
        f"{RESULTS}/results.parquet",
        *final_tables(),
        *final_figures(),
        *pooled_outputs(),
    ]


# Methods pooled with cluster-bootstrap intervals: those whose evaluation saves its test
# scores (results/<bench>/scores/<unit>/<method>.npz; a seeded method's of every seed):
# every evaluation job does, feature- or network-level.
POOLED_METHODS = METHODS


def base_units(model):
    """The replicate units of a configured model, in the order of replicates.seeds."""
    return [u for u, (b, _) in UNITS.items() if b == model]


def pooled_draws(wildcards):
    """A pooled table's cluster-bootstrap draws (rule pooled_intervals); none otherwise."""
    spec = TABLE_SPECS[wildcards.table]
    if "replicates" in spec and EXPERIMENTS[spec["experiment"]].pooled_draws:
        return [f"{RESULTS}/pooled/{spec['model']}.parquet"]
    return []


def pooled_outputs():
    """With replicates: per model, the pooled results with cluster-bootstrap intervals
    (rule pooled_intervals); nothing otherwise, so the default outputs are unchanged."""
    if not UNITS:
        return []
    return [
        f"{RESULTS}/pooled/{m}.{ext}" for m in BASE_MODELS for ext in ("csv", "parquet")
    ]


def result_parquets():
    files = [f"{RESULTS}/selection/{m}/{x}.parquet" for m in MODELS for x in METHODS]
    files += [f"{RESULTS}/evaluation/{m}/{x}.parquet" for m in MODELS for x in METHODS]
    files += [
        ablation_result(exp.name, m)
        for m in MODELS
        for exp in unit_experiments(m)
        if exp.result and exp.name != "calibration"  # a reliability curve, not rows
    ]
    return files
