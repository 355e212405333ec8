"""No function in opnp/ is longer than MAX_LINES: a longer one is split into named steps.

Length: from the ``def`` line (or the first decorator) to the last line, docstring and
comments included, read from the source (ast)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "opnp"
MAX_LINES = 80


def function_lengths(source: str) -> dict[str, int]:
    """Qualified name (``Class.method``, ``outer.inner``) -> length in lines."""
    lengths = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                    lengths[name] = child.end_lineno - first + 1
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return lengths


def long_functions() -> set[tuple[str, str]]:
    return {
        (path.relative_to(PACKAGE_ROOT).as_posix(), name)
        for path in sorted(PACKAGE_ROOT.rglob("*.py"))
        for name, length in function_lengths(path.read_text()).items()
        if length > MAX_LINES
    }


def test_lengths_are_measured_per_function():
    source = "class A:\n    @staticmethod\n    def f():\n        def g():\n            pass\n\n        return 1\n"
    assert function_lengths(source) == {"A.f": 6, "A.f.g": 2}  # decorator to return


def test_no_function_is_too_long():
    found = sorted(long_functions())
    assert not found, f"functions over {MAX_LINES} lines (split them into named steps): {found}"
