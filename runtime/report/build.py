"""graphc report: the study's comparison table and learning curves, with seeds averaged.

Reads run directories (contract: runtime/runs/rundir.py) and makes one row per *variant*.
A run's variant is what it is apart from its seed: its spec (config.json "spec" and the
content hash "spec_sha256"), every setting it resolved that can change its numbers
(config.json "train": epochs, batch size, optimiser and learning rate, schedule, ...;
"data": data set, an image folder's root, split, augmentation, ...), its data limits (limit_train,
limit_val), its final test pass (limit_test, no_test) and the name ``graphc train --tag``
gave it. Where it ran (which device of a kind, processes, torch.compile, TensorBoard) is not part of it.
Seeds of one variant are averaged: for each head its loss and accuracy (plus top-5, the
hierarchy metrics and the per-head baselines when the runs have them, and cross-head
metrics such as mean_acc) as the mean +/- *sample* standard deviation (ddof=1) over seeds,
with the number of seeds.

How a run executed can move its numbers too: runs that differ in threads, torch version, kind of
device, precision, memory format or graphc version (the record's, EXECUTION_APART) are rows apart.
A row is labelled by its tag, else its spec name, then the settings in which it differs
from the other variants of that name: ``shared_conv [epochs=3, limit_train=2000]``,
``spec_sha256=1a2b3c4d`` when the spec's text differs. A limited or skipped test pass is
always in the label (``limit_test=500``, ``no_test``): its test accuracy is not the full one.

Which epoch a run contributes to the table:

* ``split="val", epoch="best"`` (default): summary.json "best", the metrics of the
  epoch that train.select picked (the epoch best.pt holds).
* ``split="val", epoch="last"``: summary.json "last", the final epoch - what the
  original study reported (epoch 100).
* a run still in progress (no summary.json): its last completed epoch (the last
  epoch with a validation row); its row is marked ``*``.
* ``split="test"``: summary.json "test" (best.pt evaluated once on the test split).
  Runs without it (in progress, trained with --no-test or without a test split) are
  skipped with a note.

What is compared: a metric is compared with the baseline's (--baseline: the paired difference over
shared seeds, its interval, tests and verdict, :func:`compare_rows` and stats.py; bold only where
the verdict is "better") only when both have it under the same name - so
``fine/consistency_with_coarse`` is never set against ``fine/consistency_with_flies`` -
and measured it on the same images: rows whose data settings or limit for the split
(limit_val, limit_test) differ are named in a note and not compared with each other. A
metric across heads (``mean_acc``, ``weighted_acc``) is compared only between rows with the
same heads, and ``weighted_acc`` only between rows whose heads have the same loss_weight (read from
each run's spec copy). ``TASK/majority_acc`` (always answering the split's commonest class) is a property of the
split, shown but never compared. ``-`` marks a metric a row does not have.

Bad runs never sink the report: a run whose files are damaged, whose config is
incomplete or whose heads differ from the other runs of its variant is skipped with a
warning naming the file (and line); only when nothing usable is left is it an error.
If one variant and seed was run more than once (a true duplicate), the finished, most
recent run counts (two copies of one seed would understate the spread) and the others
are named in a warning.

0.1.0 runs logged ``CHILD/consistency`` against their one hierarchy's parent; it is read
as ``CHILD/consistency_with_PARENT`` when the run's own ``PARENT/acc_from_CHILD`` names
the parent (else it keeps its name, and is compared only with the same name).
"""

from __future__ import annotations

import csv
import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from graphc.errors import RunError, UsageError, did_you_mean
from graphc.files import nfc_names
from graphc.ir.metrics import AGG_PREFIX, DIAGNOSTIC_PREFIX, WEIGHT_PREFIX, canonical_name
from graphc.lang.builtin import specs_dir
from graphc.runtime.report.reference import load_reference
from graphc.runtime.report.stats import (
    BETTER,
    MIN_SEEDS_FOR_T,
    Paired,
    discordant,
    holm,
    mcnemar_exact,
    paired_difference,
    verdict,
)
from graphc.runtime.runs.predictions import TEST_PREDICTIONS, Predictions, read_predictions
from graphc.runtime.runs.rundir import CONFIG, METRICS_JSONL, SUMMARY, find_runs, read_json, read_numbered_metrics

SPLITS = ("val", "test")
EPOCHS = ("best", "last")
FORMATS = ("md", "csv", "json", "latex")
# The original study's table, keyed by spec name. CSV rather than TOML: it is a table,
# and a .toml beside the six specs would be taken for a seventh spec by `specs/*.toml`.
REPORTED_RESULTS = specs_dir() / "reported_results.csv"
# Metric suffixes in the order the table reads: losses, accuracies (with the per-head
# baselines beside them), top-5, then the hierarchy metrics; cross-head metrics come last.
_KIND_ORDER = ("loss", "acc", "balanced_acc", "majority_acc", "top5", "acc_from_", "consistency_with_", "consistency")
# Row entries that are not reported: the weighted total loss (the heads' losses are) and
# the training-only figures. Every other entry without a head (e.g. mean_acc) is.
NOT_REPORTED = ("epoch", "split", "loss", "lr", "images_per_s", "time_s")
# A property of the split, not of the model: shown, never a winner or a difference (majority_acc: always the
# commonest class; mean_mae: always the training mean; labelled: how many images of the split have the label);
# and positive_rate, a binary head's share of "yes" answers: a description of the model, neither better nor worse
# higher (a row answering "yes" more often must not be called better).
NOT_COMPARED = ("majority_acc", "mean_mae", "labelled", "positive_rate")
# Lower is better: losses and a regression head's errors (in the targets' units); higher for every other metric.
LOWER_IS_BETTER = ("loss", "mae", "rmse", "mean_mae")
COUNTS = ("labelled",)  # counts of images, not fractions: shown as whole numbers


def lower_is_better(key: str) -> bool:
    return key.split("/")[-1] in LOWER_IS_BETTER


def compared(key: str) -> bool:
    return key.split("/")[-1] not in NOT_COMPARED


