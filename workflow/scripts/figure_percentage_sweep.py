"""Fig. 3: FPR95 and AUROC against each pruning percentage (the others at 0)."""

import pandas as pd

from opnp.pipeline.runtime import setup_job
from opnp.report import plot_percentage_sweep

setup_job(snakemake.log[0])
plot_percentage_sweep(pd.read_parquet(snakemake.input[0]), snakemake.output.png, experiment="sweep")
