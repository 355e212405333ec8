"""Fig. 4: reliability diagrams and ECE without and with OPNP."""

import pandas as pd

from opnp.pipeline.runtime import setup_job
from opnp.report import plot_reliability

setup_job(snakemake.log[0])
plot_reliability(
    pd.read_parquet(snakemake.input[0]),
    snakemake.output.png,
    min_bin_count=snakemake.params.min_bin_count,
)
