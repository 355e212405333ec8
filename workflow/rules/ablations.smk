# Ablations of the paper (Tables 3, 7, 8, 9; data of Figs. 3, 4, 6) and the readings of
# its ambiguous choices; each rule is named after its experiment in
# opnp.pipeline.experiments, like its result file and rows. All but the in-network
# ablation (Table 7) run on cached features. A new ablation on cached features needs no
# rule: its catalogue entry names its compute function, run by rule feature_ablation.


rule pruned_accuracy:
    input:
        fc=model_fc,
        id_test=features_of("{model}", ID_TEST)["manifest"],
        sensitivity=full_sensitivity("{model}"),
    output:
        results=ablation_result("pruned_accuracy"),
        # how far the sensitivity set's predicted classes cover the ID test classes
        coverage=f"{RESULTS}/ablations/{{model}}/sensitivity_coverage.json",
    log:
        f"{LOGS}/ablations/{{model}}/pruned_accuracy.log",
    benchmark:
        f"{BENCHMARKS}/ablations/{{model}}/pruned_accuracy.tsv"
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/analysis.yaml"
    params:
        grid=ABLATIONS.get("pruned_accuracy", {}),
        statistic=config["sensitivity"]["statistic"],
        results=result_keys(ABLATIONS.get("pruned_accuracy", {})),
    script:
        "../scripts/pruned_accuracy.py"


rule subsets:
    input:
        fc=model_fc,
        selection=f"{RESULTS}/selection/{{model}}/opp.parquet",
        sensitivities=subset_sensitivities("{model}"),
        id_test=features_of("{model}", ID_TEST)["manifest"],
        ood_test=feature_manifests("{model}", OOD_TEST),
    output:
        ablation_result("subsets"),
    log:
        f"{LOGS}/ablations/{{model}}/subsets.log",
    benchmark:
        f"{BENCHMARKS}/ablations/{{model}}/subsets.tsv"
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/analysis.yaml"
    params:
        results=result_keys([FRACTIONS, SEEDS]),
        uncertainty=UNCERTAINTY,
    script:
        "../scripts/subsets.py"


rule statistics:
    input:
        fc=model_fc,
        sensitivity=full_sensitivity("{model}"),
        id_val=features_of("{model}", ID_VAL)["manifest"],
        ood_val=feature_manifests("{model}", OOD_VAL),
        id_test=features_of("{model}", ID_TEST)["manifest"],
        ood_test=feature_manifests("{model}", OOD_TEST),
    output:
        ablation_result("statistics"),
    log:
        f"{LOGS}/ablations/{{model}}/statistics.log",
    benchmark:
        f"{BENCHMARKS}/ablations/{{model}}/statistics.tsv"
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/analysis.yaml"
    params:
        statistics=ABLATIONS.get("statistics", []),
        settings=method_settings("onp") if "onp" in METHODS else {},
        metric=config["selection"]["metric"],
        results=result_keys(
            [ABLATIONS.get("statistics", []), config["methods"].get("onp", {})]
        ),
        uncertainty=UNCERTAINTY,
    script:
        "../scripts/statistics.py"


rule readings:
    input:
        unpack(readings_inputs),
    output:
        ablation_result("readings"),
    log:
        f"{LOGS}/ablations/{{model}}/readings.log",
    benchmark:
        f"{BENCHMARKS}/ablations/{{model}}/readings.tsv"
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/analysis.yaml"
    params:
        readings=READINGS_RUN,
        settings={m: method_settings(m) for m in READING_METHODS},
        validation_groups=VALIDATION_GROUPS,
        test_groups=TEST_GROUPS,
        metric=config["selection"]["metric"],
        statistic=config["sensitivity"]["statistic"],
        reduction=config["sensitivity"]["reduction"],
        results=result_keys(
            [
                READINGS_RUN,
                {m: method_settings(m) for m in READING_METHODS},
                SELECTION_GROUPS,
                config["selection"]["metric"],
                config["sensitivity"],
            ]
        ),
        uncertainty=UNCERTAINTY,
    script:
        "../scripts/readings.py"


