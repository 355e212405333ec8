"""Paper-style tables: layout, mean ± std against hand computations, bolding, errors,
and the Markdown / LaTeX / CSV files."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pandas as pd
import pytest

from opnp import report as tables
from opnp.pipeline.experiments import PRUNING_METHODS
from opnp.report import CombinedCell, SeedStat

OOD_SETS = ["iNaturalist", "SUN", "Places", "Textures"]
MAIN_METHODS = ["msp", "energy", "react", "dice+react", "opnp", "opnp+react"]
SEEDS = [0, 1, 2]


def row(method, ood_set, seed, fpr95, auroc, **extra):
    base = {
        "benchmark": "imagenet",
        "model": "resnet50",
        "experiment": "main",
        "method": method,
        "variant": "",
        "params": "{}",
        "ood_set": ood_set,
        "split": "test",
        "seed": seed,
        "fpr95": float(fpr95),
        "auroc": float(auroc),
        "aupr_in": 50.0,
        "aupr_out": 50.0,
        "id_accuracy": np.nan,
        "n_id": 100,
        "n_ood": 100,
    }
    base.update(extra)
    return base


@pytest.fixture
def main_results():
    """Random metrics for every method x OOD set x seed, plus rows that a table must
    ignore (validation split)."""
    rng = np.random.default_rng(0)
    rows = [
        row(m, o, s, rng.uniform(10, 70), rng.uniform(75, 99))
        for m in MAIN_METHODS
        for o in OOD_SETS
        for s in SEEDS
    ]
    rows += [row(m, "val-ood", 0, 1.0, 99.9, split="val") for m in MAIN_METHODS]
    return pd.DataFrame(rows)


def raw(results, method, ood_set, metric):
    sel = results[
        (results["method"] == method)
        & (results["ood_set"] == ood_set)
        & (results["split"] == "test")
    ].sort_values("seed")
    return sel[metric].tolist()


# --------------------------------------------------------------------------------------
# Cells


def test_seed_stat_formats_mean_and_sample_std():
    stat = SeedStat("fpr95", (10.0, 12.0, 17.0), (0, 1, 2))
    assert stat.mean == pytest.approx(13.0)
    # sample std by hand: deviations -3, -1, 4 -> (9 + 1 + 16) / 2 = 13
    assert stat.std == pytest.approx(13.0**0.5)
    assert stat.text() == "13.00 ± 3.61"
    assert stat.text(latex=True) == "13.00$\\pm$3.61"
    assert str(SeedStat("auroc", (91.2345,))) == "91.23"
    assert np.isnan(SeedStat("auroc", (91.2345,)).std)
    pair = CombinedCell((SeedStat("fpr95", (5.0,)), SeedStat("auroc", (95.0,))))
    assert str(pair) == "5.00/95.00"


# --------------------------------------------------------------------------------------
# Main tables


def test_main_table_layout_matches_paper_table1(main_results):
    table = tables.main_results_table(main_results, MAIN_METHODS, OOD_SETS)
    assert list(table.index) == ["MSP", "Energy", "ReAct", "DICE+ReAct", "OPNP", "OPNP+ReAct"]
    expected = [(o, m) for o in [*OOD_SETS, "Average"] for m in ("FPR95", "AUROC")]
    assert list(table.columns) == expected


def test_main_table_cells_are_mean_and_std_over_seeds(main_results):
    table = tables.main_results_table(main_results, MAIN_METHODS, OOD_SETS)
    for method, label in (("energy", "Energy"), ("opnp+react", "OPNP+ReAct")):
        for ood in OOD_SETS:
            values = raw(main_results, method, ood, "fpr95")
            cell = table.loc[label, (ood, "FPR95")]
            assert cell.mean == pytest.approx(statistics.mean(values))
            assert cell.std == pytest.approx(statistics.stdev(values))
            assert str(cell) == f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def test_average_column_is_mean_over_ood_sets_per_seed(main_results):
    table = tables.main_results_table(main_results, MAIN_METHODS, OOD_SETS)
    for metric, label in (("fpr95", "FPR95"), ("auroc", "AUROC")):
        per_seed = []
        for seed in SEEDS:
            sel = main_results[
                (main_results["method"] == "react")
                & (main_results["seed"] == seed)
                & (main_results["split"] == "test")
            ]
            per_seed.append(sum(sel[metric]) / len(OOD_SETS))
        cell = table.loc["ReAct", ("Average", label)]
        assert cell.mean == pytest.approx(statistics.mean(per_seed))
        assert cell.std == pytest.approx(statistics.stdev(per_seed))


def test_default_ood_order_is_first_appearance(main_results):
    shuffled = main_results.iloc[::-1]
    table = tables.main_results_table(shuffled, ["msp"])
    assert list(dict.fromkeys(table.columns.get_level_values(0))) == [
        *OOD_SETS[::-1],
        "Average",
    ]


def test_combined_cells_and_custom_labels(main_results):
    table = tables.main_results_table(
        main_results,
        ["msp", "opnp"],
        OOD_SETS[:2],
        method_labels=tables.WITH_WITHOUT_LABELS,
        combined_cells=True,
    )
    assert list(table.index) == ["MSP", "Energy+OPNP"]
    assert list(table.columns) == ["iNaturalist", "SUN", "Average"]
    cell = table.loc["MSP", "SUN"]
    fpr = raw(main_results, "msp", "SUN", "fpr95")
    auroc = raw(main_results, "msp", "SUN", "auroc")
    assert str(cell) == (
        f"{statistics.mean(fpr):.2f} ± {statistics.stdev(fpr):.2f}/"
        f"{statistics.mean(auroc):.2f} ± {statistics.stdev(auroc):.2f}"
    )


def test_single_seed_gives_plain_values():
    frame = pd.DataFrame([row("energy", "SUN", 0, 58.414, 86.166)])
    table = tables.main_results_table(frame, ["energy"])
    assert str(table.loc["Energy", ("SUN", "FPR95")]) == "58.41"
    assert str(table.loc["Energy", ("Average", "AUROC")]) == "86.17"


def test_missing_method_or_ood_set_raises(main_results):
    with pytest.raises(ValueError, match="method 'ash'"):
        tables.main_results_table(main_results, ["msp", "ash"], OOD_SETS)
    with pytest.raises(ValueError, match="method 'ash'"):
        tables.main_results_table(main_results, ["ash"])  # default OOD sets
    partial = main_results[
        ~((main_results["method"] == "react") & (main_results["ood_set"] == "SUN"))
    ]
    with pytest.raises(ValueError, match="'react' on OOD set 'SUN'"):
        tables.main_results_table(partial, ["msp", "react"], OOD_SETS)


def test_ambiguous_inputs_raise(main_results):
    doubled = pd.concat([main_results, main_results])
    with pytest.raises(ValueError, match="rows for seed"):
        tables.main_results_table(doubled, ["msp"], OOD_SETS)
    two_params = main_results.copy()
    two_params.loc[two_params["seed"] == 1, "params"] = json.dumps({"percentile": 90})
    with pytest.raises(ValueError, match="different params"):
        tables.main_results_table(two_params, ["msp"], OOD_SETS)
    two_models = main_results.copy()
    two_models.loc[two_models.index[:3], "model"] = "vit"
    with pytest.raises(ValueError, match="mixes models"):
        tables.main_results_table(two_models, ["msp"], OOD_SETS)
    uneven = main_results[~((main_results["ood_set"] == "SUN") & (main_results["seed"] == 2))]
    with pytest.raises(ValueError, match="same seeds"):
        tables.main_results_table(uneven, ["msp"], OOD_SETS)
    with pytest.raises(ValueError, match="methods has duplicates"):
        tables.main_results_table(main_results, ["msp", "msp"], OOD_SETS)
    with pytest.raises(ValueError, match="no rows with split"):
        tables.main_results_table(main_results, ["msp"], OOD_SETS, split="train")


# --------------------------------------------------------------------------------------
# Bold


def bold_frame():
    # SUN: energy best FPR95 (20), opnp best AUROC (97); Places: a tie in FPR95 at the
    # printed precision (30.001 and 29.999 both print 30.00).
    return pd.DataFrame(
        [
            row("msp", "SUN", 0, 50.0, 80.0),
            row("energy", "SUN", 0, 20.0, 90.0),
            row("opnp", "SUN", 0, 25.0, 97.0),
            row("msp", "Places", 0, 30.001, 85.0),
            row("energy", "Places", 0, 29.999, 88.0),
            row("opnp", "Places", 0, 40.0, 99.0),
        ]
    )


def markdown_rows(path):
    lines = path.read_text().splitlines()
    return {line.split("|")[1].strip(): line for line in lines if line.startswith("| ")}


def test_bold_marks_best_per_column(tmp_path):
    table = tables.main_results_table(bold_frame(), ["msp", "energy", "opnp"], ["SUN", "Places"])
    paths = tables.write_table(table, tmp_path / "t1", "Bold test")
    md = markdown_rows(paths["md"])
    cells = {k: [c.strip() for c in v.split("|")[2:-1]] for k, v in md.items()}
    # columns: SUN FPR95, SUN AUROC, Places FPR95, Places AUROC, Average FPR95, Average AUROC
    assert cells["Energy"][0] == "**20.00**"
    assert cells["MSP"][0] == "50.00"
    assert cells["OPNP"][1] == "**97.00**"
    assert cells["MSP"][2] == "**30.00**" and cells["Energy"][2] == "**30.00**"
    assert cells["OPNP"][2] == "40.00"
    # Average FPR95: msp 40.0005, energy 24.9995, opnp 32.5 -> Energy.
    assert cells["Energy"][4] == "**25.00**"
    tex = paths["tex"].read_text()
    assert "\\textbf{20.00}" in tex and "\\textbf{97.00}" in tex
    assert tex.count("\\textbf{") == sum(c.count("**") // 2 for c in md.values())


def test_bold_in_combined_cells_and_rows(tmp_path):
    table = tables.pruning_methods_table(
        bold_frame(),
        ["SUN", "Places"],
        methods=["msp", "energy", "opnp"],
        metric=("fpr95", "auroc"),
    )
    paths = tables.write_table(table, tmp_path / "t4", "")
    md = markdown_rows(paths["md"])
    # Per row (OOD set): SUN best FPR95 is Energy, best AUROC OPNP.
    assert "| **20.00**/90.00 | 25.00/**97.00** |" in md["SUN"]


def test_no_bold_for_single_rows(tmp_path):
    frame = pd.DataFrame([row("energy", "SUN", 0, 20.0, 90.0)])
    table = tables.main_results_table(frame, ["energy"])
    paths = tables.write_table(table, tmp_path / "one", "")
    assert "**" not in paths["md"].read_text()
    paths = tables.write_table(
        tables.main_results_table(bold_frame(), ["msp", "energy"]), tmp_path / "nob", "", bold=None
    )
    assert "**" not in paths["md"].read_text()


# --------------------------------------------------------------------------------------
# Ablation tables


def table3_frame():
    rows = []
    accuracy = {
        "{}": 76.13,
        '{"weight_low": 20}': 75.88,
        '{"weight_high": 1}': 71.6,
        '{"weight_high": 0.5}': 74.72,
        '{"weight_low": 10}': 76.06,
        '{"neuron_high": 0, "weight_high": 0.1}': 75.14,
    }
    for params, acc in accuracy.items():
        rows.append(
            row(
                "opnp",
                "",
                0,
                np.nan,
                np.nan,
                experiment="pruned_accuracy",
                params=params,
                id_accuracy=acc,
            )
        )
    rows.append(row("opnp", "SUN", 0, 20.0, 90.0, id_accuracy=76.13))  # a main row: ignored
    return pd.DataFrame(rows)


def test_pruned_accuracy_table():
    table = tables.pruned_accuracy_table(table3_frame())
    assert list(table.index) == ["ID Acc"]
    assert list(table.columns) == [
        ("none", ""),
        ("weight_high", "0.1"),
        ("weight_high", "0.5"),
        ("weight_high", "1"),
        ("weight_low", "10"),
        ("weight_low", "20"),
    ]
    assert [str(c) for c in table.iloc[0]] == ["76.13", "75.14", "74.72", "71.60", "76.06", "75.88"]
    bad = pd.concat(
        [
            table3_frame(),
            pd.DataFrame(
                [
                    row(
                        "opnp",
                        "",
                        0,
                        np.nan,
                        np.nan,
                        experiment="pruned_accuracy",
                        params='{"weight_high": 1, "weight_low": 10}',
                        id_accuracy=70.0,
                    )
                ]
            ),
        ]
    )
    with pytest.raises(ValueError, match="several nonzero"):
        tables.pruned_accuracy_table(bad)
    no_baseline = table3_frame()
    no_baseline = no_baseline[no_baseline["params"] != "{}"]
    with pytest.raises(ValueError, match="without pruning"):
        tables.pruned_accuracy_table(no_baseline)


def table4_frame():
    rng = np.random.default_rng(4)
    rows = []
    for method in PRUNING_METHODS:
        seeds = SEEDS if method in ("rpp", "rnp") else [0]
        params = json.dumps({"percentage": 10})
        for ood in OOD_SETS:
            for seed in seeds:
                rows.append(
                    row(method, ood, seed, rng.uniform(20, 60), rng.uniform(80, 95), params=params)
                )
    return pd.DataFrame(rows)


def test_pruning_methods_table():
    frame = table4_frame()
    table = tables.pruning_methods_table(frame, OOD_SETS)
    assert list(table.columns) == ["RPP", "TPP", "OPP", "RNP", "TNP", "ONP"]
    assert list(table.index) == [*OOD_SETS, "Average"]
    values = raw(frame, "rpp", "Places", "fpr95")
    cell = table.loc["Places", "RPP"]
    assert cell.metric == "fpr95"
    assert (cell.mean, cell.std) == pytest.approx(
        (statistics.mean(values), statistics.stdev(values))
    )
    tpp = [raw(frame, "tpp", o, "fpr95")[0] for o in OOD_SETS]
    assert table.loc["Average", "TPP"].mean == pytest.approx(statistics.mean(tpp))
    assert table.loc["Average", "TPP"].n == 1
    auroc = tables.pruning_methods_table(frame, OOD_SETS, metric="auroc")
    assert auroc.loc["SUN", "ONP"].mean == pytest.approx(raw(frame, "onp", "SUN", "auroc")[0])
    with pytest.raises(ValueError, match="method 'tnp'"):
        tables.pruning_methods_table(frame[frame["method"] != "tnp"], OOD_SETS)
    with pytest.raises(ValueError, match="metric"):
        tables.pruning_methods_table(frame, OOD_SETS, metric="accuracy")


def variant_frame(experiment, variants, method="opnp", seeds=(0,), extra=()):
    rng = np.random.default_rng(len(variants))
    rows = [
        row(
            method, o, s, rng.uniform(10, 60), rng.uniform(80, 99), experiment=experiment, variant=v
        )
        for v in variants
        for o in OOD_SETS[:2]
        for s in seeds
    ]
    return pd.DataFrame(rows + list(extra))


def _layer_params(variant, index):
    """A Table 7 row's params as the layers job writes them: in-network rows their own
    selected percentages, the FC row OPNP's four, every row its validation accuracy."""
    val = {"val_id_accuracy": 80.0 + index}
    if variant == "none":
        return json.dumps({"parameters": [], **val})
    if variant == "fc":
        return json.dumps(
            {"weight_low": 20, "weight_high": 0.5, "neuron_low": 10, "neuron_high": 5, **val}
        )
    fallback = variant == "layer2"  # as if no setting kept the accuracy: nothing pruned
    return json.dumps(
        {
            "weight_low": 0 if fallback else 10 * index,
            "weight_high": 0 if fallback else 0.1,
            "none_eligible": fallback,
            **val,
        }
    )