def _kind_rank(key: str) -> int:
    if "/" not in key:
        return len(_KIND_ORDER) + 1  # cross-head metrics (mean_acc) after every head's
    suffix = key.split("/", 1)[1]
    for rank, kind in enumerate(_KIND_ORDER):
        if suffix == kind or (kind.endswith("_") and suffix.startswith(kind)):
            return rank
    return len(_KIND_ORDER)


def natural(name: str) -> list:
    """Sort key: numbers as numbers (epochs=3 before epochs=10, lr=0.003 before lr=0.01)."""
    parts = re.split(r"(\d+(?:\.\d+)?)", name)
    return [(1, 0.0, t) if i % 2 == 0 else (0, float(t), "") for i, t in enumerate(parts)]


# --------------------------------------------------------------------------- variants

# Settings that say where or how visibly a run trained, not what: not part of its variant.
# (torch.compile gives the eager model's numbers, checked on the first batch; diagnostics leave the
# training's trajectory as it is: runtime/train/diagnostics.py.)
# train.precision is what was asked for ("auto"); the precision a run used is the record's, in EXECUTION_APART.
EXECUTION = ("train.seed", "train.device", "train.precision", "train.compile", "train.tensorboard", "train.diagnostics")
# How a run executed, as the record says (runtime/device.py decides it): not what was trained, but each
# can move the numbers (thread count changes reduction order, another torch another kernel, bf16 another
# rounding), so runs that differ in one are rows apart, the setting named in the label, never averaged.
# Defaults are left out, so a record written before a field existed reads the same as one with its default.
EXECUTION_APART = ("device", "precision", "memory_format", "threads", "torch_version", "graphc_version")
EXECUTION_DEFAULTS = {"precision": "fp32", "memory_format": "contiguous"}
# Labels use the flags' names; other settings keep their config path without "train.".
SHORT = {"train.optimizer.lr": "lr", "data.dataset": "dataset", "data.root": "data_dir"}
LABEL_ORDER = (
    "epochs",
    "batch_size",
    "lr",
    "limit_train",
    "limit_val",
    "limit_test",
    "no_test",
    "dataset",
    "data_dir",
    *EXECUTION_APART,
)
ALWAYS_SHOWN = ("limit_test", "no_test")  # a test pass over fewer images (or none) is named in every label
# Data settings that change what a model trains on, not which images measure it.
TRAINING_ONLY_DATA = ("data.augment", "data.normalize")


def _flatten(value: Any, path: str) -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{path}.{key}"))
        return flat
    return {path: value}


def variant_settings(config: dict) -> tuple[tuple[str, Any], ...]:
    """The settings of config.json that make a run's variant, as sorted (name, value) pairs;
    unset ones (None, absent, no_test false) are left out, so they all read the same."""
    flat: dict[str, Any] = {}
    for table in ("train", "data"):
        if isinstance(config.get(table), dict):
            flat.update(_flatten(config[table], table))
    if flat.get("data.dataset") != "imagefolder":
        # The folder of CIFAR-100 (checked by its md5) or of nothing (synthetic) is only where the
        # files are, so runs on two machines compare; an image folder's root is the data set itself.
        flat.pop("data.root", None)
    for name in ("limit_train", "limit_val", "limit_test"):
        flat[name] = config.get(name)
    flat["no_test"] = True if config.get("no_test") else None
    frozen = config.get("frozen")  # trainable = false and --freeze (runtime/train/freeze.py): node[@unfreeze_after]
    if isinstance(frozen, dict) and frozen:
        flat["frozen"] = ",".join(f"{node}@{after}" if after else str(node) for node, after in sorted(frozen.items()))
    settings = {}
    for path, value in flat.items():
        if path in EXECUTION or value is None:
            continue
        name = SHORT.get(path) or path.removeprefix("train.")
        settings[name] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value, sort_keys=True)
    for name in EXECUTION_APART:
        value = config.get(name)
        if name == "device" and isinstance(value, str):
            value = value.split(":", 1)[0]  # cuda:0 and cuda:1 are the same kind of device
        if value is not None and value != EXECUTION_DEFAULTS.get(name):
            settings[name] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value, sort_keys=True)
    return tuple(sorted(settings.items()))


@dataclass(frozen=True)
class Variant:
    """What a run is apart from its seed: one row of the report."""

    spec: str
    spec_sha256: str | None
    tag: str | None
    settings: tuple[tuple[str, Any], ...]

    @property
    def name(self) -> str:
        return self.tag or self.spec

    def get(self, setting: str) -> Any:
        return dict(self.settings).get(setting)

    def planned(self) -> Variant:
        """The variant without how its runs executed (EXECUTION_APART): what a sweep plans and finds a
        run by. A run's execution (threads, device, torch) is decided when it starts, so a plan
        cannot know it; the report still shows runs that differ in it apart."""
        return replace(self, settings=tuple((k, v) for k, v in self.settings if k not in EXECUTION_APART))

    def measured_on(self, split: str) -> tuple:
        """What decides the images a split's metrics are measured on: the data settings
        (not augmentation or normalisation) and the split's limit."""
        data = tuple(
            (k, v)
            for k, v in self.settings
            if (k.startswith("data.") or k in ("dataset", "data_dir")) and not k.startswith(TRAINING_ONLY_DATA)
        )
        limit = "limit_val" if split == "val" else "limit_test"
        return data + ((limit, self.get(limit)),)


def _setting_text(name: str, value: Any) -> str:
    return name if value is True else f"{name}={value}"


