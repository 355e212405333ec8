"""Bad input through opnp.from_model and the detectors: one clear error naming the bad
thing, before a pass over the data (docs/your_model.md, "Bad input"); inputs of another
floating dtype are cast."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import opnp

D, C = 6, 3


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, D, 3)
        self.fc = nn.Linear(D, C)
        self.calls = 0

    def features(self, x):
        self.calls += 1
        return torch.relu(self.conv(x)).mean((2, 3))

    def forward(self, x):
        return self.fc(self.features(x))


class WithAux(Net):
    """An auxiliary nn.Linear runs after the classifier; the output is the classifier's."""

    def __init__(self):
        super().__init__()
        self.aux = nn.Linear(D, 2)

    def forward(self, x):
        h = self.features(x)
        logits = self.fc(h)
        self.aux(h)
        return logits


@pytest.fixture()
def net():
    torch.manual_seed(0)
    return Net().eval()


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(40, 1, 6, 6, generator=g), torch.randint(0, C, (40,), generator=g)


def with_nan(x, row):
    x = x.clone()
    x[row, 0, 2, 3] = float("nan")
    return x


# -- NaN / inf --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["mahalanobis", "knn", "opnp", "line"])
def test_nan_training_image_names_its_row_in_the_whole_loader(net, data, method):
    """Mahalanobis used to fit on it silently (every score NaN); the row is the row in the
    loader (batches of 8: row 29 is in the 4th batch), refused before that batch runs."""
    x, y = data
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(with_nan(x, 29), y), batch_size=8
    )
    md = opnp.from_model(net, method, progress=False)
    with pytest.raises(ValueError, match="training input has NaN .* first at row 29"):
        md.fit(loader)
    assert net.calls == 3  # refused before running the 4th batch, the bad one
    assert md.statistics is None


@pytest.mark.parametrize("call", ["score", "score_loader", "predict", "features"])
def test_nan_image_at_score_time_is_refused(net, data, call):
    x, y = data
    md = opnp.from_model(net, "mahalanobis", progress=False, batch_size=16).fit(x, y)
    with pytest.raises(ValueError, match="input has NaN or infinite values in 1 row.*row 21"):
        getattr(md, call)(with_nan(x, 21)[:32] if call != "score" else with_nan(x, 21))
    inf = x.clone()
    inf[3] = float("inf")
    with pytest.raises(ValueError, match="first at row 3"):
        getattr(md, call)(inf[:8])


def test_nan_features_from_a_finite_image_are_refused(data):
    class Overflow(Net):
        def features(self, x):
            return super().features(x) * torch.where(x[:, 0, 0, 0:1] > 2, float("inf"), 1.0)

    x, y = data
    row = int(torch.nonzero(x[:, 0, 0, 0] > 2)[0, 0])
    md = opnp.from_model(Overflow().eval(), "energy", progress=False)
    with pytest.raises(ValueError, match=rf"features \(head input\) of input has NaN.*row {row}"):
        md.score(x)


def test_tune_validation_nan_names_the_row(net, data):
    x, y = data
    md = opnp.from_model(net, "react", progress=False).fit(x)
    with pytest.raises(ValueError, match="tune: ID features has NaN.*row 5"):
        md.tune(with_nan(x, 5), x, grid={"percentile": [80, 90]})


def test_exported_module_refuses_nan_and_the_graph_propagates_it(net, data):
    """Eager (and TorchScript) modules raise; a torch.export graph cannot, its score of a
    NaN row is NaN (documented in docs/your_model.md)."""
    x, y = data
    md = opnp.from_model(net, "mahalanobis", progress=False).fit(x, y)
    bad = with_nan(x, 4)[:8]
    with pytest.raises(ValueError, match="input row 4 are NaN or infinite"):
        md.to_module()(bad)
    with pytest.raises(torch.jit.Error, match="input row 4 are NaN or infinite"):
        md.export_program(x[:4], exporter="script")(bad)
    with torch.no_grad():
        _, scores = md.export_program(x[:4], exporter="export").module()(bad)
    assert torch.isnan(scores[4]) and torch.isfinite(scores[torch.arange(8) != 4]).all()


# -- labels -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["mahalanobis", "line"])
@pytest.mark.parametrize("label", [C, -1, 0.5, float("nan")])
def test_labels_out_of_range_or_not_integer(net, data, method, label):
    x, y = data
    bad = y.double()
    bad[13] = label
    with pytest.raises(ValueError, match=rf"integer class indices in \[0, {C}\).*row 13"):
        opnp.from_model(net, method, progress=False, batch_size=8).fit(x, bad)
    assert net.calls == 2  # refused at the batch holding row 13


