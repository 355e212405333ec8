# The network runs once per (model, dataset): penultimate features, logits and
# labels are cached as memory-mappable .npy files. Everything downstream except
# ODIN and the in-network ablation is linear algebra on these arrays.


rule extract_features:
    input:
        model=f"{RESULTS}/models/{{model}}/model.pt",
        dataset=f"{RESOURCES}/datasets/{{dataset}}.json",
    output:
        **features_of("{model}", "{dataset}"),
    log:
        f"{LOGS}/features/{{model}}/{{dataset}}.log",
    benchmark:
        f"{BENCHMARKS}/features/{{model}}/{{dataset}}.tsv"
    wildcard_constraints:
        model=_names_regex(NETWORK_UNITS),
        dataset=_names_regex(WHOLE_DATASETS),
    conda:
        "../envs/pytorch.yaml"
    threads: THREADS_PER_JOB
    resources:
        gpu=GPUS_PER_NETWORK_JOB,
    params:
        spec=lambda wc: model_spec(wc.model),
        extraction=EXTRACTION_SETTINGS,
        parts=1,
    script:
        "../scripts/extract_features.py"


# A large dataset (config extraction.parts) is extracted by several jobs at once, one
# contiguous part of its images each (many GPUs on the 1.28M ImageNet training images),
# then merged into the same files a single job writes.
use rule extract_features as extract_feature_part with:
    output:
        **{
            k: temp(v)
            for k, v in feature_part("{model}", "{dataset}", "{part}").items()
        },
    log:
        f"{LOGS}/features/{{model}}/{{dataset}}.part{{part}}.log",
    benchmark:
        f"{BENCHMARKS}/features/{{model}}/{{dataset}}.part{{part}}.tsv"
    wildcard_constraints:
        dataset=_names_regex(EXTRACTION_PARTS),
        part=r"\d+",
    params:
        spec=lambda wc: model_spec(wc.model),
        extraction=EXTRACTION_SETTINGS,
        parts=lambda wc: EXTRACTION_PARTS[wc.dataset],


rule merge_feature_parts:
    input:
        feature_parts,
    output:
        **features_of("{model}", "{dataset}"),
    log:
        f"{LOGS}/features/{{model}}/{{dataset}}.merge.log",
    benchmark:
        f"{BENCHMARKS}/features/{{model}}/{{dataset}}.merge.tsv"
    wildcard_constraints:
        dataset=_names_regex(EXTRACTION_PARTS),
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/analysis.yaml"
    params:
        parts=lambda wc: EXTRACTION_PARTS[wc.dataset],
    script:
        "../scripts/merge_feature_parts.py"


# Replicated benchmarks: a unit's features of a dataset are rows of its model's one
# extraction (a seeded part of a pool, or every row of a dataset all replicates share).
rule replicate_features:
    input:
        unpack(replicate_feature_inputs),
    output:
        **features_of("{model}", "{dataset}"),
    log:
        f"{LOGS}/features/{{model}}/{{dataset}}.log",
    benchmark:
        f"{BENCHMARKS}/features/{{model}}/{{dataset}}.tsv"
    wildcard_constraints:
        model=_names_regex(SPLIT_UNITS),
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/replicate_features.py"


# Synthetic models (arch: synthetic): the rows of a synthetic dataset come from the model's
# seeded generator (opnp.synthetic), written block by block in the same layout, no network.
rule synthetic_features:
    input:
        fc=f"{RESULTS}/models/{{model}}/fc.npz",
        dataset=f"{RESOURCES}/datasets/{{dataset}}.json",
    output:
        **features_of("{model}", "{dataset}"),
    log:
        f"{LOGS}/features/{{model}}/{{dataset}}.log",
    benchmark:
        f"{BENCHMARKS}/features/{{model}}/{{dataset}}.tsv"
    wildcard_constraints:
        model=_names_regex(SYNTHETIC_MODELS),
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/analysis.yaml"
    threads: THREADS_PER_JOB
    params:
        spec=lambda wc: canonical(config["models"][wc.model]),
    script:
        "../scripts/synthetic_features.py"
