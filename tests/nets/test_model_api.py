"""opnp.from_model: every detector on a PyTorch model, equal to the feature-level detectors
on the model's own features; to_module (TorchScript, ONNX); head detection; streaming fit."""

from __future__ import annotations

import copy
import json
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

import opnp
from opnp.nets.fit_statistics import FIT_NEEDS, TrainingStatistics
from opnp.nets.model_api import DEFAULT_GRIDS
from opnp.pipeline.selection import expand_grid, select_best

REPO = Path(__file__).resolve().parents[2]
D, C = 24, 5

from detector_params import METHODS, PARAMS  # noqa: E402 - tests/ is on sys.path


class SmallCNN(nn.Module):
    """ReLU features (B, D) -> fc; a Linear inside the trunk too, so the default head
    must be found by the forward order, not by being the only Linear."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(D, C)  # defined first, runs last
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.embed = nn.Linear(32, D)

    def forward(self, x):
        h = torch.flatten(self.pool(torch.relu(self.conv(x))), 1)
        return self.fc(torch.relu(self.embed(h)))


def trunk_features(model, x):
    """Features computed without the API: the model with its fc replaced by Identity."""
    trunk = copy.deepcopy(model)
    trunk.fc = nn.Identity()
    with torch.no_grad():
        return trunk.eval()(x).double().numpy()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SmallCNN().eval()


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    x_train = torch.randn(320, 1, 8, 8, generator=g)
    y_train = torch.randint(0, C, (320,), generator=g)
    x_test = torch.randn(48, 1, 8, 8, generator=g)
    x_ood = 2.0 * torch.rand(48, 1, 8, 8, generator=g)
    return x_train, y_train, x_test, x_ood


def train_loader(data, batch_size=40):
    x, y, _, _ = data
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=False
    )


def fitted(model, data, method, **extra):
    params = {**PARAMS.get(method, {}), **extra}
    return opnp.from_model(model, method, progress=False, **params).fit(train_loader(data))


@pytest.mark.parametrize("method", METHODS)
def test_scores_equal_the_feature_level_detector(model, data, method):
    x_train, y_train, x_test, _ = data
    md = fitted(model, data, method)
    h_train, h_test = trunk_features(model, x_train), trunk_features(model, x_test)
    reference = opnp.create_detector(
        method,
        weight=model.fc.weight.detach(),
        bias=model.fc.bias.detach(),
        **PARAMS.get(method, {}),
    ).fit(h_train, y_train.numpy())
    np.testing.assert_allclose(md.score(x_test), reference.score(h_test), rtol=1e-10, atol=1e-12)
    assert md.head_name == "fc"
    # fit kept only what the method needs (all features only for a bank or a percentile)
    needs = FIT_NEEDS[method]
    assert (md.statistics._features != []) == ("features" in needs)
    assert (md.statistics._sensitivity is not None) == ("sensitivity" in needs)


@pytest.mark.parametrize(
    ("method", "reading"),
    [
        ("tnp", {"statistic": "activation_l2"}),
        ("tnp", {"statistic": "weight_l2"}),
        ("opnp+react", {"sensitivity_features": "clipped"}),
        ("opnp+react", {"sensitivity_features": "clipped", "neuron_source": "weight_pruned"}),
    ],
)
def test_readings_that_change_what_fit_needs(model, data, method, reading):
    """A reading whose fit uses other statistics than the method's default (TNP's norms,
    OPNP+ReAct's clipped S) is fitted from those, equal to the feature-level detector."""
    x_train, _, x_test, x_ood = data
    md = fitted(model, data, method, **reading)
    params = {**PARAMS[method], **reading}
    h_train, h_test = trunk_features(model, x_train), trunk_features(model, x_test)
    head = dict(weight=model.fc.weight.detach(), bias=model.fc.bias.detach())
    reference = opnp.create_detector(method, **head, **params).fit(h_train)
    np.testing.assert_allclose(md.score(x_test), reference.score(h_test), rtol=1e-10, atol=1e-12)
    assert md.needs == opnp.detectors.detector_class(method).fit_needs_for(params)
    assert md.needs != FIT_NEEDS[method]
    if method == "opnp+react":  # tune reuses the clipped S of fit
        table = md.tune(x_test, x_ood, grid={"weight_low": [0, 20], "neuron_high": [0, 10]})
        chosen = {k: md.params[k] for k in ("weight_low", "neuron_high")}
        det = opnp.create_detector(method, **head, **{**params, **chosen}).fit(h_train)
        np.testing.assert_allclose(md.score(x_test), det.score(h_test), rtol=1e-9)
        assert len(table) == 4
        with pytest.raises(ValueError, match="tune cannot vary react_percentile"):
            md.tune(x_test, x_ood, grid={"react_percentile": [80, 90]})


