"""Checks of the workflow config that its JSON schema cannot express.

The workflow validates the config against ``workflow/schemas/config.schema.yaml`` (types,
allowed values, unknown keys, ranges) and then calls :func:`check_config` before any job
runs. Every error names the config key and the allowed values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opnp.pipeline.selection import REACT_SELECTED, clips_at_react, react_percentile_source


class ConfigError(ValueError):
    """A config value that the JSON schema cannot express is wrong."""


def _check_unlabeled(cfg: dict, datasets: Mapping[str, Any]) -> None:
    sensitivity = cfg.get("sensitivity", {})
    roles = {cfg["id"][k] for k in ("train", "val", "test")} | set(cfg["ood"]["val"])
    roles |= set(cfg["ood"]["test"])
    for name in sensitivity.get("unlabeled", []):
        if name not in datasets:
            raise ConfigError(
                f"config key sensitivity.unlabeled: dataset {name!r} is not defined under "
                f"'datasets' (defined: {sorted(datasets)})"
            )
        if name in roles:
            raise ConfigError(
                f"config key sensitivity.unlabeled: {name!r} is also an id or ood set; the "
                "unlabeled sensitivity images must be a set of their own"
            )
    if sensitivity.get("unlabeled") and sensitivity.get("reduction", "per_sample") != "per_sample":
        raise ConfigError(
            "config key sensitivity.unlabeled needs sensitivity.reduction: per_sample (the "
            f"batch reading takes |sum| over one sample set), got {sensitivity['reduction']!r}"
        )


def _check_compare_protocols(cfg: dict) -> None:
    from opnp.detectors import detector_class

    for method in cfg.get("selection", {}).get("compare_protocols", []):
        if method not in cfg["methods"]:
            raise ConfigError(
                f"config key selection.compare_protocols: {method!r} is not under 'methods' "
                f"({sorted(cfg['methods'])})"
            )
        if detector_class(method).needs_network:
            raise ConfigError(
                f"config key selection.compare_protocols: {method!r} runs the network; "
                "only methods on cached features can be compared"
            )


def check_config(cfg: dict) -> None:
    """Cross-key checks run before any job: each error names the key and the allowed values."""
    datasets = {**cfg["datasets"], **replicate_parts(cfg)}
    _check_id_and_ood(cfg, datasets)
    _check_replicates(cfg)
    _check_unlabeled(cfg, datasets)
    _check_dataset_specs(cfg, datasets)
    _check_synthetic_scale(cfg)
    _check_synthetic(cfg)
    _check_models(cfg)
    _check_percentages(cfg)
    for method, spec in cfg["methods"].items():
        _check_react_percentile(method, spec, cfg["methods"])
    _check_ablations(cfg)
    check_method_values(cfg["methods"])
    selection_groups(cfg)
    _check_compare_protocols(cfg)
    fig9 = cfg.get("ablations", {}).get("fig9_ood")
    if fig9 is not None and fig9 not in cfg["ood"]["test"]:
        raise ConfigError(
            f"config key ablations.fig9_ood: {fig9!r} is not one of ood.test {cfg['ood']['test']}"
        )


def _check_id_and_ood(cfg: dict, datasets: Mapping[str, Any]) -> None:
    """The ID and OOD sets are defined, validation OOD sets are not test sets, and the
    ID training, validation and test sets stay apart (as far as the config says)."""
    for key in ("train", "val", "test"):
        name = cfg["id"][key]
        if name not in datasets:
            raise ConfigError(
                f"config key id.{key}: dataset {name!r} is not defined under 'datasets' "
                f"(defined: {sorted(datasets)})"
            )
    for split in ("test", "val"):
        for name in cfg["ood"][split]:
            if name not in datasets:
                raise ConfigError(
                    f"config key ood.{split}: dataset {name!r} is not defined under "
                    f"'datasets' (defined: {sorted(datasets)})"
                )
    shared = set(cfg["ood"]["val"]) & set(cfg["ood"]["test"])
    if shared:
        raise ConfigError(
            f"config keys ood.val and ood.test share {sorted(shared)}: the validation OOD "
            "sets must be disjoint from every test OOD set"
        )
    # id.val may equal id.test only where the config says so (the paper's protocol: ID
    # test images + OOD images from no test set); the training set stays apart from both.
    allowed = cfg.get("selection", {}).get("id_val_may_be_id_test", False)
    if cfg["id"]["val"] == cfg["id"]["test"] and not allowed:
        raise ConfigError(
            f"config keys id.val and id.test are both {cfg['id']['val']!r}: hyperparameters "
            "would be chosen on the test images. Use a held-out ID set as id.val, or state "
            "the paper's protocol (ID validation = ID test) with "
            "selection.id_val_may_be_id_test: true"
        )
    if cfg["id"]["train"] in (cfg["id"]["val"], cfg["id"]["test"]):
        raise ConfigError(
            f"config key id.train: {cfg['id']['train']!r} is also used as id.val or id.test; "
            "sensitivities and detectors must be fitted on data that is not evaluated"
        )


def _check_dataset_specs(cfg: dict, datasets: Mapping[str, Any]) -> None:
    """Each dataset spec has the keys its source needs and none it cannot use; the
    datasets extracted in parts are defined."""
    for name, spec in cfg["datasets"].items():
        source = spec["source"]
        needed = {
            "synthetic": ["synthetic"],
            "builtin": ["builder"],
            "link": ["path"],
            "download": ["name"],
            # an IDX file (format idx) holds images directly: no member folder
            "archive": ["path"] if spec.get("format") == "idx" else ["path", "member"],
        }[source]
        for key in needed:
            if key not in spec:
                raise ConfigError(
                    f"config key datasets.{name}.{key} is required for source {source!r}"
                )
        if spec.get("format") == "idx" and (source != "archive" or "classes" in spec):
            raise ConfigError(
                f"config key datasets.{name}.format: 'idx' (an IDX image file, e.g. "
                "Fashion-MNIST) needs source 'archive' and takes no 'classes'"
            )
        for key in ("classes", "shuffle_seed"):
            if key in spec and source != "archive":
                raise ConfigError(
                    f"config key datasets.{name}.{key} works for source 'archive' only, "
                    f"not {source!r}"
                )
        if spec.get("labels", "none") != "none" and spec.get("format", "folder") != "flat":
            raise ConfigError(
                f"config key datasets.{name}.labels: {spec['labels']!r} needs format 'flat', "
                f"got {spec.get('format', 'folder')!r}"
            )
    for name in cfg.get("extraction", {}).get("parts", {}):
        if name not in datasets:
            raise ConfigError(
                f"config key extraction.parts: dataset {name!r} is not defined under "
                f"'datasets' (defined: {sorted(datasets)})"
            )


def _check_models(cfg: dict) -> None:
    """Each model (but a synthetic one) is either trained here or loads weights."""
    for name, spec in cfg["models"].items():
        if is_synthetic_model(spec):
            continue
        has_train = "train" in spec
        has_weights = "checkpoint" in spec or "pretrained" in spec
        if has_train == has_weights:
            raise ConfigError(
                f"config key models.{name}: give exactly one of 'train' (train it here) or "
                f"'checkpoint' or 'pretrained' (load weights)"
            )


def _check_percentages(cfg: dict) -> None:
    """Each method's pruning percentages are in [0, 100) and no low + high pair prunes
    everything."""
    for method, spec in cfg["methods"].items():
        values = {**spec.get("fixed", {}), **spec.get("grid", {})}
        for low, high in (("weight_low", "weight_high"), ("neuron_low", "neuron_high")):
            lows = _as_list(values.get(low, 0))
            highs = _as_list(values.get(high, 0))
            for key, vals in ((low, lows), (high, highs)):
                for v in vals:
                    if not isinstance(v, (int, float)) or not 0 <= v < 100:
                        raise ConfigError(
                            f"config key methods.{method}.{key}: {v!r} is not a percentage "
                            "in [0, 100)"
                        )
            if max(lows) + max(highs) >= 100:
                raise ConfigError(
                    f"config keys methods.{method}.{low}/{high}: {max(lows)} + {max(highs)} "
                    ">= 100 would prune everything; the sum must stay below 100"
                )


def _check_ablations(cfg: dict) -> None:
    """Table 7 needs OPNP; the readings ablation names readings of configured methods."""
    layers = cfg.get("ablations", {}).get("layers", {})
    if layers.get("enabled", False) and "opnp" not in cfg["methods"]:
        raise ConfigError(
            "config key ablations.layers.enabled: Table 7 prunes with OPNP's selected "
            "percentages, but 'opnp' is not under 'methods'; add opnp or disable the ablation"
        )
    readings = cfg.get("ablations", {}).get("readings")
    if readings is not None:
        from opnp.pipeline.readings import check_readings

        try:
            # the schema fills in run; a config checked without it names nothing to run
            check_readings(readings.get("run", []), cfg["methods"], "ablations.readings.run")
        except ValueError as error:
            raise ConfigError(str(error)) from None


#: ``models.<m>.arch`` of a synthetic model (opnp.synthetic): features from a seeded
#: generator, no network, no images.
SYNTHETIC_ARCH = "synthetic"


def is_synthetic_model(spec: Mapping[str, Any]) -> bool:
    """Whether a model's config entry is a synthetic model (``arch: synthetic``)."""
    return spec.get("arch") == SYNTHETIC_ARCH


