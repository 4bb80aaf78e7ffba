"""Collapsed heads: a head whose answers are no better than a constant answer would be.

A multi-task model can let one head collapse - answer (almost) always the same class - while the
others learn, and its accuracy can still look respectable on an imbalanced split. The rule, judged
on one evaluation's metrics (a run's final test pass, ``graphc eval``)::

    collapsed = |acc - majority_acc| <= 0.01   or   |balanced_acc - 1/classes| <= 0.01

``majority_acc`` is the accuracy of always answering the split's commonest class and
``balanced_acc`` the mean per-class accuracy (graphc.runtime.metrics.Confusion.baselines): a
constant answer scores exactly the first, and exactly chance on the second, whatever the
imbalance. Both bounds are inclusive (a float tolerance keeps 0.61 vs 0.60 inside).

Classification and binary heads are judged (a binary head - one output - answers one of two
classes, yes or no: chance is 1/2); multilabel and regression heads have no accuracy and are not.
Each number is over the images with the head's label.

summary.json's ``"collapsed"`` and an evaluation's (runtime/runs/evaluations.py) hold
:func:`collapsed_heads`' result: ``{TASK: {"acc", "majority_acc", "balanced_acc", "chance",
"why"}}``, empty when no head collapsed, absent or null when nothing was judged (--no-test);
``"collapse_rule"`` holds :data:`COLLAPSE_RULE`. :func:`read_collapsed` checks such a table read
from a file. Pure Python: no torch needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from graphc.errors import RunError

COLLAPSE_MARGIN = 0.01  # one percentage point, inclusive
_TOLERANCE = 1e-9  # float rounding: 0.61 - 0.60 is 0.010000000000000009
COLLAPSE_RULE = (
    "a head is collapsed when its accuracy is within 1 point (0.01, inclusive) of the majority-class "
    "accuracy (always answering the split's commonest class), or its balanced accuracy (mean per-class "
    "accuracy) is within 1 point of chance (1/classes); judged on the test pass"
)
ENTRY_KEYS = ("acc", "majority_acc", "balanced_acc", "chance", "why")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def collapsed_heads(metrics: Mapping[str, Any], classes: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """The collapsed heads of one evaluation: ``metrics`` flat as summary.json's ``"test"``
    (``TASK/acc``, ``TASK/majority_acc``, ``TASK/balanced_acc``), ``classes`` ``{TASK: classes}``
    in head order (a head's output units: a binary head's 1 counts as its two answers). A head whose
    numbers are missing or not finite (no images; a multilabel or regression head) is not judged."""
    found: dict[str, dict[str, Any]] = {}
    for task, count in classes.items():
        count = 2 if count == 1 else count  # one output: a binary head, yes or no
        acc = _number(metrics.get(f"{task}/acc"))
        majority = _number(metrics.get(f"{task}/majority_acc"))
        balanced = _number(metrics.get(f"{task}/balanced_acc"))
        if acc is None or count < 1:
            continue
        chance = 1.0 / count
        reasons = []
        if majority is not None and abs(acc - majority) <= COLLAPSE_MARGIN + _TOLERANCE:
            reasons.append(f"accuracy {acc:.3f} is within 1 point of the majority class's {majority:.3f}")
        if balanced is not None and abs(balanced - chance) <= COLLAPSE_MARGIN + _TOLERANCE:
            reasons.append(f"balanced accuracy {balanced:.3f} is within 1 point of chance {chance:.3f} (1/{count})")
        if reasons:
            found[task] = {
                "acc": acc,
                "majority_acc": majority,
                "balanced_acc": balanced,
                "chance": chance,
                "why": "; ".join(reasons),
            }
    return found


def warning_lines(run: str, collapsed: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per collapsed head of ``run`` (a run directory or a label), for a warning."""
    return [
        f"{run}: head '{task}' collapsed: {entry['why']} (it answers little better than a constant class)."
        for task, entry in collapsed.items()
    ]


def read_collapsed(content: Any, path: Path | str) -> dict[str, dict[str, Any]] | None:
    """A ``"collapsed"`` table read from a file (``path`` names it): None when not judged (null or
    absent: pass ``content`` None), else every entry checked; a RunError naming the first wrong one."""
    if content is None:
        return None
    if not isinstance(content, dict):
        raise RunError(f"{path}: 'collapsed' is not a table of heads (a JSON object). The file is damaged; delete it.")
    checked: dict[str, dict[str, Any]] = {}
    for task, entry in content.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("why"), str):
            raise RunError(f"{path}: 'collapsed' head '{task}' has no 'why' text. The file is damaged; delete it.")
        for key in ENTRY_KEYS[:-1]:
            value = entry.get(key)
            if value is not None and _number(value) is None:
                raise RunError(
                    f"{path}: 'collapsed' head '{task}' field '{key}' is {str(value)[:40]!r}, not a number. "
                    "The file is damaged; delete it."
                )
        checked[task] = {key: entry.get(key) for key in ENTRY_KEYS}
    return checked
