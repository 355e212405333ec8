"""Grid search of one method's hyperparameters on the validation split only."""

import pandas as pd

from opnp.pipeline.artifacts import JobInputs, job_results, save_id_scores, write_results
from opnp.pipeline.evaluation import evaluate_configs
from opnp.pipeline.runtime import setup_job
from opnp.pipeline.selection import mark_selected, search_plan

log = setup_job(snakemake.log[0], threads=snakemake.threads)
method = snakemake.wildcards.method
react_selection = (
    pd.read_parquet(snakemake.input.react_selection)
    if "react_selection" in snakemake.input.keys()
    else None
)
inputs = JobInputs(snakemake.input.items())
ood_val = inputs.ood("ood_val")
fit = inputs.fit_data(snakemake.params.statistic)
id_val_set = inputs.features("id_val")
id_val = id_val_set.features
# A combination with ReAct clips at ReAct's own selected percentile for the same test
# group unless the config fixes or searches it (opnp.pipeline.selection.react_percentile_source).
plan = search_plan(
    method, snakemake.params.settings, snakemake.params.groups, list(ood_val), react_selection
)
frames = []
id_scores = {}  # of the configs scored one detector at a time: the evaluation may reuse them
for part in plan:
    log.info(
        "%s: %d configs on validation OOD sets %s (test groups %s)",
        method,
        len(part.configs),
        part.val_sets,
        sorted(part.groups),
    )
    rows, _ = evaluate_configs(
        method,
        part.configs,
        fit,
        id_features=id_val,
        ood_features={name: ood_val[name] for name in part.val_sets},
        split="val",
        seeds=snakemake.params.seeds,
        detector_id_scores=id_scores,
    )
    frame = job_results(rows, **snakemake.params.results)
    frame = mark_selected(frame, snakemake.params.metric, part.groups)
    frame["selected"] &= part.every_set
    frames.append(frame)
frame = pd.concat(frames, ignore_index=True)
log.info("selected on every validation set: %s", frame.loc[frame["selected"], "params"].iloc[0])
for text in frame["selected_for"].unique():
    if text != "{}":
        params = frame.loc[frame["selected_for"] == text, "params"].iloc[0]
        log.info("selected for test groups %s: %s", text, params)
chosen = set(frame.loc[frame["selected"] | (frame["selected_for"] != "{}"), "params"])
write_results(frame, snakemake.output.selection)
save_id_scores(
    snakemake.output.id_val_scores,
    {key: scores for key, scores in id_scores.items() if key[0] in chosen},
    dataset=id_val_set.manifest["dataset"],
)
