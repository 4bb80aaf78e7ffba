"""The final test pass's per-image predictions (RUN/test_predictions.json), the collapsed heads it
judges (summary.json "collapsed", a warning at the end of graphc train), what the run record keeps
of what changes numbers (torch_version, threads) - also with several processes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import graphc.runtime.train.loop as training
from graphc.runtime.collapse import COLLAPSE_RULE
from graphc.runtime.runs import rundir as runs
from graphc.runtime.runs.predictions import TEST_PREDICTIONS, read_predictions
from graphc.runtime.scoring import final_test_indices
from tests.conftest import TESTS, run_dir_of, train

SPEC = TESTS / "specs" / "tiny_train.toml"
FLAGS = ["--epochs", "1", "--limit-train", "96", "--limit-val", "32", "--quiet"]


def check_predictions_match_summary(run_dir: Path, limit: int | None) -> None:
    """The file covers the run's test images once each, and its accuracies are summary.json's exactly."""
    summary = runs.read_json(run_dir / runs.SUMMARY)
    config = runs.read_json(run_dir / runs.CONFIG)
    predictions = read_predictions(run_dir / TEST_PREDICTIONS)
    assert summary["test_predictions"] == TEST_PREDICTIONS
    assert predictions.split == "test" and predictions.dataset == config["dataset"] == "synthetic"
    assert predictions.subset == {"limit": limit, "seed": config["data"]["split_seed"]}
    expected = final_test_indices(120, limit, config["data"]["split_seed"]).tolist()  # tiny_train: 120 test images
    assert predictions.indices == expected and len(set(expected)) == summary["test_images"]
    assert list(predictions.heads) == ["fine", "coarse"]
    assert (predictions.heads["fine"].classes, predictions.heads["coarse"].classes) == (12, 3)
    for task in ("fine", "coarse"):
        assert math.isclose(predictions.accuracy(task), summary["test"][f"{task}/acc"], abs_tol=1e-9)


@pytest.fixture(scope="module")
def limited(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("limited")
    return run_dir_of(train(SPEC, *FLAGS, "--limit-test", "50", "--out", out))


def test_the_test_pass_writes_each_images_answers_and_they_are_the_summarys_accuracies(limited):
    check_predictions_match_summary(limited, 50)
    predictions = read_predictions(limited / TEST_PREDICTIONS)
    # the true classes are the data set's labels of those images
    from graphc.runtime.runs.record import load_run_data, read_record, spec_of_run

    record = read_record(limited)
    test = load_run_data(spec_of_run(limited, record), record).test
    for task in ("fine", "coarse"):
        assert predictions.heads[task].true == test.labels[task][predictions.indices].tolist()
    assert json.loads((limited / TEST_PREDICTIONS).read_text())["format"] == "graphc-predictions/1"


def test_the_whole_test_split_and_no_test_pass(tmp_path):
    whole = run_dir_of(train(SPEC, *FLAGS, "--out", tmp_path / "whole"))
    check_predictions_match_summary(whole, None)
    skipped = run_dir_of(train(SPEC, *FLAGS, "--no-test", "--out", tmp_path / "none"))
    summary = runs.read_json(skipped / runs.SUMMARY)
    assert not (skipped / TEST_PREDICTIONS).exists()
    assert summary["test_predictions"] is None and summary["collapsed"] is None  # not judged
    assert summary["collapse_rule"] == COLLAPSE_RULE


def test_summary_says_no_head_collapsed_when_none_did(limited):
    summary = runs.read_json(limited / runs.SUMMARY)
    assert summary["collapsed"] == {} or all(
        set(entry) == {"acc", "majority_acc", "balanced_acc", "chance", "why"}
        for entry in summary["collapsed"].values()
    )
    assert "within 1 point" in summary["collapse_rule"]


def test_a_head_answering_one_class_is_collapsed_in_the_summary_and_warned_about(tmp_path, monkeypatch):
    real = training.evaluate_split

    class ConstantCoarse(torch.nn.Module):
        """The run's model with its coarse head always answering class 0."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            outputs = dict(self.model(x))
            logits = torch.zeros_like(outputs["coarse"])
            logits[:, 0] = 1.0
            outputs["coarse"] = logits
            return outputs

    def constant_test_pass(run, split, **kwargs):
        if kwargs.get("answers") is None:  # the validation passes stay as they are
            return real(run, split, **kwargs)
        model, run.model = run.model, ConstantCoarse(run.model)
        try:
            return real(run, split, **kwargs)
        finally:
            run.model = model

    monkeypatch.setattr(training, "evaluate_split", constant_test_pass)
    result = train(SPEC, *FLAGS, "--out", tmp_path)
    run_dir = run_dir_of(result)
    summary = runs.read_json(run_dir / runs.SUMMARY)
    coarse = summary["collapsed"]["coarse"]
    assert coarse["chance"] == pytest.approx(1 / 3) and coarse["balanced_acc"] == pytest.approx(1 / 3)
    assert coarse["acc"] == summary["test"]["coarse/acc"]
    assert "balanced accuracy 0.333 is within 1 point of chance 0.333 (1/3)" in coarse["why"]
    assert "fine" not in summary["collapsed"] or "within 1 point" in summary["collapsed"]["fine"]["why"]
    assert all(p == 0 for p in read_predictions(run_dir / TEST_PREDICTIONS).heads["coarse"].predicted)
    said = " ".join(result.stderr.split())
    assert f"warning: {run_dir}: head 'coarse' collapsed: " in said
    assert "balanced accuracy 0.333 is within 1 point of chance 0.333 (1/3)" in said


def test_config_records_the_torch_version_and_threads(limited):
    config = runs.read_json(limited / runs.CONFIG)
    assert config["torch_version"] == torch.__version__ and config["threads"] >= 1


def test_a_resume_drops_the_earlier_test_pass_and_records_its_torch(limited, tmp_path):
    import shutil

    run_dir = Path(shutil.copytree(limited, tmp_path / "tiny_train" / limited.name))
    before = (run_dir / TEST_PREDICTIONS).read_text()
    train("--resume", run_dir, "--epochs", "2", "--quiet")
    check_predictions_match_summary(run_dir, 50)  # the new best.pt's answers, for the same images
    assert read_predictions(run_dir / TEST_PREDICTIONS).indices == json.loads(before)["indices"]
    session = runs.read_json(run_dir / runs.CONFIG)["resumed"][-1]
    assert session["torch_version"] == torch.__version__ and session["threads"] >= 1


@pytest.mark.slow
def test_with_two_processes_the_file_covers_every_test_image_once(tmp_path):
    run_dir = run_dir_of(train(SPEC, *FLAGS, "--nproc", 2, "--out", tmp_path))
    check_predictions_match_summary(run_dir, None)
    config = runs.read_json(run_dir / runs.CONFIG)
    assert config["nproc"] == 2 and config["threads"] >= 1 and config["torch_version"] == torch.__version__
