"""Saved evaluations of a run: ``graphc eval RUN --save NAME`` keeps what it measured in the run.

Each saved evaluation is a folder ``RUN/evaluations/NAME/`` holding two files:

- ``evaluation.json`` (format ``graphc-evaluation/1``)::

      {"format": "graphc-evaluation/1",
       "name": "NAME",
       "split": "test",                   # or "val"
       "checkpoint": "best.pt",           # or "last.pt"
       "metrics": {"loss": .., "fine/acc": .., "fine/majority_acc": .., ...},  # flat, as summary.json's "test"
       "images": 1000,                    # how many images were evaluated
       "subset": {"limit": 1000, "seed": 0, "all": false},  # which: --limit-test's N and its seed, or all
       "graphc_version": "0.4.0",
       "evaluated": "2026-12-06T12:00:00+00:00",   # ISO 8601, UTC
       "collapsed": {TASK: {...}},        # as summary.json's (graphc.runtime.collapse)
       "epoch": 12}                       # the epoch the checkpoint holds

- ``SPLIT_predictions.json`` (``test_predictions.json`` for the test split): each image's true and
  predicted class per head, format ``graphc-predictions/1`` (runtime/runs/predictions.py).

The predictions are written first and evaluation.json last, so a folder with evaluation.json is
complete. :func:`read_evaluation` (what graphc report calls) checks both files and that they agree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from graphc.errors import RunError, UsageError
from graphc.files import refuse_planted_link
from graphc.runtime.collapse import read_collapsed
from graphc.runtime.runs.predictions import Predictions, read_predictions, write_predictions
from graphc.runtime.runs.rundir import read_json, write_json

EVALUATION_FORMAT = "graphc-evaluation/1"
EVALUATIONS = "evaluations"  # RUN/evaluations/NAME/
EVALUATION_FILE = "evaluation.json"
# A name is one plain file name: no separator, no leading dot (no '.', '..' or hidden folder).
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")


def predictions_file(split: str) -> str:
    """The predictions file of a saved evaluation of ``split``: ``test_predictions.json`` for the test split."""
    return f"{split}_predictions.json"


def check_name(name: str, option: str = "--save") -> str:
    """``name`` when it is a safe folder name (letters, digits, '-', '_', '.'; not starting with '.'; at
    most 100 characters), else a UsageError saying what to give."""
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"{option} {name!r}: an evaluation's name becomes a folder name under RUN/{EVALUATIONS}/, so it may "
            "hold only letters, digits, '-', '_' and '.', not start with '.', and be at most 100 characters "
            f"(e.g. {option} best-test)."
        )
    return name


def evaluation_dir(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / EVALUATIONS / check_name(name)


def check_new(run_dir: Path, name: str, overwrite: bool) -> Path:
    """The folder ``--save NAME`` writes, refused (UsageError) when it holds a saved evaluation and
    ``overwrite`` is not given: checked before anything is evaluated."""
    folder = evaluation_dir(run_dir, name)
    if (folder / EVALUATION_FILE).exists() and not overwrite:
        raise UsageError(
            f"{folder}: an evaluation named '{name}' is already saved in the run. Give another --save NAME, "
            "or --overwrite to replace it."
        )
    return folder


@dataclass(frozen=True)
class Evaluation:
    """A saved evaluation, as :func:`read_evaluation` checked it."""

    name: str
    split: str
    checkpoint: str
    metrics: dict[str, float | None]
    images: int
    subset: dict[str, Any]
    graphc_version: str | None
    evaluated: str
    collapsed: dict[str, dict[str, Any]] | None
    predictions: Predictions
    path: Path  # the folder
    epoch: int | None = None  # the epoch the checkpoint holds (None: saved by graphc 0.4.0 before it was written)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": EVALUATION_FORMAT,
            "name": self.name,
            "split": self.split,
            "checkpoint": self.checkpoint,
            "metrics": dict(self.metrics),
            "images": self.images,
            "subset": dict(self.subset),
            "graphc_version": self.graphc_version,
            "evaluated": self.evaluated,
            "collapsed": self.collapsed,
            "epoch": self.epoch,
        }


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_evaluation(run_dir: Path, evaluation: Evaluation) -> Path:
    """Write a saved evaluation's folder (predictions, then evaluation.json); returns the folder.
    OSError as open() raises it (the caller words it)."""
    base = Path(run_dir) / EVALUATIONS
    folder = evaluation_dir(run_dir, evaluation.name)
    for path in (base, folder):  # folders graphc makes itself: never through a planted link
        refuse_planted_link(path)
        path.mkdir(exist_ok=True)
    (folder / EVALUATION_FILE).unlink(missing_ok=True)  # incomplete until it is written again
    write_predictions(folder / predictions_file(evaluation.split), evaluation.predictions)
    write_json(folder / EVALUATION_FILE, evaluation.to_json())
    return folder


def _damaged(path: Path, what: str) -> RunError:
    return RunError(f"{path}: {what}. The file is damaged or was edited; delete the folder or save it again.")


def read_evaluation(run_dir: Path, name: str) -> Evaluation:
    """``RUN/evaluations/NAME``, both files checked and checked against each other; a RunError naming
    the file and its first wrong field (UsageError for a name that cannot be an evaluation's)."""
    folder = evaluation_dir(run_dir, name)
    path = folder / EVALUATION_FILE
    if not path.is_file():
        raise RunError(f"{folder}: no saved evaluation named '{name}' in {run_dir} (no {EVALUATION_FILE}).")
    content = read_json(path)
    if not isinstance(content, dict):
        raise _damaged(path, "not a graphc evaluation (a JSON object was expected)")
    if content.get("format") != EVALUATION_FORMAT:
        raise RunError(
            f"{path}: format {str(content.get('format'))[:40]!r} is not {EVALUATION_FORMAT!r}, the one this graphc reads."
        )
    if content.get("name") != name:
        raise _damaged(path, f"'name' is {str(content.get('name'))[:40]!r}, not the folder's name '{name}'")
    split, checkpoint = content.get("split"), content.get("checkpoint")
    if split not in ("val", "test"):
        raise _damaged(path, f"'split' is {str(split)[:40]!r}, expected 'val' or 'test'")
    if checkpoint not in ("best.pt", "last.pt"):
        raise _damaged(path, f"'checkpoint' is {str(checkpoint)[:40]!r}, expected 'best.pt' or 'last.pt'")
    metrics = content.get("metrics")
    if not isinstance(metrics, dict):
        raise _damaged(path, "'metrics' is not a table")
    for key, value in metrics.items():
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
        ):
            raise _damaged(path, f"metric '{key}' is {str(value)[:40]!r}, not a number or null")
    images = content.get("images")
    if type(images) is not int or images < 0:
        raise _damaged(path, f"'images' is {str(images)[:40]!r}, not a whole number >= 0")
    subset = content.get("subset")
    if (
        not isinstance(subset, dict)
        or not (subset.get("limit") is None or (type(subset.get("limit")) is int and subset["limit"] >= 1))
        or type(subset.get("seed")) is not int
        or not isinstance(subset.get("all"), bool)
    ):
        raise _damaged(
            path, "'subset' is not {'limit': a whole number or null, 'seed': a whole number, 'all': true or false}"
        )
    version, evaluated = content.get("graphc_version"), content.get("evaluated")
    if not (version is None or isinstance(version, str)) or not isinstance(evaluated, str):
        raise _damaged(path, "'graphc_version' or 'evaluated' is not text")
    epoch = content.get("epoch")
    if epoch is not None and (type(epoch) is not int or epoch < 0):
        raise _damaged(path, f"'epoch' is {str(epoch)[:40]!r}, not a whole number >= 0 or null")
    collapsed = read_collapsed(content.get("collapsed"), path)
    predictions = read_predictions(folder / predictions_file(split))
    if predictions.split != split or len(predictions.indices) != images:
        raise _damaged(
            folder / predictions_file(split),
            f"it holds {len(predictions.indices)} images of the {predictions.split} split, but {EVALUATION_FILE} "
            f"says {images} of the {split} split",
        )
    return Evaluation(
        name,
        split,
        checkpoint,
        {k: (None if v is None else float(v)) for k, v in metrics.items()},
        images,
        dict(subset),
        version,
        evaluated,
        collapsed,
        predictions,
        folder,
        epoch,
    )


def saved_evaluations(run_dir: Path) -> list[str]:
    """The names of a run's saved evaluations (folders with an evaluation.json), sorted."""
    base = Path(run_dir) / EVALUATIONS
    if not base.is_dir() or base.is_symlink():
        return []
    return sorted(p.name for p in base.iterdir() if _NAME.fullmatch(p.name) and (p / EVALUATION_FILE).is_file())
