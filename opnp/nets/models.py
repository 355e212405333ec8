"""Classifiers from a model spec, their checkpoints and their input preprocessing.

Every model is a :class:`~opnp.nets.architectures.FeatureClassifier`: ``backbone(x)`` is
the penultimate feature h (N, D) (after global average pooling for CNNs, the pre-logits
token for ViTs) and ``fc`` the last fully connected layer (D -> C) whose weights OPNP
prunes. :func:`build_model` builds one from a model spec (config ``models.<name>``):
``arch`` is a local architecture (:mod:`opnp.nets.architectures`: ``small_cnn``,
``cifar_resnet20/56/50``, ``densenet_bc_100``, ``efficientnet_lite0``) or
``torchvision:<name>`` / ``timm:<name>`` (:mod:`opnp.nets.zoo`). Nothing is downloaded
unless ``build_model(..., allow_download=True)``. :func:`load_checkpoint` loads a local
checkpoint, :func:`preprocessing` gives the eval transform of a spec.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from opnp.nets.architectures import LOCAL_ARCHS, FeatureClassifier, efficientnet_lite0
from opnp.nets.zoo import timm_model, timm_name, torchvision_model, torchvision_weights

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ConvertMode",
    "build_model",
    "load_checkpoint",
    "preprocessing",
]


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Normalisation of the digits model: a fixed map of [0, 1] to [-1, 1] (data-independent,
#: so ID and OOD images are normalised identically).
DIGITS_MEAN, DIGITS_STD = 0.5, 0.5
#: Keys a checkpoint may keep its state dict under.
_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "state")
#: Input normalisation of the DICE DenseNet-BC-100 checkpoints (the CIFAR-10 statistics
#: their training code used for CIFAR-10 and CIFAR-100 alike).
CIFAR_DENSENET_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_DENSENET_STD = (0.2023, 0.1994, 0.2010)
#: EfficientNet-Lite's own input scaling (x - 127/255) / (128/255) per channel, i.e. the
#: TF-Lite uint8 convention (pixel - 127) / 128; the ImageNet mean/std cost about 11
#: points of top-1 on the ImageNet sample of ../shared/data.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
#: Classifier names of public checkpoints that map onto ``fc``.
_FC_ALIASES = ("linear", "fc", "head", "classifier")
#: How many keys a mismatch message lists per kind.
_MAX_LISTED = 5


class ConvertMode:
    """PIL image -> ``mode`` ("L" or "RGB"): the first step of every eval transform."""

    def __init__(self, mode: str):
        if mode not in ("L", "RGB"):
            raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
        self.mode = mode

    def __call__(self, img):
        return img if img.mode == self.mode else img.convert(self.mode)

    def __repr__(self) -> str:
        return f"ConvertMode({self.mode!r})"


def build_model(spec: Mapping[str, Any], allow_download: bool = False) -> FeatureClassifier:
    """A :class:`FeatureClassifier` from a model spec (config ``models.<name>``).

    Keys: ``arch`` (see the module docstring), ``num_classes``, ``in_channels``
    (default 1 for ``small_cnn``, else 3), ``feature_dim`` (``small_cnn`` only, default
    256), ``pretrained`` (torchvision/timm only) and ``checkpoint`` (a local file loaded
    by :func:`load_checkpoint` after any pretrained weights). Returned in eval mode.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"model spec must be a dict, got {type(spec).__name__}")
    arch = spec.get("arch")
    if not isinstance(arch, str) or not arch:
        raise ValueError(f"model spec needs 'arch' (a string), got {arch!r}")
    num_classes = spec.get("num_classes")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"model spec 'num_classes' must be an integer >= 2, got {num_classes!r}")
    pretrained = spec.get("pretrained", False)
    if arch in LOCAL_ARCHS:
        if pretrained:
            raise ValueError(
                f"arch {arch!r} has no pretrained weights (pretrained={pretrained!r}); give a "
                "local 'checkpoint' instead"
            )
        in_channels = int(spec.get("in_channels", 1 if arch == "small_cnn" else 3))
        kwargs = {"num_classes": num_classes, "in_channels": in_channels}
        if arch == "small_cnn" and spec.get("feature_dim") is not None:
            kwargs["feature_dim"] = int(spec["feature_dim"])
        model = LOCAL_ARCHS[arch](**kwargs)
    elif arch == "efficientnet_lite0":
        if int(spec.get("in_channels", 3)) != 3:
            raise ValueError(f"arch {arch} supports in_channels 3 only, got {spec['in_channels']}")
        if pretrained not in (True, False, None):
            raise ValueError(
                f"arch {arch}: pretrained must be true (the packaged ImageNet-1k weights) or "
                f"false, got {pretrained!r}"
            )
        model = efficientnet_lite0(num_classes, pretrained=bool(pretrained))
    elif arch.startswith("torchvision:"):
        if int(spec.get("in_channels", 3)) != 3:
            raise ValueError(f"arch {arch} supports in_channels 3 only, got {spec['in_channels']}")
        model = torchvision_model(arch.split(":", 1)[1], num_classes, pretrained, allow_download)
    elif arch.startswith("timm:"):
        model = timm_model(
            arch.split(":", 1)[1],
            num_classes,
            int(spec.get("in_channels", 3)),
            pretrained,
            allow_download,
        )
    else:
        raise ValueError(
            f"unknown arch {arch!r}; available: {sorted(LOCAL_ARCHS)}, 'efficientnet_lite0', "
            "'torchvision:<name>', 'timm:<name>'"
        )
    if spec.get("checkpoint"):
        load_checkpoint(model, spec["checkpoint"])
    return model.eval()


