"""Stop before any selection job when sets that must be disjoint share images."""

from opnp.data import image_hashes, manifest_files
from opnp.data.splits import check_split_separation
from opnp.io import write_json_atomic
from opnp.pipeline.artifacts import read_json
from opnp.pipeline.runtime import setup_job
from opnp.synthetic import synthetic_split_report

log = setup_job(snakemake.log[0])
manifests = {
    name: read_json(path)
    for name, path in zip(snakemake.params.names, snakemake.input, strict=True)
}
if any(m.get("source") == "synthetic" for m in manifests.values()):
    # no images: distinct synthetic sets are distinct random streams
    report = synthetic_split_report(
        manifests,
        snakemake.params.roles,
        id_val_may_be_id_test=snakemake.params.id_val_may_be_id_test,
    )
else:
    report = check_split_separation(
        {name: image_hashes(manifest) for name, manifest in manifests.items()},
        snakemake.params.roles,
        id_val_may_be_id_test=snakemake.params.id_val_may_be_id_test,
        files=lambda name: manifest_files(manifests[name])[0],
    )
log.info("%d pairs of sets checked: no shared image", len(report["pairs"]))
write_json_atomic(snakemake.output[0], report)
