"""What training prints: a live rich progress bar per epoch and one line per epoch.

The bar shows the running loss, each head's running accuracy and images/s; it
is transient, so a finished epoch leaves only its summary line. With
``quiet`` (or when the console is not a terminal, e.g. a log file) there is
no bar, only the per-epoch lines.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

REFRESH_S = 0.5  # how often the live numbers are read back from the device (each read is a sync)


class EpochProgress:
    """A progress bar over one epoch's batches, with live metrics."""

    def __init__(self, console: Console, live: bool):
        self.console = console
        self.live = live and console.is_terminal
        self.progress: Progress | None = None
        self.last_refresh = 0.0

    def start(self, epoch: int, epochs: int, batches: int) -> None:
        if not self.live:
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
        self.last_refresh = time.perf_counter()

    def due(self) -> bool:
        """Whether it is time to read back and show the live metrics."""
        return self.progress is not None and time.perf_counter() - self.last_refresh >= REFRESH_S

    def advance(self, done: int, stats: str | None = None) -> None:
        if self.progress is None:
            return
        if stats is not None:
            self.progress.update(self.task, completed=done, stats=stats)
            self.last_refresh = time.perf_counter()
        else:
            self.progress.update(self.task, completed=done)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def live_stats(metrics: dict[str, float], tasks, images_per_s: float) -> str:
    accs = " ".join(f"{t} {metrics[f'{t}/acc']:.1%}" for t in tasks)
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
        accs = " ".join(f"{t} {m[f'{t}/acc']:.1%}" for t in tasks)
        return f"{name} loss {m['loss']:.4f} {accs}"

    text = f"epoch {epoch}/{epochs}  {part('train', train)}"
    if val is not None:
        text += f"  {part('val', val)}"
    text += f"  | {seconds:.1f} s {images_per_s:,.0f} img/s"
    return text + (f"  {note}" if note else "")