def variant_labels(variants: Iterable[Variant]) -> dict[Variant, str]:
    """Each variant's row label: its tag or spec name, then what differs from the others of that name."""
    by_name: dict[str, list[Variant]] = {}
    for variant in variants:
        by_name.setdefault(variant.name, []).append(variant)
    rank = lambda name: (LABEL_ORDER.index(name) if name in LABEL_ORDER else len(LABEL_ORDER), name)
    labels: dict[Variant, str] = {}
    for name, group in by_name.items():
        shown = set(ALWAYS_SHOWN)
        if len(group) > 1:
            names = {k for v in group for k, _ in v.settings}
            shown |= {k for k in names if len({json.dumps(v.get(k)) for v in group}) > 1}
        specs = len({v.spec for v in group}) > 1  # one tag given to runs of several specs
        texts = len({v.spec_sha256 for v in group}) > 1
        for variant in group:
            parts = [f"spec={variant.spec}"] if specs else []
            parts += [f"spec_sha256={(variant.spec_sha256 or 'unknown')[:8]}"] if texts else []
            parts += [_setting_text(k, variant.get(k)) for k in sorted(shown, key=rank) if variant.get(k) is not None]
            if len({v.tag for v in group}) > 1 and variant.tag is None:
                parts.append("untagged")  # a spec name that is also another variant's tag
            labels[variant] = name + (f" [{', '.join(parts)}]" if parts else "")
    return labels


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
    rows: list[dict]  # metrics.jsonl, in file order (0.1.0 metric names read as today's)
    summary: dict | None  # None while the run is in progress (or was killed)
    variant: Variant | None = None
    warnings: list[str] = field(default_factory=list)  # what was read but is odd (graphc report prints them)
    stored_tag: str | None = None  # config.json's tag as written (variant.tag is it in NFC)
    dataset: str | None = None  # the record's data set (data.dataset, or 0.1's top-level "dataset")
    labels: str | None = None  # imagefolder: the label field (data.label); the study's labels are CIFAR-100's own

    classes: dict[str, int] = field(default_factory=dict)  # config.json "classes": label field -> classes
    # config.json "types": head -> type where not classification (graphc 0.5 on); None: the record has no table
    types: dict[str, str] | None = None

    @cached_property
    def head_weights(self) -> tuple[tuple[str, float], ...] | None:
        """Each head's loss_weight, from the run's spec copy: what its ``weighted_acc`` weights the heads'
        accuracies by. None when the copy cannot be read (then weighted_acc is not compared)."""
        import graphc
        from graphc.errors import SpecError
        from graphc.lang.spec import HeadNode
        from graphc.runtime.runs.rundir import SPEC_COPY, read_text

        path = self.path / SPEC_COPY
        try:
            spec = graphc.parse_spec(read_text(path, "spec text"), path, name=self.spec)
        except (RunError, SpecError, OSError):
            return None
        return tuple(sorted((n.task, n.loss_weight) for n in spec.nodes if isinstance(n, HeadNode)))

    def collapsed(self) -> set[str]:
        """The heads whose final test pass collapsed (summary.json "collapsed", else the rule of
        graphc.runtime.collapse applied to the summary's test metrics, for runs written before it)."""
        if self.summary is None or self.summary.get("test_skipped"):
            return set()
        return collapsed_of(self.path / SUMMARY, self.summary.get("collapsed"), self.summary.get("test"), self)

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
        """The reported metrics of a row: per head (``TASK/...``) and across heads (e.g. ``mean_acc``);
        null (a NaN in the run) as nan."""
        return {
            k: (math.nan if v is None else float(v))
            for k, v in row.items()
            if (k.split("/", 1)[0] in self.tasks if "/" in k else k not in NOT_REPORTED)
            and (v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)))
        }


_CONSISTENCY = re.compile(r"(.*?)([^/]+)/consistency")


def current_names(metrics: dict) -> dict:
    """``CHILD/consistency`` (0.1.0, one hierarchy) as ``CHILD/consistency_with_PARENT``, the
    parent named by the same block's ``PARENT/acc_from_CHILD``; with no or several, unchanged."""
    renamed = {}
    for key, value in metrics.items():
        match = _CONSISTENCY.fullmatch(key)
        if match:
            prefix, child = match.groups()
            parents = [
                k[len(prefix) :].split("/")[0]
                for k in metrics
                if k.startswith(prefix) and k[len(prefix) :].count("/") == 1 and k.endswith(f"/acc_from_{child}")
            ]
            if len(parents) == 1:
                key = f"{prefix}{child}/consistency_with_{parents[0]}"
        renamed[key] = value
    return renamed


def load_run(path: Path) -> Run:
    """Read one run directory; RunError naming the file (and line) if anything is damaged, unreadable
    or out of range (an accuracy outside [0, 1], an epoch logged twice with different numbers)."""
    path = Path(path)
    config_path = path / CONFIG
    if not config_path.is_file():
        raise RunError(
            f"{config_path}: missing, so the run's spec and seed are unknown. "
            "The run was probably killed before it started; delete the directory."
        )
    config = read_json(config_path)  # unreadable or not UTF-8: a RunError naming the file, the run is skipped
    if not isinstance(config, dict):
        raise RunError(f"{config_path}: expected a JSON object, found {type(config).__name__}.")
    for key, kind in (("spec", str), ("seed", int), ("tasks", list)):
        if not isinstance(config.get(key), kind):
            raise RunError(
                f"{config_path}: expected '{key}' ({kind.__name__}), found {config.get(key)!r}. "
                "The file is damaged or was not written by graphc train."
            )
    tag = config.get("tag")
    if tag is not None and not isinstance(tag, str):
        raise RunError(f"{config_path}: expected 'tag' (a string or null), found {tag!r}. The file is damaged.")
    metrics_path = path / METRICS_JSONL
    numbered = read_numbered_metrics(path)
    lines, rows = [n for n, _ in numbered], [row for _, row in numbered]
    _check_metric_values(metrics_path, numbered)
    rows, warnings = _one_row_per_epoch(metrics_path, rows, lines)
    summary = None
    if (path / SUMMARY).is_file():
        summary = read_json(path / SUMMARY)
        if not isinstance(summary, dict):
            raise RunError(f"{path / SUMMARY}: expected a JSON object, found {type(summary).__name__}.")
        for block in ("best", "last", "test"):
            if isinstance(summary.get(block), dict):
                for key, value in summary[block].items():
                    _check_range(f"{path / SUMMARY}: '{block}'", key, value)
        summary = {
            k: current_names(v) if k in ("best", "last", "test") and isinstance(v, dict) else v
            for k, v in summary.items()
        }
    sha = config.get("spec_sha256")
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    dataset = data.get("dataset", config.get("dataset"))
    return Run(
        path=path,
        spec=config["spec"],
        seed=config["seed"],
        tasks=tuple(config["tasks"]),
        spec_sha256=sha if isinstance(sha, str) else None,
        started=str(config.get("started", "")),
        # graphc before 0.4 named a cosine pair in head order (diag/N/cos/fine:coarse): read in sorted order
        rows=[current_names({canonical_name(k): v for k, v in row.items()}) for row in rows],
        summary=summary,
        variant=Variant(
            config["spec"],
            sha if isinstance(sha, str) else None,
            None if tag is None else unicodedata.normalize("NFC", tag),  # one tag however it was typed
            variant_settings(config),
        ),
        warnings=warnings,
        stored_tag=tag,
        dataset=dataset if isinstance(dataset, str) else None,
        labels=data.get("label") if isinstance(data.get("label"), str) else None,
        classes={
            k: v
            for k, v in (config.get("classes") or {}).items()
            if isinstance(config.get("classes"), dict) and type(v) is int and v > 0
        },
        types={k: v for k, v in config["types"].items() if isinstance(v, str)}
        if isinstance(config.get("types"), dict)
        else None,
    )