def test_layer_ablation_table_rows():
    variants = ["fc", "layerwise", "layer4", "none", "layer2", "global", "layer1", "layer3"]
    frame = variant_frame("layers", variants)
    accuracy = {v: 70.0 + i for i, v in enumerate(variants)}
    frame["id_accuracy"] = frame["variant"].map(accuracy)
    frame["params"] = [_layer_params(v, variants.index(v)) for v in frame["variant"]]
    table = tables.layer_ablation_table(frame, OOD_SETS[:2])
    assert list(table.index) == [
        "No pruning (Energy)",
        "Layer1",
        "Layer2",
        "Layer3",
        "Layer4",
        "Global Threshold Pruning",
        "Layer-wise Pruning",
        "FC Layer",
    ]
    assert list(table.columns) == [*OOD_SETS[:2], "Pruned % (low / high)", "Val ID Acc", "ID Acc"]
    assert table.loc["Global Threshold Pruning", "ID Acc"].mean == accuracy["global"]
    assert table.loc["No pruning (Energy)", "ID Acc"].mean == accuracy["none"]
    assert table.loc["Global Threshold Pruning", "Val ID Acc"].mean == 80.0 + 5
    pct = table["Pruned % (low / high)"]
    assert pct["Global Threshold Pruning"] == "50 / 0.1"
    assert pct["Layer2"] == "0 / 0 (none eligible)"
    assert pct["FC Layer"] == "20 / 0.5; neurons 10 / 5"
    assert pct["No pruning (Energy)"] == "-"
    pooled = frame.assign(
        params=frame["params"].str.replace(
            r'"val_id_accuracy": [0-9.]+', '"val_id_accuracy": "per replicate"', regex=True
        )
    )  # what opnp.pipeline.replicates writes where the replicates differ
    assert tables.layer_ablation_table(pooled, OOD_SETS[:2])["Val ID Acc"].eq("per replicate").all()
    with pytest.raises(ValueError, match="variant 'none' has no id_accuracy"):
        tables.layer_ablation_table(frame.assign(id_accuracy=np.nan), OOD_SETS[:2])
    with pytest.raises(ValueError, match="no 'val_id_accuracy'.*rerun the layers rule"):
        tables.layer_ablation_table(frame.assign(params="{}"), OOD_SETS[:2])
    cell = table.loc["FC Layer", "SUN"]
    sel = frame[(frame["variant"] == "fc") & (frame["ood_set"] == "SUN")].iloc[0]
    assert str(cell) == f"{sel['fpr95']:.2f}/{sel['auroc']:.2f}"
    with pytest.raises(ValueError, match="variant 'layer5'"):
        tables.layer_ablation_table(frame, OOD_SETS[:2], variants=["layer5", "fc"])


