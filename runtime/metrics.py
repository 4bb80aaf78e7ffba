"""Loss and metrics of a multi-head model's outputs.

The loss is per-head cross-entropy (with the head's label smoothing), and the
total is the loss-weighted sum of the heads. Metrics are accumulated on the
device as one vector of sums per batch, so an epoch costs one device->host
sync when it is read, not one per batch.

Metric names are those of a metrics row (see runtime/runs/rundir.py), listed by
graphc.ir.metrics.metric_names, which ``graphc check`` reads too: ``loss``,
``TASK/loss``, ``TASK/acc``, ``TASK/top5`` (heads of more than 10 classes); for
every label hierarchy CHILD -> PARENT (each ``[data.hierarchy]`` table and each
chain of them) whose CHILD has a head, ``PARENT/acc_from_CHILD`` and, with a
PARENT head too, ``CHILD/consistency_with_PARENT``; then ``mean_acc`` and
``weighted_acc``.

:class:`Confusion` adds, for the final test pass and ``graphc eval``, per-head
per-class counts (images and correct answers of each true class: O(classes) memory,
never classes x classes unless ``graphc eval --confusion`` asks for the matrix) and the
baselines read off them: ``TASK/majority_acc`` (always answering the split's most
frequent class) and ``TASK/balanced_acc`` (the mean of the per-class accuracies, i.e.
macro-averaged recall).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from graphc.ir import metrics as names
from graphc.ir.graph import Graph
from graphc.lang.hierarchy import hierarchy_paths
from graphc.runtime.data.split import compose

TOP5_MIN_CLASSES = names.TOP5_MIN_CLASSES


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
    """A child label field whose classes each belong to one class of a parent field (directly, by
    one ``[data.hierarchy]`` table, or through a chain of them)."""

    child: str
    parent: str
    child_to_parent: torch.Tensor  # (child classes,) int64: parent class of each child class


def heads_of(graph: Graph) -> list[HeadInfo]:
    return [
        HeadInfo(h.attrs["task"], h.attrs["classes"], float(h.attrs["loss_weight"]), float(h.attrs["label_smoothing"]))
        for h in graph.heads
    ]


def hierarchies_of(links: Mapping[tuple[str, str], torch.Tensor], tasks) -> list[Hierarchy]:
    """The hierarchies the model gets metrics for, from a data set's ``hierarchy`` (one
    ``(child, parent) -> map`` per table): every link and every chain of links (the maps
    composed, e.g. fine -> coarse -> super), whose child field has a head."""
    paths = hierarchy_paths(links)
    measured = set(names.measured_links(paths, tasks))  # the rule graphc check names the metrics by
    return [Hierarchy(p[0], p[-1], compose(links, p)) for p in paths if (p[0], p[-1]) in measured]


def metric_names(heads: list[HeadInfo], hierarchies: list[Hierarchy]) -> list[str]:
    """Names of the metrics :class:`Meter` reports, in row order (graphc.ir.metrics.metric_names)."""
    return names.metric_names([(h.task, h.classes) for h in heads], [(h.child, h.parent) for h in hierarchies])


def label_fields(heads: list[HeadInfo], hierarchies: list[Hierarchy]) -> list[str]:
    """The label fields the loss and metrics read: the heads' tasks, then the hierarchies' parents
    (``PARENT/acc_from_CHILD`` needs the PARENT label even when no head predicts it)."""
    return list(dict.fromkeys([h.task for h in heads] + [h.parent for h in hierarchies]))


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


def weighted_total(metrics: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """A row's ``loss`` under ``[train] loss_weighting``: sum_t w_t * ``TASK/loss``, ``weights`` ``{TASK: w}``."""
    return sum(w * metrics[f"{task}/loss"] for task, w in weights.items())


def reweight_loss(metrics: dict[str, float], weighting: str | None, weights: Mapping[str, float]) -> None:
    """Set an evaluation's ``loss`` to what the run logs under its ``[train] loss_weighting``
    (``weighting``: the method's name, None without the table): sum_t w_t * ``TASK/loss`` with
    ``weights`` ``{TASK: w}`` (an epoch's logged weights). Without a table, or with ``fixed`` (w_t =
    loss_weight), the Meter's total already is that sum, and it is left as it is."""
    if weighting not in (None, "fixed") and weights:
        metrics["loss"] = weighted_total(metrics, weights)


