"""Gradient-conflict diagnostics (``[train] diagnostics = true``, ``--diagnostics``).

Once per epoch, after the training pass, each task's gradient on the parameters where several
tasks' gradients meet (graphc.ir.gradients: shared nodes and reused branches), logged in the
training row as ``diag/...`` (the names and their exact meaning: graphc.ir.metrics).

What is measured, precisely:

- **the images**: ``DIAGNOSTIC_BATCHES`` batches of ``train.batch_size`` training images,
  drawn once per run with a generator seeded by ``train.seed`` (the same images every epoch,
  so a curve shows the model changing, not the sample), without augmentation;
- **the gradient** of task T: of its weighted loss ``w_T x cross-entropy_T`` (``w_T``: the
  head's ``loss_weight``, or the weight a ``loss_weighting`` method had in force that epoch)
  averaged over those batches - T's part of the gradient the optimiser would get on them. The
  model runs in training mode, as in a training step (batch statistics, dropout; the norm
  layers of frozen nodes keep their running statistics, runtime/train/freeze.py), with
  dropout's masks drawn from a generator seeded by ``train.seed`` (the same every epoch);
- then per shared node the norm of each task's gradient and the cosine of each pair, and per
  reused branch each reader's share ``|g_R| / sum_T |g_T|`` (float64 sums).

None of it touches the training: gradients come from ``torch.autograd.grad`` (no ``.grad`` is
written, the optimiser never sees them), the global RNG state is saved and restored around the
dropout draws (``torch.random.fork_rng``), batch-norm running statistics are put back, and the
batches come from their own generator. So a run with diagnostics follows the same trajectory as
one without - the same weights bit for bit on CPU (tests/runtime/train/test_diagnostics.py) - and
differs only in time (``diag/time_s``; docs/research-tools.md: its cost). With several processes only
rank 0 measures (on its own model copy); it writes the rows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import torch

from graphc.errors import RunError, UsageError
from graphc.ir.gradients import ReusedBranch, SharedNode, reused_branches, shared_nodes
from graphc.ir.graph import Graph
from graphc.ir.metrics import DIAGNOSTIC_PREFIX, WEIGHT_PREFIX, canonical_name, cosine_name, diagnostic_names
from graphc.lang.spec import Spec
from graphc.runtime.device import autocast
from graphc.runtime.metrics import HeadInfo, compute_loss
from graphc.runtime.train.freeze import hold_norms

DIAGNOSTIC_BATCHES = 4  # a few batches: a steadier gradient than one, a small cost next to an epoch


def node_parameters(model: torch.nn.Module, node: str) -> list[torch.nn.Parameter]:
    """The trainable parameters of one node's submodule (compile_graph names submodules after nodes)."""
    if not hasattr(model, node):
        return []
    return [p for p in getattr(model, node).parameters() if p.requires_grad]


def task_gradients(
    model: torch.nn.Module,
    batches: Sequence[tuple[torch.Tensor, Mapping[str, torch.Tensor]]],
    heads: Sequence[HeadInfo],
    weights: Mapping[str, float],
    where: Mapping[str, Sequence[str]],
    device: torch.device | None = None,
    precision: str = "fp32",
) -> dict[str, dict[str, torch.Tensor]]:
    """``{node: {task: gradient}}``: for each node in ``where`` and each task listed for it, the
    gradient of ``weights[task] x task's loss`` on the node's parameters (flattened, float64),
    averaged over ``batches`` (``(x, labels)`` pairs, each one forward pass).

    The model runs as it is (train or eval mode is the caller's); nothing is written to ``.grad``.
    """
    params = {node: node_parameters(model, node) for node in where}
    tasks = list(dict.fromkeys(t for node in where for t in where[node]))
    sums = {node: {t: None for t in where[node]} for node in where}
    for x, labels in batches:
        with autocast(device or x.device, precision):
            outputs = model(x)  # {task: (B, classes)}
        _, parts = compute_loss(outputs, labels, list(heads))
        for i, task in enumerate(tasks):
            nodes = [n for n in where if task in where[n] and params[n]]
            flat = [p for n in nodes for p in params[n]]
            if not flat:
                continue
            grads = torch.autograd.grad(
                weights[task] * parts[task], flat, retain_graph=i < len(tasks) - 1, allow_unused=True
            )
            k = 0
            for n in nodes:
                pieces = [
                    (g if g is not None else torch.zeros_like(p)).detach().reshape(-1).double()
                    for g, p in zip(grads[k : k + len(params[n])], params[n])
                ]
                k += len(params[n])
                vector = torch.cat(pieces)
                sums[n][task] = vector if sums[n][task] is None else sums[n][task] + vector
    return {
        node: {t: (g / len(batches) if g is not None else None) for t, g in by_task.items()}
        for node, by_task in sums.items()
        if params[node]
    }


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    denominator = float(a.norm() * b.norm())
    return float(a @ b) / denominator if denominator > 0 else math.nan  # a zero gradient has no direction


