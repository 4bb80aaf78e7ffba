"""SIGTERM and SIGHUP stop training as Ctrl-C does (a safe point, status interrupted, the resume
command, exit 143 / 129; a sweep passes them on; an ignored SIGHUP stays ignored), and one run per
spec, seed and variant trains at a time across processes (the identity lock: a second sweep skips
the run, a second `graphc train` is refused)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import graphc.runtime.train.loop as training
from graphc.runtime.runs import rundir as runs
from graphc.runtime.runs.checkpoint import load_checkpoint
from graphc.runtime.train import run_lock, signals
from tests.conftest import REPO, TINY_SPEC, invoke, run_dir_of

SMALL = TINY_SPEC.replace("coarse_classes = 2 }", "coarse_classes = 2, train_size = 64, test_size = 16 }")


@pytest.fixture
def spec(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(SMALL)
    return path


# --------------------------------------------------------------------------- in this process


def test_a_stop_signal_during_an_epochs_files_waits_for_them_then_stops():
    before = signal.getsignal(signal.SIGTERM)
    written = []
    with signals.stop_signals():
        with pytest.raises(signals.Terminated) as raised:
            with training.deferred_interrupt():
                os.kill(os.getpid(), signal.SIGTERM)
                written.append("last.pt")  # the block runs to its end
        assert written == ["last.pt"]
        assert raised.value.signum == signal.SIGTERM and raised.value.exit_code == 143
        assert isinstance(raised.value, KeyboardInterrupt)  # everything that handles Ctrl-C handles it
    assert signal.getsignal(signal.SIGTERM) is before  # restored after training


def test_an_ignored_sighup_stays_ignored():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup starts a command
    try:
        with signals.stop_signals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
            with training.deferred_interrupt():
                os.kill(os.getpid(), signal.SIGHUP)  # ignored: nothing is raised
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_an_ignored_sigint_stays_ignored_while_an_epochs_files_are_written():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell starts a background job
    try:
        with training.deferred_interrupt():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)  # ignored: nothing is raised after the block
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_stop_signal_mid_epoch_saves_interrupted_and_resumes(spec, tmp_path, monkeypatch, signum, code):
    real, calls = training.train_step, []
    handlers_before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # in epoch 2 (one step per epoch of 51 images in batches of 64)
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_step", step)
    result = invoke("train", spec, "--epochs", "50", "--out", tmp_path / "runs", "--quiet", code=code)
    run_dir = run_dir_of(result)
    summary = runs.read_json(run_dir / runs.SUMMARY)
    assert summary["status"] == "interrupted" and summary["epochs_completed"] == 2
    assert load_checkpoint(run_dir / runs.LAST)["epoch"] == 2
    assert f"graphc train --resume {run_dir}" in result.stderr
    monkeypatch.setattr(training, "train_step", real)
    invoke("train", "--resume", run_dir, "--epochs", "3", "--quiet")
    assert runs.read_json(run_dir / runs.SUMMARY)["status"] == "completed"
    assert {s: signal.getsignal(s) for s in handlers_before} == handlers_before  # training restored them


@pytest.mark.slow  # (its sweep starts no process: the run is held)
def test_a_second_train_of_a_run_another_process_trains_is_refused(spec, tmp_path):
    from graphc.lang.load import load_spec
    from graphc.runtime.train.launch import Overrides, apply_overrides

    out = tmp_path / "runs"
    flags = Overrides(epochs=1)  # the run `graphc train SPEC --epochs 1` makes (seed 0, the spec's)
    variant = run_lock.run_variant(apply_overrides(load_spec(spec), flags, 0), flags)
    held = run_lock.try_lock(run_lock.lock_path(out, "tiny", run_lock.identity_key(variant, 0)))
    try:
        output = invoke("train", spec, "--epochs", "1", "--out", out, "--quiet", code=1).output
        assert f"pid {os.getpid()}" in output and "seed 0" in output and "two run folders" in output
        assert not runs.find_runs([out])
        # another seed is another run: not held
        invoke("train", spec, "--seed", "1", "--epochs", "1", "--out", out, "--quiet", "--no-test")
        # a sweep skips the held run with a message (exit 0), starting nothing
        swept = invoke("train", spec, "--epochs", "1", "--out", out, "--jobs", "1")
        assert "another graphc process" in swept.output and "skipped" in swept.output
        assert len(runs.find_runs([out])) == 1
    finally:
        held.release()
    run_dir_of(invoke("train", spec, "--epochs", "1", "--out", out, "--quiet", "--no-test"))  # free again


# --------------------------------------------------------------------------- real processes


def graphc_train(*args, **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-m", "graphc", "train", *map(str, args)]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for_rows(out: Path, runs_expected: int = 1, timeout: float = 120) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = runs.find_runs([out]) if out.is_dir() else []
        if len(found) == runs_expected and all(runs.read_metrics(p) for p in found):
            return found
        time.sleep(0.3)
    raise AssertionError(f"no metrics rows under {out} within {timeout} s")


def ended(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    try:
        _, stderr = process.communicate(timeout=timeout)
    finally:
        process.kill()  # (a no-op once it has ended) never leave a 5000-epoch run behind
    return process.returncode, stderr


# SIGHUP's exit code and summary are checked in-process above; a real process gets SIGTERM, what
# `kill`, SLURM preemption and `docker stop` send.
@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143)])
def test_sigterm_and_sighup_stop_a_real_run_which_then_resumes(spec, tmp_path, signum, code):
    out = tmp_path / "runs"
    process = graphc_train(spec, "--epochs", "5000", "--out", out, "--no-test", "--quiet")
    (run_dir,) = wait_for_rows(out)
    process.send_signal(signum)
    returncode, stderr = ended(process)
    assert returncode == code, stderr
    assert "Traceback" not in stderr and f"graphc train --resume {run_dir}" in stderr
    summary = runs.read_json(run_dir / runs.SUMMARY)
    assert summary["status"] == "interrupted" and 1 <= summary["epochs_completed"] < 5000
    done = summary["epochs_completed"]
    assert load_checkpoint(run_dir / runs.LAST)["epoch"] == done
    invoke("train", "--resume", run_dir, "--epochs", done + 1, "--quiet")
    assert runs.read_json(run_dir / runs.SUMMARY)["status"] == "completed"


@pytest.mark.slow
def test_a_run_started_with_sighup_ignored_trains_on_after_a_hangup(spec, tmp_path):
    out = tmp_path / "runs"
    process = graphc_train(
        spec, "--epochs", "5000", "--out", out, "--no-test", "--quiet",
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),  # nohup graphc train ...
    )  # fmt: skip
    (run_dir,) = wait_for_rows(out)
    process.send_signal(signal.SIGHUP)
    epochs = len(runs.read_metrics(run_dir))
    deadline = time.monotonic() + 60
    while len(runs.read_metrics(run_dir)) <= epochs + 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert process.poll() is None  # still training
    process.send_signal(signal.SIGTERM)
    returncode, stderr = ended(process)
    assert returncode == 143, stderr
    assert runs.read_json(run_dir / runs.SUMMARY)["status"] == "interrupted"


@pytest.mark.slow
def test_sigterm_to_a_sweep_stops_both_runs_interrupted(spec, tmp_path):
    out = tmp_path / "runs"
    process = graphc_train(spec, "--seeds", "2", "--epochs", "5000", "--no-test", "--out", out, "--jobs", "2")
    found = wait_for_rows(out, 2)
    process.send_signal(signal.SIGTERM)  # what a scheduler sends the sweep: passed on to its runs
    returncode, stderr = ended(process)
    assert returncode == 143, stderr
    assert "Traceback" not in stderr and "Resume the sweep with the same command" in stderr
    for path in found:
        summary = runs.read_json(path / runs.SUMMARY)
        assert summary["status"] == "interrupted" and 1 <= summary["epochs_completed"] < 5000
        assert str(path) in stderr


@pytest.mark.slow
def test_two_identical_sweeps_started_together_make_one_run_folder(spec, tmp_path):
    out = tmp_path / "runs"
    args = (spec, "--seed", "0", "--epochs", "3", "--no-test", "--out", out, "--jobs", "1")
    first, second = graphc_train(*args), graphc_train(*args)
    (code_a, err_a), (code_b, err_b) = ended(first, 300), ended(second, 300)
    assert (code_a, code_b) == (0, 0), err_a + err_b
    (run_dir,) = runs.find_runs([out])  # exactly one run of the identity
    assert runs.read_json(run_dir / runs.SUMMARY)["status"] == "completed"
    # the other sweep skipped it: being trained by the first, or finished by the time it looked
    both = err_a + err_b
    assert "1 trained" in both and ("1 skipped (finished before)" in both or "1 skipped (being trained" in both), both
