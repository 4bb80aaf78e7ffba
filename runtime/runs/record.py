"""A run's record: what ``config.json`` holds, as one typed model, read and written here only.

graphc train writes the record when it starts a run (and again when a resume starts a session);
everything that reads a run - eval, resume, the training processes, export and predict (through
the copy inside each checkpoint) - reads it through :func:`read_record` or :func:`parse_record`,
which check every field once, on load, and name the first wrong one. The record holds the spec's
name and hash, the seed, the heads and their class counts, the resolved ``[data]`` and ``[train]``
tables (CLI overrides applied), the data limits and test pass, the tag, the run's
:class:`~graphc.runtime.device.Execution` (device, processes, precision, memory format, torch.compile,
threads, host allocator: decided once, by ``decide_execution``), what is frozen, where its
weights came from and each resume.

On disk the keys are those graphc has always written (``spec``, ``seed``, ... , ``device``,
``nproc``, ``precision``, ``memory_format``, ``frozen``, ``init_from``, ``resumed``), plus
``format`` (:data:`RECORD_FORMAT`), ``threads``, ``allocator`` and ``torch_version`` (what can change
a run's numbers besides its settings; each resume records its own threads and torch too). A file
without one of these reads it as None. Files without ``format`` -
graphc 0.1 to 0.3 - are converted as they are read (:func:`_from_unversioned`); a format this
graphc does not know is refused. Keys the record does not know (a newer graphc's, or a note added
by hand) are kept and written back unchanged, never read.

Also here: rebuilding what a run trained from its directory - its spec with the record's tables
(:func:`spec_of_run`) and its data exactly as it loaded it (:func:`load_run_data`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

import graphc
from graphc.errors import RunError
from graphc.lang.spec import DataSpec, InputNode, Spec, TrainSpec
from graphc.runtime.device import Execution
from graphc.runtime.runs.rundir import CONFIG, SPEC_COPY, read_json, read_text, write_json

RECORD_FORMAT = "graphc-run/1"

PositiveInt = Annotated[StrictInt, Field(ge=1)]
Count = Annotated[StrictInt, Field(ge=0)]


class Resume(BaseModel):
    """One session a resume started: when, after which epoch, with which flags, where and how."""

    model_config = ConfigDict(frozen=True, extra="allow")

    at: StrictStr | None = None
    from_epoch: Count | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    device: StrictStr | None = None
    nproc: PositiveInt | None = None
    precision: Literal["fp32", "bf16"] | None = None  # the session's execution (graphc-run/1 on)
    memory_format: Literal["contiguous", "channels_last"] | None = None
    threads: PositiveInt | None = None  # the session's CPU threads per process
    torch_version: StrictStr | None = None  # the torch that ran the session


class Targets(BaseModel):
    """A regression head's targets on the training split, per output: what standardises the loss and
    what the predictions are turned back into original units with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mean: list[Annotated[float, Field(allow_inf_nan=False)]] = Field(min_length=1)
    std: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(min_length=1)
    standardize: StrictBool = True  # whether the loss is on z-scored targets (the metrics are in original units)


