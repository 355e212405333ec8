"""Fig. 9, a test of paper Eq. 11 / Remark 2: the sensitivity, computed on the ID test set
and on an OOD set, of the weights OPNP prunes on the *low*-sensitivity side (selected
weight_low, or the stated fallback when the selection pruned none), with its OOD / ID
ratio relative to the same ratio over all FC weights (bootstrap interval over the ID and
OOD images) and over random weight sets of the same size (opnp.relative_sensitivity)."""

import pandas as pd

from opnp.pipeline.artifacts import load_fc, load_feature_set, load_sensitivity
from opnp.pipeline.runtime import setup_job
from opnp.pipeline.selection import selected_params
from opnp.relative_sensitivity import random_set_ratios, relative_ratio, set_terms
from opnp.report import low_sensitivity_pruned, plot_pruned_weight_sensitivity

log = setup_job(snakemake.log[0])
weight, bias = load_fc(snakemake.input.fc)
param, _ = load_sensitivity(snakemake.input.sensitivity, snakemake.params.statistic)
params = selected_params(pd.read_parquet(snakemake.input.selection))
keep, weight_low, source = low_sensitivity_pruned(
    param, params, snakemake.params.fallback_weight_low
)
log.info("selected OPNP %s; plotting weight_low=%g %% (%s)", params, weight_low, source)
ood_name = snakemake.params.ood_name
id_terms = set_terms(load_feature_set(snakemake.input.id_test).features, weight, bias, ~keep)
ood_terms = set_terms(load_feature_set(snakemake.input.ood).features, weight, bias, ~keep)
relative = relative_ratio(id_terms, ood_terms, ood_name=ood_name, **snakemake.params.uncertainty)
n_sets = snakemake.params.random_sets
random_ratios = (
    random_set_ratios(
        id_terms["sensitivity"],
        ood_terms["sensitivity"],
        int((~keep).sum()),
        n_sets=n_sets,
        seed=relative["seed"],
    )
    if n_sets
    else None
)
log.info(
    "relative ratio %.4g %s (%d resamples)",
    relative["relative_ratio"],
    relative["relative_ratio_ci"],
    relative["n_resamples"],
)
plot_pruned_weight_sensitivity(
    id_terms["sensitivity"],
    ood_terms["sensitivity"],
    keep,
    snakemake.output.png,
    ood_name=ood_name,
    pruned_what=f"low-sensitivity side: the {weight_low:g} % least sensitive ({source})",
    relative=relative,
    random_ratios=random_ratios,
    id_name=snakemake.params.id_name,
    sensitivity_source=(
        f"pruned set from the {snakemake.params.reduction} training sensitivity (full "
        "training set); per-sample sensitivity (Eq. 6, T = 1) recomputed on the ID test "
        f"set {snakemake.params.id_name} and the OOD test set {ood_name}"
    ),
)
