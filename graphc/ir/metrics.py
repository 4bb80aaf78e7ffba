"""The names of the metrics training logs for a model: from its heads and its label hierarchies.

One list for both sides: ``graphc.runtime.metrics.Meter`` logs exactly these names, in this
order, and ``build_graph`` checks ``train.select`` and ``train.early_stopping`` against
them, so ``graphc check`` and ``graphc train`` cannot disagree about what a model logs.

A metrics row (see runtime/runs/rundir.py) holds:

- ``loss``: the loss-weighted total;
- per head: ``TASK/loss`` then its type's metrics (:data:`TYPE_METRICS`): a classification head's
  ``TASK/acc`` and, with more than 10 classes, ``TASK/top5``; a binary head's ``acc, balanced_acc,
  auroc, f1, positive_rate``; a multilabel head's ``mean_auroc, map, example_f1``; a regression
  head's ``mae, rmse, r2, mean_mae`` (in the targets' units); where labels may be missing (a label
  table, CelebA) also ``TASK/labelled``, the images with the task's label (a count). Every other
  per-head metric is a mean over those images;
- per label hierarchy CHILD -> PARENT whose CHILD field has a head - every
  ``[data.hierarchy]`` table, and every chain of nested tables (fine -> coarse -> super gives
  fine -> super too): ``PARENT/acc_from_CHILD`` (the child head's prediction mapped to the
  parent, against the parent label) and, when PARENT has a head too,
  ``CHILD/consistency_with_PARENT`` (how often the child head's prediction maps to the
  parent head's prediction);
- ``mean_acc`` (the classification and binary heads' accuracies averaged) and ``weighted_acc``
  (averaged with those heads' ``loss_weight`` as weights): one number to select a multi-task model
  by; absent when the model has no such head.

With a ``[train] loss_weighting`` table, training rows also carry ``weight/TASK``: the weight
of each head's loss in force at the end of the epoch (runtime/train/weighting.py).

With ``[train] diagnostics = true`` training rows also carry the gradient-conflict
diagnostics (:func:`diagnostic_names`; the places come from graphc.ir.gradients, the numbers
from graphc.runtime/train/diagnostics.py). Each task's gradient is that of its weighted loss
(``loss_weight`` x its cross-entropy) averaged over the diagnostic batches:

- per shared node N and task T whose gradient reaches it: ``diag/N/norm/T``, the L2 norm of
  T's gradient on N's parameters;
- per pair of those tasks A, B, named in sorted order (A < B, whatever the spec's head order, so
  that every spec names a pair alike; runs of graphc before 0.4 named it in head order, which
  :func:`canonical_name` turns into this): ``diag/N/cos/A:B``, the cosine similarity of their
  gradients on N's parameters (negative: they pull N's parameters apart);
- per reused head H and task R reading it: ``diag/H/share/R``, R's share of the gradient on
  H's reused branch (graphc.ir.gradients.ReusedBranch: the nodes serving H's task alone),
  ``|g_R| / sum of |g_T| over the tasks T whose gradient reaches the branch``, norms over all
  the branch's parameters; 0 by construction when R's copy is detached (``reuse_gradient = false``);
- ``diag/time_s``: seconds the diagnostics took that epoch (not counted in ``time_s``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from itertools import combinations

from graphc.errors import did_you_mean
from graphc.ir.gradients import ReusedBranch, SharedNode

TOP5_MIN_CLASSES = 11  # top-5 accuracy only means something with more than 10 classes
TRAIN_ONLY_METRICS = ("lr", "images_per_s", "time_s")  # training rows only
MULTITASK_METRICS = ("mean_acc", "weighted_acc")
WEIGHT_PREFIX = "weight/"  # weight/TASK: the loss weights in force (training rows, with [train] loss_weighting)
# agg/weight/TASK, agg/conflict, agg/norm_ratio: what a gradient aggregator did (training rows, with [train] aggregator)
AGG_PREFIX = "agg/"


def measured_links(paths: Iterable[Sequence[str]], tasks: Iterable[str]) -> list[tuple[str, str]]:
    """``(child, ancestor)`` of the hierarchy paths (graphc.lang.hierarchy.hierarchy_paths) that get
    metrics: those whose child field has a head."""
    tasks = set(tasks)
    return [(path[0], path[-1]) for path in paths if path[0] in tasks]


# Per-head metrics of each head type, after TASK/loss (TASK/top5 only for classification heads of
# TOP5_MIN_CLASSES or more classes; see graphc.runtime.metrics for their definitions).
TYPE_METRICS = {
    "classification": ("acc",),
    "binary": ("acc", "balanced_acc", "auroc", "f1", "positive_rate"),
    "multilabel": ("mean_auroc", "map", "example_f1"),
    "regression": ("mae", "rmse", "r2", "mean_mae"),
}
# The head types with an accuracy: mean_acc and weighted_acc average theirs.
ACCURACY_TYPES = ("classification", "binary")
LABELLED = "labelled"  # TASK/labelled: the images of the split with the task's label (data sets with missing labels)


def metric_names(
    heads: Sequence[tuple[str, int] | tuple[str, int, str]],
    links: Sequence[tuple[str, str]],
    partial_labels: bool = False,
) -> list[str]:
    """Names of a metrics row, in order: ``heads`` are ``(task, classes)`` (a classification head) or
    ``(task, classes, type)`` in spec order (``classes``: the head's output units), ``links`` the
    ``(child, ancestor)`` pairs of :func:`measured_links`; ``partial_labels``: the data set's labels
    may be missing (a label table, CelebA), which adds ``TASK/labelled``. ``mean_acc`` and
    ``weighted_acc`` average the classification and binary heads' accuracies: none, none of them."""
    typed = [(head[0], head[1], head[2] if len(head) > 2 else "classification") for head in heads]
    tasks = {task for task, _, _ in typed}
    names = ["loss"]
    for task, classes, kind in typed:
        names += [f"{task}/loss"] + [f"{task}/{metric}" for metric in TYPE_METRICS[kind]]
        if kind == "classification" and classes >= TOP5_MIN_CLASSES:
            names.append(f"{task}/top5")
        if partial_labels:
            names.append(f"{task}/{LABELLED}")
    for child, parent in links:
        names.append(f"{parent}/acc_from_{child}")
        if parent in tasks:
            names.append(f"{child}/consistency_with_{parent}")
    return names + (list(MULTITASK_METRICS) if any(kind in ACCURACY_TYPES for _, _, kind in typed) else [])


def weight_metrics(tasks: Iterable[str], weighting: object | None) -> list[str]:
    """``weight/TASK`` per head when the spec has a ``[train] loss_weighting`` table (training rows only)."""
    return [] if weighting is None else [f"{WEIGHT_PREFIX}{task}" for task in tasks]


DIAGNOSTIC_PREFIX = "diag/"  # gradient-conflict diagnostics (training rows, with [train] diagnostics)


def diagnostic_names(shared: Sequence[SharedNode], branches: Sequence[ReusedBranch]) -> list[str]:
    """Names of the gradient-conflict diagnostics (training rows only), in order: per shared node
    its norms then its cosines, then the reuse shares, then ``diag/time_s``; none when there is
    nothing to measure (no node with parameters that two tasks' gradients reach)."""
    names = []
    for node in shared:
        names += [f"{DIAGNOSTIC_PREFIX}{node.name}/norm/{task}" for task in node.tasks]
        names += [cosine_name(node.name, a, b) for a, b in combinations(node.tasks, 2)]
    for branch in branches:
        names += [f"{DIAGNOSTIC_PREFIX}{branch.head}/share/{reader}" for reader in branch.readers]
    return names + [f"{DIAGNOSTIC_PREFIX}time_s"] if shared else []


def cosine_name(node: str, a: str, b: str) -> str:
    """``diag/NODE/cos/A:B`` of two tasks, in sorted order (one name for the pair in every spec)."""
    first, second = sorted((a, b))
    return f"{DIAGNOSTIC_PREFIX}{node}/cos/{first}:{second}"


def canonical_name(name: str) -> str:
    """A metric name as this graphc writes it: a cosine pair written in head order by graphc before
    0.4 (``diag/NODE/cos/fine:coarse``, also under ``train/``) in sorted order; any other name as it is."""
    found = _COSINE.fullmatch(name)
    if found is None:
        return name
    return f"{found[1]}{':'.join(sorted((found[2], found[3])))}"


_COSINE = re.compile(rf"((?:train/)?{DIAGNOSTIC_PREFIX}[^/]+/cos/)([^/:]+):([^/:]+)")


def watchable_metrics(names: Sequence[str], validation: bool, train_only: Sequence[str] = ()) -> list[str]:
    """What ``train.select`` and ``train.early_stopping`` may watch: ``train/NAME`` (with the
    training rows' timings and ``train_only``, e.g. :func:`weight_metrics`) and, when the run has
    validation images, ``val/NAME``."""
    train = [*names, *TRAIN_ONLY_METRICS, *train_only]
    return [f"train/{n}" for n in train] + ([f"val/{n}" for n in names] if validation else [])


def monitor_problem(metric: str, available: Sequence[str], val_fraction: float) -> tuple[str, str | None] | None:
    """``(message, hint)`` when a monitor watches ``metric`` but the run will not log it, else None.
    The same words from ``graphc check`` (build_graph) and from ``graphc train`` (which also finds
    out only from the data that a split has no validation images)."""
    if metric in available:
        return None
    if metric.startswith("val/") and not any(name.startswith("val/") for name in available):
        return (
            f"watches '{metric}', but this run has no validation images (data.val_fraction = {val_fraction}).",
            "set [data] val_fraction > 0, or watch a 'train/...' metric.",
        )
    if metric.startswith(f"train/{WEIGHT_PREFIX}") and not any(f"/{WEIGHT_PREFIX}" in name for name in available):
        return (
            f"watches '{metric}', but loss weights are logged only with a [train] loss_weighting table.",
            'add e.g. loss_weighting = { name = "fixed" } to [train], or watch another metric.',
        )
    if canonical_name(metric) != metric and canonical_name(metric) in available:
        return (
            f"watches '{metric}', which this model logs as '{canonical_name(metric)}' (a pair of tasks is named "
            "in sorted order since graphc 0.4).",
            f"watch '{canonical_name(metric)}'.",
        )
    return f"watches '{metric}', which this model does not log.", did_you_mean(metric, available)