def test_subset_table_columns_and_seed_stats():
    energy = variant_frame("subsets", ["none"], method="energy")
    subsets = variant_frame("subsets", ["100%", "1%", "20%", "5%"], method="opp", seeds=SEEDS)
    frame = pd.concat([subsets, energy], ignore_index=True)
    table = tables.subset_table(frame, OOD_SETS[:2])
    assert list(table.columns) == ["w/o pruning", "1%", "5%", "20%", "100%"]
    assert list(table.index) == OOD_SETS[:2]
    fpr = subsets[(subsets["variant"] == "5%") & (subsets["ood_set"] == "SUN")]
    fpr = fpr.sort_values("seed")["fpr95"].tolist()
    part = table.loc["SUN", "5%"].parts[0]
    assert (part.mean, part.std) == pytest.approx((statistics.mean(fpr), statistics.stdev(fpr)))
    assert table.loc["SUN", "w/o pruning"].parts[0].n == 1
    only = tables.subset_table(frame, OOD_SETS[:2], fractions=["1%", "100%"])
    assert list(only.columns) == ["w/o pruning", "1%", "100%"]
    with pytest.raises(ValueError, match="variant 'none'"):
        tables.subset_table(subsets, OOD_SETS[:2])


def test_statistic_table_columns():
    frame = variant_frame("statistics", ["variance", "norm", "median", "min", "max", "mean"])
    table = tables.statistic_table(frame, OOD_SETS[:2])
    assert list(table.columns) == ["Mean", "Max", "Min", "Median", "Norm", "Variance"]
    assert list(table.index) == [*OOD_SETS[:2], tables.SELECTED_LABEL]
    assert (
        list(tables.statistic_table(frame, OOD_SETS[:2], show_selected=False).index)
        == (OOD_SETS[:2])
    )
    with pytest.raises(ValueError, match="OOD set 'Places'"):
        tables.statistic_table(frame, OOD_SETS[:3])


