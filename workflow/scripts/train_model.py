"""Train a classifier on the ID training split (seeded) and save it with its FC head."""

from opnp.data import open_dataset
from opnp.io import write_json_atomic
from opnp.nets.extraction import save_fc
from opnp.nets.models import build_model, preprocessing
from opnp.nets.training import evaluate_accuracy, train_classifier
from opnp.pipeline.artifacts import read_json, save_model
from opnp.pipeline.runtime import loader_workers, setup_job, torch_device

spec = snakemake.params.spec
train_cfg = spec["train"]
log = setup_job(snakemake.log[0], threads=snakemake.threads, seed=train_cfg["seed"])
model = build_model(spec)
eval_transform, _, _ = preprocessing(spec)
train_set = open_dataset(read_json(snakemake.input.train), transform=eval_transform)
test_set = open_dataset(read_json(snakemake.input.test), transform=eval_transform)
history = train_classifier(
    model,
    train_set,
    epochs=train_cfg["epochs"],
    lr=train_cfg["lr"],
    batch_size=train_cfg["batch_size"],
    weight_decay=train_cfg["weight_decay"],
    seed=train_cfg["seed"],
    num_workers=loader_workers(train_cfg["num_workers"]),
    augment=None if train_cfg["augment"] == "none" else train_cfg["augment"],
    log=log.info,
    device=torch_device(),
)
test_accuracy = evaluate_accuracy(model, test_set, batch_size=256, device=torch_device())
model.cpu()
log.info("ID test accuracy %.2f %%", test_accuracy)
save_model(model, spec, snakemake.output.model)
save_fc(model, snakemake.output.fc)
write_json_atomic(
    snakemake.output.summary,
    {"trained": True, "id_test_accuracy": test_accuracy, "history": history, "spec": spec},
)
