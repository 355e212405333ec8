"""A method that runs the network on images (its detector class has needs_network, e.g.
ODIN: input perturbation + temperature): select its hyperparameters on the validation
split (rule select_network_method) or score the selected values on the test sets
(rule evaluate_network_method), through the detector's score_batch."""

import pandas as pd

from opnp.data import open_dataset
from opnp.detectors import create_detector
from opnp.io import save_npz_atomic
from opnp.nets.models import preprocessing
from opnp.pipeline.artifacts import (
    job_results,
    load_feature_set,
    load_model,
    open_named_datasets,
    read_json,
    write_results,
)
from opnp.pipeline.evaluation import evaluate_network_configs, merge_setting_scores
from opnp.pipeline.results import accuracy
from opnp.pipeline.runtime import loader_workers, setup_job, torch_device
from opnp.pipeline.selection import expand_grid, mark_selected, settings_for_test_sets

log = setup_job(snakemake.log[0], threads=snakemake.threads)
spec = snakemake.params.spec
batch_size = snakemake.params.extraction["batch_size"]
num_workers = loader_workers(snakemake.params.extraction["num_workers"])
device = torch_device()
model = load_model(snakemake.input.model).to(device)
transform, _, std = preprocessing(spec)
method = snakemake.wildcards.method
selecting = snakemake.rule == "select_network_method"
if selecting:
    settings = snakemake.params.settings
    id_manifest, ood_manifests, split = snakemake.input.id_val, snakemake.input.ood_val, "val"
else:
    id_manifest, ood_manifests, split = snakemake.input.id_test, snakemake.input.ood_test, "test"
id_set = open_dataset(read_json(id_manifest), transform=transform)
ood_sets = open_named_datasets(ood_manifests, transform=transform)
if selecting:  # every config on every validation set
    batches = [(expand_grid(settings["grid"], settings["fixed"]), ood_sets)]
else:  # each test family with the setting chosen for it
    plan = settings_for_test_sets(
        pd.read_parquet(snakemake.input.selection), snakemake.params.groups
    )
    batches = [([params], {name: ood_sets[name] for name in sets}) for params, sets in plan]


def scorer(params):
    detector = create_detector(method, **params)  # its class holds the defaults
    return lambda x: detector.score_batch(model, x.to(device), std=std)


rows, scores = [], []
for configs, batch_ood_sets in batches:
    setting_rows, setting_scores = evaluate_network_configs(
        method,
        configs,
        scorer,
        id_set,
        batch_ood_sets,
        split=split,
        batch_size=batch_size,
        num_workers=num_workers,
        uncertainty=None if selecting else snakemake.params.uncertainty,
    )
    rows += setting_rows
    scores += setting_scores
frame = job_results(rows, **snakemake.params.results)
if selecting:
    frame = mark_selected(frame, snakemake.params.metric, snakemake.params.groups)
    write_results(frame, snakemake.output[0])
else:
    # The method classifies with the unpruned, unperturbed network, like every other one:
    # its accuracy on the ID test set (from the cached logits).
    id_test = load_feature_set(snakemake.input.id_test_features)
    frame["id_accuracy"] = accuracy(id_test.logits, id_test.labels)
    write_results(frame, snakemake.output.results)
    save_npz_atomic(snakemake.output.scores, **merge_setting_scores(scores))