# ---------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------


def _extract_state_dict(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    if isinstance(obj, Mapping):
        for key in _STATE_KEYS:
            inner = obj.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                meta = {k: v for k, v in obj.items() if k != key}
                return dict(inner), meta
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj), {}
    raise ValueError(
        f"checkpoint {path} holds no state dict (expected a dict of tensors, or one under "
        f"{list(_STATE_KEYS)}); found {type(obj).__name__}"
        + (f" with keys {sorted(map(str, obj))[:10]}" if isinstance(obj, Mapping) else "")
    )


def _strip_prefixes(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):  # DataParallel, torch.compile
        while key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def _map_key(key: str, model_keys: set[str]) -> str:
    """Checkpoint key -> this model's key: as is, under ``backbone.``, or FC aliases."""
    key = _strip_prefixes(key)
    for candidate in (key, f"backbone.{key}", f"backbone.model.{key}"):
        if candidate in model_keys:
            return candidate
    head, _, rest = key.partition(".")
    if head in _FC_ALIASES and f"fc.{rest}" in model_keys:
        return f"fc.{rest}"
    return key


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value if isinstance(value, int | float | str | bool) or value is None else repr(value)


def _torch_load_weights(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with errors that name the file and the fix.

    A refused pickle (a file that holds Python objects, not only tensors) must not repeat
    PyTorch's advice to load it with arbitrary code execution enabled; a truncated or
    corrupt file must name its path.
    """
    import pickle
    import re

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(err))))
        what = f" (it refers to {', '.join(refused)})" if refused else ""
        # `from None`: the chained PyTorch message advises the unsafe retry.
        raise ValueError(
            f"checkpoint {path} is not a plain state dict: it holds pickled Python "
            f"objects{what}, which are refused because unpickling them can run arbitrary "
            "code. Convert it once, in an environment where you trust the file's source: "
            "load the model there and save only its weights with "
            "torch.save(model.state_dict(), 'converted.pt'), then point the model's "
            "'checkpoint' at the converted file"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(
            f"checkpoint {path} cannot be read ({type(err).__name__}: {first_line}): the "
            "file is truncated or corrupt (an interrupted copy or download?); copy it "
            "again from its source"
        ) from None


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load a local checkpoint into ``model`` (``torch.load(weights_only=True)``).

    Accepts a state dict or a dict holding one under ``state_dict``/``model``/...;
    strips ``module.`` (DataParallel) and ``_orig_mod.`` (torch.compile) prefixes;
    maps plain backbone keys under ``backbone.`` and ``linear``/``head``/``classifier``
    onto ``fc``. Missing BatchNorm ``num_batches_tracked`` counters (absent in old
    checkpoints; they only matter for ``momentum=None``) are allowed. Any other missing
    or unexpected key or shape mismatch raises ``ValueError`` naming the first few.
    Returns the checkpoint's other entries (e.g. ``best_prec1``) as plain values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    obj = _torch_load_weights(path)
    raw, meta = _extract_state_dict(obj, path)
    model_state = model.state_dict()
    model_keys = set(model_state)
    state = {}
    for key, value in raw.items():
        state[_map_key(key, model_keys)] = value
    missing = sorted(k for k in model_keys - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - model_keys)
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(model_state[k].shape)}"
        for k in sorted(model_keys & set(state))
        if state[k].shape != model_state[k].shape
    ]
    if missing or unexpected or shapes:
        arch = getattr(model, "arch", None) or type(model).__name__
        parts = []
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        ):
            if items:
                shown = ", ".join(items[:_MAX_LISTED])
                more = (
                    f" ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
                )
                parts.append(f"{len(items)} {label} ({shown}{more})")
        raise ValueError(
            f"checkpoint {path} does not fit model {arch}: "
            + "; ".join(parts)
            + ". Check the model spec (arch, num_classes, in_channels) against the checkpoint"
        )
    model.load_state_dict(state, strict=False)
    return {str(k): _plain(v) for k, v in meta.items()}


# ---------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------


def preprocessing(spec: Mapping[str, Any]):
    """``(eval transform, mean, std)`` of a model spec: PIL image -> normalised tensor.

    - ``small_cnn``: grayscale (``in_channels`` 1) or RGB, no resizing (the network
      pools globally; the digit builders write ``image_size`` images), ``ToTensor`` and
      normalisation with mean 0.5, std 0.5 per channel ([0, 1] -> [-1, 1]).
    - ``cifar_resnet20/56/50``: RGB, 32x32 (other sizes: shorter side to 32 and center
      crop), ImageNet mean/std (the convention of the public CIFAR ResNet checkpoints).
    - ``densenet_bc_100``: RGB, shorter side to 32 and center crop 32 (the DICE test
      transform), mean (0.4914, 0.4822, 0.4465), std (0.2023, 0.1994, 0.2010).
    - ``efficientnet_lite0``: RGB, resize 256 (bilinear), center crop 224, then
      (x - 127/255) / (128/255) per channel (the model's own scaling, not ImageNet's).
    - ``torchvision:<name>``: the pretrained weights' own resize, crop, interpolation
      and mean/std (ResNet-50 ``IMAGENET1K_V1``: resize 256, center crop 224, bilinear);
      without weights: resize 256, center crop 224, ImageNet mean/std.
    - ``timm:<name>``: timm's data config of the pretrained tag (ViT-B/16: bicubic,
      crop_pct 0.9, mean = std = 0.5) via ``timm.data.create_transform``.

    ``mean`` and ``std`` are per-channel tuples (ODIN divides its input step by ``std``).
    """
    from torchvision import transforms as T

    from opnp.data.images import ResizeCenterCrop

    arch = spec.get("arch")
    if arch == "small_cnn":
        channels = int(spec.get("in_channels", 1))
        mean, std = (DIGITS_MEAN,) * channels, (DIGITS_STD,) * channels
        steps = [ConvertMode("L" if channels == 1 else "RGB")]
    elif arch in ("cifar_resnet20", "cifar_resnet56", "cifar_resnet50"):
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        steps = [ConvertMode("RGB"), ResizeCenterCrop(32)]
    elif arch == "densenet_bc_100":
        mean, std = CIFAR_DENSENET_MEAN, CIFAR_DENSENET_STD
        steps = [ConvertMode("RGB"), ResizeCenterCrop(32)]
    elif arch == "efficientnet_lite0":
        mean, std = LITE_MEAN, LITE_STD
        steps = [ConvertMode("RGB"), T.Resize(256, antialias=True), T.CenterCrop(224)]
    elif isinstance(arch, str) and arch.startswith("torchvision:"):
        weights = torchvision_weights(arch.split(":", 1)[1], spec.get("pretrained"))
        if weights is not None:
            preset = weights.transforms()
            mean, std = tuple(preset.mean), tuple(preset.std)
            steps = [
                ConvertMode("RGB"),
                T.Resize(preset.resize_size, interpolation=preset.interpolation, antialias=True),
                T.CenterCrop(preset.crop_size),
            ]
        else:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
            steps = [ConvertMode("RGB"), T.Resize(256, antialias=True), T.CenterCrop(224)]
    elif isinstance(arch, str) and arch.startswith("timm:"):
        import timm
        import timm.data

        name = timm_name(arch.split(":", 1)[1], spec.get("pretrained"))
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is None:
            raise ValueError(f"timm has no pretrained config for {name!r} (arch {arch})")
        data_cfg = timm.data.resolve_data_config(pretrained_cfg=cfg.to_dict())
        tf = timm.data.create_transform(**data_cfg, is_training=False)
        return (
            T.Compose([ConvertMode("RGB"), *tf.transforms]),
            tuple(data_cfg["mean"]),
            tuple(data_cfg["std"]),
        )
    else:
        raise ValueError(f"no preprocessing known for arch {arch!r}")
    transform = T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])
    return transform, tuple(float(m) for m in mean), tuple(float(s) for s in std)
