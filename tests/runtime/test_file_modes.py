"""Every file graphc writes gets the mode a plain open() gives under the user's umask (0o666 & ~umask),
not the 0600 of the temporary file it is written through (graphc/files.py): a run's files, a report's,
an exported ONNX file."""

from __future__ import annotations

import os
import stat

import pytest

from tests.conftest import TESTS, invoke, run_dir_of, train

SPEC = TESTS / "specs" / "tiny_train.toml"


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_run_report_and_onnx_files_get_the_umask_mode(tmp_path, mask):
    old = os.umask(mask)
    try:
        flags = ["--epochs", "1", "--limit-train", "64", "--limit-val", "32", "--limit-test", "32", "--quiet"]
        run = run_dir_of(train(SPEC, *flags, "--out", tmp_path / "runs"))
        invoke("report", run, "-o", tmp_path / "report", "--format", "json")
        invoke("export", SPEC, "--onnx", tmp_path / "model.onnx", "--checkpoint", run, "--no-verify")
    finally:
        os.umask(old)
    written = [p for p in run.iterdir() if p.is_file() and p.name != "train.lock"]
    written += [p for p in (tmp_path / "report").iterdir() if p.is_file()] + [tmp_path / "model.onnx"]
    names = {p.name for p in written}
    assert {"config.json", "best.pt", "last.pt", "metrics.jsonl", "metrics.csv", "summary.json"} <= names
    assert {"results.json", "results.md", "model.onnx"} <= names
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in written}
    assert set(modes.values()) == {oct(0o666 & ~mask)}, modes