def synthetic_models(cfg: dict) -> list[str]:
    """The config's synthetic models, in config order."""
    return [m for m, spec in cfg["models"].items() if is_synthetic_model(spec)]


def _check_synthetic_scale(cfg: dict) -> None:
    """``synthetic.scale`` as a float > 0, in place: ``--config synthetic='{scale: 0.0625}'``
    passes nested values as text, so text that reads as a number is converted."""
    synthetic = cfg.get("synthetic")
    if not synthetic or "scale" not in synthetic:
        return
    scale = synthetic["scale"]
    try:
        value = float(scale) if not isinstance(scale, bool) else float("nan")
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"config key synthetic.scale: {scale!r} must be a number > 0")
    synthetic["scale"] = value


def _check_synthetic(cfg: dict) -> None:
    """A synthetic model generates every feature set from its own seed: it runs with
    synthetic datasets only (and they with synthetic models only), and nothing that runs
    the network on images (ODIN, the in-network ablation of Table 7 / Fig. 6) or splits
    images (extraction parts, replicates) can be configured with it."""
    models = synthetic_models(cfg)
    _check_synthetic_models(cfg, models)
    datasets = [d for d, spec in cfg["datasets"].items() if spec["source"] == "synthetic"]
    for name, spec in cfg["datasets"].items():
        if "synthetic" in spec and name not in datasets:
            raise ConfigError(
                f"config key datasets.{name}.synthetic needs datasets.{name}.source: "
                f"'synthetic', got {spec['source']!r}"
            )
    if not models and not datasets:
        return
    if not models:
        raise ConfigError(
            f"config key datasets: {datasets} are synthetic (source: synthetic), but no model "
            f"is (models.<name>.arch: {SYNTHETIC_ARCH!r}); synthetic rows come from a "
            "synthetic model"
        )
    others = [m for m in cfg["models"] if m not in models]
    if others:
        raise ConfigError(
            f"config key models: {models} are synthetic but {others} run a network; a "
            "benchmark has either kind, not both"
        )
    _check_synthetic_roles(cfg, models)
    _check_nothing_needs_images(cfg, models)


