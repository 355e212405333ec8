"""Fig. 3 data: FPR95/AUROC against each pruning percentage with the others at 0."""

from opnp.pipeline.artifacts import JobInputs, write_job_results
from opnp.pipeline.evaluation import evaluate_configs
from opnp.pipeline.runtime import setup_job

log = setup_job(snakemake.log[0], threads=snakemake.threads)
inputs = JobInputs(snakemake.input.items())
fit = inputs.fit_data(snakemake.params.statistic)
id_test = inputs.features("id_test")
ood_test = inputs.ood("ood_test")
rows = []
for name, values in snakemake.params.sweep.items():
    sweep_rows, _ = evaluate_configs(
        "opnp",
        [{name: value} for value in values],
        fit,
        id_features=id_test.features,
        ood_features=ood_test,
        split="test",
        experiment=snakemake.rule,
        variant=name,
        uncertainty=snakemake.params.uncertainty,
    )
    rows += sweep_rows
    log.info("%s: %d values", name, len(values))
write_job_results(rows, snakemake.output[0], **snakemake.params.results)
