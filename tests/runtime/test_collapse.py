"""The collapsed-head rule (runtime/collapse.py), its table read back from files, and the
per-image predictions built from an evaluation's answers (runtime/runs/predictions.py)."""

from __future__ import annotations

import pytest
import torch

from graphc.errors import RunError
from graphc.runtime.collapse import COLLAPSE_RULE, collapsed_heads, read_collapsed, warning_lines
from graphc.runtime.metrics import HeadInfo
from graphc.runtime.runs.predictions import predictions_of, read_predictions, write_predictions
from graphc.runtime.scoring import Answers, final_test_indices


def metrics(acc: float, majority: float, balanced: float, task: str = "fly") -> dict[str, float]:
    return {f"{task}/acc": acc, f"{task}/majority_acc": majority, f"{task}/balanced_acc": balanced}


def test_accuracy_at_the_majority_class_is_collapsed():
    (entry,) = collapsed_heads(metrics(0.6021, 0.6018, 0.40), {"fly": 2}).values()
    assert entry["why"] == "accuracy 0.602 is within 1 point of the majority class's 0.602"
    assert (entry["acc"], entry["majority_acc"], entry["balanced_acc"], entry["chance"]) == (0.6021, 0.6018, 0.40, 0.5)


def test_balanced_accuracy_at_chance_is_collapsed_whatever_the_accuracy():
    found = collapsed_heads(metrics(0.80, 0.50, 0.255), {"fly": 4})
    assert found["fly"]["why"] == "balanced accuracy 0.255 is within 1 point of chance 0.250 (1/4)"
    both = collapsed_heads(metrics(0.5, 0.5, 0.5), {"fly": 2})["fly"]["why"]
    assert "majority class" in both and "chance" in both


def test_the_bounds_are_inclusive_and_one_point_wide():
    assert "fly" in collapsed_heads(metrics(0.61, 0.60, 0.9), {"fly": 2})  # exactly 1 point (float 0.0100...09)
    assert "fly" in collapsed_heads(metrics(0.59, 0.60, 0.9), {"fly": 2})  # either side
    assert collapsed_heads(metrics(0.6101, 0.60, 0.9), {"fly": 2}) == {}
    assert "fly" in collapsed_heads(metrics(0.9, 0.5, 0.51), {"fly": 2})
    assert collapsed_heads(metrics(0.9, 0.5, 0.5101), {"fly": 2}) == {}


def test_heads_without_numbers_are_not_judged():
    assert collapsed_heads({"fly/acc": float("nan"), "fly/majority_acc": 0.5}, {"fly": 2}) == {}
    assert collapsed_heads({}, {"fly": 2}) == {}
    assert "within 1 point" in COLLAPSE_RULE


def test_warning_lines_name_the_run_head_and_why():
    (line,) = warning_lines("runs/x/0-1", collapsed_heads(metrics(0.5, 0.5, 0.9), {"fly": 2}))
    assert line.startswith("runs/x/0-1: head 'fly' collapsed: accuracy 0.500 is within 1 point")


def test_a_collapsed_table_from_a_file_is_checked():
    good = collapsed_heads(metrics(0.5, 0.5, 0.9), {"fly": 2})
    assert read_collapsed(good, "summary.json") == good and read_collapsed(None, "summary.json") is None
    for bad in ([], {"fly": "x"}, {"fly": {"acc": 0.5}}, {"fly": {"why": "w", "acc": "high"}}):
        with pytest.raises(RunError, match="summary.json: 'collapsed'"):
            read_collapsed(bad, "summary.json")


def test_answers_become_a_predictions_file_with_the_images_once(tmp_path):
    heads = [HeadInfo("fly", 2, 1.0, 0.0)]
    answers = Answers(heads)
    answers.update({"fly": torch.tensor([[0.0, 1.0], [2.0, 0.0]])}, {"fly": torch.tensor([1, 1])})
    answers.update({"fly": torch.tensor([[0.0, 3.0]])}, {"fly": torch.tensor([0])})
    indices = final_test_indices(10, 3, 0).tolist()
    assert indices == sorted(indices) and len(set(indices)) == 3
    assert final_test_indices(10, None, 0).tolist() == final_test_indices(10, 10, 5).tolist() == list(range(10))
    built = predictions_of("test", "synthetic", indices, answers.collected(), {"fly": 2}, {"limit": 3, "seed": 0})
    assert built.heads["fly"].true == [1, 1, 0] and built.heads["fly"].predicted == [1, 0, 1]
    assert built.accuracy("fly") == pytest.approx(1 / 3)
    write_predictions(tmp_path / "p.json", built)
    assert read_predictions(tmp_path / "p.json") == built
    with pytest.raises(ValueError):
        predictions_of("test", "synthetic", indices[:2], answers.collected(), {"fly": 2}, {})
    with pytest.raises(ValueError):
        predictions_of("test", "synthetic", [2, 2, 3], answers.collected(), {"fly": 2}, {})