def conflict_metrics(
    gradients: Mapping[str, Mapping[str, torch.Tensor]], shared: Sequence[SharedNode], branches: Sequence[ReusedBranch]
) -> dict[str, float]:
    """The ``diag/...`` values (graphc.ir.metrics.diagnostic_names, without time_s) from
    :func:`task_gradients`' output; nodes without trainable parameters (frozen) are left out."""
    values: dict[str, float] = {}
    for node in shared:
        if node.name not in gradients:
            continue
        g = gradients[node.name]
        for task in node.tasks:
            values[f"{DIAGNOSTIC_PREFIX}{node.name}/norm/{task}"] = float(g[task].norm())
        for a, b in combinations(node.tasks, 2):  # named in sorted order, whatever the head order
            values[cosine_name(node.name, a, b)] = _cosine(g[a], g[b])
    for branch in branches:
        # Each task's norm over the whole branch: the root of its nodes' squared norms.
        flowing = [branch.task] + [r for r in branch.readers if r not in branch.detached]
        squares = {t: 0.0 for t in flowing}
        for node in branch.nodes:
            for t in flowing:
                if node in gradients and gradients[node].get(t) is not None:
                    squares[t] += float(gradients[node][t].norm()) ** 2
        norms = {t: math.sqrt(s) for t, s in squares.items()}
        total = sum(norms.values())
        for reader in branch.readers:
            key = f"{DIAGNOSTIC_PREFIX}{branch.head}/share/{reader}"
            if reader in branch.detached:
                values[key] = 0.0  # reuse_gradient = false: no gradient of the reader reaches the branch
            else:
                values[key] = norms[reader] / total if total > 0 else math.nan
    return values


def places(shared: Sequence[SharedNode], branches: Sequence[ReusedBranch]) -> dict[str, tuple[str, ...]]:
    """``{node: tasks}``: every node whose per-task gradients the metrics need, and those tasks. The
    shared nodes are all: a reused branch's nodes that a reader's gradient reaches are shared nodes,
    and a branch no reader's gradient reaches needs no numbers (its shares are 0 by construction)."""
    return {node.name: node.tasks for node in shared}


@dataclass
class Diagnostics:
    """A run's diagnostics: where to measure and on which images (fixed for the run)."""

    shared: list[SharedNode]
    branches: list[ReusedBranch]
    images: torch.Tensor  # uint8 (K * B, C, H, W), CPU
    labels: dict[str, torch.Tensor]  # the heads' label fields, (K * B,)
    batch_size: int
    seed: int

    def measure(self, run, logged_weights: Mapping[str, float]) -> dict[str, float]:
        """The epoch's ``diag/...`` values for ``run`` (graphc.runtime.train.loop.Run); ``logged_weights``:
        the epoch's ``{weight/TASK: w}`` under a loss_weighting table (else empty: the heads'
        loss_weight). The model, its buffers and every RNG are as they were afterwards."""
        from graphc.runtime.data.augment import normalize_, to_float

        started = time.perf_counter()
        weights = {h.task: float(logged_weights.get(f"{WEIGHT_PREFIX}{h.task}", h.loss_weight)) for h in run.heads}
        model = run.model
        was_training = model.training
        buffers = [b.detach().clone() for b in model.buffers()]  # batch norm's running statistics
        batches = []
        for index in torch.arange(len(self.images)).split(self.batch_size):
            x = to_float(self.images[index].to(run.device), None)  # (B, C, H, W) in [0, 1]
            if run.spec.data.normalize is not None:
                x = normalize_(x, run.spec.data.normalize)
            if run.execution is not None:
                x = x.contiguous(memory_format=run.execution.memory_format)
            batches.append((x, {t: y[index].to(run.device) for t, y in self.labels.items()}))
        devices = [run.device] if run.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed)  # dropout's masks: the same every epoch
                model.train()
                hold_norms(model, run.frozen)  # as in a training step: frozen nodes normalise with their statistics
                gradients = task_gradients(
                    model, batches, run.heads, weights, places(self.shared, self.branches), run.device, run.precision
                )
        finally:
            with torch.no_grad():
                for buffer, saved in zip(model.buffers(), buffers):
                    buffer.copy_(saved)
            model.train(was_training)
        values = conflict_metrics(gradients, self.shared, self.branches)
        values[f"{DIAGNOSTIC_PREFIX}time_s"] = time.perf_counter() - started
        return values


