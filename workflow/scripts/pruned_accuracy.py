"""Table 3: ID accuracy of the pruned FC layer, one pruning percentage at a time."""

import numpy as np

from opnp.io import write_json_atomic
from opnp.pipeline.ablations import pruned_accuracy_rows, sensitivity_coverage
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
write_job_results(rows, snakemake.output.results, **snakemake.params.results)
with np.load(snakemake.input.sensitivity) as data:
    coverage = sensitivity_coverage(data["predicted_class_counts"], id_test.labels, data["param"])
log.info("class coverage of the sensitivity set: %s", coverage)
write_json_atomic(snakemake.output.coverage, coverage)
