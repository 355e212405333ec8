"""Fig. 5: ID and OOD score distributions, Energy against OPNP."""

import numpy as np

from opnp.pipeline.runtime import setup_job
from opnp.report import plot_score_distributions

setup_job(snakemake.log[0])
scores = {}
for label, path in (("Energy", snakemake.input.energy), ("OPNP", snakemake.input.opnp)):
    with np.load(path) as data:
        scores[label] = {name: np.asarray(data[name]) for name in data.files}
plot_score_distributions(scores, snakemake.output.png)
