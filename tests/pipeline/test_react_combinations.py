"""ReAct combinations (dice+react, opnp+react, opp+react) clip at ReAct's own
validation-selected percentile unless the config fixes or searches it (issue 15, item 1)."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import yaml
from snakemake.utils import validate
from workflow_helpers import REPO

from opnp.detectors import methods_where
from opnp.pipeline.config import ConfigError, check_config
from opnp.pipeline.selection import (
    mark_selected,
    react_percentile_source,
    resolve_react_percentile,
)

SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")


def load(path):
    with open(path) as handle:
        return yaml.safe_load(handle)


@pytest.fixture()
def config():
    return load(REPO / "config" / "config.yaml")


@pytest.mark.parametrize(
    "path", sorted(p.relative_to(REPO).as_posix() for p in (REPO / "config").glob("*.yaml"))
)
def test_every_shipped_config_clips_combinations_at_reacts_selection(path):
    cfg = load(REPO / path)
    validate(cfg, schema=SCHEMA)
    check_config(cfg)
    combos = [m for m in cfg["methods"] if m in methods_where("clips_at_react")]
    assert combos, f"{path} configures no ReAct combination"
    for method in combos:
        assert react_percentile_source(method, cfg["methods"][method]) == "selected", method


def test_source_of_the_react_percentile():
    assert react_percentile_source("opnp+react", {}) == "selected"
    assert react_percentile_source("opnp+react", {"fixed": {"react_percentile": "selected"}}) == (
        "selected"
    )
    assert react_percentile_source("dice+react", {"fixed": {"react_percentile": 90}}) == "fixed"
    assert react_percentile_source("opp+react", {"grid": {"react_percentile": [80, 90]}}) == (
        "grid"
    )
    assert react_percentile_source("opnp", {}) is None


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda c: c["methods"].pop("react"), r"methods\.dice\+react.*'react' is not under"),
        (
            lambda c: c["methods"]["opnp+react"]["fixed"].update(react_percentile="best"),
            r"methods\.opnp\+react\.fixed\.react_percentile: 'best'",
        ),
        (
            lambda c: c["methods"]["dice+react"]["fixed"].update(react_percentile=120),
            r"methods\.dice\+react\.fixed\.react_percentile: 120",
        ),
        (
            lambda c: c["methods"]["opnp+react"].update(
                fixed={}, grid={"react_percentile": ["selected", 90]}
            ),
            r"methods\.opnp\+react\.grid\.react_percentile: 'selected' is a fixed value",
        ),
        (
            lambda c: c["methods"]["opnp"].update(fixed={"react_percentile": 90}),
            r"methods\.opnp\.fixed\.react_percentile: 'opnp' does not clip",
        ),
    ],
)
def test_config_checks_reject(config, mutate, needle):
    mutate(config)
    with pytest.raises(ConfigError, match=needle):
        check_config(config)


def test_fixed_or_jointly_searched_percentiles_are_still_accepted(config):
    config["methods"]["opnp+react"]["fixed"] = {"react_percentile": 90}
    config["methods"]["dice+react"] = {"grid": {"percentile": [50], "react_percentile": [80, 90]}}
    del config["methods"]["react"]
    check_config(copy.deepcopy(config))


def _react_selection(chosen_percentile):
    rows = [
        {"params": f'{{"percentile": {p}}}', "split": "val", "ood_set": "o", "fpr95": fpr,
         "auroc": 90.0}
        for p, fpr in ((80, 30.0 if chosen_percentile == 80 else 40.0),
                       (90, 30.0 if chosen_percentile == 90 else 40.0))
    ]  # fmt: skip
    return mark_selected(pd.DataFrame(rows))


@pytest.mark.parametrize("chosen", [80, 90])
def test_resolve_puts_reacts_selected_percentile_in_fixed(chosen):
    settings = {"grid": {"weight_low": [0, 10]}, "fixed": {"react_percentile": "selected"}}
    resolved = resolve_react_percentile("opnp+react", settings, _react_selection(chosen))
    assert resolved == {"grid": {"weight_low": [0, 10]}, "fixed": {"react_percentile": chosen}}
    absent = resolve_react_percentile(
        "dice+react", {"grid": {}, "fixed": {}}, _react_selection(chosen)
    )
    assert absent["fixed"] == {"react_percentile": chosen}
    fixed = {"grid": {}, "fixed": {"react_percentile": 95}}
    assert resolve_react_percentile("opnp+react", fixed, _react_selection(chosen)) == fixed
    assert resolve_react_percentile("opnp", {"grid": {}, "fixed": {}}) == {"grid": {}, "fixed": {}}
    with pytest.raises(ValueError, match="pass ReAct's selection table"):
        resolve_react_percentile("opnp+react", settings, None)
