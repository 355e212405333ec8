"""Grid search of one method's hyperparameters on the validation split only."""

import pandas as pd

from opnp.pipeline.artifacts import (
    job_results,
    load_fc,
    load_feature_set,
    load_ood_features,
    load_sensitivity,
    write_results,
)
from opnp.pipeline.evaluation import evaluate_configs
from opnp.pipeline.runtime import setup_job
from opnp.pipeline.selection import expand_grid, mark_selected, resolve_react_percentile

log = setup_job(snakemake.log[0], threads=snakemake.threads)
method = snakemake.wildcards.method
react_selection = (
    pd.read_parquet(snakemake.input.react_selection)
    if "react_selection" in snakemake.input.keys()
    else None
)
# A combination with ReAct clips at ReAct's own selected percentile unless the config
# fixes or searches it (opnp.pipeline.config.react_percentile_source).
settings = resolve_react_percentile(method, snakemake.params.settings, react_selection)
weight, bias = load_fc(snakemake.input.fc)
train = load_feature_set(snakemake.input.train)
id_val = load_feature_set(snakemake.input.id_val)
ood_val = load_ood_features(snakemake.input.ood_val)
sensitivity = (
    load_sensitivity(snakemake.input.sensitivity)
    if "sensitivity" in snakemake.input.keys()
    else None
)
configs = expand_grid(settings["grid"], settings["fixed"])
log.info("%s: %d configs on %d validation OOD sets", method, len(configs), len(ood_val))
rows, _ = evaluate_configs(
    method,
    configs,
    weight=weight,
    bias=bias,
    train_features=train.features,
    train_labels=train.labels,
    id_features=id_val.features,
    ood_features=ood_val,
    split="val",
    sensitivity=sensitivity,
    statistic=snakemake.params.statistic,
    seeds=snakemake.params.seeds,
)
frame = job_results(
    rows,
    benchmark=snakemake.params.benchmark,
    model=snakemake.wildcards.model,
    config_hash=snakemake.params.config_hash,
)
frame = mark_selected(frame, snakemake.params.metric)
log.info("selected %s", frame.loc[frame["selected"], "params"].iloc[0])
write_results(frame, snakemake.output[0])