class RunRecord(BaseModel):
    """config.json: everything a run was started with, fully resolved. Fields in the file's order."""

    model_config = ConfigDict(frozen=True, extra="allow")

    format: Literal["graphc-run/1"] = RECORD_FORMAT
    spec: StrictStr
    spec_sha256: StrictStr | None = None
    seed: Count
    tasks: list[StrictStr]
    classes: dict[str, PositiveInt] | None = None  # label field -> classes (a head's outputs), as the data set had them
    # A head's type where it is not classification (graphc 0.5 on; absent: every head a classifier) and a
    # regression head's target standardisation (the training split's mean and std per output, original units).
    types: dict[str, Literal["binary", "multilabel", "regression"]] = Field(default_factory=dict)
    targets: dict[str, Targets] = Field(default_factory=dict)
    dataset: StrictStr | None = None
    data_root: StrictStr | None = None
    data: DataSpec
    train: TrainSpec
    overrides: dict[str, Any] = Field(default_factory=dict)  # the flags given, as --name: value
    limit_train: PositiveInt | None = None
    limit_val: PositiveInt | None = None
    limit_test: PositiveInt | None = None  # the final test pass: a random N test images
    no_test: StrictBool = False  # the final test pass: none
    tag: StrictStr | None = None  # the variant's name in graphc report
    # the execution (decide_execution): see ``execution``
    device: StrictStr | None = None  # where it trains (rank 0's device with several processes)
    nproc: PositiveInt = 1
    precision: Literal["fp32", "bf16"]
    graphc_version: StrictStr | None = None
    started: StrictStr | None = None
    memory_format: Literal["contiguous", "channels_last"] = "contiguous"
    threads: PositiveInt | None = None
    allocator: StrictStr | None = None
    torch_version: StrictStr | None = None  # torch.__version__ that trained it (None: written before graphc 0.4)
    # written only when they apply
    frozen: dict[str, PositiveInt | None] = Field(default_factory=dict)  # node -> unfreeze_after (None: never)
    init_from: dict[str, Any] | None = None  # transfer: the source run's provenance (runtime/train/transfer.py)
    resumed: list[Resume] = Field(default_factory=list)

    @staticmethod
    def task_fields(heads) -> dict[str, Any]:
        """``types`` and ``targets`` of a new run's record, from its heads (graphc.runtime.metrics.HeadInfo,
        targets fitted on the training split)."""
        return {
            "types": {h.task: h.type for h in heads if h.type != "classification"},
            "targets": {
                h.task: Targets(mean=list(h.target_mean), std=list(h.target_std), standardize=h.standardize)
                for h in heads
                if h.type == "regression" and h.target_mean is not None
            },
        }

    @property
    def execution(self) -> Execution:
        """How the run executes, as decided when it started."""
        return Execution(
            self.precision,
            self.memory_format == "channels_last",
            "as the run trained",
            device=self.device,
            nproc=self.nproc,
            requested=self.train.precision,
            compile=self.train.compile,
            threads=self.threads,
            allocator=self.allocator,
        )

    @staticmethod
    def execution_fields(execution: Execution) -> dict[str, Any]:
        """The record's fields that hold ``execution`` (what is not in the [train] table), with the
        torch version that runs it (this process's: the training processes import the same torch)."""
        return {
            "device": execution.device,
            "nproc": execution.nproc,
            "precision": execution.precision,
            "memory_format": memory_format_name(execution),
            "threads": execution.threads,
            "allocator": execution.allocator,
            "torch_version": torch.__version__,
        }

    def resumed_with(self, resume: Resume, data: DataSpec, train: TrainSpec, data_root: str | None) -> RunRecord:
        """The record after a resume: its tables as the session resolved them, the session appended."""
        update: dict[str, Any] = {"data": data, "train": train, "resumed": [*self.resumed, resume]}
        if data_root:
            update["data_root"] = data_root
        return self.model_copy(update=update)

    def to_json(self) -> dict[str, Any]:
        """config.json's content: every field in order, ``frozen``, ``init_from`` and ``resumed``
        only when they apply, then the keys this graphc does not know, as read."""
        content = self.model_dump(mode="json", exclude={"frozen", "init_from", "resumed"})
        for only_when_set in ("types", "targets"):  # a run of classifiers alone: written as before 0.5
            if not content[only_when_set]:
                del content[only_when_set]
        extra = {k: content.pop(k) for k in list(content) if k not in type(self).model_fields}
        if self.frozen:
            content["frozen"] = dict(self.frozen)
        if self.init_from is not None:
            content["init_from"] = self.init_from
        if self.resumed:
            content["resumed"] = [r.model_dump(mode="json", exclude_none=True) for r in self.resumed]
        return {**content, **extra}


def memory_format_name(execution: Execution) -> str:
    return "channels_last" if execution.channels_last else "contiguous"