rule sweep:
    input:
        fc=model_fc,
        sensitivity=full_sensitivity("{model}"),
        id_test=features_of("{model}", ID_TEST)["manifest"],
        ood_test=feature_manifests("{model}", OOD_TEST),
    output:
        ablation_result("sweep"),
    log:
        f"{LOGS}/ablations/{{model}}/sweep.log",
    benchmark:
        f"{BENCHMARKS}/ablations/{{model}}/sweep.tsv"
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/analysis.yaml"
    params:
        sweep=ABLATIONS.get("sweep", {}),
        statistic=config["sensitivity"]["statistic"],
        results=result_keys(ABLATIONS.get("sweep", {})),
        uncertainty=UNCERTAINTY,
    script:
        "../scripts/sweep.py"


rule calibration:
    input:
        fc=model_fc,
        sensitivity=full_sensitivity("{model}"),
        selection=f"{RESULTS}/selection/{{model}}/opnp.parquet",
        id_test=features_of("{model}", ID_TEST)["manifest"],
    output:
        ablation_result("calibration"),
    log:
        f"{LOGS}/ablations/{{model}}/calibration.log",
    benchmark:
        f"{BENCHMARKS}/ablations/{{model}}/calibration.tsv"
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/analysis.yaml"
    params:
        statistic=config["sensitivity"]["statistic"],
        n_bins=ABLATIONS["calibration"]["n_bins"],
        benchmark=BENCHMARK,
    script:
        "../scripts/calibration.py"


rule layers:
    input:
        splits=splits_check("{model}"),
        model=model_file,
        train=lambda wc: dataset_manifest(ID_TRAIN, wc.model),
        id_test=lambda wc: dataset_manifest(ID_TEST, wc.model),
        ood_test=unit_manifests(*OOD_TEST),
        # the in-network rows select their own percentages on the validation sets
        id_val=lambda wc: dataset_manifest(ID_VAL, wc.model),
        ood_val=unit_manifests(*OOD_VAL),
        fc_sensitivity=full_sensitivity("{model}"),
        # the FC row is the main OPNP result: OPNP's validation-selected percentages
        selection=f"{RESULTS}/selection/{{model}}/opnp.parquet",
    output:
        results=ablation_result("layers"),
        layer_means=f"{RESULTS}/ablations/{{model}}/layers_sensitivity.parquet",
        val_grid=f"{RESULTS}/ablations/{{model}}/layers_validation.parquet",
    log:
        f"{LOGS}/ablations/{{model}}/layers.log",
    benchmark:
        f"{BENCHMARKS}/ablations/{{model}}/layers.tsv"
    conda:
        "../envs/pytorch.yaml"
    threads: THREADS_PER_JOB
    resources:
        gpu=GPUS_PER_NETWORK_JOB,
    params:
        spec=lambda wc: model_spec(wc.model),
        layers=ABLATIONS.get("layers", {}),
        extraction=EXTRACTION_SETTINGS,
        statistic=config["sensitivity"]["statistic"],
        metric=config["selection"]["metric"],
        seed=SEEDS[0],
        results=result_keys(
            [
                ABLATIONS.get("layers", {}),
                config["sensitivity"]["statistic"],
                config["selection"]["metric"],
            ]
        ),
        uncertainty=UNCERTAINTY,
    script:
        "../scripts/layers.py"


# An ablation on cached features without a rule of its own: its catalogue entry names
# the function computing its rows (feature_ablation_inputs in common.smk).
rule feature_ablation:
    input:
        unpack(feature_ablation_inputs),
    output:
        f"{RESULTS}/ablations/{{model}}/{{experiment}}.parquet",
    log:
        f"{LOGS}/ablations/{{model}}/{{experiment}}.log",
    benchmark:
        f"{BENCHMARKS}/ablations/{{model}}/{{experiment}}.tsv"
    wildcard_constraints:
        experiment=_names_regex(FEATURE_ABLATIONS),
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/analysis.yaml"
    params:
        compute=lambda wc: EXPERIMENTS[wc.experiment].compute,
        job=feature_ablation_settings,
        results=result_keys(feature_ablation_settings),
        uncertainty=UNCERTAINTY,
    script:
        "../scripts/feature_ablation.py"
