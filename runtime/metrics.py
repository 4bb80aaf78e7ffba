"""Loss and metrics of a multi-head model's outputs.

The loss is per-head cross-entropy (with the head's label smoothing), and the
total is the loss-weighted sum of the heads. Metrics are accumulated on the
device as one vector of sums per batch, so an epoch costs one device->host
sync when it is read, not one per batch.

Metric names are those of a metrics row (see runtime/runs.py): ``loss``,
``TASK/loss``, ``TASK/acc``, ``TASK/top5`` (heads of more than 10 classes),
and for a label hierarchy child -> parent with both heads present
``PARENT/acc_from_CHILD`` and ``CHILD/consistency``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F

from graphc.ir.graph import Graph

TOP5_MIN_CLASSES = 11  # top-5 accuracy only means something with more than 10 classes


@dataclass(frozen=True)
class HeadInfo:
    """What the loss and metrics need of one head (from the IR)."""

    task: str
    classes: int
    loss_weight: float
    label_smoothing: float

    @property
    def has_top5(self) -> bool:
        return self.classes >= TOP5_MIN_CLASSES


@dataclass(frozen=True)
class Hierarchy:
    """A child label field whose classes each belong to one class of a parent field."""

    child: str
    parent: str
    child_to_parent: torch.Tensor  # (child classes,) int64: parent class of each child class


def heads_of(graph: Graph) -> list[HeadInfo]:
    return [
        HeadInfo(h.attrs["task"], h.attrs["classes"], float(h.attrs["loss_weight"]), float(h.attrs["label_smoothing"]))
        for h in graph.heads
    ]


def hierarchies_of(parents: Mapping[str, tuple[str, torch.Tensor]], tasks) -> list[Hierarchy]:
    """The data set's child -> parent maps for which the model has both heads."""
    tasks = set(tasks)
    return [
        Hierarchy(child, parent, mapping.long())
        for child, (parent, mapping) in parents.items()
        if child in tasks and parent in tasks
    ]


def metric_names(heads: list[HeadInfo], hierarchies: list[Hierarchy]) -> list[str]:
    """Names of the metrics :class:`Meter` reports, in row order."""
    names = ["loss"]
    for head in heads:
        names += [f"{head.task}/loss", f"{head.task}/acc"] + ([f"{head.task}/top5"] if head.has_top5 else [])
    for h in hierarchies:
        names += [f"{h.parent}/acc_from_{h.child}", f"{h.child}/consistency"]
    return names


def compute_loss(
    outputs: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor], heads: list[HeadInfo]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(total, {task: loss})``: mean cross-entropy per head and their loss-weighted sum."""
    parts = {
        h.task: F.cross_entropy(outputs[h.task].float(), labels[h.task], label_smoothing=h.label_smoothing)
        for h in heads
    }
    total = sum(h.loss_weight * parts[h.task] for h in heads)
    return total, parts


class Meter:
    """Running sums of one split's loss and metrics over an epoch, kept on the device.

    ``update`` adds one batch; ``compute`` returns ``{name: value}`` (means over
    the images seen). The total loss is accumulated from the loss actually
    optimised, not recomputed from the parts, so tests can check the two agree.
    """

    def __init__(self, heads: list[HeadInfo], hierarchies: list[Hierarchy], device: torch.device):
        self.heads = heads
        self.hierarchies = [
            Hierarchy(h.child, h.parent, h.child_to_parent.to(device)) for h in hierarchies
        ]
        self.names = metric_names(heads, hierarchies)
        # float64 keeps a 50,000-image sum exact enough; MPS has no float64.
        self.dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
        self.sums = torch.zeros(len(self.names), dtype=self.dtype, device=device)
        self.count = 0

    @torch.no_grad()
    def update(
        self,
        outputs: Mapping[str, torch.Tensor],
        labels: Mapping[str, torch.Tensor],
        total: torch.Tensor,
        parts: Mapping[str, torch.Tensor],
    ) -> None:
        batch = next(iter(labels.values())).shape[0]
        # Losses are batch means (weighted by the batch size), counts are exact sums, so the
        # epoch value is a per-image mean and an accuracy is exactly correct / images.
        stats = [total.detach().to(self.dtype) * batch]
        predictions = {}
        for head in self.heads:
            logits, target = outputs[head.task], labels[head.task]  # (B, classes), (B,)
            predictions[head.task] = logits.argmax(dim=1)  # (B,)
            stats += [parts[head.task].detach().to(self.dtype) * batch, (predictions[head.task] == target).sum()]
            if head.has_top5:
                top5 = logits.topk(5, dim=1).indices  # (B, 5)
                stats.append((top5 == target[:, None]).any(dim=1).sum())
        for h in self.hierarchies:
            parent_from_child = h.child_to_parent[predictions[h.child]]  # (B,)
            stats += [
                (parent_from_child == labels[h.parent]).sum(),
                (parent_from_child == predictions[h.parent]).sum(),
            ]
        self.sums += torch.stack([s.to(self.dtype) for s in stats])
        self.count += batch

    def compute(self) -> dict[str, float]:
        """Per-image means so far (one device sync)."""
        if self.count == 0:
            return {name: float("nan") for name in self.names}
        values = (self.sums / self.count).tolist()
        return dict(zip(self.names, values))
