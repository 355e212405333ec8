"""Reliability guarantees (issue 19; docs/reliability.md lists each with its tests):
no leaked or stale result, bad values caught before the first job, clear errors, files
others can read, resumable after the Snakemake process itself is killed.

Unit tests run in seconds; the workflow tests use tests/configs/tiny.yaml and stop at
the first jobs they need (dry runs, single targets), the long ones are marked slow.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import os
import re
import signal
import stat
import subprocess
import time

import numpy as np
import pytest
import torch
import yaml
from workflow_helpers import TINY, run_snakemake, snakemake_command

from opnp import io
from opnp.nets import architectures as A
from opnp.nets import models as M
from opnp.pipeline.config import ConfigError, check_config

# ------------------------------------------------------------------ 5. permissions


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, expected):
    """tempfile.mkstemp makes 0600 files: results renamed into place from it would be
    unreadable to others on a shared file system whatever the umask (issue 19)."""
    old = os.umask(umask)
    try:
        io.write_json_atomic(tmp_path / "a.json", {"a": 1})
        io.save_npy_atomic(tmp_path / "a.npy", np.zeros(2))
        folder = tmp_path / "made_by_mkdtemp"
        folder.mkdir(mode=0o700)
        io.apply_umask(folder)
    finally:
        os.umask(old)
    for name in ("a.json", "a.npy"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name
    assert stat.S_IMODE(folder.stat().st_mode) == expected | 0o111 & ~umask


# ------------------------------------------------------------------ 4. unclear errors


class _RunsCode:
    """A pickle payload that would run a command when unpickled without weights_only."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_unsafe_checkpoint_is_refused_with_a_safe_way_out(tmp_path):
    path = tmp_path / "unsafe.pt"
    torch.save({"state_dict": A.small_cnn().state_dict(), "extra": _RunsCode()}, path)
    with pytest.raises(ValueError, match="not a plain state dict") as info:
        M.load_checkpoint(A.small_cnn(), path)
    message = str(info.value)
    assert str(path) in message and "model.state_dict()" in message
    # PyTorch's hint would invite arbitrary code execution: never repeat it.
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_truncated_checkpoint_error_names_the_file(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save(A.small_cnn().state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt") as info:
        M.load_checkpoint(A.small_cnn(), path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------ 3. late errors


@pytest.fixture()
def tiny_config():
    return yaml.safe_load(TINY.read_text())


@pytest.mark.parametrize(
    "method, spec, key",
    [
        ("rpp", {"grid": {"percentage": [5, 100]}}, "methods.rpp.grid.percentage"),
        ("knn", {"grid": {"k": [0, 5]}}, "methods.knn.grid.k"),
        ("react", {"grid": {"percentil": [90]}}, "methods.react.grid.percentil"),
        ("odin", {"grid": {"temperature": [1, 0]}}, "methods.odin.grid.temperature"),
        ("dice+react", {"fixed": {"react_percentile": 120}}, "methods.dice+react.fixed"),
        (
            "opnp+react",
            {"grid": {"weight_low": [10], "react_percentile": [-1]}},
            "methods.opnp+react.grid.react_percentile",
        ),
    ],
)
def test_every_grid_and_fixed_value_is_checked_by_its_detector(tiny_config, method, spec, key):
    """Values the detector would refuse in its selection job (after hours of extraction)
    stop the config check, naming methods.<m>.grid.<key>."""
    bad = copy.deepcopy(tiny_config)
    bad["methods"][method] = spec
    with pytest.raises(
        ConfigError, match=f"config key {key}".replace(".", r"\.").replace("+", r"\+")
    ):
        check_config(bad)


def test_a_value_the_workflow_resolves_passes_the_value_check(tiny_config):
    """A placeholder resolved before the detector is built ("selected" ReAct percentile
    of a combination) is not judged by the constructor."""
    cfg = copy.deepcopy(tiny_config)
    cfg["methods"]["dice+react"] = {
        "grid": {"percentile": [50]},
        "fixed": {"react_percentile": "selected"},
    }
    check_config(cfg)


def test_workflow_stops_on_a_bad_grid_value_before_any_job(tmp_path, tiny_config):
    bad = copy.deepcopy(tiny_config)
    bad["methods"]["knn"]["grid"]["k"] = [0]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = run_snakemake(tmp_path, "--cores", "1", configfile=path, check=False, timeout=120)
    assert proc.returncode != 0
    assert "methods.knn.grid.k" in proc.stdout + proc.stderr
    assert not (tmp_path / "resources").exists()


def test_yaml_syntax_error_in_a_configfile_names_line_and_column(tmp_path):
    """Snakemake reads --configfile before the Snakefile and would only say "not valid
    JSON or YAML"; the workflow profile checks the files first."""
    path = tmp_path / "broken.yaml"
    path.write_text("benchmark: tiny\nseeds: [0, 1\nmodels: {}\n")
    proc = run_snakemake(tmp_path, "-n", configfile=path, check=False, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"{path}: line 3, column 7" in output, output
    assert "flow sequence started at line 2" in output, output


def _config_with_link_dataset(tmp_path, tiny_config, images):
    """tiny.yaml with its validation OOD set replaced by a linked folder of ``images``."""
    cfg = copy.deepcopy(tiny_config)
    cfg["datasets"]["linked-val"] = {"source": "link", "path": str(images), "format": "flat"}
    cfg["ood"]["val"] = ["linked-val"]
    path = tmp_path / "linked.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _write_pngs(folder, count, seed=0):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, (16, 16), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:02d}.png")


def test_a_failed_jobs_error_appears_in_snakemakes_output(tmp_path, tiny_config):
    """The error is written to the job's log; the profile prints the log on failure."""
    images = tmp_path / "images"
    _write_pngs(images, 3)
    cut = (images / "img01.png").read_bytes()
    (images / "img01.png").write_bytes(cut[: len(cut) // 2])
    configfile = _config_with_link_dataset(tmp_path, tiny_config, images)
    workdir = tmp_path / "run"
    workdir.mkdir()
    target = "resources/tiny/datasets/linked-val.json"
    proc = run_snakemake(
        workdir, "--cores", "1", target, configfile=configfile, check=False, timeout=300
    )
    assert proc.returncode != 0
    # The message raised inside the job, which only its log file holds.
    assert "unreadable or truncated image" in proc.stdout + proc.stderr


# ------------------------------------------------------------------ 2. stale results


def test_source_fingerprint_follows_the_folder(tmp_path):
    from opnp.data import source_fingerprint

    images = tmp_path / "images"
    _write_pngs(images, 3)
    spec = {"source": "link", "path": str(images), "format": "flat"}
    by_content = {**spec, "fingerprint": "content"}
    first, first_by_content = source_fingerprint(spec), source_fingerprint(by_content)
    assert source_fingerprint(spec) == first
    # Other bytes, same size and time stamp: only the content fingerprint sees it.
    target = images / "img01.png"
    stamp = target.stat()
    data = bytearray(target.read_bytes())
    data[-20] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert source_fingerprint(spec) == first
    assert source_fingerprint(by_content) != first_by_content
    # A rewritten file (new time stamp) and a removed one change the cheap fingerprint.
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))
    touched = source_fingerprint(spec)
    assert touched != first
    (images / "img00.png").unlink()
    assert source_fingerprint(spec) not in (first, touched)
    assert source_fingerprint({**spec, "path": str(tmp_path / "nope")}).startswith("unreadable")


def _planned_rules(workdir, configfile, target):
    proc = run_snakemake(workdir, "-n", target, configfile=configfile, timeout=300)
    return {
        line.split("rule ", 1)[1].rstrip(":").strip()
        for line in proc.stdout.splitlines()
        if line.startswith(("rule ", "localrule "))
    }


FEATURES_OF_LINKED = "results/tiny/features/smallcnn/linked-val.manifest.json"


@pytest.fixture(scope="module")
def loaded_and_linked(tmp_path_factory):
    """tiny.yaml with smallcnn loaded from a checkpoint and a linked validation OOD
    folder, run up to the features of that folder (both sources lie in the workdir and
    the config names them by relative paths, so a copy of the workdir is a copy of it
    all, time stamps included)."""
    workdir = tmp_path_factory.mktemp("loaded_and_linked")
    cfg = yaml.safe_load(TINY.read_text())
    torch.manual_seed(0)
    torch.save(A.small_cnn(num_classes=10, in_channels=1).state_dict(), workdir / "model.pt")
    cfg["models"]["smallcnn"] = {
        "arch": "small_cnn",
        "num_classes": 10,
        "in_channels": 1,
        "checkpoint": "model.pt",
    }
    _write_pngs(workdir / "linked", 4)
    cfg["datasets"]["linked-val"] = {"source": "link", "path": "linked", "format": "flat"}
    cfg["ood"]["val"] = ["linked-val"]
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    old_umask = os.umask(0o022)  # the jobs inherit it (checked by the permission test)
    try:
        run_snakemake(workdir, "--cores", "1", FEATURES_OF_LINKED, configfile=configfile)
    finally:
        os.umask(old_umask)
    assert not _planned_rules(workdir, configfile, FEATURES_OF_LINKED)
    return workdir


def _copy(workdir, tmp_path):
    import shutil

    copy_dir = tmp_path / "copy"
    shutil.copytree(workdir, copy_dir, symlinks=True)
    return copy_dir


@pytest.mark.slow
def test_a_checkpoint_replaced_in_place_reloads_the_model(loaded_and_linked, tmp_path):
    workdir = _copy(loaded_and_linked, tmp_path)
    torch.manual_seed(1)
    torch.save(A.small_cnn(num_classes=10, in_channels=1).state_dict(), workdir / "model.pt")
    planned = _planned_rules(workdir, workdir / "config.yaml", FEATURES_OF_LINKED)
    assert {"load_model", "extract_features"} <= planned, planned


@pytest.mark.slow
def test_a_changed_image_in_a_linked_folder_re_extracts(loaded_and_linked, tmp_path):
    workdir = _copy(loaded_and_linked, tmp_path)
    _write_pngs(tmp_path / "other", 4, seed=7)
    (workdir / "linked" / "img02.png").write_bytes((tmp_path / "other" / "img02.png").read_bytes())
    planned = _planned_rules(workdir, workdir / "config.yaml", FEATURES_OF_LINKED)
    assert {"link_dataset", "extract_features"} <= planned, planned
    assert "load_model" not in planned


# ------------------------------------------------------------------ 1. content leaks

ROLES = {
    "id_train": "train",
    "id_val": "val",
    "id_test": "test",
    "ood_val": ["ood-val"],
    "ood_test": ["ood-test"],
}


def _hashes(**sets):
    return {name.replace("_", "-"): values for name, values in sets.items()}


def test_disjoint_sets_pass_and_every_required_pair_is_checked():
    from opnp.data.splits import check_split_separation

    hashes = _hashes(train=["t1", "t2"], val=["v1"], test=["s1"], ood_val=["o1"], ood_test=["p1"])
    report = check_split_separation(hashes, ROLES)
    pairs = {(p["role_a"], p["b"]) for p in report["pairs"]}
    assert ("ood.val", "ood-test") in pairs and ("id.val", "test") in pairs
    assert ("ood.test", "train") in pairs and ("ood.val", "val") in pairs
    assert all(p["shared"] == 0 for p in report["pairs"])


@pytest.mark.parametrize(
    "sets, needle",
    [
        # a test OOD set copied under another name into ood.val
        ({"ood_val": ["p1", "p2"], "ood_test": ["p1", "p2"]}, "ood.val set 'ood-val' and ood.test"),
        # ID validation images that are ID test images
        ({"val": ["s1"], "test": ["s1"]}, "id.val set 'val' and id.test set 'test'"),
        # an ID validation image in a test OOD set
        ({"val": ["v1"], "ood_test": ["v1"]}, "id.val set 'val' and ood.test"),
        # an ID training image among the OOD images
        ({"ood_val": ["t2"]}, "ood.val set 'ood-val' and id.train set 'train'"),
        ({"ood_test": ["t1"]}, "ood.test set 'ood-test' and id.train set 'train'"),
    ],
)
def test_shared_images_stop_the_workflow_naming_sets_and_files(sets, needle):
    from opnp.data.splits import SplitLeakError, check_split_separation

    base = {
        "train": ["t1", "t2"],
        "val": ["v1"],
        "test": ["s1"],
        "ood_val": ["o1"],
        "ood_test": ["p9"],
    }
    hashes = _hashes(**{**base, **sets})
    with pytest.raises(SplitLeakError, match=re.escape(needle)) as info:
        check_split_separation(
            hashes, ROLES, files=lambda name: [f"{name}/{i}.png" for i in range(9)]
        )
    assert ".png = " in str(info.value)  # a few files by name, both sides


def test_the_papers_id_protocol_is_allowed_only_when_stated():
    from opnp.data.splits import SplitLeakError, check_split_separation

    hashes = _hashes(train=["t1"], val=["s1"], test=["s1"], ood_val=["o1"], ood_test=["p1"])
    with pytest.raises(SplitLeakError, match="id_val_may_be_id_test: true"):
        check_split_separation(hashes, ROLES)
    report = check_split_separation(hashes, ROLES, id_val_may_be_id_test=True)
    assert report["id_val_may_be_id_test"] is True
    # The exemption covers that one pair only.
    leaked = {**hashes, "ood-val": ["s1"]}
    with pytest.raises(SplitLeakError, match="ood.val set 'ood-val' and id.test"):
        check_split_separation(leaked, ROLES, id_val_may_be_id_test=True)


def test_id_val_equal_to_id_test_by_name_needs_the_config_key(tiny_config):
    cfg = copy.deepcopy(tiny_config)
    cfg["id"]["val"] = cfg["id"]["test"]
    with pytest.raises(ConfigError, match=r"selection\.id_val_may_be_id_test: true"):
        check_config(cfg)
    cfg["selection"] = {"id_val_may_be_id_test": True}
    check_config(cfg)


def test_manifests_record_the_content_hash_of_every_image(tmp_path):
    import hashlib

    from opnp.data import IMAGE_HASH_DIGITS, dataset_manifest, image_hashes, manifest_files

    images = tmp_path / "images"
    _write_pngs(images, 4)
    (images / "img02.png").write_bytes((images / "img00.png").read_bytes())
    manifest = dataset_manifest("set", {"path": str(images), "format": "flat"})
    files, _, _ = manifest_files(manifest)
    expected = [
        hashlib.sha256((images / f).read_bytes()).hexdigest()[:IMAGE_HASH_DIGITS] for f in files
    ]
    assert manifest["image_hashes"] == expected
    assert expected[0] == expected[2] != expected[1]
    # A manifest written before hashes were recorded: read from the files instead.
    legacy = {k: v for k, v in manifest.items() if k not in ("image_hashes", "image_hash")}
    assert image_hashes(legacy) == expected


@pytest.mark.slow
def test_a_copy_of_a_test_set_as_validation_set_is_refused_by_the_workflow(tmp_path, tiny_config):
    """The case the name check cannot see: ood.val holds a byte-identical copy of a test
    OOD set under another name. The check job fails before any selection job, naming both
    sets; every selection job depends on it."""
    cfg = copy.deepcopy(tiny_config)
    # a leak that also escapes the family labels (the copy claims a family of its own)
    cfg["datasets"]["photo-patches-copy"] = {**cfg["datasets"]["photo-patches"], "family": "copy"}
    cfg["ood"]["val"] = ["photo-patches-copy"]
    configfile = tmp_path / "leak.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    workdir = tmp_path / "run"
    workdir.mkdir()
    plan = run_snakemake(workdir, "-n", configfile=configfile, timeout=300).stdout
    selection_inputs = [
        line
        for line in _job_lines(plan, ("select_hyperparameters", "select_network_method"), "input:")
    ]
    assert selection_inputs and all(
        "splits_check/smallcnn.json" in line for line in selection_inputs
    )
    proc = run_snakemake(
        workdir,
        "--cores",
        "2",
        "results/tiny/splits_check/smallcnn.json",
        configfile=configfile,
        check=False,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "ood.val set 'photo-patches-copy' and ood.test set 'photo-patches' share" in output
    assert not (workdir / "results/tiny/splits_check/smallcnn.json").exists()


def _job_lines(plan: str, rules, kind: str) -> list[str]:
    """The ``kind`` lines (``input:`` ...) of the planned jobs of ``rules``."""
    lines, rule = [], None
    for line in plan.splitlines():
        match = re.match(r"^(?:local)?rule (\S+):$", line.strip())
        if match:
            rule = match.group(1)
        elif rule in rules and line.strip().startswith(kind):
            lines.append(line.strip())
    return lines


# ------------------------------------------------------------------ 6. orphans


def _wait_for_path(path, timeout: float, proc=None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        if proc is not None and proc.poll() is not None:
            return path.exists()
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_jobs_orphaned_by_a_killed_snakemake_are_rerun_on_resume(tmp_path, tiny_config):
    """SIGKILL to the Snakemake process alone (not its jobs): the running training job
    goes on as an orphan and writes its outputs, but they stay marked incomplete, so the
    next run re-does that job instead of trusting outputs nobody saw finish."""
    cfg = copy.deepcopy(tiny_config)
    cfg["models"]["smallcnn"]["train"]["epochs"] = 15  # a job still running when killed
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    workdir = tmp_path / "run"
    workdir.mkdir()
    summary = workdir / "results/tiny/models/smallcnn/summary.json"
    target = str(summary.relative_to(workdir))
    proc = subprocess.Popen(
        snakemake_command(workdir, "--cores", "2", target, configfile=configfile),
        cwd=workdir,
        start_new_session=True,  # the job processes too, so that all can be ended below
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        started = _wait_for_path(workdir / "logs/tiny/models/smallcnn.log", 600, proc)
        assert started, "the training job never started"
        os.kill(proc.pid, signal.SIGKILL)  # Snakemake only; the job becomes an orphan
        proc.wait(timeout=60)
        assert not summary.exists(), "training ended before Snakemake was killed"
        # The orphan finishes and writes its outputs without Snakemake.
        assert _wait_for_path(summary, 600), "the orphaned training job never finished"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    run_snakemake(workdir, "--unlock", configfile=configfile, timeout=120)
    plan = run_snakemake(workdir, "-n", target, configfile=configfile, timeout=300).stdout
    assert re.search(r"^(local)?rule train_model:", plan, re.M), plan
    # Why: Snakemake still holds the outputs' "incomplete" markers (base64 of the path).
    marker = base64.b64encode(target.encode()).decode()
    assert (workdir / ".snakemake" / "incomplete" / marker).exists()
    run_snakemake(workdir, "--cores", "2", target, configfile=configfile, timeout=900)
    again = run_snakemake(workdir, "-n", target, configfile=configfile, timeout=300).stdout
    assert not re.search(r"^(local)?rule ", again, re.M), again


@pytest.mark.slow
def test_workflow_outputs_are_readable_by_others_under_umask_022(loaded_and_linked):
    """Arrays, manifests, the model and a built dataset folder: 0644 / 0755, not the
    0600 / 0700 of tempfile."""
    workdir = loaded_and_linked
    files = [
        "results/tiny/features/smallcnn/linked-val.features.npy",
        "results/tiny/features/smallcnn/linked-val.manifest.json",
        "results/tiny/models/smallcnn/model.pt",
        "resources/tiny/datasets/digits-test.json",
    ]
    for name in files:
        assert stat.S_IMODE((workdir / name).stat().st_mode) == 0o644, name
    folder = workdir / "resources/tiny/datasets/digits-test"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
