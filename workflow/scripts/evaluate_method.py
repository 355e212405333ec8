"""Score one method on the test sets, each test family with the hyperparameters chosen for
it on validation (config selection.validation)."""

import pandas as pd

from opnp.io import save_npz_atomic
from opnp.pipeline.artifacts import JobInputs, load_id_scores, write_job_results
from opnp.pipeline.evaluation import evaluate_configs, merge_setting_scores
from opnp.pipeline.results import accuracy
from opnp.pipeline.runtime import setup_job
from opnp.pipeline.selection import selected_params, settings_for_test_sets

log = setup_job(snakemake.log[0], threads=snakemake.threads)
method = snakemake.wildcards.method
selection = pd.read_parquet(snakemake.input.selection)
settings = settings_for_test_sets(selection, snakemake.params.groups)
inputs = JobInputs(snakemake.input.items())
id_test = inputs.features("id_test")
ood_test = inputs.ood("ood_test")
fit = inputs.fit_data(snakemake.params.statistic)
# When the ID test set is the ID validation set, the selection's scores of the chosen
# settings stand for their ID test scores (scored by the same detector on the same rows).
known_id_scores = (
    load_id_scores(snakemake.input.id_val_scores, dataset=id_test.manifest["dataset"])
    if "id_val_scores" in snakemake.input.keys()
    else None
)
if known_id_scores is not None:
    chosen = {params for params, _ in known_id_scores}  # keys are (params, seed)
    log.info("ID scores of %d chosen setting(s) from the selection", len(chosen))
rows, per_setting, per_setting_seeds = [], [], []
for params, test_sets in settings:
    log.info("%s with %s on %s", method, params, test_sets)
    setting_rows, scores = evaluate_configs(
        method,
        [params],
        fit,
        id_features=id_test.features,
        ood_features={name: ood_test[name] for name in test_sets},
        split="test",
        seeds=snakemake.params.seeds,
        keep_scores=True,
        uncertainty=snakemake.params.uncertainty,
        known_id_scores=known_id_scores,
    )
    rows += setting_rows
    per_setting.append(scores[sorted(scores)[0]])
    per_setting_seeds.append(scores)
if method in snakemake.params.compare_protocols:
    # The same method with the setting chosen on every validation set, the test family's
    # own included, beside the held-out-family rows (table selection_protocols).
    every_rows, _ = evaluate_configs(
        method,
        [selected_params(selection)],
        fit,
        id_features=id_test.features,
        ood_features=ood_test,
        split="test",
        seeds=snakemake.params.seeds,
        experiment="protocols",
        variant="all_families",
        uncertainty=snakemake.params.uncertainty,
        known_id_scores=known_id_scores,
    )
    rows += every_rows + [
        {**row, "experiment": "protocols", "variant": "held_out_family"}
        for row in rows
        if row["experiment"] == "main"
    ]
# Classification always uses the unpruned layer (paper section 4.1): the accuracy every
# method keeps.
id_accuracy = accuracy(id_test.logits, id_test.labels)
for row in rows:
    row["id_accuracy"] = id_accuracy
write_job_results(rows, snakemake.output.results, **snakemake.params.results)
arrays = merge_setting_scores(per_setting)
if snakemake.config.get("replicates"):
    # A replicated run pools every method's test scores over its replicates (rule
    # pooled_intervals); a seeded method's result averages its seeds, so the other seeds'
    # scores are saved too, as "<set>@seed<seed>" (opnp.pipeline.pooled.seed_scores).
    for index, scores in enumerate(per_setting_seeds):
        for (_, seed), seed_arrays in sorted(scores.items())[1:]:
            oods = [name for name in seed_arrays if name != "ID"]
            arrays |= {f"{name}@seed{seed}": seed_arrays[name] for name in oods}
            # the ID scores of a later setting belong to its own OOD sets (ID@<set>)
            id_keys = [f"ID@{name}@seed{seed}" for name in oods] if index else [f"ID@seed{seed}"]
            arrays |= dict.fromkeys(id_keys, seed_arrays["ID"])
save_npz_atomic(snakemake.output.scores, **arrays)