def test_predict_and_features_are_the_models(model, data):
    _, _, x_test, _ = data
    md = opnp.from_model(model, "energy", progress=False)
    with torch.no_grad():
        torch.testing.assert_close(md.predict(x_test), model(x_test), rtol=0, atol=0)
    np.testing.assert_array_equal(
        md.features(x_test), trunk_features(model, x_test).astype(np.float32)
    )
    # energy needs no fit; the score is logsumexp of the logits, recomputed in float64
    # from the features (so equal to the model's float32 logits to float32 rounding)
    np.testing.assert_allclose(
        md.score(x_test), torch.logsumexp(model(x_test).double(), 1).detach().numpy(), rtol=1e-6
    )


def test_score_splits_large_tensors_and_loaders(model, data):
    _, _, x_test, x_ood = data
    md = fitted(model, data, "opnp")
    small = opnp.from_model(model, "opnp", batch_size=7, progress=False, **PARAMS["opnp"])
    small.fit(train_loader(data, batch_size=13))
    both = torch.cat([x_test, x_ood])
    np.testing.assert_allclose(small.score(both), md.score_loader([x_test, x_ood]), rtol=1e-10)


def test_odin_through_the_api_equals_odin_scores(model, data):
    _, _, x_test, _ = data
    md = opnp.from_model(model, "odin", temperature=10.0, epsilon=0.01, std=0.5, progress=False)
    expected = opnp.odin_scores(model, x_test, temperature=10.0, epsilon=0.01, std=0.5)
    np.testing.assert_allclose(md.fit().score(x_test), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="odin cannot be exported"):
        md.to_module()


