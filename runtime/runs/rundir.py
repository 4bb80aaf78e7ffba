"""A run directory: what one training run writes, written atomically, and read back.

Layout of ``runs/<spec>/<seed>-<timestamp>/``::

    spec.toml       the spec text the run was started from
    config.json     the run record: the fully resolved config (spec name and sha256, data, train,
                    overrides, the execution; runtime/runs/record.py)
    env.json        versions and device
    metrics.jsonl   one JSON object per epoch per split (see below); appended as epochs end
    metrics.csv     the same rows as a table (rewritten each epoch)
    last.pt         checkpoint after the latest completed epoch
    best.pt         checkpoint of the best epoch by train.select
    summary.json    written when the run ends: "status" completed, early_stopped, interrupted
                    or diverged (a NaN/infinite loss; "diverged" then says at which epoch and step)
    train.lock      locked (flock) by the process training the run; holds its pid meanwhile
    tensorboard/    with [train] tensorboard: the same curves for TensorBoard (runtime/train/tensorboard.py)

Checkpoints (format ``graphc-checkpoint/2``, runtime/runs/checkpoint.py) hold only tensors
and plain containers and are read with ``torch.load(weights_only=True)``, so a crafted file
cannot run code; graphc 0.1.0's (``graphc-checkpoint/1``) are refused until converted with
``graphc convert-checkpoint --trust``. A diverged epoch writes neither rows nor checkpoints:
last.pt and best.pt keep the last epoch with a finite loss.

One process trains a run at a time: ``training_lock`` holds an OS file lock on train.lock,
released by the OS however the process ends, so a crash leaves no stale lock. config.json is
the run record (runtime/runs/record.py: read and written there only, checked once on load).

A metrics row is ``{"epoch": 3, "split": "val", "loss": 2.1, "fine/loss": ..., "fine/acc": ...}``:
``loss`` is the weighted total sum_t w_t * TASK/loss (w_t: the heads' loss_weight; with a
``[train] loss_weighting`` table, the weights in force - per step on training rows, the
epoch's logged ``weight/TASK`` on validation rows, the checkpoint epoch's for the test split
and graphc eval - without uncertainty weighting's regulariser, see runtime/train/weighting.py);
per head ``TASK/loss``, ``TASK/acc`` and, for heads of more than 10 classes, ``TASK/top5``;
for every label hierarchy CHILD -> PARENT (each ``[data.hierarchy]`` table and each chain of
nested tables) whose CHILD has a head, ``PARENT/acc_from_CHILD`` (the child head's prediction
mapped to the parent, against the parent label) and, when PARENT has a head too,
``CHILD/consistency_with_PARENT`` (how often the child head's prediction maps to the parent
head's prediction); then ``mean_acc`` and ``weighted_acc`` (the heads' accuracies averaged,
plainly and with the heads' loss_weight). graphc.ir.metrics.metric_names lists them.
Accuracies are fractions in [0, 1].

Training rows also carry ``lr`` (at the epoch's last step), ``images_per_s`` (training
images per second of the training pass, all processes together, augmentation, batching
and metrics included, evaluation not) and ``time_s`` (the epoch's seconds: training pass,
validation); with a loss_weighting table ``weight/TASK`` (the loss weights in force at the
end of the epoch); with ``[train] diagnostics`` the ``diag/...`` gradient diagnostics and
``diag/time_s``, their own seconds (graphc.ir.metrics names them; runtime/train/diagnostics.py).

summary.json holds ``status``, ``epochs_completed``, ``best_epoch``, the ``best`` and
``last`` epochs' flat metrics (``val/fine/acc``, ...), ``test`` (best.pt on the test split;
null when interrupted, or with --no-test), adding per head ``TASK/majority_acc`` (always
answering the split's most frequent class) and ``TASK/balanced_acc`` (macro-averaged recall),
and what the test figures cover: ``test_skipped`` (--no-test), ``test_limit`` (--limit-test N:
a random N test images, the same for every run of the data set) and ``test_images``; then
``wall_time_s`` (all sessions of the run), ``images_per_s`` (the training rows' mean) and,
for a diverged run, ``diverged``.

Every file is written to a temporary name and renamed into place, so a run killed
at any moment leaves the previous complete version of each file.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from graphc.errors import RunError, UsageError
from graphc.files import atomic_write_bytes, atomic_write_text

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
SUMMARY = "summary.json"
CONFIG = "config.json"
SPEC_COPY = "spec.toml"
LAST, BEST = "last.pt", "best.pt"
LOCK = "train.lock"


def finite_json(value: Any) -> Any:
    """``value`` with every NaN or infinity (anywhere: in tables and lists) as None: JSON has neither,
    so they are written as null and every reader can parse the file (run files, graphc report's JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(finite_json(obj), indent=2, default=str) + "\n")


def read_text(path: Path, what: str = "text") -> str:
    """A run file's text (UTF-8); a RunError naming the file when it is missing, cannot be read (no
    permission, an I/O error, a folder at its name) or is not UTF-8 text (damaged, or another file
    copied over it) - for train --resume, eval, report: never a traceback."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunError(f"{path}: no such file.") from None
    except UnicodeDecodeError as exc:
        raise RunError(
            f"{path}: not UTF-8 {what} (byte {exc.start} is 0x{exc.object[exc.start]:02x}). The file is damaged "
            "or was replaced; restore it, or delete the run."
        ) from None
    except OSError as exc:
        raise RunError(f"{path}: cannot be read ({exc.strerror or exc}); make it readable.") from None


def read_json(path: Path) -> Any:
    text = read_text(path, "JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: not valid JSON ({exc}). The file is damaged; delete it or the run.") from None


# --------------------------------------------------------------------------- run directories


def new_run_dir(root: Path, spec_name: str, seed: int) -> Path:
    """Create ``root/<spec>/<seed>-<timestamp>/`` (unique even within one second)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / spec_name
    base.mkdir(parents=True, exist_ok=True)
    for n in range(1000):
        path = base / (f"{seed}-{stamp}" + (f"-{n}" if n else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RunError(f"{base}: could not create a new run directory.")


def is_run_dir(path: Path) -> bool:
    """A directory graphc train wrote: its metrics file, or its config beside the spec copy
    (a lone config.json is too common a name to claim a folder)."""
    path = Path(path)
    return (path / METRICS_JSONL).is_file() or ((path / CONFIG).is_file() and (path / SPEC_COPY).is_file())


def find_runs(paths: Iterable[Path]) -> list[Path]:
    """Run directories among ``paths`` and below them (e.g. ``runs/``), sorted."""
    found: set[Path] = set()
    for path in map(Path, paths):
        if is_run_dir(path):
            found.add(path)
        elif path.is_dir():
            found.update(p.parent for p in path.rglob(CONFIG) if is_run_dir(p.parent))
    return sorted(found)


def append_metrics(run_dir: Path, rows: list[dict]) -> None:
    """Append rows to metrics.jsonl and rewrite metrics.csv with all rows so far."""
    run_dir = Path(run_dir)
    jsonl = run_dir / METRICS_JSONL
    previous = jsonl.read_bytes() if jsonl.exists() else b""
    added = "".join(json.dumps(finite_json(r)) + "\n" for r in rows).encode()
    atomic_write_bytes(jsonl, previous + added)
    write_metrics_csv(run_dir / METRICS_CSV, read_metrics(run_dir))


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    columns = ["epoch", "split"]
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_numbered_metrics(run_dir: Path) -> list[tuple[int, dict]]:
    """All metrics rows of a run, each with its line number in metrics.jsonl (for messages that
    name the line); RunError naming the line if the file is damaged."""
    path = Path(run_dir) / METRICS_JSONL
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(read_text(path, "metrics rows").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RunError(f"{path}:{number}: damaged metrics line ({exc.msg}).") from None
        if not isinstance(row, dict) or "epoch" not in row or "split" not in row:
            raise RunError(f"{path}:{number}: a metrics row needs 'epoch' and 'split'.")
        rows.append((number, row))
    return rows


def read_metrics(run_dir: Path) -> list[dict]:
    """All metrics rows of a run; RunError naming the line if the file is damaged."""
    return [row for _, row in read_numbered_metrics(run_dir)]


def truncate_metrics(run_dir: Path, epochs: int) -> None:
    """Keep only rows of the first ``epochs`` epochs (used on resume, after a kill mid-epoch)."""
    run_dir = Path(run_dir)
    rows = [r for r in read_metrics(run_dir) if r["epoch"] <= epochs]
    atomic_write_text(run_dir / METRICS_JSONL, "".join(json.dumps(r) + "\n" for r in rows))
    write_metrics_csv(run_dir / METRICS_CSV, rows)


# --------------------------------------------------------------------------- writing and locking a run


def check_writable(directory: Path) -> None:
    """Raise the OSError a write in ``directory`` would meet (read-only file system, no permission,
    not a directory), without leaving a file behind."""
    fd, tmp = tempfile.mkstemp(prefix=".graphc-probe-", dir=directory)
    os.close(fd)
    os.unlink(tmp)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def check_output_root(root: Path) -> None:
    """``--out``: a directory (created when missing) graphc can write run directories in.
    Checked before any data loads; a UsageError (exit 2) naming what is in the way."""
    root = Path(root)
    existing = root
    while not existing.exists() and existing != existing.parent:  # exists() is False under a file, too
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == root else f"is under {existing}, which is a file"
        raise UsageError(
            f"--out {root}: {where}, not a directory. Give a directory for the run directories (it is created if missing)."
        )
    try:
        check_writable(existing)
    except OSError as exc:
        raise UsageError(
            f"--out {root}: cannot create run directories in {existing} ({_reason(exc)}). Give a directory you can write to."
        ) from None


def write_error(run_dir: Path, exc: OSError) -> RunError:
    """A failed write in a run directory (disk full, file too large, read-only file system) as a
    RunError: the same paragraph for the run's first files (spec.toml, config.json, the epoch-0
    last.pt) as for every later one; resuming is offered only where there is a last.pt to resume."""
    then = (
        f"then resume with `graphc train --resume {run_dir}`"
        if (Path(run_dir) / LAST).is_file()
        else f"then train again (the run has no checkpoint to resume from yet; delete {run_dir})"
    )
    return RunError(
        f"cannot write the files of run {run_dir} ({_reason(exc)}{f': {exc.filename}' if exc.filename else ''}). "
        "Each file is written atomically, so every file keeps its last complete version. Free some space "
        f"(no space left, or a file larger than the file system or `ulimit -f` allows) or make the directory "
        f"writable, {then}."
    )


@contextlib.contextmanager
def training_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run's lock (an OS file lock on ``RUN_DIR/train.lock``) while this process trains it.

    A second trainer of the same run gets a RunError naming the holder's pid. The OS releases the
    lock when its process ends however it ends, so a crash leaves no stale lock. Also checks first
    that the run directory can be written (a read-only copy of a run is refused before anything
    changes). A directory that is not a run directory is left alone: the caller says what is wrong.
    """
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        yield
        return
    if (run_dir / LOCK).is_symlink():  # never followed: the pid written there would overwrite its target
        raise RunError(
            f"cannot train run {run_dir}: its {LOCK} is a symbolic link, which graphc never makes. Nothing was "
            f"changed; delete {run_dir / LOCK} and resume again."
        )
    try:
        check_writable(run_dir)
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        raise RunError(
            f"cannot train run {run_dir}: its directory is not writable ({_reason(exc)}). Nothing was changed; "
            "copy the run directory somewhere writable and resume the copy."
        ) from None
    try:
        held = _flock(fd, run_dir)
        if held:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            if held:  # no pid once released (a crash leaves one, but no lock: flock ends with the process)
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def flock_now(fd: int) -> bool | None:
    """Lock ``fd`` exclusively (``flock``) without waiting: True when held, False when another process
    holds it, None where there are no file locks (not POSIX, or a network mount without them: the
    caller goes on unguarded rather than not at all). Any other failure raises its OSError."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return None
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise


def lock_holder(fd: int) -> str:
    """The pid a lock file's holder wrote in it ('' when unknown or unreadable)."""
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def _flock(fd: int, run_dir: Path) -> bool:
    """Lock ``fd`` exclusively without waiting: True when held, False where there are no file
    locks (not POSIX, or a network mount without them: train unguarded rather than not at all)."""
    try:
        held = flock_now(fd)
    except OSError as exc:
        raise RunError(f"cannot lock run {run_dir} ({_reason(exc)}).") from None
    if held is not False:
        return bool(held)
    holder = lock_holder(fd)
    by = f"pid {holder}" if holder.isdigit() else "another process"
    raise RunError(
        f"run {run_dir} is being trained by {by}. Wait for it to end (or stop it) before resuming it; "
        "two trainers of one run would write the same files."
    )
