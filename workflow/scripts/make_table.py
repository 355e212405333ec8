"""One paper-style table (Markdown, LaTeX, CSV) from the aggregated Parquet results."""

import pandas as pd

from opnp import report as tables
from opnp.pipeline.replicates import pool_replicates
from opnp.pipeline.runtime import setup_job

log = setup_job(snakemake.log[0])
spec = snakemake.params.spec
kind = spec["kind"]
results = pd.read_parquet(snakemake.input.results)
if "replicates" in spec:
    results = pool_replicates(results, spec["replicates"], spec["model"])
results = results[results["model"] == spec["model"]]
main = results[(results["experiment"] == "main") & (results["split"] == "test")]
ood_sets = snakemake.params.ood_names
if kind == "main":
    methods = [m for m in snakemake.params.methods if m in set(main["method"])]
    table = tables.main_results_table(main, methods, ood_sets)
    caption = f"Main results ({spec['model']}): FPR95 (lower is better) and AUROC (higher is better) per OOD set; hyperparameters chosen on the validation split."
elif kind == "with_without":
    table = tables.main_results_table(
        main,
        snakemake.params.with_without_methods,
        ood_sets,
        method_labels=tables.WITH_WITHOUT_LABELS,
        combined_cells=True,
    )
    caption = f"Post-hoc scores with and without OPNP ({spec['model']}), cells FPR95/AUROC (paper Tables 5/6)."
elif kind == "selected":
    selection = results[
        (results["split"] == "val") & results["selected"] & (results["experiment"] == "main")
    ]
    chosen = (
        selection.groupby(["model", "method", "params"], sort=False)[["fpr95", "auroc"]]
        .mean()
        .reset_index()
        .rename(columns={"fpr95": "val_fpr95", "auroc": "val_auroc"})
    )
    table = tables.selected_params_table(chosen, react_sources=snakemake.params.react_sources)
    caption = f"Hyperparameters chosen on the validation split ({spec['model']}), with their mean validation FPR95/AUROC."
elif kind == "table3":
    table = tables.pruned_accuracy_table(results[results["experiment"] == "table3"])
    caption = f"ID accuracy of the OPNP-pruned FC layer for single pruning percentages ({spec['model']}, paper Table 3)."
elif kind == "table4":
    table = tables.pruning_methods_table(
        main[main["method"].isin(snakemake.params.table4_methods)], ood_sets
    )
    caption = f"Random (RPP/RNP), magnitude (TPP/TNP) and sensitivity-guided (OPP/ONP) pruning, each at its validation-selected percentage; FPR95 ({spec['model']}, paper Table 4)."
    caption += tables.onp_low_side_note(**snakemake.params.sensitivity)
elif kind == "table7":
    table7 = results[(results["experiment"] == "table7") & (results["split"] == "test")]
    table = tables.layer_ablation_table(table7, ood_sets)
    caption = tables.layer_ablation_caption(table7, spec["model"])
elif kind == "table8":
    table = tables.subset_table(
        results[(results["experiment"] == "table8") & (results["split"] == "test")], ood_sets
    )
    caption = f"OPP with sensitivities estimated on 1-100 % of the training set ({spec['model']}, paper Table 8), cells FPR95/AUROC, mean ± std over subset seeds."
elif kind == "table9":
    table = tables.statistic_table(
        results[(results["experiment"] == "table9") & (results["split"] == "test")], ood_sets
    )
    caption = (
        f"ONP with different neuron statistics ({spec['model']}, paper Table 9), cells FPR95/AUROC."
    )
else:
    raise ValueError(f"unknown table kind {kind!r}")
confidence = snakemake.params.uncertainty["confidence"]
if kind != "selected":
    # n, seeds, what ± means and the bold rule, from the test rows of this table's
    # experiment (every row of one experiment scores the same test sets).
    experiment = kind if kind in ("table3", "table7", "table8", "table9") else "main"
    shown = results[(results["experiment"] == experiment) & (results["split"] == "test")]
    sets = None if kind == "table3" else ood_sets
    caption = (
        f"{caption} {tables.caption_notes(table, shown, confidence=confidence, ood_sets=sets)}"
    )
if kind == "table8":
    caption = f"{caption} {tables.subset_sizes_text(shown)}"
if kind == "table9":
    caption = f"{caption} Row {tables.SELECTED_LABEL}: the hyperparameters selected on the validation split for each statistic."
if "replicates" in spec:
    seeds = sorted(spec["replicates"].values())
    chosen = (
        ""
        if kind == "table3"
        else (" (hyperparameters chosen on each replicate's own validation split)")
    )
    caption += (
        f" Pooled over {len(seeds)} replicates (split seeds {seeds}): the seeds above are "
        f"these split seeds; each cell is the mean ± std over replicates of one replicate's "
        f"result{chosen}."
    )
stem = snakemake.output.md[: -len(".md")]
tables.write_table(table, stem, caption, confidence=confidence)
log.info("wrote %s (%d rows)", stem, len(table))
