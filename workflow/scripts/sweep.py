"""Fig. 3 data: FPR95/AUROC against each pruning percentage with the others at 0."""

from opnp.pipeline.artifacts import (
    job_results,
    load_fc,
    load_feature_set,
    load_ood_features,
    load_sensitivity,
    write_results,
)
from opnp.pipeline.evaluation import evaluate_configs
from opnp.pipeline.runtime import setup_job

log = setup_job(snakemake.log[0], threads=snakemake.threads)
weight, bias = load_fc(snakemake.input.fc)
sensitivity = load_sensitivity(snakemake.input.sensitivity)
id_test = load_feature_set(snakemake.input.id_test)
ood_test = load_ood_features(snakemake.input.ood_test)
rows = []
for name, values in snakemake.params.sweep.items():
    configs = [{name: value} for value in values]
    sweep_rows, _ = evaluate_configs(
        "opnp",
        configs,
        weight=weight,
        bias=bias,
        train_features=None,
        train_labels=None,
        id_features=id_test.features,
        ood_features=ood_test,
        split="test",
        sensitivity=sensitivity,
        statistic=snakemake.params.statistic,
        experiment=snakemake.rule,
        variant=name,
        uncertainty=snakemake.params.uncertainty,
    )
    rows += sweep_rows
    log.info("%s: %d values", name, len(values))
frame = job_results(
    rows,
    benchmark=snakemake.params.benchmark,
    model=snakemake.wildcards.model,
    config_hash=snakemake.params.config_hash,
)
write_results(frame, snakemake.output[0])
