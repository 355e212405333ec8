"""Table 8: OPP with sensitivities from 1, 5, 20, 100 % of the training set (seeded
subsets), at the percentages selected on the validation split with 100 %."""

import numpy as np
import pandas as pd
from opnp.io import provenance

from opnp.artifacts import (
    load_fc,
    load_feature_set,
    load_feature_sets,
    load_sensitivity,
    write_results,
)
from opnp.evaluation import evaluate_configs, results_frame, selected_params
from opnp.runtime import setup_job

log = setup_job(snakemake.log[0], threads=snakemake.threads)
weight, bias = load_fc(snakemake.input.fc)
id_test = load_feature_set(snakemake.input.id_test)
ood_test = load_feature_sets(snakemake.input.ood_test, snakemake.params.ood_names)
ood_features = {name: fs.features for name, fs in ood_test.items()}
params = selected_params(pd.read_parquet(snakemake.input.selection))
common = dict(
    weight=weight,
    bias=bias,
    train_features=None,
    train_labels=None,
    id_features=id_test.features,
    ood_features=ood_features,
    split="test",
    experiment="table8",
)
rows, _ = evaluate_configs("energy", [{}], variant="none", **common)
for path in snakemake.input.sensitivities:
    with np.load(path) as data:
        fraction, seed = float(data["fraction"]), int(data["seed"])
    sensitivity = load_sensitivity(path)
    subset_rows, _ = evaluate_configs(
        "opp", [params], sensitivity=sensitivity, variant=f"{fraction:g}%", **common
    )
    for row in subset_rows:
        row["seed"] = seed
    log.info(
        "%g %% seed %d: mean FPR95 %.2f", fraction, seed, np.mean([r["fpr95"] for r in subset_rows])
    )
    rows += subset_rows
frame = results_frame(
    rows,
    benchmark=snakemake.params.benchmark,
    model=snakemake.wildcards.model,
    config_hash=snakemake.params.config_hash,
    provenance=provenance(),
)
write_results(frame, snakemake.output[0])
