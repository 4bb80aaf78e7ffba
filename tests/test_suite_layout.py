"""The test suite's own layout: one folder per layer of the house, themes as test names (not file
prefixes), and every test that starts processes or compiles marked ``slow``.

``-m "not slow"`` is the quick loop while editing; CI runs everything.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
LAYER_FOLDERS = {"lang", "ir", "backends", "runtime", "cli"}
# Files that may sit at tests/ itself: shared helpers and the checks of the whole house.
TOP_LEVEL = {
    "conftest.py",
    "data_fixtures.py",
    "test_layers.py",
    "test_kinds.py",
    "test_docs.py",
    "test_suite_layout.py",
    "test_dependencies.py",
}
# What starts a process or a compilation in a test: a subprocess, graphc's own process options, torch.compile.
STARTS_PROCESSES = re.compile(
    r"subprocess\.|Popen\(|\"--nproc\"|\"--jobs\"|torchrun|torch\.compile\(|mp\.spawn|sys\.executable"
)


def test_tests_live_in_the_folder_of_their_layer():
    strays = sorted(p.name for p in TESTS.glob("*.py") if p.name not in TOP_LEVEL)
    assert not strays, f"move {strays} into one of tests/{{{','.join(sorted(LAYER_FOLDERS))}}}/"
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))} - {"specs"}
    assert folders <= LAYER_FOLDERS, folders - LAYER_FOLDERS


def test_no_theme_prefixes_in_file_names():
    # themes (safety, research, results, scale) are words in test names, not file prefixes
    prefixed = [
        p.relative_to(TESTS)
        for p in TESTS.rglob("test_*.py")
        if re.match(r"test_(safety|research|results|scale)_", p.name)
    ]
    assert not prefixed, prefixed


def test_file_names_are_unique_across_folders():
    # pytest imports test files by their base name (no __init__.py in the folders)
    names = [p.name for p in TESTS.rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


def _process_starters(path: Path) -> set[str]:
    """Tests of ``path`` that start a process or compile: directly or through the module's own helpers and fixtures."""
    src = path.read_text(encoding="utf-8")
    funcs = {n.name: n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef)}
    starters = {name for name, n in funcs.items() if STARTS_PROCESSES.search(ast.get_source_segment(src, n) or "")}
    grew = True
    while grew:  # a test that calls such a helper, or takes such a fixture, starts processes too
        grew = False
        for name, n in funcs.items():
            used = {x.id for x in ast.walk(n) if isinstance(x, ast.Name)} | {a.arg for a in n.args.args}
            if name not in starters and used & starters:
                starters.add(name)
                grew = True
    return {name for name in starters if name.startswith("test_")}


def _marked_slow(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module_slow = any(
        isinstance(n, ast.Assign)
        and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
        and "slow" in ast.unparse(n.value)
        for n in tree.body
    )
    return {
        n.name
        for n in tree.body
        if isinstance(n, ast.FunctionDef) and (module_slow or any("slow" in ast.unparse(d) for d in n.decorator_list))
    }


def test_every_test_that_starts_processes_or_compiles_is_marked_slow():
    unmarked = []
    for path in sorted(TESTS.rglob("test_*.py")):
        if path == Path(__file__).resolve():
            continue
        unmarked += [
            f"{path.relative_to(TESTS)}::{name}" for name in sorted(_process_starters(path) - _marked_slow(path))
        ]
    assert not unmarked, "mark these @pytest.mark.slow:\n" + "\n".join(unmarked)
