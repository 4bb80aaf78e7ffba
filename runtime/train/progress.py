"""What training prints while it trains: progress within each epoch, an estimate of the run's
time, and one line per epoch.

Progress comes in one of four modes (``graphc train --progress``):

- ``bar``: a live rich progress bar per epoch (running loss, each head's running accuracy,
  images/s); it is transient, so a finished epoch leaves only its summary line;
- ``lines``: a plain line at most every :data:`LINE_INTERVAL_S` seconds (epoch, step/steps,
  images/s, the running loss and accuracies, elapsed, ETA of the run), for logs and pipes;
- ``none`` (``--quiet``): only the per-epoch lines;
- ``auto`` (the default): ``bar`` on a terminal, ``lines`` otherwise.

In ``bar`` and ``lines`` the run also prints, once, an estimate of its time, from real steps of
its first epoch timed after a warm-up (``estimate: about 4 min 10 s for 2 epochs (measured over
steps 3-8 at 612 img/s; ...)``): nothing extra is computed, the steps are the run's own. On a GPU
the device is synchronised at the two ends of the timed steps, once per run.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from graphc.errors import UsageError

REFRESH_S = 0.5  # how often the bar's live numbers are read back from the device (each read is a sync)


def _line_interval() -> float:
    """GRAPHC_PROGRESS_INTERVAL (seconds, > 0), else 30; a value that is not a positive number is a
    usage error when a run starts (never a traceback at import)."""
    text = os.environ.get("GRAPHC_PROGRESS_INTERVAL", "").strip()
    if not text:
        return 30.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UsageError(
            f"GRAPHC_PROGRESS_INTERVAL={text[:40]!r}: expected the seconds between progress lines, a number > 0 "
            "(e.g. 30); unset it for the default."
        )
    return value


def check_line_interval() -> None:
    """Refuse a bad GRAPHC_PROGRESS_INTERVAL when a command starts (a UsageError), not a run in."""
    _line_interval()


# At most one progress line per this many seconds (``lines``); GRAPHC_PROGRESS_INTERVAL sets it.
LINE_INTERVAL_S: float | None = None  # None: read from the environment when a run starts
ESTIMATE_WARMUP = 2  # first steps left out of the estimate (allocation, kernel choice, caches)
ESTIMATE_STEPS = 4  # steps timed after them (so a 10-step epoch shows it at step 6)
# Evaluation (a forward pass, no backward or optimiser step) runs at about this many times the
# training rate; the estimate counts the validation and test images at it.
EVAL_SPEEDUP = 3.0
MODES = ("auto", "bar", "lines", "none")


def progress_mode(mode: bool | str | None, console: Console) -> str:
    """``bar``, ``lines`` or ``none`` for ``mode`` (one of MODES; ``True`` - quiet - is ``none``,
    ``False``/None is ``auto``): auto is the bar on a terminal, plain lines otherwise."""
    if mode is True:
        return "none"
    if mode in (False, None, "auto"):
        return "bar" if console.is_terminal else "lines"
    if mode not in MODES:
        raise UsageError(f"--progress '{mode}': expected one of {', '.join(MODES)}.")
    return str(mode)


def duration(seconds: float) -> str:
    """``42 s``, ``4 min 10 s``, ``2 h 05 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


@dataclass
class Plan:
    """The work left in a run (this session), for the estimate and the ETA."""

    first_epoch: int  # the first epoch this session trains
    epochs: int  # the last one
    step_images: int  # images per training step, over every process
    val_images: int = 0  # per epoch
    test_images: int = 0  # the final test pass


