"""Penultimate features, logits and labels of one (model, dataset), cached once; or of
one part of the dataset's images when it is extracted by several jobs (rule
extract_feature_part, wildcard ``part``)."""

from pathlib import Path

from opnp.data import open_dataset
from opnp.features import part_rows
from opnp.nets.extraction import extract_features
from opnp.nets.models import preprocessing
from opnp.pipeline.artifacts import feature_stem, load_model, read_json
from opnp.pipeline.runtime import loader_workers, setup_job

log = setup_job(snakemake.log[0], threads=snakemake.threads)
spec = snakemake.params.spec
extraction = snakemake.params.extraction
model = load_model(snakemake.input.model)
eval_transform, _, _ = preprocessing(spec)
dataset_manifest = read_json(snakemake.input.dataset)
dataset = open_dataset(dataset_manifest, transform=eval_transform)
meta = {
    "model": snakemake.wildcards.model,
    "dataset": snakemake.wildcards.dataset,
    "dataset_manifest": str(Path(snakemake.input.dataset)),
}
rows = None
if "part" in snakemake.wildcards.keys():
    part, parts = int(snakemake.wildcards.part), snakemake.params.parts
    rows = part_rows(len(dataset), parts, part)
    meta.update(part=part, parts=parts)
    log.info("part %d of %d: images %d-%d of %d", part, parts, *rows, len(dataset))
manifest = extract_features(
    model,
    dataset,
    feature_stem(snakemake.output.manifest),
    batch_size=extraction["batch_size"],
    num_workers=loader_workers(extraction["num_workers"]),
    shard_size=extraction["shard_size"] or None,
    torch_threads=snakemake.threads,
    rows=rows,
    meta=meta,
)
log.info("extracted %s", manifest.get("n", manifest))
