"""Per-image predictions of a test pass: which images, and per head the true and the predicted class.

A run's final test pass writes ``test_predictions.json`` beside summary.json (and ``graphc eval
--save NAME`` writes one per saved evaluation), so that what the summary's accuracies summarise
can be looked at image by image without re-running the model: the report's paired test over
images (McNemar's exact test on two runs' answers to the same images), per-class accuracy and
confusion matrices.

Format ``graphc-predictions/1``, plain JSON (never a pickle)::

    {"format": "graphc-predictions/1",
     "split": "test",
     "dataset": "cifar100",          # the data set the images are from (the run record's)
     "subset": {"limit": 1000, "seed": 0},  # --limit-test's N and the seed that drew them; limit null: all
     "indices": [3, 17, ...],        # each image's index in the data set's test split, ascending
     "heads": {"fine": {"classes": 100, "true": [..], "predicted": [..]}, ...}}

A true class of -1 is a missing label (a label table's empty cell): that image counts for no
accuracy and no paired test. Binary heads are written as two classes (0 no, 1 yes); multilabel and
regression heads have no per-image class and are not written.

Every list of a head has one entry per index. Two files cover the same images exactly when their
``dataset`` and ``indices`` are equal; that, not the subset's settings, is what the report checks.
Files come from elsewhere (a copied run): :func:`read_predictions` checks every field and names
the first wrong one in a RunError, never a traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphc.errors import RunError
from graphc.files import atomic_write_text
from graphc.runtime.runs.rundir import read_json

PREDICTIONS_FORMAT = "graphc-predictions/1"
TEST_PREDICTIONS = "test_predictions.json"  # in the run directory, beside summary.json


@dataclass(frozen=True)
class HeadPredictions:
    classes: int
    true: list[int]
    predicted: list[int]

    def correct(self) -> list[bool]:
        """Per labelled image (true not -1: a missing label), whether the prediction was right."""
        return [t == p for t, p in zip(self.true, self.predicted) if t >= 0]


@dataclass(frozen=True)
class Predictions:
    split: str
    dataset: str | None
    indices: list[int]
    heads: dict[str, HeadPredictions]
    subset: dict[str, Any] = field(default_factory=dict)

    def accuracy(self, task: str) -> float:
        """The fraction of the labelled images head ``task`` got right (NaN for none): summary.json's ``TASK/acc``."""
        correct = self.heads[task].correct()
        return sum(correct) / len(correct) if correct else float("nan")

    def same_images(self, other: Predictions) -> bool:
        """Whether both files answer for exactly the same images of the same data set."""
        return self.dataset == other.dataset and self.split == other.split and self.indices == other.indices

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PREDICTIONS_FORMAT,
            "split": self.split,
            "dataset": self.dataset,
            "subset": dict(self.subset),
            "indices": list(self.indices),
            "heads": {
                task: {"classes": h.classes, "true": list(h.true), "predicted": list(h.predicted)}
                for task, h in self.heads.items()
            },
        }


def predictions_of(
    split: str,
    dataset: str | None,
    indices: list[int],
    answers: dict[str, tuple[list[int], list[int]]],
    classes: dict[str, int],
    subset: dict[str, Any],
) -> Predictions:
    """A Predictions from an evaluation's answers (graphc.runtime.scoring.Answers.collected: per head
    ``(true, predicted)`` in the order of ``indices``), checked to cover every index once."""
    if any(a >= b for a, b in zip(indices, indices[1:])):
        raise ValueError("indices must be strictly ascending (each image once)")
    for task, (true, predicted) in answers.items():
        if not (len(true) == len(predicted) == len(indices)):
            raise ValueError(f"head {task}: {len(true)} answers for {len(indices)} images")
    heads = {task: HeadPredictions(classes[task], list(t), list(p)) for task, (t, p) in answers.items()}
    return Predictions(split, dataset, list(indices), heads, dict(subset))


def write_predictions(path: Path, predictions: Predictions) -> None:
    # compact: 10,000 images x 2 heads is about 150 kB this way, three times that indented
    atomic_write_text(path, json.dumps(predictions.to_json(), separators=(",", ":")) + "\n")


def _int_list(value: Any, where: str, path: Path, low: int, high: int | None) -> list[int]:
    if not isinstance(value, list) or not all(type(v) is int for v in value):
        raise RunError(f"{path}: {where} is not a list of whole numbers. The file is damaged; delete it.")
    bad = [v for v in value if v < low or (high is not None and v >= high)]
    if bad:
        bound = f"[{low}, {high})" if high is not None else f">= {low}"
        raise RunError(f"{path}: {where} holds {bad[0]}, outside {bound}. The file is damaged; delete it.")
    return value


def read_predictions(path: Path) -> Predictions:
    """A predictions file, every field checked (a RunError naming the file and the field)."""
    path = Path(path)
    content = read_json(path)
    if not isinstance(content, dict):
        raise RunError(f"{path}: not a graphc predictions file (a JSON object was expected).")
    if content.get("format") != PREDICTIONS_FORMAT:
        raise RunError(
            f"{path}: format {content.get('format')!r} is not {PREDICTIONS_FORMAT!r}, the one this graphc reads."
        )
    split, dataset, subset = content.get("split"), content.get("dataset"), content.get("subset", {})
    if not isinstance(split, str) or not (dataset is None or isinstance(dataset, str)) or not isinstance(subset, dict):
        raise RunError(f"{path}: 'split', 'dataset' or 'subset' has the wrong type. The file is damaged; delete it.")
    indices = _int_list(content.get("indices"), "'indices'", path, 0, None)
    if any(a >= b for a, b in zip(indices, indices[1:])):
        raise RunError(f"{path}: 'indices' are not strictly ascending. The file is damaged; delete it.")
    heads_content = content.get("heads")
    if not isinstance(heads_content, dict) or not heads_content:
        raise RunError(f"{path}: 'heads' is missing or empty. The file is damaged; delete it.")
    heads: dict[str, HeadPredictions] = {}
    for task, head in heads_content.items():
        if not isinstance(head, dict) or type(head.get("classes")) is not int or head["classes"] < 1:
            raise RunError(f"{path}: head '{task}' has no whole 'classes' >= 1. The file is damaged; delete it.")
        classes = head["classes"]
        true = _int_list(head.get("true"), f"head '{task}' 'true'", path, -1, classes)  # -1: a missing label
        predicted = _int_list(head.get("predicted"), f"head '{task}' 'predicted'", path, 0, classes)
        if not (len(true) == len(predicted) == len(indices)):
            raise RunError(
                f"{path}: head '{task}' has {len(true)} true and {len(predicted)} predicted classes for "
                f"{len(indices)} images. The file is damaged; delete it."
            )
        heads[task] = HeadPredictions(classes, true, predicted)
    return Predictions(split, dataset, indices, heads, subset)