def test_statistic_table_shows_the_percentages_selected_per_statistic(tmp_path):
    chosen = {"mean": {"neuron_low": 10, "neuron_high": 5}, "max": {"neuron_low": 0.5}}
    frame = variant_frame("statistics", ["max", "mean"])
    frame["params"] = frame["variant"].map(lambda v: json.dumps(chosen[v], sort_keys=True))
    table = tables.statistic_table(frame, OOD_SETS[:2])
    assert table.loc[tables.SELECTED_LABEL, "Mean"] == "neuron_high=5, neuron_low=10"
    assert table.loc[tables.SELECTED_LABEL, "Max"] == "neuron_low=0.5"
    paths = tables.write_table(table, tmp_path / "t9", "")
    assert "| Selected | neuron_high=5, neuron_low=10 | neuron_low=0.5 |" in paths["md"].read_text()
    csv = pd.read_csv(paths["csv"]).set_index("OOD set")
    assert csv.loc["Selected", "Mean text"] == "neuron_high=5, neuron_low=10"
    assert np.isnan(csv.loc["Selected", "Mean FPR95 mean"])


def test_selected_params_table():
    selected = pd.DataFrame(
        [
            {
                "model": "resnet50",
                "method": "opnp",
                "params": json.dumps(
                    {"neuron_high": 10, "neuron_low": 0, "weight_high": 0.5, "weight_low": 10},
                    sort_keys=True,
                ),
                "val_fpr95": 25.931,
                "val_auroc": 94.2,
            },
            {
                "model": "resnet50",
                "method": "energy",
                "params": "{}",
                "val_fpr95": 58.41,
                "val_auroc": 86.17,
            },
        ]
    )
    table = tables.selected_params_table(selected)
    assert list(table.index) == ["OPNP", "Energy"]
    assert list(table.columns) == ["Model", "Hyperparameters", "Val FPR95", "Val AUROC"]
    assert table.loc["OPNP", "Hyperparameters"] == (
        "neuron_high=10, neuron_low=0, weight_high=0.5, weight_low=10"
    )
    assert table.loc["Energy", "Hyperparameters"] == "-"
    assert str(table.loc["OPNP", "Val FPR95"]) == "25.93"
    with pytest.raises(ValueError, match="several rows"):
        tables.selected_params_table(pd.concat([selected, selected]))
    with pytest.raises(ValueError, match="lacks columns"):
        tables.selected_params_table(selected.drop(columns="val_auroc"))