def diagnostic_images(
    split, batch_size: int, seed: int, tasks: Sequence[str]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``DIAGNOSTIC_BATCHES`` batches' worth of training images (fewer when the split is smaller;
    a last batch of one image is dropped, as in training: batch norm needs two), drawn with
    their own generator seeded by ``seed``, and the heads' labels."""
    count = min(len(split), DIAGNOSTIC_BATCHES * batch_size)
    if count % batch_size == 1 and count > 1:
        count -= 1
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:count].sort().values
    return split.images[order], {t: split.labels[t][order] for t in tasks}


def open_diagnostics(
    graph: Graph, split, batch_size: int, seed: int, tasks: Sequence[str]
) -> tuple[Diagnostics | None, str]:
    """The run's diagnostics and a note to print: what is measured, or why nothing is."""
    shared, branches = shared_nodes(graph), reused_branches(graph)
    if not shared:
        detached = [b.head for b in branches if b.detached]
        why = (
            f"gradients do not flow back through the reuse of {', '.join(detached)} (reuse_gradient = false)"
            if detached
            else "each node with parameters serves a single task's loss"
        )
        return (
            None,
            f"diagnostics: nothing to measure - no node with parameters gets gradients from two tasks ({why}); nothing logged.",
        )
    images, labels = diagnostic_images(split, batch_size, seed, tasks)
    batches = math.ceil(len(images) / batch_size)
    note = (
        f"diagnostics: gradients of {', '.join(tasks)} on {len(shared)} shared node(s)"
        + (f" and {len(branches)} reused branch(es)" if branches else "")
        + f", each epoch on {len(images)} fixed training images ({batches} batch{'es' if batches > 1 else ''})."
    )
    detached = [f"{b.head} -> {', '.join(b.detached)}" for b in branches if b.detached]
    if detached:
        note += f" No gradient flows back through {'; '.join(detached)} (reuse_gradient = false): that share is 0 by construction."
    return Diagnostics(shared, branches, images, labels, batch_size, seed), note


def start_diagnostics(run, console) -> Diagnostics | None:
    """The diagnostics of a run (graphc.runtime.train.loop.Run) that asks for them, in the process that
    writes the rows; prints what is measured, or why nothing is (not an error)."""
    if not run.spec.train.diagnostics or not run.world.is_main:
        return None
    diagnostics, note = open_diagnostics(
        run.graph, run.dataset.train, run.spec.train.batch_size, run.spec.train.seed, run.tasks
    )
    console.print(note, markup=False, highlight=False)
    return diagnostics


def canonical_monitors(spec: Spec) -> Spec:
    """``spec`` with ``select`` and ``early_stopping`` watching a pair's cosine under its sorted name
    (graphc.ir.metrics.canonical_name) where a run of graphc before 0.4 recorded the head-order
    name: resuming such a run watches what this graphc logs."""
    train, update = spec.train, {}
    if canonical_name(train.select.metric) != train.select.metric:
        update["select"] = train.select.model_copy(update={"metric": canonical_name(train.select.metric)})
    stop = train.early_stopping
    if stop is not None and canonical_name(stop.metric) != stop.metric:
        update["early_stopping"] = stop.model_copy(update={"metric": canonical_name(stop.metric)})
    return spec.model_copy(update={"train": train.model_copy(update=update)}) if update else spec


def diagnostic_metrics(run) -> list[str]:
    """The ``diag/...`` names a run's training rows will carry (none without [train] diagnostics)."""
    if not run.spec.train.diagnostics:
        return []
    return diagnostic_names(shared_nodes(run.graph), reused_branches(run.graph))


def last_diagnostics(run_dir: Path) -> tuple[int, dict[str, float]]:
    """``(epoch, {diag/...: value})`` of a run's last training row with diagnostics (what
    ``graphc render --diagnostics RUN_DIR`` draws); values that are not numbers are dropped
    (the file is the run's, not ours); a cosine pair logged in head order (graphc before 0.4) is
    named as it is now (graphc.ir.metrics.canonical_name). UsageError for a folder that is no run,
    RunError for a run that logged none."""
    from graphc.runtime.runs import rundir

    run_dir = Path(run_dir)
    if not rundir.is_run_dir(run_dir):
        raise UsageError(
            f"--diagnostics {run_dir}: not a run directory (no {rundir.METRICS_JSONL}). "
            "Hint: give a folder graphc train wrote, e.g. runs/<spec>/<seed>-<time>."
        )
    rows = [
        r
        for r in rundir.read_metrics(run_dir)
        if r.get("split") == "train" and any(isinstance(k, str) and k.startswith(DIAGNOSTIC_PREFIX) for k in r)
    ]
    if not rows:
        raise RunError(
            f"{run_dir} logged no gradient diagnostics. Hint: train with --diagnostics "
            "([train] diagnostics = true) on a model whose nodes serve several tasks."
        )
    last = rows[-1]
    values = {
        canonical_name(k): float(v)
        for k, v in last.items()
        if k.startswith(DIAGNOSTIC_PREFIX) and isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    return int(last["epoch"]), values
