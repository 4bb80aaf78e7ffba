"""Metrics of a model on a split, and ``graphc eval RUN_DIR``.

``evaluate`` runs a model over a split in eval mode and returns a metrics dict
with the names of a metrics row (``loss``, ``fine/acc``, ...). ``evaluate_run``
rebuilds a finished (or interrupted) run's model from its ``spec.toml`` and
``config.json``, loads ``best.pt`` or ``last.pt`` and evaluates it on the same
data the run used.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

import graphc
from graphc.errors import RunError, UsageError
from graphc.ir.graph import Graph
from graphc.lang.spec import DataSpec, InputNode, Spec, TrainSpec
from graphc.runtime.allocator import keep_freed_memory
from graphc.runtime.device import autocast, resolve_device, resolve_precision
from graphc.runtime.metrics import (
    Confusion,
    HeadInfo,
    Hierarchy,
    Meter,
    class_accuracies,
    compute_loss,
    heads_of,
    hierarchies_of,
    logged_weights,
    reweight_loss,
)
from graphc.runtime.runs import rundir as runs
from graphc.runtime.runs.checkpoint import load_checkpoint
from graphc.runtime.runs.weights import load_trained

# Evaluation batches are this many training batches: with no activations kept for a backward
# pass they take about the memory a training batch does, and a GPU gets a few full launches
# instead of many small ones (a smaller --batch-size shrinks both). Metrics are sums over
# images, so the batch size changes only the order of float additions.
EVAL_BATCH_FACTOR = 4


def eval_batch_size(train_batch_size: int) -> int:
    """Images per evaluation batch for a run trained in batches of ``train_batch_size``."""
    return EVAL_BATCH_FACTOR * train_batch_size


def input_shape(spec: Spec) -> tuple[int, int, int]:
    """[C, H, W] of the spec's input node: the shape the data set must deliver."""
    node = next((n for n in spec.nodes if isinstance(n, InputNode)), None)
    if node is None:  # build_graph words this one properly
        graphc.build_graph(spec)
    return tuple(node.shape)  # type: ignore[union-attr]


# --------------------------------------------------------------------------- evaluation


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    split,
    heads: list[HeadInfo],
    hierarchies: list[Hierarchy],
    *,
    device: torch.device,
    precision: str = "fp32",
    normalize=None,
    batch_size: int = 256,
    reduce: Callable[[Meter], None] | None = None,
    confusion: Confusion | None = None,
) -> dict[str, float]:
    """Loss and metrics of ``model`` on ``split`` (a graphc.runtime.data.split.Split), in eval mode, no augmentation.

    ``reduce`` adds other processes' sums to the Meter's before the means are taken
    (each evaluated its part of a split; graphc.runtime.train.distributed). ``confusion``, when
    given, also collects the per-head confusion matrices (of this process's images).
    """
    from graphc.runtime.data.augment import to_float
    from graphc.runtime.data.batches import gather
    from graphc.runtime.data.split import Split

    was_training = model.training
    model.eval()
    meter = Meter(heads, hierarchies, device)
    fields = meter.fields  # the heads' tasks and the hierarchies' parents
    split = Split(split.images, {t: split.labels[t] for t in fields})  # no copy: only what is read travels
    # Batches on the device: gathered there if the split is (a run's validation split), else
    # streamed through pinned memory, the next batch's copy under way while this one is evaluated.
    ranges = [slice(start, start + batch_size) for start in range(0, len(split), batch_size)]
    for images, labels in gather(split, ranges, device):
        x = to_float(images, normalize)  # (B, C, H, W)
        with autocast(device, precision):
            outputs = model(x)
        total, parts = compute_loss(outputs, labels, heads)
        meter.update(outputs, labels, total, parts)
        if confusion is not None:
            confusion.update(outputs, labels)
    model.train(was_training)
    if reduce is not None:
        reduce(meter)
    return meter.compute()


# --------------------------------------------------------------------------- a run directory's model


def spec_of_run(run_dir: Path, config: dict) -> Spec:
    """The spec a run trained, with the data and train settings it resolved (CLI overrides included)."""
    path = Path(run_dir) / runs.SPEC_COPY
    if not path.is_file():
        raise RunError(f"{run_dir}: not a complete run directory ({runs.SPEC_COPY} is missing).")
    spec = graphc.parse_spec(path.read_text(encoding="utf-8"), path, name=config.get("spec"))
    try:
        data = DataSpec.model_validate(config["data"])
        train = TrainSpec.model_validate(config["train"])
    except ValidationError as exc:  # name the first wrong field, as a spec error would
        first = exc.errors()[0]
        table = "train" if exc.title == TrainSpec.__name__ else "data"
        field = ".".join([table, *map(str, first["loc"])])
        raise RunError(
            f"{run_dir / runs.CONFIG}: field '{field}': {first['msg']} (got {str(first.get('input'))[:60]!r}). "
            "The file is damaged, edited or from another graphc version; restore it."
        ) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{run_dir / runs.CONFIG}: damaged or from another graphc version ({exc}).") from None
    return spec.model_copy(update={"data": data, "train": train})


