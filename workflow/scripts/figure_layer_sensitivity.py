"""Fig. 6: mean parameter sensitivity per layer."""

import pandas as pd

from opnp.pipeline.runtime import setup_job
from opnp.report import plot_layer_sensitivity

setup_job(snakemake.log[0])
plot_layer_sensitivity(pd.read_parquet(snakemake.input[0]), snakemake.output.png)
