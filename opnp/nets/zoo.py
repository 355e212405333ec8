"""Models of the torchvision and timm zoos as :class:`~opnp.nets.architectures.FeatureClassifier`.

``torchvision:<name>``
    any torchvision classification model; its last ``nn.Linear`` becomes ``fc``
    (``resnet50``: avgpool output, 2048-d). ``pretrained``: a weights name
    (``IMAGENET1K_V1``) or ``true`` (``DEFAULT``), read from the torch hub cache only.
``timm:<name>``
    any timm model; ``fc`` is its classifier and the backbone returns
    ``forward_head(x, pre_logits=True)`` (``vit_base_patch16_224``: 768-d).
    ``pretrained``: ``true`` or a timm tag, read from the Hugging Face cache only.

Nothing is downloaded unless ``allow_download`` (``build_model(..., allow_download=True)``).
Table 7 stages: the last convolution of each ResNet ``layerK``, or for transformers the
last ``nn.Linear`` of the blocks at 1/4, 2/4, 3/4 and 4/4 of the depth.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from opnp.nets.architectures import FeatureClassifier, PreLogits, resnet_stages


def _block_stages(blocks: Sequence[nn.Module], blocks_name: str) -> dict[str, str]:
    """Transformers: the last Linear of blocks at 1/4, 2/4, 3/4 and 4/4 of the depth."""
    depth = len(blocks)
    stages = {}
    for k in range(1, 5):
        index = max(0, round(depth * k / 4) - 1)
        linears = [n for n, m in blocks[index].named_modules() if isinstance(m, nn.Linear)]
        if linears:
            stages[f"layer{k}"] = f"backbone.{blocks_name}.{index}.{linears[-1]}"
    return stages


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to use as fc")
    return linears[-1]


def torchvision_weights(name: str, pretrained: Any):
    """The torchvision weights enum member ``pretrained`` names (True: DEFAULT), None
    for no weights."""
    import torchvision

    if pretrained in (None, False):
        return None
    weights_enum = torchvision.models.get_model_weights(name)
    key = "DEFAULT" if pretrained is True else str(pretrained)
    try:
        return weights_enum[key]
    except KeyError as err:
        raise ValueError(
            f"pretrained {pretrained!r} is not a weights name of torchvision:{name}; "
            f"available: {[w.name for w in weights_enum]}"
        ) from err


def torchvision_model(name, num_classes, pretrained, allow_download) -> FeatureClassifier:
    """torchvision model ``name`` split into feature extractor and FC layer, weights from
    the local cache only unless ``allow_download``."""
    import torchvision

    if name not in torchvision.models.list_models():
        raise ValueError(f"unknown torchvision model {name!r} (arch torchvision:{name})")
    weights = torchvision_weights(name, pretrained)
    net = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if weights is not None:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
        if not cached.is_file() and not allow_download:
            raise FileNotFoundError(
                f"weights {weights} of torchvision:{name} are not in the local cache ({cached}). "
                f'Fetch them once with: python -c "import torchvision; '
                f"torchvision.models.get_model('{name}', weights='{weights.name}')\", "
                "or give a local file as 'checkpoint'"
            )
        n_weights = len(weights.meta.get("categories") or [])
        if n_weights and n_weights != num_classes:
            raise ValueError(
                f"weights {weights} have {n_weights} classes but num_classes is {num_classes}"
            )
        net.load_state_dict(weights.get_state_dict(progress=False, check_hash=True))
    fc_name, fc = _last_linear(net)
    net.set_submodule(fc_name, nn.Identity())
    stages = resnet_stages(net)
    if not stages and hasattr(net, "encoder") and hasattr(net.encoder, "layers"):
        stages = _block_stages(list(net.encoder.layers), "encoder.layers")
    return FeatureClassifier(net, fc, stages, f"torchvision:{name}")


class _TimmPreLogits(PreLogits):
    """A timm model without its classifier: ``forward_head(forward_features(x), pre_logits=True)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def timm_name(name: str, pretrained: Any) -> str:
    """The timm model name with the pretrained tag ``pretrained`` (a string) appended."""
    return f"{name}.{pretrained}" if isinstance(pretrained, str) and "." not in name else name


@contextlib.contextmanager
def _hf_offline(enabled: bool):
    """Hugging Face hub in offline mode (local cache only) for the duration."""
    if not enabled:
        yield
        return
    previous_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as hf_constants
    except ImportError:  # pragma: no cover - timm depends on huggingface_hub
        hf_constants = None
    previous_const = getattr(hf_constants, "HF_HUB_OFFLINE", None)
    if hf_constants is not None:
        hf_constants.HF_HUB_OFFLINE = True  # read at import time; patch the live value
    try:
        yield
    finally:
        if hf_constants is not None:
            hf_constants.HF_HUB_OFFLINE = previous_const
        if previous_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous_env


def timm_model(name, num_classes, in_channels, pretrained, allow_download) -> FeatureClassifier:
    """timm model ``name`` split into feature extractor and FC layer (Hugging Face hub
    offline unless ``allow_download``)."""
    import timm

    full = timm_name(name, pretrained)
    try:
        with _hf_offline(not allow_download):
            net = timm.create_model(
                full, pretrained=bool(pretrained), num_classes=num_classes, in_chans=in_channels
            )
    except Exception as err:
        if pretrained and not allow_download:
            raise FileNotFoundError(
                f"pretrained weights of timm:{full} are not in the local Hugging Face cache "
                f'({type(err).__name__}: {err}). Fetch them once with: python -c "import timm; '
                f"timm.create_model('{full}', pretrained=True)\", or give a local 'checkpoint'"
            ) from err
        raise
    fc = net.get_classifier()
    if not isinstance(fc, nn.Linear):
        raise ValueError(f"timm:{name} has a {type(fc).__name__} classifier, not an nn.Linear")
    net.reset_classifier(0)
    backbone = _TimmPreLogits(net)
    stages = resnet_stages(net, prefix="backbone.model")
    if not stages and hasattr(net, "blocks"):
        stages = _block_stages(list(net.blocks), "model.blocks")
    return FeatureClassifier(backbone, fc, stages, f"timm:{name}")
