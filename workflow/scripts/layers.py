"""Table 7 and Fig. 6: OPNP's pruning inside the network. The FC row is the main OPNP
result (validation-selected weight and neuron masks from the full-training-set
sensitivity); Layer1-K prune one stage's last convolution, global / layer-wise pruning
every convolution and the FC layer (sensitivities by per-sample autograd on a seeded
training subset), each with its own weight percentages selected on the validation sets
from ablations.layers.grid within ablations.layers.max_accuracy_loss. Each pruned network
is scored with Energy on the test sets, with its ID accuracy
(opnp.pipeline.ablations.layer_ablation)."""

import pandas as pd

from opnp.data import open_dataset, seeded_subset
from opnp.nets.models import preprocessing
from opnp.pipeline.ablations import layer_ablation
from opnp.pipeline.artifacts import (
    job_results,
    load_model,
    load_sensitivity,
    open_named_datasets,
    read_json,
    write_results,
)
from opnp.pipeline.runtime import loader_workers, setup_job
from opnp.pipeline.selection import selected_params

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
ood_test = open_named_datasets(snakemake.input.ood_test, transform=transform)
# Each in-network setting is a network pass over the validation sets: a seeded subset of
# each (ablations.layers.val_max_images) keeps the search affordable on a CPU.
cap = layers.get("val_max_images")


def validation_subset(dataset):
    if cap is None:
        return dataset
    return seeded_subset(dataset, 100, seed=snakemake.params.seed, max_items=cap)


id_val = validation_subset(open_dataset(read_json(snakemake.input.id_val), transform=transform))
ood_val = {
    name: validation_subset(dataset)
    for name, dataset in open_named_datasets(snakemake.input.ood_val, transform=transform).items()
}
selected = selected_params(pd.read_parquet(snakemake.input.selection))
log.info("OPNP's selected setting: %s", selected)
rows, layer_means, val_grid = layer_ablation(
    model,
    train,
    id_test,
    ood_test,
    selected=selected,
    fc_sensitivity=load_sensitivity(snakemake.input.fc_sensitivity),
    id_val_dataset=id_val,
    ood_val_datasets=ood_val,
    grid=layers["grid"],
    metric=snakemake.params.metric,
    max_accuracy_loss=layers["max_accuracy_loss"],
    statistic=snakemake.params.statistic,
    train_fraction=layers["train_fraction"],
    batch_size=extraction["batch_size"],
    num_workers=loader_workers(extraction["num_workers"]),
    log=log,
    uncertainty=snakemake.params.uncertainty,
)
write_results(
    job_results(rows, **snakemake.params.results),
    snakemake.output.results,
)
layer_means.insert(0, "model", snakemake.wildcards.model)
layer_means.insert(0, "benchmark", snakemake.params.results["benchmark"])
write_results(layer_means, snakemake.output.layer_means)
val_grid.insert(0, "model", snakemake.wildcards.model)
write_results(val_grid, snakemake.output.val_grid)
