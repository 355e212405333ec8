"""OPNP parameter sensitivity (Eq. 6) and every neuron statistic (Eq. 8) on a seeded
subset of the training features, and of the unlabeled images that enlarge the sensitivity
set (config sensitivity.unlabeled)."""

from opnp.pipeline.ablations import predicted_class_counts
from opnp.pipeline.artifacts import load_fc, load_feature_set, save_sensitivity
from opnp.pipeline.runtime import setup_job
from opnp.sensitivity import (
    NEURON_STATISTICS,
    neuron_sensitivity,
    parameter_sensitivity,
    pooled_parameter_sensitivity,
)
from opnp.subsets import seeded_subset_indices

log = setup_job(snakemake.log[0], threads=snakemake.threads)
fraction = snakemake.params.fraction
seed = snakemake.params.seed
weight, bias = load_fc(snakemake.input.fc)
train = load_feature_set(snakemake.input.train)
unlabeled = [load_feature_set(path).features for path in snakemake.input.unlabeled]
n_total = len(train.features) + sum(len(u) for u in unlabeled)
indices = seeded_subset_indices(n_total, fraction, seed)
log.info(
    "sensitivity on %d of %d samples (%d training, %d unlabeled; %g %%, seed %d)",
    len(indices),
    n_total,
    len(train.features),
    n_total - len(train.features),
    fraction,
    seed,
)
# The subset's rows are read chunk by chunk from the memory map, never copied out.
rows = None if len(indices) == n_total else indices
if unlabeled:
    param = pooled_parameter_sensitivity([train.features, *unlabeled], weight, bias, rows=rows)
else:
    param = parameter_sensitivity(
        train.features, weight, bias, reduction=snakemake.params.reduction, rows=rows
    )
neurons = {stat: neuron_sensitivity(param, stat) for stat in NEURON_STATISTICS}
# Which classes the sensitivity set's images are predicted as: the rows of S that its
# images weigh most (Table 3's class coverage).
counts = predicted_class_counts(
    [train.logits, *(load_feature_set(p).logits for p in snakemake.input.unlabeled)],
    indices,
    len(weight),
)
save_sensitivity(
    snakemake.output[0],
    param,
    neurons,
    indices=indices,
    n_samples=len(indices),
    seed=seed,
    fraction=fraction,
    predicted_class_counts=counts,
)
