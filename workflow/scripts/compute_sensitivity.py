"""OPNP parameter sensitivity (Eq. 6) and every neuron statistic (Eq. 8) on a seeded
subset of the training features."""

from opnp.pipeline.artifacts import load_fc, load_feature_set, save_sensitivity
from opnp.pipeline.runtime import setup_job
from opnp.sensitivity import NEURON_STATISTICS, neuron_sensitivity, parameter_sensitivity
from opnp.subsets import seeded_subset_indices

log = setup_job(snakemake.log[0], threads=snakemake.threads)
fraction = snakemake.params.fraction
seed = snakemake.params.seed
weight, bias = load_fc(snakemake.input.fc)
train = load_feature_set(snakemake.input.train)
n_total = len(train.features)
indices = seeded_subset_indices(n_total, fraction, seed)
log.info(
    "sensitivity on %d of %d training samples (%g %%, seed %d)",
    len(indices),
    n_total,
    fraction,
    seed,
)
# The subset's rows are read chunk by chunk from the memory map, never copied out.
param = parameter_sensitivity(
    train.features,
    weight,
    bias,
    reduction=snakemake.params.reduction,
    rows=None if len(indices) == n_total else indices,
)
neurons = {stat: neuron_sensitivity(param, stat) for stat in NEURON_STATISTICS}
save_sensitivity(
    snakemake.output[0],
    param,
    neurons,
    indices=indices,
    n_samples=len(indices),
    seed=seed,
    fraction=fraction,
)
