"""Sensitivity and pruning inside the network (Table 7)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from opnp.nets.network import (  # noqa: E402
    layer_pruning_masks,
    module_sensitivity,
    pruned_model,
    pruning,
)


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, padding=1),
        torch.nn.BatchNorm2d(3),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(3, 4),
    ).double()


def _loop_reference(model, x, names, reduction):
    """One energy.backward() per sample (or per batch), the definition."""
    model.eval()
    params = dict(model.named_parameters())
    acc = {n: torch.zeros_like(params[n]) for n in names}
    if reduction == "batch":
        model.zero_grad()
        (-torch.logsumexp(model(x), 1)).sum().backward()
        return {n: params[n].grad.abs() / len(x) for n in names}
    for xi in x:
        model.zero_grad()
        (-torch.logsumexp(model(xi[None]), 1)).sum().backward()
        for n in names:
            acc[n] += params[n].grad.abs()
    return {n: a / len(x) for n, a in acc.items()}


@pytest.mark.parametrize("reduction", ["per_sample", "batch"])
@pytest.mark.parametrize("use_vmap", [True, False])
def test_module_sensitivity_equals_per_sample_backward(reduction, use_vmap):
    model = _net()
    x = torch.randn(9, 2, 5, 5, dtype=torch.float64)
    names = ["0.weight", "5.weight"]
    got = module_sensitivity(model, x, names, reduction=reduction, batch_size=4, use_vmap=use_vmap)
    ref = _loop_reference(model, x, names, reduction)
    for n in names:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-10, atol=1e-14)
    loader = [(x[:5], None), (x[5:], None)]
    got2 = module_sensitivity(model, loader, names, reduction=reduction)
    for n in names:
        torch.testing.assert_close(got2[n], ref[n], rtol=1e-10, atol=1e-14)


def test_layer_masks_global_vs_per_layer():
    sens = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0]), "b": torch.tensor([10.0, 20.0, 30.0, 40.0])}
    per = layer_pruning_masks(sens, low=25, mode="per_layer")
    # percentile([1,2,3,4], 25) = 1.75 -> prune 1; likewise 17.5 -> prune 10
    assert per["a"].tolist() == [False, True, True, True]
    assert per["b"].tolist() == [False, True, True, True]
    assert layer_pruning_masks(sens, low=25, mode="layerwise")["b"].tolist() == per["b"].tolist()
    glob = layer_pruning_masks(sens, low=25, high=25, mode="global")
    # pooled percentile 25 = 2.75 (prunes 1, 2), 75 = 22.5 (prunes 30, 40)
    assert glob["a"].tolist() == [False, False, True, True]
    assert glob["b"].tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match="unknown mode 'x'"):
        layer_pruning_masks(sens, mode="x")


def test_pruned_copy_and_context_manager():
    model = _net()
    w = model[5].weight.detach().clone()
    mask = torch.ones_like(w, dtype=torch.bool)
    mask[0, 1] = False
    clone = pruned_model(model, {"5.weight": mask})
    assert clone[5].weight[0, 1] == 0 and model[5].weight[0, 1] == w[0, 1]
    with pruning(model, {"5.weight": mask}) as m:
        assert m[5].weight[0, 1] == 0
    torch.testing.assert_close(model[5].weight.detach(), w)
    with pytest.raises(ValueError, match="mask for '5.weight' has shape"):
        pruned_model(model, {"5.weight": mask[:2]})
    assert np.isfinite(clone[5].weight.detach().numpy()).all()


def _tiny_cnn_and_data():
    from opnp.nets.architectures import small_cnn

    torch.manual_seed(0)
    model = small_cnn(num_classes=4, in_channels=1, feature_dim=16).eval()
    gen = torch.Generator().manual_seed(1)

    def dataset(n, shift):
        x = torch.rand(n, 1, 8, 8, generator=gen) + shift
        return torch.utils.data.TensorDataset(x, torch.randint(0, 4, (n,), generator=gen))

    return model, dataset(40, 0.0), dataset(30, 0.0), {"far": dataset(25, 2.0)}


def test_conv_and_fc_weights_lists_every_conv_then_fc():
    from opnp.nets.network import conv_and_fc_weights

    model, *_ = _tiny_cnn_and_data()
    names = conv_and_fc_weights(model)
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert names == [f"{n}.weight" for n in convs] + ["fc.weight"]
    assert len(convs) == 6  # two per stage, not only each stage's last
    with pytest.raises(ValueError, match="no nn.Linear 'fc'"):
        conv_and_fc_weights(_net())


def test_table7_rows_compare_like_with_like():
    """FC row = the main OPNP result (selected weight and neuron masks, full sensitivity);
    in-network rows prune the selected weight percentages; global / layer-wise cover every
    conv and the FC layer; every row has the pruned network's ID accuracy."""
    import json

    from opnp.detectors import create_detector
    from opnp.nets.network import conv_and_fc_weights, network_logits
    from opnp.pipeline.ablations import layer_ablation
    from opnp.pipeline.results import accuracy, metric_values

    model, train, id_test, ood = _tiny_cnn_and_data()
    with torch.no_grad():
        h_train = model.forward_features(train.tensors[0]).double().numpy()
        h_id = model.forward_features(id_test.tensors[0]).double().numpy()
        h_ood = model.forward_features(ood["far"].tensors[0]).double().numpy()
    w, b = (p.detach().double().numpy() for p in (model.fc.weight, model.fc.bias))
    selected = {"weight_low": 20, "weight_high": 2, "neuron_low": 10, "neuron_high": 10}
    main = create_detector("opnp", weight=w, bias=b, **selected).fit(h_train)
    rows, layer_means = layer_ablation(
        model, train, id_test, ood, selected=selected, fc_sensitivity=main.param_sensitivity,
        train_fraction=100, batch_size=16,
    )  # fmt: skip
    by_variant = {r["variant"]: r for r in rows}
    assert set(by_variant) == {"none", "stage1", "stage2", "stage3", "global", "layerwise", "fc"}
    fc = by_variant["fc"]
    expected = metric_values(main.score(h_id), main.score(h_ood))
    for metric, value in expected.items():
        assert fc[metric] == pytest.approx(value, abs=1e-9), metric
    assert fc["id_accuracy"] == accuracy(main.logits(h_id), id_test.tensors[1].numpy())
    every = conv_and_fc_weights(model)
    for variant, row in by_variant.items():
        params = json.loads(row["params"])
        if variant in ("global", "layerwise"):
            assert params["parameters"] == every
        if variant.startswith("stage") or variant in ("global", "layerwise"):
            assert (params["weight_low"], params["weight_high"]) == (20, 2)
            assert params["n_pruned"] > 0
        assert np.isfinite(row["id_accuracy"])
    logits, labels = network_logits(model, id_test)
    assert by_variant["none"]["id_accuracy"] == accuracy(logits, labels)
    assert list(layer_means["layer"]) == ["stage1", "stage2", "stage3", "fc"]