# --------------------------------------------------------------------------------------
# Writing


def test_write_table_md_tex_csv(main_results, tmp_path):
    table = tables.main_results_table(main_results, MAIN_METHODS, OOD_SETS)
    paths = tables.write_table(table, tmp_path / "sub" / "table1_main", "Main results (5 %, ±)")
    assert {p.name for p in paths.values()} == {
        "table1_main.md",
        "table1_main.tex",
        "table1_main.csv",
    }
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == sorted(
        p.name for p in paths.values()
    )  # no temporary files left behind

    md = paths["md"].read_text()
    assert md.startswith("Main results (5 %, ±)")
    header = next(line for line in md.splitlines() if line.startswith("| Method"))
    assert "iNaturalist FPR95" in header and "Average AUROC" in header
    # header, separator, one line per method
    assert len([line for line in md.splitlines() if line.startswith("| ")]) == 2 + len(MAIN_METHODS)

    tex = paths["tex"].read_text()
    assert "\\begin{tabular}{l" + "c" * 10 + "}" in tex
    for token in ("\\toprule", "\\midrule", "\\bottomrule", "\\end{tabular}"):
        assert token in tex
    assert "\\caption{Main results (5 \\%, $\\pm$)}" in tex
    assert "\\label{tab:table1_main}" in tex
    assert "\\multicolumn{2}{c}{iNaturalist}" in tex
    assert "DICE+ReAct" in tex and "$\\pm$" in tex

    csv = pd.read_csv(paths["csv"])
    assert list(csv["Method"]) == list(table.index)
    values = raw(main_results, "energy", "SUN", "auroc")
    energy = csv.set_index("Method").loc["Energy"]
    assert energy["SUN AUROC mean"] == pytest.approx(statistics.mean(values))
    assert energy["SUN AUROC std"] == pytest.approx(statistics.stdev(values))
    assert len(csv.columns) == 1 + 2 * 10


def test_write_combined_and_multiindex_tables(tmp_path):
    table = tables.pruned_accuracy_table(table3_frame())
    paths = tables.write_table(table, tmp_path / "table3", "Accuracy")
    tex = paths["tex"].read_text()
    assert "\\multicolumn{3}{c}{weight\\_high}" in tex
    csv = pd.read_csv(paths["csv"])
    assert csv.loc[0, "weight_high 1 ID Acc mean"] == pytest.approx(71.6)
    assert np.isnan(csv.loc[0, "weight_high 1 ID Acc std"])

    frame = variant_frame("statistics", ["mean", "max"], method="onp")
    paths = tables.write_table(tables.statistic_table(frame, OOD_SETS[:2]), tmp_path / "t9", "")
    csv = pd.read_csv(paths["csv"]).set_index("OOD set")
    sel = frame[(frame["variant"] == "max") & (frame["ood_set"] == "SUN")].iloc[0]
    assert csv.loc["SUN", "Max FPR95 mean"] == pytest.approx(sel["fpr95"])
    assert csv.loc["SUN", "Max AUROC mean"] == pytest.approx(sel["auroc"])

    long = tables.long_format(tables.statistic_table(frame, OOD_SETS[:2]))
    assert set(long["metric"]) == {"fpr95", "auroc"} and len(long) == 2 * 2 * 2


def test_write_table_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="table must be a pandas DataFrame"):
        tables.write_table([1, 2], tmp_path / "x", "")
    with pytest.raises(ValueError, match="table is empty"):
        tables.write_table(pd.DataFrame(), tmp_path / "x", "")
    table = tables.main_results_table(bold_frame(), ["msp"])
    with pytest.raises(ValueError, match="bold"):
        tables.write_table(table, tmp_path / "x", "", bold="diagonal")
    with pytest.raises(ValueError, match="decimals"):
        tables.write_table(table, tmp_path / "x", "", decimals=-1)


# --------------------------------------------------------------------------------------
# Bold within noise (paired bootstrap) and caption notes


def _noisy(values, scale, seed):
    return values + np.random.default_rng(seed).normal(0.0, scale, len(values))


@pytest.fixture(scope="module")
def scored_results():
    """Result rows scored the workflow's way (score_rows with bootstrap settings):
    Energy, OPNP = Energy's scores plus a little noise (within noise of it), MSP = much
    noisier scores (clearly worse), on two OOD sets of 300 and one ID set of 400."""
    from opnp.pipeline.results import results_frame, score_rows

    rng = np.random.default_rng(0)
    id_scores = rng.normal(2.0, 1.0, 400)
    ood = {"SUN": rng.normal(0.0, 1.0, 300), "Places": rng.normal(0.3, 1.0, 300)}
    methods = {
        "energy": (id_scores, ood),
        "opnp": (
            _noisy(id_scores, 0.1, 1),
            {k: _noisy(v, 0.1, 2 + i) for i, (k, v) in enumerate(ood.items())},
        ),
        "msp": (
            _noisy(id_scores, 1.2, 5),
            {k: _noisy(v, 1.2, 6 + i) for i, (k, v) in enumerate(ood.items())},
        ),
    }
    rows = []
    for method, (ids, oods) in methods.items():
        rows += score_rows(
            ids, oods, method=method, params={}, split="test", uncertainty={"n_resamples": 500}
        )
    return results_frame(rows, benchmark="b", model="m", config_hash="", provenance={})


