"""The manifest of a synthetic dataset (opnp.synthetic): rows at synthetic.scale."""

from opnp.io import write_json_atomic
from opnp.pipeline.runtime import setup_job
from opnp.synthetic import synthetic_dataset_manifest

log = setup_job(snakemake.log[0])
manifest = synthetic_dataset_manifest(
    snakemake.wildcards.dataset, snakemake.params.spec, snakemake.params.scale
)
write_json_atomic(snakemake.output.manifest, manifest)
log.info("%s: %d rows (%s)", manifest["name"], manifest["n_images"], manifest["distribution"])
