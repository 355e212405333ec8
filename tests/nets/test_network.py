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
    in-network rows prune their own validation-selected percentages from the grid;
    global / layer-wise cover every conv and the FC layer; every row has the pruned
    network's ID accuracy on test and its validation ID accuracy."""
    import json

    from opnp.detectors import create_detector
    from opnp.nets.network import conv_and_fc_weights, network_logits
    from opnp.pipeline.ablations import layer_ablation
    from opnp.pipeline.results import accuracy, metric_values

    model, train, id_test, ood = _tiny_cnn_and_data()
    _, _, id_val, ood_val = _tiny_cnn_and_data()
    with torch.no_grad():
        h_train = model.forward_features(train.tensors[0]).double().numpy()
        h_id = model.forward_features(id_test.tensors[0]).double().numpy()
        h_ood = model.forward_features(ood["far"].tensors[0]).double().numpy()
    w, b = (p.detach().double().numpy() for p in (model.fc.weight, model.fc.bias))
    selected = {"weight_low": 20, "weight_high": 2, "neuron_low": 10, "neuron_high": 10}
    main = create_detector("opnp", weight=w, bias=b, **selected).fit(h_train)
    grid = {"weight_low": [10, 30], "weight_high": [1, 5]}
    rows, layer_means, val_grid = layer_ablation(
        model, train, id_test, ood, selected=selected, fc_sensitivity=main.param_sensitivity,
        id_val_dataset=id_val, ood_val_datasets=ood_val, grid=grid, max_accuracy_loss=None,
        train_fraction=100, batch_size=16,
    )  # fmt: skip
    by_variant = {r["variant"]: r for r in rows}
    in_network = {"stage1", "stage2", "stage3", "global", "layerwise"}
    assert set(by_variant) == {"none", "fc", *in_network}
    fc = by_variant["fc"]
    expected = metric_values(main.score(h_id), main.score(h_ood))
    for metric, value in expected.items():
        assert fc[metric] == pytest.approx(value, abs=1e-9), metric
    assert fc["id_accuracy"] == accuracy(main.logits(h_id), id_test.tensors[1].numpy())
    every = conv_and_fc_weights(model)
    assert set(val_grid["variant"]) == in_network
    for variant, row in by_variant.items():
        params = json.loads(row["params"])
        if variant in ("global", "layerwise"):
            assert params["parameters"] == every
        if variant in in_network:
            # the row prunes the setting its validation grid marks as selected
            chosen = val_grid[(val_grid["variant"] == variant) & val_grid["selected"]]
            assert len(chosen) == 1 and not params["none_eligible"]
            assert (params["weight_low"], params["weight_high"]) == (
                chosen["weight_low"].item(),
                chosen["weight_high"].item(),
            )
            assert params["val_id_accuracy"] == chosen["val_id_accuracy"].item()
            assert params["n_pruned"] > 0  # no grid setting is all zero
        assert np.isfinite(row["id_accuracy"]) and np.isfinite(params["val_id_accuracy"])
    logits, labels = network_logits(model, id_test)
    assert by_variant["none"]["id_accuracy"] == accuracy(logits, labels)
    val_logits, val_labels = network_logits(model, id_val)
    assert json.loads(by_variant["none"]["params"])["val_id_accuracy"] == accuracy(
        val_logits, val_labels
    )
    assert len(val_grid) == len(in_network) * 4
    assert list(layer_means["layer"]) == ["stage1", "stage2", "stage3", "fc"]


def _trained_toy():
    """A small CNN trained to tell which quadrant of an 8x8 image is bright (100 %
    validation accuracy), so that heavy in-network pruning does cost accuracy; OOD:
    uniform noise."""
    from opnp.nets.architectures import small_cnn

    torch.manual_seed(0)
    model = small_cnn(num_classes=4, in_channels=1, feature_dim=16)
    gen = torch.Generator().manual_seed(1)

    def dataset(n, ood=False):
        x = 0.3 * torch.rand(n, 1, 8, 8, generator=gen)
        y = torch.randint(0, 4, (n,), generator=gen)
        if ood:
            x = x + torch.rand(n, 1, 8, 8, generator=gen)
        else:
            for i, c in enumerate(y.tolist()):
                r, q = divmod(c, 2)
                x[i, 0, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] += 1.0
        return torch.utils.data.TensorDataset(x, y)

    train = dataset(80)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(train.tensors[0]), train.tensors[1]).backward()
        opt.step()
    model.eval()
    return (
        model,
        train,
        dataset(40),
        {"noise": dataset(30, ood=True)},
        dataset(40),
        {"noise-val": dataset(30, ood=True)},
    )


