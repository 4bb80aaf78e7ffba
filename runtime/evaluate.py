"""``graphc eval RUN_DIR``: a run's model, scored on its data.

``evaluate`` (runtime/scoring.py) runs a model over a split in eval mode and returns a metrics
dict with the names of a metrics row (``loss``, ``fine/acc``, ...). ``evaluate_run``
rebuilds a finished (or interrupted) run's model from its ``spec.toml`` and its
record (``config.json``, runtime/runs/record.py), loads ``best.pt`` or ``last.pt``
and evaluates it on the same data the run used, in the run's recorded execution. On the test split
it evaluates, unless told otherwise, the images the run's own final test pass evaluated (its
``--limit-test`` subset, drawn by the same function: graphc.runtime.scoring.final_test_indices), so
that it reproduces summary.json's ``"test"``; ``save_evaluation`` keeps the result in the run
(runtime/runs/evaluations.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import graphc
from graphc.errors import RunError, UsageError
from graphc.ir.graph import Graph
from graphc.runtime.allocator import keep_freed_memory
from graphc.runtime.collapse import collapsed_heads
from graphc.runtime.device import evaluation_execution, resolve_device
from graphc.runtime.metrics import (
    Confusion,
    heads_of,
    hierarchies_of,
    logged_weights,
    recalls,
    reweight_loss,
    targets_of,
)
from graphc.runtime.runs import rundir as runs
from graphc.runtime.runs.checkpoint import load_checkpoint
from graphc.runtime.runs.evaluations import Evaluation, now, write_evaluation
from graphc.runtime.runs.predictions import Predictions, predictions_of
from graphc.runtime.runs.record import load_run_data, read_record, spec_of_run
from graphc.runtime.runs.weights import load_trained
from graphc.runtime.scoring import Answers, eval_batch_size, evaluate, final_test_indices

# --------------------------------------------------------------------------- a run directory's model


@dataclass
class RunEvaluation:
    run_dir: Path
    split: str
    checkpoint: str
    epoch: int
    device: str
    graph: Graph
    metrics: dict[str, float]  # a metrics row's names, plus TASK/majority_acc and TASK/balanced_acc
    # task -> int64 (true, predicted): with --confusion only
    confusion: dict[str, torch.Tensor] = field(default_factory=dict)
    # task -> (images, correct answers) of each true class, int64 (classes,) each: O(classes), always there
    class_counts: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    # task -> each label's AUROC of a multilabel head (NaN: one answer only among its labelled images)
    label_aurocs: dict[str, list[float]] = field(default_factory=dict)
    class_names: dict[str, list[str]] = field(default_factory=dict)  # label field -> class names
    precision: str = "fp32"  # what the model ran in: the run's own where the device can (evaluation_execution)
    images: int = 0  # how many images were evaluated
    subset: dict[str, Any] = field(default_factory=dict)  # {"limit", "seed", "all"}: which ones (test split)
    described: str = ""  # which images, in words: "test: the run's 1,000 images (--limit-test 1000, seed 0)"
    predictions: Predictions | None = None  # each image's true and predicted class per head
    collapsed: dict[str, dict[str, Any]] = field(default_factory=dict)  # runtime/collapse.py, on these images

    def per_class(self, task: str) -> list[dict[str, Any]]:
        """One entry per class of a head: its images in the split, how many the head got right, and
        the accuracy on them (None for a class the split lacks)."""
        support, correct = self.class_counts[task]
        names = self.class_names.get(task) or [str(i) for i in range(len(support))]
        return [
            {"class": name, "images": images, "correct": right, "acc": None if math.isnan(acc) else acc}
            for name, images, right, acc in zip(names, support.tolist(), correct.tolist(), recalls(support, correct))
        ]

    def per_label(self, task: str) -> list[dict[str, Any]]:
        """One entry per label of a multilabel head: its AUROC (None when its labelled images all have
        the same answer)."""
        aurocs = self.label_aurocs[task]
        names = self.class_names.get(task) or [str(i) for i in range(len(aurocs))]
        return [{"label": name, "auroc": None if math.isnan(a) else a} for name, a in zip(names, aurocs)]

    def to_dict(self, per_class: bool = False) -> dict[str, Any]:
        result = {
            "run": str(self.run_dir),
            "spec": self.graph.name,
            "split": self.split,
            "checkpoint": self.checkpoint,
            "epoch": self.epoch,
            "device": self.device,
            "precision": self.precision,
            "tasks": list(self.graph.tasks),
            "images": self.images,
            "subset": dict(self.subset),
            "evaluated_on": self.described,
            "metrics": self.metrics,
            "collapsed": self.collapsed,
        }
        if per_class:
            result["per_class"] = {task: self.per_class(task) for task in self.class_counts}
            result["per_class"].update({task: self.per_label(task) for task in self.label_aurocs})
        return result


def evaluate_run(
    run_dir: Path,
    split: str = "val",
    checkpoint: str = "best",
    device: str = "auto",
    data_dir: str | Path | None = None,
    confusion_matrix: bool = False,
    limit_test: int | None = None,
    all_test: bool = False,
) -> RunEvaluation:
    """Rebuild a run's model, load its ``best.pt``/``last.pt`` and evaluate it on ``split``. Per-class
    counts are always kept (O(classes)); ``confusion_matrix`` (graphc eval --confusion) also builds each
    head's classes x classes matrix, refused (UsageError) for a head past CONFUSION_MAX_CLASSES.

    On the test split: the run's own test images (its --limit-test N, drawn with data.split_seed,
    or all of them), or ``limit_test`` images drawn the same way, or with ``all_test`` every one."""
    if split not in ("val", "test"):
        raise UsageError(f"unknown split '{split}'; expected 'val' or 'test'.")
    if checkpoint not in ("best", "last"):
        raise UsageError(f"unknown checkpoint '{checkpoint}'; expected 'best' or 'last'.")
    if split != "test" and (limit_test is not None or all_test):
        raise UsageError(
            f"--{'all' if all_test else 'limit-test'} chooses test images; the {split} split is evaluated whole "
            "(give --split test, or drop it)."
        )
    if limit_test is not None and all_test:
        raise UsageError("--limit-test N evaluates N test images and --all every one; give one of them.")
    if limit_test is not None and limit_test < 1:
        raise UsageError(f"--limit-test must be at least 1, got {limit_test}.")
    keep_freed_memory()  # large evaluation batches reuse the last one's pages (runtime/allocator.py)
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    path = run_dir / (runs.BEST if checkpoint == "best" else runs.LAST)
    if not path.is_file():
        other = runs.LAST if checkpoint == "best" else runs.BEST
        hint = f" Try --checkpoint {'last' if checkpoint == 'best' else 'best'}." if (run_dir / other).is_file() else ""
        raise RunError(f"{path}: no such checkpoint; the run has not completed an epoch yet.{hint}")
    state = load_checkpoint(path)
    spec = spec_of_run(run_dir, record)
    target = resolve_device(device)
    dataset = load_run_data(spec, record, data_dir)
    graph = graphc.build_graph(spec, classes=dataset.classes)
    model, _ = load_trained(graph, path, state)  # names the node whose weights do not fit
    heads = targets_of(heads_of(graph), record, dataset)  # a regression head's units, as the run trained
    data_split = dataset.val if split == "val" else dataset.test
    if len(data_split) == 0:
        raise RunError(
            f"{run_dir}: the run's data has no {split} images (data.val_fraction = {spec.data.val_fraction})."
        )
    indices, subset, described = _images(record, spec.data.split_seed, split, len(data_split), limit_test, all_test)
    if len(indices) < len(data_split):
        data_split = data_split.subset(indices)
    execution = evaluation_execution(record.execution, target)  # as the run's logged rows were computed
    precision = execution.precision
    batch_size = eval_batch_size(spec.train.batch_size)
    try:
        model.to(target)
        if execution.channels_last:
            model.to(memory_format=torch.channels_last)
        confusion = Confusion(heads, target, matrix=confusion_matrix)
        answers = Answers(heads)
        metrics = evaluate(
            model,
            data_split,
            heads,
            hierarchies_of(dataset.hierarchy, graph.tasks),
            device=target,
            precision=precision,
            normalize=spec.data.normalize,
            batch_size=batch_size,
            confusion=confusion,
            answers=answers,
        )
    except torch.OutOfMemoryError:
        raise RunError(
            f"out of memory on {target} evaluating {path} on the {split} split ({len(data_split):,} images in batches "
            f"of {batch_size}). Hint: evaluate on the CPU (--device cpu), or free the GPU's memory (another "
            "process may hold it)."
        ) from None
    metrics.update(confusion.baselines())  # as the run's final test pass logs them
    weighting = spec.train.loss_weighting
    # the loss with the checkpoint epoch's weights, as its logged rows
    reweight_loss(metrics, weighting and weighting.name, logged_weights(state.get("metrics") or {}))
    classes = {h.task: h.classes for h in heads}
    predictions = predictions_of(
        split,
        record.dataset,
        indices.tolist(),
        answers.collected(),
        answers.classes,  # a binary head's answers are 0 or 1: 2 classes
        {"limit": subset["limit"], "seed": subset["seed"]},
    )
    return RunEvaluation(
        run_dir,
        split,
        checkpoint,
        int(state.get("epoch", 0)),
        str(target),
        graph,
        metrics,
        confusion=confusion.matrices(),
        class_counts=confusion.class_counts(),
        label_aurocs=confusion.label_aurocs(),
        class_names=dict(dataset.class_names),
        precision=precision,
        images=len(indices),
        subset=subset,
        described=described,
        predictions=predictions,
        collapsed=collapsed_heads(metrics, classes),
    )


def _images(
    record, seed: int, split: str, total: int, limit_test: int | None, all_test: bool
) -> tuple[torch.Tensor, dict[str, Any], str]:
    """Which images of ``split`` (``total`` of them) an evaluation takes: ``(indices, subset, words)``,
    ``subset`` as an evaluation.json records it ({"limit", "seed", "all"})."""
    if split == "val":
        return (
            torch.arange(total),
            {"limit": None, "seed": seed, "all": True},
            f"val: the run's {total:,} validation images",
        )
    if all_test:
        limit, words = None, f"test: all {total:,} images (--all)"
    elif limit_test is not None:
        limit = limit_test
        words = (
            f"test: {min(limit, total):,} of the {total:,} images (--limit-test {limit}, seed {seed})"
            if limit < total
            else f"test: all {total:,} images (--limit-test {limit} is not fewer)"
        )
    elif record.no_test:
        limit, words = None, f"test: all {total:,} images (the run skipped its own test pass: --no-test)"
    else:
        limit = record.limit_test  # the run's own images, as its final test pass drew them
        words = (
            f"test: the run's {limit:,} images (--limit-test {limit}, seed {seed})"
            if limit is not None and limit < total
            else f"test: the run's {total:,} images (all of the test split)"
        )
    indices = final_test_indices(total, limit, seed)
    return indices, {"limit": limit, "seed": seed, "all": len(indices) == total}, words


def save_evaluation(evaluation: RunEvaluation, name: str) -> Path:
    """Keep ``evaluation`` in its run as ``RUN/evaluations/NAME/`` (runtime/runs/evaluations.py);
    returns the folder. The caller checked the name and the overwrite (check_new) before evaluating."""
    saved = Evaluation(
        name=name,
        split=evaluation.split,
        checkpoint=runs.BEST if evaluation.checkpoint == "best" else runs.LAST,
        metrics=dict(evaluation.metrics),
        images=evaluation.images,
        subset=dict(evaluation.subset),
        graphc_version=graphc.__version__,
        evaluated=now(),
        collapsed=evaluation.collapsed,
        predictions=evaluation.predictions,
        path=evaluation.run_dir,
        epoch=evaluation.epoch,
    )
    try:
        return write_evaluation(evaluation.run_dir, saved)
    except OSError as exc:
        raise runs.write_error(evaluation.run_dir, exc) from None


BASELINES = ("majority_acc", "balanced_acc")  # per head: what its accuracy should be read against


def metrics_table(evaluation: RunEvaluation):
    """A rich table: one row per head (loss, accuracy, its baselines, top-5), then the heads' mean
    accuracy and the loss-weighted total (loss and accuracy). Hierarchy metrics: :func:`hierarchy_table`."""
    from rich.markup import escape
    from rich.table import Table

    from graphc.errors import printable

    m = evaluation.metrics
    tasks = [t for t in evaluation.graph.tasks if _type(evaluation, t) == "classification"]
    if not tasks:  # only binary, multilabel or regression heads: typed_tables shows them
        return None
    kinds = {key.split("/", 1)[1] for key in m if key.split("/", 1)[0] in tasks}
    columns = [
        "head",
        "classes",
        "loss",
        "acc",
        *(k for k in BASELINES if k in kinds),
        *(["top5"] if "top5" in kinds else []),
    ]
    table = Table(
        title=escape(
            printable(  # the spec's name and the run's path may come from elsewhere
                f"{evaluation.graph.name} - {evaluation.split} split, {evaluation.checkpoint}.pt "
                f"(epoch {evaluation.epoch}), {evaluation.run_dir}"
            )
        )
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "head" else "right", no_wrap=True)
    for task in tasks:
        cells = [f"{m[f'{task}/loss']:.4f}"] + [_percent(m.get(f"{task}/{kind}")) for kind in columns[3:]]
        table.add_row(task, str(evaluation.graph.head_for(task).attrs["classes"]), *cells)
    blank = ["" for _ in columns[4:]]
    if "mean_acc" in m:  # over the accuracy-typed heads (classification, binary): say so when others exist
        every = all(_type(evaluation, t) in ("classification", "binary") for t in evaluation.graph.tasks)
        table.add_row("mean of heads" if every else "mean of accuracy heads", "", "", _percent(m["mean_acc"]), *blank)
    table.add_row("total (weighted)", "", f"{m['loss']:.4f}", _percent(m.get("weighted_acc")), *blank, style="bold")
    return table


def _type(evaluation: RunEvaluation, task: str) -> str:
    return evaluation.graph.head_for(task).attrs.get("type", "classification")


# How each typed head's metrics print: fractions as percentages, the rest (losses, errors, R^2) as numbers.
_FRACTION_METRICS = ("acc", "balanced_acc", "majority_acc", "auroc", "f1", "positive_rate", "mean_auroc", "map")


def typed_tables(evaluation: RunEvaluation) -> list:
    """One rich table per head type other than classification (binary, multilabel, regression), a row per
    head: its labelled images (where labels may be missing), its loss and its type's metrics."""
    from rich.markup import escape
    from rich.table import Table

    from graphc.errors import printable

    m = evaluation.metrics
    tables = []
    for kind in ("binary", "multilabel", "regression"):
        tasks = [t for t in evaluation.graph.tasks if _type(evaluation, t) == kind]
        if not tasks:
            continue
        columns = list(dict.fromkeys(k.split("/", 1)[1] for k in m if k.split("/", 1)[0] in tasks and "/" in k))
        columns = [c for c in columns if "/" not in c]  # per-label entries (multilabel --per-class) go elsewhere
        title = f"{kind} heads - {evaluation.split} split" + (
            " (in the targets' units)" if kind == "regression" else ""
        )
        table = Table(title=escape(printable(title)))
        table.add_column("head", no_wrap=True)
        for column in columns:
            table.add_column(column, justify="right", no_wrap=True)
        for task in tasks:
            cells = []
            for column in columns:
                value = m.get(f"{task}/{column}")
                if value is None or value != value:  # absent, or NaN (e.g. AUROC of a split with one answer)
                    cells.append("n/a" if value is not None else "")
                elif column == "labelled":
                    cells.append(f"{int(value):,}")
                elif column in _FRACTION_METRICS:
                    cells.append(f"{value:.2%}")
                else:
                    cells.append(f"{value:.4g}")
            table.add_row(escape(printable(task)), *cells)
        tables.append(table)
    return tables


