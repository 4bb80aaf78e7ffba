"""A sweep's closing output: collapsed heads marked (from each run's summary.json) and warned about,
the table's split named (its numbers are validation numbers, whatever the labels say), and every
child run's record holding its threads and torch version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import graphc.runtime.train.sweep as sweep
from graphc.runtime.collapse import collapsed_heads
from graphc.runtime.report.build import Variant
from graphc.runtime.runs import rundir as runs
from tests.conftest import TESTS, invoke, run_dir_of, train

SPEC = TESTS / "specs" / "tiny_train.toml"


def job_with_summary(tmp_path: Path, summary: dict) -> sweep.Job:
    run_dir = tmp_path / "run"
    run_dir.mkdir(parents=True)
    (run_dir / runs.SUMMARY).write_text(json.dumps(summary))
    job = sweep.Job("spec.toml", "spec", 0, Variant("spec", None, None, ()), "val/loss", 1, False, "done", run_dir)
    job.state = "completed"
    return job


def test_a_collapsed_head_is_marked_in_the_sweeps_table(tmp_path):
    collapsed = collapsed_heads(
        {"coarse/acc": 0.5, "coarse/majority_acc": 0.5, "coarse/balanced_acc": 0.4}, {"fine": 12, "coarse": 3}
    )
    job = job_with_summary(tmp_path, {"status": "completed", "collapsed": collapsed})
    sweep._read_collapsed(job)
    assert list(job.collapsed) == ["coarse"]
    assert sweep.View.cells(job)[2] == "completed (collapsed: coarse)"


def test_no_mark_when_nothing_collapsed_was_judged_or_the_file_is_damaged(tmp_path):
    for n, summary in enumerate(({"collapsed": {}}, {"collapsed": None}, {}, {"collapsed": [1]})):
        job = job_with_summary(tmp_path / str(n), summary)
        sweep._read_collapsed(job)
        assert job.collapsed == {} and sweep.View.cells(job)[2] == "completed"


@pytest.mark.slow  # through --jobs, with the children's sweep replaced: no process starts
def test_the_closing_table_names_its_split_and_warns_of_collapsed_heads(tmp_path, monkeypatch):
    run_dir = run_dir_of(
        train(SPEC, "--epochs", "1", "--limit-train", "64", "--limit-test", "32", "--out", tmp_path, "--quiet")
    )
    job = sweep.Job("spec.toml", "tiny_train", 0, Variant("tiny_train", None, None, ()), "val/loss", 1, False, "new")
    job.run_dir, job.state = run_dir, "completed"
    job.collapsed = collapsed_heads(
        {"coarse/acc": 0.5, "coarse/majority_acc": 0.5, "coarse/balanced_acc": 0.4}, {"coarse": 3}
    )
    monkeypatch.setattr(sweep, "sweep_command", lambda *a, **k: sweep.SweepResult([job], None))
    result = invoke("train", SPEC, "--out", tmp_path, "--jobs", "1")
    assert "the sweep's runs on the validation split, each at its best epoch (train.select)" in result.stdout
    said = " ".join(result.stderr.split())
    assert f"warning: {run_dir}: head 'coarse' collapsed: accuracy 0.500 is within 1 point" in said
