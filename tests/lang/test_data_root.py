"""A relative ``[data] root`` is read from the spec file's folder (issue 26); a root that exists only
from the working directory still works, with a note; built-in specs keep theirs as written."""

from __future__ import annotations

import graphc
from graphc.lang.builtin import builtin_path
from graphc.lang.load import resolve_data_root

SPEC = """\
name = "rooted"

[[nodes]]
name = "image"
kind = "input"
shape = [3, 8, 8]

[[nodes]]
name = "fine_head"
kind = "head"
input = "image"
task = "fine"

[data]
dataset = "imagefolder"
{root}
"""


def write(folder, root_line: str):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.toml"
    path.write_text(SPEC.format(root=root_line))
    return graphc.load_spec(path)


def test_relative_root_is_read_from_the_spec_folder(tmp_path, monkeypatch):
    (tmp_path / "project" / "pics").mkdir(parents=True)
    spec = write(tmp_path / "project", 'root = "pics"')
    monkeypatch.chdir(tmp_path)  # elsewhere: the working directory has no pics/
    resolved, note = resolve_data_root(spec)
    assert resolved.data.root == str(tmp_path / "project" / "pics") and note is None
    missing = write(tmp_path / "other", 'root = "absent/folder"')  # neither exists: the spec's folder, for the message
    assert resolve_data_root(missing)[0].data.root == str(tmp_path / "other" / "absent" / "folder")


def test_a_root_found_only_from_the_working_directory_still_works_with_a_note(tmp_path, monkeypatch):
    (tmp_path / "data" / "pics").mkdir(parents=True)
    spec = write(tmp_path / "specs", 'root = "data/pics"')
    monkeypatch.chdir(tmp_path)
    resolved, note = resolve_data_root(spec)
    assert resolved.data.root == str(tmp_path / "data" / "pics")
    assert note is not None and "\n" not in note
    assert "read from the working directory" in note and str(tmp_path / "specs" / "data" / "pics") in note


def test_absolute_roots_builtin_specs_and_texts_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    absolute = write(tmp_path / "a", f'root = "{tmp_path}"')
    assert resolve_data_root(absolute) == (absolute, None)
    without = write(tmp_path / "b", "")
    assert resolve_data_root(without)[0].data.root is None
    builtin = graphc.load_spec(builtin_path("examples/cifar10_folders"))
    assert builtin.data.root == "data/cifar10"
    assert resolve_data_root(builtin) == (builtin, None)  # relative to the working directory, as before
    text = graphc.parse_spec(SPEC.format(root='root = "pics"'))  # no file: nothing to be relative to
    assert resolve_data_root(text)[0].data.root == "pics"
