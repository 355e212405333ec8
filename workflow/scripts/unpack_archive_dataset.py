"""Unpack one folder of a local tar archive (e.g. ../shared/data's JPEG CIFAR-10), or the
images of an IDX file (format idx: Fashion-MNIST), and verify the images before any
extraction starts."""

from opnp.data import dataset_manifest, unpack_dataset
from opnp.io import write_json_atomic
from opnp.pipeline.runtime import setup_job

log = setup_job(snakemake.log[0])
spec = snakemake.params.spec
n_files = unpack_dataset(spec, snakemake.output.images)
log.info("unpacked %d images of %s", n_files, spec["path"])
# an IDX file becomes one PNG per image, no class folders
unpacked = {"format": "flat"} if spec.get("format") == "idx" else {}
manifest = dataset_manifest(
    name=snakemake.wildcards.dataset,
    spec={**spec, **unpacked, "path": snakemake.output.images},
    on_bad_image=snakemake.params.on_bad_image,
)
write_json_atomic(snakemake.output.manifest, manifest)
