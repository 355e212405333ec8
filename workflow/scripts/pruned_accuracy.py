"""Table 3: ID accuracy of the pruned FC layer, one pruning percentage at a time."""

from opnp.pipeline.ablations import pruned_accuracy_rows
from opnp.pipeline.artifacts import (
    job_results,
    load_fc,
    load_feature_set,
    load_sensitivity,
    write_results,
)
from opnp.pipeline.runtime import setup_job

log = setup_job(snakemake.log[0], threads=snakemake.threads)
weight, bias = load_fc(snakemake.input.fc)
id_test = load_feature_set(snakemake.input.id_test)
sensitivity = load_sensitivity(snakemake.input.sensitivity)
rows = pruned_accuracy_rows(
    snakemake.params.grid,
    weight=weight,
    bias=bias,
    features=id_test.features,
    labels=id_test.labels,
    sensitivity=sensitivity,
    statistic=snakemake.params.statistic,
)
for row in rows:
    log.info("%s: %.2f %%", row["params"], row["id_accuracy"])
frame = job_results(
    rows,
    benchmark=snakemake.params.benchmark,
    model=snakemake.wildcards.model,
    config_hash=snakemake.params.config_hash,
)
write_results(frame, snakemake.output[0])
