"""The training loop's optional parts behind one interface (runtime/train/features.py): a run holds
the features its spec asks for, and fit, finish and the checkpoints call each at its points."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rich.console import Console

import graphc
from graphc.lang.spec import TrainSpec
from graphc.runtime.runs import rundir as runs
from graphc.runtime.runs.checkpoint import load_checkpoint
from graphc.runtime.train import features, loop
from graphc.runtime.train.launch import load_data
from tests.conftest import TESTS

SPEC = TESTS / "specs" / "tiny_train.toml"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data():
    return load_data(graphc.load_spec(SPEC), 64, None)


def make_run(data, run_dir: Path, frozen: bool = False, **train) -> loop.Run:
    spec = graphc.load_spec(SPEC)
    spec = spec.model_copy(update={"train": TrainSpec.model_validate({**spec.train.model_dump(), **train})})
    if frozen:
        nodes = [
            n.model_copy(update={"trainable": False, "unfreeze_after": 1}) if n.name == "trunk" else n
            for n in spec.nodes
        ]
        spec = spec.model_copy(update={"nodes": nodes})
    return loop.build_run(run_dir, spec, graphc.build_graph(spec, classes=data.classes), data, CPU)


def test_a_run_holds_the_features_its_spec_asks_for_in_the_loops_order(data, tmp_path):
    assert make_run(data, tmp_path).features == []  # the plain loop: nothing to call
    run = make_run(
        data,
        tmp_path,
        frozen=True,
        loss_weighting={"name": "dwa"},
        diagnostics=True,
        tensorboard=True,
    )
    assert [type(f) for f in run.features] == [
        features.Freezing,
        features.LossWeighting,
        features.Diagnostics,
        features.TensorBoard,
    ]
    assert [f.key for f in run.features] == [None, "weighting", None, None]


class Recorder(features.LoopFeature):
    """Says when each hook is called; keeps a state of its own in the checkpoints."""

    key = "recorder"

    def __init__(self):
        self.calls: list[str] = []
        self.steps = 0

    def metric_names(self, run):
        return ["weight/fine"]

    def start(self, run, console):
        self.calls.append(f"start after {run.epoch}")

    def epoch_start(self, run, console):
        self.calls.append(f"epoch {run.epoch + 1}")

    def after_step(self, run):
        self.steps += 1

    def train_entries(self, run, metrics):
        self.calls.append("train_entries")
        return {"weight/fine": 0.5}

    def validated(self, run, metrics):
        self.calls.append("validated")
        metrics["loss"] = -1.0

    def train_row(self, run, row):
        self.calls.append("train_row")
        assert list(row)[-4:] == ["weight/fine", "lr", "images_per_s", "time_s"]  # its entries, then the timing
        row["extra"] = 1.0

    def rows_written(self, run, rows):
        self.calls.append("rows_written")
        assert runs.read_metrics(run.run_dir)[-len(rows) :] == rows

    def stop(self, run):
        self.calls.append("stop")

    def tested(self, run, metrics, checkpoint):
        self.calls.append("tested")

    def state_dict(self):
        return {"steps": self.steps}

    def load_state(self, run, checkpoint):
        self.calls.append(f"load_state at {run.epoch}")
        self.steps = checkpoint[self.key]["steps"]


def test_fit_finish_and_the_checkpoints_call_every_feature_at_its_point(data, tmp_path):
    run = make_run(data, tmp_path)
    recorder = Recorder()
    run.features.append(recorder)
    assert loop.fit(run, Console(quiet=True), quiet=True) == "completed"
    epoch = ["train_entries", "validated", "train_row", "rows_written"]
    assert recorder.calls == ["start after 0", "epoch 1", *epoch, "epoch 2", *epoch, "stop"]
    steps = loop.steps_per_epoch(len(data.train), run.spec.train.batch_size)
    assert recorder.steps == 2 * steps
    rows = runs.read_metrics(tmp_path)
    assert [r["loss"] for r in rows if r["split"] == "val"] == [-1.0, -1.0]
    assert all(r["weight/fine"] == 0.5 and r["extra"] == 1.0 for r in rows if r["split"] == "train")
    last = load_checkpoint(tmp_path / runs.LAST)
    assert last["recorder"] == {"steps": 2 * steps}

    recorder.calls.clear()
    loop.finish(run, "completed")
    assert recorder.calls == ["tested"]

    again = make_run(data, tmp_path)
    restored = Recorder()
    again.features.append(restored)
    loop.restore_checkpoint(again, last, tmp_path / runs.LAST)
    assert restored.calls == ["load_state at 2"] and restored.steps == 2 * steps
    loop.check_monitors(again)  # the features' metric names are watchable: none missing here
