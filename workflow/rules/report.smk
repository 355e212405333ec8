# Aggregation: every table and figure is derived from the Parquet results and the
# cached arrays, never by re-running a model.


rule aggregate_results:
    input:
        result_parquets(),
    output:
        f"{RESULTS}/results.parquet",
    log:
        f"{LOGS}/aggregate_results.log",
    benchmark:
        f"{BENCHMARKS}/aggregate_results.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/aggregate_results.py"


rule make_table:
    input:
        results=f"{RESULTS}/results.parquet",
        pooled=pooled_draws,
    output:
        md=f"{RESULTS}/tables/{{table}}.md",
        tex=f"{RESULTS}/tables/{{table}}.tex",
        csv=report(
            f"{RESULTS}/tables/{{table}}.csv",
            caption="../report/tables.rst",
            category="Tables",
            labels={"table": "{table}"},
        ),
    log:
        f"{LOGS}/tables/{{table}}.log",
    benchmark:
        f"{BENCHMARKS}/tables/{{table}}.tsv"
    wildcard_constraints:
        table=_names_regex(TABLE_SPECS),
    conda:
        "../envs/analysis.yaml"
    params:
        spec=lambda wc: TABLE_SPECS[wc.table],
        ood_names=OOD_TEST,
        methods=METHODS,
        uncertainty=UNCERTAINTY,
        sensitivity={
            **{
                k: config["sensitivity"][k]
                for k in ("statistic", "reduction", "unlabeled")
            },
            "train": ID_TRAIN,
        },
        react_sources={
            m: react_percentile_source(m, config["methods"][m])
            for m in METHODS
            if react_percentile_source(m, config["methods"][m])
        },
    script:
        "../scripts/make_table.py"


# Replicated benchmarks: per model, the mean over replicates of each method's FPR95 and
# AUROC with a cluster bootstrap that resamples what the replicates share (OOD classes, ID
# images), the same draws for every method (opnp.pipeline.pooled, docs/methods.md).
rule pooled_intervals:
    input:
        scores=lambda wc: [
            f"{RESULTS}/scores/{u}/{m}.npz"
            for u in base_units(wc.model)
            for m in POOLED_METHODS
        ],
        id_test=lambda wc: [dataset_manifest(ID_TEST, u) for u in base_units(wc.model)],
        ood_test=lambda wc: [
            dataset_manifest(s, u) for u in base_units(wc.model) for s in OOD_TEST
        ],
        # the pool of a part (its class folders), or the dataset itself
        ood_pools=[dataset_manifest(s) for s in OOD_TEST],
    output:
        csv=f"{RESULTS}/pooled/{{model}}.csv",
        parquet=f"{RESULTS}/pooled/{{model}}.parquet",
    log:
        f"{LOGS}/pooled/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/pooled/{{model}}.tsv"
    wildcard_constraints:
        model=_names_regex(BASE_MODELS),
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/analysis.yaml"
    params:
        units=lambda wc: base_units(wc.model),
        methods=POOLED_METHODS,
        # seeds whose scores each method's file holds (its results average them)
        n_seeds={
            m: len(SEEDS) if detector_class(m).seeded else 1 for m in POOLED_METHODS
        },
        ood_sets=OOD_TEST,
        uncertainty=UNCERTAINTY,
    script:
        "../scripts/pooled_intervals.py"


rule figure_sensitivity_distribution:
    input:
        sensitivities=[full_sensitivity(m) for m in first_units()],
    output:
        **experiment_figure_files(
            "sensitivity_distribution",
            caption="../report/fig_sensitivity_distribution.rst",
        ),
    log:
        f"{LOGS}/figures/sensitivity_distribution.log",
    benchmark:
        f"{BENCHMARKS}/figures/sensitivity_distribution.tsv"
    conda:
        "../envs/analysis.yaml"
    params:
        models=first_units(),  # Fig. 1: each model once (its first unit)
        facts=figure_facts,
    script:
        "../scripts/figure_sensitivity_distribution.py"


