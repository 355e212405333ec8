"""Pooled results of one model over its replicates with cluster-bootstrap intervals
(opnp.pipeline.pooled): mean over replicates, its interval resampling the OOD classes
and ID images the replicates share, and paired intervals to the best method."""

import numpy as np
import pandas as pd

from opnp.io import atomic_write, write_parquet_atomic
from opnp.pipeline.artifacts import read_json
from opnp.pipeline.pooled import class_units, image_units, pooled_frame, seed_scores
from opnp.pipeline.runtime import setup_job
from opnp.report.labels import AVERAGE

log = setup_job(snakemake.log[0])
units = snakemake.params.units
methods = snakemake.params.methods
ood_sets = snakemake.params.ood_sets
# Inputs come in the orders the rule lists them: scores unit-major, OOD manifests
# unit-major, one pool (or whole dataset) manifest per OOD set.
score_files = iter(snakemake.input.scores)
scores = {m: [] for m in methods}
for _ in units:
    for method in methods:
        path = next(score_files)
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}
        scores[method].append(seed_scores(arrays, snakemake.params.n_seeds[method], path))
id_units = [image_units(read_json(path)) for path in snakemake.input.id_test]
pools = [read_json(path) for path in snakemake.input.ood_pools]
ood_manifests = iter(snakemake.input.ood_test)
clusters = {name: [] for name in ood_sets}
for _ in units:
    for name, pool in zip(ood_sets, pools, strict=True):
        clusters[name].append(class_units(read_json(next(ood_manifests)), pool))
frame, draws = pooled_frame(
    snakemake.wildcards.model,
    scores,
    id_units,
    clusters,
    uncertainty=snakemake.params.uncertainty,
    average=AVERAGE,
)
with atomic_write(snakemake.output.csv, "w", encoding="utf-8") as handle:
    frame.to_csv(handle, index=False, float_format="%.4f")
# The draws (percent), paired across methods: what a table's bold rule needs.
draw_rows = [
    {"method": m, "ood_set": s, **{f"{k}_resamples": v for k, v in d.items()}}
    for (m, s), d in draws.items()
]
write_parquet_atomic(
    frame.merge(pd.DataFrame(draw_rows), on=["method", "ood_set"]), snakemake.output.parquet
)
log.info(
    "%s: %d methods x %d OOD sets over %d replicates; %d draws averaged fewer replicates",
    snakemake.wildcards.model,
    len(methods),
    len(ood_sets),
    len(units),
    int(frame["n_partial"].max()),
)