def bold_cells(path):
    md = markdown_rows(path)
    return {k: [c.strip().startswith("**") for c in v.split("|")[2:-1]] for k, v in md.items()}


def test_methods_within_noise_of_the_best_are_all_bold(scored_results, tmp_path):
    table = tables.main_results_table(scored_results, ["msp", "energy", "opnp"], ["SUN", "Places"])
    # The two close methods print different values in every column, so only the noise
    # rule can bold both.
    for column in table.columns:
        energy, opnp = table.loc["Energy", column], table.loc["OPNP", column]
        assert f"{energy.mean:.2f}" != f"{opnp.mean:.2f}", column
    bold = bold_cells(tables.write_table(table, tmp_path / "noise", "")["md"])
    assert all(bold["Energy"]) and all(bold["OPNP"]), bold
    assert not any(bold["MSP"]), bold
    # Without the resampled metrics only the best of each column is bold.
    plain = scored_results.drop(columns=["fpr95_resamples", "auroc_resamples"])
    table = tables.main_results_table(plain, ["msp", "energy", "opnp"], ["SUN", "Places"])
    bold = bold_cells(tables.write_table(table, tmp_path / "plain", "")["md"])
    assert [a + b for a, b in zip(bold["Energy"], bold["OPNP"], strict=True)] == [1] * 6


def test_bold_within_noise_per_row_and_with_a_narrow_confidence(scored_results, tmp_path):
    table = tables.pruning_methods_table(
        scored_results, ["SUN", "Places"], methods=["msp", "energy", "opnp"], metric="auroc"
    )
    bold = bold_cells(tables.write_table(table, tmp_path / "rows", "")["md"])
    assert all(bold[name] == [False, True, True] for name in ("SUN", "Places", "Average"))
    # A 1 % interval is nearly a point: the close method is no longer within it.
    narrow = bold_cells(tables.write_table(table, tmp_path / "narrow", "", confidence=1)["md"])
    assert sum(narrow["SUN"]) == 1


def test_average_cells_pair_the_mean_over_ood_sets_per_resample(scored_results):
    table = tables.main_results_table(scored_results, ["energy"], ["SUN", "Places"])
    rows = scored_results[scored_results["method"] == "energy"]
    expected = np.mean(np.stack(rows["fpr95_resamples"].to_list()), axis=0)
    np.testing.assert_allclose(table.loc["Energy", ("Average", "FPR95")].resamples, expected)


def test_seed_cells_pair_the_mean_over_seeds_per_resample():
    frame = pd.DataFrame(
        [
            row("rpp", "SUN", s, 10.0 + s, 90.0, fpr95_resamples=np.full(4, 10.0 + 2 * s))
            for s in (0, 1)
        ]
    )
    table = tables.main_results_table(frame, ["rpp"], ["SUN"], average=False)
    np.testing.assert_allclose(table.loc["RPP", ("SUN", "FPR95")].resamples, np.full(4, 11.0))
    assert table.loc["RPP", ("SUN", "AUROC")].resamples is None  # no auroc_resamples column
    frame.at[1, "fpr95_resamples"] = np.zeros(3)
    with pytest.raises(ValueError, match="fpr95_resamples has \\[3, 4\\] resamples"):
        tables.main_results_table(frame, ["rpp"], ["SUN"])


def test_caption_notes_state_n_seeds_and_the_bold_rule(scored_results):
    table = tables.main_results_table(scored_results, ["msp", "energy"], ["SUN", "Places"])
    notes = tables.caption_notes(table, scored_results, confidence=90)
    assert notes.startswith("n = 400 ID test images; 300 OOD test images per set (2 sets).")
    assert "One seed per cell" in notes
    assert "paired 90 % bootstrap interval" in notes and "500 resamples" in notes
    mixed = pd.DataFrame(
        [row("rpp", "SUN", s, 10, 90, n_ood=70) for s in (0, 1, 2)]
        + [row("tpp", "SUN", 0, 10, 90, n_ood=70), row("tpp", "Places", 0, 10, 90, n_ood=50)]
        + [row("rpp", "Places", s, 10, 90, n_ood=50) for s in (0, 1, 2)]
    )
    table = tables.pruning_methods_table(mixed, ["SUN", "Places"], methods=["rpp", "tpp"])
    notes = tables.caption_notes(table, mixed)
    assert "OOD test images per set: SUN 70, Places 50." in notes
    assert "Seeds per cell: 1, 3 for RPP; ± is the sample standard deviation" in notes
    assert "Bold: the best value in each row (ties at the printed precision)." in notes


def test_subset_sizes_come_from_the_rows_params():
    frame = variant_frame("subsets", ["5%", "1%"], method="opp", seeds=(0, 1))
    frame["params"] = frame["variant"].map(
        {
            "1%": json.dumps({"sensitivity_samples": 9}),
            "5%": json.dumps({"sensitivity_samples": 45}),
        }
    )
    assert tables.subset_sizes(frame) == {"1%": 9, "5%": 45}
    assert "1% = 9, 5% = 45 training images" in tables.subset_sizes_text(frame)
    frame.loc[0, "params"] = "{}"
    with pytest.raises(ValueError, match="sensitivity_samples"):
        tables.subset_sizes(frame)


