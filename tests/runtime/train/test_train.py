"""`graphc train` end to end on synthetic data: run files, learning, determinism,
resume, Ctrl-C, early stopping, checkpoint selection and every bad input."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

import graphc.runtime.train.launch as launch
import graphc.runtime.train.loop as training
from graphc.runtime.device import resolve_precision
from graphc.runtime.runs import rundir as runs
from graphc.runtime.runs.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import TESTS, interrupt_at, train

SPEC = TESTS / "specs" / "tiny_train.toml"
STEPS = training.steps_per_epoch(360, 32)  # tiny_train: 480 synthetic images, 25% held out, batch 32
TIMING = ("images_per_s", "time_s")


def run_dirs(result) -> list[Path]:
    return [Path(line) for line in result.stdout.splitlines() if line.strip()]


def weights(run_dir: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / name)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("runs")
    result = train(SPEC, "--seeds", "2", "--out", out, "--quiet")
    dirs = run_dirs(result)
    assert len(dirs) == 2 and "epoch 2/2" in result.stderr
    return dirs


# --------------------------------------------------------------------------- a run's files


def test_each_seed_gets_a_complete_run_directory(two_seeds):
    for seed, run_dir in enumerate(two_seeds):
        assert run_dir.parent.name == "tiny_train" and run_dir.name.startswith(f"{seed}-")
        for name in (
            "spec.toml",
            "config.json",
            "env.json",
            "metrics.jsonl",
            "metrics.csv",
            "best.pt",
            "last.pt",
            "summary.json",
        ):
            assert (run_dir / name).is_file(), name
        assert (run_dir / "spec.toml").read_text() == SPEC.read_text()
        config = runs.read_json(run_dir / "config.json")
        assert config["seed"] == seed and config["train"]["seed"] == seed
        assert config["tasks"] == ["fine", "coarse"] and config["classes"] == {"fine": 12, "coarse": 3}
        assert config["dataset"] == "synthetic" and config["device"] == "cpu"
        assert config["precision"] == resolve_precision("auto", torch.device("cpu"))  # bf16 with AMX, else fp32
        assert config["memory_format"] == "channels_last"  # a conv model on a CPU with oneDNN
        assert config["overrides"] == {} and config["train"]["optimizer"]["eps"] == 1e-7
        env = runs.read_json(run_dir / "env.json")
        assert env["torch"] == torch.__version__ and set(env) >= {"python", "graphc", "platform", "device_name", "cuda"}


def test_metrics_rows_have_the_contract_names(two_seeds):
    rows = runs.read_metrics(two_seeds[0])
    assert [(r["epoch"], r["split"]) for r in rows] == [(1, "train"), (1, "val"), (2, "train"), (2, "val")]
    heads = [
        "loss",
        "fine/loss",
        "fine/acc",
        "fine/top5",
        "coarse/loss",
        "coarse/acc",
        "coarse/acc_from_fine",
        "fine/consistency_with_coarse",
        "mean_acc",
        "weighted_acc",
    ]
    assert list(rows[0]) == ["epoch", "split", *heads, "lr", "images_per_s", "time_s"]
    assert list(rows[1]) == ["epoch", "split", *heads]
    assert "coarse/top5" not in rows[0]  # 3 classes: no top-5
    assert rows[0]["lr"] == 3e-3
    csv_header = (two_seeds[0] / "metrics.csv").read_text().splitlines()[0]
    assert csv_header.split(",")[:3] == ["epoch", "split", "loss"]


def test_logged_total_loss_is_the_weighted_sum_of_the_logged_heads(two_seeds):
    # tiny_train: loss_weight 2 on fine, 1 on coarse
    for row in runs.read_metrics(two_seeds[0]):
        assert row["loss"] == pytest.approx(2.0 * row["fine/loss"] + 1.0 * row["coarse/loss"], rel=1e-6)


def test_checkpoints_and_summary(two_seeds):
    run_dir = two_seeds[0]
    rows = runs.read_metrics(run_dir)
    best_epoch = max((r for r in rows if r["split"] == "val"), key=lambda r: r["fine/acc"])["epoch"]
    summary = runs.read_json(run_dir / "summary.json")
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
    assert summary["select"] == {"metric": "val/fine/acc", "mode": "max"}
    assert summary["best_epoch"] == best_epoch  # ties keep the earlier epoch
    assert summary["best"]["val/fine/acc"] == max(r["fine/acc"] for r in rows if r["split"] == "val")
    assert summary["last"]["train/loss"] == rows[2]["loss"]
    baselines = {f"{t}/{b}" for t in ("fine", "coarse") for b in ("majority_acc", "balanced_acc")}
    assert set(summary["test"]) == {k for k in rows[1] if k not in ("epoch", "split")} | baselines
    assert summary["images_per_s"] > 0 and summary["wall_time_s"] > 0
    best, last = load_checkpoint(run_dir / "best.pt"), load_checkpoint(run_dir / "last.pt")
    assert last["epoch"] == 2 and best["epoch"] == best_epoch
    for key in (
        "graphc_version",
        "spec_name",
        "spec_sha256",
        "spec_text",
        "model",
        "optimizer",
        "scheduler",
        "rng",
        "monitor",
        "metrics",
        "class_names",
        "config",
    ):
        assert key in last, key
    assert last["spec_text"] == SPEC.read_text() and last["class_names"]["coarse"] == [
        "coarse_0",
        "coarse_1",
        "coarse_2",
    ]
    assert last["metrics"]["val/fine/acc"] == rows[3]["fine/acc"]
    assert set(last["rng"]) >= {"torch", "numpy", "python", "shuffle", "augment"}


def test_seeds_differ(two_seeds):
    a, b = weights(two_seeds[0]), weights(two_seeds[1])
    assert not torch.equal(a["trunk.conv1.weight"], b["trunk.conv1.weight"])


# --------------------------------------------------------------------------- learning and determinism


def test_learns_well_above_chance(tmp_path):
    spec = tmp_path / "learn.toml"  # tiny_train with more images
    spec.write_text(SPEC.read_text().replace("train_size = 480", "train_size = 1600"))
    result = train(spec, "--epochs", "6", "--out", tmp_path, "--quiet")
    val = [r for r in runs.read_metrics(run_dirs(result)[0]) if r["split"] == "val"]
    best = max(val, key=lambda r: r["fine/acc"])
    # Chance: 1/12 fine, 1/3 coarse.
    assert best["fine/acc"] > 3 / 12, val
    assert best["coarse/acc"] > 0.7, val
    assert min(r["loss"] for r in val) < 0.8 * val[0]["loss"]


def test_same_seed_same_metrics_and_weights(tmp_path, two_seeds):
    again = run_dirs(train(SPEC, "--seed", "0", "--out", tmp_path, "--quiet"))[0]
    assert without_timing(runs.read_metrics(again)) == without_timing(runs.read_metrics(two_seeds[0]))
    assert_same_weights(weights(again), weights(two_seeds[0]))


# --------------------------------------------------------------------------- resume and Ctrl-C


def test_one_epoch_plus_resume_equals_two_epochs(tmp_path, two_seeds):
    first = run_dirs(train(SPEC, "--epochs", "1", "--out", tmp_path, "--quiet"))[0]
    assert load_checkpoint(first / "last.pt")["epoch"] == 1
    # Finished runs need a new total to continue.
    refused = train("--resume", first, code=2)
    assert "pass --epochs N with N > 1" in refused.stderr
    resumed = run_dirs(train("--resume", first, "--epochs", "2", "--quiet"))
    assert resumed == [first]
    straight = two_seeds[0]
    assert_same_weights(weights(first), weights(straight))
    a, b = load_checkpoint(first / "last.pt"), load_checkpoint(straight / "last.pt")
    for state_a, state_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(state_a["exp_avg_sq"], state_b["exp_avg_sq"])
    assert without_timing(runs.read_metrics(first)) == without_timing(runs.read_metrics(straight))
    config = runs.read_json(first / "config.json")
    assert config["train"]["epochs"] == 2 and config["resumed"][0]["from_epoch"] == 1


@pytest.mark.parametrize("epoch", [1, 2])
def test_interrupted_run_leaves_a_valid_last_pt_and_resumes_exactly(tmp_path, monkeypatch, two_seeds, epoch):
    interrupt_at(monkeypatch, (epoch - 1) * STEPS + 3)  # a few batches into `epoch`
    result = train(SPEC, "--out", tmp_path, "--quiet", code=130)
    run_dir = next((tmp_path / "tiny_train").iterdir())
    assert f"graphc train --resume {run_dir}" in result.stderr
    last = load_checkpoint(run_dir / "last.pt")
    assert last["epoch"] == epoch - 1  # the last *completed* epoch
    summary = runs.read_json(run_dir / "summary.json")
    assert summary["status"] == "interrupted" and summary["epochs_completed"] == epoch - 1 and summary["test"] is None
    assert {r["epoch"] for r in runs.read_metrics(run_dir)} == set(range(1, epoch))
    assert not list(run_dir.glob(".*.tmp"))  # no temporary file left behind

    monkeypatch.undo()
    train("--resume", run_dir, "--quiet")
    assert_same_weights(weights(run_dir), weights(two_seeds[0]))
    assert runs.read_json(run_dir / "summary.json")["status"] == "completed"
    assert without_timing(runs.read_metrics(run_dir)) == without_timing(runs.read_metrics(two_seeds[0]))


def test_resume_drops_metrics_rows_beyond_last_pt(tmp_path, two_seeds):
    # A run killed after writing epoch 2's rows but before its last.pt: simulate with epoch-1 files.
    run_dir = run_dirs(train(SPEC, "--epochs", "1", "--out", tmp_path, "--quiet"))[0]
    stray = dict(runs.read_metrics(run_dir)[0], epoch=2)
    runs.append_metrics(run_dir, [stray])
    (run_dir / "summary.json").unlink()
    train("--resume", run_dir, "--epochs", "2", "--quiet")
    assert without_timing(runs.read_metrics(run_dir)) == without_timing(runs.read_metrics(two_seeds[0]))


def test_ctrl_c_while_writing_files_is_held_until_they_are_complete(tmp_path):
    path = tmp_path / "last.pt"
    with pytest.raises(KeyboardInterrupt):
        with training.deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            save_checkpoint(path, {"epoch": 1})
    assert load_checkpoint(path)["epoch"] == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# --------------------------------------------------------------------------- stopping and selection


def _variant(tmp_path: Path, train_table: str) -> Path:
    text = SPEC.read_text().replace('select = { metric = "val/fine/acc", mode = "max" }', train_table)
    path = tmp_path / "variant.toml"
    path.write_text(text)
    return path


def test_early_stopping_stops_after_patience(tmp_path):
    spec = _variant(
        tmp_path, 'early_stopping = { metric = "train/loss", mode = "min", patience = 1, min_delta = 100.0 }'
    )
    run_dir = run_dirs(train(spec, "--epochs", "5", "--out", tmp_path, "--quiet"))[0]
    summary = runs.read_json(run_dir / "summary.json")
    # Epoch 1 sets the reference; epoch 2 cannot improve it by 100: patience 1 is used up.
    assert summary["status"] == "early_stopped" and summary["epochs_completed"] == 2
    assert summary["test"] is not None


def test_resuming_an_early_stopped_run_for_more_epochs_gives_patience_a_fresh_start(tmp_path):
    spec = _variant(
        tmp_path, 'early_stopping = { metric = "train/loss", mode = "min", patience = 2, min_delta = 100.0 }'
    )
    run_dir = run_dirs(train(spec, "--epochs", "10", "--out", tmp_path, "--quiet"))[0]
    assert runs.read_json(run_dir / "summary.json")["epochs_completed"] == 3  # reference at 1, waits at 2 and 3
    train("--resume", run_dir, "--epochs", "10", "--quiet")
    summary = runs.read_json(run_dir / "summary.json")
    # Two more epochs of patience (4 and 5), not an immediate stop after epoch 4.
    assert summary["status"] == "early_stopped" and summary["epochs_completed"] == 5


def test_out_of_gpu_memory_is_a_clear_runtime_error(tmp_path, monkeypatch):
    real, calls = training.train_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == STEPS + 2:  # in epoch 2
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_step", step)
    result = train(SPEC, "--out", tmp_path, "--quiet", code=1)
    assert "out of GPU memory in epoch 2 with batch size 32" in result.stderr and "--batch-size" in result.stderr
    run_dir = next((tmp_path / "tiny_train").iterdir())
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1


def test_best_checkpoint_follows_select_and_test_is_used_once_at_the_end(tmp_path, monkeypatch):
    spec = _variant(tmp_path, 'select = { metric = "train/fine/acc", mode = "min" }')  # deliberately odd: worst epoch
    seen = []
    real = training.evaluate

    def spy(model, split, *args, **kwargs):
        seen.append(len(split))
        return real(model, split, *args, **kwargs)

    monkeypatch.setattr(training, "evaluate", spy)
    run_dir = run_dirs(train(spec, "--epochs", "3", "--out", tmp_path, "--quiet"))[0]
    rows = [r for r in runs.read_metrics(run_dir) if r["split"] == "train"]
    worst = min(rows, key=lambda r: r["fine/acc"])["epoch"]
    assert load_checkpoint(run_dir / "best.pt")["epoch"] == worst == 1
    assert seen == [120, 120, 120, 120]  # val after each epoch, then the test split (120) once
    summary = runs.read_json(run_dir / "summary.json")
    assert summary["best_epoch"] == 1
    # summary.test is best.pt on the test split (not last.pt): `graphc eval` of best.pt agrees, of last.pt not.
    from graphc.runtime.evaluate import evaluate_run

    assert evaluate_run(run_dir, split="test", checkpoint="best").metrics == summary["test"]
    assert evaluate_run(run_dir, split="test", checkpoint="last").metrics != summary["test"]


def test_overrides_are_applied_and_recorded(tmp_path):
    run_dir = run_dirs(
        train(
            SPEC,
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--lr",
            "0.01",
            "--limit-train",
            "100",
            "--limit-val",
            "50",
            "--device",
            "cpu",
            "--dataset",
            "synthetic",
            "--out",
            tmp_path,
            "--quiet",
        )
    )[0]
    config = runs.read_json(run_dir / "config.json")
    assert config["train"]["batch_size"] == 64 and config["train"]["optimizer"]["lr"] == 0.01
    assert config["limit_train"] == 100 and config["limit_val"] == 50
    assert config["overrides"]["--lr"] == 0.01 and config["overrides"]["--limit-train"] == 100
    row = runs.read_metrics(run_dir)[0]
    assert row["lr"] == 0.01
    assert row["images_per_s"] * row["time_s"] >= 100  # time_s also covers validation


# --------------------------------------------------------------------------- bad input


def test_bad_device(tmp_path):
    result = train(SPEC, "--device", "tpu", "--out", tmp_path, code=2)
    assert "unknown device 'tpu'" in result.stderr
    if not torch.cuda.is_available():
        result = train(SPEC, "--device", "cuda", "--out", tmp_path, code=1)
        assert "CUDA is not available" in result.stderr
    assert not (tmp_path / "tiny_train").exists()


def test_seeds_and_seed_exclude_each_other(tmp_path):
    result = train(SPEC, "--seeds", "2", "--seed", "3", "--out", tmp_path, code=2)
    assert "--seeds and --seed exclude each other" in result.stderr


def test_resume_needs_a_run_with_last_pt(tmp_path):
    result = train("--resume", tmp_path, code=1)
    assert "not a graphc run directory" in result.stderr
    run_dir = run_dirs(train(SPEC, "--epochs", "1", "--out", tmp_path, "--quiet"))[0]
    (run_dir / "last.pt").unlink()
    result = train("--resume", run_dir, code=1)
    assert "has no last.pt" in result.stderr
    (run_dir / "last.pt").write_bytes(b"not a checkpoint")
    result = train("--resume", run_dir, code=1)
    assert "cannot be read as a checkpoint" in result.stderr


def test_resume_refuses_specs_and_recipe_changes(tmp_path):
    assert "give no SPEC files" in train(SPEC, "--resume", tmp_path, code=2).stderr
    assert "--lr cannot change when resuming" in train("--resume", tmp_path, "--lr", "0.1", code=2).stderr
    assert "give at least one SPEC" in train(code=2).stderr


def test_head_task_the_data_lacks(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text(SPEC.read_text().replace('task = "coarse"', 'task = "superclass"'))
    result = train(spec, "--out", tmp_path, code=2)
    assert "predicts task 'superclass'" in result.stderr and "'fine', 'coarse'" in result.stderr
    spec.write_text(SPEC.read_text().replace("classes = 12\n", "classes = 10\n"))
    result = train(spec, "--out", tmp_path, code=2)
    assert "declares 10 classes" in result.stderr


def test_unknown_dataset_and_select_metric(tmp_path):
    assert "unknown data set 'cifar10'" in train(SPEC, "--dataset", "cifar10", code=2).stderr
    spec = _variant(tmp_path, 'select = { metric = "val/fine/accuracy", mode = "max" }')
    result = train(spec, "--out", tmp_path, code=2)
    assert "watches 'val/fine/accuracy'" in result.stderr and "did you mean 'val/fine/acc'" in result.stderr


def test_missing_spec_file(tmp_path):
    assert "no such file" in train(tmp_path / "absent.toml", code=2).stderr


def test_json_of_run_files_is_strict(two_seeds):
    # NaN/inf never reach the JSON files (they are written as null), so any JSON reader can parse them.
    lines = (two_seeds[0] / "metrics.jsonl").read_text().splitlines()
    assert lines  # an empty file would pass the loop below vacuously
    for line in lines:
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_no_validation_split(tmp_path):
    text = SPEC.read_text().replace("val_fraction = 0.25", "val_fraction = 0.0")
    spec = tmp_path / "noval.toml"
    spec.write_text(text)
    result = train(spec, "--out", tmp_path, code=2)
    assert "watches 'val/fine/acc', but this run has no validation images" in result.stderr
    spec.write_text(text.replace('metric = "val/fine/acc", mode = "max"', 'metric = "train/loss", mode = "min"'))
    run_dir = run_dirs(train(spec, "--epochs", "1", "--out", tmp_path, "--quiet"))[0]
    assert [r["split"] for r in runs.read_metrics(run_dir)] == ["train"]
    assert runs.read_json(run_dir / "summary.json")["best_epoch"] == 1


def test_progress_bar_on_a_terminal(tmp_path, monkeypatch):
    """With a terminal the live bar runs (and is transient); the per-epoch lines remain."""
    import io

    from rich.console import Console

    from graphc.runtime.train.progress import EpochProgress

    monkeypatch.setattr("graphc.runtime.train.progress.REFRESH_S", 0.0)  # refresh the live numbers every batch
    seen = []
    real_advance = EpochProgress.advance
    monkeypatch.setattr(
        EpochProgress, "advance", lambda self, done, stats=None: (seen.append(stats), real_advance(self, done, stats))
    )
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=200)
    result = launch.train_command([SPEC], overrides=launch.Overrides(epochs=1), out=tmp_path, console=console)
    assert result[0].status == "completed"
    live = [s for s in seen if s]
    assert live and "img/s" in live[-1] and "fine" in live[-1] and "loss" in live[-1]
    assert "epoch 1/1  train loss" in buffer.getvalue()


def test_batch_size_one_with_batch_norm_is_refused_before_any_file(tmp_path):
    # tiny_train's fc block has BatchNorm1d, which cannot train on single-image batches.
    result = train(SPEC, "--batch-size", "1", "--limit-train", "4", "--out", tmp_path, code=2)
    assert "train.batch_size" in result.stderr and "node 'fc' has batch norm" in result.stderr
    assert not (tmp_path / "tiny_train").exists()


def test_normalize_that_does_not_fit_the_images_is_refused_before_any_file(tmp_path):
    spec = tmp_path / "norm.toml"
    text = SPEC.read_text().replace(
        'augment = { preset = "flip_crop", padding = 1 }',
        'augment = { preset = "flip_crop", padding = 1 }\nnormalize = { mean = [0.5, 0.5], std = [0.2, 0.2] }',
    )
    spec.write_text(text)
    result = train(spec, "--out", tmp_path, code=2)
    assert "data.normalize.mean" in result.stderr and "has 2 values, but the input has 3 channels" in result.stderr
    assert not (tmp_path / "tiny_train").exists()


def test_resume_after_a_kill_between_last_pt_and_best_pt(tmp_path):
    # Epoch 1 is always the best so far; a kill after its last.pt but before its best.pt
    # (and before summary.json) leaves no best.pt. Resuming must restore it from last.pt,
    # so the final test evaluation happens, on the epoch-1 weights.
    run_dir = run_dirs(train(SPEC, "--epochs", "1", "--out", tmp_path, "--quiet"))[0]
    expected = runs.read_json(run_dir / "summary.json")["test"]
    (run_dir / "best.pt").unlink()
    (run_dir / "summary.json").unlink()
    train("--resume", run_dir, "--quiet")
    summary = runs.read_json(run_dir / "summary.json")
    assert summary["status"] == "completed" and summary["best_epoch"] == 1
    assert summary["test"] == pytest.approx(expected, rel=1e-12)
    assert_same_weights(weights(run_dir, "best.pt"), weights(run_dir, "last.pt"))
