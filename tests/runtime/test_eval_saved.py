"""`graphc eval` measures what the run measured: by default the run's own test images (its
--limit-test subset), so it reproduces summary.json's test numbers; --limit-test N and --all
choose others and say so; --save NAME keeps the evaluation in the run (runtime/runs/evaluations.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from graphc.errors import RunError
from graphc.runtime.runs import rundir as runs
from graphc.runtime.runs.evaluations import EVALUATION_FORMAT, read_evaluation, saved_evaluations
from graphc.runtime.runs.predictions import TEST_PREDICTIONS, read_predictions
from graphc.runtime.scoring import final_test_indices
from tests.conftest import TESTS, invoke, run_dir_of, train

SPEC = TESTS / "specs" / "tiny_train.toml"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    return run_dir_of(
        train(SPEC, "--epochs", "1", "--limit-train", "96", "--limit-test", "40", "--out", out, "--quiet")
    )


def eval_json(*args) -> tuple[dict, str]:
    result = invoke("eval", *args, "--json")
    return json.loads(result.stdout), result.stderr


def test_eval_on_test_reproduces_the_runs_own_test_numbers(run_dir):
    data, said = eval_json(run_dir, "--split", "test")
    summary = runs.read_json(run_dir / runs.SUMMARY)
    assert data["images"] == summary["test_images"] == 40
    assert data["subset"] == {"limit": 40, "seed": 0, "all": False}
    assert set(data["metrics"]) == set(summary["test"])
    for key, value in summary["test"].items():
        assert math.isclose(data["metrics"][key], value, abs_tol=1e-6), key
    assert "test: the run's 40 images (--limit-test 40, seed 0)" in said
    assert data["evaluated_on"] == "test: the run's 40 images (--limit-test 40, seed 0)"


def test_all_and_limit_test_choose_other_images_and_say_which(run_dir):
    everything, said = eval_json(run_dir, "--split", "test", "--all")
    assert everything["images"] == 120 and everything["subset"] == {"limit": None, "seed": 0, "all": True}
    assert "test: all 120 images (--all)" in said
    some, said = eval_json(run_dir, "--split", "test", "--limit-test", "10")
    assert some["images"] == 10 and some["subset"] == {"limit": 10, "seed": 0, "all": False}
    assert "test: 10 of the 120 images (--limit-test 10, seed 0)" in said
    table = invoke("eval", run_dir, "--split", "test").stdout
    assert "test: the run's 40 images (--limit-test 40, seed 0)" in table


def test_choosing_test_images_needs_the_test_split_and_one_choice(run_dir):
    assert "the val split is evaluated whole" in " ".join(invoke("eval", run_dir, "--all", code=2).stderr.split())
    said = invoke("eval", run_dir, "--split", "test", "--all", "--limit-test", "5", code=2).stderr
    assert "give one of them" in said
    assert "--save NAME" in invoke("eval", run_dir, "--overwrite", code=2).stderr


def test_save_keeps_the_evaluation_and_its_predictions_in_the_run(run_dir):
    result = invoke("eval", run_dir, "--split", "test", "--save", "best-test")
    folder = run_dir / "evaluations" / "best-test"
    assert f"saved {folder}" in " ".join(result.stdout.split())
    content = json.loads((folder / "evaluation.json").read_text())
    assert list(content) == [
        "format",
        "name",
        "split",
        "checkpoint",
        "metrics",
        "images",
        "subset",
        "graphc_version",
        "evaluated",
        "collapsed",
        "epoch",
    ]
    assert content["format"] == EVALUATION_FORMAT and content["checkpoint"] == "best.pt"
    summary = runs.read_json(run_dir / runs.SUMMARY)
    assert content["epoch"] == summary["best_epoch"]  # the epoch best.pt holds
    assert content["metrics"] == pytest.approx(summary["test"], abs=1e-6)
    assert content["collapsed"] == summary["collapsed"]
    saved = read_evaluation(run_dir, "best-test")
    assert (saved.name, saved.split, saved.images, saved.subset) == ("best-test", "test", 40, content["subset"])
    # the same images and answers as the run's own test pass
    own = read_predictions(run_dir / TEST_PREDICTIONS)
    assert saved.predictions.same_images(own) and saved.predictions.heads == own.heads
    assert saved.predictions.indices == final_test_indices(120, 40, 0).tolist()
    assert saved_evaluations(run_dir) == ["best-test"]


def test_saving_over_a_name_needs_overwrite(run_dir):
    invoke("eval", run_dir, "--split", "test", "--save", "twice")
    said = " ".join(invoke("eval", run_dir, "--split", "test", "--all", "--save", "twice", code=2).stderr.split())
    assert "an evaluation named 'twice' is already saved" in said and "--overwrite" in said
    assert read_evaluation(run_dir, "twice").images == 40  # untouched
    invoke("eval", run_dir, "--split", "test", "--all", "--save", "twice", "--overwrite")
    assert read_evaluation(run_dir, "twice").images == 120


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "..", "", "name with space", "x" * 101, "é"])
def test_an_unsafe_name_is_refused_before_anything_runs(run_dir, name):
    said = " ".join(invoke("eval", run_dir, "--split", "test", "--save", name, code=2).stderr.split())
    assert "may hold only letters, digits" in said
    assert not (run_dir / "escape").exists() and not (run_dir.parent / "escape").exists()


def test_a_damaged_saved_evaluation_is_a_message(run_dir):
    invoke("eval", run_dir, "--split", "test", "--save", "damaged")
    path = run_dir / "evaluations" / "damaged" / "evaluation.json"
    content = json.loads(path.read_text())
    for bad, words in (
        ({**content, "images": 41}, "says 41 of the test split"),
        ({**content, "metrics": {"fine/acc": "high"}}, "metric 'fine/acc'"),
        ({**content, "subset": {"limit": 0, "seed": 0, "all": False}}, "'subset'"),
        ({**content, "split": "train"}, "'split'"),
        ({**content, "format": "graphc-evaluation/9"}, "is not 'graphc-evaluation/1'"),
        ({**content, "collapsed": {"fine": {"acc": "x", "why": "w"}}}, "field 'acc'"),
    ):
        path.write_text(json.dumps(bad))
        with pytest.raises(RunError, match=words):
            read_evaluation(run_dir, "damaged")
    with pytest.raises(RunError, match="no saved evaluation named 'missing'"):
        read_evaluation(run_dir, "missing")
