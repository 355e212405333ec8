"""Network-level detectors are generic: a detector class with ``needs_network`` (the toy
tests/network_detector_plugin.py, registered by the test only) runs through the
workflow's network-method rules and through opnp.from_model without an edit to either."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from workflow_helpers import REPO, TINY, snakemake_command

from opnp.detectors import PLUGINS_VARIABLE, available_detectors, detector_class

PLUGIN = "network_detector_plugin"
TESTS = str(REPO / "tests")


@pytest.fixture
def toy_detector():
    """The toy registered for one test, then removed from the registry again (other
    tests list the built-in methods)."""
    assert "shifted_msp" not in available_detectors()
    sys.modules.pop(PLUGIN, None)
    module = importlib.import_module(PLUGIN)
    try:
        yield module
    finally:
        # The registry has no public way to forget a class (the product never needs
        # one): its dict, found through the module that defines the lookup.
        sys.modules[detector_class.__module__]._REGISTRY.pop(module.NAME, None)
        sys.modules.pop(PLUGIN, None)
    assert "shifted_msp" not in available_detectors()


def test_the_plugin_variable_registers_a_detector_in_a_fresh_process():
    code = (
        "from opnp.detectors import detector_class\n"
        "print(detector_class('shifted_msp').needs_network)\n"
    )
    env = {**os.environ, PLUGINS_VARIABLE: f" {PLUGIN} ,", "PYTHONPATH": _pythonpath()}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"
    assert "shifted_msp" not in available_detectors()  # this process is untouched


def _pythonpath() -> str:
    return os.pathsep.join(p for p in (TESTS, str(REPO), os.environ.get("PYTHONPATH")) if p)


def test_a_second_network_method_passes_the_dry_run(tmp_path):
    config = yaml.safe_load(TINY.read_text())
    config["methods"]["shifted_msp"] = {"grid": {"temperature": [1, 2]}, "fixed": {"shift": 0.5}}
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    env = {**os.environ, PLUGINS_VARIABLE: PLUGIN, "PYTHONPATH": _pythonpath()}
    cmd = snakemake_command(tmp_path, "-n", "--forceall", configfile=configfile)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    planned = _planned_outputs(proc.stdout)
    bench = config["benchmark"]
    for method in ("odin", "shifted_msp"):  # file names as for every method
        for stage in ("selection", "evaluation"):
            rule = "select_network_method" if stage == "selection" else "evaluate_network_method"
            hits = [
                r for r, outs in planned
                if any(re.fullmatch(rf"results/{bench}/{stage}/[^/]+/{method}\.parquet", o)
                       for o in outs)
            ]  # fmt: skip
            assert hits and set(hits) == {rule}, (method, stage, hits)
    feature_rules = {r for r, outs in planned if any("shifted_msp" in o for o in outs)}
    assert "select_hyperparameters" not in feature_rules
    assert "evaluate_method" not in feature_rules


def _planned_outputs(dry_run: str) -> list[tuple[str, list[str]]]:
    """(rule, output paths) of every job a ``snakemake -n`` listing plans."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry_run):
        match = re.match(r"(?:local)?rule (\w+):", block)
        out = re.search(r"^\s+output: (.*)$", block, flags=re.M)
        if match and out:
            jobs.append((match.group(1), [p.strip() for p in out.group(1).split(",")]))
    return jobs


torch = pytest.importorskip("torch")


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
    ).eval()


def _expected(model, x, temperature, shift, std):
    with torch.no_grad():
        probs = torch.softmax(model(x + shift * std) / temperature, dim=1)
    return probs.max(dim=1).values.double().numpy()


def test_a_second_network_method_through_from_model(toy_detector):
    import opnp

    assert detector_class("shifted_msp").needs_network
    model = _model()
    gen = torch.Generator().manual_seed(1)
    x_train, x_id = torch.randn(20, 3, 2, 2, generator=gen), torch.randn(16, 3, 2, 2, generator=gen)
    x_ood = 3 * torch.randn(16, 3, 2, 2, generator=gen)
    md = opnp.from_model(model, "shifted_msp", temperature=2.0, std=0.5, progress=False)
    assert md.params == {"temperature": 2.0, "shift": 0.0}  # the class's defaults filled
    assert md.needs == ()
    scores = md.fit(x_train).score(x_id)
    np.testing.assert_array_equal(scores, _expected(model, x_id, 2.0, 0.0, 0.5))
    np.testing.assert_array_equal(md.fit().score_loader([x_id[:7], x_id[7:]]), scores)

    table = md.tune(x_id, {"noise": x_ood}, grid={"shift": [0.0, 1.0]})
    assert len(table) == 2 and table["selected"].sum() == 1
    assert set(table["method"]) == {"shifted_msp"}
    chosen = table.loc[table["selected"], "params"].iloc[0]
    assert md.params["shift"] == yaml.safe_load(chosen)["shift"]
    shift = md.params["shift"]
    np.testing.assert_array_equal(md.score(x_id), _expected(model, x_id, 2.0, shift, 0.5))

    with pytest.raises(ValueError, match="shifted_msp cannot be exported"):
        md.to_module()
    with pytest.raises(ValueError, match="temperature"):
        opnp.from_model(model, "shifted_msp", temperature=0)
    with pytest.raises(ValueError, match="cannot score cached features"):
        opnp.create_detector("shifted_msp").score(np.zeros((2, 3)))