rule figure_pruning_before_after:
    input:
        sensitivity=full_sensitivity("{model}"),
        selection=f"{RESULTS}/selection/{{model}}/opnp.parquet",
    output:
        **experiment_figure_files("pruning_before_after", caption="../report/fig2.rst"),
    log:
        f"{LOGS}/figures/fig2_{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/figures/fig2_{{model}}.tsv"
    conda:
        "../envs/analysis.yaml"
    params:
        statistic=config["sensitivity"]["statistic"],
        facts=figure_facts,
    script:
        "../scripts/figure_pruning_before_after.py"


rule figure_percentage_sweep:
    input:
        ablation_result("sweep"),
    output:
        **experiment_figure_files("sweep", caption="../report/fig3.rst"),
    log:
        f"{LOGS}/figures/fig3_{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/figures/fig3_{{model}}.tsv"
    conda:
        "../envs/analysis.yaml"
    params:
        facts=figure_facts,
    script:
        "../scripts/figure_percentage_sweep.py"


rule figure_reliability:
    input:
        ablation_result("calibration"),
    output:
        **experiment_figure_files("calibration", caption="../report/fig4.rst"),
    log:
        f"{LOGS}/figures/fig4_{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/figures/fig4_{{model}}.tsv"
    conda:
        "../envs/analysis.yaml"
    params:
        min_bin_count=ABLATIONS["calibration"]["min_bin_count"],
        facts=figure_facts,
    script:
        "../scripts/figure_reliability.py"


rule figure_score_distributions:
    input:
        energy=f"{RESULTS}/scores/{{model}}/energy.npz",
        opnp=f"{RESULTS}/scores/{{model}}/opnp.npz",
    output:
        **experiment_figure_files("score_distributions", caption="../report/fig5.rst"),
    log:
        f"{LOGS}/figures/fig5_{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/figures/fig5_{{model}}.tsv"
    conda:
        "../envs/analysis.yaml"
    params:
        facts=figure_facts,
    script:
        "../scripts/figure_score_distributions.py"


rule figure_layer_sensitivity:
    input:
        f"{RESULTS}/ablations/{{model}}/layers_sensitivity.parquet",
    output:
        **experiment_figure_files("layers", caption="../report/fig6.rst"),
    log:
        f"{LOGS}/figures/fig6_{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/figures/fig6_{{model}}.tsv"
    conda:
        "../envs/analysis.yaml"
    params:
        facts=figure_facts,
    script:
        "../scripts/figure_layer_sensitivity.py"


rule figure_pruned_weight_sensitivity:
    input:
        fc=model_fc,
        sensitivity=full_sensitivity("{model}"),
        selection=f"{RESULTS}/selection/{{model}}/opnp.parquet",
        id_test=features_of("{model}", ID_TEST)["manifest"],
        ood=features_of("{model}", ABLATIONS.get("fig9_ood", OOD_TEST[0]))["manifest"],
    output:
        **experiment_figure_files(
            "pruned_weight_sensitivity", caption="../report/fig9.rst"
        ),
    log:
        f"{LOGS}/figures/fig9_{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/figures/fig9_{{model}}.tsv"
    conda:
        "../envs/analysis.yaml"
    params:
        statistic=config["sensitivity"]["statistic"],
        reduction=config["sensitivity"]["reduction"],
        id_name=ID_TEST,
        ood_name=ABLATIONS.get("fig9_ood", OOD_TEST[0]),
        fallback_weight_low=FIG9_FALLBACK_WEIGHT_LOW,
        # the bootstrap of the relative ratio resamples the same test images as every
        # test interval, with the same settings
        uncertainty=UNCERTAINTY,
        random_sets=ABLATIONS.get("fig9_random_sets", 0),
        facts=figure_facts,
    script:
        "../scripts/figure_pruned_weight_sensitivity.py"


rule figure_readings:
    input:
        ablation_result("readings"),
    output:
        **experiment_figure_files("readings", caption="../report/fig_readings.rst"),
    log:
        f"{LOGS}/figures/readings_{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/figures/readings_{{model}}.tsv"
    conda:
        "../envs/analysis.yaml"
    params:
        confidence=UNCERTAINTY["confidence"],
        facts=figure_facts,
    script:
        "../scripts/figure_readings.py"
