"""Fig. 9, a test of paper Eq. 11 / Remark 2: the sensitivity, computed on the ID test set
and on an OOD set, of the weights OPNP prunes on the *low*-sensitivity side (selected
weight_low, or the stated fallback when the selection pruned none)."""

import pandas as pd

from opnp.pipeline.artifacts import load_fc, load_feature_set, load_sensitivity
from opnp.pipeline.runtime import setup_job
from opnp.pipeline.selection import selected_params
from opnp.report import low_sensitivity_pruned, plot_pruned_weight_sensitivity
from opnp.sensitivity import parameter_sensitivity

log = setup_job(snakemake.log[0])
weight, bias = load_fc(snakemake.input.fc)
param, _ = load_sensitivity(snakemake.input.sensitivity, snakemake.params.statistic)
params = selected_params(pd.read_parquet(snakemake.input.selection))
keep, weight_low, source = low_sensitivity_pruned(
    param, params, snakemake.params.fallback_weight_low
)
log.info("selected OPNP %s; plotting weight_low=%g %% (%s)", params, weight_low, source)
id_sensitivity = parameter_sensitivity(
    load_feature_set(snakemake.input.id_test).features, weight, bias
)
ood_sensitivity = parameter_sensitivity(
    load_feature_set(snakemake.input.ood).features, weight, bias
)
plot_pruned_weight_sensitivity(
    id_sensitivity,
    ood_sensitivity,
    keep,
    snakemake.output.png,
    ood_name=snakemake.params.ood_name,
    pruned_what=f"low-sensitivity side: the {weight_low:g} % least sensitive ({source})",
)
