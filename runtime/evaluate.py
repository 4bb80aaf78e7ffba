"""Metrics of a model on a split, and ``graphc eval RUN_DIR``.

``evaluate`` runs a model over a split in eval mode and returns a metrics dict
with the names of a metrics row (``loss``, ``fine/acc``, ...). ``evaluate_run``
rebuilds a finished (or interrupted) run's model from its ``spec.toml`` and
``config.json``, loads ``best.pt`` or ``last.pt`` and evaluates it on the same
data the run used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

import graphc
from graphc.errors import RunError, UsageError
from graphc.ir.graph import Graph
from graphc.lang.spec import DataSpec, InputNode, Spec, TrainSpec
from runtime.device import autocast, resolve_device, resolve_precision
from runtime.runs import rundir as runs
from runtime.runs.checkpoint import load_checkpoint
from runtime.metrics import HeadInfo, Hierarchy, Meter, compute_loss, heads_of, hierarchies_of
from runtime.runs.weights import load_trained

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
) -> dict[str, float]:
    """Loss and metrics of ``model`` on ``split`` (a runtime.data.split.Split), in eval mode, no augmentation.

    ``reduce`` adds other processes' sums to the Meter's before the means are taken
    (each evaluated its part of a split; runtime.train.distributed).
    """
    from runtime.data.augment import to_float

    was_training = model.training
    model.eval()
    meter = Meter(heads, hierarchies, device)
    tasks = {h.task for h in heads}
    for start in range(0, len(split), batch_size):
        x = to_float(split.images[start : start + batch_size].to(device, non_blocking=True), normalize)  # (B, C, H, W)
        labels = {t: split.labels[t][start : start + batch_size].to(device, non_blocking=True) for t in tasks}
        with autocast(device, precision):
            outputs = model(x)
        total, parts = compute_loss(outputs, labels, heads)
        meter.update(outputs, labels, total, parts)
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
    config = runs.read_json(run_dir / runs.CONFIG)
    if not isinstance(config, dict) or "data" not in config or "train" not in config:
        raise RunError(f"{run_dir / runs.CONFIG}: not a graphc run config (no 'data'/'train' tables).")
    return config


def load_run_data(spec: Spec, config: dict, data_dir: str | Path | None = None):
    """The data set exactly as the run loaded it (same split seed, limits and image shape)."""
    from runtime.data.load import load_dataset

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
    metrics: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": str(self.run_dir),
            "spec": self.graph.name,
            "split": self.split,
            "checkpoint": self.checkpoint,
            "epoch": self.epoch,
            "device": self.device,
            "tasks": list(self.graph.tasks),
            "metrics": self.metrics,
        }


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
    model.to(target)
    heads = heads_of(graph)
    data_split = dataset.val if split == "val" else dataset.test
    if len(data_split) == 0:
        raise RunError(f"{run_dir}: the run's data has no {split} images (data.val_fraction = {spec.data.val_fraction}).")
    metrics = evaluate(
        model,
        data_split,
        heads,
        hierarchies_of(dataset.parents, graph.tasks),
        device=target,
        precision=resolve_precision(spec.train.precision, target),
        normalize=spec.data.normalize,
        batch_size=spec.train.batch_size,
    )
    return RunEvaluation(run_dir, split, checkpoint, int(state.get("epoch", 0)), str(target), graph, metrics)


def metrics_table(evaluation: RunEvaluation):
    """A rich table: one row per head (loss, acc, top-5, hierarchy metrics), then the total loss."""
    from rich.table import Table

    m = evaluation.metrics
    tasks = list(evaluation.graph.tasks)
    extra = sorted({key.split("/", 1)[1] for key in m if "/" in key} - {"loss", "acc", "top5"})
    top5 = ["top5"] if any(key.endswith("/top5") for key in m) else []  # only heads of more than 10 classes
    table = Table(
        title=f"{evaluation.graph.name} - {evaluation.split} split, {evaluation.checkpoint}.pt "
        f"(epoch {evaluation.epoch}), {evaluation.run_dir}"
    )
    for column in ["head", "classes", "loss", "acc", *top5, *extra]:
        table.add_column(column, justify="left" if column == "head" else "right")
    for task in tasks:
        def cell(name: str, percent: bool = True) -> str:
            value = m.get(f"{task}/{name}")
            if value is None:
                return ""
            return f"{value:.2%}" if percent else f"{value:.4f}"

        classes = evaluation.graph.head_for(task).attrs["classes"]
        table.add_row(task, str(classes), cell("loss", False), cell("acc"), *map(cell, top5), *map(cell, extra))
    table.add_row("total (weighted)", "", f"{m['loss']:.4f}", "", *["" for _ in top5 + extra], style="bold")
    return table

