"""Fig. 4 data: reliability curve and ECE of the original layer and the OPNP-pruned layer
on the ID test set."""

import pandas as pd

from opnp.pipeline.ablations import calibration_frame
from opnp.pipeline.artifacts import JobInputs, write_results
from opnp.pipeline.evaluation import build_detector
from opnp.pipeline.runtime import setup_job
from opnp.pipeline.selection import selected_params

log = setup_job(snakemake.log[0], threads=snakemake.threads)
inputs = JobInputs(snakemake.input.items())
id_test = inputs.features("id_test")
params = selected_params(pd.read_parquet(snakemake.input.selection))
opnp = build_detector("opnp", params, inputs.fit_data(snakemake.params.statistic))
n_bins = snakemake.params.n_bins
frame = pd.concat(
    [
        calibration_frame("energy", id_test.logits, id_test.labels, n_bins=n_bins),
        calibration_frame("opnp", opnp.logits(id_test.features), id_test.labels, n_bins=n_bins),
    ],
    ignore_index=True,
)
frame.insert(0, "model", snakemake.wildcards.model)
frame.insert(0, "benchmark", snakemake.params.benchmark)
log.info("ECE: %s", frame.groupby("method")["ece"].first().to_dict())
write_results(frame, snakemake.output[0])