def _check_synthetic_models(cfg: dict, models: list[str]) -> None:
    """Only synthetic models (``models``) take ``synthetic`` settings; they need them and
    a feature width, and take no weights."""
    for name, spec in cfg["models"].items():
        synthetic = name in models
        if "synthetic" in spec and not synthetic:
            raise ConfigError(
                f"config key models.{name}.synthetic needs models.{name}.arch: "
                f"{SYNTHETIC_ARCH!r}, got {spec.get('arch')!r}"
            )
        if not synthetic:
            continue
        if "synthetic" not in spec:
            raise ConfigError(
                f"config key models.{name}.synthetic is required for arch {SYNTHETIC_ARCH!r} "
                "(its generator settings; {} takes the defaults)"
            )
        given = [k for k in ("train", "checkpoint", "pretrained") if k in spec]
        if given:
            raise ConfigError(
                f"config key models.{name}.{given[0]}: a synthetic model has no weights to "
                "train or load; remove it"
            )
        if "feature_dim" not in spec:
            raise ConfigError(
                f"config key models.{name}.feature_dim is required for arch {SYNTHETIC_ARCH!r}"
            )


def _check_synthetic_roles(cfg: dict, models: list[str]) -> None:
    """With synthetic models, every dataset the benchmark uses is synthetic, of the
    distribution (ID or OOD) of its role."""
    used = {cfg["id"][k]: f"id.{k}" for k in ("train", "val", "test")}
    for split in ("val", "test"):
        used.update({n: f"ood.{split}" for n in cfg["ood"][split]})
    used.update(
        {n: "sensitivity.unlabeled" for n in cfg.get("sensitivity", {}).get("unlabeled", [])}
    )
    for name, role in used.items():
        spec = cfg["datasets"].get(name, {})
        if spec.get("source") != "synthetic":
            raise ConfigError(
                f"config key {role}: {name!r} has source {spec.get('source')!r}, but the models "
                f"{models} are synthetic and read no images; give it source: synthetic"
            )
        want = "ood" if role.startswith("ood.") else "id"
        if role != "sensitivity.unlabeled" and spec["synthetic"]["distribution"] != want:
            raise ConfigError(
                f"config key datasets.{name}.synthetic.distribution: {name!r} is {role}, so "
                f"its distribution must be {want!r}, got {spec['synthetic']['distribution']!r}"
            )


