"""Progress without a terminal (runtime/train/progress.py): plain lines at most every
LINE_INTERVAL_S, an estimate of the run's time from its first real steps, --progress and --quiet."""

from __future__ import annotations

import re

import pytest
from rich.console import Console

from graphc.runtime.train import progress
from tests.conftest import TESTS, run_dir_of, train

SPEC = TESTS / "specs" / "tiny_train.toml"
FLAGS = ["--epochs", "2", "--limit-test", "40"]  # 360 training images in batches of 32: 12 steps an epoch
LINE = re.compile(
    r"^epoch (\d)/2  step (\d+)/12  loss [\d.]+  acc fine [\d.]+% coarse [\d.]+%  [\d,]+ img/s  "
    r"elapsed \d+ (s|min \d\d s)  ETA \d+ (s|min \d\d s)$"
)


def test_without_a_terminal_progress_is_plain_lines_with_an_estimate(tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)  # a line at every step (default: every 30 s)
    result = train(SPEC, *FLAGS, "--out", tmp_path)  # CliRunner's stderr is no terminal: auto is lines
    lines = result.stderr.splitlines()
    steps = [LINE.match(line) for line in lines if line.startswith("epoch ") and " step " in line]
    assert steps and all(steps), "\n".join(lines)
    assert {(m.group(1), m.group(2)) for m in steps} == {(e, str(s)) for e in "12" for s in range(1, 13)}
    (estimate,) = [line for line in lines if line.startswith("estimate:")]
    assert re.fullmatch(
        r"estimate: about \d+ s for 2 epochs \(measured over steps 3-6 at [\d,]+ img/s; validation of 120 "
        r"images per epoch and the test pass of 40 counted at 3x that rate\)",
        estimate,
    ), estimate
    # the estimate comes right after step 6 of the first epoch, before the first epoch's line
    assert lines.index(estimate) < next(i for i, line in enumerate(lines) if "train loss" in line)
    assert lines[lines.index(estimate) - 1].startswith("epoch 1/2  step 6/12")
    assert run_dir_of(result).is_dir()  # stdout: still only the run directory


def test_lines_come_at_most_every_interval(tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 3600.0)
    result = train(SPEC, *FLAGS, "--out", tmp_path, "--progress", "lines")
    assert not [line for line in result.stderr.splitlines() if " step " in line]
    assert "estimate: about" in result.stderr


@pytest.mark.parametrize("flag", [["--quiet"], ["--progress", "none"]])
def test_quiet_and_none_print_only_the_epoch_lines(tmp_path, monkeypatch, flag):
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)
    result = train(SPEC, *FLAGS, "--out", tmp_path, *flag)
    assert " step " not in result.stderr and "estimate" not in result.stderr
    assert "epoch 2/2  train loss" in result.stderr


def test_an_unknown_mode_is_a_usage_error(tmp_path):
    result = train(SPEC, "--progress", "loud", "--out", tmp_path, code=2)
    assert "--progress 'loud': expected one of auto, bar, lines, none" in result.stderr


def test_modes_and_durations():
    terminal, log = Console(force_terminal=True), Console(force_terminal=False)
    assert progress.progress_mode("auto", terminal) == "bar" and progress.progress_mode("auto", log) == "lines"
    assert progress.progress_mode(True, terminal) == "none" and progress.progress_mode("lines", terminal) == "lines"
    assert [progress.duration(s) for s in (0.4, 42, 250, 7500)] == ["0 s", "42 s", "4 min 10 s", "2 h 05 min"]


def test_the_estimate_counts_the_work_left():
    bar = progress.EpochProgress(Console(force_terminal=False), live="lines")
    bar.set_plan(progress.Plan(first_epoch=1, epochs=3, step_images=100, val_images=300, test_images=600))
    bar.start(1, 3, 10)
    # 1 s a step (100 img/s): 4 steps left here, 2 epochs of 10, validation 3 x 300 and test 600 at 300 img/s
    assert bar._seconds(4, 2, 1.0, this_val=True) == pytest.approx(4 + 20 + 3 + 2)


def test_a_bad_progress_interval_is_a_usage_error_not_a_traceback(monkeypatch):
    monkeypatch.setenv("GRAPHC_PROGRESS_INTERVAL", "soon")
    with pytest.raises(progress.UsageError, match="GRAPHC_PROGRESS_INTERVAL='soon'"):
        progress.EpochProgress(Console(force_terminal=False), live="lines")
    monkeypatch.setenv("GRAPHC_PROGRESS_INTERVAL", "5")
    assert progress.EpochProgress(Console(force_terminal=False), live="lines").line_interval == 5.0
