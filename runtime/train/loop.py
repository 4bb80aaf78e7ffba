"""The training loop: ``fit`` trains a prepared :class:`Run`, ``finish`` writes its summary.

One run = one spec x one seed, written to ``runs/<spec>/<seed>-<time>/`` (the
contract is in runtime/runs/rundir.py; starting and resuming runs is runtime/train/launch.py).
The loop is plain PyTorch::

    for epoch:                                      # fit
        [features: unfreeze the nodes due]          # runtime/train/features.py
        for batch in a seeded permutation:          # train_epoch
            x = normalize(augment(to_float(uint8 batch on device)))
            loss = sum_t w_t * CE_t(model(x)[t])    # train_step (w_t: runtime/train/weighting.py)
            backward, clip, step, schedule step
        evaluate on val; [features: loss weights, diagnostics]; append metrics; write last.pt (and best.pt)
    evaluate best.pt once on test; write test_predictions.json, summary.json  # finish

The optional parts - loss weighting, gradient diagnostics, frozen nodes, TensorBoard - are
``run.features`` (runtime/train/features.py): the loop calls each at fixed points and never asks
which there are. How the run executes (device, precision, memory format, ...) is decided once per
run (runtime/device.py's ``decide_execution``) and handed to ``build_run``.

Every source of randomness is seeded from the run's seed and saved in each
checkpoint, so resuming from ``last.pt`` continues bit for bit on CPU.
Ctrl-C ends the run after the last *completed* epoch's files; the checkpoint
write itself is shielded from the interrupt so it is never half done. A NaN or
infinite loss (checked once per epoch, from the step losses kept on the device)
ends the run as "diverged" without writing that epoch's rows or checkpoints.

With several processes (``run.world``, see runtime/train/distributed.py) the same loop
runs in each: it trains its share of every batch through DDP, metric sums are
added up over the processes, and rank 0 alone writes the files.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

import graphc
from graphc.errors import Problem, RunError, SpecError, UsageError
from graphc.ir.graph import Graph
from graphc.ir.metrics import monitor_problem, watchable_metrics
from graphc.lang.spec import PARTIAL_LABELS, Spec, TrainSpec
from graphc.runtime.allocator import keep_freed_memory
from graphc.runtime.collapse import COLLAPSE_RULE, collapsed_heads
from graphc.runtime.data.split import labelled
from graphc.runtime.device import Execution, autocast, configure_matmul, decide_execution
from graphc.runtime.metrics import (
    Confusion,
    HeadInfo,
    Hierarchy,
    Meter,
    compute_loss,
    heads_of,
    hierarchies_of,
    label_fields,
    metric_names,
    targets_of,
)
from graphc.runtime.runs import rundir as runs
from graphc.runtime.runs.checkpoint import (
    load_checkpoint,
    numpy_rng_from_plain,
    numpy_rng_to_plain,
    python_rng_from_plain,
    python_rng_to_plain,
    save_checkpoint,
)
from graphc.runtime.runs.predictions import TEST_PREDICTIONS, predictions_of, write_predictions
from graphc.runtime.runs.record import RunRecord, checkpoint_record
from graphc.runtime.scoring import Answers, eval_batch_size, evaluate, final_test_indices
from graphc.runtime.train.aggregation import Aggregation, make_aggregation
from graphc.runtime.train.distributed import SINGLE, World
from graphc.runtime.train.features import LoopFeature, make_features
from graphc.runtime.train.freeze import freeze, freeze_plan, hold_norms
from graphc.runtime.train.optim import load_optimizer_state, make_optimizer, make_scheduler
from graphc.runtime.train.progress import EpochProgress, Plan, epoch_line, live_stats
from graphc.runtime.train.signals import deferred_interrupt  # Ctrl-C, SIGTERM, SIGHUP wait for an epoch's files
from graphc.runtime.train.weighting import Weighting, losses_after_step, make_weighting

# --------------------------------------------------------------------------- one run's state


@dataclass
class Run:
    """Everything one run needs while it trains."""

    run_dir: Path
    spec: Spec
    graph: Graph
    dataset: Any  # graphc.runtime.data.split.Dataset
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device  # where this process runs it (the CPU, for a launcher of several processes)
    execution: Execution  # how the run executes, decided once (runtime/device.py: decide_execution)
    heads: list[HeadInfo]
    hierarchies: list[Hierarchy]
    augment: Callable
    shuffle_rng: torch.Generator  # batch order (CPU)
    augment_rng: torch.Generator  # augmentation parameters (CPU: the same stream on every device)
    record: RunRecord | None = None  # config.json (None: a run built by hand, e.g. graphc bench's)
    epoch: int = 0  # completed epochs
    monitor: dict = field(default_factory=dict)
    session_start: float = field(default_factory=time.perf_counter)
    wall_before: float = 0.0  # seconds spent in earlier sessions of this run (before a resume)
    resident: dict = field(
        default_factory=dict
    )  # "train", "val": each split where its batches are gathered (placed_split)
    world: World = SINGLE  # this process's place among the processes training the run
    ddp: torch.nn.Module | None = None  # the model in DistributedDataParallel, when there are several
    diverged: dict | None = None  # where the loss stopped being finite (summary.json "diverged")
    compiled: Callable | None = None  # torch.compile of the model, once checked against eager (compile_model)
    compile_proven: bool = False  # a compiled training step has run: no more falling back to eager
    console: Console | None = None  # where fit prints (compile notes from inside a step)
    frozen: dict = field(
        default_factory=dict
    )  # node -> unfreeze_after (or None): nodes frozen now (runtime/train/freeze.py)
    weighting: Weighting | None = (
        None  # [train] loss_weighting (runtime/train/weighting.py); None: loss_weight, as before
    )
    aggregation: Aggregation | None = None  # [train] aggregator (runtime/train/aggregation.py)
    features: list[LoopFeature] = field(default_factory=list)  # runtime/train/features.py

    @property
    def precision(self) -> str:
        """What autocast runs: the execution's precision."""
        return self.execution.precision

    def wall_time(self) -> float:
        return self.wall_before + time.perf_counter() - self.session_start

    @property
    def epochs(self) -> int:
        return self.spec.train.epochs

    @property
    def tasks(self) -> list[str]:
        return [h.task for h in self.heads]

    @property
    def fields(self) -> list[str]:
        """Label fields the loss and metrics read: the tasks, and hierarchy parents without a head."""
        return label_fields(self.heads, self.hierarchies)


