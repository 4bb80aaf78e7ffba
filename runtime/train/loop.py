"""The training loop: ``fit`` trains a prepared :class:`Run`, ``finish`` writes its summary.

One run = one spec x one seed, written to ``runs/<spec>/<seed>-<time>/`` (the
contract is in runtime/runs.py; starting and resuming runs is runtime/launch.py).
The loop is plain PyTorch::

    for epoch:                                      # fit
        for batch in a seeded permutation:          # train_epoch
            x = normalize(augment(to_float(uint8 batch on device)))
            loss = sum_t w_t * CE_t(model(x)[t])    # train_step
            backward, clip, step, schedule step
        evaluate on val; append metrics; write last.pt (and best.pt)
    evaluate best.pt once on test; write summary.json  # finish

Every source of randomness is seeded from the run's seed and saved in each
checkpoint, so resuming from ``last.pt`` continues bit for bit on CPU.
Ctrl-C ends the run after the last *completed* epoch's files; the checkpoint
write itself is shielded from the interrupt so it is never half done.

With several processes (``run.world``, see runtime/distributed.py) the same loop
runs in each: it trains its share of every batch through DDP, metric sums are
added up over the processes, and rank 0 alone writes the files.
"""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from rich.console import Console

import graphc
from graphc.errors import Problem, RunError, SpecError, did_you_mean
from graphc.ir.graph import Graph
from graphc.lang.spec import Spec, TrainSpec
from runtime.runs import rundir as runs
from runtime.runs.checkpoint import load_checkpoint, save_checkpoint
from runtime.train.distributed import SINGLE, World
from runtime.device import autocast, resolve_precision
from runtime.evaluate import evaluate
from runtime.metrics import HeadInfo, Hierarchy, Meter, compute_loss, heads_of, hierarchies_of, metric_names
from runtime.train.optim import make_optimizer, make_scheduler
from runtime.train.progress import EpochProgress, epoch_line, live_stats

TRAIN_ONLY_METRICS = ("lr", "images_per_s", "time_s")
RESIDENT_BYTES = 4 << 30  # on CUDA a split this small lives on the GPU; batches are gathered there


# --------------------------------------------------------------------------- one run's state


@dataclass
class Run:
    """Everything one run needs while it trains."""

    run_dir: Path
    spec: Spec
    graph: Graph
    dataset: Any  # runtime.data.split.Dataset
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    precision: str
    heads: list[HeadInfo]
    hierarchies: list[Hierarchy]
    augment: Callable
    shuffle_rng: torch.Generator  # batch order (CPU)
    augment_rng: torch.Generator  # augmentation parameters (CPU: the same stream on every device)
    config: dict
    epoch: int = 0  # completed epochs
    monitor: dict = field(default_factory=dict)
    session_start: float = field(default_factory=time.perf_counter)
    wall_before: float = 0.0  # seconds spent in earlier sessions of this run (before a resume)
    resident: tuple | None = None  # the training tensors where batches are gathered (training_tensors)
    world: World = SINGLE  # this process's place among the processes training the run
    ddp: torch.nn.Module | None = None  # the model in DistributedDataParallel, when there are several

    def wall_time(self) -> float:
        return self.wall_before + time.perf_counter() - self.session_start

    @property
    def epochs(self) -> int:
        return self.spec.train.epochs

    @property
    def tasks(self) -> list[str]:
        return [h.task for h in self.heads]


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
    run_dir: Path, spec: Spec, graph: Graph, dataset, device: torch.device, config: dict, world: World = SINGLE
) -> Run:
    """Model, optimiser, schedule and generators of a run, freshly seeded (the same on every process)."""
    from runtime.data.augment import make_augment

    seed = spec.train.seed
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    model = graphc.compile_graph(graph, seed=seed).to(device)
    seed_everything(seed)
    optimizer = make_optimizer(model.parameters(), spec.train)
    scheduler = make_scheduler(optimizer, spec.train, steps_per_epoch(len(dataset.train), spec.train.batch_size, world.size))
    heads = heads_of(graph)
    return Run(
        run_dir=run_dir,
        spec=spec,
        graph=graph,
        dataset=dataset,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        device=device,
        precision=resolve_precision(spec.train.precision, device),
        heads=heads,
        hierarchies=hierarchies_of(dataset.parents, graph.tasks),
        augment=make_augment(spec.data.augment),
        shuffle_rng=torch.Generator().manual_seed(seed),
        augment_rng=torch.Generator().manual_seed(seed + 1),
        config=config,
        monitor=new_monitor(spec.train),
        world=world,
        ddp=world.wrap(model),
    )