def test_selected_params_table_names_where_the_react_percentile_came_from():
    selected = pd.DataFrame(
        [
            {
                "model": "m",
                "method": method,
                "params": json.dumps({"percentile": 50, "react_percentile": 80}),
                "val_fpr95": 30.0,
                "val_auroc": 90.0,
            }
            for method in ("dice+react", "opnp+react")
        ]
    )
    table = tables.selected_params_table(
        selected, react_sources={"dice+react": "selected", "opnp+react": "fixed"}
    )
    assert table.loc["DICE+ReAct", "Hyperparameters"] == (
        "percentile=50, react_percentile=80 (ReAct's selection)"
    )
    assert table.loc["OPNP+ReAct", "Hyperparameters"] == (
        "percentile=50, react_percentile=80 (fixed in config)"
    )
    with pytest.raises(ValueError, match=r"react_sources\['dice\+react'\] = 'guessed'"):
        tables.selected_params_table(selected, react_sources={"dice+react": "guessed"})


def test_table4_note_states_onp_low_side_is_tnp_only_where_it_holds():
    note = tables.onp_low_side_note("mean", "per_sample")
    assert "low side prunes exactly TNP's neurons" in note and "high side" in note
    assert tables.onp_low_side_note("max", "per_sample") == ""
    assert tables.onp_low_side_note("mean", "batch") == ""


def test_layer_ablation_caption_says_how_each_row_was_selected():
    selected = {"neuron_high": 5, "neuron_low": 10, "weight_high": 0.5, "weight_low": 20}
    every = ["a.weight", "b.weight", "c.weight", "fc.weight"]
    how = {
        "sensitivity": "20 % of training",
        "grid": {"weight_high": [0, 1], "weight_low": [0, 10, 40]},
        "selection_metric": "fpr95",
        "max_accuracy_loss": 5,
    }

    def frame_of(layer1_fallback=False, **change):
        in_network = {**how, "weight_low": 10, "weight_high": 0, "none_eligible": False, **change}
        layer1 = {**in_network, "parameters": ["a.weight"], "none_eligible": layer1_fallback}
        return pd.DataFrame(
            {
                "variant": ["none", "fc", "global", "layer1"],
                "params": [
                    json.dumps({"parameters": []}),
                    json.dumps({**selected, "parameters": ["fc.weight"]}),
                    json.dumps({**in_network, "parameters": every}),
                    json.dumps(layer1),
                ],
            }
        )

    caption = tables.layer_ablation_caption(frame_of(), "resnet50")
    assert "all 3 convolutions and the FC layer" in caption
    assert "20 % of training" in caption
    assert "weight_high {0, 1} x weight_low {0, 10, 40}" in caption
    assert "lowest mean validation FPR95" in caption
    assert "losing at most 5 points of validation ID accuracy" in caption
    assert "the 20 % least and 0.5 % most sensitive weights" in caption
    assert "10 % / 5 % least / most sensitive neurons" in caption
    assert "none eligible" not in caption and "prunes nothing (0 / 0)" not in caption
    unpruned = frame_of(weight_low=0)
    assert "For Global Threshold Pruning, Layer1 the selected setting prunes nothing" in (
        tables.layer_ablation_caption(unpruned, "m")
    )
    fallback = tables.layer_ablation_caption(frame_of(layer1_fallback=True), "m")
    assert "No setting stayed within that limit for Layer1" in fallback
    free = tables.layer_ablation_caption(
        frame_of(max_accuracy_loss=None, selection_metric="auroc"), "m"
    )
    assert "with no limit on the ID accuracy" in free and "highest mean validation AUROC" in free
    old = frame_of().assign(params=lambda f: f["params"].str.replace("selection_metric", "x"))
    with pytest.raises(ValueError, match="no 'selection_metric'.*rerun the layers rule"):
        tables.layer_ablation_caption(old, "m")
    with pytest.raises(ValueError, match="no 'fc' row"):
        tables.layer_ablation_caption(frame_of().query("variant != 'fc'"), "m")


def test_small_samples_are_flagged_in_the_caption_and_the_log(scored_results):
    """A table of 30 images bolds FPR95 100.00 beside a best of 0.00 by the rule; below
    SMALL_SAMPLE test images per set its caption (and make_table's log, through the
    table's attrs) says that the numbers cannot compare methods."""
    from opnp.report.captions import SMALL_SAMPLE
    from opnp.report.paper_tables import SMALL_SAMPLE_ATTR, build_table

    small = pd.DataFrame(
        [row(m, "SUN", 0, f, 100 - f, n_id=30, n_ood=30) for m, f in (("msp", 0), ("energy", 100))]
        + [row(m, "Places", 0, 5, 95, n_id=30, n_ood=120) for m in ("msp", "energy")]
    )
    table = tables.main_results_table(small, ["msp", "energy"], ["SUN", "Places"])
    notes = tables.caption_notes(table, small)
    assert (
        f"Small sample: only 30 ID test images, 30 OOD test images of SUN (fewer than "
        f"{SMALL_SAMPLE})." in notes
    )
    assert "Places (" not in notes.split("Small sample")[1].split(".")[0]  # 120 is enough
    assert "steps of 3.33 points" in notes
    assert notes.index("Small sample") < notes.index("Bold:")
    _, caption = build_table(
        "main",
        small,
        model="resnet50",
        ood_sets=["SUN", "Places"],
        methods=["msp", "energy"],
        confidence=95,
        sensitivity={},
        react_sources={},
    )
    assert "Small sample: only 30 ID test images" in caption
    built, _ = build_table(
        "main", small, model="resnet50", ood_sets=["SUN", "Places"], methods=["msp"],
        confidence=95, sensitivity={}, react_sources={},
    )  # fmt: skip
    assert built.attrs[SMALL_SAMPLE_ATTR].startswith("Small sample: only 30 ID test images")
    # at the threshold and above: no caution (scored_results: 400 ID, 300 OOD per set)
    big = tables.main_results_table(scored_results, ["msp", "energy"], ["SUN", "Places"])
    assert "Small sample" not in tables.caption_notes(big, scored_results)
    assert tables.small_sample_text(small.assign(n_id=100, n_ood=100)) == ""
    assert "99 ID test images" in tables.small_sample_text(small.assign(n_id=99, n_ood=100))


