"""The core commands: check, show, schema, --version, --help; exit codes and no tracebacks."""

from __future__ import annotations

import json

from typer.testing import CliRunner

import graphc
from graphc.cli import app
from tests.conftest import TINY_SPEC, clean_exit

runner = CliRunner()
SPECS = ["independent", "shared_conv", "reuse_coarse", "reuse_fine", "shared_reuse_coarse", "shared_reuse_fine"]


def test_check_all_reference_specs():
    result = runner.invoke(app, ["check", *(f"specs/{s}.toml" for s in SPECS)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 6
    assert "shared_conv, heads fine(100), coarse(20), 18,477,944 parameters" in result.output


def test_check_reports_each_invalid_spec_and_exits_2(write_spec):
    good = write_spec(TINY_SPEC, "good")
    bad = write_spec(TINY_SPEC.replace('input = "trunk"', 'input = "trnk"', 1), "bad")
    result = runner.invoke(app, ["check", str(good), str(bad)])
    assert result.exit_code == 2
    assert "ok" in result.stdout and "good.toml" in result.stdout
    assert "reads 'trnk'" in result.stderr and "did you mean 'trunk'" in result.stderr
    assert clean_exit(result)
    assert not isinstance(result.exception, Exception)  # CliRunner keeps an uncaught one here, not in output


def test_check_missing_and_empty_files(tmp_path):
    (tmp_path / "empty.toml").write_text("")
    result = runner.invoke(app, ["check", str(tmp_path / "absent.toml"), str(tmp_path / "empty.toml")])
    assert result.exit_code == 2
    assert "no such file" in result.stderr and "the file is empty" in result.stderr


def test_show_json_matches_the_ir():
    result = runner.invoke(app, ["show", "specs/shared_reuse_fine.toml", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    graph = graphc.build_graph(graphc.load_spec("specs/shared_reuse_fine.toml"))
    assert data["total_params"] == graph.total_params and data["tasks"] == ["fine", "coarse"]
    assert [n["name"] for n in data["nodes"]] == [n.name for n in graph]
    trunk = next(n for n in data["nodes"] if n["name"] == "trunk_block2")
    assert trunk["shape"] == [128, 8, 8] and trunk["hard_shared"] and trunk["heads"] == ["coarse", "fine"]
    assert data["hard_shared_params"] == 297472


def test_show_table_and_code():
    table = runner.invoke(app, ["show", "specs/shared_conv.toml"])
    assert table.exit_code == 0
    assert "trunk_block2" in table.stdout and "128x8x8" in table.stdout and "8,917,504" in table.stdout
    assert "hard-shared: 297,472 (1.6%)" in table.stdout
    code = runner.invoke(app, ["show", "specs/shared_conv.toml", "--code"])
    assert code.exit_code == 0 and code.stdout.startswith("def forward(self, image)")


def test_show_invalid_spec_exits_2_without_traceback(write_spec):
    path = write_spec(TINY_SPEC.replace('kind = "conv_block"', 'kind = "conv"'))
    result = runner.invoke(app, ["show", str(path)])
    assert result.exit_code == 2
    assert "unknown node kind 'conv'" in result.stderr and clean_exit(result)
    assert not isinstance(result.exception, Exception)


def test_schema_is_the_pydantic_schema():
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == graphc.json_schema()


def test_version_and_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"graphc {graphc.__version__}"
    for command in ([], ["check"], ["show"], ["schema"]):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.stdout


def test_show_prints_a_description_with_brackets_literally(write_spec):
    path = write_spec(TINY_SPEC.replace('name = "tiny"', 'name = "tiny"\ndescription = "closes [/] and [bold]opens"'))
    result = runner.invoke(app, ["show", str(path)])
    assert result.exit_code == 0, result.output
    assert "tiny: closes [/] and [bold]opens" in result.stdout


# x feeds the fine and coarse heads directly (hard sharing) and the size head only through
# fine_head's logits (reuse): show must say both.
SHARED_AND_REUSED = """\
[[nodes]]
name = "image"
kind = "input"
shape = [3, 4, 4]

[[nodes]]
name = "x"
kind = "fc_block"
input = "image"
units = [6]

[[nodes]]
name = "fine_head"
kind = "head"
input = "x"
task = "fine"

[[nodes]]
name = "coarse_head"
kind = "head"
input = "x"
task = "coarse"

[[nodes]]
name = "y"
kind = "concat"
inputs = ["image", "fine_head"]

[[nodes]]
name = "size_head"
kind = "head"
input = "y"
task = "size"

[data]
dataset = "imagefolder"
hierarchy = { coarse = { a = ["p", "q"], b = ["r", "s"] }, size = { big = ["p", "r"], small = ["q", "s"] } }
"""


def test_show_says_when_a_node_is_both_shared_and_reused(write_spec):
    result = runner.invoke(app, ["show", str(write_spec(SHARED_AND_REUSED))])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if line.startswith("│ x "))
    assert "shared, reused by size" in row


def test_check_data_dir_without_data_is_a_usage_error(write_spec, tmp_path):
    # --data-dir only tells --data where to look: alone it would skip the check it seems to ask for.
    path = write_spec(TINY_SPEC)
    result = runner.invoke(app, ["check", str(path), "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and clean_exit(result) and "Traceback" not in result.output
    assert "add --data" in " ".join(result.output.split())