def _check_nothing_needs_images(cfg: dict, models: list[str]) -> None:
    """With synthetic models, no method or ablation runs the network on images and
    nothing splits images (extraction parts, replicates)."""
    from opnp.detectors import available_detectors, detector_class

    known = [m for m in cfg["methods"] if m in available_detectors()]  # others: see below
    network = [m for m in known if detector_class(m).needs_network]
    if network:
        raise ConfigError(
            f"config key methods: {network} run the network on images, but the models "
            f"{models} are synthetic (arch {SYNTHETIC_ARCH!r}: cached features only); "
            "remove them (config/imagenet_scale.yaml lists the methods that need no network)"
        )
    if cfg.get("ablations", {}).get("layers", {}).get("enabled", False):
        raise ConfigError(
            "config key ablations.layers.enabled: Table 7's in-network rows and Fig. 6 run "
            f"the network, but the models {models} are synthetic; set it to false or remove "
            "ablations.layers"
        )
    parts = sorted(cfg.get("extraction", {}).get("parts", {}))
    if parts:
        raise ConfigError(
            f"config key extraction.parts: {parts} are split over extraction jobs, but the "
            f"models {models} are synthetic and extract nothing; remove extraction.parts"
        )
    if cfg.get("replicates"):
        raise ConfigError(
            f"config key replicates: re-splitting image pools needs images, but the models "
            f"{models} are synthetic; remove replicates"
        )


#: How a test OOD set's hyperparameters are validated (config selection.validation).
SELECTION_PROTOCOLS = ("held_out_family", "all_families")


def dataset_family(cfg: dict, name: str) -> str:
    """The OOD family of dataset ``name``: its ``family`` key, the family of the pool it is
    a replicate part of, or else its own name (a family of one set)."""
    pool = replicate_parts(cfg).get(name, {}).get("pool")
    spec = cfg["datasets"].get(pool if pool is not None else name, {})
    return str(spec.get("family", name))


