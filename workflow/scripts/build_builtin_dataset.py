"""Build one dataset of the embedded benchmark from data bundled with scikit-learn."""

from opnp.data import build_builtin_dataset
from opnp.io import write_json_atomic
from opnp.pipeline.runtime import setup_job

log = setup_job(snakemake.log[0])
manifest = build_builtin_dataset(
    name=snakemake.wildcards.dataset,
    spec=snakemake.params.spec,
    out_dir=snakemake.output.images,
    **snakemake.params.builtin,
)
log.info("built %s: %d images", snakemake.wildcards.dataset, manifest["n_images"])
write_json_atomic(snakemake.output.manifest, manifest)
