"""``graphc eval RUN_DIR``: a run's model, scored on its data.

``evaluate`` (runtime/scoring.py) runs a model over a split in eval mode and returns a metrics
dict with the names of a metrics row (``loss``, ``fine/acc``, ...). ``evaluate_run``
rebuilds a finished (or interrupted) run's model from its ``spec.toml`` and its
record (``config.json``, runtime/runs/record.py), loads ``best.pt`` or ``last.pt``
and evaluates it on the same data the run used, in the run's recorded execution.
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
from graphc.runtime.device import evaluation_execution, resolve_device
from graphc.runtime.metrics import (
    Confusion,
    heads_of,
    hierarchies_of,
    logged_weights,
    recalls,
    reweight_loss,
)
from graphc.runtime.runs import rundir as runs
from graphc.runtime.runs.checkpoint import load_checkpoint
from graphc.runtime.runs.record import load_run_data, read_record, spec_of_run
from graphc.runtime.runs.weights import load_trained
from graphc.runtime.scoring import eval_batch_size, evaluate

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
    class_names: dict[str, list[str]] = field(default_factory=dict)  # label field -> class names
    precision: str = "fp32"  # what the model ran in: the run's own where the device can (evaluation_execution)

    def per_class(self, task: str) -> list[dict[str, Any]]:
        """One entry per class of a head: its images in the split, how many the head got right, and
        the accuracy on them (None for a class the split lacks)."""
        support, correct = self.class_counts[task]
        names = self.class_names.get(task) or [str(i) for i in range(len(support))]
        return [
            {"class": name, "images": images, "correct": right, "acc": None if math.isnan(acc) else acc}
            for name, images, right, acc in zip(names, support.tolist(), correct.tolist(), recalls(support, correct))
        ]

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
            "metrics": self.metrics,
        }
        if per_class:
            result["per_class"] = {task: self.per_class(task) for task in self.class_counts}
        return result


def evaluate_run(
    run_dir: Path,
    split: str = "val",
    checkpoint: str = "best",
    device: str = "auto",
    data_dir: str | Path | None = None,
    confusion_matrix: bool = False,
) -> RunEvaluation:
    """Rebuild a run's model, load its ``best.pt``/``last.pt`` and evaluate it on ``split``. Per-class
    counts are always kept (O(classes)); ``confusion_matrix`` (graphc eval --confusion) also builds each
    head's classes x classes matrix, refused (UsageError) for a head past CONFUSION_MAX_CLASSES."""
    if split not in ("val", "test"):
        raise UsageError(f"unknown split '{split}'; expected 'val' or 'test'.")
    if checkpoint not in ("best", "last"):
        raise UsageError(f"unknown checkpoint '{checkpoint}'; expected 'best' or 'last'.")
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
    heads = heads_of(graph)
    data_split = dataset.val if split == "val" else dataset.test
    if len(data_split) == 0:
        raise RunError(
            f"{run_dir}: the run's data has no {split} images (data.val_fraction = {spec.data.val_fraction})."
        )
    execution = evaluation_execution(record.execution, target)  # as the run's logged rows were computed
    precision = execution.precision
    batch_size = eval_batch_size(spec.train.batch_size)
    try:
        model.to(target)
        if execution.channels_last:
            model.to(memory_format=torch.channels_last)
        confusion = Confusion(heads, target, matrix=confusion_matrix)
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
        class_names=dict(dataset.class_names),
        precision=precision,
    )


BASELINES = ("majority_acc", "balanced_acc")  # per head: what its accuracy should be read against


def metrics_table(evaluation: RunEvaluation):
    """A rich table: one row per head (loss, accuracy, its baselines, top-5), then the heads' mean
    accuracy and the loss-weighted total (loss and accuracy). Hierarchy metrics: :func:`hierarchy_table`."""
    from rich.markup import escape
    from rich.table import Table

    from graphc.errors import printable

    m = evaluation.metrics
    tasks = list(evaluation.graph.tasks)
    kinds = {key.split("/", 1)[1] for key in m if "/" in key}
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
    table.add_row("mean of heads", "", "", _percent(m.get("mean_acc")), *blank)
    table.add_row("total (weighted)", "", f"{m['loss']:.4f}", _percent(m.get("weighted_acc")), *blank, style="bold")
    return table


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
    return tables
