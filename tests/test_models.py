"""Architectures, FeatureClassifier, checkpoints and preprocessing (opnp.models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from opnp import models as M


@pytest.mark.parametrize("arch", ["small_cnn", "cifar_resnet20"])
def test_features_and_logits_agree_with_forward(arch):
    torch.manual_seed(0)
    model = M.build_model({"arch": arch, "num_classes": 10})
    channels = 1 if arch == "small_cnn" else 3
    x = torch.randn(
        5, channels, 16 if arch == "small_cnn" else 32, 16 if arch == "small_cnn" else 32
    )
    with torch.no_grad():
        h, logits = model.features_and_logits(x)
        assert h.shape == (5, model.feature_dim)
        torch.testing.assert_close(h, model.forward_features(x))
        torch.testing.assert_close(logits, model(x))
        manual = h @ model.fc.weight.T + model.fc.bias
        torch.testing.assert_close(logits, manual)
    assert (h >= 0).all()  # ReLU features (global average of ReLU maps)


def test_small_cnn_shape_and_width():
    model = M.small_cnn(num_classes=10, in_channels=1)
    assert model.fc.in_features == 256 and model.fc.out_features == 10
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert (
        M.build_model({"arch": "small_cnn", "num_classes": 3, "feature_dim": 64}).feature_dim == 64
    )


def test_cifar_resnet_parameter_counts():
    # He et al. (2016), Table 6: ResNet-20 0.27 M and ResNet-56 0.85 M parameters.
    n20 = sum(p.numel() for p in M.cifar_resnet20().parameters())
    n56 = sum(p.numel() for p in M.cifar_resnet56().parameters())
    assert round(n20 / 1e6, 2) == 0.27 and round(n56 / 1e6, 2) == 0.85


def test_option_a_shortcut():
    x = torch.randn(2, 16, 8, 8)
    out = M._ShortcutA(32)(x)
    assert out.shape == (2, 32, 4, 4)
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


def test_cifar_resnet_forward_matches_a_hand_written_reference():
    torch.manual_seed(1)
    model = M.cifar_resnet20().eval()
    b = model.backbone

    def block(m, x):
        out = F.relu(m.bn1(m.conv1(x)))
        out = m.bn2(m.conv2(out))
        if x.shape[1] != out.shape[1]:
            pad = out.shape[1] // 4
            x = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad))
        return F.relu(out + x)

    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        y = F.relu(b.bn1(b.conv1(x)))
        for layer in (b.layer1, b.layer2, b.layer3):
            for m in layer:
                y = block(m, y)
        ref = model.fc(F.avg_pool2d(y, y.shape[-1]).flatten(1))
        torch.testing.assert_close(model(x), ref)


def test_stage_layers_are_last_convs():
    model = M.cifar_resnet20()
    assert model.stage_layers() == {
        "layer1": "backbone.layer1.2.conv2",
        "layer2": "backbone.layer2.2.conv2",
        "layer3": "backbone.layer3.2.conv2",
    }
    for _, module in model.named_conv_stages():
        assert isinstance(module, nn.Conv2d)
    tv = M.build_model({"arch": "torchvision:resnet50", "num_classes": 10})
    assert list(tv.stage_layers().values()) == [
        "backbone.layer1.2.conv3",
        "backbone.layer2.3.conv3",
        "backbone.layer3.5.conv3",
        "backbone.layer4.2.conv3",
    ]
    assert tv.feature_dim == 2048
    small = M.small_cnn()
    assert all(isinstance(m, nn.Conv2d) for _, m in small.named_conv_stages())


def _reference_checkpoint(model, path, prefix="module.", fc_name="linear"):
    """Save ``model`` the way the public CIFAR checkpoints are saved."""
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue  # old checkpoints have no BatchNorm counters
        key = key.removeprefix("backbone.")
        if key.startswith("fc."):
            key = fc_name + key[2:]
        state[prefix + key] = value.clone()
    torch.save({"best_prec1": torch.tensor(91.5), "state_dict": state}, path)


def test_load_checkpoint_maps_dataparallel_and_linear(tmp_path):
    torch.manual_seed(0)
    source = M.cifar_resnet20()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in source.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "resnet20.th"
    _reference_checkpoint(source, path)
    meta_spec = {"arch": "cifar_resnet20", "num_classes": 10, "checkpoint": str(path)}
    loaded = M.build_model(meta_spec)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source.eval()(x))
    assert M.load_checkpoint(M.cifar_resnet20(), path) == {"best_prec1": pytest.approx(91.5)}


def test_checkpoint_mismatch_names_keys(tmp_path):
    path = tmp_path / "resnet20.th"
    _reference_checkpoint(M.cifar_resnet20(), path)
    with pytest.raises(ValueError, match=r"fc\.weight: checkpoint \(10, 64\) vs model \(100, 64\)"):
        M.build_model({"arch": "cifar_resnet20", "num_classes": 100, "checkpoint": str(path)})
    with pytest.raises(ValueError, match=r"missing keys \(backbone\.layer1\.3\.bn1\.bias"):
        M.build_model({"arch": "cifar_resnet56", "num_classes": 10, "checkpoint": str(path)})
    state = torch.load(path, weights_only=True)
    state["state_dict"]["module.extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"1 unexpected keys \(extra\.weight\)"):
        M.load_checkpoint(M.cifar_resnet20(), path)
    with pytest.raises(FileNotFoundError, match="nope.th"):
        M.load_checkpoint(M.cifar_resnet20(), tmp_path / "nope.th")
    torch.save({"epoch": 3}, tmp_path / "bad.th")
    with pytest.raises(ValueError, match="no state dict"):
        M.load_checkpoint(M.cifar_resnet20(), tmp_path / "bad.th")


def test_build_model_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown arch 'vgg'"):
        M.build_model({"arch": "vgg", "num_classes": 10})
    with pytest.raises(ValueError, match="num_classes"):
        M.build_model({"arch": "small_cnn", "num_classes": 1})
    with pytest.raises(ValueError, match="pretrained"):
        M.build_model({"arch": "cifar_resnet20", "num_classes": 10, "pretrained": True})
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty cache
    with pytest.raises(FileNotFoundError, match="not in the local cache"):
        M.build_model({"arch": "torchvision:resnet18", "num_classes": 1000, "pretrained": True})
    with pytest.raises(ValueError, match="weights name"):
        M.build_model({"arch": "torchvision:resnet18", "num_classes": 1000, "pretrained": "X"})


def test_torchvision_weights_from_local_cache(tmp_path, monkeypatch):
    import torchvision

    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    (tmp_path / "checkpoints").mkdir()
    cached = tmp_path / "checkpoints" / weights.url.rsplit("/", 1)[1]
    torch.save(reference.state_dict(), cached)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(
        type(weights), "get_state_dict", lambda self, **kw: torch.load(cached, weights_only=True)
    )
    model = M.build_model({"arch": "torchvision:resnet18", "num_classes": 1000, "pretrained": True})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
        h = model.forward_features(x)
        ref_h = torch.flatten(reference.avgpool(reference.layer4(reference.layer3(reference.layer2(
            reference.layer1(reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))))))), 1)  # fmt: skip
        torch.testing.assert_close(h, ref_h)


def test_timm_backbone_gives_pre_logits():
    import timm

    torch.manual_seed(0)
    reference = timm.create_model("vit_tiny_patch16_224", num_classes=10).eval()
    torch.manual_seed(0)
    model = M._timm_model("vit_tiny_patch16_224", 10, 3, False, False)
    model.backbone.model.load_state_dict(
        {k: v for k, v in reference.state_dict().items() if not k.startswith("head.")},
        strict=False,
    )
    model.fc.load_state_dict(reference.head.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)
        pre = reference.forward_head(reference.forward_features(x), pre_logits=True)
        torch.testing.assert_close(model.forward_features(x), pre, rtol=1e-4, atol=1e-4)
    assert model.feature_dim == 192
    assert model.stage_layers()["layer4"] == "backbone.model.blocks.11.mlp.fc2"


def test_preprocessing():
    transform, mean, std = M.preprocessing({"arch": "small_cnn", "in_channels": 1})
    assert mean == (0.5,) and std == (0.5,)
    img = Image.fromarray(np.full((16, 16), 255, np.uint8))
    x = transform(img)
    assert x.shape == (1, 16, 16) and torch.allclose(x, torch.ones_like(x))

    transform, mean, std = M.preprocessing({"arch": "cifar_resnet20"})
    assert mean == M.IMAGENET_MEAN and std == M.IMAGENET_STD
    x = transform(Image.fromarray(np.zeros((64, 64), np.uint8)))  # gray 64x64 -> RGB 32x32
    assert x.shape == (3, 32, 32)
    torch.testing.assert_close(
        x[:, 0, 0], -torch.tensor(M.IMAGENET_MEAN) / torch.tensor(M.IMAGENET_STD)
    )

    transform, mean, _ = M.preprocessing(
        {"arch": "torchvision:resnet50", "pretrained": "IMAGENET1K_V1"}
    )
    assert transform(Image.new("RGB", (300, 400))).shape == (3, 224, 224)
    assert mean == M.IMAGENET_MEAN
    transform, mean, std = M.preprocessing({"arch": "timm:vit_base_patch16_224"})
    assert transform(Image.new("RGB", (300, 400))).shape == (3, 224, 224)
    assert mean == (0.5, 0.5, 0.5) and std == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="arch"):
        M.preprocessing({"arch": "nope"})
