"""The readings ablation: every value of each of the paper's ambiguous choices, selected on
the validation sets like the main results and scored on the test sets
(opnp.pipeline.readings)."""

import pandas as pd

from opnp.pipeline.artifacts import JobInputs, load_feature_set, write_job_results
from opnp.pipeline.readings import readings_rows
from opnp.pipeline.runtime import setup_job

log = setup_job(snakemake.log[0], threads=snakemake.threads)
inputs = JobInputs(snakemake.input.items())
fit = inputs.fit_data(snakemake.params.statistic)
unlabeled = [load_feature_set(path).features for path in snakemake.input.unlabeled]
id_test = inputs.features("id_test")
react_selection = (
    pd.read_parquet(snakemake.input.react_selection)
    if "react_selection" in snakemake.input.keys()
    else None
)
rows = readings_rows(
    snakemake.params.readings,
    settings=snakemake.params.settings,
    fit=fit,
    # the main sensitivity's sample set, for the readings that compute their own S
    sensitivity_sources=[fit.train_features, *unlabeled],
    main_reduction=snakemake.params.reduction,
    id_val=inputs.features("id_val").features,
    ood_val=inputs.ood("ood_val"),
    id_test=id_test.features,
    id_test_labels=id_test.labels,
    ood_test=inputs.ood("ood_test"),
    validation_groups=snakemake.params.validation_groups,
    test_groups=snakemake.params.test_groups,
    metric=snakemake.params.metric,
    react_selection=react_selection,
    uncertainty=snakemake.params.uncertainty,
    log=log.info,
)
write_job_results(rows, snakemake.output[0], **snakemake.params.results)
