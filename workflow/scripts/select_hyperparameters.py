"""Grid search of one method's hyperparameters on the validation split only."""

import pandas as pd

from opnp.pipeline.artifacts import JobInputs, job_results, write_results
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
inputs = JobInputs(snakemake.input.items())
ood_val = inputs.ood("ood_val")
configs = expand_grid(settings["grid"], settings["fixed"])
log.info("%s: %d configs on %d validation OOD sets", method, len(configs), len(ood_val))
rows, _ = evaluate_configs(
    method,
    configs,
    inputs.fit_data(snakemake.params.statistic),
    id_features=inputs.features("id_val").features,
    ood_features=ood_val,
    split="val",
    seeds=snakemake.params.seeds,
)
frame = mark_selected(job_results(rows, **snakemake.params.results), snakemake.params.metric)
log.info("selected %s", frame.loc[frame["selected"], "params"].iloc[0])
write_results(frame, snakemake.output[0])