def collapsed_of(where: Path, stored: Any, metrics: Any, run: Run) -> set[str]:
    """The collapsed heads of one evaluation: its stored "collapsed" table when there is one (checked:
    a damaged one is a RunError naming ``where``), else graphc.runtime.collapse's rule applied to its
    metrics (runs written before the table existed; a head without TASK/majority_acc or balanced_acc
    cannot be judged and is not marked)."""
    from graphc.runtime.collapse import collapsed_heads, read_collapsed

    table = read_collapsed(stored, where)
    if table is None:
        if not isinstance(metrics, dict):
            return set()
        classes = {t: run.classes[t] for t in run.tasks if t in run.classes}
        table = collapsed_heads(metrics, classes)
    return {task for task in table if task in run.tasks}


# Metrics that are fractions in [0, 1] (rundir.py: "Accuracies are fractions"), by their last part.
FRACTIONS = ("acc", "top5", "balanced_acc", "majority_acc", "consistency", "mean_acc", "weighted_acc")
FRACTION_PREFIXES = ("acc_from_", "consistency_with_")


def is_fraction(key: str) -> bool:
    """Whether metric ``key`` (``fine/acc``, ``val/coarse/acc_from_fine``, ``mean_acc``) is an
    accuracy or agreement, stored as a fraction in [0, 1]; diagnostics and loss weights are not."""
    parts = key.split("/")
    if parts[0] in ("train", "val", "test") and len(parts) > 1:
        parts = parts[1:]
    if f"{parts[0]}/" in (DIAGNOSTIC_PREFIX, WEIGHT_PREFIX, AGG_PREFIX):
        return False
    return parts[-1] in FRACTIONS or parts[-1].startswith(FRACTION_PREFIXES)


def _check_range(where: str, key: str, value: Any) -> None:
    """An accuracy outside [0, 1] (a tampered or hand-edited file: 57.0 would print as 5700 %)."""
    if (
        is_fraction(key)
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and not -1e-9 <= value <= 1 + 1e-9
    ):
        raise RunError(
            f"{where}: '{key}' is {value!r}, outside [0, 1] (graphc stores accuracies as fractions). The file was "
            "edited or is damaged; the run is left out rather than reported wrong."
        )


def _one_row_per_epoch(path: Path, rows: list[dict], lines: list[int]) -> tuple[list[dict], list[str]]:
    """Rows with each (epoch, split) once. The same row logged twice is read once, with a warning;
    an epoch logged twice with different numbers is a RunError (which numbers happened is unknown:
    graphc train replaces the rows of redone epochs, so the file was edited or is damaged)."""
    seen: dict[tuple, tuple[int, dict]] = {}
    kept, repeated = [], []
    for line, row in zip(lines, rows):
        key = (row["epoch"], row["split"])
        if key not in seen:
            seen[key] = (line, row)
            kept.append(row)
        elif row == seen[key][1]:
            repeated.append(line)
        else:
            raise RunError(
                f"{path}:{line}: epoch {row['epoch']} ({row['split']}) is logged again with other numbers than on "
                f"line {seen[key][0]}; which are the run's is unknown, so the run is left out. The file was edited "
                "or is damaged."
            )
    warnings = []
    if repeated:
        warnings.append(
            f"{path}: lines {', '.join(map(str, repeated))} repeat earlier rows exactly (same epoch, split and "
            "numbers); each is counted once."
        )
    return kept, warnings


def _check_metric_values(path: Path, numbered: list[tuple[int, dict]]) -> None:
    """read_numbered_metrics checks the JSON; this checks the values, naming the line."""
    for line, row in numbered:
        if not isinstance(row["epoch"], int) or row["split"] not in ("train", "val"):
            raise RunError(
                f"{path}:{line}: expected an integer 'epoch' and 'split' train or val, "
                f"found epoch {row['epoch']!r}, split {row['split']!r}. The file is damaged."
            )
        for key, value in row.items():
            if (
                key not in ("epoch", "split")
                and value is not None
                and (isinstance(value, bool) or not isinstance(value, (int, float)))
            ):
                raise RunError(f"{path}:{line}: '{key}' should be a number, found {value!r}. The file is damaged.")
            _check_range(f"{path}:{line}", key, value)


def collect_runs(paths: Iterable[Path]) -> tuple[dict[Variant, list[Run]], dict[Variant, str], list[str]]:
    """Find and read runs under ``paths``, group them by variant; returns (groups, labels, warnings)."""
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(
            f"{', '.join(missing)}: no such file or directory. Pass run directories or a folder holding runs, e.g. runs/."
        )
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
        else:
            warnings += runs[-1].warnings
    warnings += _nfc_tags(runs)
    if not runs:
        raise RunError(f"none of the {len(found)} runs found could be read:\n" + "\n".join(warnings))
    groups: dict[Variant, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.variant, []).append(run)
    labels = variant_labels(groups)
    for variant, members in groups.items():
        members = _same_heads(labels[variant], members, warnings)
        groups[variant] = _one_run_per_seed(labels[variant], members, warnings)
    tags: dict[str, list[str]] = {}
    for variant in groups:
        if variant.tag is not None:
            tags.setdefault(variant.tag, []).append(labels[variant])
    for tag, named in tags.items():
        if len(named) > 1:
            warnings.append(
                f"--tag {tag} was given to runs of {len(named)} different variants ({'; '.join(named)}); "
                "they are kept apart. Give each variant its own tag."
            )
    return groups, labels, warnings


