"""One seeded part of a pooled dataset (config ``replicates``): the pool's manifest plus
the rows of this part, so that extraction-free steps and network steps see the same images."""

from opnp.io import write_json_atomic
from opnp.pipeline.artifacts import read_json
from opnp.pipeline.replicates import pool_labels, split_manifest, split_rows_of
from opnp.pipeline.runtime import setup_job

log = setup_job(snakemake.log[0])
pool = read_json(snakemake.input.pool)
split = snakemake.params.split
rows = split_rows_of(
    snakemake.params.pool,
    pool_labels(pool, by=split["by"]),
    split,
    seed=snakemake.params.seed,
)[snakemake.wildcards.dataset]
manifest = split_manifest(
    pool, snakemake.wildcards.dataset, rows, replicate_seed=snakemake.params.seed, split=split
)
log.info(
    "%s: %d of the %d images of %s", manifest["name"], len(rows), pool["n_images"], pool["name"]
)
write_json_atomic(snakemake.output[0], manifest)
