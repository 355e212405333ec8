"""Fig. 9: sensitivity of the OPNP-pruned weights computed on the ID test set and on an
OOD set (paper Eq. 11: the pruned weights are more sensitive on OOD data)."""

import pandas as pd

from opnp.artifacts import load_fc, load_feature_set, load_sensitivity
from opnp.evaluation import selected_params
from opnp.plots import plot_pruned_weight_sensitivity
from opnp.pruning import pruning_masks
from opnp.runtime import setup_job
from opnp.sensitivity import parameter_sensitivity

log = setup_job(snakemake.log[0])
weight, bias = load_fc(snakemake.input.fc)
param, neuron = load_sensitivity(snakemake.input.sensitivity, snakemake.params.statistic)
params = selected_params(pd.read_parquet(snakemake.input.selection))
weight_mask, neuron_mask = pruning_masks(param, neuron, **params)
# A pruned neuron removes its whole column of weights: both masks count as pruning.
weight_mask = weight_mask & neuron_mask[None, :]
if weight_mask.all():
    # The selected config prunes nothing (Energy won the validation search): show the
    # weights that the largest low-sensitivity percentage of the grid would prune.
    weight_mask, _ = pruning_masks(param, neuron, weight_low=snakemake.params.fallback_weight_low)
    log.info(
        "selected OPNP config prunes nothing; using weight_low=%g",
        snakemake.params.fallback_weight_low,
    )
id_sensitivity = parameter_sensitivity(
    load_feature_set(snakemake.input.id_test).features, weight, bias
)
ood_sensitivity = parameter_sensitivity(
    load_feature_set(snakemake.input.ood).features, weight, bias
)
plot_pruned_weight_sensitivity(
    id_sensitivity,
    ood_sensitivity,
    weight_mask,
    snakemake.output[0],
    ood_name=snakemake.params.ood_name,
)
