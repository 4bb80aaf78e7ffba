"""The README and the docs site: the README's shape and its two commands, every console example run
(or marked not run), every TOML spec in the docs valid, the spec reference generated from the
schema, and the site built with ``mkdocs build --strict``.

The conventions (docs/contributing.md):

- a ```` ```console ```` block is run: each ``$ graphc ...`` line (``python -m graphc`` too) in a
  fresh folder per page, in page order, through the CLI in-process; the lines under a command are its
  expected output, where a line ``...`` stands for any lines and ``...`` inside a line for any text;
  a command without output lines is only checked to end with exit 0 (``$ echo $?`` right after a
  command shows its exit code instead);
- ``<!-- not run: REASON -->`` right before a fenced block keeps it from being run; every other
  shell block (``bash``, ``sh``, ``shell``) must carry it;
- ``<!-- file: NAME -->`` right before a fenced block writes its text to NAME in the page's folder
  first (a spec the commands below it read);
- ``--8<-- "FILE"`` and ``--8<-- "FILE:SECTION"`` lines are included as the site includes them;
- a ```` ```toml ```` block must be valid TOML, and one with an ``input`` node a valid spec.
"""

from __future__ import annotations

import ast
import glob
import importlib.util
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

import graphc
from graphc.cli import app
from tests.conftest import REPO, clean_exit, runner

README = REPO / "README.md"
# What the site shows: docs/ and the files at the root its pages include.
DOC_FILES = sorted(
    {README, *(REPO / "docs").rglob("*.md"), *(REPO / f for f in ("ARCHITECTURE.md", "BENCHMARKS.md", "CHANGELOG.md"))}
)
DOC_FILES = [p for p in DOC_FILES if p.exists()]

INSTALL_AND_TRAIN = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && graphc train specs/shared_reuse_coarse.toml"
)
INSTALL_AND_TEST = "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && python -m pytest -n 2"
SHELL_LANGUAGES = {"console", "bash", "sh", "shell", "shell-session", "zsh"}

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s{]*)")
MARKER = re.compile(r"^\s*<!--\s*(?P<kind>not run|file):\s*(?P<value>.*?)\s*-->\s*$")
SNIPPET = re.compile(r'^\s*-{1,}8<-{1,}\s+"(?P<path>[^"]+)"\s*$')
SECTION = re.compile(r"-{1,}8<-{1,}\s+\[\s*(?P<end>start|end)\s*:\s*(?P<name>[a-z][-_0-9a-z]*)\s*\]")


@dataclass
class Block:
    source: str  # file:line, for messages
    language: str
    text: str
    marker: tuple[str, str] | None  # ("not run", reason) or ("file", name)
    included: bool = False  # from another file, by a snippet line


def expand_snippets(name: str, text: str, depth: int = 0) -> list[tuple[str, str]]:
    """The lines of ``text`` (from file ``name``) with its snippet lines replaced by what they include
    (pymdownx.snippets, base_path '.'), each with where it comes from: ``(line, "file:number")``."""
    lines: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        found = SNIPPET.match(line)
        if not found:
            lines.append((line, f"{name}:{number}"))
            continue
        path, _, section = found["path"].partition(":")
        included = list(enumerate((REPO / path).read_text(encoding="utf-8").splitlines(), 1))
        if section:
            included = _section(included, section, path)
        if depth < 5:
            lines += expand_snippets(path, "\n".join(line for _, line in included), depth + 1)
            if section:  # the section's own line numbers
                offset = included[0][0] - 1 if included else 0
                lines[len(lines) - len(included) :] = [
                    (text_, f"{path}:{int(origin.rsplit(':', 1)[1]) + offset}")
                    for text_, origin in lines[len(lines) - len(included) :]
                ]
    return lines


