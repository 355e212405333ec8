"""Verify a local dataset folder (count, readability) and record it in a manifest."""

from opnp.data import link_dataset
from opnp.io import write_json_atomic
from opnp.pipeline.runtime import setup_job

log = setup_job(snakemake.log[0])
manifest = link_dataset(
    name=snakemake.wildcards.dataset,
    spec=snakemake.params.spec,
    on_bad_image=snakemake.params.on_bad_image,
)
log.info(
    "linked %s: %d images at %s",
    snakemake.wildcards.dataset,
    manifest["n_images"],
    manifest["root"],
)
write_json_atomic(snakemake.output.manifest, manifest)
