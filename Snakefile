# OPNP reproduction workflow: regenerates the paper's tables and figures for the
# benchmark described by the active config (default: the embedded digits benchmark).
# Run: snakemake --cores 2        Config keys: config/README.md


report: "workflow/report/workflow.rst"


# A --configfile names a whole benchmark and replaces the default one: Snakemake would
# otherwise merge nested keys, adding the digits model and datasets to an ImageNet run.
# --config KEY=VALUE alone still edits the default benchmark.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/sensitivity.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/ablations.smk"
include: "workflow/rules/report.smk"


# Light steps run in the main Snakemake process's machine, never as cluster jobs: a
# scheduler round trip would cost more than the work.
localrules:
    all,
    aggregate_results,
    make_table,
    figure_sensitivity_distribution,
    figure_pruning_before_after,
    figure_percentage_sweep,
    figure_reliability,
    figure_score_distributions,
    figure_layer_sensitivity,
    figure_pruned_weight_sensitivity,


rule all:
    default_target: True
    input:
        final_outputs(),
