"""Score one method with its validation-selected hyperparameters on the test sets."""

import pandas as pd

from opnp.io import save_npz_atomic
from opnp.pipeline.artifacts import (
    job_results,
    load_fc,
    load_feature_set,
    load_ood_features,
    load_sensitivity,
    write_results,
)
from opnp.pipeline.evaluation import evaluate_configs
from opnp.pipeline.results import accuracy
from opnp.pipeline.runtime import setup_job
from opnp.pipeline.selection import selected_params

log = setup_job(snakemake.log[0], threads=snakemake.threads)
method = snakemake.wildcards.method
params = selected_params(pd.read_parquet(snakemake.input.selection))
weight, bias = load_fc(snakemake.input.fc)
train = load_feature_set(snakemake.input.train)
id_test = load_feature_set(snakemake.input.id_test)
ood_test = load_ood_features(snakemake.input.ood_test)
sensitivity = (
    load_sensitivity(snakemake.input.sensitivity)
    if "sensitivity" in snakemake.input.keys()
    else None
)
log.info("%s with %s", method, params)
rows, scores = evaluate_configs(
    method,
    [params],
    weight=weight,
    bias=bias,
    train_features=train.features,
    train_labels=train.labels,
    id_features=id_test.features,
    ood_features=ood_test,
    split="test",
    sensitivity=sensitivity,
    statistic=snakemake.params.statistic,
    seeds=snakemake.params.seeds,
    keep_scores=True,
    uncertainty=snakemake.params.uncertainty,
)
# Classification always uses the unpruned layer (SPEC): the accuracy every method keeps.
id_accuracy = accuracy(id_test.logits, id_test.labels)
for row in rows:
    row["id_accuracy"] = id_accuracy
frame = job_results(
    rows,
    benchmark=snakemake.params.benchmark,
    model=snakemake.wildcards.model,
    config_hash=snakemake.params.config_hash,
)
write_results(frame, snakemake.output.results)
first_key = sorted(scores)[0]
save_npz_atomic(snakemake.output.scores, **scores[first_key])
