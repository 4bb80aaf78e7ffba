"""`graphc export RUN_DIR` exports a run as it trained - its own spec copy and best.pt - and a spec
that reads another data set than the checkpoint's run is refused naming both (issue 26)."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_fixtures import write_image_folder

from tests.conftest import ONE_HEAD_SPEC, invoke, run_dir_of

SPEC = ONE_HEAD_SPEC


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A run on a three-class image folder, and the folder of the test."""
    root = tmp_path_factory.mktemp("export_run_dir")
    write_image_folder(root / "pics", ["cat", "dog", "owl"], per_class=3)
    spec = root / "folders.toml"
    spec.write_text(SPEC.format(data=f'dataset = "imagefolder"\nroot = "{root / "pics"}"'))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRAPHC_DATA", str(root / "cache"))
        result = invoke("train", spec, "--epochs", "1", "--out", root / "runs", "--quiet", "--no-test")
    return run_dir_of(result), root


def test_a_run_directory_exports_with_its_own_spec_and_best(trained, monkeypatch):
    run_dir, root = trained
    monkeypatch.setenv("GRAPHC_DATA", str(root / "cache"))
    result = invoke("export", run_dir, "--onnx", root / "run.onnx")
    text = words(result.stdout)
    assert f"wrote {root / 'run.onnx'}" in text and "heads fine(3)" in text
    assert "imagefolder test" in text  # the parity check ran on the run's own images
    assert f"from {run_dir / 'best.pt'}" in text


def test_a_spec_of_another_data_set_names_both_and_the_run_directory(trained, tmp_path):
    run_dir, _ = trained
    other = tmp_path / "shared.toml"
    # as shared_conv's heads do: each declares its classes (CIFAR-100's 100)
    other.write_text(SPEC.format(data='dataset = "cifar100"').replace('task = "fine"', 'task = "fine"\nclasses = 100'))
    text = words(invoke("export", other, "--onnx", tmp_path / "y.onnx", "--checkpoint", run_dir, code=2).stderr)
    assert f"{run_dir / 'best.pt'} was trained on the imagefolder data set" in text
    assert "with classes fine 3" in text and "reads the cifar100 data set with classes fine 100" in text
    assert f"`graphc export {run_dir} --onnx OUT`" in text
    assert not (tmp_path / "y.onnx").exists()


def test_a_directory_that_is_no_run_is_a_usage_error(tmp_path):
    (tmp_path / "empty").mkdir()
    text = words(invoke("export", tmp_path / "empty", "--onnx", tmp_path / "z.onnx", code=2).stderr)
    assert "neither a spec file nor a run directory" in text