def hierarchy_table(evaluation: RunEvaluation):
    """A rich table of the hierarchy metrics, one row per child -> parent (each table and chain), or None."""
    from rich.table import Table

    m = evaluation.metrics
    links = []
    for key in m:
        parent, _, kind = key.partition("/")
        if kind.startswith("acc_from_"):
            links.append((kind.removeprefix("acc_from_"), parent))
    if not links:
        return None
    table = Table(title="label hierarchies: the child head's prediction mapped to the parent")
    for column in ("child -> parent", "PARENT/acc_from_CHILD", "CHILD/consistency_with_PARENT"):
        table.add_column(column, justify="left" if column.startswith("child") else "right", no_wrap=True)
    for child, parent in links:
        table.add_row(
            f"{child} -> {parent}",
            _percent(m.get(f"{parent}/acc_from_{child}")),
            _percent(m.get(f"{child}/consistency_with_{parent}")) or "(no parent head)",
        )
    return table


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"


def per_class_tables(evaluation: RunEvaluation) -> list:
    """One rich table per head: each class's images in the split, correct answers and accuracy."""
    from rich.markup import escape
    from rich.table import Table

    from graphc.errors import printable

    tables = []
    for task in evaluation.class_counts:
        m = evaluation.metrics
        table = Table(
            title=escape(
                printable(
                    f"{task}: per-class accuracy on the {evaluation.split} split (balanced {m[f'{task}/balanced_acc']:.2%}, "
                    f"majority baseline {m[f'{task}/majority_acc']:.2%})"
                )
            )
        )
        for column in ("class", "images", "correct", "acc"):
            table.add_column(column, justify="left" if column == "class" else "right")
        for row in evaluation.per_class(task):
            table.add_row(
                escape(printable(row["class"])),
                str(row["images"]),
                str(row["correct"]),
                "" if row["acc"] is None else f"{row['acc']:.2%}",
            )
        tables.append(table)
    for task in evaluation.label_aurocs:  # multilabel heads: each label's AUROC
        mean = evaluation.metrics.get(f"{task}/mean_auroc", math.nan)
        title = f"{task}: per-label AUROC on the {evaluation.split} split (mean {mean:.2%})"
        table = Table(title=escape(printable(title)))
        table.add_column("label", justify="left")
        table.add_column("auroc", justify="right")
        for row in evaluation.per_label(task):
            table.add_row(escape(printable(row["label"])), "n/a" if row["auroc"] is None else f"{row['auroc']:.2%}")
        tables.append(table)
    return tables
