"""OPNP parameter sensitivity (Eq. 6) and every neuron statistic (Eq. 8) on a seeded
subset of the training features."""

import numpy as np

from opnp.artifacts import load_fc, load_feature_set, save_sensitivity
from opnp.runtime import setup_job
from opnp.sensitivity import NEURON_STATISTICS, neuron_sensitivity, parameter_sensitivity

log = setup_job(snakemake.log[0], threads=snakemake.threads)
fraction = snakemake.params.fraction
seed = snakemake.params.seed
weight, bias = load_fc(snakemake.input.fc)
train = load_feature_set(snakemake.input.train)
n_total = len(train.features)
if fraction >= 100:
    indices = np.arange(n_total)
else:
    n_subset = max(1, int(round(n_total * fraction / 100)))
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.choice(n_total, size=n_subset, replace=False))
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
    rows=None if fraction >= 100 else indices,
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