def steps_per_epoch(images: int, batch_size: int, processes: int = 1) -> int:
    """Batches per epoch; a last batch that would give a process a single image is dropped (batch norm needs two)."""
    full, rest = divmod(images, batch_size)
    return full + (1 if rest // processes > 1 else 0)


def seed_everything(seed: int) -> None:
    """Seed the global RNGs the model uses implicitly (dropout draws from torch's)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def new_monitor(train: TrainSpec) -> dict:
    return {
        "select": {"metric": train.select.metric, "mode": train.select.mode},
        "best_value": None,
        "best_epoch": None,
        "stop_best": None,  # early stopping's reference value
        "stop_wait": 0,  # epochs since it last improved by min_delta
        "stopped": False,
        "wall_time_s": 0.0,  # seconds the run had taken at its latest checkpoint (all sessions)
    }


def build_run(
    run_dir: Path,
    spec: Spec,
    graph: Graph,
    dataset,
    device: torch.device,
    record: RunRecord | None = None,
    world: World = SINGLE,
    *,
    execution: Execution | None = None,
    model: torch.nn.Module | None = None,
) -> Run:
    """Model, optimiser, schedule and generators of a run, freshly seeded (the same on every process),
    built in this process on ``device``.

    ``execution``: how the run executes, as decided once for the run (decide_execution; the
    launcher decides and its training processes are given it); None: decided here for ``device``
    (a run built by hand: graphc bench, tests). ``model``: the graph compiled with the run's seed,
    when the caller compiled it to decide the execution (else compiled here).
    """
    from graphc.runtime.data.augment import make_augment

    keep_freed_memory()  # every batch reuses the last one's pages (runtime/allocator.py)
    if isinstance(record, dict) and not record:  # {}: no record, as callers building a run by hand passed it
        record = None
    seed = spec.train.seed
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    model = (model if model is not None else graphc.compile_graph(graph, seed=seed)).to(device)
    if execution is None:
        execution = decide_execution(spec.train, device, model, world.size)
    configure_matmul(device, execution.precision, execution.requested or spec.train.precision)
    model = model.to(memory_format=execution.memory_format)  # 4-D weights only; values unchanged
    frozen = freeze_plan(graph)
    freeze(model, frozen)  # before the optimiser: make_optimizer leaves out parameters without gradients
    seed_everything(seed)
    optimizer = make_optimizer(model.parameters(), spec.train)
    heads = targets_of(heads_of(graph), record, dataset)
    weighting = make_weighting(spec, graph, model, heads, device, world)
    if weighting is not None and weighting.parameters():  # learned weights: the same optimiser, no weight decay
        optimizer.add_param_group({"params": weighting.parameters(), "weight_decay": 0.0})
    scheduler = make_scheduler(
        optimizer, spec.train, steps_per_epoch(len(dataset.train), spec.train.batch_size, world.size)
    )
    run = Run(
        run_dir=run_dir,
        spec=spec,
        graph=graph,
        dataset=dataset,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        device=device,
        execution=execution,
        heads=heads,
        hierarchies=hierarchies_of(dataset.hierarchy, graph.tasks),
        augment=make_augment(spec.data.augment),
        shuffle_rng=torch.Generator().manual_seed(seed),
        augment_rng=torch.Generator().manual_seed(seed + 1),
        record=record,
        monitor=new_monitor(spec.train),
        world=world,
        ddp=world.wrap(model, spec.train.sync_batchnorm),
        frozen=frozen,
        weighting=weighting,
        aggregation=make_aggregation(spec, graph, model, [h.task for h in heads], world),
    )
    run.features = make_features(run)
    return run


def labelled_counts(run: Run, test_split) -> dict[str, dict[str, int]] | None:
    """``{split: {task: images with the task's label}}`` of a data set whose labels may be missing
    (a label table, CelebA): train, val and the test images evaluated; None for the others."""
    if run.spec.data.dataset not in PARTIAL_LABELS:
        return None
    splits = {"train": run.dataset.train, "val": run.dataset.val, "test": test_split}
    return {
        name: {h.task: int(labelled(split.labels[h.task]).sum()) for h in run.heads}
        for name, split in splits.items()
        if split is not None
    }


def check_labelled(dataset, graph: Graph) -> None:
    """Every head must have labelled training images: a task without any would train on a loss that is
    always 0 and report metrics of nothing. A UsageError before training, naming the tasks."""
    empty = [task for task in graph.tasks if not bool(labelled(dataset.train.labels[task]).any())]
    if empty:
        raise UsageError(
            f"the {dataset.name} training split has no labelled image for task{'s' if len(empty) > 1 else ''} "
            f"{', '.join(repr(t) for t in empty)} ({len(dataset.train):,} training images, every such label "
            "missing): fill in labels for it, train on more images (--limit-train), or remove its head."
        )


def check_monitors(run: Run) -> None:
    """train.select and train.early_stopping must name metrics this run will log."""
    # build_graph checked them against the same names (graphc.ir.metrics); only the data can tell
    # that a small pool leaves no validation images.
    available = watchable_metrics(
        metric_names(run.heads, run.hierarchies),
        validation=len(run.dataset.val) > 0,
        train_only=[name for feature in run.features for name in feature.metric_names(run)],
    )
    watched = [("select", run.spec.train.select)]
    if run.spec.train.early_stopping is not None:
        watched.append(("early_stopping", run.spec.train.early_stopping))
    if run.spec.train.schedule.name == "plateau" and run.spec.train.schedule.metric is not None:
        watched.append(("schedule", run.spec.train.schedule))
    for name, monitor in watched:
        problem = monitor_problem(monitor.metric, available, run.spec.data.val_fraction)
        if problem is not None:
            raise SpecError(Problem(problem[0], file=run.spec.source, field=f"train.{name}.metric", hint=problem[1]))


def check_run(run: Run) -> None:
    """What would otherwise fail only inside the first epoch, checked before any file is written
    (build_graph has already checked the spec's normalisation against the input channels)."""
    check_monitors(run)
    if run.spec.train.batch_size < 2:  # BatchNorm1d cannot normalise over a single image while training
        norms = [name for name, m in run.model.named_modules() if isinstance(m, torch.nn.BatchNorm1d)]
        if norms:
            raise SpecError(
                Problem(
                    f"is 1, but node '{norms[0].split('.')[0]}' has batch norm, which needs at least 2 images per training batch.",
                    file=run.spec.source,
                    field="train.batch_size",
                    hint="set train.batch_size (or --batch-size) to 2 or more.",
                )
            )


# --------------------------------------------------------------------------- checkpoints


def rng_state(run: Run) -> dict:
    """Every generator's state as tensors and plain data (a checkpoint loads with weights_only=True).
    On CUDA only the run's own device's generator: the others are not the run's."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
        "numpy": numpy_rng_to_plain(np.random.get_state()),
        "python": python_rng_to_plain(random.getstate()),
        "shuffle": run.shuffle_rng.get_state(),
        "augment": run.augment_rng.get_state(),
    }


def restore_rng(run: Run, state: dict, saved_device: str | None = None) -> None:
    """Set every generator from ``rng_state``'s dict; the CUDA state goes to the run's device.

    ``saved_device``: the device the checkpoint was written on (config.json's "device"), to pick
    its state from a 0.1.0 checkpoint, which held a list with every GPU's state.
    """
    torch.set_rng_state(state["torch"])
    np.random.set_state(numpy_rng_from_plain(state["numpy"]))
    random.setstate(python_rng_from_plain(state["python"]))
    run.shuffle_rng.set_state(state["shuffle"])
    run.augment_rng.set_state(state["augment"])
    cuda = state.get("cuda")
    if run.device.type == "cuda" and cuda is not None:
        if isinstance(cuda, (list, tuple)):  # the old format: one state per GPU, by position
            index = torch.device(saved_device).index if saved_device and saved_device.startswith("cuda") else None
            cuda = cuda[index or 0] if (index or 0) < len(cuda) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, run.device)


def make_checkpoint(run: Run, metrics: dict[str, float]) -> dict:
    """What a resume needs to continue exactly after ``run.epoch`` (``metrics``: that epoch's flat
    ``split/name`` values): the weights, the optimiser (with the groups of learned loss weights and
    of the nodes unfrozen so far), the schedule, every RNG, the monitor and the loss weighting's
    state (each feature's under its key, runtime/train/features.py), and the run record. Which nodes are
    still frozen is not in it: config.json's ``frozen`` and the epoch say (restore_checkpoint); nor is
    torch.compile, a way of running the same weights."""
    return {
        "graphc_version": graphc.__version__,
        "spec_name": run.graph.name,
        "spec_sha256": run.graph.sha256,
        "spec_text": run.graph.spec_text,
        "epoch": run.epoch,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "rng": rng_state(run),
        "monitor": dict(run.monitor),
        "metrics": metrics,
        "class_names": {t: run.dataset.class_names[t] for t in run.tasks},
        "config": run.record.to_json() if run.record is not None else None,
        **{feature.key: feature.state_dict() for feature in run.features if feature.key is not None},
    }


def restore_checkpoint(run: Run, checkpoint: dict, path: Path) -> None:
    try:
        run.model.load_state_dict(checkpoint["model"])
        run.epoch = int(checkpoint["epoch"])
        for feature in run.features:  # e.g. the nodes unfrozen before this checkpoint: their optimiser groups are in it
            feature.load_state(run, checkpoint)
        load_optimizer_state(run.optimizer, checkpoint["optimizer"])
        run.scheduler.load_state_dict(checkpoint["scheduler"])
        run.monitor = dict(checkpoint["monitor"])
        run.wall_before = float(run.monitor.get("wall_time_s", 0.0))
        saved = checkpoint_record(checkpoint, path)
        restore_rng(run, checkpoint["rng"], saved.device if saved is not None else None)
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise RunError(
            f"{path}: does not fit this run's model ({str(exc).splitlines()[0]}); it is damaged or from another spec."
        ) from None


# --------------------------------------------------------------------------- the loop


class Diverged(Exception):
    """The loss became NaN or infinite: training cannot recover, and nothing of the epoch is kept."""

    def __init__(self, epoch: int, split: str, value: float, step: int | None = None, steps: int | None = None):
        super().__init__(f"{split} loss {value} in epoch {epoch}")
        self.epoch, self.split, self.value, self.step, self.steps = epoch, split, value, step, steps

    def to_dict(self, lr: float) -> dict:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "steps": self.steps,
            "split": self.split,
            "loss": str(self.value),
            "lr": lr,
        }


def train_step(run: Run, x: torch.Tensor, labels: dict[str, torch.Tensor]):
    """One optimisation step on a batch; returns ``(outputs, total loss, per-head losses)``."""
    x = x.contiguous(memory_format=run.execution.memory_format)
    if run.compiled is not None and not run.compile_proven:
        return first_compiled_step(run, x, labels)
    return optimisation_step(run, x, labels)


def optimisation_step(run: Run, x: torch.Tensor, labels: dict[str, torch.Tensor]):
    forward = run.compiled if run.compiled is not None else (run.model if run.ddp is None else run.ddp)
    aggregated = run.aggregation is not None
    # Jacobian descent averages the gradients over the processes itself (one all-reduce), not DDP
    with run.ddp.no_sync() if aggregated and run.ddp is not None else nullcontext():
        with autocast(run.device, run.precision):
            outputs = forward(x)  # {task: (B, classes)}
        total, parts = compute_loss(outputs, labels, run.heads)
        run.optimizer.zero_grad(set_to_none=True)
        if aggregated:
            total = run.aggregation.step(total, parts, run.weighting, run.heads)
        elif run.weighting is None:
            total.backward()
        else:  # the method's objective; the total logged: sum_t w_t L_t with the weights in force
            total = run.weighting.backward(total, parts)
    if run.spec.train.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.spec.train.grad_clip)
    run.optimizer.step()
    if run.weighting is not None and run.weighting.learns_after_step:  # FAMO: the losses the step left
        run.weighting.learn(losses_after_step(run, forward, x, labels))
    for feature in run.features:
        feature.after_step(run)
    run.scheduler.step()  # the schedule is per batch
    return outputs, total, parts


# --------------------------------------------------------------------------- torch.compile

# Largest difference of a compiled forward from eager, relative to the logits' size, that still
# counts as the same model: fusion reorders float sums, bf16 keeps 8 bits of mantissa.
COMPILE_TOLERANCE = {"fp32": 1e-3, "bf16": 3e-2}


def say(run: Run, text: str) -> None:
    if run.console is not None:
        run.console.print(text, markup=False, highlight=False)


def compile_model(run: Run, x: torch.Tensor) -> None:
    """Set ``run.compiled`` to torch.compile of the model if its forward matches eager on ``x``
    (a first batch, in eval mode so dropout and batch-norm statistics play no part); otherwise
    say why and leave the run in eager mode."""
    module = run.model if run.ddp is None else run.ddp
    x = x.contiguous(memory_format=run.execution.memory_format)
    started = time.perf_counter()
    try:
        compiled = torch.compile(module)
        run.model.eval()
        with torch.no_grad(), autocast(run.device, run.precision):
            eager, got = module(x), compiled(x)
    except Exception as exc:  # noqa: BLE001 - any compiler failure means: train in eager mode
        say(run, f"torch.compile failed ({compile_error(exc)}); training in eager mode.")
        return
    finally:
        run.model.train()
    difference = max(
        ((got[t].float() - eager[t].float()).abs().max() / eager[t].float().abs().max().clamp(min=1.0)).item()
        for t in eager
    )
    tolerance = COMPILE_TOLERANCE[run.precision]
    if not difference <= tolerance:  # NaN disagrees too
        say(
            run,
            f"torch.compile's model differs from eager on the first batch by {difference:.2g} "
            f"(relative; tolerance {tolerance:g} in {run.precision}); training in eager mode.",
        )
        return
    run.compiled = compiled
    say(
        run,
        f"torch.compile: matches eager on the first batch (relative difference {difference:.2g}); "
        f"checked in {time.perf_counter() - started:.1f} s; the training graph compiles in the first step.",
    )


def compile_error(exc: Exception) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def first_compiled_step(run: Run, x: torch.Tensor, labels: dict[str, torch.Tensor]):
    """The first training step through the compiled model (which compiles its backward): if that
    fails, say so and take the step in eager mode. No optimiser step has happened before a failure."""
    try:
        result = optimisation_step(run, x, labels)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as exc:  # noqa: BLE001
        run.compiled = None
        run.optimizer.zero_grad(set_to_none=True)
        say(run, f"torch.compile failed in the first training step ({compile_error(exc)}); training in eager mode.")
        return optimisation_step(run, x, labels)
    run.compile_proven = True
    return result


def first_batch(run: Run) -> torch.Tensor:
    """The first training batch as the model sees it, without augmentation (for compile_model)."""
    from graphc.runtime.data.augment import normalize_, to_float

    images = run.dataset.train.images[: run.spec.train.batch_size].to(run.device)
    x = to_float(images, None)
    return normalize_(x, run.spec.data.normalize) if run.spec.data.normalize is not None else x


def placed_split(run: Run, name: str, split, share: bool = False):
    """``split`` (only the label fields the run reads; with ``share``, this process's part of it)
    where its batches are gathered, kept under ``name`` for the run: on the GPU when it fits there
    (copied once), else on the CPU, streamed through pinned memory (graphc.runtime.data.batches)."""
    from graphc.runtime.data.batches import place

    if name not in run.resident:
        run.resident[name] = place(run.world.share(split) if share else split, run.device, run.fields)
    return run.resident[name]


def train_epoch(run: Run, epoch: int, progress: EpochProgress) -> tuple[dict[str, float], float, float]:
    """One pass over the training split in a fresh seeded order: ``(metrics, images/s, lr)``."""
    from graphc.runtime.data.augment import normalize_, to_float
    from graphc.runtime.data.batches import gather, to_device

    device = run.device
    split = placed_split(run, "train", run.dataset.train)
    # The epoch's order goes where the batches are gathered in one copy, not one copy per step.
    order = to_device(torch.randperm(len(split), generator=run.shuffle_rng), split.images.device)  # (N,)
    steps = steps_per_epoch(len(split), run.spec.train.batch_size, run.world.size)
    batches = [
        run.world.shard(index) for index in order.split(run.spec.train.batch_size)[:steps]
    ]  # this process's shares
    run.world.reseed(run.augment_rng, run.spec.train.seed, epoch)  # processes other than rank 0: their own draws

    run.model.train()
    hold_norms(run.model, run.frozen)  # frozen nodes' batch norm keeps its statistics (runtime/train/freeze.py)
    meter = Meter(run.heads, run.hierarchies, device)
    progress.start(epoch, run.epochs, len(batches))
    losses = []  # each step's loss, on the device: checked once at the end of the epoch (no sync per step)
    start = time.perf_counter()
    lr = run.optimizer.param_groups[0]["lr"]
    for step, (images, y) in enumerate(gather(split, batches, device), start=1):  # uint8 (B, C, H, W), {field: (B,)}
        # Augment pixels in [0, 1] (so a "zeros" fill is black), then normalise.
        x = run.augment(to_float(images, None), run.augment_rng)  # (B, C, H, W)
        if run.spec.data.normalize is not None:
            x = normalize_(x, run.spec.data.normalize)
        lr = run.optimizer.param_groups[0]["lr"]
        outputs, total, parts = train_step(run, x, y)
        losses.append(total.detach())
        meter.update(outputs, y, total, parts)
        live = meter.peek() if progress.due() else None  # never waits for a GPU (Meter.peek)
        if live is not None:
            progress.advance(
                step, live_stats(live, run.tasks, meter.count * run.world.size / (time.perf_counter() - start))
            )
        else:
            progress.advance(step)
    run.world.reduce_meter(meter)  # the sums over every process's share
    metrics = meter.compute()  # syncs with the device, so the time below is honest
    seconds = time.perf_counter() - start
    progress.stop()
    if not math.isfinite(metrics["loss"]):  # the summed loss: every process decides the same
        finite = torch.isfinite(torch.stack(losses)).tolist()
        step = finite.index(False) + 1 if False in finite else len(batches)  # another process's step: the epoch's end
        raise Diverged(epoch, "train", losses[step - 1].item(), step, len(batches))
    return metrics, meter.count / max(seconds, 1e-9), lr


def evaluate_split(
    run: Run,
    split,
    shared: bool = False,
    confusion: Confusion | None = None,
    keep: str | None = None,
    answers: Answers | None = None,
) -> dict[str, float]:
    """The run's model on a split, in eval mode, as the run trains it (device, precision, normalisation),
    in batches of ``eval_batch_size``.

    ``shared``: every process evaluates its part of the split, with rank 0's batch-norm
    statistics (the model it saves), and the sums are added up over the processes.
    ``confusion`` (one process only) also collects the per-head confusion matrices, ``answers`` (one
    process only) each image's true and predicted classes.
    ``keep``: the name of a split evaluated again and again (the validation split): its part is
    placed once per run, on the GPU when it fits (placed_split); others are streamed.
    """
    reduce = None
    if shared and run.world.size > 1:
        run.world.sync_buffers(run.model)
        reduce = run.world.reduce_meter
    if keep is not None:
        split = placed_split(run, keep, split, share=reduce is not None)
    elif reduce is not None:
        split = run.world.share(split)
    return evaluate(
        run.model,
        split,
        run.heads,
        run.hierarchies,
        device=run.device,
        precision=run.precision,
        normalize=run.spec.data.normalize,
        batch_size=eval_batch_size(run.spec.train.batch_size),
        reduce=reduce,
        confusion=confusion,
        answers=answers,
    )


def improved(value: float | None, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if value is None or value != value:  # missing or NaN never improves
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def watch(run: Run, metrics: dict[str, float], epoch: int) -> tuple[dict, bool]:
    """The monitor state after ``epoch`` and whether this epoch is the new best (by train.select)."""
    monitor = dict(run.monitor)
    select = run.spec.train.select
    is_best = improved(metrics.get(select.metric), monitor["best_value"], select.mode)
    if is_best:
        monitor["best_value"], monitor["best_epoch"] = metrics[select.metric], epoch
    stop = run.spec.train.early_stopping
    if stop is not None:
        value = metrics.get(stop.metric)
        if improved(value, monitor["stop_best"], stop.mode, stop.min_delta):
            monitor["stop_best"], monitor["stop_wait"] = value, 0
        else:
            monitor["stop_wait"] += 1
            monitor["stopped"] = monitor["stop_wait"] >= stop.patience
    return monitor, is_best


def fit(run: Run, console: Console, quiet: bool | str = False) -> str:
    """Train until train.epochs or early stopping; returns 'completed', 'early_stopped', 'interrupted'
    or 'diverged' (a NaN or infinite loss: that epoch's files are not written, see ``run.diverged``)."""
    # quiet: True (no progress), or a progress mode: auto, bar, lines, none (runtime/train/progress.py)
    progress = EpochProgress(console, live=not quiet if isinstance(quiet, bool) else quiet, device=run.device)
    test = final_test_images(run) if run.world.is_main else None  # for the estimate of the run's time
    progress.set_plan(
        Plan(
            run.epoch + 1, run.epochs, run.spec.train.batch_size, len(run.dataset.val), 0 if test is None else len(test)
        )
    )
    run.console = console
    if run.spec.train.compile and run.compiled is None and run.epoch < run.epochs:
        compile_model(run, first_batch(run))
    features = run.features  # loss weighting, diagnostics, frozen nodes, TensorBoard (runtime/train/features.py)
    for feature in features:
        feature.start(run, console)
    try:
        while run.epoch < run.epochs and not run.monitor["stopped"]:
            epoch = run.epoch + 1
            for feature in features:
                feature.epoch_start(run, console)
            started = time.perf_counter()
            train_metrics, images_per_s, lr = train_epoch(run, epoch, progress)
            entries = {k: v for feature in features for k, v in feature.train_entries(run, train_metrics).items()}
            val_metrics = (
                evaluate_split(run, run.dataset.val, shared=True, keep="val") if len(run.dataset.val) else None
            )
            if val_metrics is not None:  # e.g. the loss with the epoch's weights, as the train row's
                for feature in features:
                    feature.validated(run, val_metrics)
            if val_metrics is not None and not math.isfinite(val_metrics["loss"]):
                raise Diverged(epoch, "val", val_metrics["loss"])
            seconds = time.perf_counter() - started
            train_row = {
                "epoch": epoch,
                "split": "train",
                **train_metrics,
                **entries,
                "lr": lr,
                "images_per_s": images_per_s,
                "time_s": seconds,
            }
            for feature in features:  # after time_s: e.g. the diagnostics, whose own time is diag/time_s
                feature.train_row(run, train_row)
            rows = [train_row] + ([{"epoch": epoch, "split": "val", **val_metrics}] if val_metrics else [])
            flat = {f"{row['split']}/{k}": v for row in rows for k, v in row.items() if k not in ("epoch", "split")}
            # Rank 0 decides for all: a monitor may watch its timings, which differ from the other processes'.
            monitor, is_best = run.world.from_main(watch(run, flat, epoch))
            with deferred_interrupt():  # metrics rows, then last.pt, then best.pt: all or nothing for Ctrl-C
                run.epoch, run.monitor = epoch, {**monitor, "wall_time_s": run.wall_time()}
                if run.world.is_main:  # one process writes the run's files
                    runs.append_metrics(run.run_dir, rows)
                    for feature in features:
                        feature.rows_written(run, rows)
                    # Serialised once: a best epoch's last.pt and best.pt are the same bytes.
                    save_checkpoint(
                        [run.run_dir / runs.LAST] + ([run.run_dir / runs.BEST] if is_best else []),
                        make_checkpoint(run, flat),
                    )
            note = "best" if is_best else ""
            if run.monitor["stopped"]:
                note = (note + "  early stop").strip()
            console.print(
                epoch_line(epoch, run.epochs, train_metrics, val_metrics, run.tasks, seconds, images_per_s, note),
                markup=False,
                highlight=False,
            )
    except KeyboardInterrupt:
        progress.stop()
        return "interrupted"
    except Diverged as exc:
        progress.stop()
        run.diverged = exc.to_dict(run.spec.train.optimizer.lr)
        return "diverged"
    except OSError as exc:  # writing the run's files: disk full, read-only file system
        progress.stop()
        raise runs.write_error(run.run_dir, exc) from None
    except torch.cuda.OutOfMemoryError:
        progress.stop()
        batch = run.spec.train.batch_size
        raise RunError(  # not the data: a split that does not fit stays on the CPU (graphc.runtime.data.batches)
            f"out of GPU memory in epoch {run.epoch + 1} with batch size {batch} on {run.device} "
            f"(evaluation batches: {eval_batch_size(batch)} images). {run.run_dir / runs.LAST} holds epoch {run.epoch}. "
            "Hint: train again with a smaller --batch-size, or resume on another device (--resume with --device)."
        ) from None
    finally:
        for feature in features:
            feature.stop(run)
    return "early_stopped" if run.monitor["stopped"] else "completed"


def final_test_images(run: Run) -> torch.Tensor | None:
    """Indices (ascending) of the test images the final pass evaluates: all of them, none (--no-test:
    None), or with --limit-test N a random N images, the same N for every run of the data set (seeded
    by data.split_seed, as the validation split is: the test split itself may be ordered by class).
    graphc eval picks the run's images with the same function (graphc.runtime.scoring.final_test_indices)."""
    record = run.record
    if record is not None and record.no_test:
        return None
    limit = record.limit_test if record is not None else None
    return final_test_indices(len(run.dataset.test), limit, run.spec.data.split_seed)


def final_test_split(run: Run, indices: torch.Tensor | None):
    """The test split the final pass evaluates, from :func:`final_test_images`'s ``indices`` (None:
    --no-test, no split)."""
    if indices is None:
        return None
    test = run.dataset.test
    return test if len(indices) == len(test) else test.subset(indices)


def finish(run: Run, status: str) -> dict:
    """Evaluate best.pt once on the test split (unless interrupted or --no-test; on a random
    subset with --limit-test), write each image's answers (test_predictions.json,
    runtime/runs/predictions.py), judge collapsed heads (runtime/collapse.py) and write summary.json."""
    rows = runs.read_metrics(run.run_dir)

    def metrics_of(epoch: int | None) -> dict:
        return {
            f"{r['split']}/{k}": v
            for r in rows
            if r["epoch"] == epoch
            for k, v in r.items()
            if k not in ("epoch", "split")
        }

    test = None
    best_path = run.run_dir / runs.BEST
    indices = final_test_images(run)
    split = final_test_split(run, indices)
    predictions_path = run.run_dir / TEST_PREDICTIONS
    # A resumed run's earlier test pass: its file goes with the summary that a resume deletes.
    predictions_path.unlink(missing_ok=True)
    if status != "interrupted" and best_path.is_file() and split is not None:
        best = load_checkpoint(best_path)
        run.model.load_state_dict(best["model"])
        confusion = Confusion(run.heads, run.device)
        # Every test image once: this pass runs in one process (rank 0, alone, with several: launch.train_process).
        answers = Answers(run.heads)
        try:
            test = evaluate_split(run, split, confusion=confusion, answers=answers)
        except torch.OutOfMemoryError:
            raise RunError(
                f"out of GPU memory on {run.device} evaluating {best_path} on the test split ({len(split):,} images in "
                f"batches of {eval_batch_size(run.spec.train.batch_size)}). The training is complete and saved: finish "
                f"the run on the CPU with `graphc train --resume {run.run_dir} --device cpu`, which evaluates best.pt "
                "on the test split and writes summary.json."
            ) from None
        test.update(confusion.baselines())  # TASK/majority_acc, TASK/balanced_acc: what the accuracies compare with
        for feature in run.features:  # e.g. the loss with the best epoch's weights, as its val row
            feature.tested(run, test, best)
        record = run.record
        predictions = predictions_of(
            "test",
            record.dataset if record is not None else run.spec.data.dataset,
            indices.tolist(),
            answers.collected(),
            answers.classes,
            {"limit": record.limit_test if record is not None else None, "seed": run.spec.data.split_seed},
        )
        write_predictions(predictions_path, predictions)  # before summary.json, which marks the run finished
    speeds = [r["images_per_s"] for r in rows if r["split"] == "train" and r.get("images_per_s")]
    summary = {
        "spec": run.graph.name,
        "seed": run.spec.train.seed,
        "status": status,
        "epochs_completed": run.epoch,
        "best_epoch": run.monitor["best_epoch"],
        "select": dict(run.monitor["select"]),
        "best": metrics_of(run.monitor["best_epoch"]),
        "last": metrics_of(run.epoch),
        "test": test,
        # What "test" covers: skipped (--no-test), or --limit-test's N of the split's images.
        "test_skipped": run.record is not None and run.record.no_test,
        "test_limit": run.record.limit_test if run.record is not None else None,
        "test_images": len(split) if test is not None else 0,
        # Images with each task's label, per split (data sets whose labels may be missing; None: all have them).
        "labelled": labelled_counts(run, split if test is not None else None),
        "test_predictions": TEST_PREDICTIONS if test is not None else None,  # per image, beside this file
        # Heads no better than a constant answer on the test pass (runtime/collapse.py); None: not judged.
        "collapsed": collapsed_heads(test, {h.task: h.classes for h in run.heads}) if test is not None else None,
        "collapse_rule": COLLAPSE_RULE,
        "wall_time_s": run.wall_time(),
        "images_per_s": sum(speeds) / len(speeds) if speeds else None,
    }
    if run.diverged is not None:
        summary["diverged"] = run.diverged
    runs.write_json(run.run_dir / runs.SUMMARY, summary)
    return summary
