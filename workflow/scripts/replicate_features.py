"""A replicate unit's features of one dataset: rows of its model's extraction (no network)."""

import numpy as np

from opnp.features import select_feature_rows
from opnp.pipeline.artifacts import feature_stem, read_json
from opnp.pipeline.runtime import setup_job

log = setup_job(snakemake.log[0])
source = read_json(snakemake.input.source)
if "split" in snakemake.input.keys():
    rows = read_json(snakemake.input.split)["rows"]
else:
    rows = np.arange(source["n"])
manifest = select_feature_rows(
    feature_stem(snakemake.input.source),
    rows,
    feature_stem(snakemake.output.manifest),
    meta={"model": snakemake.wildcards.model, "dataset": snakemake.wildcards.dataset},
)
log.info(
    "%s: %d of %d rows of %s", manifest["dataset"], manifest["n"], source["n"], source["dataset"]
)