@pytest.mark.parametrize("n", [30, 100])
def test_make_table_logs_the_small_sample_caution(tmp_path, monkeypatch, n):
    """workflow/scripts/make_table.py (the workflow's job) writes the caption's caution to
    its log as a WARNING, below SMALL_SAMPLE test images only."""
    import runpy
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    monkeypatch.setattr(sys, "stdout", sys.stdout)  # setup_job redirects them to the log
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    frame = pd.DataFrame(
        [row(m, "SUN", 0, f, 100 - f, n_id=n, n_ood=n) for m, f in (("msp", 0), ("energy", 100))]
    )
    frame.to_parquet(tmp_path / "results.parquet")
    stem = tmp_path / "tables" / "table1_main_results_resnet50"
    fake = SimpleNamespace(
        input=SimpleNamespace(results=str(tmp_path / "results.parquet"), pooled=[]),
        output=SimpleNamespace(md=f"{stem}.md", tex=f"{stem}.tex", csv=f"{stem}.csv"),
        params=SimpleNamespace(
            spec={"experiment": "main", "model": "resnet50"},
            ood_names=["SUN"],
            methods=["msp", "energy"],
            uncertainty={"confidence": 95},
            sensitivity={},
            react_sources={},
        ),
        log=[str(tmp_path / "make_table.log")],
    )
    script = Path(__file__).parents[2] / "workflow" / "scripts" / "make_table.py"
    runpy.run_path(str(script), init_globals={"snakemake": fake})
    log = (tmp_path / "make_table.log").read_text()
    caption = Path(f"{stem}.md").read_text()
    if n < 100:
        assert f"WARNING {stem}: Small sample: only {n} ID test images" in log, log
        assert f"Small sample: only {n} ID test images" in caption
    else:
        assert "Small sample" not in log + caption and "WARNING" not in log, log


# --------------------------------------------------------------------------------------
# Readings ablation


def test_readings_table_rows_columns_accuracy_and_caption(main_results):
    from opnp.report.paper_tables import build_table
    from opnp.report.table_ablations import ID_ACC_LABEL

    variants = [("opnp", "threshold_scope=matrix"), ("opnp", "threshold_scope=row")]
    variants += [("tnp", "tnp_statistic=mean_abs_activation")]
    readings = [
        row(m, o, 0, 10 + i, 90 - i, experiment="readings", variant=v, id_accuracy=80 + j)
        for i, (m, v) in enumerate(variants)
        for j, o in enumerate(OOD_SETS)
    ]
    energy_acc = main_results.assign(id_accuracy=95.0)
    results = pd.concat([energy_acc[energy_acc["seed"] == 0], pd.DataFrame(readings)])
    table, caption = build_table(
        "readings",
        results,
        model="resnet50",
        ood_sets=OOD_SETS,
        methods=MAIN_METHODS,
        confidence=95,
        sensitivity={"train": "imagenet-train", "unlabeled": [], "reduction": "per_sample"},
        react_sources={},
    )
    assert list(table.index) == [
        "OPNP (threshold_scope=matrix)",
        "OPNP (threshold_scope=row)",
        "TNP (tnp_statistic=mean_abs_activation)",
        "Energy",
        "ReAct",
    ]
    assert [c for c in dict.fromkeys(table.columns.get_level_values(0))] == [
        *OOD_SETS,
        "Average",
        ID_ACC_LABEL,
    ]
    # the row's metrics and the mean accuracy over its OOD sets' settings (80..83)
    assert table.loc["OPNP (threshold_scope=row)", ("SUN", "FPR95")].mean == 11.0
    assert table.loc["OPNP (threshold_scope=row)", ("Average", "AUROC")].mean == 89.0
    assert table.loc["TNP (tnp_statistic=mean_abs_activation)", (ID_ACC_LABEL, "")].mean == 81.5
    assert table.loc["Energy", (ID_ACC_LABEL, "")].mean == 95.0
    assert "other families" in caption and "imagenet-train" in caption
    assert "paired intervals" in caption
    # the readings' rows are stated (n, bold rule): one seed, 100 images
    assert "n = 100 ID test images" in caption


def test_readings_table_without_reference_methods_and_without_rows():
    from opnp.report.table_ablations import readings_table

    rows = pd.DataFrame(
        [
            row(
                "opnp",
                o,
                0,
                10,
                90,
                experiment="readings",
                variant="reduction=batch",
                id_accuracy=70,
            )
            for o in OOD_SETS
        ]
    )
    table = readings_table(rows, rows.iloc[0:0], OOD_SETS)
    assert list(table.index) == ["OPNP (reduction=batch)"]
    with pytest.raises(ValueError, match="no test rows"):
        readings_table(rows.iloc[0:0], rows.iloc[0:0], OOD_SETS)


def test_readings_caption_names_the_rows_with_their_own_sensitivity():
    from opnp.report.captions import readings_sensitivity_note

    frame = pd.DataFrame(
        {"variant": ["reduction=per_sample", "reduction=batch", "sensitivity_features=clipped"]}
    )
    note = readings_sensitivity_note(frame, "per_sample")
    assert "reduction=batch, sensitivity_features=clipped" in note
    assert "reduction=per_sample" not in note
    assert readings_sensitivity_note(frame.iloc[:1], "per_sample") == ""
