# Ablations of the paper (Tables 3, 7, 8, 9; data of Figs. 3, 4, 6). All but the
# in-network ablation (Table 7) run on cached features.


rule pruned_accuracy:
    input:
        fc=model_fc,
        id_test=features_of("{model}", ID_TEST)["manifest"],
        sensitivity=full_sensitivity("{model}"),
    output:
        f"{RESULTS}/ablations/{{model}}/table3_pruned_accuracy.parquet",
    log:
        f"{LOGS}/ablations/{{model}}/table3.log",
    benchmark:
        f"{BENCHMARKS}/ablations/{{model}}/table3.tsv"
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/analysis.yaml"
    params:
        grid=ABLATIONS.get("pruned_accuracy", {}),
        statistic=config["sensitivity"]["statistic"],
        config_hash=stable_hash(ABLATIONS.get("pruned_accuracy", {})),
        benchmark=BENCHMARK,
    script:
        "../scripts/pruned_accuracy.py"


rule sensitivity_subsets:
    input:
        fc=model_fc,
        selection=f"{RESULTS}/selection/{{model}}/opp.parquet",
        sensitivities=subset_sensitivities("{model}"),
        id_test=features_of("{model}", ID_TEST)["manifest"],
        ood_test=feature_manifests("{model}", OOD_TEST),
    output:
        f"{RESULTS}/ablations/{{model}}/table8_subsets.parquet",
    log:
        f"{LOGS}/ablations/{{model}}/table8.log",
    benchmark:
        f"{BENCHMARKS}/ablations/{{model}}/table8.tsv"
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/analysis.yaml"
    params:
        config_hash=stable_hash([FRACTIONS, SEEDS]),
        benchmark=BENCHMARK,
        ood_names=OOD_TEST,
        uncertainty=UNCERTAINTY,
    script:
        "../scripts/sensitivity_subsets.py"


rule neuron_statistics:
    input:
        fc=model_fc,
        sensitivity=full_sensitivity("{model}"),
        id_val=features_of("{model}", ID_VAL)["manifest"],
        ood_val=feature_manifests("{model}", OOD_VAL),
        id_test=features_of("{model}", ID_TEST)["manifest"],
        ood_test=feature_manifests("{model}", OOD_TEST),
    output:
        f"{RESULTS}/ablations/{{model}}/table9_statistics.parquet",
    log:
        f"{LOGS}/ablations/{{model}}/table9.log",
    benchmark:
        f"{BENCHMARKS}/ablations/{{model}}/table9.tsv"
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/analysis.yaml"
    params:
        statistics=ABLATIONS.get("statistics", []),
        settings=method_settings("onp") if "onp" in METHODS else {},
        metric=config["selection"]["metric"],
        config_hash=stable_hash(
            [ABLATIONS.get("statistics", []), config["methods"].get("onp", {})]
        ),
        benchmark=BENCHMARK,
        val_names=OOD_VAL,
        ood_names=OOD_TEST,
        uncertainty=UNCERTAINTY,
    script:
        "../scripts/neuron_statistics.py"


rule percentage_sweep:
    input:
        fc=model_fc,
        sensitivity=full_sensitivity("{model}"),
        id_test=features_of("{model}", ID_TEST)["manifest"],
        ood_test=feature_manifests("{model}", OOD_TEST),
    output:
        f"{RESULTS}/ablations/{{model}}/fig3_sweep.parquet",
    log:
        f"{LOGS}/ablations/{{model}}/fig3.log",
    benchmark:
        f"{BENCHMARKS}/ablations/{{model}}/fig3.tsv"
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/analysis.yaml"
    params:
        sweep=ABLATIONS.get("sweep", {}),
        statistic=config["sensitivity"]["statistic"],
        config_hash=stable_hash(ABLATIONS.get("sweep", {})),
        benchmark=BENCHMARK,
        ood_names=OOD_TEST,
        uncertainty=UNCERTAINTY,
    script:
        "../scripts/percentage_sweep.py"


rule calibration:
    input:
        fc=model_fc,
        sensitivity=full_sensitivity("{model}"),
        selection=f"{RESULTS}/selection/{{model}}/opnp.parquet",
        id_test=features_of("{model}", ID_TEST)["manifest"],
    output:
        f"{RESULTS}/ablations/{{model}}/fig4_calibration.parquet",
    log:
        f"{LOGS}/ablations/{{model}}/fig4.log",
    benchmark:
        f"{BENCHMARKS}/ablations/{{model}}/fig4.tsv"
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/analysis.yaml"
    params:
        statistic=config["sensitivity"]["statistic"],
        n_bins=ABLATIONS["calibration"]["n_bins"],
        benchmark=BENCHMARK,
    script:
        "../scripts/calibration.py"


rule layer_ablation:
    input:
        model=model_file,
        train=lambda wc: dataset_manifest(ID_TRAIN, wc.model),
        id_test=lambda wc: dataset_manifest(ID_TEST, wc.model),
        ood_test=unit_manifests(*OOD_TEST),
        fc_sensitivity=full_sensitivity("{model}"),
        # every row prunes with OPNP's validation-selected percentages
        selection=f"{RESULTS}/selection/{{model}}/opnp.parquet",
    output:
        results=f"{RESULTS}/ablations/{{model}}/table7_layers.parquet",
        layer_means=f"{RESULTS}/ablations/{{model}}/fig6_layer_sensitivity.parquet",
    log:
        f"{LOGS}/ablations/{{model}}/table7.log",
    benchmark:
        f"{BENCHMARKS}/ablations/{{model}}/table7.tsv"
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
        seed=SEEDS[0],
        config_hash=stable_hash(
            [ABLATIONS.get("layers", {}), config["sensitivity"]["statistic"]]
        ),
        benchmark=BENCHMARK,
        ood_names=OOD_TEST,
        uncertainty=UNCERTAINTY,
    script:
        "../scripts/layer_ablation.py"
