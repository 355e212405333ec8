"""Table 8: OPP with sensitivities from 1, 5, 20, 100 % of the training set (seeded
subsets), at the percentages selected on the validation split with 100 %."""

import numpy as np
import pandas as pd

from opnp.pipeline.artifacts import JobInputs, load_sensitivity, write_job_results
from opnp.pipeline.evaluation import evaluate_configs
from opnp.pipeline.results import params_json
from opnp.pipeline.runtime import setup_job
from opnp.pipeline.selection import selected_params
from opnp.report import SUBSET_SAMPLES_KEY

log = setup_job(snakemake.log[0], threads=snakemake.threads)
inputs = JobInputs(snakemake.input.items())
fit = inputs.fit_data()
params = selected_params(pd.read_parquet(snakemake.input.selection))
common = dict(
    id_features=inputs.features("id_test").features,
    ood_features=inputs.ood("ood_test"),
    split="test",
    experiment=snakemake.rule,
    uncertainty=snakemake.params.uncertainty,
)
rows, _ = evaluate_configs("energy", [{}], fit, variant="none", **common)
for path in snakemake.input.sensitivities:
    with np.load(path) as data:
        fraction, seed, n_samples = (
            float(data["fraction"]),
            int(data["seed"]),
            int(data["n_samples"]),
        )
    subset_fit = fit.replace(sensitivity=load_sensitivity(path))
    subset_rows, _ = evaluate_configs(
        "opp", [params], subset_fit, variant=f"{fraction:g}%", **common
    )
    for row in subset_rows:
        row["seed"] = seed
        # The subset size in images goes with the percentages (Table 8's caption states it).
        row["params"] = params_json({**params, SUBSET_SAMPLES_KEY: n_samples})
    log.info(
        "%g %% seed %d: mean FPR95 %.2f", fraction, seed, np.mean([r["fpr95"] for r in subset_rows])
    )
    rows += subset_rows
write_job_results(rows, snakemake.output[0], **snakemake.params.results)
