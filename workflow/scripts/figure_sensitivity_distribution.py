"""Fig. 1 / 7 / 8: FC-layer parameter and neuron sensitivity distributions (max = 1)."""

from opnp.pipeline.artifacts import load_sensitivity
from opnp.pipeline.runtime import setup_job
from opnp.report import plot_sensitivity_distribution

setup_job(snakemake.log[0])
params, neurons = {}, {}
for model, path in zip(snakemake.params.models, snakemake.input.sensitivities, strict=True):
    params[model], neurons[model] = load_sensitivity(path, "mean")
plot_sensitivity_distribution(params, snakemake.output.png, neuron_sensitivities=neurons)
