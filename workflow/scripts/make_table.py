"""One paper-style table (Markdown, LaTeX, CSV) from the aggregated Parquet results."""

import pandas as pd

from opnp.pipeline.replicates import pool_replicates
from opnp.pipeline.runtime import setup_job
from opnp.report import write_table
from opnp.report.paper_tables import build_table

log = setup_job(snakemake.log[0])
spec = snakemake.params.spec
results = pd.read_parquet(snakemake.input.results)
if "replicates" in spec:
    results = pool_replicates(results, spec["replicates"], spec["model"])
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
stem = snakemake.output.md[: -len(".md")]
write_table(table, stem, caption, confidence=confidence)
log.info("wrote %s (%d rows)", stem, len(table))