def test_feature_level_mahalanobis_refuses_labels_outside_the_head():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(30, 4))
    y = np.arange(30) % 3
    y_neg = y.copy()
    y_neg[7] = -1
    with pytest.raises(ValueError, match="label -1 at row 7"):
        opnp.create_detector("mahalanobis").fit(h, y_neg)
    w = rng.normal(size=(3, 4))
    y_big = y.copy()
    y_big[11] = 3
    with pytest.raises(ValueError, match=r"\[0, 3\) for a 3-class FC layer: label 3 at row 11"):
        opnp.create_detector("mahalanobis", weight=w).fit(h, y_big)
    with pytest.raises(ValueError, match="integer class labels"):
        opnp.create_detector("mahalanobis").fit(h, y + 0.5)
    # without a head any nonnegative class ids are fine
    opnp.create_detector("mahalanobis").fit(h, y * 7)


# -- the head ---------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["fit", "score"])
def test_linear_after_the_classifier_is_refused(data, call):
    """fit and score refuse (to_module did; they used the auxiliary Linear as the head)."""
    x, y = data
    torch.manual_seed(0)
    md = opnp.from_model(WithAux().eval(), "energy", progress=False)
    with pytest.raises(ValueError, match="output comes from nn.Linear 'fc'.*'aux' runs after"):
        getattr(md, call)(x)
    assert md.weight is None
    net = nn.Sequential(Net(), nn.Linear(C, C)).eval()
    md = opnp.from_model(net, "energy", head="0.fc", progress=False)
    with pytest.raises(ValueError, match="nn.Linear '1' runs after the head '0.fc'"):
        getattr(md, call)(x)


def test_naming_the_classifier_of_a_model_with_an_auxiliary_linear_works(data):
    x, _ = data
    torch.manual_seed(0)
    net = WithAux().eval()
    md = opnp.from_model(net, "energy", head="fc", progress=False)
    with torch.no_grad():
        expected = torch.logsumexp(net(x).double(), dim=1).numpy()
    np.testing.assert_allclose(md.score(x), expected, rtol=1e-6)
    assert md.to_module() is not None  # the output is the head's


def test_meta_device_model_is_refused_at_construction():
    with torch.device("meta"):
        net = Net()
    with pytest.raises(ValueError, match="'meta' device.*'conv.weight'.*to_empty"):
        opnp.from_model(net, "energy")


# -- dtypes -----------------------------------------------------------------------------


def test_integer_images_are_refused_with_the_dtype(net, data):
    x, _ = data
    md = opnp.from_model(net, "energy", progress=False)
    with pytest.raises(ValueError, match=r"dtype torch.uint8.*x.float\(\) / 255"):
        md.score((x.abs() * 50).to(torch.uint8))
    assert net.calls == 0


@pytest.mark.parametrize("model_dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("method", ["energy", "knn", "mahalanobis"])
def test_other_floating_dtypes_are_cast_to_the_model(data, model_dtype, method):
    """float32 images into a float16 / bfloat16 / float64 model (and float64 images into
    it) score like the images in the model's own dtype."""
    x, y = data
    torch.manual_seed(0)
    net = Net().to(model_dtype).eval()
    params = {"k": 3} if method == "knn" else {}
    md = opnp.from_model(net, method, progress=False, **params).fit(x, y)
    own = md.score(x.to(model_dtype))
    assert np.all(np.isfinite(own))
    np.testing.assert_array_equal(md.score(x), own)
    np.testing.assert_array_equal(md.score(x.double()), own)
    with torch.no_grad():
        _, exported = md.to_module()(x)
    np.testing.assert_allclose(exported.numpy(), own, rtol=1e-10, atol=1e-12)


# -- tune and percentiles ---------------------------------------------------------------


def test_tune_with_no_ood_sets_is_a_clear_error_before_any_forward_pass(net, data):
    x, _ = data
    md = opnp.from_model(net, "react", progress=False).fit(x)
    calls = net.calls
    with pytest.raises(ValueError, match="ood_val is an empty dict"):
        md.tune(x, {})
    with pytest.raises(ValueError, match="percentile must be in"):
        md.tune(x, x, grid={"percentile": [90, 150]})
    assert net.calls == calls


@pytest.mark.parametrize(
    ("method", "name"),
    [("react", "percentile"), ("dice", "percentile"), ("ash", "percentile"),
     ("dice+react", "react_percentile"), ("opnp+react", "react_percentile"),
     ("line", "p_w"), ("line", "p_a")],
)  # fmt: skip
def test_percentile_below_one_warns_that_the_unit_is_percent(method, name):
    w, b = np.ones((2, 4)), np.zeros(2)
    with pytest.warns(UserWarning, match=rf"{name}=0.9 is read as 0.9 percent.*{name}=90"):
        opnp.create_detector(method, weight=w, bias=b, **{name: 0.9})
    with pytest.warns(UserWarning, match="percent"):
        opnp.from_model(Net(), method, **{name: 0.9})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for value in (0, 1, 90):
            opnp.create_detector(method, weight=w, bias=b, **{name: value})


def test_labels_of_methods_that_ignore_them_are_not_checked(net, data):
    """A loader's labels may come from another label space (e.g. ImageNet classes for a
    10-class head): methods that do not use labels accept them as before."""
    x, _ = data
    other = torch.arange(len(x)) + 100
    md = opnp.from_model(net, "knn", k=3, progress=False).fit(x, other)
    assert np.all(np.isfinite(md.score(x)))
