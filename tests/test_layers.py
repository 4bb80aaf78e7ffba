"""The house's rules, read from the source: the compiler never imports the runtime or the command
line, every module imports only from its own layer or below, no two files import each other in a
circle, and the only top-level import name installed is ``graphc``.

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
# The repository's top-level folders and the import names they are installed under (pyproject.toml's
# [tool.setuptools.package-dir]): one folder per layer of the house, one import name, graphc.
PACKAGES = {"graphc": "graphc", "runtime": "graphc.runtime", "cli": "graphc.cli"}

# Layers, bottom up. A module may import modules of its own layer number or lower.
LAYERS = {
    "graphc.errors": 0,
    "graphc.files": 0,
    "graphc.lang": 1,
    "graphc.ir": 2,
    "graphc.backends": 3,
    "graphc": 4,  # the package itself: the public API (load_spec, build_graph, compile_graph, ...)
    "graphc.runtime": 5,
    "graphc.runtime.device": 5,
    "graphc.runtime.allocator": 5,
    "graphc.runtime.data": 5,
    "graphc.runtime.runs": 6,
    "graphc.runtime.metrics": 6,
    "graphc.runtime.scoring": 6,  # the evaluation pass (a model's loss and metrics on a split)
    "graphc.runtime.evaluate": 7,
    "graphc.runtime.report": 7,
    "graphc.runtime.train": 8,
    "graphc.runtime.export": 8,
    "graphc.runtime.predict": 9,
    "graphc.runtime.bench": 9,  # graphc bench: measures training (graphc.runtime.train) and inference
    "graphc.runtime.branching": 9,  # graphc branch: trains and ranks a family through the sweep (layer 8)
    "graphc.cli": 10,
    "graphc.__main__": 10,
}
# The compiler: nothing in it may import the runtime or the command line.
COMPILER = ("graphc.errors", "graphc.files", "graphc.lang", "graphc.ir", "graphc.backends")


def module_name(path: Path) -> str:
    folder, *parts = path.relative_to(ROOT).with_suffix("").parts
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGES[folder], *parts])


def modules() -> dict[str, Path]:
    return {module_name(p): p for folder in PACKAGES for p in sorted((ROOT / folder).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports (``from a import b`` counts as a.b when that is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m in known}


def layer_of(name: str) -> tuple[str, int]:
    key = max((k for k in LAYERS if name == k or name.startswith(k + ".")), key=len)
    return key, LAYERS[key]


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    found = modules()
    g = nx.DiGraph()
    g.add_nodes_from(found)
    for name, path in found.items():
        g.add_edges_from((name, target) for target in imports_of(name, path, set(found)) if target != name)
    return g


def test_every_module_has_a_layer(graph):
    for name in graph:
        assert any(name == k or name.startswith(k + ".") for k in LAYERS), (
            f"{name} belongs to no layer; add it to LAYERS"
        )


def is_compiler(name: str) -> bool:
    return name == "graphc" or any(name == c or name.startswith(c + ".") for c in COMPILER)


def test_the_compiler_never_imports_the_runtime_or_the_command_line(graph):
    offenders = [f"{a} imports {b}" for a, b in graph.edges if is_compiler(a) and not is_compiler(b)]
    assert not offenders, offenders


def test_imports_go_down_the_layers(graph):
    offenders = []
    for a, b in graph.edges:
        (unit_a, la), (unit_b, lb) = layer_of(a), layer_of(b)
        if lb > la:
            offenders.append(f"{a} (layer {la}, {unit_a}) imports {b} (layer {lb}, {unit_b})")
    assert not offenders, "\n".join(offenders)


def test_training_never_imports_graphc_eval(graph):
    """Training scores its model with the evaluation pass (graphc.runtime.scoring) and reads run
    directories through graphc.runtime.runs; graphc eval (graphc.runtime.evaluate) is a command of
    its own, on the same layer as the report, which training does not need, directly or not."""
    train = [name for name in graph if name == "graphc.runtime.train" or name.startswith("graphc.runtime.train.")]
    offenders = [
        f"{name} reaches graphc.runtime.evaluate"
        for name in train
        if nx.has_path(graph, name, "graphc.runtime.evaluate")
    ]
    assert not offenders, offenders


def test_backends_do_not_import_each_other(graph):
    def backend(name: str) -> str | None:
        parts = name.split(".")
        return parts[2] if len(parts) > 2 and parts[:2] == ["graphc", "backends"] else None

    offenders = [f"{a} imports {b}" for a, b in graph.edges if backend(a) and backend(b) and backend(a) != backend(b)]
    assert not offenders, offenders


def test_no_import_circles_between_files(graph):
    # a package's __init__ re-exporting its own modules is not a circle of files
    files = graph.copy()
    files.remove_edges_from([(a, b) for a, b in graph.edges if b.startswith(a + ".")])
    cycles = list(nx.simple_cycles(files))
    assert not cycles, [" -> ".join([*c, c[0]]) for c in cycles]


def test_the_rules_see_imports_inside_functions():
    """The checker itself: a lazy import inside a function is found, relative imports are resolved."""
    found = modules()
    assert "graphc.backends.pytorch.compile" in imports_of("graphc", found["graphc"], set(found))
    assert "graphc.runtime.export" in imports_of("graphc.cli.commands", found["graphc.cli.commands"], set(found))


def test_every_package_folder_says_what_it_holds_and_may_import():
    for folder in PACKAGES:
        for init in (ROOT / folder).rglob("__init__.py"):
            doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
            assert doc, f"{init.relative_to(ROOT)} has no docstring"
            if init.parent != ROOT / folder:
                assert "import" in doc.lower(), f"{init.relative_to(ROOT)}: say what the folder may import"
