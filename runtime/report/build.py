"""graphc report: the study's comparison table and learning curves, with seeds averaged.

Reads run directories (contract: runtime/runs/rundir.py), groups them by spec name
(config.json "spec") and makes one row per spec: for each head its loss and
accuracy (plus top-5 and the hierarchy metrics when the runs have them) as the
mean +/- *sample* standard deviation (ddof=1) over seeds, with the number of seeds.

Which epoch a run contributes to the table:

* ``split="val", epoch="best"`` (default): summary.json "best", the metrics of the
  epoch that train.select picked (the epoch best.pt holds).
* ``split="val", epoch="last"``: summary.json "last", the final epoch - what the
  original study reported (epoch 100).
* a run still in progress (no summary.json): its last completed epoch (the last
  epoch with a validation row); its spec row is marked ``*``.
* ``split="test"``: summary.json "test" (best.pt evaluated once on the test split).
  Runs without it (in progress, or trained without a test split) are skipped with a note.

Bad runs never sink the report: a run whose files are damaged, whose config is
incomplete or whose heads differ from the other runs of its spec is skipped with a
warning naming the file (and line); only when nothing usable is left is it an error.
If one spec+seed was run more than once, the finished, most recent run counts (two
copies of one seed would understate the spread) and the others are named in a warning.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from graphc.errors import RunError, UsageError, did_you_mean
from graphc.lang.builtin import specs_dir
from runtime.runs.rundir import CONFIG, METRICS_JSONL, SUMMARY, find_runs, read_json, read_metrics

SPLITS = ("val", "test")
EPOCHS = ("best", "last")
FORMATS = ("md", "csv", "json")
# The original study's table, keyed by spec name. CSV rather than TOML: it is a table,
# and a .toml beside the six specs would be taken for a seventh spec by `specs/*.toml`.
REPORTED_RESULTS = specs_dir() / "reported_results.csv"
# Metric suffixes in the order the original's table reads: losses, then accuracies.
_KIND_ORDER = ("loss", "acc", "top5", "acc_from_", "consistency")


def lower_is_better(key: str) -> bool:
    return key.split("/")[-1] == "loss"


def _kind_rank(key: str) -> int:
    suffix = key.split("/", 1)[1]
    for rank, kind in enumerate(_KIND_ORDER):
        if suffix == kind or (kind.endswith("_") and suffix.startswith(kind)):
            return rank
    return len(_KIND_ORDER)


# --------------------------------------------------------------------------- reading runs


@dataclass
class Run:
    """One run directory, read."""

    path: Path
    spec: str
    seed: int
    tasks: tuple[str, ...]
    spec_sha256: str | None
    started: str
    rows: list[dict]  # metrics.jsonl, in file order
    summary: dict | None  # None while the run is in progress (or was killed)

    @property
    def in_progress(self) -> bool:
        return self.summary is None

    @property
    def status(self) -> str:
        return "in progress" if self.summary is None else str(self.summary.get("status", "completed"))

    @property
    def last_epoch(self) -> int:
        return max((r["epoch"] for r in self.rows), default=0)

    def head_metrics(self, row: dict) -> dict[str, float]:
        """The per-head metrics of a row (``TASK/...``), null (a NaN in the run) as nan."""
        return {
            k: (math.nan if v is None else float(v))
            for k, v in row.items()
            if "/" in k and k.split("/", 1)[0] in self.tasks
        }


def load_run(path: Path) -> Run:
    """Read one run directory; RunError naming the file (and line) if anything is damaged."""
    path = Path(path)
    config_path = path / CONFIG
    if not config_path.is_file():
        raise RunError(
            f"{config_path}: missing, so the run's spec and seed are unknown. "
            "The run was probably killed before it started; delete the directory."
        )
    config = read_json(config_path)
    if not isinstance(config, dict):
        raise RunError(f"{config_path}: expected a JSON object, found {type(config).__name__}.")
    for key, kind in (("spec", str), ("seed", int), ("tasks", list)):
        if not isinstance(config.get(key), kind):
            raise RunError(
                f"{config_path}: expected '{key}' ({kind.__name__}), found {config.get(key)!r}. "
                "The file is damaged or was not written by graphc train."
            )
    rows = read_metrics(path)
    _check_metric_values(path / METRICS_JSONL, rows)
    summary = None
    if (path / SUMMARY).is_file():
        summary = read_json(path / SUMMARY)
        if not isinstance(summary, dict):
            raise RunError(f"{path / SUMMARY}: expected a JSON object, found {type(summary).__name__}.")
    return Run(
        path=path,
        spec=config["spec"],
        seed=config["seed"],
        tasks=tuple(config["tasks"]),
        spec_sha256=config.get("spec_sha256"),
        started=str(config.get("started", "")),
        rows=rows,
        summary=summary,
    )


def _check_metric_values(path: Path, rows: list[dict]) -> None:
    """read_metrics checks the JSON; this checks the values, naming the line."""
    if not rows:
        return
    lines = [n for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if text.strip()]
    for line, row in zip(lines, rows):
        if not isinstance(row["epoch"], int) or row["split"] not in ("train", "val"):
            raise RunError(
                f"{path}:{line}: expected an integer 'epoch' and 'split' train or val, "
                f"found epoch {row['epoch']!r}, split {row['split']!r}. The file is damaged."
            )
        for key, value in row.items():
            if key not in ("epoch", "split") and value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise RunError(f"{path}:{line}: '{key}' should be a number, found {value!r}. The file is damaged.")


def collect_runs(paths: Iterable[Path]) -> tuple[dict[str, list[Run]], list[str]]:
    """Find and read runs under ``paths``, group them by spec; returns (groups, warnings)."""
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"{', '.join(missing)}: no such file or directory. Pass run directories or a folder holding runs, e.g. runs/.")
    found = find_runs(paths)
    if not found:
        raise RunError(
            f"no runs found in {', '.join(map(str, paths))}: expected directories holding config.json "
            "and metrics.jsonl (as graphc train writes under runs/<spec>/<seed>-<time>/)."
        )
    warnings: list[str] = []
    runs: list[Run] = []
    for path in found:
        try:
            runs.append(load_run(path))
        except RunError as exc:
            warnings.append(f"skipped {path}: {exc}")
    if not runs:
        raise RunError(f"none of the {len(found)} runs found could be read:\n" + "\n".join(warnings))
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.spec, []).append(run)
    for spec, members in groups.items():
        groups[spec] = _same_heads(spec, members, warnings)
        groups[spec] = _one_run_per_seed(spec, groups[spec], warnings)
        texts = {r.spec_sha256 for r in groups[spec]}
        if len(texts) > 1:
            warnings.append(
                f"the runs of spec '{spec}' come from {len(texts)} different spec texts (spec_sha256); "
                "they are averaged together. Rename the spec when you change it to keep them apart."
            )
    return groups, warnings


def _same_heads(spec: str, runs: list[Run], warnings: list[str]) -> list[Run]:
    """Keep the runs with the most common set of heads; name the others."""
    counts = Counter(frozenset(r.tasks) for r in runs)
    keep = counts.most_common(1)[0][0]
    kept = [r for r in runs if frozenset(r.tasks) == keep]
    expected = ", ".join(kept[0].tasks)
    for run in runs:
        if frozenset(run.tasks) != keep:
            warnings.append(
                f"skipped {run.path}: its heads ({', '.join(run.tasks)}) differ from those of the other runs "
                f"of spec '{spec}' ({expected}). Runs of one spec must have the same heads; "
                "give a changed spec a new name."
            )
    return kept


def _one_run_per_seed(spec: str, runs: list[Run], warnings: list[str]) -> list[Run]:
    by_seed: dict[int, list[Run]] = {}
    for run in runs:
        by_seed.setdefault(run.seed, []).append(run)
    kept = []
    for seed, same in sorted(by_seed.items()):
        # finished beats in progress, then the latest start, then the latest directory name
        same.sort(key=lambda r: (not r.in_progress, r.started, r.path.name))
        kept.append(same[-1])
        for other in same[:-1]:
            warnings.append(
                f"ignored {other.path}: spec '{spec}' seed {seed} was run again in {same[-1].path}, which counts."
            )
    return kept


# --------------------------------------------------------------------------- what a run contributes


@dataclass
class Point:
    """The metrics one run contributes to the table."""

    run: Run
    epoch: int | None
    values: dict[str, float]
    marked: bool = False  # in progress: counted at its last completed epoch


def run_point(run: Run, split: str, epoch: str) -> Point | str:
    """The run's contribution, or the reason it has none (a string)."""
    if split == "test":
        if run.summary is None:
            return f"{run.path} is still in progress and has no test metrics yet"
        test = run.summary.get("test")
        if not isinstance(test, dict) or not test:
            return f"{run.path} has no test metrics in summary.json (trained without a test split?)"
        return Point(run, run.summary.get("best_epoch"), run.head_metrics(test))
    if run.summary is not None:
        block = run.summary.get(epoch)
        values = {k[len("val/"):]: v for k, v in block.items() if k.startswith("val/")} if isinstance(block, dict) else {}
        values = run.head_metrics(values)
        if not values and not run.summary.get("epochs_completed"):
            return f"{run.path} ended ({run.status}) before completing an epoch"
        if not values:
            return f"{run.path} has no validation metrics in summary.json '{epoch}' (trained without a validation split?)"
        at = run.summary.get("best_epoch") if epoch == "best" else run.summary.get("epochs_completed")
        return Point(run, at, values)
    val_rows = [r for r in run.rows if r["split"] == "val"]
    if not val_rows:
        return f"{run.path} is in progress and has not completed an epoch with validation yet"
    last = max(val_rows, key=lambda r: r["epoch"])
    return Point(run, last["epoch"], run.head_metrics(last), marked=True)


