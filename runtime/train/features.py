"""The training loop's optional features behind one interface: loss weighting, gradient
aggregation (its statistics and state), gradient diagnostics, the plateau schedule, frozen
nodes and TensorBoard logging.

A run holds the features its spec asks for (``run.features``, made by :func:`make_features`
in ``build_run``); ``fit``, ``finish`` and the checkpoint functions (runtime/train/loop.py) call
every feature at the same points, in list order, and never ask which features there are. Every
hook does nothing unless a feature overrides it, so a run without any feature trains exactly as
the plain loop does. The points, in a training session::

    check_run       metric_names         the training-only metrics the rows will carry
    fit             start                 once per session, before the first epoch
      each epoch    epoch_start           before the training pass
      each step     after_step            after the optimiser's step, before the schedule's
                    train_entries         the training row's entries after its metrics (weight/TASK)
                    validated             the validation metrics, as the run logs them
                    train_row             the training row after its timing (diag/...)
                    rows_written          the epoch's rows are in metrics.jsonl (the writing process)
                    stop                  fit ends, however it ends
    finish          tested                best.pt's test metrics, as the run logs them
    checkpoints     state_dict / load_state   under ``key`` in last.pt and best.pt

A training step's backward pass is the loss weighting's when it has one (``run.weighting``: the
method's objective replaces ``total.backward()``); it is not a hook, as only one method can
define the objective.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from graphc.ir.metrics import WEIGHT_PREFIX, weight_metrics
from graphc.runtime.metrics import logged_weights, reweight_loss
from graphc.runtime.train.diagnostics import diagnostic_metrics, start_diagnostics
from graphc.runtime.train.freeze import unfreeze_due

if TYPE_CHECKING:
    from rich.console import Console

    from graphc.runtime.train.weighting import Weighting

Run = Any  # graphc.runtime.train.loop.Run (not imported: the loop imports this module)


class LoopFeature:
    """One optional part of the training loop; see the module's docstring for when each hook runs."""

    key: str | None = None  # the checkpoint entry holding its state (None: it keeps none)

    def metric_names(self, run: Run) -> list[str]:
        """The training-only metrics (``weight/...``, ``diag/...``) its rows will carry."""
        return []

    def start(self, run: Run, console: Console) -> None:
        """A training session begins (``run.epoch`` epochs are complete)."""

    def epoch_start(self, run: Run, console: Console) -> None:
        """Before an epoch's training pass (``run.epoch`` epochs are complete)."""

    def after_step(self, run: Run) -> None:
        """After each optimiser step, before the schedule's."""

    def train_entries(self, run: Run, metrics: Mapping[str, float]) -> dict[str, float]:
        """Entries of the epoch's training row after its metrics (``metrics``: the training pass's)."""
        return {}

    def validated(self, run: Run, metrics: dict[str, float]) -> None:
        """The epoch's validation metrics (changed in place to what the run logs)."""

    def train_row(self, run: Run, row: dict[str, Any]) -> None:
        """The epoch's training row, complete up to its timing: add entries after it."""

    def rows_written(self, run: Run, rows: list[dict]) -> None:
        """The epoch's rows are in metrics.jsonl (called in the process that writes the files)."""

    def stop(self, run: Run) -> None:
        """The session's training ends, however it ends."""

    def tested(self, run: Run, metrics: dict[str, float], checkpoint: Mapping[str, Any]) -> None:
        """``finish`` evaluated best.pt (``checkpoint``) on the test split (``metrics``: changed in place
        to what the run logs); in the process that writes the files."""

    def state_dict(self) -> dict:
        """Its state in a checkpoint (tensors and plain containers), under ``key``."""
        return {}

    def load_state(self, run: Run, checkpoint: Mapping[str, Any]) -> None:
        """Restore from a checkpoint of epoch ``run.epoch``, before the optimiser's state is loaded."""


class LossWeighting(LoopFeature):
    """``[train] loss_weighting`` (runtime/train/weighting.py): the weights in force, logged as
    ``weight/TASK`` on each training row, and the evaluations' loss with them."""

    key = "weighting"

    def __init__(self, weighting: Weighting):
        self.weighting = weighting
        self.logged: dict[str, float] = {}  # {TASK: w} of the epoch's training row

    def metric_names(self, run: Run) -> list[str]:
        return weight_metrics(run.tasks, run.spec.train.loss_weighting)

    def start(self, run: Run, console: Console) -> None:
        if self.weighting.name == "dwa" and run.epochs <= 2 and run.epoch == 0:
            console.print(
                f"warning: loss_weighting dwa keeps every weight at 1 in epochs 1 and 2, and this run has "
                f"{run.epochs} epoch{'s' if run.epochs > 1 else ''}: it trains as equal weighting.",
                markup=False,
                highlight=False,
            )

    def after_step(self, run: Run) -> None:
        self.weighting.after_step()

    def train_entries(self, run: Run, metrics: Mapping[str, float]) -> dict[str, float]:
        """The loss weights in force at the end of the epoch's training pass; then the weighting
        learns from the epoch (DWA's loss history)."""
        self.logged = {t: float(w) for t, w in zip(run.tasks, self.weighting.weights().tolist())}
        self.weighting.end_epoch(metrics)
        return {f"{WEIGHT_PREFIX}{t}": w for t, w in self.logged.items()}

    def validated(self, run: Run, metrics: dict[str, float]) -> None:
        reweight_loss(metrics, self.weighting.name, self.logged)  # the loss with the epoch's weights

    def tested(self, run: Run, metrics: dict[str, float], checkpoint: Mapping[str, Any]) -> None:
        # the loss with the best epoch's weights, as its val row
        reweight_loss(metrics, self.weighting.name, logged_weights(checkpoint.get("metrics") or {}))

    def state_dict(self) -> dict:
        return self.weighting.state_dict()

    def load_state(self, run: Run, checkpoint: Mapping[str, Any]) -> None:
        self.weighting.load_state_dict(checkpoint[self.key])


