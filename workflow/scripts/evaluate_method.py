"""Score one method with its validation-selected hyperparameters on the test sets."""

import pandas as pd

from opnp.io import save_npz_atomic
from opnp.pipeline.artifacts import JobInputs, write_job_results
from opnp.pipeline.evaluation import evaluate_configs
from opnp.pipeline.results import accuracy
from opnp.pipeline.runtime import setup_job
from opnp.pipeline.selection import selected_params

log = setup_job(snakemake.log[0], threads=snakemake.threads)
method = snakemake.wildcards.method
params = selected_params(pd.read_parquet(snakemake.input.selection))
inputs = JobInputs(snakemake.input.items())
id_test = inputs.features("id_test")
log.info("%s with %s", method, params)
rows, scores = evaluate_configs(
    method,
    [params],
    inputs.fit_data(snakemake.params.statistic),
    id_features=id_test.features,
    ood_features=inputs.ood("ood_test"),
    split="test",
    seeds=snakemake.params.seeds,
    keep_scores=True,
    uncertainty=snakemake.params.uncertainty,
)
# Classification always uses the unpruned layer (paper section 4.1): the accuracy every
# method keeps.
id_accuracy = accuracy(id_test.logits, id_test.labels)
for row in rows:
    row["id_accuracy"] = id_accuracy
write_job_results(rows, snakemake.output.results, **snakemake.params.results)
keys = sorted(scores)
arrays = dict(scores[keys[0]])
if snakemake.config.get("replicates"):
    # A replicated run pools every method's test scores over its replicates (rule
    # pooled_intervals); a seeded method's result averages its seeds, so the other seeds'
    # scores are saved too, as "<set>@seed<seed>" (opnp.pipeline.pooled.seed_scores).
    for params, seed in keys[1:]:
        arrays |= {f"{name}@seed{seed}": values for name, values in scores[params, seed].items()}
save_npz_atomic(snakemake.output.scores, **arrays)