def check_monitors(run: Run) -> None:
    """train.select and train.early_stopping must name metrics this run will log."""
    names = metric_names(run.heads, run.hierarchies)
    available = [f"train/{n}" for n in [*names, *TRAIN_ONLY_METRICS]]
    if len(run.dataset.val):
        available += [f"val/{n}" for n in names]
    watched = [("select", run.spec.train.select)]
    if run.spec.train.early_stopping is not None:
        watched.append(("early_stopping", run.spec.train.early_stopping))
    for name, monitor in watched:
        if monitor.metric in available:
            continue
        if monitor.metric.startswith("val/") and not len(run.dataset.val):
            message = f"watches '{monitor.metric}', but this run has no validation images (data.val_fraction = {run.spec.data.val_fraction})."
            hint = "set [data] val_fraction > 0, or watch a 'train/...' metric."
        else:
            message = f"watches '{monitor.metric}', which this model does not log."
            hint = did_you_mean(monitor.metric, available)
        raise SpecError(Problem(message, file=run.spec.source, field=f"train.{name}.metric", hint=hint))


def check_run(run: Run) -> None:
    """What would otherwise fail only inside the first epoch, checked before any file is written
    (build_graph has already checked the spec's normalisation against the input channels)."""
    check_monitors(run)
    if run.spec.train.batch_size < 2:  # BatchNorm1d cannot normalise over a single image while training
        norms = [name for name, m in run.model.named_modules() if isinstance(m, torch.nn.BatchNorm1d)]
        if norms:
            raise SpecError(Problem(
                f"is 1, but node '{norms[0].split('.')[0]}' has batch norm, which needs at least 2 images per training batch.",
                file=run.spec.source, field="train.batch_size", hint="set train.batch_size (or --batch-size) to 2 or more.",
            ))


# --------------------------------------------------------------------------- checkpoints


def rng_state(run: Run) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if run.device.type == "cuda" else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "shuffle": run.shuffle_rng.get_state(),
        "augment": run.augment_rng.get_state(),
    }


def restore_rng(run: Run, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    run.shuffle_rng.set_state(state["shuffle"])
    run.augment_rng.set_state(state["augment"])
    if run.device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def make_checkpoint(run: Run, metrics: dict[str, float]) -> dict:
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
        "config": run.config,
    }


