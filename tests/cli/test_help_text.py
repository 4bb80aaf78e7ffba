"""``--help`` of every command and subcommand: no word lost to rich markup, readable value names
(cli/help.py)."""

from __future__ import annotations

import re

import pytest
import typer.main
from typer.testing import CliRunner

from graphc.cli import app

runner = CliRunner()


def command_paths(command, path=()):
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from command_paths(sub, (*path, name))


PATHS = list(command_paths(typer.main.get_command(app)))


def flat(text: str) -> str:
    """The help as one line of words: the panels' borders and the wrapping gone."""
    return " ".join(re.sub(r"[│╭╮╰╯─┃]", " ", text).split())


def help_of(path) -> str:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    return result.output


def test_every_command_is_walked():
    assert {("train",), ("bench",), ("sweep", "plan"), ("export",), ()} <= set(PATHS)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "graphc")
def test_help_loses_no_words_and_names_values_readably(path):
    shown = help_of(path)
    text = flat(shown)
    for clutter in ("( ", "<bool>", "<list[", "{spec}", "<int", "<str>", "<path>", "<float>", "<=x<="):
        assert clutter not in text, f"graphc {' '.join(path)} --help shows {clutter!r}:\n{shown}"
    # every parameter's help text is shown whole, brackets and all
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    for param in command.params:
        written = flat(getattr(param, "help", None) or "").replace("\\[", "[")
        assert written[:60] in text, f"graphc {' '.join(path)} --help lost words of {param.name}: {written!r}"


def test_bracketed_settings_are_shown_as_written():
    text = flat(help_of(("train",)))
    assert "Train through torch.compile ([train] compile = true)" in text
    assert "([train] diagnostics = true)" in text


def test_value_names():
    text = flat(help_of(("train",)))
    assert "SPEC... Spec files" in text and "Usage: graphc train [OPTIONS] [SPEC]..." in text
    for shown in ("--epochs N", "--lr X", "--data-dir DIR", "--out DIR", "--resume RUN_DIR", "--device DEVICE"):
        assert re.search(shown.replace(" ", r"\s+(-\w\s+)?"), text), shown
    assert re.search(r"--no-test\s+Skip", text) and re.search(r"--quiet\s+-q\s+No progress", text)  # flags: no name
    check = flat(help_of(("check",)))
    assert "Usage: graphc check [OPTIONS] SPEC..." in check
    assert "--format FORMAT" in flat(help_of(("report",))).replace("-o ", "")
    # a missing argument is named as the help names it
    result = runner.invoke(app, ["show"])
    assert result.exit_code == 2 and "SPEC" in result.output