def selection_groups(cfg: dict) -> dict[str, dict[str, list[str]]]:
    """``{group: {"test": [test OOD sets], "val": [validation OOD sets]}}``: which
    validation sets choose each test set's hyperparameters.

    ``selection.validation: held_out_family`` (default): one group per family of test
    sets, validated on the validation sets of every *other* family (leave one family
    out), so no test family's setting is chosen on its own family. ``all_families``: one
    group, every test set validated on every validation set. Raises ``ConfigError`` when a
    test family has no validation set of another family.
    """
    protocol = cfg.get("selection", {}).get("validation", SELECTION_PROTOCOLS[0])
    if protocol not in SELECTION_PROTOCOLS:
        raise ConfigError(
            f"config key selection.validation: {protocol!r} is not one of {list(SELECTION_PROTOCOLS)}"
        )
    val, test = list(cfg["ood"]["val"]), list(cfg["ood"]["test"])
    if protocol == "all_families":
        return {"all": {"test": test, "val": val}}
    groups: dict[str, dict[str, list[str]]] = {}
    for name in test:
        family = dataset_family(cfg, name)
        group = groups.setdefault(
            family, {"test": [], "val": [v for v in val if dataset_family(cfg, v) != family]}
        )
        group["test"].append(name)
        if not group["val"]:
            raise ConfigError(
                f"config key selection.validation: held_out_family, but test set {name!r} "
                f"(family {family!r}) has no validation set of another family (ood.val "
                f"{val} are all {family!r}); add a validation set of another family "
                "(datasets.<name>.family) or use all_families"
            )
    return groups


def replicate_parts(cfg: dict) -> dict[str, dict]:
    """Part name -> ``{"pool", "by", "size", "index"}`` of the config's ``replicates``
    (empty without replicates): the datasets that only exist as parts of a pool. ``size``
    is None for a ``by: fold`` part sized by its folds."""
    parts = {}
    for pool, spec in cfg.get("replicates", {}).get("pools", {}).items():
        for index, part in enumerate(spec["parts"]):
            parts[part["name"]] = {
                "pool": pool,
                "by": spec["by"],
                "size": part.get("size"),
                "index": index,
            }
    return parts


def _check_replicates(cfg: dict) -> None:
    replicates = cfg.get("replicates")
    if not replicates:
        return
    from opnp.pipeline.replicates import check_split_spec

    trained = sorted(m for m, s in cfg["models"].items() if "train" in s)
    if replicates.get("vary", "split") == "training":
        loaded = sorted(set(cfg["models"]) - set(trained))
        if replicates.get("pools") or loaded:
            raise ConfigError(
                "config key replicates: vary: training trains every model once per seed; it "
                f"takes no pools and only trained models (pools: "
                f"{sorted(replicates.get('pools', {}))}, loaded models: {loaded})"
            )
        return
    if not replicates.get("pools"):
        raise ConfigError("config key replicates: vary: split needs 'pools' to re-split")
    seen: dict[str, str] = {}
    for pool, spec in replicates["pools"].items():
        if pool not in cfg["datasets"]:
            raise ConfigError(
                f"config key replicates.pools.{pool}: the pool must be a dataset defined "
                f"under 'datasets' (defined: {sorted(cfg['datasets'])})"
            )
        try:
            check_split_spec(
                pool,
                spec,
                len(replicates["seeds"]),
                n_images=cfg["datasets"][pool].get("expected_count"),
            )
        except ValueError as error:
            raise ConfigError(f"config key replicates.pools.{pool}: {error}") from None
        for part in spec["parts"]:
            name = part["name"]
            if name in cfg["datasets"] or name in seen:
                raise ConfigError(
                    f"config key replicates.pools.{pool}.parts: part name {name!r} is already "
                    f"used by {'datasets' if name in cfg['datasets'] else seen[name]!r}; parts "
                    "need names of their own"
                )
            seen[name] = f"replicates.pools.{seen.get(name, pool)}"
    used = {*cfg["id"].values(), *cfg["ood"]["val"], *cfg["ood"]["test"]}
    pools_used = sorted(used & set(replicates["pools"]))
    if pools_used:
        raise ConfigError(
            f"config keys id/ood name the pools {pools_used}: with replicates, use their parts "
            "(each replicate cuts a pool anew), not the whole pool"
        )
    if trained:
        raise ConfigError(
            f"config key replicates: models {trained} are trained here, but replicates re-split "
            "the training set per seed; give them a 'checkpoint' or 'pretrained' instead (or "
            "vary: training, without pools)"
        )