def restore_checkpoint(run: Run, checkpoint: dict, path: Path) -> None:
    try:
        run.model.load_state_dict(checkpoint["model"])
        run.optimizer.load_state_dict(checkpoint["optimizer"])
        run.scheduler.load_state_dict(checkpoint["scheduler"])
        run.epoch = int(checkpoint["epoch"])
        run.monitor = dict(checkpoint["monitor"])
        run.wall_before = float(run.monitor.get("wall_time_s", 0.0))
        restore_rng(run, checkpoint["rng"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise RunError(f"{path}: does not fit this run's model ({str(exc).splitlines()[0]}); it is damaged or from another spec.") from None


@contextlib.contextmanager
def deferred_interrupt():
    """Hold Ctrl-C until the block is done (then raise it), so files are never half written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
        if received:
            raise KeyboardInterrupt


# --------------------------------------------------------------------------- the loop


def train_step(run: Run, x: torch.Tensor, labels: dict[str, torch.Tensor]):
    """One optimisation step on a batch; returns ``(outputs, total loss, per-head losses)``."""
    with autocast(run.device, run.precision):
        outputs = (run.model if run.ddp is None else run.ddp)(x)  # {task: (B, classes)}
    total, parts = compute_loss(outputs, labels, run.heads)
    run.optimizer.zero_grad(set_to_none=True)
    total.backward()
    if run.spec.train.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.spec.train.grad_clip)
    run.optimizer.step()
    run.scheduler.step()  # the schedule is per batch
    return outputs, total, parts


def training_tensors(run: Run) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The training split's uint8 images and labels: on the GPU when they fit (copied once per
    run, so batches are gathered there), else on the CPU (each batch is gathered, then copied)."""
    if run.resident is None:
        split = run.dataset.train
        on_gpu = run.device.type == "cuda" and split.images.numel() <= RESIDENT_BYTES
        where = run.device if on_gpu else torch.device("cpu")
        run.resident = (split.images.to(where), {t: split.labels[t].to(where) for t in run.tasks})
    return run.resident


def train_epoch(run: Run, epoch: int, progress: EpochProgress) -> tuple[dict[str, float], float, float]:
    """One pass over the training split in a fresh seeded order: ``(metrics, images/s, lr)``."""
    from runtime.data.augment import normalize_, to_float

    split, device = run.dataset.train, run.device
    images, labels = training_tensors(run)
    order = torch.randperm(len(split), generator=run.shuffle_rng)  # (N,)
    batches = list(order.split(run.spec.train.batch_size))[: steps_per_epoch(len(split), run.spec.train.batch_size, run.world.size)]
    run.world.reseed(run.augment_rng, run.spec.train.seed, epoch)  # processes other than rank 0: their own draws

    run.model.train()
    meter = Meter(run.heads, run.hierarchies, device)
    progress.start(epoch, run.epochs, len(batches))
    start = time.perf_counter()
    lr = run.optimizer.param_groups[0]["lr"]
    for step, index in enumerate(batches, start=1):
        index = run.world.shard(index).to(images.device)  # this process's share of the global batch
        # Augment pixels in [0, 1] (so a "zeros" fill is black), then normalise.
        x = run.augment(to_float(images[index].to(device, non_blocking=True), None), run.augment_rng)  # (B, C, H, W)
        if run.spec.data.normalize is not None:
            x = normalize_(x, run.spec.data.normalize)
        y = {t: labels[t][index].to(device, non_blocking=True) for t in run.tasks}  # {task: (B,)}
        lr = run.optimizer.param_groups[0]["lr"]
        outputs, total, parts = train_step(run, x, y)
        meter.update(outputs, y, total, parts)
        if progress.due():
            progress.advance(step, live_stats(meter.compute(), run.tasks, meter.count * run.world.size / (time.perf_counter() - start)))
        else:
            progress.advance(step)
    run.world.reduce_meter(meter)  # the sums over every process's share
    metrics = meter.compute()  # syncs with the device, so the time below is honest
    seconds = time.perf_counter() - start
    progress.stop()
    return metrics, meter.count / max(seconds, 1e-9), lr


def evaluate_split(run: Run, split, shared: bool = False) -> dict[str, float]:
    """The run's model on a split, in eval mode, as the run trains it (device, precision, normalisation).

    ``shared``: every process evaluates its part of the split, with rank 0's batch-norm
    statistics (the model it saves), and the sums are added up over the processes.
    """
    reduce = None
    if shared and run.world.size > 1:
        run.world.sync_buffers(run.model)
        split, reduce = run.world.share(split), run.world.reduce_meter
    return evaluate(
        run.model, split, run.heads, run.hierarchies, device=run.device,
        precision=run.precision, normalize=run.spec.data.normalize, batch_size=run.spec.train.batch_size,
        reduce=reduce,
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


def fit(run: Run, console: Console, quiet: bool = False) -> str:
    """Train until train.epochs or early stopping; returns 'completed', 'early_stopped' or 'interrupted'."""
    progress = EpochProgress(console, live=not quiet)
    try:
        while run.epoch < run.epochs and not run.monitor["stopped"]:
            epoch = run.epoch + 1
            started = time.perf_counter()
            train_metrics, images_per_s, lr = train_epoch(run, epoch, progress)
            val_metrics = evaluate_split(run, run.dataset.val, shared=True) if len(run.dataset.val) else None
            seconds = time.perf_counter() - started
            train_row = {"epoch": epoch, "split": "train", **train_metrics, "lr": lr, "images_per_s": images_per_s, "time_s": seconds}
            rows = [train_row] + ([{"epoch": epoch, "split": "val", **val_metrics}] if val_metrics else [])
            flat = {f"{row['split']}/{k}": v for row in rows for k, v in row.items() if k not in ("epoch", "split")}
            # Rank 0 decides for all: a monitor may watch its timings, which differ from the other processes'.
            monitor, is_best = run.world.from_main(watch(run, flat, epoch))
            with deferred_interrupt():  # metrics rows, then last.pt, then best.pt: all or nothing for Ctrl-C
                run.epoch, run.monitor = epoch, {**monitor, "wall_time_s": run.wall_time()}
                if run.world.is_main:  # one process writes the run's files
                    runs.append_metrics(run.run_dir, rows)
                    checkpoint = make_checkpoint(run, flat)
                    save_checkpoint(run.run_dir / runs.LAST, checkpoint)
                    if is_best:
                        save_checkpoint(run.run_dir / runs.BEST, checkpoint)
            note = "best" if is_best else ""
            if run.monitor["stopped"]:
                note = (note + "  early stop").strip()
            console.print(
                epoch_line(epoch, run.epochs, train_metrics, val_metrics, run.tasks, seconds, images_per_s, note),
                markup=False, highlight=False,
            )
    except KeyboardInterrupt:
        progress.stop()
        return "interrupted"
    except torch.cuda.OutOfMemoryError:
        progress.stop()
        raise RunError(
            f"out of GPU memory in epoch {run.epoch + 1} with batch size {run.spec.train.batch_size} on {run.device}. "
            f"{run.run_dir / runs.LAST} holds epoch {run.epoch}. Hint: train again with a smaller --batch-size, "
            "or on another device (--device)."
        ) from None
    return "early_stopped" if run.monitor["stopped"] else "completed"


def finish(run: Run, status: str) -> dict:
    """Evaluate best.pt once on the test split (unless interrupted) and write summary.json."""
    rows = runs.read_metrics(run.run_dir)

    def metrics_of(epoch: int | None) -> dict:
        return {
            f"{r['split']}/{k}": v for r in rows if r["epoch"] == epoch for k, v in r.items() if k not in ("epoch", "split")
        }

    test = None
    best_path = run.run_dir / runs.BEST
    if status != "interrupted" and best_path.is_file():
        best = load_checkpoint(best_path)
        run.model.load_state_dict(best["model"])
        test = evaluate_split(run, run.dataset.test)
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
        "wall_time_s": run.wall_time(),
        "images_per_s": sum(speeds) / len(speeds) if speeds else None,
    }
    runs.write_json(run.run_dir / runs.SUMMARY, summary)
    return summary
