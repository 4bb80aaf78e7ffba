"""`graphc check --data` (and `graphc train`, which runs the same checks on the data) name the spec's
file and the line of the field a data problem is about, as every other spec error does (issue 24)."""

from __future__ import annotations

from tests.conftest import invoke

FOLDER_SPEC = """\
name = "folders"

[[nodes]]
name = "image"
kind = "input"
shape = [3, 8, 8]

[[nodes]]
name = "fine_head"
kind = "head"
input = "image"
task = "fine"
classes = 2

[data]
dataset = "imagefolder"
root = "{root}"
resize = [16, 16]
"""


def words(text: str) -> str:
    return " ".join(text.split())  # however the terminal wrapped the lines


def test_a_data_problem_names_the_file_and_line_in_check_and_train(tmp_path):
    spec = tmp_path / "folders.toml"
    spec.write_text(FOLDER_SPEC.format(root=tmp_path / "images"))
    line = FOLDER_SPEC.splitlines().index("resize = [16, 16]") + 1
    where = f"{spec}:{line}: field 'resize': [data] resize = [16, 16] but the input node's shape is [3, 8, 8]"
    assert where in words(invoke("check", spec, "--data", code=2).stderr)
    assert where in words(invoke("train", spec, "--out", tmp_path / "runs", "--quiet", code=2).stderr)
    # the input node's shape, where the data reads no such channels
    spec.write_text(
        FOLDER_SPEC.format(root=tmp_path / "images")
        .replace("resize = [16, 16]\n", "")
        .replace("[3, 8, 8]", "[2, 8, 8]")
    )
    line = FOLDER_SPEC.splitlines().index("shape = [3, 8, 8]") + 1
    assert f"{spec}:{line}: field 'shape': the input node has 2 channels" in words(
        invoke("check", spec, "--data", code=2).stderr
    )
