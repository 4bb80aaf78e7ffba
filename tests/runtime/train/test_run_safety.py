"""Training-run safety: one trainer per run (an OS lock), a diverging run stops and says so,
unwritable places and damaged config.json files are messages, and a node named `module`
works in every command."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from PIL import Image

import graphc.runtime.train.launch as launch
import graphc.runtime.train.loop as training
from graphc.runtime.runs import rundir as runs
from graphc.runtime.runs.checkpoint import load_checkpoint
from tests.conftest import REPO, TESTS, invoke, run_dir_of, train

SPEC = TESTS / "specs" / "tiny_train.toml"
STEPS = training.steps_per_epoch(360, 32)
ROOT = REPO


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory) -> Path:
    """A one-epoch tiny_train run; tests copy it before changing it."""
    return run_dir_of(train(SPEC, "--epochs", "1", "--out", tmp_path_factory.mktemp("runs"), "--quiet"))


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


# --------------------------------------------------------------------------- one trainer per run


@pytest.mark.slow
def test_a_second_trainer_of_a_run_is_refused_by_pid_and_a_crash_leaves_no_stale_lock(one_epoch, tmp_path):
    run = copy_run(one_epoch, tmp_path)
    holder = subprocess.Popen(  # another process training the run: it holds the lock as graphc train does
        [
            sys.executable,
            "-c",
            "import sys, time; from graphc.runtime.runs.rundir import training_lock\n"
            "with training_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(120)\n",
            str(run),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = (run / "metrics.jsonl").read_bytes(), (run / "summary.json").read_bytes()
        result = train("--resume", run, "--epochs", "2", code=1)
        assert f"run {run} is being trained by pid {holder.pid}" in result.stderr
        assert ((run / "metrics.jsonl").read_bytes(), (run / "summary.json").read_bytes()) == before  # untouched
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: no clean release
        holder.wait()
    train("--resume", run, "--epochs", "2", "--quiet")  # the OS dropped the lock with the process
    assert [r["epoch"] for r in runs.read_metrics(run)] == [1, 1, 2, 2]  # no duplicated rows


def test_the_lock_is_held_while_training_and_released_after(tmp_path, monkeypatch):
    seen = []
    real = training.fit

    def fit(run, *args, **kwargs):  # while training: another trainer (another open file) is refused
        with pytest.raises(runs.RunError, match=r"is being trained by pid \d+"):
            with runs.training_lock(run.run_dir):
                pass
        seen.append((run.run_dir / runs.LOCK).read_text().strip())
        return real(run, *args, **kwargs)

    monkeypatch.setattr(launch, "fit", fit)
    run = run_dir_of(train(SPEC, "--epochs", "1", "--out", tmp_path, "--quiet"))
    assert seen == [str(os.getpid())]
    with runs.training_lock(run):  # released when the run ended
        pass


def test_the_lock_is_released_when_training_fails(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(launch, "fit", fail)
    with pytest.raises(RuntimeError, match="boom"):
        launch.train_command([SPEC], overrides=launch.Overrides(epochs=1), out=tmp_path, quiet=True)
    run = next((tmp_path / "tiny_train").iterdir())
    with runs.training_lock(run):
        pass


# --------------------------------------------------------------------------- divergence


def test_a_huge_learning_rate_diverges_exits_1_and_keeps_the_last_finite_checkpoint(tmp_path):
    result = train(SPEC, "--lr", "1e30", "--epochs", "2", "--out", tmp_path, "--quiet", code=1)
    run = next((tmp_path / "tiny_train").iterdir())
    summary = runs.read_json(run / "summary.json")
    assert summary["status"] == "diverged" and summary["epochs_completed"] == 0
    info = summary["diverged"]
    assert info["epoch"] == 1 and info["split"] == "train" and 1 <= info["step"] <= STEPS and info["lr"] == 1e30
    assert (
        f"diverged: the training loss became {info['loss']} at epoch 1, step {info['step']} of {STEPS}" in result.stderr
    )
    assert "lower learning rate" in result.stderr and "--lr 1e+29" in result.stderr
    assert load_checkpoint(run / "last.pt")["epoch"] == 0  # the initial weights: the last finite state
    assert not (run / "best.pt").exists() and runs.read_metrics(run) == []
    assert all(torch.isfinite(t).all() for t in load_checkpoint(run / "last.pt")["model"].values())


def test_a_run_diverging_in_epoch_2_keeps_epoch_1(tmp_path, monkeypatch):
    real, calls = training.train_step, []

    def step(*args, **kwargs):
        calls.append(1)
        outputs, total, parts = real(*args, **kwargs)
        if len(calls) >= STEPS + 4:  # epoch 2, step 4 onwards: the loss is NaN
            total = total * float("nan")
        return outputs, total, parts

    monkeypatch.setattr(training, "train_step", step)
    result = train(SPEC, "--epochs", "3", "--out", tmp_path, "--quiet", code=1)
    run = next((tmp_path / "tiny_train").iterdir())
    assert f"at epoch 2, step 4 of {STEPS}" in result.stderr and "last.pt keeps epoch 1" in result.stderr
    assert load_checkpoint(run / "last.pt")["epoch"] == 1 and load_checkpoint(run / "best.pt")["epoch"] == 1
    assert {r["epoch"] for r in runs.read_metrics(run)} == {1}
    summary = runs.read_json(run / "summary.json")
    assert summary["status"] == "diverged" and summary["diverged"]["step"] == 4 and summary["epochs_completed"] == 1
    assert summary["test"] is not None  # best.pt (epoch 1) is a finite model: tested as usual


# --------------------------------------------------------------------------- where runs are written


def test_out_that_is_a_file_or_under_a_file_is_a_usage_error_before_data_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "load_data", lambda *a, **k: pytest.fail("data loaded before --out was checked"))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert f"--out {a_file}: is a file, not a directory" in train(SPEC, "--out", a_file, code=2).stderr
    under = a_file / "runs"
    assert f"is under {a_file}, which is a file" in train(SPEC, "--out", under, code=2).stderr


def _read_only(monkeypatch, directory: Path) -> None:
    """Writes in ``directory`` fail as on a read-only file system (tests run as root, where chmod
    does not stop writes); graphc's writes and its write check all go through tempfile.mkstemp."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == directory.resolve():
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_read_only_out_is_a_usage_error_before_data_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "load_data", lambda *a, **k: pytest.fail("data loaded before --out was checked"))
    _read_only(monkeypatch, tmp_path)
    result = train(SPEC, "--out", tmp_path / "runs", code=2)
    assert f"cannot create run directories in {tmp_path} (Read-only file system)" in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod")