# --------------------------------------------------------------------------- reading and writing


def write_record(run_dir: Path, record: RunRecord) -> None:
    """Write ``RUN_DIR/config.json`` (atomically)."""
    write_json(Path(run_dir) / CONFIG, record.to_json())


def read_record(run_dir: Path) -> RunRecord:
    """``RUN_DIR/config.json``, checked; RunError naming the directory, the file or its first wrong field."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory.")
    if not (run_dir / CONFIG).is_file():
        raise RunError(
            f"{run_dir}: not a graphc run directory (no {CONFIG}). "
            "Run directories are made by `graphc train` under runs/<spec>/<seed>-<time>/."
        )
    return parse_record(read_json(run_dir / CONFIG), run_dir / CONFIG)


def checkpoint_record(checkpoint: Mapping[str, Any], where: Path | str = "the checkpoint") -> RunRecord | None:
    """The record a checkpoint carries (its ``config``: the run's config.json when it was written), or None."""
    content = checkpoint.get("config")
    if content is None:
        return None
    return parse_record(content, Path(f"{where} (the run's config inside it)"))


def parse_record(content: Any, path: Path) -> RunRecord:
    """config.json's content (``path`` names it in messages) as a RunRecord, converted from an older
    format; a RunError naming the first field of the wrong type or value (a damaged or hand-edited
    file must not surface as a traceback later)."""
    if not isinstance(content, dict):
        raise RunError(f"{path}: not a graphc run config (a JSON object with 'data' and 'train' tables).")
    for name in ("data", "train"):
        if name not in content:
            raise RunError(f"{path}: not a graphc run config (no '{name}' table).")
    found = content.get("format")
    if found is None:
        content = _from_unversioned(content)
    elif found != RECORD_FORMAT:
        raise RunError(
            f"{path}: a run record of format {json.dumps(found, default=str)[:60]}, which this graphc "
            f"({graphc.__version__}) does not read (it reads {RECORD_FORMAT!r} and the files of graphc 0.1 to 0.3). "
            "The run was made by another graphc version; use that version for it."
        )
    try:
        return RunRecord.model_validate(content)
    except ValidationError as exc:
        raise _problem(exc, path) from None


def _from_unversioned(content: dict) -> dict:
    """A config.json of graphc 0.1 to 0.3 (no ``format``) as a graphc-run/1 record: 0.1.0 wrote no
    ``nproc``, ``memory_format``, test pass or tag (their defaults are what it did); every version wrote
    ``precision`` (a file without it takes [train] precision where that names one, else fp32)."""
    converted = dict(content)
    converted.setdefault("nproc", 1)
    converted.setdefault("memory_format", "contiguous")
    if "precision" not in converted:
        train = converted.get("train")
        asked = train.get("precision") if isinstance(train, dict) else None
        converted["precision"] = asked if asked in ("fp32", "bf16") else "fp32"
    converted["format"] = RECORD_FORMAT
    return converted


# What a wrong field should have been, in words (for messages; types come from RunRecord).
_EXPECTED = {
    "spec": "a string",
    "spec_sha256": "a string or null",
    "seed": "a non-negative integer",
    "tasks": "a list of task names",
    "classes": "a table of positive numbers of classes, or null",
    "types": "a table of head types ('binary', 'multilabel' or 'regression')",
    "targets": "a table of {mean, std, standardize} per regression head",
    "dataset": "a string or null",
    "data_root": "a string or null",
    "data": "a table (JSON object)",
    "train": "a table (JSON object)",
    "overrides": "a table (JSON object)",
    "limit_train": "a positive integer or null",
    "limit_val": "a positive integer or null",
    "limit_test": "a positive integer or null",
    "no_test": "true or false",
    "tag": "a string or null",
    "device": "a string or null",
    "nproc": "a positive integer",
    "precision": "'fp32' or 'bf16'",
    "graphc_version": "a string or null",
    "started": "a string or null",
    "memory_format": "'contiguous' or 'channels_last'",
    "threads": "a positive integer or null",
    "allocator": "a string or null",
    "torch_version": "a string or null",
    "frozen": "a table of node names to a positive number of epochs or null",
    "init_from": "a table (JSON object) or null",
    "resumed": "a list of tables",
    "format": repr(RECORD_FORMAT),
}
_EXPECTED_INSIDE = {"classes": "a positive number of classes", "frozen": "a positive number of epochs or null"}


def _problem(exc: ValidationError, path: Path) -> RunError:
    """The first wrong field of a ValidationError, named as the existing messages name it: a field
    of the record's own with what it should be, a field of the [data] or [train] table as a spec's."""
    # A field of the wrong type or value first, then one inside the tables, then a missing one.
    first = min(exc.errors(), key=lambda e: (e["type"] == "missing", _in_table(e)))
    loc = [str(part) for part in first["loc"] if not isinstance(part, int)]
    if _in_table(first):
        return RunError(
            f"{path}: field '{'.'.join(loc)}': {first['msg']} (got {str(first.get('input'))[:60]!r}). "
            "The file is damaged, edited or from another graphc version; restore it."
        )
    name = loc[0] if loc else "?"
    if first["type"] == "missing":
        return RunError(
            f"{path}: field '{'.'.join(loc)}' is missing, expected {_EXPECTED.get(name, 'a value')}. "
            "The file is damaged or was edited; restore it (graphc writes it when a run starts)."
        )
    field = ".".join(loc[:2]) if name in _EXPECTED_INSIDE else name  # classes.fine; tasks, resumed: the list
    expected = _EXPECTED_INSIDE[name] if name in _EXPECTED_INSIDE and len(loc) > 1 else _EXPECTED.get(name, "?")
    return RunError(
        f"{path}: field '{field}' is {json.dumps(first.get('input'), default=str)[:60]}, expected {expected}. "
        "The file is damaged or was edited; restore it (graphc writes it when a run starts)."
    )


def _in_table(error: Mapping[str, Any]) -> bool:
    """An error inside the [data] or [train] table (not: the table is not a table)."""
    loc = error["loc"]
    return bool(loc) and loc[0] in ("data", "train") and (len(loc) > 1 or error["type"] not in _NOT_A_TABLE)


_NOT_A_TABLE = ("model_type", "model_attributes_type", "dict_type", "missing")


# --------------------------------------------------------------------------- what a run trained


def spec_of_run(run_dir: Path, record: RunRecord) -> Spec:
    """The spec a run trained: its copy (spec.toml) with the record's data and train tables (CLI overrides included)."""
    path = Path(run_dir) / SPEC_COPY
    if not path.is_file():
        raise RunError(f"{run_dir}: not a complete run directory ({SPEC_COPY} is missing).")
    spec = graphc.parse_spec(read_text(path, "spec text"), path, name=record.spec)  # binary: a RunError naming it
    return spec.model_copy(update={"data": record.data, "train": record.train})


def input_shape(spec: Spec) -> tuple[int, int, int]:
    """[C, H, W] of the spec's input node: the shape the data set must deliver."""
    node = next((n for n in spec.nodes if isinstance(n, InputNode)), None)
    if node is None:  # build_graph words this one properly
        graphc.build_graph(spec)
    return tuple(node.shape)  # type: ignore[union-attr]


def load_run_data(spec: Spec, record: RunRecord, data_dir: str | Path | None = None, report=None):
    """The data set exactly as the run loaded it (same split seed, limits and image shape);
    ``report``: an image folder's progress lines."""
    from graphc.runtime.data.load import load_dataset
    from graphc.runtime.data.table import label_columns

    root = data_dir if data_dir is not None else record.data_root
    return load_dataset(
        spec.data,
        root=root,
        limit_train=record.limit_train,
        limit_val=record.limit_val,
        image_shape=input_shape(spec),
        report=report,
        columns=label_columns(spec),
    )