class EpochProgress:
    """Progress over one epoch's batches at a time, in one of the modes (see the module)."""

    def __init__(self, console: Console, live: bool | str = True, device: torch.device | None = None):
        """``live``: a mode of MODES, or True (auto) / False (none)."""
        self.console = console
        self.mode = progress_mode(None if live is True else (True if live is False else live), console)
        self.live = self.mode != "none"
        # a test (or a caller) may set LINE_INTERVAL_S; else the environment's, checked here, at start
        self.line_interval = (
            (LINE_INTERVAL_S if LINE_INTERVAL_S is not None else _line_interval()) if self.mode == "lines" else None
        )
        self.device = device
        self.progress: Progress | None = None
        self.last_refresh = 0.0
        self.plan: Plan | None = None
        self.session_start = time.perf_counter()
        self.estimated = False
        self.marks: dict[int, float] = {}
        self.epoch = self.epochs = self.batches = 0
        self.epoch_start = 0.0

    def set_plan(self, plan: Plan) -> None:
        self.plan = plan
        self.session_start = time.perf_counter()

    def start(self, epoch: int, epochs: int, batches: int) -> None:
        self.epoch, self.epochs, self.batches = epoch, epochs, batches
        self.epoch_start = self.last_refresh = time.perf_counter()
        if self.mode != "bar":
            return
        self.progress = Progress(
            TextColumn(f"epoch {epoch}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("<"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=self.console,
            transient=True,
        )
        self.task = self.progress.add_task("train", total=batches, stats="")
        self.progress.start()

    def due(self) -> bool:
        """Whether it is time to read back and show the live metrics."""
        interval = {"bar": REFRESH_S, "lines": self.line_interval}.get(self.mode)
        return interval is not None and time.perf_counter() - self.last_refresh >= interval

    def advance(self, done: int, stats: str | None = None) -> None:
        estimate = self._time_step(done) if self.mode != "none" and not self.estimated else None
        if self.progress is not None:
            if stats is not None:
                self.progress.update(self.task, completed=done, stats=stats)
            else:
                self.progress.update(self.task, completed=done)
        elif self.mode == "lines" and stats is not None:
            self.console.print(self.line(done, stats), markup=False, highlight=False)
        if stats is not None:
            self.last_refresh = time.perf_counter()
        if estimate is not None:
            self.console.print(estimate, markup=False, highlight=False)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    # ------------------------------------------------------------------ lines

    def line(self, done: int, stats: str) -> str:
        """``epoch 1/2  step 40/400  loss 4.21  acc fine 3.1% coarse 10.2%  612 img/s  elapsed 1 min 05 s  ETA 9 min 50 s``"""
        now = time.perf_counter()
        text = f"epoch {self.epoch}/{self.epochs}  step {done}/{self.batches}  {stats}"
        text += f"  elapsed {duration(now - self.session_start)}"
        left = self.left(done, now)
        return text + (f"  ETA {duration(left)}" if left is not None else "")

    def left(self, done: int, now: float) -> float | None:
        """Seconds the run has left, at this epoch's step rate so far."""
        if self.plan is None or done < 1:
            return None
        step_s = (now - self.epoch_start) / done
        return self._seconds(self.batches - done, self.epochs - self.epoch, step_s, this_val=True)

    def _seconds(self, steps_here: int, epochs_after: int, step_s: float, this_val: bool) -> float:
        plan = self.plan
        assert plan is not None
        image_s = step_s / max(plan.step_images, 1)  # seconds per training image
        eval_s = image_s / EVAL_SPEEDUP
        return (
            steps_here * step_s
            + epochs_after * self.batches * step_s
            + (epochs_after + int(this_val)) * plan.val_images * eval_s
            + plan.test_images * eval_s
        )

    # ------------------------------------------------------------------ the estimate

    def _time_step(self, done: int) -> str | None:
        """Clock the steps of the session's first epoch; after ESTIMATE_WARMUP + ESTIMATE_STEPS
        of them (or at its last step, if the epoch is shorter) return the estimate's line."""
        if self.plan is None or self.epoch != self.plan.first_epoch:
            return None
        first, last = ESTIMATE_WARMUP, min(ESTIMATE_WARMUP + ESTIMATE_STEPS, self.batches)
        if last <= first:  # too few steps to leave a warm-up out: no estimate
            self.estimated = True
            return None
        if done in (first, last):
            self._sync()
            self.marks[done] = time.perf_counter()
        if done != last:
            return None
        self.estimated = True
        return self.estimate(first + 1, last, (self.marks[last] - self.marks[first]) / (last - first))

    def estimate(self, first: int, last: int, step_s: float) -> str:
        plan = self.plan
        assert plan is not None
        epochs = plan.epochs - plan.first_epoch + 1
        total = (time.perf_counter() - self.session_start) + self._seconds(
            self.batches - last, plan.epochs - self.epoch, step_s, this_val=True
        )
        what = f"{epochs} epoch{'' if epochs == 1 else 's'}" + (" left" if plan.first_epoch > 1 else "")
        evaluation = []
        if plan.val_images:
            evaluation.append(f"validation of {plan.val_images:,} images per epoch")
        if plan.test_images:
            evaluation.append(f"the test pass of {plan.test_images:,}")
        counted = f"; {' and '.join(evaluation)} counted at {EVAL_SPEEDUP:g}x that rate" if evaluation else ""
        return (
            f"estimate: about {duration(total)} for {what} "
            f"(measured over steps {first}-{last} at {plan.step_images / step_s:,.0f} img/s{counted})"
        )

    def _sync(self) -> None:
        if self.device is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()


def task_figure(metrics: dict[str, float], task: str) -> str:
    """One task's headline figure for a progress line: its accuracy (classification, binary), mAP
    (multilabel) or MAE (regression, in the targets' units); 'n/a' where the split had no label for it
    (or, live, for a figure computed only at the epoch's end)."""
    for key, label, shown in (("acc", "", "{:.1%}"), ("map", "mAP ", "{:.1%}"), ("mae", "MAE ", "{:.4g}")):
        value = metrics.get(f"{task}/{key}")
        if value is not None:
            return f"{task} {label}{'n/a' if math.isnan(value) else shown.format(value)}"
    return f"{task} n/a"


def live_stats(metrics: dict[str, float], tasks, images_per_s: float) -> str:
    accs = " ".join(task_figure(metrics, t) for t in tasks)
    return f"loss {metrics['loss']:.4f}  acc {accs}  {images_per_s:,.0f} img/s"


def epoch_line(
    epoch: int,
    epochs: int,
    train: dict[str, float],
    val: dict[str, float] | None,
    tasks,
    seconds: float,
    images_per_s: float,
    note: str = "",
) -> str:
    """``epoch 3/100  train loss 2.10 fine 31.2% coarse 45.0%  val loss ... | 12.3 s 4,100 img/s  best``"""

    def part(name: str, m: dict[str, float]) -> str:
        accs = " ".join(task_figure(m, t) for t in tasks)
        return f"{name} loss {m['loss']:.4f} {accs}"

    text = f"epoch {epoch}/{epochs}  {part('train', train)}"
    if val is not None:
        text += f"  {part('val', val)}"
    text += f"  | {seconds:.1f} s {images_per_s:,.0f} img/s"
    return text + (f"  {note}" if note else "")
