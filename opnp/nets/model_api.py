"""OPNP (and every other detector of the registry) on a PyTorch classifier, in a few lines::

    detector = opnp.from_model(model, "opnp", weight_low=10, neuron_high=5)
    detector.fit(train_loader)              # one streaming pass, on the model's device
    scores = detector.score(images)         # float64 (B,), higher = in-distribution
    table = detector.tune(id_val_loader, {"textures": ood_val_loader})
    deployable = detector.to_module()       # nn.Module: x -> (logits, score)

The model is split at its head, the final ``nn.Linear`` (:mod:`opnp.nets.model_head`:
found by forward hooks, or ``head="fc"``). Scores are computed by the feature-level
detectors (:func:`opnp.create_detector`) on the head's input, so
``ModelDetector(m, method).score(x)`` equals
``create_detector(method, weight=W, bias=b).fit(train_h).score(h)`` on the model's own
features (tested). A network-level detector (``needs_network``, e.g. ODIN) scores the
input images itself: its ``score_batch(model, inputs, std)``. What ``fit`` keeps from
its one pass over the training data: :mod:`opnp.nets.fit_statistics`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from opnp.detectors import available_detectors, create_detector, detector_class
from opnp.nets.fit_statistics import TrainingStatistics
from opnp.nets.model_head import ModelHead, to_numpy

__all__ = ["DEFAULT_GRIDS", "ModelDetector", "from_model"]


#: ``tune``'s grid when none is given: each detector class's ``default_grid`` (the
#: paper's OPNP grid, section 4.1, for the OPNP family); methods without one have no
#: hyperparameter to search. (A listing of the built-in methods: ``tune`` reads the class,
#: so a detector registered later has its grid too. What each method needs is declared
#: by its detector class, opnp.detectors.base.Detector, and read from it here.)
DEFAULT_GRIDS: dict[str, dict[str, list]] = {
    name: dict(detector_class(name).default_grid)
    for name in available_detectors()
    if detector_class(name).default_grid
}


def from_model(model, method: str = "opnp", head: str | None = None, **options) -> ModelDetector:
    """A :class:`ModelDetector` running ``method`` on ``model`` (a classifier ``nn.Module``).

    ``head``: name of the final ``nn.Linear`` (``dict(model.named_modules())`` key); by
    default the last ``nn.Linear`` that runs in the forward pass. ``options``: the
    method's hyperparameters, as for :func:`opnp.create_detector` (and ``std``, the
    per-channel std of the input normalisation, for a network-level method such as ODIN,
    whose input step divides by it), and
    ``batch_size`` (default 256) that splits tensors passed whole, ``progress`` (default
    True) that shows a tqdm bar in ``fit``, ``score_loader`` and ``tune``.
    """
    return ModelDetector(model, method, head, **options)


class ModelDetector(ModelHead):
    """A detector of the registry applied to a classifier ``nn.Module``.

    Built by :func:`from_model`. Attributes after the first batch: ``head_name``,
    ``weight`` (C, D) and ``bias`` (C,) (float64 copies of the head, see
    :class:`~opnp.nets.model_head.ModelHead`); after ``fit``: ``statistics``
    (:class:`~opnp.nets.fit_statistics.TrainingStatistics`) and ``detector`` (the fitted
    feature-level detector). The model runs in eval mode inside every call (its training
    flag is restored afterwards), without gradients except where a network-level
    detector (``needs_network``, e.g. ODIN's input step) takes them.
    """

    def __init__(
        self,
        model,
        method: str = "opnp",
        head: str | None = None,
        *,
        batch_size: int = 256,
        progress: bool = True,
        std: Any = 1.0,
        **params,
    ):
        super().__init__(model, head, batch_size=batch_size, progress=progress)
        if method not in available_detectors():
            raise ValueError(
                f"unknown method {method!r}; available: {', '.join(available_detectors())}"
            )
        self.method = method
        self.std = std
        # A network-level method scores images with the model: no head, nothing fitted.
        self.needs_network = detector_class(method).needs_network
        # unknown or invalid hyperparameters fail here, not after a pass over the data
        checked = self._check_params(params)
        self.params = dict(checked.params if self.needs_network else params)
        self.statistics: TrainingStatistics | None = None
        self.detector = None

    def _check_params(self, params: Mapping[str, Any]):
        """The detector built from ``params`` (on a dummy head where it needs one):
        ValueError naming an unknown or invalid hyperparameter (no data touched)."""
        if self.needs_network:
            return create_detector(self.method, **params)
        checked = {k: v for k, v in params.items() if k != "param_sensitivity"}
        return create_detector(self.method, weight=np.ones((2, 2)), bias=np.zeros(2), **checked)

    # -- fit / score ------------------------------------------------------------------
    @property
    def needs(self) -> tuple[str, ...]:
        cls = detector_class(self.method)
        needs = cls.fit_needs_for(self.params)
        if self.method == "react" and self.params.get("threshold") is not None:
            return ()
        if cls.uses_sensitivity and self.params.get("param_sensitivity") is not None:
            return tuple(n for n in needs if n != "sensitivity")
        return needs

    def fit(self, data=None, labels=None) -> ModelDetector:
        """One pass over the training data (a tensor, optionally with ``labels``, or a
        loader of ``inputs`` / ``(inputs, labels)`` batches; labels are needed by
        mahalanobis and line) collecting what the method needs; returns ``self``."""
        needs = self.needs
        if data is None:
            if needs:
                raise ValueError(
                    f"{self.method}.fit needs training data (it collects {list(needs)})"
                )
            self.statistics = None
            self.detector = None
            return self
        stats = None
        rows = self._rows(data, labels)
        for row, x, y in self._progress(rows, data, f"fit {self.method}"):
            h, _ = self._forward(x, row, "training input")
            if stats is None:
                stats = TrainingStatistics(
                    needs,
                    self.weight,
                    self.bias,
                    temperature=float(self.params.get("temperature", 1.0)),
                    reduction=self.params.get("reduction", "per_sample"),
                )
            stats.update(
                to_numpy(h),
                None if y is None else np.asarray(y.cpu() if hasattr(y, "cpu") else y),
                row=row,
            )
        if stats is None:
            raise ValueError("fit got no batches")
        self.statistics = stats
        self.detector = self._build(self.params)
        return self

    def _build(self, params: Mapping[str, Any]):
        """The detector with ``params``, fitted from ``self.statistics`` (a network-level
        one has nothing to fit)."""
        if self.needs_network:
            return create_detector(self.method, **params)
        stats = self.statistics
        needs = self.needs
        kwargs = dict(params)
        if "sensitivity" in needs:
            kwargs["param_sensitivity"] = stats.sensitivity
        det = create_detector(self.method, weight=self.weight, bias=self.bias, **kwargs)
        if "features" in needs:
            return det.fit(stats.features, stats.labels)
        if "covariance" in needs:
            return det.fit_gaussian(stats.classes, stats.class_means, stats.covariance)
        # These detectors use the training features only through a column mean (dice:
        # mean h; tnp: mean |h|; line: the mean of each class), so fitting them on the
        # streamed means, one row each, gives exactly the fit on all features.
        if "mean" in needs:
            return det.fit(stats.mean[None, :])
        if "abs_mean" in needs:
            return det.fit(stats.abs_mean[None, :])
        if "class_means" in needs:
            return det.fit(stats.class_means, stats.classes)
        return det.fit(None)

    def _detector(self):
        if self.detector is None:
            if self.needs:
                raise ValueError(f"{self.method}: call fit(train_data) before scoring")
            if self.weight is None:
                raise ValueError("the head is not known yet: score or fit one batch first")
            self.detector = self._build(self.params)
        return self.detector

    def score(self, x) -> np.ndarray:
        """Scores (B,) float64 of one batch (tensor), higher = in-distribution; a loader
        or a tensor larger than ``batch_size`` goes through :meth:`score_loader`."""
        import torch

        if not isinstance(x, torch.Tensor) or len(x) > self.batch_size:
            return self.score_loader(x)
        return self._score_batch(x, self.params)

    def _score_batch(self, x, params, row: int = 0) -> np.ndarray:
        if self.needs_network:
            if self._head is None:
                self._forward(x, row)  # head and weights, for predict / to_module errors
            detector = create_detector(self.method, **params)
            return detector.score_batch(self.model, self._prepare_input(x, row), std=self.std)
        h, _ = self._forward(x, row)
        return self._detector().score(to_numpy(h))

    def score_loader(self, data) -> np.ndarray:
        """Scores (N,) float64 of every input of a loader (or tensor), in order."""
        out = [
            self._score_batch(x, self.params, row)
            for row, x, _ in self._progress(self._rows(data), data, f"score {self.method}")
        ]
        if not out:
            raise ValueError("score_loader got no batches")
        return np.concatenate(out)

    # -- validation search ------------------------------------------------------------
    def tune(
        self, id_val, ood_val, grid: Mapping[str, Iterable] | None = None, metric: str = "fpr95"
    ):
        """Validation search of the workflow, then refit with the chosen setting.

        ``id_val``: ID validation inputs (tensor or loader); ``ood_val``: OOD validation
        inputs, or a dict name -> inputs (the selection uses the mean over the sets).
        ``grid``: hyperparameter -> values (default: the class's ``default_grid``, listed
        in :data:`DEFAULT_GRIDS`; the other hyperparameters keep their values); ``metric``:
        ``fpr95`` or ``auroc`` (:func:`opnp.selection_rule.select_best`, the workflow's
        rule). The OPNP family is scored with the vectorised grid of its class's
        ``grid_scorer``, as in the workflow's search; statistics are those of the last
        ``fit`` (no new pass over the training data). Returns the table of every
        (config, OOD set) with metrics in percent (:func:`opnp.result_rows.score_rows`)
        and a ``selected`` column; ``self.params`` becomes the chosen setting.
        """
        import pandas as pd

        from opnp.selection_rule import mark_selected

        if not isinstance(ood_val, Mapping):
            ood_val = {"ood": ood_val}
        configs = self._tune_configs(grid, ood_val)
        if self.needs_network:
            rows = self._tune_rows_on_images(configs, id_val, ood_val)
        else:
            id_h = self._all_features(id_val, "tune: ID features")
            ood_h = {
                name: self._all_features(d, f"tune: {name} features") for name, d in ood_val.items()
            }
            if detector_class(self.method).uses_sensitivity:
                rows = self._tune_rows_by_grid(configs, id_h, ood_h)
            else:
                rows = self._tune_rows_on_features(configs, id_h, ood_h)
        table = mark_selected(pd.DataFrame(rows), metric)
        chosen = configs[[i for i, c in enumerate(configs) if _same(c, table)][0]]
        self.params = {**self.params, **chosen}
        self.detector = self._build(self.params)
        return table

    def _tune_configs(self, grid, ood_val: Mapping[str, Any]) -> list[dict]:
        """The configs ``tune`` searches: ``grid`` (default :data:`DEFAULT_GRIDS`) with
        the other hyperparameters fixed; every check that can fail does so here, before
        any forward pass."""
        from opnp.selection_rule import expand_grid

        cls = detector_class(self.method)
        grid = dict(cls.default_grid if grid is None else grid)
        if cls.uses_sensitivity:
            varied = sorted(set(cls.sensitivity_depends_on(self.params)) & set(grid))
            if varied:
                raise ValueError(
                    f"tune cannot vary {', '.join(varied)} of the OPNP family: they change the "
                    "sensitivity that fit computed; create one detector per value instead"
                )
        if self.needs and self.statistics is None:
            raise ValueError(f"{self.method}: call fit(train_data) before tune")
        fixed = {
            k: v for k, v in self.params.items()
            if k not in grid and not (isinstance(v, np.ndarray) or hasattr(v, "detach"))
        }  # fmt: skip
        if not ood_val:
            raise ValueError(
                "tune needs OOD validation data: ood_val is an empty dict (pass inputs, or a "
                "dict name -> inputs with at least one entry)"
            )
        configs = expand_grid(grid, fixed)
        for config in configs:  # a bad grid value fails here, before any forward pass
            self._check_params(config)
        return configs

    def _tune_rows_on_images(self, configs, id_val, ood_val: Mapping[str, Any]) -> list[dict]:
        """Validation rows of a network-level method: each config scores the images."""
        from opnp.result_rows import score_rows

        rows = []
        for params in self._progress(configs, configs, f"tune {self.method}"):
            id_scores = np.concatenate(
                [self._score_batch(x, params, r) for r, x, _ in self._rows(id_val)]
            )
            ood_scores = {
                name: np.concatenate([self._score_batch(x, params, r) for r, x, _ in self._rows(d)])
                for name, d in ood_val.items()
            }
            rows += score_rows(
                id_scores, ood_scores, method=self.method, params=params, split="val"
            )
        return rows

    def _tune_rows_on_features(self, configs, id_h, ood_h: Mapping[str, Any]) -> list[dict]:
        """Validation rows of a feature-level method: one fitted detector per config."""
        from opnp.result_rows import score_rows

        rows = []
        for params in self._progress(configs, configs, f"tune {self.method}"):
            det = self._build(params)
            rows += score_rows(
                det.score(id_h),
                {name: det.score(h) for name, h in ood_h.items()},
                method=self.method,
                params=params,
                split="val",
            )
        return rows

    def _tune_rows_by_grid(self, configs, id_h, ood_h: Mapping[str, Any]) -> list[dict]:
        """Validation rows of the OPNP family, scored as the workflow's search scores them
        (:func:`opnp.pipeline.evaluation.evaluate_configs`): the class's vectorised
        ``grid_scorer``, or one detector per config where it declines (one config, or
        more than the percentages varied), all on one sensitivity: that of the last
        ``fit`` (or the one given, or the fitted detector's)."""
        from opnp.result_rows import score_rows

        stats = self.statistics
        if stats is not None and "sensitivity" in self.needs:
            sensitivity = stats.sensitivity
        elif self.params.get("param_sensitivity") is not None:
            sensitivity = self.params["param_sensitivity"]
        else:  # computed by the fitted detector itself (e.g. from clipped features)
            sensitivity = self._detector().param_sensitivity
        statistic = self.params.get("neuron_statistic", "mean")
        train_features = stats.features if "features" in self.needs else None
        grid_scores = detector_class(self.method).grid_scorer(
            configs,
            weight=self.weight,
            bias=self.bias,
            sensitivity=sensitivity,
            statistic=statistic,
            train_features=train_features,
            features={"ID": id_h, **ood_h},
        )
        rows = []
        for index, params in enumerate(configs):
            if grid_scores is not None:
                ood_scores = grid_scores(index)
                id_scores = ood_scores.pop("ID")
            else:
                kwargs = {**params, "param_sensitivity": sensitivity, "neuron_statistic": statistic}
                det = create_detector(self.method, weight=self.weight, bias=self.bias, **kwargs)
                det.fit(train_features)
                id_scores = det.score(id_h)
                ood_scores = {name: det.score(h) for name, h in ood_h.items()}
            rows += score_rows(
                id_scores, ood_scores, method=self.method, params=params, split="val"
            )
        return rows

    # -- export -----------------------------------------------------------------------
    def to_module(self, score_dtype=None):
        """A plain ``nn.Module`` x -> (logits, score) in one forward pass: the model up to
        the head, the unpruned head (logits, as the model's output) and the fitted
        detector on the same features as a second head (its scores equal :meth:`score`).
        Exportable with ``torch.export`` and ONNX (:meth:`export_program`,
        :meth:`export_onnx`). See :func:`opnp.nets.export.detector_module`."""
        from opnp.nets.export import detector_module

        return detector_module(self, score_dtype=score_dtype)

    def export_program(self, example, exporter: str = "auto", score_dtype=None):
        """:meth:`to_module` through :func:`opnp.nets.export.export_program`
        (``torch.export``, TorchScript as the fallback); ``example``: a batch of inputs."""
        from opnp.nets.export import export_program

        return export_program(self.to_module(score_dtype), example, exporter)

    def export_onnx(self, path, example, exporter: str = "auto", score_dtype=None) -> str:
        """:meth:`to_module` written to the ONNX file ``path`` through
        :func:`opnp.nets.export.export_onnx` (dynamo exporter, the TorchScript-based one
        as the fallback); returns the exporter used."""
        from opnp.nets.export import export_onnx

        return export_onnx(self.to_module(score_dtype), example, path, exporter)

    def __repr__(self) -> str:
        args = ", ".join(
            f"{k}={v!r}" for k, v in self.params.items() if not isinstance(v, np.ndarray)
        )
        return f"ModelDetector({self.method!r}, head={self.head_name!r}, {args})"


def _same(config: Mapping[str, Any], table) -> bool:
    from opnp.result_rows import params_json

    chosen = table.loc[table["selected"], "params"].iloc[0]
    return params_json(config) == chosen
