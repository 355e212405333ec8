"""The readings figure: average test FPR95 of each value of each reading, with its
bootstrap interval (opnp.report.figure_readings)."""

import pandas as pd

from opnp.pipeline.runtime import setup_job
from opnp.report.figure_readings import plot_readings

setup_job(snakemake.log[0])
plot_readings(
    pd.read_parquet(snakemake.input[0]),
    snakemake.output.png,
    confidence=snakemake.params.confidence,
)