def _nfc_tags(runs: list[Run]) -> list[str]:
    """A warning for each set of tags that differ only in Unicode normal form: they look the same, and
    load_run reads each in NFC, so they name one row (a tag typed on macOS and on Linux)."""
    tags = [r.stored_tag for r in runs if r.stored_tag is not None]
    normal, groups = nfc_names(tags)
    return [
        f"the tags {' and '.join(ascii(t) for t in group)} differ only in Unicode normal form (they look the "
        f"same); they are read as one tag, {normal[tags.index(group[0])]!r}."
        for group in groups
    ]


def _same_heads(label: str, runs: list[Run], warnings: list[str]) -> list[Run]:
    """Keep the runs with the most common set of heads; name the others."""
    counts = Counter(frozenset(r.tasks) for r in runs)
    keep = counts.most_common(1)[0][0]
    kept = [r for r in runs if frozenset(r.tasks) == keep]
    expected = ", ".join(kept[0].tasks)
    for run in runs:
        if frozenset(run.tasks) != keep:
            warnings.append(
                f"skipped {run.path}: its heads ({', '.join(run.tasks)}) differ from those of the other runs "
                f"of '{label}' ({expected}), which have the same spec text and settings; its config.json does not "
                "match its spec."
            )
    return kept


def _one_run_per_seed(label: str, runs: list[Run], warnings: list[str]) -> list[Run]:
    """A true duplicate (same variant, same seed): the finished, most recent run counts."""
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
                f"ignored {other.path}: a duplicate of {same[-1].path} ('{label}' seed {seed} was run again with "
                "the same spec and settings); the finished, most recent run counts."
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
    collapsed: set[str] = field(default_factory=set)  # heads that collapsed in this evaluation (test, --eval)
    predictions: Path | None = None  # where its per-image predictions would be (test split, --eval)
    images: tuple | None = None  # --eval: which test images the saved evaluation measured (its subset)


def eval_point(run: Run, name: str) -> Point | str:
    """The run's saved evaluation NAME (RUN/evaluations/NAME/, graphc eval --save NAME; read and checked
    by graphc.runtime.runs.evaluations), or the reason it has none."""
    from graphc.runtime.runs import evaluations

    folder = evaluations.evaluation_dir(run.path, name)
    if not (folder / evaluations.EVALUATION_FILE).is_file():
        return (
            f"{run.path} has no evaluation '{name}' ({folder / evaluations.EVALUATION_FILE} is missing; "
            f"graphc eval --save {name} writes it)"
        )
    try:
        saved = evaluations.read_evaluation(run.path, name)
        if saved.split != "test":
            raise RunError(
                f"{folder}: an evaluation of the {saved.split!r} split; --split test --eval compares test "
                "evaluations only."
            )
        for key, value in saved.metrics.items():
            _check_range(str(folder / evaluations.EVALUATION_FILE), key, value)
    except RunError as exc:
        return str(exc).rstrip(".")
    metrics = current_names(saved.metrics)
    collapsed = {task for task in saved.collapsed or {} if task in run.tasks}
    if saved.collapsed is None:  # not judged when it was saved: judge it now, by the same rule
        collapsed = collapsed_of(folder, None, metrics, run)
    subset = saved.subset
    images = ("all",) if subset.get("all") else ("limit", subset.get("limit"), subset.get("seed"))
    epoch = saved.epoch
    if epoch is None and saved.checkpoint == "best.pt" and run.summary:  # saved before the epoch was written
        epoch = run.summary.get("best_epoch")
    return Point(
        run,
        epoch,
        run.head_metrics(metrics),
        collapsed=collapsed,
        predictions=folder / evaluations.predictions_file("test"),
        images=images,
    )


def run_point(run: Run, split: str, epoch: str, evaluation: str | None = None) -> Point | str:
    """The run's contribution, or the reason it has none (a string)."""
    if evaluation is not None:
        return eval_point(run, evaluation)
    if split == "test":
        if run.summary is None:
            return f"{run.path} is still in progress and has no test metrics yet"
        if run.summary.get("test_skipped"):
            return f"{run.path} was trained with --no-test and has no test metrics"
        test = run.summary.get("test")
        if not isinstance(test, dict) or not test:
            return f"{run.path} has no test metrics in summary.json (trained without a test split?)"
        try:
            collapsed = run.collapsed()
        except RunError as exc:
            run.warnings.append(f"{exc} Its heads are not checked for collapse.")
            collapsed = set()
        return Point(
            run,
            run.summary.get("best_epoch"),
            run.head_metrics(test),
            collapsed=collapsed,
            predictions=run.path / TEST_PREDICTIONS,
        )
    if run.summary is not None:
        block = run.summary.get(epoch)
        values = (
            {k[len("val/") :]: v for k, v in block.items() if k.startswith("val/")} if isinstance(block, dict) else {}
        )
        values = run.head_metrics(values)
        if not values and not run.summary.get("epochs_completed"):
            return f"{run.path} ended ({run.status}) before completing an epoch"
        if not values:
            return (
                f"{run.path} has no validation metrics in summary.json '{epoch}' (trained without a validation split?)"
            )
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
    """One metric of one row (variant) over its seeds."""

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
    """A row minus the baseline row, for one metric."""

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
class ImageTest:
    """McNemar's exact test on the test images both rows' runs answered, pooled over shared seeds."""

    images: int  # image answers compared: images per seed, summed over the shared seeds
    b: int  # right in the row's run, wrong in the baseline's
    c: int  # wrong in the row's run, right in the baseline's
    p: float
    p_holm: float = math.nan
    test: str = "mcnemar_exact"


@dataclass
class Comparison:
    """One metric of one row against the baseline: the paired difference over shared seeds, its
    tests and the verdict in words (stats.verdict)."""

    baseline: str
    shared_seeds: list[int]
    paired: Paired
    t_p_holm: float = math.nan
    image: ImageTest | None = None
    image_why_not: str | None = None  # why there is no image test (shown in "cannot tell (...)")
    verdict: str = ""

    @property
    def better(self) -> bool:
        return self.verdict == BETTER


