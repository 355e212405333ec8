"""Unpack one folder of a local tar archive (e.g. ../shared/data's JPEG CIFAR-10) and
verify the images before any extraction starts."""

from opnp.data import dataset_manifest, extract_members
from opnp.io import write_json_atomic
from opnp.pipeline.runtime import setup_job

log = setup_job(snakemake.log[0])
spec = snakemake.params.spec
n_files = extract_members(
    spec["path"],
    spec["member"],
    snakemake.output.images,
    max_images=spec.get("max_images"),
    skip_images=spec.get("skip_images", 0),
    classes=spec.get("classes"),
    shuffle_seed=spec.get("shuffle_seed"),
)
log.info("unpacked %d files of %s:%s", n_files, spec["path"], spec["member"])
manifest = dataset_manifest(
    name=snakemake.wildcards.dataset,
    spec={**spec, "path": snakemake.output.images},
    on_bad_image=snakemake.params.on_bad_image,
)
write_json_atomic(snakemake.output.manifest, manifest)
