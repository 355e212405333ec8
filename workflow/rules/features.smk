# The network runs once per (model, dataset): penultimate features, logits and
# labels are cached as memory-mappable .npy files. Everything downstream except
# ODIN and the in-network ablation is linear algebra on these arrays.


rule extract_features:
    input:
        model=f"{RESULTS}/models/{{model}}/model.pt",
        dataset=f"{RESOURCES}/datasets/{{dataset}}.json",
    output:
        features=f"{RESULTS}/features/{{model}}/{{dataset}}.features.npy",
        logits=f"{RESULTS}/features/{{model}}/{{dataset}}.logits.npy",
        labels=f"{RESULTS}/features/{{model}}/{{dataset}}.labels.npy",
        manifest=f"{RESULTS}/features/{{model}}/{{dataset}}.manifest.json",
    log:
        f"{LOGS}/features/{{model}}/{{dataset}}.log",
    benchmark:
        f"{BENCHMARKS}/features/{{model}}/{{dataset}}.tsv"
    conda:
        "../envs/pytorch.yaml"
    threads: THREADS_PER_JOB
    resources:
        gpu=GPUS_PER_NETWORK_JOB,
    params:
        spec=lambda wc: canonical(config["models"][wc.model]),
        extraction=canonical(config["extraction"]),
    script:
        "../scripts/extract_features.py"
