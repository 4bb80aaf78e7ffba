"""Optimiser and learning-rate schedule from a spec's ``[train]`` table.

The schedule is a ``LambdaLR`` stepped once per batch: one scheduler class for
every shape keeps checkpoints uniform (its state is the step count), and a
pure function of the step makes resume exact. ``step`` (milestones in epochs) is
such a function too; ``plateau`` reacts to a metric once per epoch, so its factor
is a callable object (:class:`PlateauFactor`) whose few numbers LambdaLR keeps in
its state_dict. ``warmup_epochs`` multiplies every schedule's factor but onecycle's
(which rises by itself; cosine starts its decay after the warm-up, as before).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from graphc.lang.spec import AdamOptimizer, AdamWOptimizer, Monitor, ScheduleSpec, SGDOptimizer, TrainSpec

# one-cycle's start and end as fractions of the peak lr (torch.optim.lr_scheduler.OneCycleLR's defaults)
ONECYCLE_DIV, ONECYCLE_FINAL_DIV = 25.0, 1e4


# Devices with torch's fused optimiser kernels (Adam, AdamW, SGD): one pass over each tensor
# instead of torch's CPU default, a Python loop of about ten kernels per parameter. On the CPU
# of BENCHMARKS.md (torch.profiler, 1 thread) the loop took 27% of a bf16 training step of
# shared_reuse_coarse; fused, that step ran 1.26x faster.
FUSED_DEVICES = ("cpu", "cuda")


def fused_kernels(params: list[torch.nn.Parameter]) -> dict:
    """``fused=True`` when every parameter is a float tensor on a device with fused kernels."""
    if params and all(p.device.type in FUSED_DEVICES and p.dtype.is_floating_point for p in params):
        return {"fused": True}
    return {}


def make_optimizer(parameters: Iterable[torch.nn.Parameter], train: TrainSpec) -> torch.optim.Optimizer:
    """The optimiser the spec names, with its lr, weight decay and (Adam) epsilon, fused where
    the device allows (the same update, computed in one kernel per tensor)."""
    opt = train.optimizer
    params = [p for p in parameters if p.requires_grad]
    fused = fused_kernels(params)
    if isinstance(opt, AdamOptimizer):
        # Keras-style Adam: L2 weight decay added to the gradient; eps is the spec's (reference 1e-7).
        return torch.optim.Adam(params, lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay, **fused)
    if isinstance(opt, AdamWOptimizer):
        return torch.optim.AdamW(
            params, lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay, **fused
        )
    if isinstance(opt, SGDOptimizer):
        return torch.optim.SGD(
            params,
            lr=opt.lr,
            momentum=opt.momentum,
            nesterov=opt.nesterov and opt.momentum > 0,
            weight_decay=opt.weight_decay,
            **fused,
        )
    raise AssertionError(f"unknown optimiser {opt!r}")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict(state)``, keeping this optimiser's kernel choice (fused or not):
    a checkpoint records the choice of the machine that wrote it (graphc 0.2.0: the loop), and
    torch places the loaded step counters for the choice it reads there."""
    groups = state.get("param_groups")
    if isinstance(groups, list) and len(groups) == len(optimizer.param_groups):
        kernels = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
        state = {
            **state,
            "param_groups": [
                {**saved, **ours} if isinstance(saved, dict) else saved for saved, ours in zip(groups, kernels)
            ],
        }
    optimizer.load_state_dict(state)


class PlateauFactor:
    """``plateau``'s factor: warm-up, then ``scale``, multiplied by ``factor`` each time the watched metric
    has not improved (torch's ReduceLROnPlateau, relative threshold, no cooldown) for more than
    ``patience`` epochs. A callable object, so LambdaLR keeps its attributes (plain numbers only) in
    its state_dict: the checkpoint holds them and a resume continues exactly."""

    def __init__(self, warmup: int, mode: str, factor: float, patience: int, threshold: float):
        self.warmup, self.mode, self.factor, self.patience, self.threshold = warmup, mode, factor, patience, threshold
        self.scale = 1.0
        self.best: float | None = None
        self.wait = 0  # epochs since the last improvement
        self.reductions = 0

    def __call__(self, step: int) -> float:
        return _warmup(step, self.warmup) * self.scale

    def observe(self, value: float | None) -> bool:
        """An epoch's value of the watched metric; True when the lr is reduced."""
        better = (
            value is not None
            and value == value
            and (
                self.best is None
                or (
                    value < self.best * (1 - self.threshold)
                    if self.mode == "min"
                    else value > self.best * (1 + self.threshold)
                )
            )
        )
        if better:
            self.best, self.wait = float(value), 0
            return False
        self.wait += 1
        if self.wait > self.patience:
            self.scale *= self.factor
            self.wait = 0
            self.reductions += 1
            return True
        return False