@dataclass
class Row:
    """One variant: its runs over seeds and their statistics."""

    label: str  # what the table calls it: tag or spec name, and what differs (variant_labels)
    variant: Variant
    runs: list[Run]  # every usable run of the variant (the curves use them all)
    points: list[Point]  # the runs that contribute to the table
    stats: dict[str, Stat]
    measured: tuple = ()  # Variant.measured_on(split): rows compare only with rows measured alike
    reported: dict | None = None  # the original study's row, beneath the last row of its spec
    deltas: dict[str, Delta] = field(default_factory=dict)
    comparisons: dict[str, Comparison] = field(default_factory=dict)  # per metric, against the baseline
    reference: dict | None = None  # --reference FILE: {"source", "values": {metric: {"value","sd","n","line"}}}

    @property
    def collapsed(self) -> dict[str, list[int]]:
        """{head: seeds whose evaluation collapsed} (graphc.runtime.collapse); heads without one left out."""
        found: dict[str, list[int]] = {}
        for point in sorted(self.points, key=lambda p: p.run.seed):
            for task in sorted(point.collapsed):
                found.setdefault(task, []).append(point.run.seed)
        return found

    @property
    def spec(self) -> str:
        return self.variant.spec

    @property
    def seeds(self) -> list[int]:
        return sorted(p.run.seed for p in self.points)

    @property
    def marked(self) -> bool:
        return any(p.marked for p in self.points)

    @property
    def epochs(self) -> list[int]:
        return sorted(p.epoch for p in self.points if p.epoch is not None)

    @property
    def heads(self) -> frozenset[str]:
        return frozenset(self.runs[0].tasks) if self.runs else frozenset()


def comparable(a: Row, b: Row, key: str) -> bool:
    """Whether ``key`` means the same in rows ``a`` and ``b``: measured on the same images, and for a
    metric across heads (``mean_acc``, ``weighted_acc``) over the same heads - a mean over three
    heads is not a better or worse mean over two - and for ``weighted_acc`` with the same weights
    (the heads' loss_weight): 0.8 fine + 0.2 coarse is another number than 0.5 fine + 0.5 coarse."""
    if a is b:
        return True
    if a.measured != b.measured or ("/" not in key and a.heads != b.heads):
        return False
    if key == "weighted_acc":
        weights = {run.head_weights for row in (a, b) for run in row.runs}
        return len(weights) == 1 and None not in weights
    return True


@dataclass
class Report:
    split: str
    epoch: str
    baseline: str | None  # the baseline row's label
    columns: list[str]  # metric keys, e.g. "fine/loss", in the original table's order
    rows: list[Row]
    warnings: list[str]  # skipped or ignored runs
    notes: list[str]  # how to read the table: marked runs, pairing, rows not compared
    evaluation: str | None = None  # --eval NAME: the saved evaluation compared
    delta_m: Any = None  # --delta-m: graphc.runtime.report.delta_m.DeltaMTable (set by add_delta_m)

    def best(self, key: str, row: Row | None = None) -> float | None:
        """The best mean in a column among the rows measured like ``row`` (all rows when None);
        None with fewer than two such rows (nothing to compare) or for a metric never compared."""
        if not compared(key):
            return None
        peers = [r for r in self.rows if row is None or comparable(r, row, key)]
        means = [r.stats[key].mean for r in peers if key in r.stats and not math.isnan(r.stats[key].mean)]
        if len(means) < 2:
            return None
        return min(means) if lower_is_better(key) else max(means)

    def is_best(self, row: Row, key: str) -> bool:
        """Bold: only a row whose verdict against the baseline is "better" (stats.verdict); without a
        baseline nothing is, since the highest mean alone is no evidence of a difference."""
        comparison = row.comparisons.get(key)
        return comparison is not None and comparison.better