def logged_weights(flat: Mapping[str, float]) -> dict[str, float]:
    """``{TASK: w}`` from an epoch's ``train/weight/TASK`` (a checkpoint's flat metrics); empty without them."""
    prefix = f"train/{names.WEIGHT_PREFIX}"
    return {k[len(prefix) :]: float(v) for k, v in flat.items() if k.startswith(prefix) and v is not None}


class Meter:
    """Running sums of one split's loss and metrics over an epoch, kept on the device.

    ``update`` adds one batch; ``compute`` returns ``{name: value}`` (means over
    the images seen). The total loss is accumulated from the loss actually
    optimised, not recomputed from the parts, so tests can check the two agree.
    """

    def __init__(self, heads: list[HeadInfo], hierarchies: list[Hierarchy], device: torch.device):
        self.heads = heads
        self.hierarchies = [Hierarchy(h.child, h.parent, h.child_to_parent.to(device)) for h in hierarchies]
        self.names = metric_names(heads, hierarchies)
        self.fields = label_fields(heads, hierarchies)  # the labels update() reads
        # float64 keeps a 50,000-image sum exact enough; MPS has no float64.
        self.dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
        # One sum per name but the multi-task accuracies, which compute() derives from the heads' accuracies.
        self.sums = torch.zeros(len(self.names) - len(names.MULTITASK_METRICS), dtype=self.dtype, device=device)
        self.count = 0
        self._pending = None  # peek's copy of the sums in flight: (host tensor, count, CUDA event)

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
            stats.append((parent_from_child == labels[h.parent]).sum())
            if h.parent in predictions:  # consistency needs both heads
                stats.append((parent_from_child == predictions[h.parent]).sum())
        self.sums += torch.stack([s.to(self.dtype) for s in stats])
        self.count += batch

    def compute(self) -> dict[str, float]:
        """Per-image means so far (one device sync), then the multi-task accuracies."""
        return self.means(self.sums, self.count)

    def peek(self) -> dict[str, float] | None:
        """Means for a live display without waiting for a GPU: each call starts a copy of the sums
        into pinned host memory and returns the means of the previous copy once it has arrived
        (None until then), so the step loop never synchronises. Elsewhere it is ``compute()``."""
        if self.sums.device.type != "cuda":
            return self.compute()
        ready = None
        if self._pending is not None and self._pending[2].query():
            host, count, _ = self._pending
            ready, self._pending = self.means(host, count), None
        if self._pending is None:
            host = torch.empty(self.sums.shape, dtype=self.dtype, pin_memory=True)
            host.copy_(self.sums, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending = (host, self.count, event)
        return ready

    def means(self, sums: torch.Tensor, count: int) -> dict[str, float]:
        summed = self.names[: len(sums)]
        if count == 0:
            return {name: float("nan") for name in self.names}
        values = dict(zip(summed, (sums / count).tolist()))
        accs = [values[f"{h.task}/acc"] for h in self.heads]
        weights = [h.loss_weight for h in self.heads]
        values["mean_acc"] = sum(accs) / len(accs)
        # Undefined when every head has loss_weight 0: NaN, not a made-up number.
        values["weighted_acc"] = (
            sum(w * a for w, a in zip(weights, accs)) / sum(weights) if sum(weights) > 0 else math.nan
        )
        return {name: values[name] for name in self.names}


def majority_accuracy(matrix: torch.Tensor) -> float:
    """Accuracy of always answering the split's most frequent class (``matrix[true, predicted]``)."""
    return majority_from_support(matrix.sum(dim=1))


def class_accuracies(matrix: torch.Tensor) -> list[float]:
    """Per true class, the fraction of its images predicted right (recall); NaN for a class the split lacks."""
    return recalls(matrix.sum(dim=1), matrix.diagonal())


def balanced_accuracy(matrix: torch.Tensor) -> float:
    """Mean of the per-class accuracies over the classes present in the split (macro-averaged
    recall, as sklearn's balanced_accuracy_score): 1/classes for a constant answer, whatever the imbalance."""
    return balanced_from_counts(matrix.sum(dim=1), matrix.diagonal())


def majority_from_support(support: torch.Tensor) -> float:
    """:func:`majority_accuracy` from the images of each true class (``support``, (classes,))."""
    total = int(support.sum())
    return int(support.max()) / total if total else math.nan


def recalls(support: torch.Tensor, correct: torch.Tensor) -> list[float]:
    """:func:`class_accuracies` from each true class's images and correct answers ((classes,) each)."""
    return [c / n if n else math.nan for n, c in zip(support.tolist(), correct.tolist())]


def balanced_from_counts(support: torch.Tensor, correct: torch.Tensor) -> float:
    """:func:`balanced_accuracy` from each true class's images and correct answers ((classes,) each)."""
    present = [a for a in recalls(support, correct) if not math.isnan(a)]
    return sum(present) / len(present) if present else math.nan


# Largest head graphc eval --confusion draws: its matrix is classes x classes int64 (8 MB at 1,000), and
# the picture (at most 24 inches, 150 dpi: about 3,600 pixels a side) has under 4 pixels per class
# past it. Per-class accuracy (--per-class) needs no matrix, at any number of classes.
CONFUSION_MAX_CLASSES = 1000


class Confusion:
    """Per-head counts of a split, summed on the device: each true class's images and correct answers
    (``support`` and ``correct``, (classes,) int64: memory O(classes), what the baselines and per-class
    accuracies need), and only with ``matrix=True`` (graphc eval --confusion) the full confusion
    matrix ``counts[task][true, predicted]``, O(classes^2): refused past CONFUSION_MAX_CLASSES."""

    def __init__(self, heads: list[HeadInfo], device: torch.device, matrix: bool = False):
        self.heads = heads
        self.matrix = matrix
        self.support = {h.task: torch.zeros(h.classes, dtype=torch.int64, device=device) for h in heads}
        self.correct = {h.task: torch.zeros(h.classes, dtype=torch.int64, device=device) for h in heads}
        self.counts = {}
        if matrix:
            too_many = [h for h in heads if h.classes > CONFUSION_MAX_CLASSES]
            if too_many:
                from graphc.errors import UsageError

                head = too_many[0]
                raise UsageError(
                    f"--confusion draws a classes x classes matrix per head, but head '{head.task}' has "
                    f"{head.classes:,} classes (at most {CONFUSION_MAX_CLASSES:,} are drawn: the matrix takes "
                    f"classes^2 x 8 bytes, and past that a class gets under 4 pixels of the picture). "
                    "--per-class gives each class's accuracy at any number of classes."
                )
            self.counts = {h.task: torch.zeros(h.classes * h.classes, dtype=torch.int64, device=device) for h in heads}

    @torch.no_grad()
    def update(self, outputs: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor]) -> None:
        for head in self.heads:
            target, predicted = labels[head.task], outputs[head.task].argmax(dim=1)  # (B,), (B,)
            self.support[head.task] += torch.bincount(target, minlength=head.classes)
            self.correct[head.task] += torch.bincount(target[predicted == target], minlength=head.classes)
            if self.matrix:
                cell = target * head.classes + predicted  # (B,) true * C + predicted
                self.counts[head.task] += torch.bincount(cell, minlength=head.classes * head.classes)

    def class_counts(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{task: (support, correct)}`` on the CPU: each true class's images and correct answers."""
        return {h.task: (self.support[h.task].cpu(), self.correct[h.task].cpu()) for h in self.heads}

    def matrices(self) -> dict[str, torch.Tensor]:
        """``{task: int64 (classes, classes)}`` on the CPU, rows the true classes, columns the predictions;
        empty unless built with ``matrix=True``."""
        return {h.task: self.counts[h.task].cpu().view(h.classes, h.classes) for h in self.heads if self.matrix}

    def baselines(self) -> dict[str, float]:
        """``TASK/majority_acc`` and ``TASK/balanced_acc`` per head (from the per-class counts)."""
        result = {}
        for task, (support, correct) in self.class_counts().items():
            result[f"{task}/majority_acc"] = majority_from_support(support)
            result[f"{task}/balanced_acc"] = balanced_from_counts(support, correct)
        return result
