# Models: trained here (default, CIFAR from scratch) or loaded from a checkpoint /
# the local torchvision or timm cache. Both write the same files: the full model
# state (for ODIN and the in-network ablation) and the FC head every detector uses.


rule train_model:
    input:
        train=dataset_manifest(ID_TRAIN),
        test=dataset_manifest(ID_TEST),
    output:
        model=f"{RESULTS}/models/{{model}}/model.pt",
        fc=f"{RESULTS}/models/{{model}}/fc.npz",
        summary=f"{RESULTS}/models/{{model}}/summary.json",
    log:
        f"{LOGS}/models/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/models/{{model}}.tsv"
    wildcard_constraints:
        model=_names_regex(trained_models()),
    conda:
        "../envs/pytorch.yaml"
    threads: THREADS_PER_JOB
    resources:
        gpu=GPUS_PER_NETWORK_JOB,
    params:
        # a trained replicate's spec carries its seed (train.seed)
        spec=lambda wc: model_spec(wc.model),
    script:
        "../scripts/train_model.py"


rule load_model:
    input:
        test=dataset_manifest(ID_TEST),
        # A checkpoint replaced at the same path is newer than model.pt: re-load it.
        checkpoint=model_checkpoint,
    output:
        model=f"{RESULTS}/models/{{model}}/model.pt",
        fc=f"{RESULTS}/models/{{model}}/fc.npz",
        summary=f"{RESULTS}/models/{{model}}/summary.json",
    log:
        f"{LOGS}/models/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/models/{{model}}.tsv"
    wildcard_constraints:
        model=_names_regex(loaded_models()),
    conda:
        "../envs/pytorch.yaml"
    threads: THREADS_PER_JOB
    resources:
        gpu=GPUS_PER_NETWORK_JOB,
    params:
        spec=lambda wc: canonical(config["models"][wc.model]),
    script:
        "../scripts/load_model.py"


# A synthetic model (arch: synthetic, opnp.synthetic): the FC head of its seeded
# generator; no network, so no model.pt (nothing that needs one is configurable with it).
rule synthetic_model:
    output:
        fc=f"{RESULTS}/models/{{model}}/fc.npz",
        summary=f"{RESULTS}/models/{{model}}/summary.json",
    log:
        f"{LOGS}/models/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/models/{{model}}.tsv"
    wildcard_constraints:
        model=_names_regex(SYNTHETIC_MODELS),
    localrule: LOCAL_CPU_JOBS
    conda:
        "../envs/analysis.yaml"
    params:
        spec=lambda wc: canonical(config["models"][wc.model]),
    script:
        "../scripts/synthetic_model.py"
