"""Optional TensorBoard logging of a run (``[train] tensorboard = true`` or ``--tensorboard``).

Writes, under ``RUN_DIR/tensorboard/``, one scalar per logged metric and epoch with the
run's own names (``train/fine/acc``, ``val/coarse/acc_from_fine``, ``train/lr``, ...),
the test metrics of best.pt at its epoch (``test/fine/acc``), and the spec's diagram as
an image. ``tensorboard --logdir runs`` then shows every run beside the others.

The files graphc reads (metrics.jsonl, summary.json) stay the record; these are a copy
for where researchers already look. The ``tensorboard`` package is an optional extra.
"""

from __future__ import annotations

import io
from pathlib import Path

from graphc.errors import RunError, UsageError
from graphc.files import refuse_planted_link

DIR = "tensorboard"


def available() -> bool:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (raises without the package)
    except ImportError:
        return False
    return True


def check_available() -> None:
    """Before any work: a clear message when TensorBoard logging is asked for but cannot be done."""
    if not available():
        raise UsageError(
            "TensorBoard logging was asked for ([train] tensorboard = true or --tensorboard), but the "
            "'tensorboard' package is not installed. Install it with `pip install 'graphc[tensorboard]'` "
            "(or `pip install tensorboard`), or turn the option off."
        )


class Board:
    """A SummaryWriter over ``run_dir/tensorboard`` (open it only in the process that writes files)."""

    def __init__(self, run_dir: Path, resumed_after: int | None = None):
        # TensorBoard's own writer makes the event files, so they cannot go through graphc's one
        # writer (graphc.files); what graphc can do is refuse a link planted at the folder's name,
        # which would send them wherever it points. (A new run makes the folder itself.)
        log_dir = Path(run_dir) / DIR
        try:
            refuse_planted_link(log_dir)
        except OSError as exc:
            raise RunError(
                f"{log_dir}: {exc.strerror}. Delete it (the run's TensorBoard logs belong in a folder of the run), "
                f"then resume with `graphc train --resume {run_dir}`."
            ) from None
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run redoes the epochs after its last.pt: TensorBoard drops what an earlier
        # session logged from that step on (a kill between metrics and checkpoint leaves some).
        purge = resumed_after + 1 if resumed_after else None
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge)

    def metrics(self, rows: list[dict]) -> None:
        """metrics.jsonl rows ({"epoch", "split", name: value}) as scalars at step = epoch."""
        for row in rows:
            for name, value in row.items():
                if name not in ("epoch", "split") and value is not None:
                    self.writer.add_scalar(f"{row['split']}/{name}", float(value), global_step=row["epoch"])
        self.writer.flush()

    def test(self, metrics: dict[str, float], epoch: int | None) -> None:
        for name, value in metrics.items():
            if value is not None:
                self.writer.add_scalar(f"test/{name}", float(value), global_step=epoch or 0)
        self.writer.flush()

    def diagram(self, graph) -> None:
        """The spec's architecture diagram (graphc render's PNG) as an image."""
        import numpy as np
        from PIL import Image

        from graphc.backends.diagram.render import render

        with Image.open(io.BytesIO(render(graph, "png"))) as picture:
            pixels = np.asarray(picture.convert("RGB"))  # (H, W, 3) uint8
        self.writer.add_image(f"diagram/{graph.name}", pixels, global_step=0, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
