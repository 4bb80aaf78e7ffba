"""Every package graphc imports when a module loads is one pyproject.toml declares.

A module-level import of a package that only arrives with an extra (or as another package's
dependency in the test environment) works in the tests and fails after the README's plain
`pip install -e .`: typer >= 0.20 no longer brings click, for one. Imports inside functions (optional
features: TensorBoard, the Keras comparison) and under ``if TYPE_CHECKING:`` are not checked here.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib

from tests.conftest import REPO

SOURCES = ("graphc", "runtime", "cli")
# Distribution name -> the import name it provides, where they differ.
IMPORT_NAME = {"pillow": "PIL"}


def declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = {re.match(r"[A-Za-z0-9_.-]+", d)[0].lower() for d in project["dependencies"]}
    return {IMPORT_NAME.get(n, n.replace("-", "_")) for n in names}


def module_level_imports(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Try):  # try: import x / except ImportError: a fallback
            found.update(module_level_imports(ast.Module(body=node.body, type_ignores=[])))
    return found


def test_every_module_level_import_is_a_declared_dependency():
    allowed = declared() | set(sys.stdlib_module_names) | {"graphc", "__future__"}
    undeclared = {}
    for folder in SOURCES:
        for path in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for name in module_level_imports(tree) - allowed:
                undeclared.setdefault(name, []).append(str(path.relative_to(REPO)))
    assert not undeclared, f"imported when a module loads but not in [project] dependencies: {undeclared}"
