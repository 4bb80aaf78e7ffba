"""`graphc train --jobs K` sweeps and `graphc sweep plan`: runs in child processes K at a time,
failures that stop nothing else, one report table, skipping finished runs and resuming interrupted
ones (identity: the report's variant and the seed), and the plan's commands for a job queue."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import graphc.runtime.train.loop as training
import graphc.runtime.train.sweep as sweep
from graphc.runtime.runs import rundir as runs
from graphc.runtime.runs.checkpoint import load_checkpoint
from tests.conftest import REPO, TESTS, TINY_SPEC, invoke

ROOT = REPO
TINY_TRAIN = TESTS / "specs" / "tiny_train.toml"
# Small and fast: 1 epoch on 64 images; the same flags for every run of a sweep.
FLAGS = ["--epochs", "1", "--limit-train", "64", "--limit-val", "32", "--limit-test", "32"]
# conftest's tiny spec with one head (an image folder has no coarse labels), reading a folder that is not there
MISSING_DATA = (
    TINY_SPEC.replace('name = "tiny"', 'name = "missing_data"')
    .replace('task = "fine"', 'task = "fine"\nclasses = 4')
    .split('[[nodes]]\nname = "coarse_head"')[0]
    + '[data]\ndataset = "imagefolder"\nroot = "{root}"\n'
)


def run_dirs(out: Path) -> set[Path]:
    return set(runs.find_runs([out]))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("specs") / "tiny.toml"
    path.write_text(TINY_SPEC)
    return path


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny):
    """2 specs x 2 seeds, 2 at a time."""
    out = tmp_path_factory.mktemp("sweep")
    result = invoke("train", TINY_TRAIN, tiny, "--seeds", "2", *FLAGS, "--out", out, "--jobs", "2")
    return out, result


@pytest.mark.slow
def test_a_sweep_of_two_specs_by_two_seeds_makes_four_runs_and_one_table(swept):
    out, result = swept
    found = run_dirs(out)
    assert len(found) == 4
    identities = set()
    for path in found:
        summary = runs.read_json(path / runs.SUMMARY)
        assert summary["status"] == "completed" and summary["epochs_completed"] == 1
        config = runs.read_json(path / runs.CONFIG)
        identities.add((config["spec"], config["seed"]))
    assert identities == {("tiny_train", 0), ("tiny_train", 1), ("tiny", 0), ("tiny", 1)}
    assert "2 at a time" in result.stderr and "4 trained, 0 skipped" in result.stderr
    # every run directory on stdout, then one report table: a row per spec, over its 2 seeds
    assert {Path(line) for line in result.stdout.splitlines() if line.startswith(str(out))} == found
    assert result.stdout.count("variant") >= 1 and "tiny_train [limit_test=32]" in result.stdout
    assert "tiny [limit_test=32]" in result.stdout and "Mean ± sample standard deviation" in result.stdout
    # progress came from the runs' metrics files: each run's epoch with its watched metric and speed
    # (one epoch of 64 images: a head may have collapsed, which the state names: "completed (collapsed: fine)")
    assert re.search(
        r"tiny_train seed 1: completed( \(collapsed: [a-z, ]+\))?, epochs 1/1, val/fine/acc", result.stderr
    )
    assert re.search(r"tiny seed 0: completed( \(collapsed: [a-z, ]+\))?, epochs 1/1, val/loss", result.stderr)
    assert "train img/s" in result.stderr
    assert sorted(p.name for p in (out / sweep.LOGS).iterdir()) == [
        "tiny-seed0.log",
        "tiny-seed1.log",
        "tiny_train-seed0.log",
        "tiny_train-seed1.log",
    ]


@pytest.mark.slow
def test_running_the_sweep_again_skips_the_finished_runs(swept, tiny):
    out, _ = swept
    before = {p: (p / runs.SUMMARY).stat().st_mtime_ns for p in run_dirs(out)}
    result = invoke("train", TINY_TRAIN, tiny, "--seeds", "2", *FLAGS, "--out", out, "--jobs", "2")
    assert {p: (p / runs.SUMMARY).stat().st_mtime_ns for p in run_dirs(out)} == before  # nothing new, nothing rewritten
    assert "0 new, 0 to resume, 4 skipped" in result.stderr and "nothing to train" in result.stderr
    assert len(re.findall(r": skipped( \(collapsed: [^)]*\))?, epochs 1/1", result.stderr)) == 4
    assert "tiny_train [limit_test=32]" in result.stdout  # the table of what the sweep holds
    # another setting is another run: the finished ones do not stand in for it
    assert sweep.plan_sweep([TINY_TRAIN], seeds=2, overrides=_overrides(epochs=2), out=out)[0].action == "new"


def _overrides(**changes):
    from graphc.runtime.train.launch import Overrides

    return Overrides(**{"epochs": 1, "limit_train": 64, "limit_val": 32, "limit_test": 32, **changes})


@pytest.mark.slow
def test_a_failing_run_is_reported_and_the_others_complete(tmp_path, tiny):
    broken = tmp_path / "missing_data.toml"
    broken.write_text(MISSING_DATA.format(root=tmp_path / "no-such-folder"))
    invoke("check", broken)  # valid as a spec: it fails only when training reads its data
    out = tmp_path / "runs"
    result = invoke("train", broken, tiny, *FLAGS, "--out", out, "--jobs", "2", code=1)
    (done,) = run_dirs(out)
    assert runs.read_json(done / runs.CONFIG)["spec"] == "tiny"
    assert runs.read_json(done / runs.SUMMARY)["status"] == "completed"
    assert "1 trained, 0 skipped (finished before), 1 failed" in result.stderr
    error = result.stderr[result.stderr.index("error:") :]
    assert f"missing_data seed 0 ({broken}) failed" in error and "no-such-folder does not exist" in error
    assert "missing_data-seed0.log" in error


@pytest.mark.slow
def test_an_interrupted_run_is_resumed_in_its_own_directory(tmp_path, monkeypatch):
    out = tmp_path / "runs"
    flags = ["--epochs", "2", "--limit-train", "64", "--limit-val", "32", "--no-test", "--seed", "0", "--out", out]
    # Ctrl-C in the first step of epoch 2 of a plain `graphc train`: last.pt holds epoch 1 ...
    real, calls = training.train_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == training.steps_per_epoch(64, 32) + 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_step", step)
    invoke("train", TINY_TRAIN, *flags, "--quiet", code=130)
    monkeypatch.undo()
    (run_dir,) = run_dirs(out)
    assert load_checkpoint(run_dir / runs.LAST)["epoch"] == 1
    (run_dir / runs.SUMMARY).unlink()  # ... and no summary, as when the process was killed
    result = invoke("train", TINY_TRAIN, *flags, "--jobs", "1")
    assert run_dirs(out) == {run_dir}  # resumed, not started again
    assert "0 new, 1 to resume, 0 skipped" in result.stderr
    summary = runs.read_json(run_dir / runs.SUMMARY)
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
    assert runs.read_json(run_dir / runs.CONFIG)["resumed"][0]["from_epoch"] == 1
    assert [r["epoch"] for r in runs.read_metrics(run_dir) if r["split"] == "val"] == [1, 2]


@pytest.mark.slow
def test_plan_commands_run_one_by_one_make_the_sweeps_runs(tmp_path, tiny):
    out = tmp_path / "shared"
    plan = invoke("sweep", "plan", tiny, "--seeds", "2", *FLAGS, "--out", out, "--json")
    rows = [json.loads(line) for line in plan.stdout.splitlines()]
    assert [(r["name"], r["seed"], r["state"], r["run_dir"]) for r in rows] == [
        ("tiny", 0, "new", None),
        ("tiny", 1, "new", None),
    ]
    text = invoke("sweep", "plan", tiny, "--seeds", "2", *FLAGS, "--out", out).stdout.splitlines()
    assert text == [r["command"] for r in rows]
    assert rows[1]["argv"] == ["graphc", "train", str(tiny), "--seed", "1", "--out", str(out), *FLAGS, "--jobs", "1"]
    for row in rows:  # as a job queue would: each command on its own
        assert row["argv"][0] == "graphc"
        invoke(*row["argv"][1:])
    assert len(run_dirs(out)) == 2
    # the same runs as the sweep's: the sweep command finds them all finished
    again = invoke("train", tiny, "--seeds", "2", *FLAGS, "--out", out, "--jobs", "2")
    assert "0 new, 0 to resume, 2 skipped" in again.stderr and len(run_dirs(out)) == 2
    replanned = [
        json.loads(line)
        for line in invoke("sweep", "plan", tiny, "--seeds", "2", *FLAGS, "--out", out, "--json").stdout.splitlines()
    ]
    assert {r["state"] for r in replanned} == {"done"} and {Path(r["run_dir"]) for r in replanned} == run_dirs(out)


@pytest.mark.slow
def test_plan_and_sweep_refuse_bad_flags_clearly(tmp_path, tiny):
    bad = invoke("sweep", "plan", tiny, "--epoch", "3", code=2)
    assert "No such option: --epoch" in bad.output
    resume = invoke("train", "--resume", tmp_path, "--jobs", "2", code=2)
    assert "--jobs runs a sweep of SPEC files" in resume.stderr
    pinned = invoke("train", tiny, "--device", "cuda:1", "--jobs", "2", "--out", tmp_path, code=2)
    assert "CUDA_VISIBLE_DEVICES" in pinned.stderr
    alone = invoke("train", tiny, "--jobs-per-gpu", "2", code=2)
    assert "give --jobs K too" in alone.stderr


def test_a_spec_given_twice_is_one_run_per_seed(tmp_path, tiny):
    jobs = sweep.plan_sweep([tiny, tiny, TINY_TRAIN], seeds=2, overrides=_overrides(), out=tmp_path)
    assert [(j.name, j.seed, j.action) for j in jobs] == [
        ("tiny", 0, "new"),
        ("tiny", 1, "new"),
        ("tiny_train", 0, "new"),
        ("tiny_train", 1, "new"),
    ]


def _job(on_cuda: bool) -> sweep.Job:
    from graphc.runtime.report.build import Variant

    return sweep.Job("spec.toml", "spec", 0, Variant("spec", None, None, ()), "val/loss", 1, on_cuda, "new")


def test_slots_split_the_cores_and_spread_jobs_over_the_gpus(monkeypatch):
    monkeypatch.setattr(sweep, "cpu_cores", lambda: 16)
    cpu = sweep.plan_slots([_job(False)] * 5, 3)
    assert (cpu.concurrent, cpu.threads, cpu.gpu_sets) == (3, 5, [])  # 16 cores // 3 jobs
    assert sweep.plan_slots([_job(False)] * 2, 8).concurrent == 2  # no more processes than runs
    assert sweep.plan_slots([_job(False)] * 40, 32).threads == 1  # at least one thread each
    monkeypatch.setattr(sweep, "visible_gpus", lambda: ["0", "1"])
    one = sweep.plan_slots([_job(True)] * 8, 8)
    assert (one.concurrent, one.gpu_sets) == (2, ["0", "1"]) and "--jobs-per-gpu" in one.note
    two = sweep.plan_slots([_job(True)] * 8, 8, per_gpu=2)
    assert (two.concurrent, two.gpu_sets, two.threads) == (4, ["0", "1", "0", "1"], 4)
    ddp = sweep.plan_slots([_job(True)] * 8, 8, nproc=2)
    assert (ddp.concurrent, ddp.gpu_sets) == (1, ["0,1"])


@pytest.mark.slow
def test_each_child_gets_its_threads_and_gpus_in_its_environment(tmp_path, monkeypatch):
    started = []

    class Child:
        def __init__(self, argv, env, **kwargs):
            started.append((argv, env))

    monkeypatch.setattr(sweep.subprocess, "Popen", Child)
    slots = sweep.Slots(2, 3, ["1", "0"])
    free = list(slots.gpu_sets)
    job = _job(True)
    sweep._start(job, _overrides(), tmp_path, tmp_path / "logs", slots, free)
    argv, env = started[0]
    assert env["OMP_NUM_THREADS"] == "3" and env["CUDA_VISIBLE_DEVICES"] == "1" and free == ["0"] and job.gpus == "1"
    assert argv[:4] == [sys.executable, "-m", "graphc", "train"] and argv[4:7] == ["spec.toml", "--seed", "0"]
    sweep._start(_job(False), _overrides(), tmp_path, tmp_path / "logs", slots, free)
    assert "CUDA_VISIBLE_DEVICES" not in started[1][1] or started[1][1]["CUDA_VISIBLE_DEVICES"] == os.environ.get(
        "CUDA_VISIBLE_DEVICES"
    )


@pytest.mark.slow
def test_ctrl_c_stops_the_children_after_their_epoch_and_says_how_to_resume(tmp_path, tiny):
    out = tmp_path / "runs"
    # Enough epochs that neither run can finish before both have started (a tiny epoch takes
    # well under 0.1 s): the Ctrl-C must find both running.
    command = [
        sys.executable,
        "-m",
        "graphc",
        "train",
        str(tiny),
        "--seeds",
        "2",
        "--epochs",
        "5000",
        "--limit-train",
        "64",
        "--limit-val",
        "32",
        "--no-test",
        "--out",
        str(out),
        "--jobs",
        "2",
    ]
    sweep_process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # until both runs have completed an epoch
        found = run_dirs(out) if out.is_dir() else set()
        if len(found) == 2 and all(runs.read_metrics(p) for p in found):
            break
        time.sleep(0.5)
    sweep_process.send_signal(signal.SIGINT)  # what Ctrl-C sends the sweep (the children are in their own sessions)
    try:
        _, stderr = sweep_process.communicate(timeout=120)
    finally:
        sweep_process.kill()  # (a no-op once it has ended) never leave a 5000-epoch sweep behind
    assert sweep_process.returncode == 130, stderr
    assert "Traceback" not in stderr and "Resume the sweep with the same command" in stderr
    for path in run_dirs(out):
        summary = runs.read_json(path / runs.SUMMARY)
        assert summary["status"] == "interrupted" and 1 <= summary["epochs_completed"] < 5000
        assert load_checkpoint(path / runs.LAST)["epoch"] == summary["epochs_completed"]
        assert str(path) in stderr


# What torchrun gives its processes (torch.distributed.elastic's local agent).
TORCHRUN_ENV = {
    "RANK": "0",
    "WORLD_SIZE": "2",
    "LOCAL_RANK": "0",
    "LOCAL_WORLD_SIZE": "2",
    "GROUP_RANK": "0",
    "GROUP_WORLD_SIZE": "1",
    "ROLE_RANK": "0",
    "ROLE_WORLD_SIZE": "2",
    "ROLE_NAME": "default",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": "29500",
    "TORCHELASTIC_RUN_ID": "none",
}


@pytest.mark.slow
def test_a_sweep_under_torchrun_is_refused_before_anything_starts(tmp_path, tiny, monkeypatch):
    """Every process of the job would start the whole sweep into the same folder, and its children
    would try to join the job: a clear usage error instead."""
    for name, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(
        sweep.subprocess, "Popen", lambda *a, **k: pytest.fail("a sweep under torchrun started a child")
    )
    result = invoke("train", tiny, "--seeds", "2", "--jobs", "2", "--out", tmp_path / "runs", *FLAGS, code=2)
    assert "torchrun" in result.output and "graphc sweep plan" in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_childs_environment_never_places_it_in_a_torchrun_job(tmp_path, monkeypatch):
    for name, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(name, value)
    started = []

    class Child:
        def __init__(self, argv, env, **kwargs):
            started.append(env)

    monkeypatch.setattr(sweep.subprocess, "Popen", Child)
    sweep._start(_job(False), _overrides(), tmp_path, tmp_path / "logs", sweep.Slots(1, 2, []), [])
    (env,) = started
    assert not set(TORCHRUN_ENV) & set(env)
    assert env["OMP_NUM_THREADS"] == "2" and env["PATH"] == os.environ["PATH"]
