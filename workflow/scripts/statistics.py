"""Table 9: ONP with each neuron statistic; percentages selected on the validation split
separately for each statistic (their scales differ)."""

from opnp.pipeline.artifacts import (
    job_results,
    load_fc,
    load_feature_set,
    load_ood_features,
    load_sensitivity,
    write_results,
)
from opnp.pipeline.evaluation import evaluate_configs
from opnp.pipeline.results import results_frame
from opnp.pipeline.runtime import setup_job
from opnp.pipeline.selection import expand_grid, select_best

log = setup_job(snakemake.log[0], threads=snakemake.threads)
weight, bias = load_fc(snakemake.input.fc)
sensitivity = load_sensitivity(snakemake.input.sensitivity)
id_val = load_feature_set(snakemake.input.id_val)
ood_val = load_ood_features(snakemake.input.ood_val)
id_test = load_feature_set(snakemake.input.id_test)
ood_test = load_ood_features(snakemake.input.ood_test)
settings = snakemake.params.settings
configs = expand_grid(settings.get("grid", {}), settings.get("fixed", {}))
common = dict(
    weight=weight,
    bias=bias,
    train_features=None,
    train_labels=None,
    sensitivity=sensitivity,
    experiment=snakemake.rule,
)
rows = []
for statistic in snakemake.params.statistics:
    val_rows, _ = evaluate_configs(
        "onp",
        configs,
        id_features=id_val.features,
        ood_features=ood_val,
        split="val",
        statistic=statistic,
        variant=statistic,
        **common,
    )
    chosen = select_best(
        results_frame(val_rows, benchmark="", model="", config_hash="", provenance={}),
        snakemake.params.metric,
    )
    log.info("%s: selected %s", statistic, chosen)
    test_rows, _ = evaluate_configs(
        "onp",
        [chosen],
        id_features=id_test.features,
        ood_features=ood_test,
        split="test",
        statistic=statistic,
        variant=statistic,
        uncertainty=snakemake.params.uncertainty,
        **common,
    )
    rows += val_rows + test_rows
frame = job_results(
    rows,
    benchmark=snakemake.params.benchmark,
    model=snakemake.wildcards.model,
    config_hash=snakemake.params.config_hash,
)
write_results(frame, snakemake.output[0])
