# OPNP sensitivities (paper Eq. 6 and 8) from cached training features (and the
# unlabeled images of sensitivity.unlabeled): the closed form S = P^T |H| / N on a
# seeded subset of them.


rule compute_sensitivity:
    input:
        fc=model_fc,
        train=features_of("{model}", ID_TRAIN)["manifest"],
        unlabeled=feature_manifests("{model}", SENSITIVITY_UNLABELED),
    output:
        f"{RESULTS}/sensitivity/{{model}}/fraction{{fraction}}_seed{{seed}}.npz",
    log:
        f"{LOGS}/sensitivity/{{model}}/fraction{{fraction}}_seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/sensitivity/{{model}}/fraction{{fraction}}_seed{{seed}}.tsv"
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/analysis.yaml"
    threads: THREADS_PER_JOB
    params:
        fraction=lambda wc: float(wc.fraction),
        seed=lambda wc: int(wc.seed),
        reduction=config["sensitivity"]["reduction"],
    script:
        "../scripts/compute_sensitivity.py"
