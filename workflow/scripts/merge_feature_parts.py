"""The parts of a dataset extracted by several jobs, merged into one feature set."""

from opnp.features import merge_feature_parts
from opnp.pipeline.artifacts import feature_stem
from opnp.pipeline.runtime import setup_job

log = setup_job(snakemake.log[0], threads=snakemake.threads)
manifests = [path for path in snakemake.input if path.endswith(".manifest.json")]
assert len(manifests) == snakemake.params.parts, (manifests, snakemake.params.parts)
manifest = merge_feature_parts(
    [feature_stem(path) for path in manifests],
    feature_stem(snakemake.output.manifest),
    meta={
        "model": snakemake.wildcards.model,
        "dataset": snakemake.wildcards.dataset,
        "parts": snakemake.params.parts,
    },
    log=log.info,
)
log.info("%d images from %d parts", manifest["n"], len(manifests))
