"""Table 9: ONP with each neuron statistic; percentages selected on the validation split
separately for each statistic (their scales differ)."""

from opnp.pipeline.artifacts import JobInputs, write_job_results
from opnp.pipeline.evaluation import evaluate_configs
from opnp.pipeline.results import results_frame
from opnp.pipeline.runtime import setup_job
from opnp.pipeline.selection import expand_grid, select_best

log = setup_job(snakemake.log[0], threads=snakemake.threads)
inputs = JobInputs(snakemake.input.items())
fit = inputs.fit_data()
settings = snakemake.params.settings
configs = expand_grid(settings.get("grid", {}), settings.get("fixed", {}))
splits = {
    "val": (inputs.features("id_val").features, inputs.ood("ood_val")),
    "test": (inputs.features("id_test").features, inputs.ood("ood_test")),
}


def evaluate(statistic, configs, split, **kwargs):
    id_features, ood_features = splits[split]
    found, _ = evaluate_configs(
        "onp",
        configs,
        fit.replace(statistic=statistic),
        id_features=id_features,
        ood_features=ood_features,
        split=split,
        experiment=snakemake.rule,
        variant=statistic,
        **kwargs,
    )
    return found


rows = []
for statistic in snakemake.params.statistics:
    val_rows = evaluate(statistic, configs, "val")
    chosen = select_best(
        results_frame(val_rows, benchmark="", model="", config_hash="", provenance={}),
        snakemake.params.metric,
    )
    log.info("%s: selected %s", statistic, chosen)
    test_rows = evaluate(statistic, [chosen], "test", uncertainty=snakemake.params.uncertainty)
    rows += val_rows + test_rows
write_job_results(rows, snakemake.output[0], **snakemake.params.results)
