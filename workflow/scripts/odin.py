"""ODIN (input perturbation + temperature) needs the network: select T and epsilon on the
validation split (rule select_odin) or score the selected values on the test sets
(rule evaluate_odin)."""

import pandas as pd

from opnp.data import open_dataset
from opnp.io import save_npz_atomic
from opnp.nets.models import preprocessing
from opnp.nets.odin import odin_scores
from opnp.pipeline.artifacts import (
    job_results,
    load_feature_set,
    load_model,
    read_json,
    write_results,
)
from opnp.pipeline.evaluation import (
    accuracy,
    evaluate_network_configs,
    expand_grid,
    mark_selected,
    selected_params,
)
from opnp.pipeline.runtime import setup_job, torch_device

log = setup_job(snakemake.log[0], threads=snakemake.threads)
spec = snakemake.params.spec
batch_size = snakemake.params.extraction["batch_size"]
num_workers = snakemake.params.extraction["num_workers"]
device = torch_device()
model = load_model(snakemake.input.model).to(device)
transform, _, std = preprocessing(spec)
selecting = snakemake.rule == "select_odin"
if selecting:
    settings = snakemake.params.settings
    configs = expand_grid(settings["grid"], settings["fixed"])
    id_manifest, ood_manifests, split = snakemake.input.id_val, snakemake.input.ood_val, "val"
else:
    configs = [selected_params(pd.read_parquet(snakemake.input.selection))]
    id_manifest, ood_manifests, split = snakemake.input.id_test, snakemake.input.ood_test, "test"
id_set = open_dataset(read_json(id_manifest), transform=transform)
ood_sets = {
    name: open_dataset(read_json(path), transform=transform)
    for name, path in zip(snakemake.params.ood_names, ood_manifests, strict=True)
}


def scorer(params):
    temperature = params.get("temperature", 1000.0)
    epsilon = params.get("epsilon", 0.0014)
    return lambda x: odin_scores(
        model, x.to(device), temperature=temperature, epsilon=epsilon, std=std
    )


rows, scores = evaluate_network_configs(
    "odin",
    configs,
    scorer,
    id_set,
    ood_sets,
    split=split,
    batch_size=batch_size,
    num_workers=num_workers,
    uncertainty=None if selecting else snakemake.params.uncertainty,
)
frame = job_results(rows, snakemake)
if selecting:
    frame = mark_selected(frame, snakemake.params.metric)
    write_results(frame, snakemake.output[0])
else:
    # ODIN classifies with the unpruned, unperturbed network, like every other method:
    # its accuracy on the ID test set (from the cached logits).
    id_test = load_feature_set(snakemake.input.id_test_features)
    frame["id_accuracy"] = accuracy(id_test.logits, id_test.labels)
    write_results(frame, snakemake.output.results)
    save_npz_atomic(snakemake.output.scores, **scores[0])