def _section(lines: list[tuple[int, str]], name: str, path: str) -> list[tuple[int, str]]:
    inside, kept = False, []
    for number, line in lines:
        marker = SECTION.search(line)
        if marker and marker["name"] == name:
            inside = marker["end"] == "start"
            continue
        if inside and not SECTION.search(line):
            kept.append((number, line))
    assert kept, f'{path} has no section "{name}" (--8<-- [start:{name}] ... [end:{name}])'
    return kept


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file (snippets included), with the marker right before each."""
    name = str(path.relative_to(REPO))
    lines = expand_snippets(name, path.read_text(encoding="utf-8"))
    found, i, previous = [], 0, ""
    while i < len(lines):
        text, origin = lines[i]
        opening = FENCE.match(text)
        if not opening:
            if text.strip():
                previous = text
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        body = []
        i += 1
        while i < len(lines) and not lines[i][0].strip().startswith(fence):
            line = lines[i][0]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        marker = MARKER.match(previous)
        found.append(
            Block(
                origin,
                opening["info"].lower(),
                "\n".join(body) + "\n",
                (marker["kind"], marker["value"]) if marker else None,
                included=not origin.startswith(f"{name}:"),
            )
        )
        i, previous = i + 1, ""
    return found


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """``[(command, expected output lines)]`` of a console block."""
    result: list[tuple[str, list[str]]] = []
    continued = False
    for line in block.text.splitlines():
        if continued:
            command, expected = result[-1]
            result[-1] = (command[:-1] + " " + line.strip(), expected)
        elif line.startswith("$ "):
            result.append((line[2:].strip(), []))
        else:
            assert result, f"{block.source}: a console block starts with a '$ ' command line"
            result[-1][1].append(line.rstrip())
        continued = result[-1][0].endswith("\\") if result else False
    return [(command, _trim(expected)) for command, expected in result]


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def output_pattern(expected: list[str]) -> re.Pattern:
    """A regular expression for expected output: a line ``...`` matches any lines (none too), and
    ``...`` inside a line any text on that line."""
    parts = []
    for line in expected:
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(r"[^\n]*?".join(re.escape(piece) for piece in line.split("...")) + r"\n")
    return re.compile("".join(parts))


def normalised(output: str) -> str:
    return "\n".join(_trim([line.rstrip() for line in output.splitlines()])) + "\n"


def run_command(source: str, command: str) -> tuple[str, int]:
    """Run one ``graphc`` command line in-process: ``(output, exit code)``."""
    words = shlex.split(command, comments=True)
    shell = {"|", "||", "&&", ";", ">", ">>", "<", "&"}
    if any(w in shell or "$(" in w or "`" in w for w in words) or "=" in words[0]:
        pytest.fail(f"{source}: {command!r} needs a shell; mark the block <!-- not run: REASON -->")
    if words[:1] == ["graphc"]:
        args = words[1:]
    elif words[:3] == ["python", "-m", "graphc"]:
        args = words[3:]
    else:
        pytest.fail(f"{source}: {command!r} is not a graphc command; mark the block <!-- not run: REASON -->")
    expanded = []
    for word in args:
        matches = sorted(glob.glob(word)) if any(c in word for c in "*?[") else []
        expanded += matches or [word]
    result = runner.invoke(app, expanded)
    assert clean_exit(result) and "Traceback" not in result.output, f"{source}: {command}\n{result.output}"
    return result.output, result.exit_code


def run_console_block(block: Block) -> None:
    steps = commands(block)
    code = 0
    for n, (command, expected) in enumerate(steps):
        if command == "echo $?":
            output, code = f"{code}\n", 0
        else:
            output, code = run_command(block.source, command)
            shows_code = n + 1 < len(steps) and steps[n + 1][0] == "echo $?"
            assert shows_code or code == 0, f"{block.source}: {command} exited {code}\n{output}"
        if expected and not output_pattern(expected).fullmatch(normalised(output)):
            shown = "\n".join(expected)
            pytest.fail(
                f"{block.source}: the output of `{command}` differs from the docs.\n--- docs:\n{shown}\n--- now:\n{output}"
            )


def check_toml(block: Block) -> None:
    if SNIPPET.match(block.text.strip()):
        return
    try:
        data = tomllib.loads(block.text)
    except tomllib.TOMLDecodeError as error:
        pytest.fail(f"{block.source}: not valid TOML: {error}")
    # a whole spec must be valid; one written to a file is left to the commands that read it (it may be a
    # deliberate mistake, as on the errors page)
    written = block.marker is not None and block.marker[0] == "file"
    if not written and any(isinstance(n, dict) and n.get("kind") == "input" for n in data.get("nodes", [])):
        graphc.build_graph(graphc.parse_spec(block.text))


def _trains(path: Path) -> bool:
    return any(
        b.language == "console" and b.marker is None and re.search(r"^\$ .*graphc (train|export)\b", b.text, re.M)
        for b in blocks(path)
    )


PAGES = [
    pytest.param(p, id=str(p.relative_to(REPO)), marks=[pytest.mark.slow] if _trains(p) else []) for p in DOC_FILES
]


# --------------------------------------------------------------------------- the README


def test_the_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail into docs/"


def test_the_readme_starts_with_what_graphc_is_and_its_two_commands():
    text = README.read_text(encoding="utf-8")
    top = text.split("\n## ", 1)[0]
    first_paragraph = top.split("\n\n")[1]
    assert first_paragraph.startswith("**graphc** is a declarative graph-spec model compiler")
    # the first two code blocks, before the first section
    assert [b.text.strip() for b in blocks(README)[:2]] == [INSTALL_AND_TRAIN, INSTALL_AND_TEST]
    assert INSTALL_AND_TRAIN in top and INSTALL_AND_TEST in top
    # the second command is the test command CI runs
    assert (REPO / ".ci" / "run").read_text().strip().endswith("python -m pytest -n 2")


# --------------------------------------------------------------------------- console examples


def test_every_shell_example_is_run_or_marked_not_run():
    unmarked = []
    for path in DOC_FILES:
        for block in blocks(path):
            if block.language not in SHELL_LANGUAGES or block.marker or block.included:
                continue  # an included block is checked in its own file
            if block.language != "console" or not block.text.lstrip().startswith("$ "):
                unmarked.append(block.source)
    assert not unmarked, (
        "shell blocks that are neither a ```console block of `$ graphc ...` lines (run by this test) "
        f"nor marked <!-- not run: REASON -->: {unmarked}"
    )


@pytest.mark.parametrize("path", PAGES)
def test_the_examples_of_a_page_run_as_shown(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "specs").symlink_to(REPO / "specs")
    for block in blocks(path):
        if block.marker and block.marker[0] == "file":
            target = tmp_path / block.marker[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text)
        if block.language == "toml":
            check_toml(block)
        elif block.language == "console" and not block.marker:
            run_console_block(block)


def test_the_console_example_runner_compares_output():
    pattern = output_pattern(["ok a", "...", "wrote ... done"])
    assert pattern.fullmatch("ok a\nwrote x.svg done\n")
    assert pattern.fullmatch("ok a\nline\nline\nwrote x.svg, y.png done\n")
    assert not pattern.fullmatch("ok b\nwrote x done\n")
    assert not output_pattern(["ok a"]).fullmatch("ok a\nmore\n")


def test_the_imports_of_python_examples_resolve():
    for path in DOC_FILES:
        for block in blocks(path):
            if block.language != "python":
                continue
            for node in ast.walk(ast.parse(block.text)):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        importlib.import_module(alias.name)
                elif isinstance(node, ast.ImportFrom):
                    module = importlib.import_module(node.module)
                    for alias in node.names:
                        assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), (
                            f"{block.source}: from {node.module} import {alias.name}"
                        )


# --------------------------------------------------------------------------- the spec reference


def _hooks():
    spec = importlib.util.spec_from_file_location("graphc_docs_hooks", REPO / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_spec_reference_names_every_kind_table_and_field():
    schema = graphc.json_schema()
    page = _hooks().reference_markdown(schema)
    kinds = schema["properties"]["nodes"]["items"]["discriminator"]["mapping"]
    for kind in kinds:
        assert f'### `kind = "{kind}"`' in page, kind
    for name, model in schema["$defs"].items():
        for field, prop in model.get("properties", {}).items():
            tag = "const" in prop  # a union's tag (kind, preset, name): in the section's heading
            assert tag or f"| `{field}` |" in page, f"{name}.{field}"
    for field in schema["properties"]:
        assert f"| `{field}` |" in page, field
    assert (REPO / "docs" / "spec-reference.md").read_text().count(_hooks().MARKER) == 1


# --------------------------------------------------------------------------- the site


def test_the_site_builds_strictly(tmp_path, monkeypatch):
    pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]'")
    pytest.importorskip("material", reason="the docs extra: pip install -e '.[docs]'")
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    monkeypatch.chdir(REPO)  # snippets are read relative to the repository
    build(load_config(str(REPO / "mkdocs.yml"), strict=True, site_dir=str(tmp_path / "site")))
    assert (tmp_path / "site" / "spec-reference.html").exists()
    assert (tmp_path / "site" / "spec-schema.json").exists()
