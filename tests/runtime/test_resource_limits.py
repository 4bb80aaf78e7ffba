"""Memory that does not grow with classes squared, and disk and file-system faults as messages.

- The test pass and `graphc eval` keep per-class counts (O(classes)); a classes x classes confusion
  matrix is built only for `graphc eval --confusion`, and refused past CONFUSION_MAX_CLASSES. `graphc
  check` estimates the test pass's memory with the training memory's limit.
- A cache that cannot be written is "not cached" with one warning; the first run files (spec.toml,
  config.json, the epoch-0 last.pt) fail with the paragraph every later write gets; a real EFBIG
  (`ulimit -f`) is that message, not a SIGXFSZ core dump.
- Run files that cannot be read or are not UTF-8 (config.json, metrics.jsonl, spec.toml) are
  refused naming the file, on `train --resume` and `eval`.
"""

from __future__ import annotations

import errno
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from graphc.lang.spec import DataSpec
from graphc.runtime.data.load import load_dataset
from graphc.runtime.metrics import CONFUSION_MAX_CLASSES
from graphc.runtime.runs import rundir as runs
from tests.conftest import REPO, TINY_SPEC, invoke, run_dir_of
from tests.data_fixtures import write_image_folder

CLASSES = 20_000

MANY_CLASSES = f"""\
name = "many"

[[nodes]]
name = "image"
kind = "input"
shape = [1, 4, 4]

[[nodes]]
name = "trunk"
kind = "fc_block"
input = "image"
units = [8]

[[nodes]]
name = "fine_head"
kind = "head"
input = "trunk"
task = "fine"

[data]
dataset = "synthetic"
synthetic = {{ classes = {CLASSES}, coarse_classes = 2, train_size = 64, test_size = 32 }}

[train]
epochs = 1
batch_size = 32
"""

SMALL = TINY_SPEC.replace("coarse_classes = 2 }", "coarse_classes = 2, train_size = 48, test_size = 16 }")


# --------------------------------------------------------------------------- O(classes) evaluation


def _numel(args, kwargs) -> int:
    size = kwargs.get("size", args[0] if len(args) == 1 else args)
    if isinstance(size, int):
        return size
    if isinstance(size, (tuple, list, torch.Size)) and all(isinstance(n, int) for n in size):
        return math.prod(size)
    return 0


@pytest.fixture
def no_classes_squared(monkeypatch):
    """Fail any torch.zeros / empty / full / bincount that would hold CLASSES^2 values or more."""
    limit = CLASSES * CLASSES
    for name in ("zeros", "empty", "full"):
        real = getattr(torch, name)

        def checked(*args, _real=real, _name=name, **kwargs):
            n = _numel(args if _name != "full" else args[:1], kwargs)
            assert n < limit, f"torch.{_name} of {n:,} values (classes^2 = {limit:,})"
            return _real(*args, **kwargs)

        monkeypatch.setattr(torch, name, checked)
    real_bincount = torch.bincount

    def bincount(*args, **kwargs):
        assert kwargs.get("minlength", 0) < limit, "a bincount of classes^2 cells"
        return real_bincount(*args, **kwargs)

    monkeypatch.setattr(torch, "bincount", bincount)


def test_the_test_pass_and_eval_of_20000_classes_never_build_a_classes_squared_matrix(
    write_spec, tmp_path, no_classes_squared
):
    spec = write_spec(MANY_CLASSES)
    invoke("check", spec)
    run_dir = run_dir_of(invoke("train", spec, "--out", tmp_path / "runs", "--quiet"))
    summary = runs.read_json(run_dir / runs.SUMMARY)
    assert summary["status"] == "completed" and 0 <= summary["test"]["fine/balanced_acc"] <= 1
    assert summary["test"]["fine/majority_acc"] == pytest.approx(1 / 32)  # 32 test images, 32 classes present
    result = invoke("eval", run_dir, "--split", "test", "--per-class", "--json")
    assert '"per_class"' in result.stdout and "fine_19999" in result.stdout  # every class, O(classes)
    # the picture needs the matrix: refused past CONFUSION_MAX_CLASSES, before anything is written
    refused = invoke("eval", run_dir, "--confusion", tmp_path / "pictures", code=2).output
    assert f"{CLASSES:,} classes" in refused and f"at most {CONFUSION_MAX_CLASSES:,}" in refused
    assert "--per-class" in refused and not (tmp_path / "pictures").exists()


def test_check_accepts_100000_classes_and_estimates_the_test_pass(write_spec, monkeypatch):
    spec = write_spec(MANY_CLASSES.replace(f"classes = {CLASSES}", "classes = 100000"))
    assert "fine(100000)" in invoke("check", spec).stdout
    # with a limit of 1 MB, the 1.6 MB of per-class counts (16 bytes x 100,000) are refused by check
    monkeypatch.setenv("GRAPHC_MAX_ACTIVATION_BYTES", str(10**6))
    output = invoke("check", spec, code=2).output
    assert "the test pass would need" in output and "node 'fine_head'" in output and "100,000 classes" in output


# --------------------------------------------------------------------------- disk faults


def fail_fsync(monkeypatch, matches, code: int = errno.ENOSPC) -> list[str]:
    """Make ``os.fsync`` of a file whose (temporary) name ``matches`` raise OSError(code): where a full
    disk or a quota shows at the latest. Returns the names it failed."""
    real, failed = os.fsync, []

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if matches(name):
            failed.append(name)
            raise OSError(code, os.strerror(code))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return failed