def _warmup(step: int, warmup: int) -> float:
    """Linear from 0 (exclusive, so the first batch still learns) to 1 over ``warmup`` batches."""
    return (step + 1) / (warmup + 1) if step < warmup else 1.0


def lr_factor(
    schedule: ScheduleSpec, total_steps: int, steps_per_epoch: int, select: Monitor | None = None
) -> Callable[[int], float]:
    """``step -> multiplier of the peak lr`` for the batch numbered ``step`` (0-based). ``select``:
    the run's train.select, plateau's default metric and mode."""
    total_steps = max(1, total_steps)
    warmup = min(total_steps, round(schedule.warmup_epochs * steps_per_epoch))

    if schedule.name == "step":
        # gamma ** (milestones passed): after epoch m (1-based) of each milestone m, times warm-up
        milestones, gamma, per_epoch = list(schedule.milestones), schedule.gamma, max(1, steps_per_epoch)

        def stepped(step: int) -> float:
            done = step // per_epoch  # epochs completed before this batch
            return _warmup(step, warmup) * gamma ** sum(1 for m in milestones if m <= done)

        return stepped

    if schedule.name == "plateau":
        mode = schedule.mode or (select.mode if select is not None else "min")
        return PlateauFactor(warmup, mode, schedule.factor, schedule.patience, schedule.threshold)

    if schedule.name == "onecycle":
        # Cosine rise from peak/25 to the peak over pct_start of the run, then cosine
        # annealing to peak/(25*1e4): the phases of torch's OneCycleLR, step for step.
        peak_step = max(1.0, schedule.pct_start * total_steps - 1)
        last_step = max(peak_step + 1, total_steps - 1)
        start, end = 1 / ONECYCLE_DIV, 1 / (ONECYCLE_DIV * ONECYCLE_FINAL_DIV)

        def onecycle(step: int) -> float:
            if step <= peak_step:
                return _cosine(start, 1.0, step / peak_step)
            return _cosine(1.0, end, min(1.0, (step - peak_step) / (last_step - peak_step)))

        return onecycle

    def with_warmup(step: int) -> float:
        if step < warmup:  # linear from 0 (exclusive, so the first batch still learns) to the peak
            return _warmup(step, warmup)
        if schedule.name == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return _cosine(1.0, schedule.min_lr_ratio, progress)

    return with_warmup


def _cosine(begin: float, end: float, progress: float) -> float:
    """Half a cosine from ``begin`` (progress 0) to ``end`` (progress 1)."""
    return end + (begin - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, train: TrainSpec, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The spec's schedule over ``train.epochs * steps_per_epoch`` batches; call ``.step()`` per batch."""
    factor = lr_factor(train.schedule, train.epochs * steps_per_epoch, steps_per_epoch, train.select)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def plateau_metric(train: TrainSpec) -> str:
    """The metric a plateau schedule watches: its own, else train.select's."""
    return train.schedule.metric or train.select.metric


def observe_plateau(scheduler: torch.optim.lr_scheduler.LambdaLR, value: float | None) -> bool:
    """Give a plateau schedule an epoch's value of its metric; when it reduces the lr, the next batch
    already uses the new one (LambdaLR computed it at the last step). True when it reduced."""
    factor = scheduler.lr_lambdas[0]
    if not isinstance(factor, PlateauFactor) or not factor.observe(value):
        return False
    for group, base, fn in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * fn(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
    return True


def add_param_group(
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR, params: list[torch.nn.Parameter]
) -> None:
    """Let ``params`` (an unfrozen node's) join training mid-run: a new parameter group with the
    optimiser's settings, at the schedule's current learning rate, following the same schedule from
    here on. Its optimiser state starts fresh (Adam's moments at zero, its own step count from 1:
    bias correction treats the first steps as Adam's first), as if these parameters were new."""
    base = scheduler.base_lrs[0]
    optimizer.add_param_group({"params": params, "lr": optimizer.param_groups[0]["lr"], "initial_lr": base})
    scheduler.base_lrs.append(base)
    scheduler.lr_lambdas.append(scheduler.lr_lambdas[0])  # LambdaLR pairs one factor with each group
