"""Issue 26 on the command line: a spec's relative [data] root is read from its folder, whatever the
working directory; a missing data folder names --data-dir and the spec field with its file; and
--limit-train without --limit-val validates on a share of it, said at start and recorded."""

from __future__ import annotations

import json

from data_fixtures import write_image_folder

from tests.conftest import ONE_HEAD_SPEC, TINY_SPEC, invoke, run_dir_of

# (format leaves the {root} it substitutes in: each test fills it with .format(root=...))
FOLDER_SPEC = ONE_HEAD_SPEC.format(data='dataset = "imagefolder"\nroot = "{root}"\nval_fraction = 0.25')


def words(text: str) -> str:
    return " ".join(text.split())  # however the terminal wrapped the lines


def test_relative_root_is_read_from_the_spec_folder_in_check_and_train(tmp_path, monkeypatch):
    project = tmp_path / "project"
    write_image_folder(project / "pics", ["cat", "dog"], per_class=4)
    spec = project / "folders.toml"
    spec.write_text(FOLDER_SPEC.format(root="pics"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("GRAPHC_DATA", str(tmp_path / "cache"))
    assert "8 training images" in words(invoke("check", spec, "--data").stdout)
    run_dir = run_dir_of(invoke("train", spec, "--epochs", "1", "--out", tmp_path / "runs", "--quiet", "--no-test"))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data_root"] == str(project / "pics") == config["data"]["root"]  # recorded absolute


def test_a_root_only_the_working_directory_has_works_with_a_note(tmp_path, monkeypatch):
    write_image_folder(tmp_path / "data" / "pics", ["cat", "dog"], per_class=4)
    (tmp_path / "specs").mkdir()
    spec = tmp_path / "specs" / "folders.toml"
    spec.write_text(FOLDER_SPEC.format(root="data/pics"))
    monkeypatch.chdir(tmp_path)
    result = invoke("check", spec, "--data")
    assert "8 training images" in words(result.stdout)
    assert "note: [data] root = 'data/pics' in" in words(result.stderr)
    assert "read from the working directory" in words(result.stderr)


def test_a_missing_data_folder_names_data_dir_and_the_spec_field(tmp_path, monkeypatch):
    spec = tmp_path / "folders.toml"
    spec.write_text(FOLDER_SPEC.format(root="nowhere"))
    monkeypatch.chdir(tmp_path)
    for result in (
        invoke("check", spec, "--data", code=1),
        invoke("train", spec, "--out", tmp_path / "runs", "--quiet", code=1),
    ):
        text = words(result.stderr)
        assert f"the image folder {tmp_path / 'nowhere'} does not exist" in text
        assert f"--data-dir, or [data] root in {spec}," in text
    spec.write_text(FOLDER_SPEC.replace('root = "{root}"\n', ""))
    text = words(invoke("train", spec, "--out", tmp_path / "runs", "--quiet", code=2).stderr)
    assert f"set [data] root in {spec} or pass --data-dir" in text
    cifar = tmp_path / "cifar.toml"  # CIFAR-100's own message, with the spec file added
    cifar.write_text(
        FOLDER_SPEC.format(root="nowhere").replace('"imagefolder"', '"cifar100"').replace("8, 8]", "32, 32]")
    )
    text = words(invoke("check", cifar, "--data", code=1).stderr)
    assert f"CIFAR-100 was not found in {tmp_path / 'nowhere'}" in text and f"[data] root in {cifar}" in text


def test_limit_train_alone_validates_on_a_quarter_of_it_at_least_500(tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_SPEC)  # synthetic: 5,000 images in the pool, 1,000 held out for validation
    result = invoke("train", spec, "--limit-train", "100", "--epochs", "1", "--out", tmp_path / "runs", "--quiet")
    text = words(result.stderr)
    assert "validation: at most 500 images (--limit-train 100 without --limit-val" in text
    assert "100 train / 500 val images" in text
    config = json.loads((run_dir_of(result) / "config.json").read_text())
    assert config["limit_train"] == 100 and config["limit_val"] == 500
    given = invoke(
        "train", spec, "--limit-train", "100", "--limit-val", "40", "--epochs", "1", "--out", tmp_path / "r2", "--quiet"
    )
    assert "100 train / 40 val images" in words(given.stderr) and "validation: at most" not in given.stderr
