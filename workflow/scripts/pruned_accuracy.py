"""Table 3: ID accuracy of the pruned FC layer, one pruning percentage at a time."""

from opnp.pipeline.ablations import pruned_accuracy_rows
from opnp.pipeline.artifacts import JobInputs, write_job_results
from opnp.pipeline.runtime import setup_job

log = setup_job(snakemake.log[0], threads=snakemake.threads)
inputs = JobInputs(snakemake.input.items())
id_test = inputs.features("id_test")
rows = pruned_accuracy_rows(
    snakemake.params.grid,
    inputs.fit_data(snakemake.params.statistic),
    features=id_test.features,
    labels=id_test.labels,
)
for row in rows:
    log.info("%s: %.2f %%", row["params"], row["id_accuracy"])
write_job_results(rows, snakemake.output[0], **snakemake.params.results)
