"""Run directories: atomic files, metrics rows, checkpoints, finding runs."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from graphc.errors import RunError
from graphc.files import atomic_write, atomic_write_text
from graphc.runtime.runs import rundir as runs
from graphc.runtime.runs.checkpoint import load_checkpoint, save_checkpoint


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "file.json"
    atomic_write_text(path, "old")

    def explode(f):
        f.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, explode)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]  # no temporary file left


def test_json_has_no_nan(tmp_path):
    runs.write_json(tmp_path / "x.json", {"a": math.nan, "b": [math.inf, 1.0]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None, "b": [None, 1.0]}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(RunError, match="not valid JSON"):
        runs.read_json(tmp_path / "bad.json")


def test_metrics_rows_round_trip_and_csv_has_every_column(tmp_path):
    runs.append_metrics(tmp_path, [{"epoch": 1, "split": "train", "loss": 2.0, "lr": 0.1}])
    runs.append_metrics(tmp_path, [{"epoch": 1, "split": "val", "loss": 1.5, "fine/acc": 0.5}])
    rows = runs.read_metrics(tmp_path)
    assert rows == [
        {"epoch": 1, "split": "train", "loss": 2.0, "lr": 0.1},
        {"epoch": 1, "split": "val", "loss": 1.5, "fine/acc": 0.5},
    ]
    with open(tmp_path / runs.METRICS_CSV) as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["epoch", "split", "loss", "lr", "fine/acc"]
    assert table[1]["fine/acc"] == "0.5" and table[0]["fine/acc"] == ""
    runs.append_metrics(tmp_path, [{"epoch": 2, "split": "train", "loss": 1.0}])
    runs.truncate_metrics(tmp_path, 1)
    assert [r["epoch"] for r in runs.read_metrics(tmp_path)] == [1, 1]


def test_damaged_metrics_line_is_named(tmp_path):
    (tmp_path / runs.METRICS_JSONL).write_text('{"epoch": 1, "split": "train"}\n{"epoch": 2, "spl\n')
    with pytest.raises(RunError, match=r"metrics.jsonl:2: damaged metrics line"):
        runs.read_metrics(tmp_path)


def test_checkpoints_round_trip_and_foreign_files_are_refused(tmp_path):
    save_checkpoint(tmp_path / "last.pt", {"epoch": 3, "model": {"w": torch.ones(2)}})
    loaded = load_checkpoint(tmp_path / "last.pt")
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["w"], torch.ones(2))
    torch.save({"epoch": 3}, tmp_path / "foreign.pt")
    with pytest.raises(RunError, match="not a graphc checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(RunError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")


def test_new_run_dirs_are_unique_and_found(tmp_path):
    first = runs.new_run_dir(tmp_path, "spec", 0)
    second = runs.new_run_dir(tmp_path, "spec", 0)
    assert first != second and first.parent == second.parent == tmp_path / "spec"
    for run in (first, second):
        atomic_write_text(run / runs.SPEC_COPY, 'name = "spec"\n')
        runs.write_json(run / runs.CONFIG, {"spec": "spec", "seed": 0})
    (tmp_path / "notes").mkdir()
    runs.write_json(tmp_path / "notes" / runs.CONFIG, {"unrelated": True})  # a lone config.json is no run
    assert runs.find_runs([tmp_path]) == sorted([first, second])
    assert runs.find_runs([first]) == [first]
    assert not runs.is_run_dir(tmp_path / "notes")
