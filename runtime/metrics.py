"""Loss and metrics of a multi-head model's outputs, by head type.

A head is one of four types (graphc.lang.spec.HeadNode ``type``), each with its loss:

- classification: cross-entropy (with the head's label smoothing) over ``classes`` logits;
- binary: binary cross-entropy with logits of one output against 0/1 (``pos_weight`` weighs the positives);
- multilabel: binary cross-entropy with logits per label, averaged over the labels (``pos_weight`` too);
- regression: mse, l1 or huber (delta 1) per output, averaged over the outputs, on z-scored targets
  when the head ``standardize``s (the training split's mean and std, :func:`fit_targets`).

Labels may be missing (graphc.runtime.data.split.MISSING: -1, or NaN for regression): each head's loss
is the mean over the batch rows that have its label, and a batch with none gives exactly 0 (with a zero
gradient); the total is the loss-weighted sum of the heads.

Metrics are accumulated on the device as one vector of sums per batch, so an epoch costs one
device->host sync when it is read, not one per batch; only the rank metrics (AUROC, average
precision) keep each image's score, on the device, and rank them once at the end.

Metric names are those of a metrics row (see runtime/runs/rundir.py), listed by
graphc.ir.metrics.metric_names, which ``graphc check`` reads too: ``loss``, then per head
``TASK/loss`` and its type's metrics:

- classification: ``TASK/acc``, ``TASK/top5`` (heads of more than 10 classes);
- binary (predicted positive: logit > 0, i.e. probability > 0.5): ``acc``, ``balanced_acc`` (the mean of
  the two classes' recalls), ``auroc``, ``f1`` (of the positive class), ``positive_rate`` (the fraction
  predicted positive);
- multilabel: ``mean_auroc`` (over the labels with both answers present), ``map`` (average precision,
  over the labels with a positive), ``example_f1`` (per image 2|P & T| / (|P| + |T|), 1 when both are
  empty);
- regression, in the targets' own units: ``mae``, ``rmse``, ``r2`` (averaged over the outputs, as
  scikit-learn's uniform average) and ``mean_mae`` (the MAE of always answering the training mean);
- where labels may be missing: ``TASK/labelled``, the images with the task's label (a count).

Every per-head metric is a mean over the images with that head's label (AUROC of a split with one
answer only is NaN, as is every metric of a head without a labelled image). For every label hierarchy
CHILD -> PARENT (each ``[data.hierarchy]`` table and each chain of them) whose CHILD has a head,
``PARENT/acc_from_CHILD`` and, with a PARENT head too, ``CHILD/consistency_with_PARENT``; then
``mean_acc`` and ``weighted_acc`` over the classification and binary heads.

:class:`Confusion` adds, for the final test pass and ``graphc eval``, per-head
per-class counts (images and correct answers of each true class: O(classes) memory,
never classes x classes unless ``graphc eval --confusion`` asks for the matrix) and the
baselines read off them: ``TASK/majority_acc`` (always answering the split's most
frequent class) and ``TASK/balanced_acc`` (the mean of the per-class accuracies, i.e.
macro-averaged recall) of a classification head, ``TASK/majority_acc`` of a binary head;
and each multilabel head's per-label AUROC (:meth:`Confusion.label_aurocs`, ``graphc eval --per-class``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from graphc.ir import metrics as names
from graphc.ir.graph import Graph
from graphc.lang.hierarchy import hierarchy_paths
from graphc.lang.spec import PARTIAL_LABELS
from graphc.runtime.data.split import compose, labelled

TOP5_MIN_CLASSES = names.TOP5_MIN_CLASSES
HEAD_TYPES = tuple(names.TYPE_METRICS)  # classification, binary, multilabel, regression


@dataclass(frozen=True)
class HeadInfo:
    """What the loss and metrics need of one head (from the IR, and the training split's targets)."""

    task: str
    classes: int  # output units: classification classes; binary 1; multilabel labels; regression outputs
    loss_weight: float
    label_smoothing: float
    type: str = "classification"
    loss: str = "cross_entropy"  # "cross_entropy" | "bce" | "mse" | "l1" | "huber"
    pos_weight: float | None = None
    standardize: bool = False
    target_mean: tuple[float, ...] | None = None  # regression, training split, original units
    target_std: tuple[float, ...] | None = None
    partial: bool = False  # the data set's labels may be missing: TASK/labelled is logged

    @property
    def has_top5(self) -> bool:
        return self.type == "classification" and self.classes >= TOP5_MIN_CLASSES

    @property
    def has_accuracy(self) -> bool:
        """Whether the head has ``TASK/acc`` (mean_acc and weighted_acc average those)."""
        return self.type in names.ACCURACY_TYPES

    @property
    def answers(self) -> int:
        """The classes its answer is one of: a classifier's classes, 2 for binary (0 no, 1 yes); 0 for the rest."""
        return self.classes if self.type == "classification" else 2 if self.type == "binary" else 0


@dataclass(frozen=True)
class Hierarchy:
    """A child label field whose classes each belong to one class of a parent field (directly, by
    one ``[data.hierarchy]`` table, or through a chain of them)."""

    child: str
    parent: str
    child_to_parent: torch.Tensor  # (child classes,) int64: parent class of each child class


def heads_of(graph: Graph, partial_labels: bool | None = None) -> list[HeadInfo]:
    """The graph's heads, as the IR's head attributes describe them (a graph of graphc before 0.5, without
    ``type`` and the rest: classification). ``partial_labels``: whether the data set's labels may be
    missing (adds ``TASK/labelled``); None: as the graph's ``[data] dataset`` says. Regression heads get
    their targets' mean and std from :func:`fit_targets`."""
    if partial_labels is None:
        data = getattr(graph, "data", None)
        partial_labels = getattr(data, "dataset", None) in PARTIAL_LABELS
    heads = []
    for h in graph.heads:
        a = h.attrs
        kind = a.get("type", "classification")
        pos_weight = a.get("pos_weight")
        heads.append(
            HeadInfo(
                a["task"],
                int(a["classes"]),
                float(a["loss_weight"]),
                float(a.get("label_smoothing") or 0.0),
                type=kind,
                loss=a.get("loss") or _DEFAULT_LOSS[kind],
                pos_weight=float(pos_weight) if pos_weight is not None else None,
                standardize=bool(a.get("standardize", False)) and kind == "regression",
                partial=bool(partial_labels),
            )
        )
    return heads


_DEFAULT_LOSS = {"classification": "cross_entropy", "binary": "bce", "multilabel": "bce", "regression": "mse"}


def fit_targets(heads: list[HeadInfo], split) -> list[HeadInfo]:
    """The heads with every regression head's ``target_mean`` and ``target_std`` (per output, original
    units) fitted on the labelled rows of ``split`` (the training split): what the loss z-scores with
    when the head standardizes, and what ``mean_mae`` answers. A std of 0 (or one labelled row, or
    none) is taken as 1, so that z-scoring never divides by 0; no labelled row gives a mean of 0."""
    fitted = []
    for h in heads:
        if h.type != "regression":
            fitted.append(h)
            continue
        values = split.labels[h.task].to(torch.float64)  # (N, K), NaN rows missing
        values = values[labelled(values)]
        mean = values.mean(dim=0) if len(values) else torch.zeros(h.classes, dtype=torch.float64)
        # The population std (the z-scores then have variance 1 on the training split).
        std = values.std(dim=0, correction=0) if len(values) > 1 else torch.ones(h.classes, dtype=torch.float64)
        std = torch.where(std > 0, std, torch.ones_like(std))
        fitted.append(replace(h, target_mean=tuple(mean.tolist()), target_std=tuple(std.tolist())))
    return fitted


def targets_of(heads: list[HeadInfo], record, dataset) -> list[HeadInfo]:
    """The heads with their regression targets' mean and std: as the run's record has them (a resume,
    the training processes, graphc eval: the numbers the run started with), else fitted on the
    training split (:func:`fit_targets`). ``record``: a graphc.runtime.runs.record.RunRecord or None."""
    targets = getattr(record, "targets", None)
    if targets:
        check_targets(heads, targets)
        return [
            replace(h, target_mean=tuple(t.mean), target_std=tuple(t.std)) if (t := targets.get(h.task)) else h
            for h in heads
        ]
    return fit_targets(heads, dataset.train)


def check_targets(heads: list[HeadInfo], targets: Mapping) -> None:
    """A run record's ``targets`` (config.json, from elsewhere: a copied run) must fit the heads: one entry per
    regression head that has one, each with a mean and std per output. Else a RunError: z-scoring with a
    wrong-length mean would broadcast silently into a wrong loss, wrong metrics and a wrong exported model."""
    from graphc.errors import RunError

    outputs = {h.task: h.classes for h in heads if h.type == "regression"}
    for task, t in targets.items():
        if task not in outputs or len(t.mean) != outputs[task] or len(t.std) != outputs[task]:
            what = (
                f"head '{task}' has {outputs[task]} output(s) but {len(t.mean)} mean(s) and {len(t.std)} std(s)"
                if task in outputs
                else f"'{task}' is not a regression head of the model"
            )
            raise RunError(
                f"the run's config.json 'targets' do not fit its spec: {what}. The record is damaged or from "
                "another spec; train the run again (or restore its config.json)."
            )


def hierarchies_of(links: Mapping[tuple[str, str], torch.Tensor], tasks) -> list[Hierarchy]:
    """The hierarchies the model gets metrics for, from a data set's ``hierarchy`` (one
    ``(child, parent) -> map`` per table): every link and every chain of links (the maps
    composed, e.g. fine -> coarse -> super), whose child field has a head."""
    paths = hierarchy_paths(links)
    measured = set(names.measured_links(paths, tasks))  # the rule graphc check names the metrics by
    return [Hierarchy(p[0], p[-1], compose(links, p)) for p in paths if (p[0], p[-1]) in measured]


def metric_names(heads: list[HeadInfo], hierarchies: list[Hierarchy], partial_labels: bool | None = None) -> list[str]:
    """Names of the metrics :class:`Meter` reports, in row order (graphc.ir.metrics.metric_names).
    ``partial_labels``: None, as the heads say (:attr:`HeadInfo.partial`)."""
    if partial_labels is None:
        partial_labels = any(h.partial for h in heads)
    return names.metric_names(
        [(h.task, h.classes, h.type) for h in heads], [(h.child, h.parent) for h in hierarchies], partial_labels
    )


def label_fields(heads: list[HeadInfo], hierarchies: list[Hierarchy]) -> list[str]:
    """The label fields the loss and metrics read: the heads' tasks, then the hierarchies' parents
    (``PARENT/acc_from_CHILD`` needs the PARENT label even when no head predicts it)."""
    return list(dict.fromkeys([h.task for h in heads] + [h.parent for h in hierarchies]))


@functools.lru_cache(maxsize=256)
def constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``values`` as a tensor on ``device``, made once: a head's mean, std or pos_weight in every step
    without a host-to-device copy per step. A normal tensor even when first asked for under
    inference_mode (an evaluation), so that training may use it."""
    with torch.inference_mode(False), torch.no_grad():
        return torch.tensor(values, device=device, dtype=dtype)


def standardized(head: HeadInfo, values: torch.Tensor) -> torch.Tensor:
    """Regression targets (B, K) in the units the head's outputs are in: z-scored with the training
    split's mean and std when the head standardizes, else as they are."""
    if not head.standardize or head.target_mean is None:
        return values
    mean = constant(head.target_mean, values.device, values.dtype)
    return (values - mean) / constant(head.target_std, values.device, values.dtype)


def original_units(head: HeadInfo, outputs: torch.Tensor) -> torch.Tensor:
    """A regression head's outputs (B, K) in the targets' own units (float32): ``out * std + mean``
    when the head standardizes, else as they are."""
    outputs = outputs.float()
    if not head.standardize or head.target_mean is None:
        return outputs
    std = constant(head.target_std, outputs.device, outputs.dtype)
    return outputs * std + constant(head.target_mean, outputs.device, outputs.dtype)


def row_losses(head: HeadInfo, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(losses, mask)``: each batch row's loss under the head's type (float32 (B,), finite, whatever the
    row's label) and whether the row has the label (bool (B,)). A missing label is replaced by a valid
    stand-in before the loss sees it (class 0, a 0 target), so that the masked-out rows are finite and
    multiply to an exact 0: -1 never reaches cross-entropy's indexing and NaN never a gradient."""
    output = output.float()  # bf16 outputs under autocast: the loss in float32
    mask = labelled(target)
    if head.type == "classification":
        losses = F.cross_entropy(output, target.clamp(min=0), label_smoothing=head.label_smoothing, reduction="none")
    elif head.type in ("binary", "multilabel"):
        truth = target.clamp(min=0).to(output.dtype).view(output.shape)  # binary (B,) -> (B, 1)
        pos_weight = constant((head.pos_weight,), output.device, output.dtype) if head.pos_weight is not None else None
        losses = F.binary_cross_entropy_with_logits(output, truth, pos_weight=pos_weight, reduction="none").mean(1)
    elif head.type == "regression":
        truth = standardized(head, torch.where(mask[:, None], target.to(output.dtype), 0.0))
        truth = torch.where(mask[:, None], truth, output.detach())  # a missing row: no error at all
        if head.loss == "l1":
            losses = F.l1_loss(output, truth, reduction="none")
        elif head.loss == "huber":
            losses = F.huber_loss(output, truth, reduction="none", delta=1.0)
        else:
            losses = F.mse_loss(output, truth, reduction="none")
        losses = losses.mean(dim=1)
    else:
        raise ValueError(f"head '{head.task}': unknown head type {head.type!r}")
    return losses, mask


def compute_loss(
    outputs: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor], heads: list[HeadInfo]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(total, {task: loss})``: each head's loss, the mean over the batch rows with its label (0 for a
    batch with none: a 0 that still depends on the output, with a zero gradient), and their
    loss-weighted sum."""
    parts = {}
    for h in heads:
        losses, mask = row_losses(h, outputs[h.task], labels[h.task])
        weights = mask.to(losses.dtype)
        parts[h.task] = (losses * weights).sum() / weights.sum().clamp(min=1)
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

    ``update`` adds one batch; ``compute`` returns ``{name: value}``: the total loss a mean over the
    images seen, every per-head metric a mean over the images with that head's label. The total loss
    is accumulated from the loss actually optimised, not recomputed from the parts, so tests can check
    the two agree. Binary and multilabel heads also keep each image's score (:attr:`scores`, on the
    device) for the rank metrics (AUROC, average precision), which ``compute`` ranks once.
    """

    def __init__(
        self,
        heads: list[HeadInfo],
        hierarchies: list[Hierarchy],
        device: torch.device,
        partial_labels: bool | None = None,
    ):
        self.heads = heads
        self.hierarchies = [Hierarchy(h.child, h.parent, h.child_to_parent.to(device)) for h in hierarchies]
        self.names = metric_names(heads, hierarchies, partial_labels)
        self.fields = label_fields(heads, hierarchies)  # the labels update() reads
        # float64 keeps a 50,000-image sum exact enough; MPS has no float64.
        self.dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
        # Where each sum lies in self.sums, in the order update() stacks them: key -> slice.
        self.layout: dict[str, slice] = {}
        size = 0
        for key, length in self._sum_keys():
            self.layout[key] = slice(size, size + length)
            size += length
        self.sums = torch.zeros(size, dtype=self.dtype, device=device)
        self.count = 0
        # task -> each batch's (scores, 0/1 truth) of binary (B,) and multilabel (B, L) heads: float32 logits
        # and int8 (-1 where missing), every row kept (selecting the labelled ones would sync with the device).
        self.scores: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {
            h.task: [] for h in heads if h.type in ("binary", "multilabel")
        }
        self._pending = None  # peek's copy of the sums in flight: (host tensor, count, CUDA event)

    def _sum_keys(self) -> list[tuple[str, int]]:
        """The sums update() keeps, ``(key, length)`` in order."""
        keys = [("loss", 1)]
        for h in self.heads:
            t = h.task
            keys += [(f"{t}/labelled", 1), (f"{t}/loss", 1)]
            if h.type == "classification":
                keys += [(f"{t}/acc", 1)] + ([(f"{t}/top5", 1)] if h.has_top5 else [])
            elif h.type == "binary":
                keys += [(f"{t}/tp", 1), (f"{t}/fp", 1), (f"{t}/fn", 1), (f"{t}/tn", 1)]
            elif h.type == "multilabel":
                keys += [(f"{t}/example_f1", 1)]
            else:  # regression: absolute errors (all outputs), of the mean answer; per output squared errors,
                # and the targets' sum and sum of squares, shifted by the training mean (R^2's spread)
                k = h.classes
                keys += [(f"{t}/abs", 1), (f"{t}/mean_abs", 1), (f"{t}/sq", k), (f"{t}/y", k), (f"{t}/y2", k)]
        for h in self.hierarchies:
            keys += [(f"{h.parent}/acc_from_{h.child}", 1), (f"{h.parent}/labelled_from_{h.child}", 1)]
            if any(head.task == h.parent and head.answers for head in self.heads):  # as update()'s predictions
                keys.append((f"{h.child}/consistency_with_{h.parent}", 1))
        return keys

    @torch.no_grad()
    def update(
        self,
        outputs: Mapping[str, torch.Tensor],
        labels: Mapping[str, torch.Tensor],
        total: torch.Tensor,
        parts: Mapping[str, torch.Tensor],
    ) -> None:
        batch = next(iter(labels.values())).shape[0]
        dtype = self.dtype
        # Losses are means (the total over the batch, a head's over its labelled rows) weighted by their
        # rows, counts are exact sums, so the epoch value is a per-image mean and an accuracy exactly
        # correct / labelled images. A missing label (-1) never equals a prediction (>= 0).
        stats = [total.detach().to(dtype) * batch]
        predictions = {}
        for head in self.heads:
            out, target = outputs[head.task], labels[head.task]  # (B, units), (B,) / (B, L) / (B, K)
            mask = labelled(target)  # (B,)
            rows = mask.sum().to(dtype)
            stats += [rows, parts[head.task].detach().to(dtype) * rows]
            if head.type == "classification":
                predictions[head.task] = out.argmax(dim=1)  # (B,)
                stats.append((predictions[head.task] == target).sum())
                if head.has_top5:
                    top5 = out.topk(5, dim=1).indices  # (B, 5)
                    stats.append((top5 == target[:, None]).any(dim=1).sum())
            elif head.type == "binary":
                positive = out.view(-1) > 0  # (B,): probability > 0.5
                predictions[head.task] = positive.long()
                yes, no = target == 1, target == 0
                stats += [
                    (positive & yes).sum(),
                    (positive & no).sum(),
                    (~positive & yes).sum(),
                    (~positive & no).sum(),
                ]
                self.scores[head.task].append((out.detach().float().view(-1), target.to(torch.int8)))
            elif head.type == "multilabel":
                positive, yes = out > 0, target == 1  # (B, L)
                both = (positive & yes).sum(dim=1)
                sizes = positive.sum(dim=1) + yes.sum(dim=1)
                f1 = torch.where(sizes > 0, 2 * both.to(dtype) / sizes.clamp(min=1), 1.0)  # both empty: 1
                stats.append((f1 * mask).sum())
                self.scores[head.task].append((out.detach().float(), target.to(torch.int8)))
            else:
                stats += self._regression_sums(head, out, target, mask)
        for h in self.hierarchies:
            parent_from_child = h.child_to_parent[predictions[h.child]]  # (B,)
            parent = labels[h.parent]
            stats += [(parent_from_child == parent).sum(), labelled(parent).sum()]
            if h.parent in predictions:  # consistency needs both heads; it reads no label: over every image
                stats.append((parent_from_child == predictions[h.parent]).sum())
        self.sums += torch.cat([s.to(dtype).reshape(-1) for s in stats])
        self.count += batch

    def _regression_sums(self, head: HeadInfo, out, target, mask) -> list[torch.Tensor]:
        dtype = self.dtype
        rows = mask[:, None]  # (B, 1)
        predicted = original_units(head, out).to(dtype)  # (B, K), the targets' units
        truth = target.to(dtype)
        shift = constant(head.target_mean or (0.0,) * head.classes, truth.device, truth.dtype)
        error = torch.where(rows, predicted - truth, 0.0)
        centred = torch.where(rows, truth - shift, 0.0)  # R^2's spread is the same about any point
        return [error.abs().sum(), centred.abs().sum(), (error**2).sum(dim=0), centred.sum(dim=0), (centred**2).sum(0)]

    def ranked(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{task: (scores, truth)}`` of the binary and multilabel heads: every image's logits and 0/1
        answers (-1 missing) so far, concatenated (graphc.runtime.train.distributed gathers them)."""
        return {
            task: (torch.cat([s for s, _ in parts]), torch.cat([t for _, t in parts]))
            for task, parts in self.scores.items()
            if parts
        }

    def set_ranked(self, ranked: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Replace the kept scores with ``ranked`` (:meth:`ranked`'s form: e.g. every process's)."""
        for task, pair in ranked.items():
            self.scores[task] = [pair]

    def compute(self) -> dict[str, float]:
        """Per-image means so far (one device sync), the rank metrics, then the multi-task accuracies."""
        return self.means(self.sums, self.count)

    def peek(self) -> dict[str, float] | None:
        """Means for a live display without waiting for a GPU: each call starts a copy of the sums
        into pinned host memory and returns the means of the previous copy once it has arrived
        (None until then), so the step loop never synchronises. Elsewhere it is ``compute()``
        (both without the rank metrics, which are NaN here: ranking every score is for the epoch's end)."""
        if self.sums.device.type != "cuda":
            return self.means(self.sums, self.count, ranked=False)
        ready = None
        if self._pending is not None and self._pending[2].query():
            host, count, _ = self._pending
            ready, self._pending = self.means(host, count, ranked=False), None
        if self._pending is None:
            host = torch.empty(self.sums.shape, dtype=self.dtype, pin_memory=True)
            host.copy_(self.sums, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending = (host, self.count, event)
        return ready

    def means(self, sums: torch.Tensor, count: int, ranked: bool = True) -> dict[str, float]:
        if count == 0:
            return {name: 0.0 if name.endswith(f"/{names.LABELLED}") else math.nan for name in self.names}
        flat = sums.tolist()

        def get(key: str):
            where = self.layout[key]
            return flat[where.start] if where.stop - where.start == 1 else flat[where]

        values = {"loss": get("loss") / count}
        for h in self.heads:
            values.update(self._head_means(h, get))
        if ranked:
            for task, (scores, truth) in self.ranked().items():
                head = next(h for h in self.heads if h.task == task)
                if head.type == "binary":
                    values[f"{task}/auroc"] = auroc(scores, truth)
                else:
                    values[f"{task}/mean_auroc"], values[f"{task}/map"] = multilabel_ranks(scores, truth)
        for h in self.hierarchies:
            values[f"{h.parent}/acc_from_{h.child}"] = _ratio(
                get(f"{h.parent}/acc_from_{h.child}"), get(f"{h.parent}/labelled_from_{h.child}")
            )
            key = f"{h.child}/consistency_with_{h.parent}"
            if key in self.layout:
                values[key] = get(key) / count
        scored = [h for h in self.heads if h.has_accuracy]
        accs = [values[f"{h.task}/acc"] for h in scored]
        weights = [h.loss_weight for h in scored]
        if scored:
            values["mean_acc"] = sum(accs) / len(accs)
            # Undefined when every head has loss_weight 0: NaN, not a made-up number.
            values["weighted_acc"] = (
                sum(w * a for w, a in zip(weights, accs)) / sum(weights) if sum(weights) > 0 else math.nan
            )
        return {name: values.get(name, math.nan) for name in self.names}

    @staticmethod
    def _head_means(h: HeadInfo, get) -> dict[str, float]:
        """A head's metrics from its sums (the rank metrics come from the kept scores)."""
        t = h.task
        n = get(f"{t}/labelled")
        values = {f"{t}/labelled": n, f"{t}/loss": _ratio(get(f"{t}/loss"), n)}
        if h.type == "classification":
            values[f"{t}/acc"] = _ratio(get(f"{t}/acc"), n)
            if h.has_top5:
                values[f"{t}/top5"] = _ratio(get(f"{t}/top5"), n)
        elif h.type == "binary":
            values.update(
                {f"{t}/{k}": v for k, v in binary_metrics(*(get(f"{t}/{c}") for c in CONFUSION_CELLS)).items()}
            )
        elif h.type == "multilabel":
            values[f"{t}/example_f1"] = _ratio(get(f"{t}/example_f1"), n)
        else:
            values.update({f"{t}/{k}": v for k, v in regression_metrics(h, n, get).items()})
        return values


CONFUSION_CELLS = ("tp", "fp", "fn", "tn")


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else math.nan


def binary_metrics(tp: float, fp: float, fn: float, tn: float) -> dict[str, float]:
    """A binary head's ``acc``, ``balanced_acc``, ``f1`` and ``positive_rate`` from its confusion
    counts (as scikit-learn: balanced accuracy the mean recall of the classes present; f1 of the
    positive class, 0 when nothing is positive either way). NaN for each with no image."""
    n = tp + fp + fn + tn
    if not n:
        return {k: math.nan for k in ("acc", "balanced_acc", "f1", "positive_rate")}
    present = [r for r in (_ratio(tp, tp + fn), _ratio(tn, tn + fp)) if not math.isnan(r)]
    return {
        "acc": (tp + tn) / n,
        "balanced_acc": sum(present) / len(present),
        "f1": 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0,
        "positive_rate": (tp + fp) / n,
    }


def regression_metrics(h: HeadInfo, n: float, get) -> dict[str, float]:
    """A regression head's ``mae``, ``rmse``, ``r2`` and ``mean_mae`` (the targets' units, averaged
    over the outputs uniformly, as scikit-learn's multioutput="uniform_average") from its sums."""
    if not n:
        return {k: math.nan for k in ("mae", "rmse", "r2", "mean_mae")}
    k = h.classes
    sq, y, y2 = (get(f"{h.task}/{key}") for key in ("sq", "y", "y2"))
    sq, y, y2 = (v if isinstance(v, list) else [v] for v in (sq, y, y2))
    scores = []
    for res, total, total2 in zip(sq, y, y2):
        spread = max(total2 - total * total / n, 0.0)  # sum of squares about the mean
        # scikit-learn's r2_score (force_finite): constant targets give 1 for a perfect answer, else 0
        scores.append(1.0 - res / spread if spread > 0 else (1.0 if res == 0 else 0.0))
    return {
        "mae": get(f"{h.task}/abs") / (n * k),
        "rmse": sum(math.sqrt(res / n) for res in sq) / k,
        "r2": sum(scores) / k if n >= 2 else math.nan,  # one image: no spread to explain (as scikit-learn)
        "mean_mae": get(f"{h.task}/mean_abs") / (n * k) if h.target_mean is not None else math.nan,
    }


def _ranking_device(x: torch.Tensor) -> torch.Tensor:
    """float64 where the ranks are added up (MPS has none: there, on the CPU)."""
    return x.cpu() if x.device.type == "mps" else x


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """float64 ranks (1-based) of ``values`` (1-D), tied values sharing their mean rank (scipy.stats.rankdata)."""
    _, inverse, counts = torch.unique(values, sorted=True, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).to(torch.float64)  # the highest rank of each distinct value
    return (last - (counts.to(torch.float64) - 1) / 2)[inverse]


def auroc(scores: torch.Tensor, truth: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` (1-D) against ``truth`` (1 positive, 0 negative, -1
    missing: left out), as scikit-learn's roc_auc_score: the Mann-Whitney U of the positives' ranks
    (ties averaged) over n_pos x n_neg. NaN when either answer is absent."""
    scores, truth = _ranking_device(scores), _ranking_device(truth)
    keep = truth >= 0
    scores, positive = scores[keep].to(torch.float64), truth[keep] == 1
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    u = float(average_ranks(scores)[positive].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def average_precision(scores: torch.Tensor, truth: torch.Tensor) -> float:
    """Average precision of ``scores`` (1-D) against ``truth`` (1/0, -1 missing: left out), as
    scikit-learn's average_precision_score: sum over the distinct thresholds, highest first, of
    (R_n - R_n-1) P_n. NaN without a positive."""
    scores, truth = _ranking_device(scores), _ranking_device(truth)
    keep = truth >= 0
    scores, positive = scores[keep], (truth[keep] == 1).to(torch.float64)
    if not bool(positive.any()):
        return math.nan
    order = torch.argsort(scores, descending=True, stable=True)
    scores, positive = scores[order], positive[order]
    # the last image of each run of equal scores: one threshold per distinct score
    ends = torch.cat([torch.nonzero(scores[1:] != scores[:-1]).flatten(), scores.new_tensor([len(scores) - 1]).long()])
    true_pos = positive.cumsum(0)[ends]
    precision = true_pos / (ends + 1).to(torch.float64)
    recall = true_pos / true_pos[-1]
    gained = recall - torch.cat([recall.new_zeros(1), recall[:-1]])
    return float((gained * precision).sum())


def label_aurocs(scores: torch.Tensor, truth: torch.Tensor) -> list[float]:
    """Each label's AUROC of a multilabel head (``scores``, ``truth`` (N, L); a missing row -1): NaN for a
    label whose labelled images all have the same answer."""
    return [auroc(scores[:, k], truth[:, k]) for k in range(scores.shape[1])]


def multilabel_ranks(scores: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    """``(mean_auroc, map)`` of a multilabel head: the AUROC averaged over the labels with both answers
    among the labelled images, the average precision averaged over the labels with a positive (NaN
    when no label has)."""
    aurocs = [a for a in label_aurocs(scores, truth) if not math.isnan(a)]
    precisions = [p for p in (average_precision(scores[:, k], truth[:, k]) for k in range(scores.shape[1]))]
    precisions = [p for p in precisions if not math.isnan(p)]
    return (
        sum(aurocs) / len(aurocs) if aurocs else math.nan,
        sum(precisions) / len(precisions) if precisions else math.nan,
    )


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
    """Per-head counts of a split, summed on the device, for the classification and binary heads (a
    binary head's classes: 0 no, 1 yes, answered yes when its logit > 0): each true class's images and
    correct answers (``support`` and ``correct``, (classes,) int64: memory O(classes), what the baselines
    and per-class accuracies need), and only with ``matrix=True`` (graphc eval --confusion) the full
    confusion matrix ``counts[task][true, predicted]``, O(classes^2): refused past CONFUSION_MAX_CLASSES.
    Images whose label is missing are left out. Multilabel heads keep every image's scores for
    :meth:`label_aurocs`; regression heads have nothing here."""

    def __init__(self, heads: list[HeadInfo], device: torch.device, matrix: bool = False):
        self.heads = heads
        self.answering = [h for h in heads if h.answers]  # classification and binary
        self.matrix = matrix
        # one more bin than classes: where the images without a label are counted, then dropped (no sync)
        self.support = {h.task: torch.zeros(h.answers + 1, dtype=torch.int64, device=device) for h in self.answering}
        self.correct = {h.task: torch.zeros(h.answers + 1, dtype=torch.int64, device=device) for h in self.answering}
        self.scores: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {
            h.task: [] for h in heads if h.type == "multilabel"
        }
        self.counts = {}
        if matrix:
            too_many = [h for h in self.answering if h.answers > CONFUSION_MAX_CLASSES]
            if too_many:
                from graphc.errors import UsageError

                head = too_many[0]
                raise UsageError(
                    f"--confusion draws a classes x classes matrix per head, but head '{head.task}' has "
                    f"{head.classes:,} classes (at most {CONFUSION_MAX_CLASSES:,} are drawn: the matrix takes "
                    f"classes^2 x 8 bytes, and past that a class gets under 4 pixels of the picture). "
                    "--per-class gives each class's accuracy at any number of classes."
                )
            self.counts = {
                h.task: torch.zeros(h.answers * h.answers + 1, dtype=torch.int64, device=device) for h in self.answering
            }

    @torch.no_grad()
    def update(self, outputs: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor]) -> None:
        for head in self.answering:
            n = head.answers
            target = labels[head.task]  # (B,), -1 missing
            out = outputs[head.task]
            predicted = out.argmax(dim=1) if head.type == "classification" else (out.view(-1) > 0).long()  # (B,)
            known = target >= 0
            spare = torch.full_like(target, n)  # the images without a label go to bin n
            self.support[head.task] += torch.bincount(torch.where(known, target, spare), minlength=n + 1)
            right = torch.where(known & (predicted == target), target, spare)
            self.correct[head.task] += torch.bincount(right, minlength=n + 1)
            if self.matrix:
                cell = torch.where(
                    known, target * n + predicted, torch.full_like(target, n * n)
                )  # true * n + predicted
                self.counts[head.task] += torch.bincount(cell, minlength=n * n + 1)
        for task, kept in self.scores.items():
            kept.append((outputs[task].detach().float(), labels[task].to(torch.int8)))

    def class_counts(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{task: (support, correct)}`` on the CPU: each true class's images and correct answers
        (classification and binary heads; the images with the label)."""
        return {h.task: (self.support[h.task][:-1].cpu(), self.correct[h.task][:-1].cpu()) for h in self.answering}

    def matrices(self) -> dict[str, torch.Tensor]:
        """``{task: int64 (classes, classes)}`` on the CPU, rows the true classes, columns the predictions;
        empty unless built with ``matrix=True``."""
        if not self.matrix:
            return {}
        return {h.task: self.counts[h.task][:-1].cpu().view(h.answers, h.answers) for h in self.answering}

    def baselines(self) -> dict[str, float]:
        """``TASK/majority_acc`` and ``TASK/balanced_acc`` per classification head, ``TASK/majority_acc``
        per binary head (its balanced_acc is a metric of every row), from the per-class counts."""
        result = {}
        kinds = {h.task: h.type for h in self.answering}
        for task, (support, correct) in self.class_counts().items():
            result[f"{task}/majority_acc"] = majority_from_support(support)
            if kinds[task] == "classification":
                result[f"{task}/balanced_acc"] = balanced_from_counts(support, correct)
        return result

    def label_aurocs(self) -> dict[str, list[float]]:
        """``{task: [AUROC of each label]}`` of the multilabel heads, in the head's label order (NaN for a
        label whose labelled images all have the same answer): ``graphc eval --per-class``."""
        return {
            task: label_aurocs(torch.cat([s for s, _ in kept]), torch.cat([t for _, t in kept]))
            for task, kept in self.scores.items()
            if kept
        }
