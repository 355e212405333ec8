"""OPNP (and every other detector of the registry) on a PyTorch classifier, in a few lines::

    detector = opnp.from_model(model, "opnp", weight_low=10, neuron_high=5)
    detector.fit(train_loader)              # one streaming pass, on the model's device
    scores = detector.score(images)         # float64 (B,), higher = in-distribution
    table = detector.tune(id_val_loader, {"textures": ood_val_loader})
    deployable = detector.to_module()       # nn.Module: x -> (logits, score)

The model is split at its *head*, the final ``nn.Linear``: its input is the feature h (B, D)
and its weight and bias are the FC layer of the paper. By default the head is the last
``nn.Linear`` that runs in the forward pass, found with forward hooks on the first batch
(so torchvision, timm and custom models work without knowing their attribute names);
``head="fc"`` names it. Errors: a named module that is not an ``nn.Linear``, a head that runs
more than once per forward pass (it would not be one layer applied to one feature), a
forward pass that runs no ``nn.Linear``, a head whose input is not (B, D).

Scores are computed by the feature-level detectors (:func:`opnp.create_detector`) on the
head's input, so ``ModelDetector(m, method).score(x)`` equals
``create_detector(method, weight=W, bias=b).fit(train_h).score(h)`` on the model's own
features (tested). ODIN, which needs the network, uses :func:`opnp.odin_scores`.

What ``fit`` keeps (one pass over the training data; memory independent of its length
unless the method needs every feature):

- nothing: msp, maxlogit, energy, ash, gradnorm, rpp, rnp, tpp, odin (``fit`` may be
  skipped);
- the parameter sensitivity S (C, D), streamed (:class:`opnp.sensitivity.
  SensitivityAccumulator`): opp, onp, opnp, opnp+msp;
- the feature mean (D,): dice; the mean absolute feature (D,): tnp; the class means
  (K, D): line; class means and the shared covariance (D, D), streamed with a shifted
  second moment: mahalanobis;
- every training feature (N x D, in the model's dtype): knn (its feature bank), and the
  methods with a ReAct threshold (react without ``threshold=``, dice+react, opnp+react):
  the threshold is the exact percentile of *all* N*D training activations, which no
  fixed-memory statistic gives exactly (an approximate quantile sketch would change the
  threshold and so every score). Registered detectors this module does not know also
  get all features.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from opnp.detectors import available_detectors, create_detector, methods_where
from opnp.sensitivity import SensitivityAccumulator

#: Method name -> what ``fit`` collects (see the module docstring). Unknown names: "features".
FIT_NEEDS = {
    "msp": (),
    "maxlogit": (),
    "energy": (),
    "ash": (),
    "gradnorm": (),
    "rpp": (),
    "rnp": (),
    "tpp": (),
    "odin": (),
    "opp": ("sensitivity",),
    "onp": ("sensitivity",),
    "opnp": ("sensitivity",),
    "opnp+msp": ("sensitivity",),
    "opnp+react": ("sensitivity", "features"),
    "opp+react": ("sensitivity", "features"),
    "dice": ("mean",),
    "tnp": ("abs_mean",),
    "line": ("class_means",),
    "mahalanobis": ("class_means", "covariance"),
    "knn": ("features",),
    "react": ("features",),
    "dice+react": ("features",),
}
# The workflow's list: one home for which methods prune by the OPNP sensitivities.
SENSITIVITY_METHODS = tuple(methods_where("uses_sensitivity"))
LABELLED_METHODS = tuple(methods_where("needs_labels"))
ODIN_DEFAULTS = {"temperature": 1000.0, "epsilon": 0.0014}

_OPNP_GRID = {  # paper section 4.1 (as in config/imagenet.yaml)
    "weight_low": [0, 10, 20, 30, 40],
    "weight_high": [0, 0.1, 0.2, 0.5, 1],
    "neuron_low": [0, 5, 10, 20, 30],
    "neuron_high": [0, 1, 5, 10, 20],
}
#: ``tune``'s grid when none is given: the paper's OPNP grid (section 4.1, the values of
#: config/imagenet.yaml) for the OPNP family, the default config's grids for the others;
#: methods not listed have no hyperparameter to search.
DEFAULT_GRIDS: dict[str, dict[str, list]] = {
    "opp": {k: _OPNP_GRID[k] for k in ("weight_low", "weight_high")},
    "onp": {k: _OPNP_GRID[k] for k in ("neuron_low", "neuron_high")},
    "opnp": _OPNP_GRID,
    "opnp+react": _OPNP_GRID,
    "opp+react": {k: _OPNP_GRID[k] for k in ("weight_low", "weight_high")},
    "opnp+msp": _OPNP_GRID,
    "odin": {"temperature": [1, 10, 100, 1000], "epsilon": [0.0, 0.0014, 0.005]},
    "react": {"percentile": [80, 85, 90, 95, 99]},
    "dice": {"percentile": [10, 30, 50, 70, 90]},
    "dice+react": {"percentile": [10, 30, 50, 70, 90]},
    "ash": {"percentile": [60, 70, 80, 90]},
    "knn": {"k": [1, 5, 10, 50]},
    "line": {"p_w": [10, 50, 90], "p_a": [10, 50, 90], "clip": [0.8, 1.0]},
    "rpp": {"percentage": [1, 5, 10, 20, 40]},
    "tpp": {"percentage": [1, 5, 10, 20, 40]},
    "rnp": {"percentage": [1, 5, 10, 20, 40]},
    "tnp": {"percentage": [1, 5, 10, 20, 40]},
}


def from_model(
    model,
    method: str = "opnp",
    head: str | None = None,
    *,
    batch_size: int = 256,
    progress: bool = True,
    std: Any = 1.0,
    **params,
) -> ModelDetector:
    """A :class:`ModelDetector` running ``method`` on ``model`` (a classifier ``nn.Module``).

    ``head``: name of the final ``nn.Linear`` (``dict(model.named_modules())`` key); by
    default the last ``nn.Linear`` that runs in the forward pass. ``params``: the method's
    hyperparameters, as for :func:`opnp.create_detector` (ODIN: ``temperature``,
    ``epsilon``, and ``std`` = the per-channel std of the input normalisation).
    ``batch_size`` splits tensors passed whole; ``progress`` shows a tqdm bar in ``fit``,
    ``score_loader`` and ``tune``.
    """
    return ModelDetector(
        model, method, head, batch_size=batch_size, progress=progress, std=std, **params
    )


class TrainingStatistics:
    """What ``fit`` streams from the training features (see the module docstring).

    ``update(h, labels)`` with chunks (k, D) of features; the results are the attributes
    ``n``, ``mean``, ``abs_mean``, ``classes`` / ``class_means`` / ``class_counts``,
    ``covariance`` (shared, class-centred, divided by N as in
    :class:`opnp.detectors.mahalanobis.Mahalanobis`), ``sensitivity`` and ``features`` /
    ``labels`` (all rows), each computed only when named in ``needs``.
    """

    def __init__(
        self,
        needs: Iterable[str],
        weight: np.ndarray,
        bias: np.ndarray,
        temperature: float = 1.0,
        reduction: str = "per_sample",
    ):
        self.needs = frozenset(needs)
        unknown = self.needs - {
            "sensitivity", "features", "mean", "abs_mean", "class_means", "covariance"
        }  # fmt: skip
        if unknown:
            raise ValueError(f"unknown training statistics {sorted(unknown)}")
        self.n = 0
        d = weight.shape[1]
        self._sum = np.zeros(d)
        self._abs_sum = np.zeros(d)
        self._class_sums: dict[int, np.ndarray] = {}
        self._class_counts: dict[int, int] = {}
        self._shift: np.ndarray | None = None  # first chunk's mean: keeps the moments small
        self._shifted_moment = np.zeros((d, d)) if "covariance" in self.needs else None
        self._sensitivity = (
            SensitivityAccumulator(weight, bias, temperature, reduction)
            if "sensitivity" in self.needs
            else None
        )
        self._features: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    @property
    def needs_labels(self) -> bool:
        return bool(self.needs & {"class_means", "covariance"})

    def update(self, h: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Add one chunk of features (k, D) and, where needed, integer labels (k,)."""
        if self.needs_labels and labels is None:
            raise ValueError(
                "fitting this method needs class labels: pass (inputs, labels) batches"
            )
        h64 = np.asarray(h, dtype=np.float64)
        self.n += len(h64)
        if "mean" in self.needs:
            self._sum += h64.sum(axis=0)
        if "abs_mean" in self.needs:
            self._abs_sum += np.abs(h64).sum(axis=0)
        if self.needs_labels:
            labels = np.asarray(labels).astype(np.int64)
            for label in np.unique(labels):
                rows = labels == label
                key = int(label)
                self._class_sums[key] = self._class_sums.get(key, 0.0) + h64[rows].sum(axis=0)
                self._class_counts[key] = self._class_counts.get(key, 0) + int(rows.sum())
        if self._shifted_moment is not None:
            if self._shift is None:
                self._shift = h64.mean(axis=0)
            centred = h64 - self._shift
            self._shifted_moment += centred.T @ centred
        if self._sensitivity is not None:
            self._sensitivity._add(h64)
        if "features" in self.needs:
            self._features.append(np.array(h))  # a copy in the model's dtype
            if labels is not None:
                self._labels.append(np.asarray(labels).astype(np.int64))

    # -- results ----------------------------------------------------------------------
    def _check(self) -> None:
        if self.n == 0:
            raise ValueError("fit saw no training samples")

    @property
    def mean(self) -> np.ndarray:
        self._check()
        return self._sum / self.n

    @property
    def abs_mean(self) -> np.ndarray:
        self._check()
        return self._abs_sum / self.n

    @property
    def classes(self) -> np.ndarray:
        return np.array(sorted(self._class_sums), dtype=np.int64)

    @property
    def class_counts(self) -> np.ndarray:
        return np.array([self._class_counts[c] for c in self.classes], dtype=np.float64)

    @property
    def class_means(self) -> np.ndarray:
        self._check()
        sums = np.stack([self._class_sums[c] for c in self.classes])
        return sums / self.class_counts[:, None]

    @property
    def covariance(self) -> np.ndarray:
        """(1/N) sum_k (h_k - mu_y)(h_k - mu_y)^T, from sum (h - r)(h - r)^T minus
        sum_c n_c (mu_c - r)(mu_c - r)^T with r the first chunk's mean (the shifted
        second moment: no cancellation of large raw moments)."""
        self._check()
        offsets = self.class_means - self._shift
        between = (offsets * self.class_counts[:, None]).T @ offsets
        return (self._shifted_moment - between) / self.n

    @property
    def sensitivity(self) -> np.ndarray:
        return self._sensitivity.result()

    @property
    def features(self) -> np.ndarray:
        self._check()
        return np.concatenate(self._features)

    @property
    def labels(self) -> np.ndarray | None:
        return np.concatenate(self._labels) if self._labels else None