def test_read_only_out_by_permissions(tmp_path):
    tmp_path.chmod(0o500)
    try:
        assert "cannot create run directories" in train(SPEC, "--out", tmp_path, code=2).stderr
    finally:
        tmp_path.chmod(0o700)


def test_resume_of_a_run_on_a_read_only_file_system_changes_nothing(one_epoch, tmp_path, monkeypatch):
    run = copy_run(one_epoch, tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    _read_only(monkeypatch, run)
    result = train("--resume", run, "--epochs", "2", code=1)
    assert f"cannot train run {run}: its directory is not writable (Read-only file system)" in result.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_a_failed_write_during_training_is_a_message(tmp_path, monkeypatch):
    import graphc.runtime.runs.checkpoint as checkpoint

    real, writes = checkpoint.atomic_write_bytes, []

    def write(path, data):
        writes.append(path)
        if len(writes) == 4:  # after epoch 0's last.pt and epoch 1's last.pt and best.pt: epoch 2's last.pt (disk full)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", write)
    result = train(SPEC, "--epochs", "2", "--out", tmp_path, "--quiet", code=1)
    run = next((tmp_path / "tiny_train").iterdir())
    assert "cannot write the files of run" in result.stderr and "No space left on device" in result.stderr
    assert f"graphc train --resume {run}" in result.stderr
    assert load_checkpoint(run / "last.pt")["epoch"] == 1  # the previous complete file


# --------------------------------------------------------------------------- config.json


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda c: c["train"].update(epochs="x"), "train.epochs"),
        (lambda c: c["data"].update(val_fraction="lots"), "data.val_fraction"),
        (lambda c: c.update(data=5), "data"),
        (lambda c: c.update(nproc="x"), "nproc"),
        (lambda c: c.update(limit_train="x"), "limit_train"),
        (lambda c: c.update(limit_val=-3), "limit_val"),
        (lambda c: c.update(data_root=5), "data_root"),
        (lambda c: c.update(spec=["a"]), "spec"),
        (lambda c: c.update(classes={"fine": "many"}), "classes.fine"),
        (lambda c: c.update(resumed=5), "resumed"),
        (lambda c: c.update(seed=True), "seed"),
    ],
    ids=[
        "train.epochs",
        "data.val_fraction",
        "data",
        "nproc",
        "limit_train",
        "limit_val",
        "data_root",
        "spec",
        "classes",
        "resumed",
        "seed",
    ],
)
def test_a_config_json_with_wrong_types_names_the_field(one_epoch, tmp_path, change, field):
    run = copy_run(one_epoch, tmp_path)
    config = json.loads((run / "config.json").read_text())
    change(config)
    (run / "config.json").write_text(json.dumps(config))
    for command in (["eval", run], ["train", "--resume", run, "--epochs", "2"]):
        result = invoke(*command, code=1)
        assert f"field '{field}'" in result.stderr and "config.json" in result.stderr


def test_a_config_json_that_is_not_an_object(one_epoch, tmp_path):
    run = copy_run(one_epoch, tmp_path)
    (run / "config.json").write_text("[1, 2]")
    assert "not a graphc run config" in invoke("eval", run, code=1).stderr


# --------------------------------------------------------------------------- a node named `module`


def test_a_node_named_module_trains_evaluates_exports_and_predicts(tmp_path):
    spec = tmp_path / "module.toml"
    spec.write_text(
        SPEC.read_text().replace('name = "trunk"', 'name = "module"').replace('input = "trunk"', 'input = "module"')
    )
    run = run_dir_of(train(spec, "--epochs", "1", "--out", tmp_path, "--quiet"))
    assert any(k.startswith("module.") for k in load_checkpoint(run / "best.pt")["model"])
    invoke("eval", run, code=0)
    invoke("export", spec, "--onnx", tmp_path / "m.onnx", "--checkpoint", run, code=0)
    image = tmp_path / "image.png"
    Image.new("RGB", (16, 16), (200, 10, 10)).save(image)
    invoke("predict", run, image, code=0)
    invoke("predict", tmp_path / "m.onnx", image, code=0)