# --------------------------------------------------------------------------- statistics


@dataclass
class Stat:
    """One metric of one spec over its seeds."""

    by_seed: dict[int, float]

    @property
    def n(self) -> int:
        return len(self.by_seed)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.by_seed.values())))

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); nan with a single seed."""
        return float(np.std(list(self.by_seed.values()), ddof=1)) if self.n > 1 else math.nan


@dataclass
class Delta:
    """A spec minus the baseline, for one metric."""

    value: float
    sd: float  # the standard deviation of one difference; nan if it cannot be estimated
    paired: bool

    @property
    def within_sd(self) -> bool | None:
        """|difference| within one standard deviation (seed noise); None when unknown."""
        return None if math.isnan(self.sd) else abs(self.value) <= self.sd


def delta(stat: Stat, base: Stat) -> Delta:
    """Paired by seed when both have the same seeds (mean of per-seed differences),
    else the difference of means, whose single-difference sd is sqrt(sd1^2 + sd2^2)."""
    if set(stat.by_seed) == set(base.by_seed):
        diffs = np.array([stat.by_seed[s] - base.by_seed[s] for s in sorted(stat.by_seed)])
        sd = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else math.nan
        return Delta(float(diffs.mean()), sd, paired=True)
    return Delta(stat.mean - base.mean, math.hypot(stat.std, base.std), paired=False)


# --------------------------------------------------------------------------- the report


@dataclass
class SpecRow:
    spec: str
    runs: list[Run]  # every usable run of the spec (the curves use them all)
    points: list[Point]  # the runs that contribute to the table
    stats: dict[str, Stat]
    reported: dict | None = None  # the original study's row, if the spec name is one of its six
    deltas: dict[str, Delta] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        return sorted(p.run.seed for p in self.points)

    @property
    def marked(self) -> bool:
        return any(p.marked for p in self.points)

    @property
    def epochs(self) -> list[int]:
        return sorted(p.epoch for p in self.points if p.epoch is not None)


@dataclass
class Report:
    split: str
    epoch: str
    baseline: str | None
    columns: list[str]  # metric keys, e.g. "fine/loss", in the original table's order
    rows: list[SpecRow]
    warnings: list[str]  # skipped or ignored runs
    notes: list[str]  # how to read the table: marked runs, pairing

    def best(self, key: str) -> float | None:
        """The best mean in a column (None with fewer than two specs: nothing to compare)."""
        means = [r.stats[key].mean for r in self.rows if key in r.stats and not math.isnan(r.stats[key].mean)]
        if len(means) < 2:
            return None
        return min(means) if lower_is_better(key) else max(means)


def load_reported(path: Path = REPORTED_RESULTS) -> dict[str, dict]:
    """The original study's table: {spec: {"model", "epoch", "seeds", "values": {key: v}}}."""
    if not path.is_file():
        return {}
    table = {}
    with path.open(newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                values = {k: float(v) for k, v in row.items() if "/" in k and v not in ("", None)}
                table[row["spec"]] = {"model": row["model"], "epoch": int(row["epoch"]), "seeds": int(row["seeds"]), "values": values}
            except (KeyError, TypeError, ValueError) as exc:
                raise RunError(f"{path}:{line}: cannot read the reported results ({exc}).") from None
    return table


def _spec_order(names: Iterable[str], reported: dict) -> list[str]:
    """The original's six specs in its table's order, then the others by name."""
    names = set(names)
    natural = lambda name: [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]
    return [s for s in reported if s in names] + sorted(names - set(reported), key=natural)


def build_report(
    paths: Iterable[Path],
    split: str = "val",
    epoch: str = "best",
    baseline: str | None = None,
    reported_path: Path = REPORTED_RESULTS,
) -> Report:
    if split not in SPLITS:
        raise UsageError(f"--split '{split}': expected one of {', '.join(SPLITS)}.")
    if epoch not in EPOCHS:
        raise UsageError(f"--epoch '{epoch}': expected one of {', '.join(EPOCHS)}.")
    if split == "test" and epoch != "best":
        raise UsageError("--split test uses the best checkpoint, the one evaluated on the test split; drop --epoch last.")
    groups, warnings = collect_runs(paths)
    reported = load_reported(reported_path)
    notes: list[str] = []
    rows: list[SpecRow] = []
    for spec in _spec_order(groups, reported):
        points = []
        for run in groups[spec]:
            point = run_point(run, split, epoch)
            if isinstance(point, str):
                warnings.append(f"left out of the table: {point}.")
            else:
                points.append(point)
                if point.marked:
                    notes.append(f"{spec} (marked *): {run.path} is in progress, counted at epoch {point.epoch}.")
        keys = {k for p in points for k in p.values}
        stats = {k: Stat({p.run.seed: p.values[k] for p in points if k in p.values}) for k in keys}
        rows.append(SpecRow(spec, groups[spec], points, stats, reported.get(spec)))
    if not any(r.points for r in rows):
        raise RunError(
            f"none of the runs has {'test' if split == 'test' else 'validation'} metrics to report:\n"
            + "\n".join(warnings)
        )
    rows_by_spec = {r.spec: r for r in rows}
    columns = _columns(rows)
    if baseline is not None:
        if baseline not in rows_by_spec or not rows_by_spec[baseline].points:
            hint = did_you_mean(baseline, rows_by_spec) or ""
            raise UsageError(
                f"--baseline '{baseline}': no reportable runs of that spec; the specs are "
                f"{', '.join(rows_by_spec)}. {hint}".strip()
            )
        base = rows_by_spec[baseline]
        paired, unpaired = [], []
        for row in rows:
            if row is base:
                continue
            row.deltas = {k: delta(row.stats[k], base.stats[k]) for k in columns if k in row.stats and k in base.stats}
            if row.deltas:
                (paired if all(d.paired for d in row.deltas.values()) else unpaired).append(row.spec)
        if paired:
            notes.append(f"differences to {baseline} paired by seed: {', '.join(paired)}.")
        if unpaired:
            notes.append(f"differences to {baseline} of means (seeds differ): {', '.join(unpaired)}.")
    return Report(split, epoch, baseline, columns, rows, warnings, notes)


def _columns(rows: list[SpecRow]) -> list[str]:
    task_order: dict[str, int] = {}
    for row in rows:
        for run in row.runs:
            for task in run.tasks:
                task_order.setdefault(task, len(task_order))
    keys = {k for r in rows for k in r.stats}
    return sorted(keys, key=lambda k: (_kind_rank(k), k.split("/", 1)[1], task_order.get(k.split("/")[0], 0)))
