"""Fig. 2(b): parameter and neuron sensitivity before and after OPNP pruning."""

import pandas as pd

from opnp.pipeline.artifacts import load_sensitivity
from opnp.pipeline.runtime import setup_job
from opnp.pipeline.selection import selected_params
from opnp.pruning import pruning_masks
from opnp.report import plot_pruning_before_after

setup_job(snakemake.log[0])
param, neuron = load_sensitivity(snakemake.input.sensitivity, snakemake.params.statistic)
params = selected_params(pd.read_parquet(snakemake.input.selection))
weight_mask, neuron_mask = pruning_masks(param, neuron, **params)
plot_pruning_before_after(
    param, neuron, weight_mask, neuron_mask, snakemake.output.png, setting=params
)
