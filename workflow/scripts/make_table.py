"""One paper-style table (Markdown, LaTeX, CSV) from the aggregated Parquet results."""

import pandas as pd

from opnp.pipeline.pooled import POOLED_DRAW_NOTE, apply_pooled_draws
from opnp.pipeline.replicates import pool_replicates
from opnp.pipeline.runtime import setup_job
from opnp.report import write_table
from opnp.report.paper_tables import SMALL_SAMPLE_ATTR, build_table

log = setup_job(snakemake.log[0])
spec = snakemake.params.spec
results = pd.read_parquet(snakemake.input.results)
if "replicates" in spec:
    results = pool_replicates(results, spec["replicates"], spec["model"])
    if snakemake.input.pooled:
        # The bold rule compares methods on draws that resample what replicates share.
        results = apply_pooled_draws(results, pd.read_parquet(snakemake.input.pooled[0]))
confidence = snakemake.params.uncertainty["confidence"]
table, caption = build_table(
    spec["experiment"],
    results[results["model"] == spec["model"]],
    model=spec["model"],
    ood_sets=snakemake.params.ood_names,
    methods=snakemake.params.methods,
    confidence=confidence,
    sensitivity=snakemake.params.sensitivity,
    react_sources=snakemake.params.react_sources,
    replicate_seeds=list(spec["replicates"].values()) if "replicates" in spec else None,
    replicate_vary=spec.get("vary", "split"),
)
if snakemake.input.pooled:
    caption += " " + POOLED_DRAW_NOTE
stem = snakemake.output.md[: -len(".md")]
write_table(table, stem, caption, confidence=confidence)
log.info("wrote %s (%d rows)", stem, len(table))
if table.attrs.get(SMALL_SAMPLE_ATTR):
    log.warning("%s: %s", stem, table.attrs[SMALL_SAMPLE_ATTR])
