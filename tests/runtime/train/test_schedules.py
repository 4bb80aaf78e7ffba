"""Learning-rate schedules step and plateau, warm-up composed with them, resume exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from graphc.lang.spec import ScheduleSpec, TrainSpec
from graphc.runtime.runs import rundir as runs
from graphc.runtime.runs.checkpoint import load_checkpoint
from graphc.runtime.train.optim import PlateauFactor, lr_factor, make_scheduler, observe_plateau
from tests.conftest import TESTS, run_dir_of, train

SPEC = TESTS / "specs" / "tiny_train.toml"


def test_step_multiplies_by_gamma_after_each_milestone_epoch():
    factor = lr_factor(ScheduleSpec(name="step", milestones=[2, 4], gamma=0.5), 60, 10)
    assert [factor(s) for s in (0, 19, 20, 39, 40, 59)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_warmup_multiplies_step_and_plateau():
    step = lr_factor(ScheduleSpec(name="step", milestones=[1], gamma=0.1, warmup_epochs=2), 40, 10)
    assert (
        step(0) == pytest.approx(1 / 21) and step(10) == pytest.approx(0.1 * 11 / 21) and step(20) == pytest.approx(0.1)
    )
    plateau = lr_factor(ScheduleSpec(name="plateau", warmup_epochs=1), 40, 10)
    assert isinstance(plateau, PlateauFactor) and plateau(4) == pytest.approx(5 / 11) and plateau(10) == 1.0


def test_plateau_reduces_after_patience_epochs_without_improvement():
    factor = PlateauFactor(warmup=0, mode="max", factor=0.5, patience=1, threshold=0.0)
    seen = [factor.observe(v) for v in (0.5, 0.6, 0.6, 0.6, 0.7, float("nan"), None)]
    assert seen == [False, False, False, True, False, False, True]
    assert factor.scale == 0.25 and factor.best == 0.7


def test_plateau_takes_selects_mode_and_applies_at_once():
    train = TrainSpec(schedule={"name": "plateau", "patience": 0}, select={"metric": "val/fine/acc", "mode": "max"})
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = make_scheduler(optimizer, train, 5)
    assert scheduler.lr_lambdas[0].mode == "max"
    assert not observe_plateau(scheduler, 0.5)
    assert observe_plateau(scheduler, 0.4)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    state = scheduler.state_dict()  # plain numbers: checkpoints load with weights_only=True
    assert state["lr_lambdas"][0]["scale"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("schedule", "words"),
    [
        ('{ name = "step", milestones = [3, 2] }', "increasing"),
        ('{ name = "cosine", metric = "val/loss" }', "for name"),
        ('{ name = "plateau", metric = "val/nothing" }', "does not log"),
    ],
)
def test_schedule_errors(tmp_path, schedule, words):
    text = SPEC.read_text().replace('name = "tiny_train"', 'name = "ts"') + f"schedule = {schedule}\n"
    path = tmp_path / "ts.toml"
    path.write_text(text)
    assert words in train(path, "--epochs", 1, "--out", tmp_path / "r", "--quiet", code=2).output


def spec_with(tmp_path: Path, schedule: str) -> Path:
    text = SPEC.read_text().replace('name = "tiny_train"', 'name = "ts"')
    text += f'precision = "fp32"\nschedule = {schedule}\n'
    path = tmp_path / "ts.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("schedule", "ratios"),
    [
        # epoch 1 sets the best; epoch 2's lower loss is no improvement in mode max: epoch 3 halves
        (
            '{ name = "plateau", metric = "train/loss", mode = "max", patience = 0, factor = 0.5, warmup_epochs = 0.5 }',
            [1, 1, 0.5],
        ),
        ('{ name = "step", milestones = [1, 2], gamma = 0.5, warmup_epochs = 0.5 }', [1, 0.5, 0.25]),
    ],
)
def test_schedules_change_the_lr_and_resume_bit_identically(tmp_path, schedule, ratios):
    spec = spec_with(tmp_path, schedule)
    args = ("--quiet", "--no-test", "--limit-train", 96)
    straight = run_dir_of(train(spec, "--epochs", 3, "--out", tmp_path / "a", *args))
    first = run_dir_of(train(spec, "--epochs", 1, "--out", tmp_path / "b", *args))
    train("--resume", first, "--epochs", 3, "--quiet")
    rows = [[json.loads(line) for line in (d / runs.METRICS_JSONL).read_text().splitlines()] for d in (straight, first)]
    lrs = [r["lr"] for r in rows[0] if r["split"] == "train"]
    assert lrs == pytest.approx([3e-3 * r for r in ratios])  # the last step's lr of each epoch
    timing = ("images_per_s", "time_s")
    assert [{k: v for k, v in r.items() if k not in timing} for r in rows[0]] == [
        {k: v for k, v in r.items() if k not in timing} for r in rows[1]
    ]
    a, b = load_checkpoint(straight / runs.LAST), load_checkpoint(first / runs.LAST)
    assert a["scheduler"] == b["scheduler"]
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
