"""The package's layers run one way: a module imports only modules of its own layer or
of a lower one, and no modules import each other in a circle.

The imports are read from the source (ast), not by importing: every ``import`` counts,
at module level, inside functions (a lazy import is still a dependency; it only defers
the cost) and under ``if TYPE_CHECKING:`` (a type-only import still ties the two
modules' designs together: the circle grid <-> grid_kernels was type-only).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "opnp"

# The one layer map: module-name prefix -> layer, lowest first. A module takes the
# layer of its longest matching prefix; top-level modules without an entry of their
# own are the numpy core. `opnp` itself (opnp/__init__.py) is the public facade: it
# re-exports from below, so no module inside the package may import it.
LAYERS = {
    "opnp.": 0,  # numpy core: scores, sensitivity, pruning, grid, metrics, bootstrap, io, ...
    "opnp.detectors": 1,  # one module per method, the registry
    "opnp.data": 2,  # images on disk, manifests, splits
    "opnp.synthetic": 2,  # a generated feature store (uses data.splits' hashing)
    "opnp.nets": 3,  # everything that imports torch
    "opnp.pipeline.results": 4,  # evaluation: result rows, selection, one method's rows
    "opnp.pipeline.selection": 4,
    "opnp.pipeline.evaluation": 4,
    "opnp.pipeline": 5,  # what the workflow's scripts call
    "opnp.report": 6,  # tables and figures
    "opnp": 7,  # the facade (exact name only)
}
LAYER_NAMES = ["core", "detectors", "data", "nets", "evaluation", "pipeline", "report", "facade"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}


def layer_of(module: str) -> int:
    if module == "opnp":
        return LAYERS["opnp"]
    prefixes = [
        prefix
        for prefix in LAYERS
        if prefix != "opnp"
        and (module == prefix or module.startswith(prefix + ".") or prefix == "opnp.")
    ]
    return LAYERS[max(prefixes, key=len)]


def imported_modules(module: str, path: Path) -> set[str]:
    """Every opnp module ``module`` imports, anywhere in its source. ``from a import b``
    counts as importing ``a.b`` when that is a module, else ``a``."""
    modules = package_modules()
    is_package = path.name == "__init__.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) + is_package - node.level]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                imported.add(submodule if submodule in modules else source)
    return {name for name in imported if name in modules and name != module}


def private_imports(module: str, path: Path) -> set[str]:
    """``source._name`` for every private name ``module`` imports from another opnp
    module (``from source import _name``); dunder names are not private."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("opnp"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.add(f"{node.module}.{alias.name}")
    return found


@functools.cache
def import_graph() -> dict[str, frozenset[str]]:
    return {
        module: frozenset(imported_modules(module, path))
        for module, path in package_modules().items()
    }


def import_cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                lowlink[node] = min(lowlink[node], lowlink[target])
            elif target in on_stack:
                lowlink[node] = min(lowlink[node], index[target])
        if lowlink[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def upward_imports(graph: dict[str, frozenset[str]]) -> set[tuple[str, str]]:
    return {
        (module, target)
        for module, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    }


def describe(edge: tuple[str, str]) -> str:
    module, target = edge
    return (
        f"{module} ({LAYER_NAMES[layer_of(module)]}) imports "
        f"{target} ({LAYER_NAMES[layer_of(target)]})"
    )


def test_the_scan_sees_the_package():
    graph = import_graph()
    assert len(graph) > 50
    # relative, `from package import module`, lazy and TYPE_CHECKING imports all resolve
    assert "opnp.grid" in graph["opnp.detectors.optimal_pruning"]
    assert "opnp.bootstrap" in graph["opnp.result_rows"]
    assert "opnp.detectors.base" in graph["opnp.detectors"]


def test_layer_map_classifies_modules():
    assert layer_of("opnp") == LAYERS["opnp"]
    assert layer_of("opnp.grid") == 0
    assert layer_of("opnp.detectors.registry") == 1
    assert layer_of("opnp.pipeline.selection") == 4
    assert layer_of("opnp.pipeline.ablations") == 5
    assert layer_of("opnp.report.render") == 6


def test_the_checks_catch_a_violation():
    graph = {"opnp.grid": frozenset({"opnp.report.render"}), "opnp.report.render": frozenset()}
    assert upward_imports(graph) == {("opnp.grid", "opnp.report.render")}
    graph = {
        "opnp.a": frozenset({"opnp.b"}),
        "opnp.b": frozenset({"opnp.a"}),
        "opnp.c": frozenset(),
    }
    assert import_cycles(graph) == [["opnp.a", "opnp.b"]]


def test_no_module_imports_a_higher_layer():
    upward = sorted(upward_imports(import_graph()))
    assert not upward, "upward imports:\n" + "\n".join(map(describe, upward))


def test_no_import_cycles():
    cycles = import_cycles(import_graph())
    assert not cycles, "modules importing each other in a circle:\n" + "\n".join(
        " <-> ".join(cycle) for cycle in cycles
    )


def test_no_private_names_imported_across_modules():
    found = sorted(
        (module, name)
        for module, path in package_modules().items()
        for name in private_imports(module, path)
    )
    assert not found, "private names imported from another module (make public or move):\n" + (
        "\n".join(f"{module} imports {name}" for module, name in found)
    )


def test_tests_mirror_the_package_folders():
    """Each sub-package of opnp/ has its test folder (tests/<name>/), and every test folder
    but the workflow's end-to-end tests (tests/workflow/) names a sub-package."""
    packages = {p.parent.name for p in PACKAGE_ROOT.glob("*/__init__.py")}
    tests = PACKAGE_ROOT.parent / "tests"
    folders = {p.parent.name for p in tests.glob("*/test_*.py")}
    assert packages <= folders, f"sub-packages without a test folder: {sorted(packages - folders)}"
    assert folders - packages <= {"workflow"}, sorted(folders - packages - {"workflow"})
