"""Scoring a model on a split: its loss and metrics in eval mode, as a metrics row names them.

``evaluate`` is the one evaluation pass of the runtime: a run's validation and final test pass
(runtime/train/loop.py), ``graphc eval`` (runtime/evaluate.py) and graphc bench all score a model
through it, in batches of ``eval_batch_size``. :class:`Answers` keeps each image's true and
predicted class per classification and binary head (the per-image predictions files,
runtime/runs/predictions.py), and :func:`final_test_indices` picks the test images a run's final
pass evaluates (``--limit-test``), so that ``graphc eval`` evaluates the same ones.

May import: graphc, ``graphc.runtime.device``, ``graphc.runtime.data``, ``graphc.runtime.metrics``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from graphc.runtime.device import autocast
from graphc.runtime.metrics import Confusion, HeadInfo, Hierarchy, Meter, compute_loss

# Evaluation batches are this many training batches: with no activations kept for a backward
# pass they take about the memory a training batch does, and a GPU gets a few full launches
# instead of many small ones (a smaller --batch-size shrinks both). Metrics are sums over
# images, so the batch size changes only the order of float additions.
EVAL_BATCH_FACTOR = 4


def eval_batch_size(train_batch_size: int) -> int:
    """Images per evaluation batch for a run trained in batches of ``train_batch_size``."""
    return EVAL_BATCH_FACTOR * train_batch_size


def final_test_indices(total: int, limit: int | None, seed: int) -> torch.Tensor:
    """Indices (int64, ascending) of the test images a final test pass evaluates out of ``total``:
    all of them (``limit`` None or >= total), else a random ``limit`` drawn with ``seed``
    (data.split_seed: the same images for every run of the data set, whatever its training seed;
    random, because a test split may be ordered by class)."""
    if limit is None or limit >= total:
        return torch.arange(total)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    return order[:limit].sort().values


class Answers:
    """Each image's true and predicted class per classification and binary head (a binary head's: 1 yes
    when its logit > 0, else 0 no), in the order evaluated, kept on the device until :meth:`collected`
    (one copy at the end, no sync per batch). A missing label's true class is -1
    (graphc.runtime.data.split.MISSING). Multilabel and regression heads have no single answer: none here."""

    def __init__(self, heads: list[HeadInfo]):
        self.heads = [h for h in heads if h.answers]
        self.true: dict[str, list[torch.Tensor]] = {h.task: [] for h in self.heads}
        self.predicted: dict[str, list[torch.Tensor]] = {h.task: [] for h in self.heads}

    @property
    def classes(self) -> dict[str, int]:
        """``{task: classes}`` of the heads answered (a binary head's: 2), as a predictions file records them."""
        return {h.task: h.answers for h in self.heads}

    @torch.no_grad()
    def update(self, outputs, labels) -> None:
        for head in self.heads:
            out = outputs[head.task]
            self.true[head.task].append(labels[head.task].detach())
            answer = out.argmax(dim=1) if head.type == "classification" else (out.view(-1) > 0).long()
            self.predicted[head.task].append(answer)

    def collected(self) -> dict[str, tuple[list[int], list[int]]]:
        """``{task: (true, predicted)}`` as lists of ints, one entry per image evaluated."""
        result = {}
        for head in self.heads:
            true, predicted = self.true[head.task], self.predicted[head.task]
            result[head.task] = (
                torch.cat(true).cpu().tolist() if true else [],
                torch.cat(predicted).cpu().tolist() if predicted else [],
            )
        return result


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
    answers: Answers | None = None,
) -> dict[str, float]:
    """Loss and metrics of ``model`` on ``split`` (a graphc.runtime.data.split.Split), in eval mode, no augmentation.

    ``reduce`` adds other processes' sums to the Meter's before the means are taken
    (each evaluated its part of a split; graphc.runtime.train.distributed). ``confusion``, when
    given, also collects the per-head confusion matrices (of this process's images); ``answers``,
    when given, each image's true and predicted class per head (of this process's images).
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
        if answers is not None:
            answers.update(outputs, labels)
    model.train(was_training)
    if reduce is not None:
        reduce(meter)
    return meter.compute()
