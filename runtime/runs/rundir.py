"""A run directory: what one training run writes, written atomically, and read back.

Layout of ``runs/<spec>/<seed>-<timestamp>/``::

    spec.toml       the spec text the run was started from
    config.json     the fully resolved config (spec name and sha256, data, train, overrides)
    env.json        versions and device
    metrics.jsonl   one JSON object per epoch per split (see below); appended as epochs end
    metrics.csv     the same rows as a table (rewritten each epoch)
    last.pt         checkpoint after the latest completed epoch
    best.pt         checkpoint of the best epoch by train.select
    summary.json    written when the run ends (completed, early-stopped or interrupted)

A metrics row is ``{"epoch": 3, "split": "val", "loss": 2.1, "fine/loss": ..., "fine/acc": ...}``:
``loss`` is the weighted total; per head ``TASK/loss``, ``TASK/acc`` and, for heads of
more than 10 classes, ``TASK/top5``; with a label hierarchy, ``PARENT/acc_from_CHILD``
(the child head's prediction mapped to its parent) and ``CHILD/consistency`` (how often
the child head's prediction maps to the parent head's prediction). Training rows also
carry ``lr``, ``images_per_s`` and ``time_s``. Accuracies are fractions in [0, 1].

Every file is written to a temporary name and renamed into place, so a run killed
at any moment leaves the previous complete version of each file.
"""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from graphc.errors import RunError
from graphc.files import atomic_write_bytes, atomic_write_text

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
SUMMARY = "summary.json"
CONFIG = "config.json"
SPEC_COPY = "spec.toml"
LAST, BEST = "last.pt", "best.pt"


def _jsonable(value: Any) -> Any:
    """JSON has no NaN/inf; write them as null so every reader can parse the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, default=str) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: no such file.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: not valid JSON ({exc}). The file is damaged; delete it or the run.") from None


# --------------------------------------------------------------------------- run directories


def new_run_dir(root: Path, spec_name: str, seed: int) -> Path:
    """Create ``root/<spec>/<seed>-<timestamp>/`` (unique even within one second)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
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
    added = "".join(json.dumps(_jsonable(r)) + "\n" for r in rows).encode()
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


def read_metrics(run_dir: Path) -> list[dict]:
    """All metrics rows of a run; RunError naming the line if the file is damaged."""
    path = Path(run_dir) / METRICS_JSONL
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RunError(f"{path}:{number}: damaged metrics line ({exc.msg}).") from None
        if not isinstance(row, dict) or "epoch" not in row or "split" not in row:
            raise RunError(f"{path}:{number}: a metrics row needs 'epoch' and 'split'.")
        rows.append(row)
    return rows


def truncate_metrics(run_dir: Path, epochs: int) -> None:
    """Keep only rows of the first ``epochs`` epochs (used on resume, after a kill mid-epoch)."""
    run_dir = Path(run_dir)
    rows = [r for r in read_metrics(run_dir) if r["epoch"] <= epochs]
    atomic_write_text(run_dir / METRICS_JSONL, "".join(json.dumps(r) + "\n" for r in rows))
    write_metrics_csv(run_dir / METRICS_CSV, rows)
