# Main comparison. Each method's hyperparameters are chosen on the validation
# split (ID held-out images + validation OOD sets disjoint from every test OOD
# set; paper section 4.1); the chosen values are then scored once on the test sets.


rule select_hyperparameters:
    input:
        unpack(selection_inputs),
    output:
        selection=f"{RESULTS}/selection/{{model}}/{{method}}.parquet",
        # the chosen settings' ID validation scores: reused by the evaluation when the
        # ID validation set is the ID test set (common.smk: evaluation_inputs)
        id_val_scores=f"{RESULTS}/selection/{{model}}/{{method}}.id_val_scores.npz",
    log:
        f"{LOGS}/selection/{{model}}/{{method}}.log",
    benchmark:
        f"{BENCHMARKS}/selection/{{model}}/{{method}}.tsv"
    wildcard_constraints:
        method=_names_regex(FEATURE_METHODS),
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/analysis.yaml"
    threads: THREADS_PER_JOB
    params:
        settings=lambda wc: method_settings(wc.method),
        seeds=SEEDS,
        metric=config["selection"]["metric"],
        groups=VALIDATION_GROUPS,
        statistic=config["sensitivity"]["statistic"],
        results=result_keys(
            lambda wc: [
                method_settings(wc.method),
                SEEDS,
                config["selection"],
                SELECTION_GROUPS,
            ]
        ),
    script:
        "../scripts/select_hyperparameters.py"


rule evaluate_method:
    input:
        unpack(evaluation_inputs),
    output:
        results=f"{RESULTS}/evaluation/{{model}}/{{method}}.parquet",
        scores=f"{RESULTS}/scores/{{model}}/{{method}}.npz",
    log:
        f"{LOGS}/evaluation/{{model}}/{{method}}.log",
    benchmark:
        f"{BENCHMARKS}/evaluation/{{model}}/{{method}}.tsv"
    wildcard_constraints:
        method=_names_regex(FEATURE_METHODS),
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/analysis.yaml"
    threads: THREADS_PER_JOB
    params:
        seeds=SEEDS,
        groups=TEST_GROUPS,
        compare_protocols=COMPARED_PROTOCOL_METHODS,
        statistic=config["sensitivity"]["statistic"],
        results=result_keys(
            lambda wc: [
                method_settings(wc.method),
                SEEDS,
                SELECTION_GROUPS,
                wc.method in COMPARED_PROTOCOL_METHODS,
            ]
        ),
        uncertainty=UNCERTAINTY,
    script:
        "../scripts/evaluate_method.py"


# Methods that run the network on images (a detector class with needs_network, e.g.
# ODIN) cannot score cached features: they select and score on the images themselves.
# Same file names as the feature-level methods; the wildcard constraint picks the rule.


rule select_network_method:
    input:
        splits=splits_check("{model}"),
        model=model_file,
        id_val=lambda wc: dataset_manifest(ID_VAL, wc.model),
        ood_val=unit_manifests(*OOD_VAL),
    output:
        f"{RESULTS}/selection/{{model}}/{{method}}.parquet",
    log:
        f"{LOGS}/selection/{{model}}/{{method}}.log",
    benchmark:
        f"{BENCHMARKS}/selection/{{model}}/{{method}}.tsv"
    wildcard_constraints:
        method=_names_regex(NETWORK_METHODS),
    conda:
        "../envs/pytorch.yaml"
    threads: THREADS_PER_JOB
    resources:
        gpu=GPUS_PER_NETWORK_JOB,
    params:
        spec=lambda wc: model_spec(wc.model),
        settings=lambda wc: method_settings(wc.method),
        metric=config["selection"]["metric"],
        groups=VALIDATION_GROUPS,
        extraction=EXTRACTION_SETTINGS,
        results=result_keys(
            lambda wc: [
                method_settings(wc.method),
                config["selection"],
                SELECTION_GROUPS,
            ]
        ),
    script:
        "../scripts/network_method.py"


rule evaluate_network_method:
    input:
        model=model_file,
        selection=f"{RESULTS}/selection/{{model}}/{{method}}.parquet",
        id_test=lambda wc: dataset_manifest(ID_TEST, wc.model),
        # cached logits of the unpruned network: the ID accuracy every method records
        id_test_features=features_of("{model}", ID_TEST)["manifest"],
        ood_test=unit_manifests(*OOD_TEST),
    output:
        results=f"{RESULTS}/evaluation/{{model}}/{{method}}.parquet",
        scores=f"{RESULTS}/scores/{{model}}/{{method}}.npz",
    log:
        f"{LOGS}/evaluation/{{model}}/{{method}}.log",
    benchmark:
        f"{BENCHMARKS}/evaluation/{{model}}/{{method}}.tsv"
    wildcard_constraints:
        method=_names_regex(NETWORK_METHODS),
    conda:
        "../envs/pytorch.yaml"
    threads: THREADS_PER_JOB
    resources:
        gpu=GPUS_PER_NETWORK_JOB,
    params:
        spec=lambda wc: model_spec(wc.model),
        extraction=EXTRACTION_SETTINGS,
        groups=TEST_GROUPS,
        results=result_keys(lambda wc: [method_settings(wc.method), SELECTION_GROUPS]),
        uncertainty=UNCERTAINTY,
    script:
        "../scripts/network_method.py"