#: Values let through although a detector's constructor would refuse them: placeholders
#: the workflow resolves before it builds the detector (the selected ReAct percentile of
#: a combination).
_RESOLVED_BY_THE_WORKFLOW = {("react_percentile", "selected")}


def _detector_builder(method: str):
    """A function that builds ``method``'s detector from hyperparameters (or ODIN's
    check), on a tiny dummy head: the detector's own checks judge each value."""
    import numpy as np

    from opnp.detectors import available_detectors, create_detector, detector_class

    if method not in available_detectors():
        raise ConfigError(
            f"config key methods.{method}: no detector named {method!r} "
            f"(available: {available_detectors()})"
        )
    weight, bias = np.ones((2, 3)), np.zeros(2)
    uses_sensitivity = detector_class(method).uses_sensitivity
    extra = {"param_sensitivity": np.ones((2, 3))} if uses_sensitivity else {}
    return lambda params: create_detector(method, weight=weight, bias=bias, **extra, **params)


def check_method_values(methods: dict) -> None:
    """Build every method's detector with each ``fixed`` value and each ``grid`` value
    (one at a time, with the fixed values) so that a value the detector would refuse
    hours later, in its selection job, stops the workflow now with the config key.

    The detectors' own parameter checks decide (a value the constructor accepts is
    valid), so new detectors and new options are covered without rules here.
    """
    for method, spec in methods.items():
        build = _detector_builder(method)
        fixed = dict(spec.get("fixed") or {})
        for key, value in fixed.items():
            _check_value(build, {key: value}, f"methods.{method}.fixed.{key}", value)
        _check_value(build, fixed, f"methods.{method}.fixed", fixed)
        for key, values in (spec.get("grid") or {}).items():
            for value in _as_list(values):
                _check_value(build, {**fixed, key: value}, f"methods.{method}.grid.{key}", value)


def _check_value(build, params: dict, key: str, value) -> None:
    params = {
        k: v
        for k, v in params.items()
        if not (isinstance(v, str) and (k, v) in _RESOLVED_BY_THE_WORKFLOW)
    }
    try:
        build(params)
    except (ValueError, TypeError) as err:
        raise ConfigError(
            f"config key {key}: {value!r} is refused by the detector: {err}"
        ) from None


def _check_react_percentile(method: str, spec: dict, methods: dict) -> None:
    from opnp.detectors import methods_where

    grid = spec.get("grid", {})
    fixed = spec.get("fixed", {})
    if not clips_at_react(method):
        for where, values in (("grid", grid), ("fixed", fixed)):
            if "react_percentile" in values:
                raise ConfigError(
                    f"config key methods.{method}.{where}.react_percentile: {method!r} does "
                    f"not clip at ReAct's threshold (methods that do: "
                    f"{methods_where('clips_at_react')})"
                )
        return
    if REACT_SELECTED in _as_list(grid.get("react_percentile", [])):
        raise ConfigError(
            f"config key methods.{method}.grid.react_percentile: {REACT_SELECTED!r} is a "
            "fixed value (fixed: {react_percentile: selected}), not a grid value; a grid "
            "lists percentiles in [0, 100]"
        )
    where = "grid" if "react_percentile" in grid else "fixed"
    values = _as_list(grid.get("react_percentile", fixed.get("react_percentile", [])))
    for v in values:
        if v == REACT_SELECTED:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 100:
            raise ConfigError(
                f"config key methods.{method}.{where}.react_percentile: {v!r} must be a "
                "percentile "
                f"in [0, 100] or {REACT_SELECTED!r} (ReAct's validation-selected percentile)"
            )
    if react_percentile_source(method, spec) == "selected" and "react" not in methods:
        raise ConfigError(
            f"config key methods.{method}: react_percentile defaults to ReAct's selected "
            "percentile, but 'react' is not under 'methods'; add react (with its grid) or "
            f"fix the percentile (methods.{method}.fixed.react_percentile: 90)"
        )


def _as_list(value):
    return value if isinstance(value, list) else [value]
