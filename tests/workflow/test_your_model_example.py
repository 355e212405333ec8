"""config/examples/your_model.yaml (docs/your_model.md): the workflow on a user's own
checkpoint and image folders. A dry run from a directory holding a tiny tree of the
layout the config names must plan every experiment."""

from __future__ import annotations

import yaml
from PIL import Image
from workflow_helpers import REPO, jobs_per_rule, run_snakemake

EXAMPLE = REPO / "config" / "examples" / "your_model.yaml"


def make_tree(root, config) -> None:
    """A few images in every folder the config links, and the checkpoint file."""
    for spec in config["datasets"].values():
        folder = root / spec["path"]
        subfolders = ["class_a", "class_b"] if spec["format"] == "folder" else [""]
        for sub in subfolders:
            (folder / sub).mkdir(parents=True, exist_ok=True)
            for i in range(3):
                Image.new("RGB", (12, 12), (40 * i, 90, 200)).save(folder / sub / f"{i}.png")
    for model in config["models"].values():
        (root / model["checkpoint"]).write_bytes(b"placeholder: a dry run loads nothing")


def test_example_config_dry_run_on_a_tiny_tree(tmp_path):
    config = yaml.safe_load(EXAMPLE.read_text())
    for name, spec in config["datasets"].items():
        assert spec["source"] == "link" and not spec["path"].startswith("/"), name
    make_tree(tmp_path, config)
    proc = run_snakemake(tmp_path, "-n", "--quiet", "rules", configfile=EXAMPLE, timeout=300)
    counts = jobs_per_rule(proc.stdout)
    assert counts["link_dataset"] == len(config["datasets"])
    assert counts["load_model"] == 1
    # every method of the config is selected on validation and evaluated on test
    assert counts["evaluate_method"] + counts["evaluate_network_method"] == len(config["methods"])
    assert counts["make_table"] >= 5 and counts["layers"] == 1


def test_files_the_example_and_its_docs_name_exist():
    """Every tests/... or config/... path that the example config and docs/your_model.md
    name is a file of the repository (the example once named a test file that did not
    exist)."""
    import re

    named = set()
    for doc in (EXAMPLE, REPO / "docs" / "your_model.md", REPO / "README.md"):
        named |= set(
            re.findall(r"\b((?:tests|config|docs)/[\w./-]+\.(?:py|yaml|md))", doc.read_text())
        )
    assert "tests/workflow/test_your_model_example.py" in named
    missing = sorted(path for path in named if not (REPO / path).is_file())
    assert not missing, f"named but missing: {missing}"
