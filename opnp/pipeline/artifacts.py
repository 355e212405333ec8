"""Reading and writing the workflow's intermediate files (formats: docs/architecture.md)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from opnp.io import save_npz_atomic, write_parquet_atomic

MANIFEST_SUFFIX = ".manifest.json"


def feature_stem(manifest_path: str | Path) -> str:
    """``.../digits-test.manifest.json`` -> ``.../digits-test`` (the stem of the arrays)."""
    path = str(manifest_path)
    if not path.endswith(MANIFEST_SUFFIX):
        raise ValueError(f"feature manifest path must end with {MANIFEST_SUFFIX!r}: {path}")
    return path[: -len(MANIFEST_SUFFIX)]


def load_feature_set(manifest_path: str | Path, mmap: bool = True):
    """Cached features, logits, labels and manifest of one (model, dataset)."""
    from opnp.features import load_features

    return load_features(feature_stem(manifest_path), mmap=mmap)


def load_fc(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """FC head (weight (C, D), bias (C,)) saved by the model rules."""
    with np.load(path) as data:
        return np.asarray(data["weight"]), np.asarray(data["bias"])


def save_sensitivity(path, param: np.ndarray, neurons: dict[str, np.ndarray], **meta) -> None:
    arrays = {"param": param, **{f"neuron_{k}": v for k, v in neurons.items()}}
    arrays.update({k: np.asarray(v) for k, v in meta.items()})
    save_npz_atomic(path, **arrays)


def load_sensitivity(path: str | Path, statistic: str | None = None):
    """Parameter sensitivity (C, D) and, when ``statistic`` is given, that neuron statistic."""
    with np.load(path) as data:
        param = np.asarray(data["param"])
        if statistic is None:
            return param
        key = f"neuron_{statistic}"
        if key not in data:
            raise ValueError(
                f"{path} has no neuron statistic {statistic!r} (has {sorted(data.files)})"
            )
        return param, np.asarray(data[key])


def save_id_scores(
    path: str | Path, scores: Mapping[tuple[str, int], np.ndarray], *, dataset: str
) -> None:
    """A selection job's ID validation scores, ``(params_json, seed) -> (N,)``, of the
    ID set named ``dataset``: the evaluation job reuses them when that set is also its ID
    test set (:func:`opnp.pipeline.evaluation.evaluate_configs`'s ``known_id_scores``)."""
    keys = sorted(scores)
    save_npz_atomic(
        path,
        dataset=np.array(dataset),
        keys=np.array([json.dumps([text, int(seed)]) for text, seed in keys], dtype=str),
        **{f"scores_{i}": np.asarray(scores[key]) for i, key in enumerate(keys)},
    )


def load_id_scores(path: str | Path, *, dataset: str) -> dict[tuple[str, int], np.ndarray]:
    """The scores :func:`save_id_scores` wrote, refused unless they are of ``dataset``."""
    with np.load(path) as data:
        scored = str(data["dataset"])
        if scored != dataset:
            raise ValueError(
                f"{path} holds ID scores of dataset {scored!r}, not of {dataset!r}: "
                "they cannot stand for its scores"
            )
        out = {}
        for i, text in enumerate(data["keys"]):
            params, seed = json.loads(str(text))
            out[(params, int(seed))] = np.asarray(data[f"scores_{i}"])
        return out


def read_json(path: str | Path) -> dict:
    with open(path) as handle:
        return json.load(handle)


def write_results(frame: pd.DataFrame, path: str | Path) -> None:
    write_parquet_atomic(frame, path)


def save_model(model, spec: dict, path: str | Path) -> None:
    """Save the model's state and its spec atomically (a plain dict: loads with weights_only)."""
    import torch

    from opnp.io import atomic_write

    state = {
        "spec": spec,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    with atomic_write(path, "wb") as handle:
        torch.save(state, handle)


def load_model(path: str | Path, map_location: str = "cpu"):
    """Rebuild a model saved by :func:`save_model` (``torch.load(weights_only=True)``)."""
    import torch

    from opnp.nets.models import build_model

    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or "spec" not in state or "state_dict" not in state:
        raise ValueError(
            f"{path} is not a model file written by opnp (needs 'spec' and 'state_dict')"
        )
    spec = dict(state["spec"])
    spec.pop("checkpoint", None)  # the weights are in this file, not at the original path
    spec["pretrained"] = False
    model = build_model(spec)
    model.load_state_dict(state["state_dict"])
    model.eval()
    return model


def job_results(rows: list[dict], *, benchmark: str, model: str, config_hash: str) -> pd.DataFrame:
    """Result rows of one workflow job as a results frame with this checkout's provenance
    (``config_hash``: the hash of the job's settings, so that changed settings show)."""
    from opnp.io import provenance
    from opnp.pipeline.results import results_frame

    return results_frame(
        rows,
        benchmark=benchmark,
        model=model,
        config_hash=config_hash,
        provenance=provenance(),
    )


def load_ood_features(manifests: Iterable[str | Path]) -> dict:
    """OOD set name -> cached features (memory-mapped), in the order of ``manifests``;
    each set is named by its own manifest (``dataset``), never by its position."""
    out = {}
    for path in manifests:
        name = read_json(path)["dataset"]
        if name in out:
            raise ValueError(f"two feature manifests of dataset {name!r}: {path}")
        out[name] = load_feature_set(path).features
    return out


def open_named_datasets(manifests: Iterable[str | Path], transform=None) -> dict:
    """Dataset name -> image dataset, in the order of ``manifests``; each named by its own
    manifest (``name``), never by its position."""
    from opnp.data import open_dataset

    out = {}
    for path in manifests:
        manifest = read_json(path)
        out[manifest["name"]] = open_dataset(manifest, transform=transform)
    return out


class JobInputs:
    """A workflow job's named input files, read on first use.

    ``paths`` maps the rule's input names to paths: ``fc`` (the FC head), ``sensitivity``
    (optional), ``train`` and other feature manifests, lists of OOD feature manifests.
    """

    def __init__(self, paths: Mapping[str, Any]):
        self.paths = dict(paths)

    def features(self, name: str):
        """The cached feature set of input ``name`` (a feature manifest)."""
        return load_feature_set(self.paths[name])

    def ood(self, name: str) -> dict:
        """OOD set name -> features of input ``name`` (a list of feature manifests)."""
        return load_ood_features(self.paths[name])

    def fit_data(self, statistic: str = "mean", train: bool = True):
        """:class:`~opnp.pipeline.evaluation.FitData` of the job: its FC head, the training
        features and labels (input ``train``, when ``train`` and present) and the
        sensitivity (input ``sensitivity``, when present)."""
        from opnp.pipeline.evaluation import FitData

        weight, bias = load_fc(self.paths["fc"])
        features = labels = None
        if train and "train" in self.paths:
            fs = self.features("train")
            features, labels = fs.features, fs.labels
        sensitivity = (
            load_sensitivity(self.paths["sensitivity"]) if "sensitivity" in self.paths else None
        )
        return FitData(weight, bias, features, labels, sensitivity, statistic)


def write_job_results(
    rows: list[dict], path: str | Path, *, benchmark: str, model: str, config_hash: str
) -> pd.DataFrame:
    """:func:`job_results` written atomically to ``path``; returns the frame."""
    frame = job_results(rows, benchmark=benchmark, model=model, config_hash=config_hash)
    write_results(frame, path)
    return frame