class ModelDetector:
    """A detector of the registry (or ODIN) applied to a classifier ``nn.Module``.

    Built by :func:`from_model`. Attributes after the first batch: ``head_name``,
    ``weight`` (C, D) and ``bias`` (C,) (float64 copies of the head); after ``fit``:
    ``statistics`` (:class:`TrainingStatistics`) and ``detector`` (the fitted
    feature-level detector). The model runs in eval mode inside every call (its
    training flag is restored afterwards), without gradients except ODIN's input step.
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
        import torch

        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if method != "odin" and method not in available_detectors():
            raise ValueError(
                f"unknown method {method!r}; available: odin, {', '.join(available_detectors())}"
            )
        if head is not None and not isinstance(head, str):
            raise ValueError(f"head must be a module name (str) or None, got {head!r}")
        if not (isinstance(batch_size, int) and batch_size > 0):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model = model
        self.method = method
        self.head_name = head
        self.batch_size = batch_size
        self.progress = progress
        self.std = std
        if method == "odin":
            unknown = sorted(set(params) - set(ODIN_DEFAULTS))
            if unknown:
                raise ValueError(
                    f"odin: unknown hyperparameter(s) {unknown}; accepted: {sorted(ODIN_DEFAULTS)}"
                )
            params = {**ODIN_DEFAULTS, **params}
        else:  # unknown or invalid hyperparameters fail here, not after a pass over the data
            checked = {k: v for k, v in params.items() if k != "param_sensitivity"}
            create_detector(method, weight=np.ones((2, 2)), bias=np.zeros(2), **checked)
        self.params = dict(params)
        self.weight = self.bias = None
        self.statistics: TrainingStatistics | None = None
        self.detector = None
        self._head = None
        self._output_is_head = None
        if head is not None:
            self._head = self._named_linear(head)

    # -- the head ---------------------------------------------------------------------
    @property
    def device(self):
        import torch

        for tensor in self.model.parameters():
            return tensor.device
        return torch.device("cpu")

    def _named_linear(self, name: str):
        import torch

        modules = dict(self.model.named_modules())
        if name not in modules:
            linears = [n for n, m in modules.items() if isinstance(m, torch.nn.Linear)]
            raise ValueError(
                f"head {name!r} is not a module of the model; its nn.Linear modules: {linears}"
            )
        module = modules[name]
        if not isinstance(module, torch.nn.Linear):
            raise ValueError(
                f"head {name!r} is a {type(module).__name__}, not an nn.Linear: OPNP prunes the "
                "final fully connected layer; name the nn.Linear that produces the logits"
            )
        return module

    def _run_with_head_search(self, x):
        """Forward pass with hooks on every nn.Linear (first batch only): the head is the
        last one that ran. Returns (model output, (head input, head output) of each call)."""
        import torch

        calls: list[tuple[str, Any, Any]] = []

        def record(name):
            return lambda _m, inputs, output: calls.append((name, inputs[0], output))

        hooks = [
            module.register_forward_hook(record(name))
            for name, module in self.model.named_modules()
            if isinstance(module, torch.nn.Linear)
        ]
        try:
            with torch.no_grad(), _eval_mode(self.model):
                out = self.model(x)
        finally:
            for hook in hooks:
                hook.remove()
        if not calls:
            raise ValueError(
                "no nn.Linear ran in the model's forward pass: OPNP needs the final fully "
                "connected layer; pass head= the name of the nn.Linear producing the logits"
            )
        name = calls[-1][0]
        runs = [(h, f) for n, h, f in calls if n == name]
        if len(runs) > 1:
            raise ValueError(
                f"the last nn.Linear of the forward pass, {name!r}, runs {len(runs)} "
                "times per forward pass, so it is not a classifier head applied once to one "
                "feature; pass head= the name of the final classification layer"
            )
        self.head_name = name
        self._head = self._named_linear(name)
        return out, runs

    def _set_head_arrays(self) -> None:
        w = self._head.weight.detach().cpu().double().numpy().copy()
        b = self._head.bias
        self.weight = w
        self.bias = np.zeros(w.shape[0]) if b is None else b.detach().cpu().double().numpy().copy()

    def _forward(self, x):
        """(features h (B, D), head logits (B, C)) of one batch, as detached tensors."""
        import torch

        x = x.to(self.device)
        if self._head is None:
            out, seen = self._run_with_head_search(x)
        else:
            seen = []
            hook = self._head.register_forward_hook(
                lambda _m, inputs, output: seen.append((inputs[0], output))
            )
            try:
                with torch.no_grad(), _eval_mode(self.model):
                    out = self.model(x)
            finally:
                hook.remove()
        if len(seen) != 1:
            raise ValueError(
                f"head {self.head_name!r} ran {len(seen)} times in one forward pass; it must "
                "run exactly once (pass head= the final classification layer)"
            )
        h, logits = seen[0]
        if h.ndim != 2:
            raise ValueError(
                f"the input of head {self.head_name!r} has shape {tuple(h.shape)}; OPNP needs one "
                "feature vector per sample (B, D) (pool tokens / feature maps before the head)"
            )
        if self._output_is_head is None:
            self._output_is_head = out is logits or (
                isinstance(out, torch.Tensor)
                and out.shape == logits.shape
                and torch.equal(out, logits)
            )
        if self.weight is None:
            self._set_head_arrays()
        return h.detach(), logits.detach()

    # -- data -------------------------------------------------------------------------
    def _batches(self, data, labels=None) -> Iterator[tuple[Any, Any]]:
        """(inputs, labels or None) batches of a tensor (split by ``batch_size``), a
        tensor with ``labels``, or an iterable of tensors / (inputs, labels, ...) tuples."""
        import torch

        if isinstance(data, torch.Tensor):
            if labels is not None and len(labels) != len(data):
                raise ValueError(f"labels has {len(labels)} entries but the inputs {len(data)}")
            for start in range(0, len(data), self.batch_size):
                y = None if labels is None else labels[start : start + self.batch_size]
                yield data[start : start + self.batch_size], y
            return
        if labels is not None:
            raise ValueError("labels= goes with a tensor of inputs; a loader yields its own labels")
        if isinstance(data, Mapping) or not isinstance(data, Iterable):
            raise ValueError(
                f"expected a tensor of inputs or an iterable of batches (a DataLoader), got "
                f"{type(data).__name__}"
            )
        for batch in data:
            if isinstance(batch, torch.Tensor):
                yield batch, None
            elif isinstance(batch, list | tuple) and batch and isinstance(batch[0], torch.Tensor):
                yield batch[0], (batch[1] if len(batch) > 1 else None)
            else:
                raise ValueError(
                    f"a batch must be a tensor or an (inputs, labels) tuple, got {type(batch).__name__}"
                )

    def _progress(self, iterable, data, desc: str):
        from tqdm.auto import tqdm

        total = None
        try:
            total = len(data) if not hasattr(data, "shape") else -(-len(data) // self.batch_size)
        except TypeError:
            pass
        return tqdm(iterable, total=total, desc=desc, disable=not self.progress, leave=False)

    # -- fit / score ------------------------------------------------------------------
    @property
    def needs(self) -> tuple[str, ...]:
        needs = FIT_NEEDS.get(self.method, ("features",))
        if self.method == "react" and self.params.get("threshold") is not None:
            return ()
        if self.method in SENSITIVITY_METHODS and self.params.get("param_sensitivity") is not None:
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
        for x, y in self._progress(self._batches(data, labels), data, f"fit {self.method}"):
            h, _ = self._forward(x)
            if stats is None:
                stats = TrainingStatistics(
                    needs,
                    self.weight,
                    self.bias,
                    temperature=float(self.params.get("temperature", 1.0)),
                    reduction=self.params.get("reduction", "per_sample"),
                )
            stats.update(
                h.cpu().numpy(),
                None if y is None else np.asarray(y.cpu() if hasattr(y, "cpu") else y),
            )
        if stats is None:
            raise ValueError("fit got no batches")
        self.statistics = stats
        self.detector = self._build(self.params)
        return self

    def _build(self, params: Mapping[str, Any]):
        """The feature-level detector with ``params``, fitted from ``self.statistics``."""
        if self.method == "odin":
            return None
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

    def features(self, x) -> np.ndarray:
        """The head's input h (B, D) of a batch, as numpy (the model's dtype)."""
        h, _ = self._forward(self._as_batch(x))
        return h.cpu().numpy()

    def predict(self, x):
        """Logits (B, C) of the unpruned head (a tensor on the model's device)."""
        _, logits = self._forward(self._as_batch(x))
        return logits

    def score(self, x) -> np.ndarray:
        """Scores (B,) float64 of one batch (tensor), higher = in-distribution; a loader
        or a tensor larger than ``batch_size`` goes through :meth:`score_loader`."""
        import torch

        if not isinstance(x, torch.Tensor) or len(x) > self.batch_size:
            return self.score_loader(x)
        return self._score_batch(x, self.params)

    def _score_batch(self, x, params) -> np.ndarray:
        if self.method == "odin":
            from opnp.nets.odin import odin_scores

            if self._head is None:
                self._forward(x)  # head and weights, for predict / to_module errors
            return odin_scores(
                self.model,
                x.to(self.device),
                temperature=params["temperature"],
                epsilon=params["epsilon"],
                std=self.std,
            )
        h, _ = self._forward(x)
        return self._detector().score(h.cpu().numpy())

    def score_loader(self, data) -> np.ndarray:
        """Scores (N,) float64 of every input of a loader (or tensor), in order."""
        out = [
            self._score_batch(x, self.params)
            for x, _ in self._progress(self._batches(data), data, f"score {self.method}")
        ]
        if not out:
            raise ValueError("score_loader got no batches")
        return np.concatenate(out)

    def _as_batch(self, x):
        import torch

        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected a batch tensor (B, ...), got {type(x).__name__}")
        return x

    def _all_features(self, data, desc: str) -> np.ndarray:
        parts = [
            self._forward(x)[0].cpu().numpy()
            for x, _ in self._progress(self._batches(data), data, desc)
        ]
        if not parts:
            raise ValueError(f"{desc}: no batches")
        return np.concatenate(parts)

    # -- validation search ------------------------------------------------------------
    def tune(
        self, id_val, ood_val, grid: Mapping[str, Iterable] | None = None, metric: str = "fpr95"
    ):
        """Validation search of the workflow, then refit with the chosen setting.

        ``id_val``: ID validation inputs (tensor or loader); ``ood_val``: OOD validation
        inputs, or a dict name -> inputs (the selection uses the mean over the sets).
        ``grid``: hyperparameter -> values (default :data:`DEFAULT_GRIDS`; the other
        hyperparameters keep their values); ``metric``: ``fpr95`` or ``auroc``
        (:func:`opnp.pipeline.evaluation.select_best`). The OPNP family is scored with the
        vectorised grid of :func:`opnp.pipeline.evaluation.evaluate_configs`; statistics are those
        of the last ``fit`` (no new pass over the training data). Returns the table of every
        (config, OOD set) with metrics in percent and a ``selected`` column; ``self.params``
        becomes the chosen setting.
        """
        import pandas as pd

        from opnp.pipeline.evaluation import evaluate_configs
        from opnp.pipeline.results import score_rows
        from opnp.pipeline.selection import expand_grid, mark_selected

        grid = dict(DEFAULT_GRIDS.get(self.method, {}) if grid is None else grid)
        if self.method in SENSITIVITY_METHODS and {"temperature", "reduction"} & set(grid):
            raise ValueError(
                "tune cannot vary temperature or reduction of the OPNP family: they change the "
                "sensitivity that fit computed; create one detector per value instead"
            )
        if self.needs and self.statistics is None:
            raise ValueError(f"{self.method}: call fit(train_data) before tune")
        fixed = {
            k: v for k, v in self.params.items()
            if k not in grid and not (isinstance(v, np.ndarray) or hasattr(v, "detach"))
        }  # fmt: skip
        configs = expand_grid(grid, fixed)
        if not isinstance(ood_val, Mapping):
            ood_val = {"ood": ood_val}
        if self.method == "odin":
            rows = []
            for params in self._progress(configs, configs, "tune odin"):
                id_scores = np.concatenate(
                    [self._score_batch(x, params) for x, _ in self._batches(id_val)]
                )
                ood_scores = {
                    name: np.concatenate(
                        [self._score_batch(x, params) for x, _ in self._batches(d)]
                    )
                    for name, d in ood_val.items()
                }
                rows += score_rows(id_scores, ood_scores, method="odin", params=params, split="val")
        else:
            id_h = self._all_features(id_val, "tune: ID features")
            ood_h = {
                name: self._all_features(d, f"tune: {name} features") for name, d in ood_val.items()
            }
            if self.method in SENSITIVITY_METHODS:
                stats = self.statistics
                sensitivity = (
                    stats.sensitivity
                    if stats is not None and "sensitivity" in self.needs
                    else self.params["param_sensitivity"]
                )
                rows, _ = evaluate_configs(
                    self.method,
                    configs,
                    weight=self.weight,
                    bias=self.bias,
                    train_features=stats.features if "features" in self.needs else None,
                    train_labels=None,
                    id_features=id_h,
                    ood_features=ood_h,
                    split="val",
                    sensitivity=sensitivity,
                    statistic=self.params.get("neuron_statistic", "mean"),
                )
            else:
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
        table = mark_selected(pd.DataFrame(rows), metric)
        chosen = configs[[i for i, c in enumerate(configs) if _same(c, table)][0]]
        self.params = {**self.params, **chosen}
        self.detector = self._build(self.params) if self.method != "odin" else None
        return table

    # -- export -----------------------------------------------------------------------
    def to_module(self, score_dtype=None):
        """A plain ``nn.Module`` x -> (logits, score) in one forward pass: the model up to
        the head, the unpruned head (logits, as the model's output) and the fitted
        detector on the same features as a second head (its scores equal :meth:`score`).
        Scriptable with ``torch.jit.script`` and exportable with ``torch.onnx.export``.
        See :func:`opnp.nets.export.detector_module`."""
        from opnp.nets.export import detector_module

        return detector_module(self, score_dtype=score_dtype)

    def __repr__(self) -> str:
        args = ", ".join(
            f"{k}={v!r}" for k, v in self.params.items() if not isinstance(v, np.ndarray)
        )
        return f"ModelDetector({self.method!r}, head={self.head_name!r}, {args})"


def _same(config: Mapping[str, Any], table) -> bool:
    from opnp.pipeline.results import params_json

    chosen = table.loc[table["selected"], "params"].iloc[0]
    return params_json(config) == chosen


class _eval_mode:
    """Context manager: the model in eval mode, its training flag restored afterwards."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)