def test_table7_accuracy_limit_excludes_settings_that_break_the_network():
    """Without a limit, some in-network row selects a setting that loses validation ID
    accuracy (the grid has only heavy settings); with max_accuracy_loss 5 every row's
    choice loses at most 5 points and is the best eligible setting by validation FPR95,
    or, when no setting qualifies, prunes nothing and says so."""
    import json

    from opnp.detectors import create_detector
    from opnp.pipeline.ablations import layer_ablation

    model, train, id_test, ood, id_val, ood_val = _trained_toy()
    with torch.no_grad():
        h_train = model.forward_features(train.tensors[0]).double().numpy()
    w, b = (p.detach().double().numpy() for p in (model.fc.weight, model.fc.bias))
    selected = {"weight_low": 10}
    main = create_detector("opnp", weight=w, bias=b, **selected).fit(h_train)
    kw = {
        "selected": selected, "fc_sensitivity": main.param_sensitivity,
        "id_val_dataset": id_val, "ood_val_datasets": ood_val,
        "grid": {"weight_low": [30, 60], "weight_high": [5, 20]}, "batch_size": 64,
    }  # fmt: skip
    free_rows, _, free = layer_ablation(model, train, id_test, ood, max_accuracy_loss=None, **kw)
    free_choice = free[free["selected"]].set_index("variant")
    breaking = free_choice.index[free_choice["accuracy_loss"] > 5].tolist()
    assert breaking, "the toy must have a row whose unconstrained best loses > 5 points"
    rows, _, limited = layer_ablation(model, train, id_test, ood, max_accuracy_loss=5, **kw)
    # the same network passes: the validation numbers do not depend on the limit, except
    # that settings over it are screened out by their ID accuracy (OOD sets not run)
    import pandas.testing as pd_testing

    same = ["variant", "weight_low", "weight_high", "val_id_accuracy"]
    pd_testing.assert_frame_equal(free[same], limited[same])
    ok = limited["eligible"]
    pd_testing.assert_frame_equal(
        free.loc[ok, ["fpr95", "auroc"]], limited.loc[ok, ["fpr95", "auroc"]]
    )
    assert limited.loc[~ok, ["fpr95", "auroc"]].isna().all().all() and (~ok).any()
    params = {r["variant"]: json.loads(r["params"]) for r in rows}
    # both outcomes occur in this toy: a row with eligible settings, and one without
    assert set(limited.groupby("variant")["eligible"].any()) == {True, False}
    for variant, table in limited.groupby("variant", sort=False):
        eligible = table[table["accuracy_loss"] <= 5]
        assert table["eligible"].tolist() == (table["accuracy_loss"] <= 5).tolist()
        if eligible.empty:
            assert params[variant]["none_eligible"] and not table["selected"].any()
            assert (params[variant]["weight_low"], params[variant]["weight_high"]) == (0, 0)
            assert params[variant]["n_pruned"] == 0
            assert params[variant]["val_id_accuracy"] == params["none"]["val_id_accuracy"]
            continue
        best = eligible.sort_values(["fpr95", "auroc"], ascending=[True, False]).iloc[0]
        chosen = table[table["selected"]].iloc[0]
        assert (chosen["weight_low"], chosen["weight_high"]) == (
            best["weight_low"],
            best["weight_high"],
        )
        assert not params[variant]["none_eligible"]
        assert params[variant]["weight_low"] == best["weight_low"]
    for variant in breaking:
        was = free_choice.loc[variant, ["weight_low", "weight_high"]].tolist()
        now = [params[variant]["weight_low"], params[variant]["weight_high"]]
        assert now != was, variant
    free_params = {r["variant"]: json.loads(r["params"]) for r in free_rows}
    assert free_params["global"]["max_accuracy_loss"] is None
    assert params["global"]["max_accuracy_loss"] == 5


def test_in_memory_gives_the_same_inputs_within_its_budget():
    from opnp.nets.network import in_memory, network_logits

    model, _, id_test, _ = _tiny_cnn_and_data()

    class Decoded(torch.utils.data.Dataset):
        """Stands in for an image dataset: inputs made on each access."""

        def __len__(self):
            return len(id_test)

        def __getitem__(self, i):
            x, y = id_test[i]
            return x * 1.0, int(y)

    dataset = Decoded()
    size = 30 * 1 * 8 * 8 * 4  # float32 inputs
    cached, used = in_memory(dataset, size, batch_size=7)
    assert used == size and isinstance(cached, torch.utils.data.TensorDataset)
    for a, b in zip(network_logits(model, cached), network_logits(model, dataset), strict=True):
        np.testing.assert_array_equal(a, b)
    assert in_memory(dataset, size - 1) == (dataset, 0)  # over budget: read each time
