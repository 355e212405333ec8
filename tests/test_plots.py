"""Figures: each writes a valid 150-dpi PNG, shows the numbers it claims to show (checked
against hand computations on the returned Figure), and rejects bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from opnp import plots


def check_png(path):
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.mode in ("RGB", "RGBA")
        assert image.size[0] > 100 and image.size[1] > 100
        assert image.info["dpi"] == pytest.approx((plots.DPI, plots.DPI), abs=0.5)
    # written atomically: no temporary file left beside the figure
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


def all_texts(fig):
    texts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        texts += [t.get_text() for t in ax.texts]
        texts.append(ax.get_title())
        legend = ax.get_legend()
        if legend is not None:
            texts += [t.get_text() for t in legend.get_texts()]
    for legend in fig.legends:
        texts += [t.get_text() for t in legend.get_texts()]
    return texts


@pytest.fixture
def sensitivity():
    rng = np.random.default_rng(0)
    param = rng.exponential(1.0, size=(10, 64))
    param[3, 7] = 40.0
    return param, param.mean(axis=0)


# --------------------------------------------------------------------------------------
# Fig. 1 / 7 / 8


def test_sensitivity_distribution(tmp_path, sensitivity):
    param, neuron = sensitivity
    out = tmp_path / "fig1.png"
    fig = plots.plot_sensitivity_distribution(
        {"ResNet": param, "ViT": param[:, :32]},
        out,
        "FC sensitivities",
        neuron_sensitivities={"ResNet": neuron, "ViT": neuron[:32]},
    )
    check_png(out)
    assert len(fig.axes) == 4
    texts = all_texts(fig)
    ratio = param.max() / param.mean()
    assert any(f"max / mean = {ratio:.1f}×" in t for t in texts)
    assert "FC sensitivities" in texts
    # the histogram counts all values, normalised to max 1 on [0, 1]
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert sum(heights) == param.size
    assert fig.axes[0].get_yscale() == "log"


def test_sensitivity_distribution_rejects_bad_input(tmp_path, sensitivity):
    param, neuron = sensitivity
    out = tmp_path / "f.png"
    with pytest.raises(ValueError, match="sensitivities must be a non-empty dict"):
        plots.plot_sensitivity_distribution({}, out, "t")
    with pytest.raises(ValueError, match="NaN"):
        plots.plot_sensitivity_distribution({"a": np.array([1.0, np.nan])}, out, "t")
    with pytest.raises(ValueError, match="empty"):
        plots.plot_sensitivity_distribution({"a": np.array([])}, out, "t")
    with pytest.raises(ValueError, match="negative"):
        plots.plot_sensitivity_distribution({"a": np.array([1.0, -1.0])}, out, "t")
    with pytest.raises(ValueError, match="zero everywhere"):
        plots.plot_sensitivity_distribution({"a": np.zeros(4)}, out, "t")
    with pytest.raises(ValueError, match="labels"):
        plots.plot_sensitivity_distribution(
            {"a": param}, out, "t", neuron_sensitivities={"b": neuron}
        )
    with pytest.raises(ValueError, match=r"\.png"):
        plots.plot_sensitivity_distribution({"a": param}, tmp_path / "f.pdf", "t")
    assert not out.exists()


# --------------------------------------------------------------------------------------
# Fig. 2(b)


def test_pruning_before_after(tmp_path, sensitivity):
    param, neuron = sensitivity
    weight_mask = param < np.percentile(param, 95)
    neuron_mask = neuron > np.percentile(neuron, 10)
    out = tmp_path / "fig2.png"
    fig = plots.plot_pruning_before_after(param, neuron, weight_mask, neuron_mask, out)
    check_png(out)
    axes = np.array(fig.axes).reshape(2, 2)
    assert sum(p.get_height() for p in axes[0, 0].patches) == param.size
    assert sum(p.get_height() for p in axes[0, 1].patches) == weight_mask.sum()
    assert sum(p.get_height() for p in axes[1, 1].patches) == neuron_mask.sum()
    assert f"{100 * weight_mask.mean():.1f} %" in axes[0, 1].get_title()


def test_pruning_before_after_rejects_bad_input(tmp_path, sensitivity):
    param, neuron = sensitivity
    keep_w = np.ones(param.shape, dtype=bool)
    keep_n = np.ones(neuron.shape, dtype=bool)
    out = tmp_path / "f.png"
    with pytest.raises(ValueError, match="weight_mask has shape"):
        plots.plot_pruning_before_after(param, neuron, keep_w.T, keep_n, out)
    with pytest.raises(ValueError, match="boolean mask"):
        plots.plot_pruning_before_after(param, neuron, keep_w * 0.5, keep_n, out)
    with pytest.raises(ValueError, match="D must match"):
        plots.plot_pruning_before_after(param, neuron[:10], keep_w, keep_n[:10], out)
    with pytest.raises(ValueError, match="prunes everything"):
        plots.plot_pruning_before_after(param, neuron, keep_w, ~keep_n, out)


# --------------------------------------------------------------------------------------
# Fig. 3


def sweep_results(seeds=(0, 1)):
    rng = np.random.default_rng(3)
    rows = []
    for name, values in {
        "weight_low": [0, 10, 20],
        "weight_high": [0, 0.5, 1],
        "neuron_high": [0, 5],
        "neuron_low": [0, 10],
    }.items():
        for value in values:
            for ood in ("SUN", "Places"):
                for seed in seeds:
                    rows.append(
                        {
                            "model": "resnet50",
                            "experiment": "fig3",
                            "split": "test",
                            "method": "opnp",
                            "variant": name,
                            "params": json.dumps({name: value}),
                            "ood_set": ood,
                            "seed": seed,
                            "fpr95": rng.uniform(20, 60),
                            "auroc": rng.uniform(80, 95),
                        }
                    )
    return pd.DataFrame(rows)


def test_percentage_sweep(tmp_path):
    results = sweep_results()
    out = tmp_path / "fig3.png"
    fig = plots.plot_percentage_sweep(results, out)
    check_png(out)
    axes = np.array(fig.axes).reshape(2, 4)
    assert [ax.get_title() for ax in axes[0]] == [
        "(a) weight_high",
        "(b) weight_low",
        "(c) neuron_high",
        "(d) neuron_low",
    ]
    # The dashed average line of weight_low / AUROC, against a hand computation.
    line = next(ln for ln in axes[1, 1].get_lines() if ln.get_label() == "Average")
    sel = results[results["variant"] == "weight_low"]
    expected = [
        sel[sel["params"] == json.dumps({"weight_low": v})]["auroc"].mean() for v in (0, 10, 20)
    ]
    assert list(line.get_xdata()) == [0, 10, 20]
    assert list(line.get_ydata()) == pytest.approx(expected)
    assert {"SUN", "Places", "Average"} <= set(all_texts(fig))


def test_percentage_sweep_rejects_bad_input(tmp_path):
    results = sweep_results(seeds=(0,))
    out = tmp_path / "f.png"
    with pytest.raises(ValueError, match="no rows"):
        plots.plot_percentage_sweep(results.assign(experiment="main"), out)
    bad = results.copy()
    bad.loc[0, "params"] = json.dumps({"other": 1})
    with pytest.raises(ValueError, match="do not hold"):
        plots.plot_percentage_sweep(bad, out)
    bad = results.copy()
    bad.loc[0, "fpr95"] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        plots.plot_percentage_sweep(bad, out)
    with pytest.raises(ValueError, match="several rows"):
        plots.plot_percentage_sweep(pd.concat([results, results.iloc[:1]]), out)
    with pytest.raises(ValueError, match="lacks some of the OOD sets"):
        plots.plot_percentage_sweep(results.iloc[1:], out)
    with pytest.raises(ValueError, match="lacks columns"):
        plots.plot_percentage_sweep(results.drop(columns="params"), out)


# --------------------------------------------------------------------------------------
# Fig. 4


def calibration_frame():
    """Two methods x 4 bins (one empty), ECE in percent by hand."""
    rows = []
    specs = {
        "energy": ([0, 10, 30, 60], [np.nan, 0.30, 0.55, 0.70], [np.nan, 0.40, 0.60, 0.90]),
        "opnp": ([0, 20, 40, 40], [np.nan, 0.35, 0.60, 0.80], [np.nan, 0.38, 0.62, 0.85]),
    }
    for method, (count, accuracy, confidence) in specs.items():
        n = sum(count)
        ece = (
            100
            * sum(c * abs(a - f) for c, a, f in zip(count, accuracy, confidence, strict=True) if c)
            / n
        )
        for i in range(4):
            rows.append(
                {
                    "model": "resnet50",
                    "method": method,
                    "bin_lower": i / 4,
                    "bin_upper": (i + 1) / 4,
                    "confidence": confidence[i],
                    "accuracy": accuracy[i],
                    "count": count[i],
                    "ece": ece,
                }
            )
    return pd.DataFrame(rows)


def test_reliability(tmp_path):
    frame = calibration_frame()
    out = tmp_path / "fig4.png"
    fig = plots.plot_reliability(frame, out)
    check_png(out)
    assert len(fig.axes) == 3
    titles = [ax.get_title() for ax in fig.axes]
    # energy: (10 * 0.10 + 30 * 0.05 + 60 * 0.20) / 100 = 14.5 %
    assert "ECE = 14.50 %" in titles[1]
    # opnp: (20 * 0.03 + 40 * 0.02 + 40 * 0.05) / 100 = 3.4 %
    assert "ECE = 3.40 %" in titles[2]
    # reliability bars: the accuracy of the non-empty bins
    heights = [p.get_height() for p in fig.axes[1].patches[:3]]
    assert heights == pytest.approx([0.30, 0.55, 0.70])


def test_reliability_rejects_bad_input(tmp_path):
    frame = calibration_frame()
    out = tmp_path / "f.png"
    with pytest.raises(ValueError, match="lacks columns"):
        plots.plot_reliability(frame.drop(columns="ece"), out)
    with pytest.raises(ValueError, match="percent"):
        plots.plot_reliability(frame.assign(ece=frame["ece"] / 100), out)
    bad = frame.copy()
    bad.loc[1, "accuracy"] = np.nan  # a bin with samples
    with pytest.raises(ValueError, match="NaN in a bin with samples"):
        plots.plot_reliability(bad, out)
    bad = frame.copy()
    bad.loc[2, "confidence"] = 1.5
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        plots.plot_reliability(bad, out)
    with pytest.raises(ValueError, match="DataFrame"):
        plots.plot_reliability(frame.to_dict(), out)


# --------------------------------------------------------------------------------------
# Fig. 5


def test_score_distributions(tmp_path):
    rng = np.random.default_rng(5)
    scores = {
        "Energy": {
            "ID": rng.normal(2, 1, 400),
            "SUN": rng.normal(0, 1, 300),
            "Places": rng.normal(0.5, 1, 200),
        },
        "OPNP": {
            "ID": rng.normal(3, 1, 400),
            "SUN": rng.normal(0, 0.5, 300),
            "Places": rng.normal(0.5, 0.5, 200),
        },
    }
    out = tmp_path / "fig5.png"
    fig = plots.plot_score_distributions(scores, out)
    check_png(out)
    axes = np.array(fig.axes).reshape(2, 2)
    assert axes[0, 0].get_title() == "Energy: ID vs SUN"
    assert axes[1, 1].get_title() == "OPNP: ID vs Places"
    # AUROC by hand: fraction of (ID, OOD) pairs with the ID score higher (no ties).
    ids, ood = scores["OPNP"]["ID"], scores["OPNP"]["SUN"]
    auroc = 100 * np.mean(ids[:, None] > ood[None, :])
    assert any(f"AUROC {auroc:.2f}" in t for t in [t.get_text() for t in axes[0, 1].texts])


def test_score_distributions_rejects_bad_input(tmp_path):
    out = tmp_path / "f.png"
    good = {"ID": np.ones(5), "SUN": np.zeros(5)}
    with pytest.raises(ValueError, match="'ID' array"):
        plots.plot_score_distributions({"Energy": {"SUN": np.zeros(5)}}, out)
    with pytest.raises(ValueError, match="no OOD set"):
        plots.plot_score_distributions({"Energy": {"ID": np.ones(5)}}, out)
    with pytest.raises(ValueError, match="OOD sets"):
        plots.plot_score_distributions(
            {"Energy": good, "OPNP": {"ID": np.ones(5), "Places": np.zeros(5)}}, out
        )
    with pytest.raises(ValueError, match="NaN"):
        plots.plot_score_distributions({"Energy": {"ID": np.ones(5), "SUN": [0.0, np.nan]}}, out)
    with pytest.raises(ValueError, match="1-dimensional"):
        plots.plot_score_distributions({"Energy": {"ID": np.ones((2, 2)), "SUN": np.zeros(5)}}, out)


# --------------------------------------------------------------------------------------
# Fig. 6


def test_layer_sensitivity(tmp_path):
    layer_means = pd.DataFrame(
        {
            "layer": ["layer1", "layer2", "layer3", "layer4", "fc"],
            "mean_sensitivity": [3e-2, 1e-2, 4e-3, 1e-3, 2e-4],
        }
    )
    out = tmp_path / "fig6.png"
    fig = plots.plot_layer_sensitivity(layer_means, out)
    check_png(out)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == list(layer_means["layer"])
    assert [p.get_height() for p in ax.patches] == pytest.approx(
        list(layer_means["mean_sensitivity"])
    )


def test_layer_sensitivity_rejects_bad_input(tmp_path):
    out = tmp_path / "f.png"
    with pytest.raises(ValueError, match="> 0"):
        plots.plot_layer_sensitivity(
            pd.DataFrame({"layer": ["a", "b"], "mean_sensitivity": [1.0, 0.0]}), out
        )
    with pytest.raises(ValueError, match="several rows"):
        plots.plot_layer_sensitivity(
            pd.DataFrame({"layer": ["a", "a"], "mean_sensitivity": [1.0, 2.0]}), out
        )
    with pytest.raises(ValueError, match="no rows"):
        plots.plot_layer_sensitivity(pd.DataFrame({"layer": [], "mean_sensitivity": []}), out)


# --------------------------------------------------------------------------------------
# Fig. 9


def test_pruned_weight_sensitivity(tmp_path, sensitivity):
    param, _ = sensitivity
    rng = np.random.default_rng(9)
    ood = param * rng.uniform(1.0, 2.0, size=param.shape)
    keep = param < np.percentile(param, 90)
    out = tmp_path / "fig9.png"
    fig = plots.plot_pruned_weight_sensitivity(param, ood, keep, out, ood_name="SUN")
    check_png(out)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == [
        f"ID (mean {param[~keep].mean():.3g})",
        f"SUN (mean {ood[~keep].mean():.3g})",
    ]
    assert f"{(~keep).sum():,} pruned weights" in fig.axes[0].get_title()


def test_pruned_weight_sensitivity_rejects_bad_input(tmp_path, sensitivity):
    param, _ = sensitivity
    keep = np.ones(param.shape, dtype=bool)
    out = tmp_path / "f.png"
    with pytest.raises(ValueError, match="prunes no weight"):
        plots.plot_pruned_weight_sensitivity(param, param, keep, out)
    with pytest.raises(ValueError, match="ood_sensitivity has"):
        plots.plot_pruned_weight_sensitivity(param, param[:, :5], keep, out)
    with pytest.raises(ValueError, match="weight_mask has shape"):
        plots.plot_pruned_weight_sensitivity(param, param, keep[:, :5], out)
    with pytest.raises(ValueError, match="ood_name"):
        plots.plot_pruned_weight_sensitivity(param, param, ~keep, out, ood_name="")
    with pytest.raises(ValueError, match="bins"):
        plots.plot_pruned_weight_sensitivity(param, param, ~keep, out, bins=0)


def test_fig9_plots_the_low_sensitivity_pruned_weights(tmp_path, sensitivity):
    """Eq. 11 is about the weights pruned on the low side: the selected weight_low tail,
    not the high side or pruned neurons; the title says which and the panel the ratio."""
    param, _ = sensitivity
    selected = {"weight_low": 20, "weight_high": 1, "neuron_low": 10, "neuron_high": 5}
    keep, weight_low, source = plots.low_sensitivity_pruned(param, selected, 60)
    assert (weight_low, source) == (20.0, "selected weight_low")
    np.testing.assert_array_equal(~keep, param < np.percentile(param, 20))
    assert param[~keep].max() <= param[keep].min()  # low side only
    rng = np.random.default_rng(9)
    ood = param * rng.uniform(1.0, 2.0, size=param.shape)
    out = tmp_path / "fig9.png"
    fig = plots.plot_pruned_weight_sensitivity(
        param, ood, keep, out, ood_name="SUN", pruned_what="the 20 % least sensitive"
    )
    check_png(out)
    title = fig.axes[0].get_title()
    assert f"{(~keep).sum():,} pruned weights, ID vs SUN" in title
    assert "Eq. 11" in title and "the 20 % least sensitive" in title
    ratio = ood[~keep].mean() / param[~keep].mean()
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any(f"mean SUN / mean ID = {ratio:.3g}" in t for t in texts), texts


def test_fig9_falls_back_when_the_selection_pruned_no_low_side(sensitivity):
    param, _ = sensitivity
    for selected in ({"weight_high": 1, "neuron_low": 10}, {"weight_low": 0}):
        keep, weight_low, source = plots.low_sensitivity_pruned(param, selected, 40)
        assert weight_low == 40.0 and source.startswith("fallback")
        np.testing.assert_array_equal(~keep, param < np.percentile(param, 40))
    with pytest.raises(ValueError, match="fallback_weight_low must be in"):
        plots.low_sensitivity_pruned(param, {}, 0)
