"""Concatenate every Parquet result file of the benchmark into one table."""

from opnp.pipeline.artifacts import write_results
from opnp.pipeline.results import concat_results
from opnp.pipeline.runtime import setup_job

log = setup_job(snakemake.log[0])
frame = concat_results(snakemake.input)
log.info("%d rows from %d files", len(frame), len(snakemake.input))
write_results(frame, snakemake.output[0])
