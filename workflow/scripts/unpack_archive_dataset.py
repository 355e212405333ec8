"""Unpack one folder of a local tar archive (e.g. ../shared/data's JPEG CIFAR-10), or the
images of an IDX file (format idx: Fashion-MNIST), and verify the images before any
extraction starts."""

from opnp.data import dataset_manifest, extract_idx_images, extract_members
from opnp.io import write_json_atomic
from opnp.pipeline.runtime import setup_job

log = setup_job(snakemake.log[0])
spec = snakemake.params.spec
slice_keys = {
    "max_images": spec.get("max_images"),
    "skip_images": spec.get("skip_images", 0),
    "shuffle_seed": spec.get("shuffle_seed"),
}
if spec.get("format") == "idx":
    n_files = extract_idx_images(spec["path"], snakemake.output.images, **slice_keys)
    log.info("wrote %d images of %s", n_files, spec["path"])
    unpacked = {"format": "flat"}  # one PNG per image, no class folders
else:
    n_files = extract_members(
        spec["path"],
        spec["member"],
        snakemake.output.images,
        classes=spec.get("classes"),
        **slice_keys,
    )
    log.info("unpacked %d files of %s:%s", n_files, spec["path"], spec["member"])
    unpacked = {}
manifest = dataset_manifest(
    name=snakemake.wildcards.dataset,
    spec={**spec, **unpacked, "path": snakemake.output.images},
    on_bad_image=snakemake.params.on_bad_image,
)
write_json_atomic(snakemake.output.manifest, manifest)
