"""The FC head of a synthetic model (opnp.synthetic): fc.npz and its summary."""

from opnp.io import save_npz_atomic, write_json_atomic
from opnp.pipeline.runtime import setup_job
from opnp.synthetic import model_head

log = setup_job(snakemake.log[0])
spec = snakemake.params.spec
head = model_head(spec)
save_npz_atomic(snakemake.output.fc, weight=head.weight, bias=head.bias)
write_json_atomic(snakemake.output.summary, {"trained": False, "synthetic": True, "spec": spec})
log.info("synthetic head %s x %s (seed %s)", *head.weight.shape, spec["synthetic"]["seed"])
