"""`graphc sweep plan` lines are safe to run: each is exactly one command, whatever the names hold.

Every argument is shell-quoted, so `bash -c LINE` (with `graphc` replaced by a function that prints
its arguments) yields exactly the planned argv and runs nothing a name holds; `--json` gives the argv
lists; names and paths with control characters are refused (exit 2) with the culprit escaped.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from graphc.errors import UsageError
from graphc.files import CONTROL_CHARACTERS, control_characters
from graphc.runtime.train import sweep
from tests.conftest import TINY_SPEC, invoke

NASTY = [
    "it's $(touch PWNED) a.toml",
    "semi; touch PWNED; .toml",
    '`touch PWNED` "double" \\ back.toml',
    "--seed.toml",  # would read as a flag if the plan put it unquoted after a flag expecting a value
    "glob * ? [x] ~ {a,b} & | > < !.toml",
    "caf\u00e9 \u202e bidi.toml",  # not a control character: kept (quoted) as it is
]
PRINT_ARGS = "graphc() { printf '%s\\0' \"$@\"; }; "  # graphc's arguments, NUL-separated


@pytest.fixture
def nasty_specs(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "specs $(touch PWNED)"
    folder.mkdir()
    paths = []
    for i, name in enumerate(NASTY):  # each its own spec (one spec given twice is one run per seed)
        path = folder / name
        path.write_text(TINY_SPEC.replace('name = "tiny"', f'name = "tiny{i}"'))
        paths.append(path)
    return paths


def _bash(line: str, cwd: Path) -> list[str]:
    """What `bash -c LINE` passes to graphc, with graphc a function that only prints its arguments."""
    assert shutil.which("bash")
    done = subprocess.run(["bash", "-c", PRINT_ARGS + line], cwd=cwd, capture_output=True, check=True)
    return ["graphc", *done.stdout.decode().split("\0")[:-1]]


@pytest.mark.slow
def test_each_plan_line_is_exactly_its_argv_through_bash_and_runs_nothing(tmp_path, nasty_specs):
    out = tmp_path / "runs; touch PWNED"
    lines = invoke("sweep", "plan", *nasty_specs, "--seeds", "2", "--out", out, "--epochs", "1").stdout.splitlines()
    rows = [
        json.loads(line)
        for line in invoke(
            "sweep", "plan", *nasty_specs, "--seeds", "2", "--out", out, "--epochs", "1", "--json"
        ).stdout.splitlines()
    ]
    assert len(lines) == len(rows) == 2 * len(NASTY)  # one line per run, never more
    for line, row in zip(lines, rows):
        assert line == row["command"]
        assert row["argv"][:3] == ["graphc", "train", row["spec"]]
        assert shlex.split(line) == row["argv"]  # the shell's own splitting rules
        assert _bash(line, tmp_path) == row["argv"]  # and bash itself
        eval_line = subprocess.run(
            ["bash", "-c", PRINT_ARGS + 'eval "$1"', "bash", line], cwd=tmp_path, capture_output=True, check=True
        )
        assert ["graphc", *eval_line.stdout.decode().split("\0")[:-1]] == row["argv"]  # eval too
    assert {row["spec"] for row in rows} == {str(p) for p in nasty_specs}
    assert not list(tmp_path.rglob("PWNED"))  # nothing in a name ran


@pytest.mark.slow
def test_json_plan_is_one_object_per_line_with_an_argv_list(tmp_path, nasty_specs):
    plan = invoke("sweep", "plan", *nasty_specs, "--out", tmp_path / "out", "--json").stdout
    rows = [json.loads(line) for line in plan.splitlines()]
    assert len(rows) == len(NASTY)
    assert plan.isascii()  # non-ASCII (and the bidi control) escaped: a line cannot be reordered or split
    for row in rows:
        assert isinstance(row["argv"], list) and all(isinstance(a, str) for a in row["argv"])
        assert row["argv"][-2:] == ["--jobs", "1"]


@pytest.mark.parametrize("char", ["\n", "\r", "\x00", "\x1b", "\x7f", "\x85", "\t"])
def test_a_spec_file_name_with_a_control_character_is_refused(tmp_path, char):
    if char == "\x00":  # no file can be named so, nor can a command line hold one (click refuses it, exit 2)
        spec = f"{tmp_path}/a{char}b.toml"
        assert not invoke("sweep", "plan", spec, code=2).stdout
        with pytest.raises(UsageError, match=r"the SPEC file name '.*a\\x00b.toml' holds the control"):
            sweep.plan_sweep([spec], out=tmp_path / "out")
        return
    spec = tmp_path / f"a{char}b.toml"
    spec.write_text(TINY_SPEC)
    result = invoke("sweep", "plan", spec, "--out", tmp_path / "out", code=2)
    assert "the SPEC file name" in result.stderr and "control character" in result.stderr
    shown = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char, f"\\x{ord(char):02x}")
    assert f"a{shown}b.toml" in result.stderr  # named, escaped
    assert not result.stdout  # no plan line at all
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_out_and_other_values_with_control_characters_are_refused(tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_SPEC)
    out = invoke("sweep", "plan", spec, "--out", tmp_path / "runs\nrm -rf ~", code=2)
    assert "--out" in out.stderr and "runs\\nrm -rf ~" in out.stderr and not out.stdout
    data = invoke("sweep", "plan", spec, "--out", tmp_path / "runs", "--data-dir", "data\rx", code=2)
    assert "--data-dir 'data\\rx'" in data.stderr and not data.stdout
    tag = invoke("sweep", "plan", spec, "--out", tmp_path / "runs", "--tag", "a\nb", code=2)
    assert "--tag" in tag.stderr and "a\\nb" in tag.stderr and not tag.stdout
    # the sweep (train --jobs) plans the same way, and refuses the same names before starting anything
    jobs = invoke("train", tmp_path / "x\ny.toml", "--jobs", "1", "--out", tmp_path / "runs", code=2)
    assert "x\\ny.toml" in jobs.stderr and not (tmp_path / "runs").exists()


def test_control_characters_are_c0_del_and_c1():
    assert control_characters("a\nb\rc\x00d\x1b\x7f\x9b\u0085") == ["\n", "\r", "\x00", "\x1b", "\x7f", "\x9b", "\x85"]
    assert control_characters("café ☃ \u202e ok") == []
    assert len(CONTROL_CHARACTERS) == 32 + 1 + 32
    with pytest.raises(UsageError, match="control character"):
        sweep.refuse_control_characters("x\x0by", "--out")
