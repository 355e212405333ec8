# Datasets: built from bundled data (default), linked from local folders, or
# downloaded with checksum verification. Each yields a manifest JSON that records
# where the images are, how many, and how they were made.


rule build_builtin_dataset:
    output:
        manifest=f"{RESOURCES}/datasets/{{dataset}}.json",
        images=directory(f"{RESOURCES}/datasets/{{dataset}}"),
    log:
        f"{LOGS}/datasets/{{dataset}}.log",
    benchmark:
        f"{BENCHMARKS}/datasets/{{dataset}}.tsv"
    wildcard_constraints:
        dataset=_names_regex(datasets_by_source("builtin")),
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/pytorch.yaml"
    params:
        spec=lambda wc: canonical(config["datasets"][wc.dataset]),
        builtin=canonical(config["builtin"]),
    script:
        "../scripts/build_builtin_dataset.py"


rule link_dataset:
    output:
        manifest=f"{RESOURCES}/datasets/{{dataset}}.json",
    log:
        f"{LOGS}/datasets/{{dataset}}.log",
    benchmark:
        f"{BENCHMARKS}/datasets/{{dataset}}.tsv"
    wildcard_constraints:
        dataset=_names_regex(datasets_by_source("link")),
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/pytorch.yaml"
    params:
        spec=lambda wc: canonical(config["datasets"][wc.dataset]),
        on_bad_image=config["extraction"]["on_bad_image"],
    script:
        "../scripts/link_dataset.py"


rule download_dataset:
    output:
        manifest=f"{RESOURCES}/datasets/{{dataset}}.json",
    log:
        f"{LOGS}/datasets/{{dataset}}.log",
    benchmark:
        f"{BENCHMARKS}/datasets/{{dataset}}.tsv"
    wildcard_constraints:
        dataset=_names_regex(datasets_by_source("download")),
    conda:
        "../envs/pytorch.yaml"
    params:
        spec=lambda wc: download_spec(wc.dataset),
        on_bad_image=config["extraction"]["on_bad_image"],
    script:
        "../scripts/download_dataset.py"


rule unpack_archive_dataset:
    output:
        manifest=f"{RESOURCES}/datasets/{{dataset}}.json",
        images=directory(f"{RESOURCES}/datasets/{{dataset}}"),
    log:
        f"{LOGS}/datasets/{{dataset}}.log",
    benchmark:
        f"{BENCHMARKS}/datasets/{{dataset}}.tsv"
    wildcard_constraints:
        dataset=_names_regex(datasets_by_source("archive")),
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/pytorch.yaml"
    params:
        spec=lambda wc: canonical(config["datasets"][wc.dataset]),
        on_bad_image=config["extraction"]["on_bad_image"],
    script:
        "../scripts/unpack_archive_dataset.py"


# Replicated benchmarks: one seeded part of a pool (config `replicates`), as a manifest
# that lists the pool's verified images and the rows of this part.
rule split_dataset:
    input:
        pool=lambda wc: dataset_manifest(wc.dataset),
    output:
        f"{RESOURCES}/datasets/split{{seed}}/{{dataset}}.json",
    log:
        f"{LOGS}/datasets/split{{seed}}/{{dataset}}.log",
    benchmark:
        f"{BENCHMARKS}/datasets/split{{seed}}/{{dataset}}.tsv"
    wildcard_constraints:
        dataset=_names_regex(SPLIT_PARTS),
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/analysis.yaml"
    params:
        pool=lambda wc: SPLIT_PARTS[wc.dataset]["pool"],
        split=lambda wc: config["replicates"]["pools"][SPLIT_PARTS[wc.dataset]["pool"]],
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/split_dataset.py"