def load_reported(path: Path = REPORTED_RESULTS) -> dict[str, dict]:
    """The original study's table: {spec: {"model", "epoch", "seeds", "values": {key: v}}}."""
    if not path.is_file():
        return {}
    table = {}
    with path.open(newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                values = {k: float(v) for k, v in row.items() if "/" in k and v not in ("", None)}
                table[row["spec"]] = {
                    "model": row["model"],
                    "epoch": int(row["epoch"]),
                    "seeds": int(row["seeds"]),
                    "values": values,
                }
            except (KeyError, TypeError, ValueError) as exc:
                raise RunError(f"{path}:{line}: cannot read the reported results ({exc}).") from None
    return table


def _spec_order(names: Iterable[str], reported: dict) -> list[str]:
    """The original's six specs in its table's order, then the others by name."""
    names = set(names)
    return [s for s in reported if s in names] + sorted(names - set(reported), key=natural)


def find_baseline(name: str, rows: list[Row]) -> Row:
    """--baseline: a row's label, else a tag, else a spec name (its untagged rows, else all its rows);
    it must pick exactly one row with runs to report."""
    rows = [r for r in rows if r.points]
    for candidates in (
        [r for r in rows if r.label == name],
        [r for r in rows if r.variant.tag == name],
        [r for r in rows if r.spec == name and r.variant.tag is None],
        [r for r in rows if r.spec == name],
    ):
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            labels = [r.label for r in candidates]
            raise UsageError(
                f"--baseline '{name}' matches {len(candidates)} rows: {'; '.join(labels)}. "
                f"Pass one row's label, e.g. --baseline '{labels[0]}' (or tag the runs with graphc train --tag)."
            )
    names = [r.label for r in rows] + sorted({r.variant.tag for r in rows if r.variant.tag} | {r.spec for r in rows})
    hint = did_you_mean(name, names) or ""
    raise UsageError(
        f"--baseline '{name}': no reportable runs of that row, tag or spec; the rows are "
        f"{'; '.join(r.label for r in rows)}. {hint}".strip()
    )


def study_data(run: Run, reported: dict) -> bool:
    """Whether the original study's reported numbers apply to ``run``: trained on CIFAR-100 with its own
    labels (the heads the reported row names, fine and coarse) - a CIFAR-10 folder, a synthetic set
    or other heads under the same spec name measure something else."""
    heads = {k.split("/")[0] for k in reported.get("values", {})}
    return run.dataset == "cifar100" and heads <= set(run.tasks) and set(run.tasks) <= {"fine", "coarse"}


def sort_rows(rows: list[Row], key: str, columns: list[str]) -> list[Row]:
    """--sort METRIC: best first (descending for accuracies, ascending for losses); rows without it last."""
    if key not in columns:
        hint = did_you_mean(key, columns) or ""
        raise UsageError(
            f"--sort '{key}': no such metric in this report; the metrics are {', '.join(columns)}. {hint}".strip()
        )
    sign = 1.0 if lower_is_better(key) else -1.0
    known = lambda r: key in r.stats and not math.isnan(r.stats[key].mean)
    return sorted(rows, key=lambda r: (not known(r), sign * r.stats[key].mean if known(r) else 0.0))


def build_report(
    paths: Iterable[Path],
    split: str = "val",
    epoch: str = "best",
    baseline: str | None = None,
    reported_path: Path = REPORTED_RESULTS,
    sort: str | None = None,
    evaluation: str | None = None,
    reference_path: Path | None = None,
) -> Report:
    if split not in SPLITS:
        raise UsageError(f"--split '{split}': expected one of {', '.join(SPLITS)}.")
    if epoch not in EPOCHS:
        raise UsageError(f"--epoch '{epoch}': expected one of {', '.join(EPOCHS)}.")
    if split == "test" and epoch != "best":
        raise UsageError(
            "--split test uses the best checkpoint, the one evaluated on the test split; drop --epoch last."
        )
    if evaluation is not None:
        from graphc.runtime.runs.evaluations import check_name

        check_name(evaluation, "--eval")
        if split != "test":
            raise UsageError(f"--eval {evaluation} compares saved test evaluations; add --split test.")
    reference = None
    if reference_path is not None:
        reference = load_reference(Path(reference_path), is_fraction)
    groups, labels, warnings = collect_runs(paths)
    reported = load_reported(reported_path)
    notes: list[str] = []
    rows: list[Row] = []
    for spec in _spec_order({v.spec for v in groups}, reported):
        variants = sorted((v for v in groups if v.spec == spec), key=lambda v: natural(labels[v]))
        for variant in variants:
            points = []
            for run in groups[variant]:
                before = len(run.warnings)
                point = run_point(run, split, epoch, evaluation)
                warnings += run.warnings[before:]
                if isinstance(point, str):
                    warnings.append(f"left out of the table: {point}.")
                else:
                    points.append(point)
                    if point.marked:
                        notes.append(
                            f"{labels[variant]} (marked *): {run.path} is in progress, counted at epoch {point.epoch}."
                        )
            keys = {k for p in points for k in p.values}
            stats = {k: Stat({p.run.seed: p.values[k] for p in points if k in p.values}) for k in keys}
            measured = variant.measured_on(split)
            if evaluation is not None:
                # the images the saved evaluations measured, not the training run's test pass (limit_test)
                measured = measured[:-1] + (("evaluated", tuple(sorted({p.images for p in points}, key=str))),)
            rows.append(Row(labels[variant], variant, groups[variant], points, stats, measured))
        if spec in reported:  # once, beneath the spec's last row of the study's data
            studied = [r for r in rows if r.spec == spec and r.runs and study_data(r.runs[0], reported[spec])]
            if studied:
                studied[-1].reported = reported[spec]
            else:
                data = sorted({r.runs[0].dataset or "unknown" for r in rows if r.spec == spec and r.runs})
                notes.append(
                    f"{spec}: the original study's numbers are not shown: they are for CIFAR-100 with its fine and "
                    f"coarse labels, and these runs are on {', '.join(data)} (or other heads)."
                )
    if not any(r.points for r in rows):
        raise RunError(
            f"none of the runs has {'test' if split == 'test' else 'validation'} metrics to report:\n"
            + "\n".join(warnings)
        )
    columns = _columns(rows)
    if sort is not None:
        rows = sort_rows(rows, sort, columns)
    if reference is not None:
        notes += attach_reference(reference, rows, columns)
    for row in rows:
        for task, seeds in row.collapsed.items():
            notes.append(
                f"{row.label}: head {task} collapsed (graphc.runtime.collapse) in {len(seeds)} of {len(row.points)} "
                f"seeds (seed {', '.join(map(str, seeds))}); still included in its mean."
            )
    notes += _measured_notes(rows, split)
    if evaluation is not None and any(r.points for r in rows):
        kinds = sorted({p.images for r in rows for p in r.points}, key=str)
        said = [
            "all test images" if k == ("all",) else f"{k[1]:,} test images drawn with seed {k[2]}" if k[1] else str(k)
            for k in kinds
        ]
        notes.append(
            f"--eval {evaluation}: the rows compare the saved evaluations, on {' / '.join(said)}; a label's "
            "[limit_test=N] is the training run's own test pass, not what the evaluation measured."
        )
    base_label = None
    if baseline is not None:
        base = find_baseline(baseline, rows)
        base_label = base.label
        paired, unpaired, apart, weighted_apart = [], [], [], []
        for row in rows:
            if row is base or not row.points:
                continue
            if row.measured != base.measured:
                apart.append(row.label)
                continue
            row.deltas = {
                k: delta(row.stats[k], base.stats[k])
                for k in columns
                if compared(k) and k in row.stats and k in base.stats and comparable(row, base, k)
            }
            if row.deltas:
                (paired if all(d.paired for d in row.deltas.values()) else unpaired).append(row.label)
            if "weighted_acc" in row.stats and "weighted_acc" in base.stats and "weighted_acc" not in row.deltas:
                weighted_apart.append(row.label)
        if paired:
            notes.append(f"differences to {base.label} paired by seed: {', '.join(paired)}.")
        if unpaired:
            notes.append(
                f"seeds differ from {base.label}'s for {', '.join(unpaired)}: the differences, intervals and tests "
                "shown are over the seeds both rows have (the others left out); results.json's 'delta' is the "
                "difference of the means over all seeds."
            )
        if apart:
            notes.append(
                f"no differences to {base.label} for {', '.join(apart)}: measured on other "
                f"{'validation' if split == 'val' else 'test'} images than the baseline."
            )
        if weighted_apart:
            notes.append(
                f"weighted_acc of {', '.join(weighted_apart)} is not compared with {base.label}'s: their heads' "
                "loss_weight differ (or a spec copy could not be read), so each weights the accuracies differently."
            )
        compare_rows(rows, base, columns, warnings)
    return Report(split, epoch, base_label, columns, rows, warnings, notes, evaluation)


def image_metric(key: str) -> bool:
    """Whether McNemar's test applies to ``key``: a head's accuracy (``TASK/acc``), right or wrong per image."""
    return key.count("/") == 1 and key.endswith("/acc")


class _PredictionsCache:
    """Each run's per-image predictions, read once; an unreadable file is one warning and no image test."""

    def __init__(self, warnings: list[str]):
        self.read: dict[Path, Predictions | None] = {}
        self.warnings = warnings

    def get(self, path: Path | None) -> Predictions | None:
        if path is None:
            return None
        if path not in self.read:
            self.read[path] = None
            if path.is_file():
                try:
                    self.read[path] = read_predictions(path)
                except RunError as exc:
                    self.warnings.append(f"no image-level test with {path}: {exc}")
        return self.read[path]


def _image_test(key: str, row: Row, base: Row, seeds: list[int], cache: _PredictionsCache) -> ImageTest | str:
    """McNemar's exact test of ``key`` (TASK/acc) on the discordant images, pooled over ``seeds``;
    or why there is none."""
    if not image_metric(key):
        return "not a per-image metric"
    task = key.split("/")[0]
    mine = {p.run.seed: p for p in row.points}
    theirs = {p.run.seed: p for p in base.points}
    images = b = c = 0
    for seed in seeds:
        a, z = cache.get(mine[seed].predictions), cache.get(theirs[seed].predictions)
        if mine[seed].predictions is None:
            return "no per-image predictions of the validation split"
        if a is None or z is None:
            return "no per-image predictions"
        if task not in a.heads or task not in z.heads:
            return f"no per-image predictions of {task}"
        if not a.same_images(z) or a.heads[task].true != z.heads[task].true:
            return "different test images"
        db, dc = discordant(a.heads[task].correct(), z.heads[task].correct())
        images, b, c = images + len(a.indices), b + db, c + dc
    return ImageTest(images, b, c, mcnemar_exact(b, c))


def compare_rows(rows: list[Row], base: Row, columns: list[str], warnings: list[str]) -> None:
    """Fill each row's comparisons with the baseline (Row.comparisons): the paired difference over
    shared seeds, its t-test, the image-level test of accuracies, both Holm-adjusted per metric across
    the rows compared with the baseline, and the verdict."""
    cache = _PredictionsCache(warnings)
    for key in columns:
        if not compared(key):
            continue
        family = [r for r in rows if r is not base and r.points and key in r.deltas]
        for row in family:
            seeds = sorted(set(row.stats[key].by_seed) & set(base.stats[key].by_seed))
            paired = paired_difference(row.stats[key].by_seed, base.stats[key].by_seed)
            image = _image_test(key, row, base, seeds, cache) if seeds else "no shared seeds"
            row.comparisons[key] = Comparison(
                base.label,
                seeds,
                paired,
                image=image if isinstance(image, ImageTest) else None,
                image_why_not=None if isinstance(image, ImageTest) else image,
            )
        comparisons = [r.comparisons[key] for r in family]
        for comparison, p in zip(comparisons, holm([c.paired.p for c in comparisons])):
            comparison.t_p_holm = p
        with_images = [c for c in comparisons if c.image is not None]
        for comparison, p in zip(with_images, holm([c.image.p for c in with_images])):
            comparison.image.p_holm = p
        for comparison in comparisons:
            n = len(comparison.shared_seeds)
            comparison.verdict = verdict(
                comparison.paired.mean,
                n,
                comparison.t_p_holm,
                None if comparison.image is None else comparison.image.p_holm,
                why_not=(
                    f"{n} seeds, all differ alike, {comparison.image_why_not}"
                    if n >= MIN_SEEDS_FOR_T
                    and math.isnan(comparison.paired.p)
                    and not math.isnan(comparison.paired.mean)
                    else f"{n} shared seed{'s' if n != 1 else ''}, {comparison.image_why_not}"
                ),
                higher_is_better=not lower_is_better(key),
            )


def attach_reference(table: dict[str, dict], rows: list[Row], columns: list[str]) -> list[str]:
    """Set Row.reference on each row a reference row names; notes for reference rows matching none
    and for metrics the report does not have."""
    notes = []
    used: set[str] = set()
    for row in rows:
        for name in (row.label, row.variant.tag, row.spec):
            if name is not None and name in table:
                row.reference = table[name]
                used.add(name)
                break
    for name, entry in table.items():
        if name not in used:
            notes.append(
                f"reference row {name!r} ({entry['source']}) matches no row of the report (a label, tag or spec name)."
            )
        absent = [m for m in entry["values"] if m not in columns]
        if absent:
            notes.append(f"reference row {name!r}: metrics not in this report: {', '.join(absent)}.")
    return notes


def _measured_notes(rows: list[Row], split: str) -> list[str]:
    """Name the groups of rows that are compared only among themselves."""
    groups: dict[tuple, list[str]] = {}
    for row in rows:
        if row.points:
            groups.setdefault(row.measured, []).append(row.label)
    if len(groups) < 2:
        return []
    limit = "limit_val" if split == "val" else "limit_test"
    which = "validation" if split == "val" else "test"
    listed = " | ".join(", ".join(labels) for labels in groups.values())
    return [
        f"rows measured on different {which} images (their data settings or {limit} differ) are not compared "
        f"with each other: the bold best and the differences are within each group: {listed}."
    ]


def _columns(rows: list[Row]) -> list[str]:
    task_order: dict[str, int] = {}
    for row in rows:
        for run in row.runs:
            for task in run.tasks:
                task_order.setdefault(task, len(task_order))
    keys = {k for r in rows for k in r.stats}
    return sorted(keys, key=lambda k: (_kind_rank(k), k.split("/", 1)[-1], task_order.get(k.split("/")[0], 0)))