class Aggregating(LoopFeature):
    """``[train] aggregator`` (runtime/train/aggregation.py): the epoch's means of the aggregation's
    statistics (``agg/...``) on each training row, and its state (torchjd's, its generator's) in checkpoints."""

    key = "aggregation"

    def __init__(self, aggregation) -> None:
        self.aggregation = aggregation

    def epoch_start(self, run: Run, console: Console) -> None:
        self.aggregation.reset_stats()

    def train_entries(self, run: Run, metrics: Mapping[str, float]) -> dict[str, float]:
        return self.aggregation.epoch_entries()

    def state_dict(self) -> dict:
        return self.aggregation.state_dict()

    def load_state(self, run: Run, checkpoint: Mapping[str, Any]) -> None:
        self.aggregation.load_state_dict(checkpoint[self.key])


class Diagnostics(LoopFeature):
    """``[train] diagnostics`` (runtime/train/diagnostics.py): the ``diag/...`` gradient diagnostics
    on each training row, measured after its timing (their own is ``diag/time_s``)."""

    def __init__(self) -> None:
        self.diagnostics = None  # in the writing process, when some node serves several tasks

    def metric_names(self, run: Run) -> list[str]:
        return diagnostic_metrics(run)

    def start(self, run: Run, console: Console) -> None:
        self.diagnostics = start_diagnostics(run, console)

    def train_row(self, run: Run, row: dict[str, Any]) -> None:
        if self.diagnostics is not None:  # the row's weight/TASK entries are the epoch's loss weights
            row.update(self.diagnostics.measure(run, row))


class PlateauSchedule(LoopFeature):
    """``schedule = { name = "plateau" }`` (runtime/train/optim.py): once per epoch, the watched metric
    (the schedule's, else train.select's) of the epoch's rows as logged; the lr drops after ``patience``
    epochs without improvement. Its state is the scheduler's, in every checkpoint."""

    def __init__(self) -> None:
        self.val: dict[str, float] = {}

    def epoch_start(self, run: Run, console: Console) -> None:
        self.val = {}

    def validated(self, run: Run, metrics: dict[str, float]) -> None:
        self.val = dict(metrics)  # after the loss weighting's reweighting: the row as logged

    def train_row(self, run: Run, row: dict[str, Any]) -> None:
        from graphc.runtime.train.optim import observe_plateau, plateau_metric

        metric = plateau_metric(run.spec.train)
        split, name = metric.split("/", 1)
        value = (row if split == "train" else self.val).get(name)
        if run.world.size > 1:  # rank 0's value (timings differ between processes)
            value = run.world.from_main(value)
        if observe_plateau(run.scheduler, value) and run.console is not None:
            run.console.print(
                f"plateau: {metric} has not improved for {run.spec.train.schedule.patience + 1} epochs; "
                f"lr now {run.optimizer.param_groups[0]['lr']:.3g}",
                markup=False,
                highlight=False,
            )


class Freezing(LoopFeature):
    """Frozen nodes with ``unfreeze_after`` (runtime/train/freeze.py): each joins training when due."""

    def epoch_start(self, run: Run, console: Console) -> None:
        unfrozen = unfreeze_due(run, run.epoch)
        if unfrozen:
            console.print(
                f"unfreezing {', '.join(unfrozen)} after epoch {run.epoch}: "
                f"{sum(run.graph[n].num_params for n in unfrozen):,} parameters join training",
                markup=False,
                highlight=False,
            )

    def load_state(self, run: Run, checkpoint: Mapping[str, Any]) -> None:
        unfreeze_due(run, run.epoch - 1)  # nodes unfrozen before this checkpoint: their optimiser groups are in it


class TensorBoard(LoopFeature):
    """``[train] tensorboard`` (runtime/train/tensorboard.py): the rows, the test metrics and the
    spec's diagram, written by the process that writes the run's files."""

    def __init__(self) -> None:
        self.board = None

    def start(self, run: Run, console: Console) -> None:
        self.board = self._open(run)
        if self.board is not None and run.epoch == 0:
            self.board.diagram(run.graph)

    def rows_written(self, run: Run, rows: list[dict]) -> None:
        if self.board is not None:
            self.board.metrics(rows)

    def stop(self, run: Run) -> None:
        if self.board is not None:
            self.board.close()
            self.board = None

    def tested(self, run: Run, metrics: dict[str, float], checkpoint: Mapping[str, Any]) -> None:
        board = self._open(run)
        if board is not None:
            board.test(metrics, run.monitor["best_epoch"])
            board.close()

    @staticmethod
    def _open(run: Run):
        if not run.world.is_main:
            return None
        from graphc.runtime.train.tensorboard import Board

        return Board(run.run_dir, resumed_after=run.epoch)


def make_features(run: Run) -> list[LoopFeature]:
    """The features ``run``'s spec asks for, in the order the loop calls them (the loss weights come
    before the diagnostics that use them, and both before what logs the rows)."""
    features: list[LoopFeature] = []
    if run.frozen:
        features.append(Freezing())
    if run.weighting is not None:
        features.append(LossWeighting(run.weighting))
    if getattr(run, "aggregation", None) is not None:
        features.append(Aggregating(run.aggregation))
    if run.spec.train.diagnostics:
        features.append(Diagnostics())
    if run.spec.train.schedule.name == "plateau":  # after the features that add to the rows it watches
        features.append(PlateauSchedule())
    if run.spec.train.tensorboard:
        features.append(TensorBoard())
    return features
