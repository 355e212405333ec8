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
        spec=lambda wc: image_spec(wc.dataset),
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
        spec=lambda wc: image_spec(wc.dataset),
        on_bad_image=config["extraction"]["on_bad_image"],
        # Computed when the DAG is built, on every run: a changed folder changes this
        # param and Snakemake re-runs the job (rerun trigger "params").
        fingerprint=lambda wc: source_fingerprint(config["datasets"][wc.dataset]),
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
    input:
        # A replaced archive is newer than the folder unpacked from it: unpack again.
        archive=lambda wc: config["datasets"][wc.dataset]["path"],
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
        spec=lambda wc: image_spec(wc.dataset),
        on_bad_image=config["extraction"]["on_bad_image"],
    script:
        "../scripts/unpack_archive_dataset.py"


# A synthetic dataset (source: synthetic): its manifest only (rows at synthetic.scale,
# distribution, random stream); the synthetic models generate its rows.
rule synthetic_dataset:
    output:
        manifest=f"{RESOURCES}/datasets/{{dataset}}.json",
    log:
        f"{LOGS}/datasets/{{dataset}}.log",
    benchmark:
        f"{BENCHMARKS}/datasets/{{dataset}}.tsv"
    wildcard_constraints:
        dataset=_names_regex(datasets_by_source("synthetic")),
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/analysis.yaml"
    params:
        spec=lambda wc: image_spec(wc.dataset),
        scale=SYNTHETIC_SCALE,
    script:
        "../scripts/synthetic_dataset.py"


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
        split=lambda wc: split_spec(wc.dataset, int(wc.seed)),
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/split_dataset.py"


# Before any hyperparameter is chosen: no validation image is a test image and no OOD
# image an ID image, compared by content (a copy under another name is caught).
rule check_splits:
    input:
        lambda wc: [dataset_manifest(d, wc.model) for d in SPLIT_DATASETS],
    output:
        splits_check("{model}"),
    log:
        f"{LOGS}/datasets/check_splits_{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/datasets/check_splits_{{model}}.tsv"
    priority: 50
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/pytorch.yaml"
    params:
        names=SPLIT_DATASETS,
        roles=SPLIT_ROLES,
        id_val_may_be_id_test=config["selection"]["id_val_may_be_id_test"],
    script:
        "../scripts/check_splits.py"