def read_config(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory.")
    if not (run_dir / runs.CONFIG).is_file():
        raise RunError(
            f"{run_dir}: not a graphc run directory (no {runs.CONFIG}). "
            "Run directories are made by `graphc train` under runs/<spec>/<seed>-<time>/."
        )
    return runs.check_config(runs.read_json(run_dir / runs.CONFIG), run_dir / runs.CONFIG)


def load_run_data(spec: Spec, config: dict, data_dir: str | Path | None = None):
    """The data set exactly as the run loaded it (same split seed, limits and image shape)."""
    from graphc.runtime.data.load import load_dataset

    root = data_dir if data_dir is not None else config.get("data_root")
    return load_dataset(
        spec.data,
        root=root,
        limit_train=config.get("limit_train"),
        limit_val=config.get("limit_val"),
        image_shape=input_shape(spec),
    )


@dataclass
class RunEvaluation:
    run_dir: Path
    split: str
    checkpoint: str
    epoch: int
    device: str
    graph: Graph
    metrics: dict[str, float]  # a metrics row's names, plus TASK/majority_acc and TASK/balanced_acc
    confusion: dict[str, torch.Tensor] = field(default_factory=dict)  # task -> int64 (true, predicted)
    class_names: dict[str, list[str]] = field(default_factory=dict)  # label field -> class names
    precision: str = "fp32"  # what the model ran in: the run's own where the device can (run_precision)

    def per_class(self, task: str) -> list[dict[str, Any]]:
        """One entry per class of a head: its images in the split, how many the head got right, and
        the accuracy on them (None for a class the split lacks)."""
        matrix = self.confusion[task]
        names = self.class_names.get(task) or [str(i) for i in range(len(matrix))]
        return [
            {
                "class": name,
                "images": int(matrix[c].sum()),
                "correct": int(matrix[c, c]),
                "acc": None if math.isnan(acc) else acc,
            }
            for c, (name, acc) in enumerate(zip(names, class_accuracies(matrix)))
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
            result["per_class"] = {task: self.per_class(task) for task in self.confusion}
        return result


def evaluate_run(
    run_dir: Path,
    split: str = "val",
    checkpoint: str = "best",
    device: str = "auto",
    data_dir: str | Path | None = None,
) -> RunEvaluation:
    """Rebuild a run's model, load its ``best.pt``/``last.pt`` and evaluate it on ``split``."""
    if split not in ("val", "test"):
        raise UsageError(f"unknown split '{split}'; expected 'val' or 'test'.")
    if checkpoint not in ("best", "last"):
        raise UsageError(f"unknown checkpoint '{checkpoint}'; expected 'best' or 'last'.")
    keep_freed_memory()  # large evaluation batches reuse the last one's pages (runtime/allocator.py)
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    path = run_dir / (runs.BEST if checkpoint == "best" else runs.LAST)
    if not path.is_file():
        other = runs.LAST if checkpoint == "best" else runs.BEST
        hint = f" Try --checkpoint {'last' if checkpoint == 'best' else 'best'}." if (run_dir / other).is_file() else ""
        raise RunError(f"{path}: no such checkpoint; the run has not completed an epoch yet.{hint}")
    state = load_checkpoint(path)
    spec = spec_of_run(run_dir, config)
    target = resolve_device(device)
    dataset = load_run_data(spec, config, data_dir)
    graph = graphc.build_graph(spec, classes=dataset.classes)
    model, _ = load_trained(graph, path, state)  # names the node whose weights do not fit
    heads = heads_of(graph)
    data_split = dataset.val if split == "val" else dataset.test
    if len(data_split) == 0:
        raise RunError(
            f"{run_dir}: the run's data has no {split} images (data.val_fraction = {spec.data.val_fraction})."
        )
    precision = run_precision(config, spec, target)
    batch_size = eval_batch_size(spec.train.batch_size)
    try:
        model.to(target)
        if config.get("memory_format") == "channels_last":  # as the run's logged rows were computed
            model.to(memory_format=torch.channels_last)
        confusion = Confusion(heads, target)
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
        class_names=dict(dataset.class_names),
        precision=precision,
    )


def run_precision(config: dict, spec: Spec, device: torch.device) -> str:
    """The precision a run trained and validated in (config.json), so that its numbers are the
    logged ones; fp32 where ``device`` cannot run bf16 autocast at all."""
    precision = config.get("precision") or resolve_precision(spec.train.precision, device)
    if precision == "bf16" and not runs_bf16(device):
        return "fp32"
    return precision


def runs_bf16(device: torch.device) -> bool:
    """Whether torch runs bf16 autocast on ``device``, natively or not (every CPU does)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"


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
    for task in evaluation.confusion:
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