# -- to_module: one forward pass, TorchScript, ONNX ------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_to_module_scores_equal_score_and_script(model, data, method):
    _, _, x_test, _ = data
    md = fitted(model, data, method)
    module = md.to_module()
    scripted = md.export_program(x_test[:2], exporter="script")  # the fallback exporter
    with torch.no_grad():
        logits, scores = module(x_test)
        s_logits, s_scores = scripted(x_test)
        expected_logits = model(x_test)
    assert scores.dtype == torch.float64
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=0)
    torch.testing.assert_close(s_logits, expected_logits, rtol=0, atol=0)
    # KNN included: its inner products are float64 too (opnp.detectors.knn)
    np.testing.assert_allclose(scores.numpy(), md.score(x_test), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(s_scores.numpy(), md.score(x_test), rtol=1e-10, atol=1e-12)


def test_to_module_float32_score_head(model, data):
    _, _, x_test, _ = data
    md = fitted(model, data, "opnp")
    with torch.no_grad():
        _, scores = md.to_module(score_dtype=torch.float32)(x_test)
    assert scores.dtype == torch.float32
    np.testing.assert_allclose(scores.numpy(), md.score(x_test), rtol=1e-5)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("method", ["opnp", "knn", "line", "ash", "mahalanobis"])
def test_to_module_exports_to_onnx(model, data, method, exporter, tmp_path):
    """Both ONNX exporters (dynamo, the supported one, under warnings-as-errors; the
    TorchScript-based fallback) give a file whose scores onnxruntime reproduces."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    _, _, x_test, _ = data
    md = fitted(model, data, method)
    path = tmp_path / f"{method}.onnx"
    with warnings.catch_warnings():
        if exporter == "dynamo":
            warnings.simplefilter("error")  # the supported path warns about nothing
        assert md.export_onnx(path, x_test[:2], exporter=exporter) == exporter
    session = ort.InferenceSession(str(path))
    logits, scores = session.run(None, {"x": x_test.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(x_test).numpy(), rtol=1e-5, atol=1e-6)
    # onnxruntime runs the float32 backbone with its own kernels: float32 rounding
    np.testing.assert_allclose(scores, md.score(x_test), rtol=1e-6, atol=1e-7)


def test_to_module_refuses_a_model_that_transforms_the_logits(data):
    torch.manual_seed(0)

    class Scaled(SmallCNN):
        def forward(self, x):
            return 2.0 * super().forward(x)

    md = opnp.from_model(Scaled().eval(), "energy", progress=False)
    md.score(data[2])
    with pytest.raises(ValueError, match="not the output of head 'fc'"):
        md.to_module()


# -- torchvision ResNet-18 (random weights) --------------------------------------------


def test_torchvision_resnet18(data):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    g = torch.Generator().manual_seed(2)
    x_train = torch.rand(32, 3, 16, 16, generator=g)
    x_test = torch.rand(6, 3, 16, 16, generator=g)
    params = {"weight_low": 20, "neuron_high": 10}
    md = opnp.from_model(net, "opnp", batch_size=32, progress=False, **params).fit(x_train)
    assert md.head_name == "fc" and md.weight.shape == (10, 512)
    scores = md.score(x_test)
    trunk = copy.deepcopy(net)
    trunk.fc = nn.Identity()
    with torch.no_grad():
        h = trunk(torch.cat([x_train, x_test])).double()
    reference = opnp.create_detector(
        "opnp", weight=net.fc.weight.detach(), bias=net.fc.bias.detach(), **params
    ).fit(h[: len(x_train)])
    np.testing.assert_allclose(scores, reference.score(h[len(x_train) :]), rtol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.export: no deprecation warning
        exported = md.export_program(x_test, exporter="export").module()
    with torch.no_grad():
        logits, module_scores = exported(x_test)
        torch.testing.assert_close(logits, net.fc(h[len(x_train) :].float()), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(module_scores.numpy(), scores, rtol=1e-9)


# -- head detection --------------------------------------------------------------------


def test_head_default_is_the_last_linear_run_not_the_last_defined(model, data):
    md = opnp.from_model(model, "energy", progress=False)
    md.score(data[2])
    assert md.head_name == "fc"
    assert md.weight.shape == (C, D)


def test_named_head_that_is_not_linear(model):
    with pytest.raises(ValueError, match="'conv' is a Conv2d, not an nn.Linear"):
        opnp.from_model(model, "energy", head="conv")


def test_named_head_that_does_not_exist(model):
    with pytest.raises(ValueError, match=r"head 'classifier' is not a module.*\['fc', 'embed'\]"):
        opnp.from_model(model, "energy", head="classifier")


def test_head_used_twice_is_refused(data):
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 64)

        def forward(self, x):
            return self.fc(torch.relu(self.fc(torch.flatten(x, 1))))

    x = data[2]
    with pytest.raises(ValueError, match="'fc', runs 2 times per forward pass"):
        opnp.from_model(Twice(), "energy", progress=False).score(x)
    with pytest.raises(ValueError, match="head 'fc' ran 2 times in one forward pass"):
        opnp.from_model(Twice(), "energy", head="fc", progress=False).score(x)


def test_model_without_linear_is_refused(data):
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match="no nn.Linear ran in the model's forward pass"):
        opnp.from_model(net, "energy", progress=False).score(data[2])


def test_head_on_tokens_is_refused(data):
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(x.reshape(len(x), 8, 8)).mean(dim=1)

    with pytest.raises(ValueError, match=r"input of head 'fc' has shape \(48, 8, 8\)"):
        opnp.from_model(Tokens(), "energy", progress=False).score(data[2])


def test_bad_method_and_hyperparameters_fail_at_construction(model):
    with pytest.raises(ValueError, match="unknown method 'opnpp'"):
        opnp.from_model(model, "opnpp")
    with pytest.raises(ValueError, match=r"opp: unknown hyperparameter\(s\) \['neuron_low'\]"):
        opnp.from_model(model, "opp", neuron_low=10)
    with pytest.raises(ValueError, match="weight_low"):
        opnp.from_model(model, "opnp", weight_low=100)


def test_labels_required_for_mahalanobis_and_line(model, data):
    x_train = data[0]
    for method in ("mahalanobis", "line"):
        with pytest.raises(ValueError, match="needs class labels"):
            opnp.from_model(model, method, progress=False).fit(x_train)


def test_fit_required_before_score(model, data):
    with pytest.raises(ValueError, match=r"opnp: call fit\(train_data\) before scoring"):
        opnp.from_model(model, "opnp", progress=False).score(data[2])


# -- streaming -------------------------------------------------------------------------


def _peak_fit_memory(model, method, n_batches, batch_size=128):
    """Peak traced memory (numpy and Python objects) of fit over a generator of batches."""
    g = torch.Generator().manual_seed(5)

    def batches():
        for _ in range(n_batches):
            yield (
                torch.randn(batch_size, 1, 8, 8, generator=g),
                torch.randint(0, C, (batch_size,), generator=g),
            )

    md = opnp.from_model(model, method, progress=False, **PARAMS.get(method, {}))
    md.fit(batches())  # warm-up: imports, caches
    tracemalloc.start()
    try:
        md.fit(batches())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("method", ["opnp", "mahalanobis", "line", "dice", "tnp"])
def test_fit_memory_does_not_grow_with_the_loader(model, method):
    short, long = _peak_fit_memory(model, method, 2), _peak_fit_memory(model, method, 8)
    bank_growth = 6 * 128 * D * 4  # what keeping the 6 extra batches' features would add
    assert long - short < bank_growth / 4, (short, long)


def test_fit_memory_of_a_feature_bank_grows(model):
    # The same measurement detects the growth of methods that keep every feature.
    short, long = _peak_fit_memory(model, "knn", 2), _peak_fit_memory(model, "knn", 8)
    assert long - short > 6 * 128 * D * 4 * 0.9


def test_streamed_covariance_equals_two_pass_with_a_large_offset():
    # Features far from the origin: the raw second moment would cancel catastrophically.
    rng = np.random.default_rng(0)
    h = 1e4 + rng.normal(size=(600, 6))
    y = rng.integers(0, 3, 600)
    stats = TrainingStatistics(("class_means", "covariance"), np.ones((3, 6)), np.zeros(3))
    for start in range(0, 600, 77):
        stats.update(h[start : start + 77], y[start : start + 77])
    means = np.stack([h[y == c].mean(axis=0) for c in range(3)])
    centred = h - means[y]
    np.testing.assert_allclose(stats.class_means, means, rtol=1e-13)
    np.testing.assert_allclose(stats.covariance, centred.T @ centred / 600, rtol=1e-8, atol=1e-10)


# -- tune ------------------------------------------------------------------------------


def test_tune_opnp_selects_on_validation_and_refits(model, data):
    _, _, x_test, x_ood = data
    md = fitted(model, data, "opnp")
    grid = {
        "weight_low": [0, 20],
        "weight_high": [0, 2],
        "neuron_low": [0, 10],
        "neuron_high": [0, 10],
    }
    ood = {"a": x_ood, "b": -x_ood}
    table = md.tune(x_test, ood, grid=grid)
    assert len(table) == 16 * 2 and table["selected"].sum() == 2
    chosen = select_best(table)
    assert {k: md.params[k] for k in grid} == {k: chosen[k] for k in grid}
    # the refitted detector is the feature-level detector with the chosen percentages
    h_train = trunk_features(model, data[0])
    reference = opnp.create_detector(
        "opnp", weight=model.fc.weight.detach(), bias=model.fc.bias.detach(), **chosen
    ).fit(h_train)
    np.testing.assert_allclose(
        md.score(x_test), reference.score(trunk_features(model, x_test)), rtol=1e-9
    )
    # every row's metrics are those of that config's own detector
    row = table.iloc[5]
    row_params = json.loads(row["params"])
    det = opnp.create_detector(
        "opnp", weight=model.fc.weight.detach(), bias=model.fc.bias.detach(), **row_params
    ).fit(h_train)
    expected = opnp.metrics.evaluate(
        det.score(trunk_features(model, x_test)),
        det.score(trunk_features(model, ood[row["ood_set"]])),
    )
    assert row["fpr95"] == pytest.approx(100 * expected["fpr95"], rel=1e-9)
    assert row["auroc"] == pytest.approx(100 * expected["auroc"], rel=1e-9)


@pytest.mark.parametrize(
    "grid", [{"weight_low": [0, 20], "neuron_high": [0, 10]}, {"weight_low": [10]}]
)
def test_tune_scores_the_opnp_family_as_the_workflow_search(model, data, grid):
    """tune's rows are evaluate_configs' on the same statistics: the vectorised grid, and
    for one config (the grid scorer declines) one detector per config."""
    from opnp.pipeline.evaluation import FitData, evaluate_configs

    _, _, x_test, x_ood = data
    md = fitted(model, data, "opnp")
    fit = FitData(md.weight, md.bias, sensitivity=md.statistics.sensitivity, statistic="mean")
    configs = expand_grid(grid, {k: v for k, v in md.params.items() if k not in grid})
    ood = {"a": trunk_features(model, x_ood)}
    rows, _ = evaluate_configs(
        "opnp", configs, fit, id_features=trunk_features(model, x_test), ood_features=ood,
        split="val",
    )  # fmt: skip
    table = md.tune(x_test, {"a": x_ood}, grid=grid)
    columns = ["params", "ood_set", "fpr95", "auroc", "aupr_in", "aupr_out", "n_id", "n_ood"]
    expected = pd.DataFrame(rows)[columns]
    pd.testing.assert_frame_equal(table[columns], expected, check_exact=False, rtol=1e-12)


@pytest.mark.parametrize("method", ["react", "odin"])
def test_tune_other_methods(model, data, method):
    _, _, x_test, x_ood = data
    md = opnp.from_model(model, method, progress=False).fit(train_loader(data))
    grid = (
        {"percentile": [70, 90]}
        if method == "react"
        else {"temperature": [1, 1000], "epsilon": [0.0]}
    )
    table = md.tune(x_test, x_ood, grid=grid)
    assert len(table) == 2 and table["selected"].sum() == 1
    chosen = select_best(table)
    assert all(md.params[k] == chosen[k] for k in grid)


def test_default_grid_is_the_papers(repo=REPO):
    paper = yaml.safe_load((repo / "config" / "imagenet.yaml").read_text())["methods"]
    for method in ("opp", "onp", "opnp", "opnp+react"):
        assert DEFAULT_GRIDS[method] == paper[method]["grid"], method
    assert len(expand_grid(DEFAULT_GRIDS["opnp"])) == 625