@pytest.mark.parametrize(
    ("name", "code", "reason"),
    [
        ("last.pt", errno.ENOSPC, "No space left on device"),
        ("last.pt", errno.EFBIG, "File too large"),
        ("config.json", errno.EROFS, "Read-only file system"),
        ("spec.toml", errno.ENOSPC, "No space left on device"),
    ],
)
def test_the_first_run_files_fail_with_the_paragraph_of_every_write(
    write_spec, tmp_path, monkeypatch, name, code, reason
):
    failed = fail_fsync(monkeypatch, lambda path: Path(path).name.startswith(f".{name}."), code)
    output = invoke("train", write_spec(SMALL), "--epochs", "1", "--out", tmp_path / "runs", "--quiet", code=1).output
    assert failed and "cannot write the files of run" in output and reason in output and name in output
    assert "keeps its last complete version" in output and "train again" in output  # no last.pt to resume yet


def test_a_later_checkpoint_that_cannot_be_written_says_how_to_resume(write_spec, tmp_path, monkeypatch):
    seen = []

    def second_last_pt(path: str) -> bool:
        if Path(path).name.startswith(".last.pt."):
            seen.append(path)
            return len(seen) > 1  # the epoch-0 last.pt is written; epoch 1's is not
        return False

    fail_fsync(monkeypatch, second_last_pt)
    output = invoke("train", write_spec(SMALL), "--epochs", "2", "--out", tmp_path / "runs", "--quiet", code=1).output
    assert "No space left on device" in output and "graphc train --resume" in output


def test_an_image_cache_that_cannot_be_written_is_one_warning_and_training_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_DATA", str(tmp_path / "graphc-data"))
    root = tmp_path / "pics"
    write_image_folder(root, ["cat", "dog"], per_class=3)
    failed = fail_fsync(monkeypatch, lambda path: "imagefolder-cache" in path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(DataSpec(dataset="imagefolder", root=str(root), val_fraction=0.0), image_shape=(3, 8, 8))
    assert failed and len(data.train) == 6
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "could not write the image cache" in messages[0]
    assert not list((tmp_path / "graphc-data").rglob("*.pt"))  # not cached, no temporary left behind


@pytest.mark.slow
def test_a_real_file_size_limit_is_a_message_not_a_core_dump(write_spec, tmp_path):
    # `ulimit -f 64`: the run's small files fit, its checkpoints (about 1 MB) do not. The kernel sends
    # SIGXFSZ, whose default ends the process with no message; graphc ignores it, so the write fails
    # with EFBIG and is worded as every failed write.
    spec = write_spec(SMALL.replace("channels = [4]", "channels = [64]").replace('name = "trunk"', 'name = "trunk"'))
    big = spec.read_text().replace(
        '[[nodes]]\nname = "fine_head"',
        '[[nodes]]\nname = "wide"\nkind = "fc_block"\ninput = "trunk"\nunits = [512]\n\n[[nodes]]\nname = "fine_head"',
    )
    spec.write_text(big.replace('input = "trunk"\ntask', 'input = "wide"\ntask'))

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    process = subprocess.run(
        [sys.executable, "-m", "graphc", "train", str(spec), "--epochs", "1", "--out", str(tmp_path / "runs"), "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit_file_size,
    )
    assert process.returncode == 1, process.stderr
    assert process.returncode != -signal.SIGXFSZ
    assert "File too large" in process.stderr and "last.pt" in process.stderr
    assert "Traceback" not in process.stderr


# --------------------------------------------------------------------------- unreadable run files


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    spec = root / "small.toml"
    spec.write_text(SMALL)
    return run_dir_of(invoke("train", spec, "--epochs", "1", "--out", root / "runs", "--quiet"))


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


@pytest.mark.parametrize("command", ["resume", "eval"])
def test_a_config_json_that_is_not_utf8_is_refused_naming_it(run_copy, command):
    (run_copy / runs.CONFIG).write_bytes(b'{"spec": "\xff\xfe"}\n')
    args = ["train", "--resume", run_copy, "--epochs", "2"] if command == "resume" else ["eval", run_copy]
    output = invoke(*args, code=1).output
    assert f"{run_copy / runs.CONFIG}: not UTF-8" in output.replace("\n", "")


def test_a_metrics_file_that_is_not_utf8_is_refused_on_resume(run_copy):
    (run_copy / runs.METRICS_JSONL).write_bytes(b'{"epoch": 1, "split": "train", "loss": 1.0}\n\xff\n')
    output = invoke("train", "--resume", run_copy, "--epochs", "2", code=1).output
    assert "metrics.jsonl: not UTF-8" in output.replace("\n", "")


def test_a_binary_spec_toml_in_a_run_is_refused_by_eval(run_copy):
    (run_copy / runs.SPEC_COPY).write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xd8")
    output = invoke("eval", run_copy, code=1).output
    assert "spec.toml: not UTF-8" in output.replace("\n", "")


def test_an_unreadable_config_json_is_refused_naming_it(run_copy, monkeypatch):
    real = Path.read_text

    def read_text(self, *args, **kwargs):
        if self.name == runs.CONFIG:  # what chmod 000 gives a user who is not root (the tests run as root)
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    for args in (["eval", run_copy], ["train", "--resume", run_copy, "--epochs", "2"]):
        output = invoke(*args, code=1).output
        assert "config.json: cannot be read (Permission denied)" in output.replace("\n", "")
