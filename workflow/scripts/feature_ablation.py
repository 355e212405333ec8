"""An ablation on cached features whose catalogue entry names the function computing its
rows (opnp.pipeline.experiments.Experiment.compute)."""

from opnp.pipeline.artifacts import JobInputs, write_job_results
from opnp.pipeline.experiments import AblationJob, function_at
from opnp.pipeline.runtime import setup_job

log = setup_job(snakemake.log[0], threads=snakemake.threads)
settings = snakemake.params.job
job = AblationJob(
    experiment=snakemake.wildcards.experiment,
    inputs=JobInputs(snakemake.input.items()),
    settings=settings["settings"],
    statistic=settings["statistic"],
    metric=settings["metric"],
    uncertainty=snakemake.params.uncertainty,
)
rows = function_at(snakemake.params.compute)(job)
log.info("%s: %d rows from %s", job.experiment, len(rows), snakemake.params.compute)
write_job_results(rows, snakemake.output[0], **snakemake.params.results)
