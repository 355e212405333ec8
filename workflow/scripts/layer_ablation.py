"""Table 7 and Fig. 6: OPNP-style weight pruning inside the network. Sensitivities of the
last conv layer of each stage and of the FC layer by per-sample autograd on a seeded
training subset; then pruning in one layer at a time, with one global threshold over all
layers, or with the same percentages in every layer; each pruned network is scored with
Energy on the test sets."""

from opnp.artifacts import job_results, load_model, read_json, write_results
from opnp.datasets import open_dataset, seeded_subset
from opnp.evaluation import layer_ablation
from opnp.models import preprocessing
from opnp.runtime import setup_job

log = setup_job(snakemake.log[0], threads=snakemake.threads, seed=snakemake.params.seed)
spec = snakemake.params.spec
layers = snakemake.params.layers
extraction = snakemake.params.extraction
model = load_model(snakemake.input.model)
transform, _, _ = preprocessing(spec)
train = open_dataset(read_json(snakemake.input.train), transform=transform)
train = seeded_subset(
    train, layers["train_fraction"], seed=snakemake.params.seed, max_items=layers.get("max_images")
)
id_test = open_dataset(read_json(snakemake.input.id_test), transform=transform)
ood_test = {
    name: open_dataset(read_json(path), transform=transform)
    for name, path in zip(snakemake.params.ood_names, snakemake.input.ood_test, strict=True)
}
rows, layer_means = layer_ablation(
    model,
    train,
    id_test,
    ood_test,
    low=layers.get("low", 10),
    high=layers.get("high", 1),
    batch_size=extraction["batch_size"],
    num_workers=extraction["num_workers"],
    log=log,
    uncertainty=snakemake.params.uncertainty,
)
write_results(job_results(rows, snakemake), snakemake.output.results)
layer_means.insert(0, "model", snakemake.wildcards.model)
layer_means.insert(0, "benchmark", snakemake.params.benchmark)
write_results(layer_means, snakemake.output.layer_means)
