"""Load a pretrained model (checkpoint file or local weight cache) and save it with its FC head."""

from opnp.data import open_dataset
from opnp.io import write_json_atomic
from opnp.nets.extraction import save_fc
from opnp.nets.models import build_model, preprocessing
from opnp.nets.training import evaluate_accuracy
from opnp.pipeline.artifacts import read_json, save_model
from opnp.pipeline.runtime import setup_job, torch_device

spec = snakemake.params.spec
log = setup_job(snakemake.log[0], threads=snakemake.threads)
model = build_model(spec)
eval_transform, _, _ = preprocessing(spec)
test_set = open_dataset(read_json(snakemake.input.test), transform=eval_transform)
test_accuracy = evaluate_accuracy(model, test_set, batch_size=256, device=torch_device())
model.cpu()
log.info("ID test accuracy %.2f %%", test_accuracy)
save_model(model, spec, snakemake.output.model)
save_fc(model, snakemake.output.fc)
write_json_atomic(
    snakemake.output.summary,
    {"trained": False, "id_test_accuracy": test_accuracy, "spec": spec},
)
