"""Starting, resuming and sequencing training runs: what ``graphc train`` does.

``train_run`` applies the CLI's overrides to a spec, loads the data, builds the
graph against the data's label fields (so a head the data cannot serve is a
SpecError before any training), creates the run directory and calls
``graphc.runtime.train.loop.fit``. ``resume_run`` rebuilds a run from its directory and
``last.pt``. ``train_command`` runs every spec x seed one after another.
With ``--nproc N`` both prepare the run directory as usual, then N processes
(runtime/train/distributed.py) rebuild the run from it with ``train_process`` and train it.
Under torchrun, rank 0 does all of this and every rank trains each run (``train_job``).
"""

from __future__ import annotations

import contextlib
import functools
import platform
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from rich.console import Console

import graphc
from graphc.errors import RunError, SpecError, UsageError, did_you_mean
from graphc.files import atomic_write_bytes, atomic_write_text
from graphc.ir.build import check_model_size
from graphc.ir.graph import Graph
from graphc.lang.load import resolve_data_root
from graphc.lang.spec import DATASETS, MAX_SEED, PARTIAL_LABELS, DataSpec, HeadNode, Spec, TrainSpec
from graphc.runtime import allocator
from graphc.runtime.data.load import validation_note
from graphc.runtime.device import Execution, decide_execution, resolve_device
from graphc.runtime.runs import rundir as runs
from graphc.runtime.runs.checkpoint import load_checkpoint, save_checkpoint
from graphc.runtime.runs.record import (
    Resume,
    RunRecord,
    input_shape,
    load_run_data,
    memory_format_name,
    read_record,
    spec_of_run,
    write_record,
)
from graphc.runtime.runs.weights import resolve_checkpoint
from graphc.runtime.train import distributed, tensorboard
from graphc.runtime.train.diagnostics import canonical_monitors
from graphc.runtime.train.distributed import World
from graphc.runtime.train.freeze import apply_freeze
from graphc.runtime.train.loop import (
    Run,
    build_run,
    check_labelled,
    check_run,
    finish,
    fit,
    make_checkpoint,
    restore_checkpoint,
)
from graphc.runtime.train.run_lock import identity_lock, run_variant
from graphc.runtime.train.transfer import init_from, transfer_table

# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Overrides:
    """CLI flags that override the spec's [data] and [train] tables (None = keep the spec's),
    how many processes train each run (None: 1, or a resumed run's own), the final test pass
    (``limit_test``: a random N test images; ``no_test``: none), TensorBoard logging, and a
    ``tag`` naming the run's variant in reports (graphc report's row label)."""

    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    device: str | None = None
    dataset: str | None = None
    data_dir: Path | None = None
    limit_train: int | None = None
    limit_val: int | None = None
    nproc: int | None = None
    limit_test: int | None = None
    no_test: bool | None = None
    tensorboard: bool | None = None
    tag: str | None = None
    compile: bool | None = None  # --compile: [train] compile = true
    diagnostics: bool | None = None  # --diagnostics: [train] diagnostics = true
    init_from: Path | None = None  # --init-from: [train] init_from
    init_map: tuple[str, ...] | None = None  # --init-map NEW=OLD ...: added to [train] init_map
    freeze: tuple[str, ...] | None = None  # --freeze NODE ...: trainable = false on those nodes
    unfreeze_after: int | None = None  # --unfreeze-after N: unfreeze_after = N on every frozen node

    def flags(self) -> dict[str, Any]:
        """``{"--epochs": 2, ...}`` for the flags given (what config.json records)."""
        return {
            # a list flag as the command line takes it (--freeze a,b): sweeps pass these on to their runs
            "--" + name.replace("_", "-"): str(value)
            if isinstance(value, Path)
            else ",".join(value)
            if isinstance(value, tuple)
            else value
            for name, value in self.__dict__.items()
            if value is not None and value is not False
        }


TAG = re.compile(r"^[A-Za-z0-9_.=+,-]{1,80}$")


def check_overrides(overrides: Overrides) -> None:
    """What the flags say among themselves, before any data is loaded."""
    if overrides.tag is not None and not TAG.match(overrides.tag):
        raise UsageError(
            f"--tag {overrides.tag!r}: a tag names the run's variant in graphc report; use 1 to 80 letters, "
            "digits and _ . = + , - (e.g. --tag lr0.01-long)."
        )
    if overrides.no_test and overrides.limit_test is not None:
        raise UsageError(
            "--no-test and --limit-test exclude each other: --no-test skips the test pass, --limit-test N shortens it."
        )
    if overrides.limit_test is not None and overrides.limit_test < 1:
        raise UsageError(f"--limit-test must be a positive number of images, got {overrides.limit_test}.")


def apply_overrides(spec: Spec, overrides: Overrides, seed: int | None = None) -> Spec:
    """The spec with the CLI's data/train overrides (and the run's seed) applied and validated."""
    data = spec.data.model_dump()
    if overrides.dataset is not None:
        if overrides.dataset not in DATASETS:
            raise UsageError(
                f"--dataset: unknown data set '{overrides.dataset}'; expected one of {', '.join(DATASETS)}. "
                + (did_you_mean(overrides.dataset, DATASETS) or "")
            )
        data["dataset"] = overrides.dataset
    if overrides.data_dir is not None:
        data["root"] = str(Path(overrides.data_dir).expanduser().resolve())
    train = spec.train.model_dump()
    for name in ("epochs", "batch_size", "device", "compile"):
        if getattr(overrides, name) is not None:
            train[name] = getattr(overrides, name)
    if overrides.tensorboard:
        train["tensorboard"] = True
    if overrides.diagnostics:
        train["diagnostics"] = True
    if overrides.lr is not None:
        train["optimizer"]["lr"] = overrides.lr
    if seed is not None:
        train["seed"] = seed
    if overrides.init_from is not None:
        train["init_from"] = str(Path(overrides.init_from).expanduser().resolve())
    if overrides.init_map:
        train["init_map"] = {**(train["init_map"] or {}), **_init_map(overrides.init_map)}
    try:
        spec = spec.model_copy(update={"data": DataSpec.model_validate(data), "train": TrainSpec.model_validate(train)})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsageError(
            f"a command-line override is invalid: {where}: {first['msg']} (got {first.get('input')!r})."
        ) from None
    if spec.train.init_map and not spec.train.init_from:
        raise UsageError(
            "init_map (or --init-map) says which source node loads each node, but there is no source: "
            "give --init-from RUN_DIR or [train] init_from."
        )
    return _freeze_overrides(spec, overrides)


def _init_map(pairs: Sequence[str]) -> dict[str, str]:
    """--init-map NEW=OLD ... as a table."""
    table = {}
    for pair in pairs:
        new, sep, old = pair.partition("=")
        if not sep or not new.strip() or not old.strip():
            raise UsageError(
                f"--init-map {pair!r}: expected NEW=OLD (a node of this spec = a node of the source run), "
                "e.g. --init-map trunk=shared_trunk."
            )
        table[new.strip()] = old.strip()
    return table


def _freeze_overrides(spec: Spec, overrides: Overrides) -> Spec:
    """--freeze NODE ... and --unfreeze-after N applied to the spec's nodes (runtime/train/freeze.py)."""
    plan = {name: overrides.unfreeze_after for name in overrides.freeze or ()}
    if overrides.unfreeze_after is not None:
        frozen = [n.name for n in spec.nodes if getattr(n, "trainable", True) is False] + list(plan)
        if not frozen:
            raise UsageError(
                "--unfreeze-after N unfreezes frozen nodes, but none is frozen: "
                "add --freeze NODE ... or trainable = false in the spec."
            )
        plan = {name: overrides.unfreeze_after for name in frozen}
    return apply_freeze(spec, plan)


def seeds_to_run(spec: Spec, seeds: int | None, seed: int | None) -> list[int]:
    """--seed K -> [K]; --seeds N -> N seeds counting up from the spec's train.seed; neither -> [train.seed]."""
    if seeds is not None and seed is not None:
        raise UsageError(
            "--seeds and --seed exclude each other: --seeds N runs N seeds from the spec's seed, --seed K runs seed K."
        )
    if seed is not None:
        return [seed]
    if seeds is not None:
        if seeds < 1:
            raise UsageError(f"--seeds must be at least 1, got {seeds}.")
        if spec.train.seed + seeds - 1 > MAX_SEED:  # every seed in the range the spec's own seed has
            raise UsageError(
                f"--seeds {seeds} counts up from spec '{spec.name}''s train.seed {spec.train.seed} to "
                f"{spec.train.seed + seeds - 1}, past the largest seed {MAX_SEED:,} (seeds are 0 to 2**32 - 1); "
                "give fewer seeds or a lower train.seed."
            )
        return [spec.train.seed + i for i in range(seeds)]
    return [spec.train.seed]


# --------------------------------------------------------------------------- starting and resuming runs


@dataclass
class RunResult:
    run_dir: Path
    status: str  # completed | early_stopped | interrupted | diverged
    summary: dict

    @property
    def resume_command(self) -> str:
        if distributed.current_job() is not None:
            return f"torchrun <the same options> -m graphc train --resume {shlex.quote(str(self.run_dir))}"
        return f"graphc train --resume {shlex.quote(str(self.run_dir))}"

    @property
    def problem(self) -> str | None:
        """Why a diverged run stopped, where, what it kept and what to try (the CLI prints it, exit 1)."""
        info = self.summary.get("diverged")
        if self.status != "diverged" or not info:
            return None
        if info.get("step"):
            where = f"the training loss became {info['loss']} at epoch {info['epoch']}, step {info['step']} of {info['steps']}"
        else:
            where = f"the validation loss of epoch {info['epoch']} is {info['loss']}"
        kept = self.summary.get("epochs_completed", 0)
        kept = f"epoch {kept}, the last with a finite loss" if kept else "the initial weights (epoch 0)"
        lr = info.get("lr")
        hint = f"(this run's is {lr:g}; e.g. --lr {lr / 10:g})" if isinstance(lr, (int, float)) else "(--lr)"
        return (
            f"run {self.run_dir} diverged: {where}. Training stopped; {runs.LAST} keeps {kept}, and nothing of "
            f"epoch {info['epoch']} was saved. Hint: train again with a lower learning rate {hint}."
        )


def environment(device: torch.device) -> dict:
    """env.json: versions and the device, so a result can be traced to where it was made."""
    import torchvision

    name = platform.processor() or platform.machine()
    try:  # the CPU's model name says more than "x86_64"
        cpuinfo = Path("/proc/cpuinfo").read_text()
        name = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "mps":
        name = "Apple MPS"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "graphc": graphc.__version__,
        "platform": platform.platform(),
        "device_name": name,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "host_allocator": allocator.state(),
    }


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _describe(run: Run, verb: str) -> str:
    """The run's header line: where and how it trains (its execution: the training processes',
    see home_device), on which data, into which directory."""
    data, execution = run.dataset, run.execution
    device = torch.device(execution.device) if execution.device else run.device
    where = str(device) if execution.nproc == 1 else f"{execution.nproc} processes ({device.type})"
    how = execution.describe()
    if execution.compile:
        how += ", torch.compile"
    return (
        f"{verb} {run.graph.name} seed {run.spec.train.seed} on {where} in {how}: "
        f"{data.name} {len(data.train):,} train / {len(data.val):,} val images, "
        f"{_plural(run.epochs, 'epoch')} of batch {run.spec.train.batch_size} -> {run.run_dir}"
    )


def load_data(
    spec: Spec,
    limit_train: int | None,
    limit_val: int | None,
    cache: dict | None = None,
    report: Callable[[str], None] | None = None,
):
    """The spec's data set at its input shape (cached per command: seeds of one spec share it);
    ``report``: an image folder's progress lines."""
    from graphc.lang.load import locate
    from graphc.runtime.data.load import load_dataset
    from graphc.runtime.data.table import label_columns

    # A label table's columns are read as the spec's heads say (two specs on one table may read it apart).
    columns = label_columns(spec)
    key = (spec.data.model_dump_json(), limit_train, limit_val, input_shape(spec), repr(columns))
    if cache is not None and key in cache:
        return cache[key]
    try:
        dataset = load_dataset(
            spec.data,
            limit_train=limit_train,
            limit_val=limit_val,
            image_shape=input_shape(spec),
            source=spec.source,
            report=report,
            columns=columns,
        )
    except SpecError as exc:  # the data's checks name a field: say in which file and line
        raise locate(exc, spec) from None
    if len(dataset.train) < 2:
        raise UsageError(
            f"the {dataset.name} training split has {len(dataset.train)} image(s); training needs at least 2."
        )
    if cache is not None:
        cache[key] = dataset
    return dataset


def graph_before_data(spec: Spec, checked: Graph | None = None) -> Graph | None:
    """A run's graph, built before its data loads - so that the loader never allocates images for
    a model too large to build - where the spec's [data] table knows every class count (the data
    then confirms them: graph_of_data); ``checked``: this spec's graph as train_command built it,
    taken when the run's tables are its (the first seed). Else None, after a size check that
    stops at the first count only the data knows (an image folder's)."""
    if checked is not None and checked.train == spec.train and checked.data == spec.data:
        return checked
    if counts_known(spec):
        return graphc.build_graph(spec)
    check_model_size(spec)
    return None


def counts_known(spec: Spec) -> bool:
    """Whether the spec alone gives every head's outputs, so that its graph can be built before its data:
    the [data] table knows every class count, or (a label table, CelebA, whose columns only their files
    know) every head says its own (listed classes or labels, binary, regression)."""
    if spec.data.dataset in PARTIAL_LABELS:
        return all(node.output_units is not None for node in spec.nodes if isinstance(node, HeadNode))
    return None not in spec.data.known_classes().values()


def graph_of_data(spec: Spec, dataset, graph: Graph | None) -> Graph:
    """A run's graph against its data's label fields (a head the data cannot serve is a SpecError
    before any training): ``graph`` (graph_before_data's) when the data has the class counts it was
    built with, else built now - the one build of a run on an image folder."""
    if graph is not None and dict(dataset.classes) == spec.data.known_classes() and not dataset.types:
        return graph
    return graphc.build_graph(spec, classes=dataset.classes, types=dataset.types)


def train_run(
    spec: Spec,
    seed: int,
    overrides: Overrides = Overrides(),
    out: Path = Path("runs"),
    console: Console | None = None,
    quiet: bool = False,
    data_cache: dict | None = None,
    checked: Graph | None = None,
) -> RunResult:
    """Train one spec with one seed into a new run directory under ``out``, holding the run identity's
    lock from right before the directory is made to the run's end (runtime/train/run_lock.py: one
    trainer per spec, seed and variant at a time; another process training it is a RunError).
    ``checked``: the spec's graph as train_command built it, overrides applied (graph_before_data)."""
    with contextlib.ExitStack() as held:
        return _train_run(spec, seed, overrides, out, console, quiet, data_cache, held, checked)


def _train_run(
    spec: Spec,
    seed: int,
    overrides: Overrides,
    out: Path,
    console: Console | None,
    quiet: bool,
    data_cache: dict | None,
    held: contextlib.ExitStack,
    checked: Graph | None = None,
) -> RunResult:
    console = console or Console(stderr=True)
    nproc = processes(overrides.nproc, 1)
    check_overrides(overrides)
    spec = apply_overrides(spec, overrides, seed)
    spec, note = resolve_data_root(spec)  # a relative [data] root: from the spec's folder
    device = resolve_device(spec.train.device)  # before the data: a bad device fails fast
    if spec.train.tensorboard:
        tensorboard.check_available()
    graph = graph_before_data(spec, checked)  # the run's one IR build, before its data where it can be
    for line in (note, validation_note(overrides.limit_train, overrides.limit_val)):
        if line:
            console.print(line, markup=False, highlight=False)
    say = functools.partial(console.print, markup=False, highlight=False)
    dataset = load_data(spec, overrides.limit_train, overrides.limit_val, data_cache, report=say)
    graph = graph_of_data(spec, dataset, graph)  # heads vs the data's label fields
    check_labelled(dataset, graph)
    started = _now()
    model = graphc.compile_graph(graph, seed=spec.train.seed)
    # How the run executes, decided once: recorded below, the training processes are given it.
    execution = decide_execution(spec.train, device, model, nproc, distributed.threads_per_process(nproc))
    run = build_run(Path("."), spec, graph, dataset, home_device(device, nproc), execution=execution, model=model)
    provenance = None
    # Transfer: weights from another run, before the epoch-0 last.pt (runtime/train/transfer.py).
    if spec.train.init_from:
        transfer = init_from(run.model, graph, Path(spec.train.init_from), spec.train.init_map)
        console.print(transfer_table(transfer))
        provenance = transfer.to_config()  # the run's provenance; a resume never reads the source again
    run.record = RunRecord(
        spec=graph.name,
        spec_sha256=graph.sha256,
        seed=seed,
        tasks=list(graph.tasks),
        classes={h.attrs["task"]: h.attrs["classes"] for h in graph.heads},
        **RunRecord.task_fields(run.heads),
        dataset=spec.data.dataset,
        data_root=spec.data.root,
        data=spec.data,
        train=spec.train,
        overrides=overrides.flags(),
        limit_train=overrides.limit_train,
        limit_val=overrides.limit_val,
        limit_test=overrides.limit_test,  # the final test pass (loop.finish): a random limit_test images,
        no_test=bool(overrides.no_test),  # or none
        tag=overrides.tag,  # the variant's name in graphc report (None: labelled by its settings)
        graphc_version=graphc.__version__,
        started=started,
        **RunRecord.execution_fields(execution),
        frozen=dict(run.frozen),  # frozen nodes -> unfreeze_after (a resume applies it again)
        init_from=provenance,
    )
    check_run(run)
    distributed.check(nproc, device, spec.train.batch_size, run.model, spec.train.sync_batchnorm)
    held.enter_context(identity_lock(out, graph.name, run_variant(spec, overrides), seed))  # until the run ends
    try:
        run.run_dir = runs.new_run_dir(out, graph.name, seed)
    except OSError as exc:
        raise runs.write_error(Path(out) / graph.name, exc) from None
    try:  # the first files get the paragraph later ones get (disk full, file too large, read-only)
        atomic_write_text(run.run_dir / runs.SPEC_COPY, graph.spec_text)
        write_record(run.run_dir, run.record)
        runs.write_json(run.run_dir / "env.json", environment(device))
    except OSError as exc:
        raise runs.write_error(run.run_dir, exc) from None
    with runs.training_lock(run.run_dir):  # a --resume of this run while it trains is refused
        # An epoch-0 last.pt: even a run stopped in its first epoch can be resumed.
        try:
            save_checkpoint(run.run_dir / runs.LAST, make_checkpoint(run, {}))
        except OSError as exc:
            raise runs.write_error(run.run_dir, exc) from None
        console.print(_describe(run, "training"), markup=False, highlight=False)
        return train_prepared(run, console, quiet, nproc, device)


RESUME_FIXED = (
    "batch_size",
    "lr",
    "dataset",
    "limit_train",
    "limit_val",
    "limit_test",
    "no_test",
    "tag",
    "init_from",
    "init_map",
    "freeze",
    "unfreeze_after",
)


def resume_run(
    run_dir: Path,
    overrides: Overrides = Overrides(),
    console: Console | None = None,
    quiet: bool = False,
) -> RunResult:
    """Continue a run from its last.pt, in the same directory, holding the run's lock (a second
    trainer is refused).

    ``overrides.epochs`` sets a new total number of epochs (to train a finished run further);
    ``device``, ``data_dir``, ``nproc``, ``tensorboard``, ``compile`` and ``diagnostics`` may
    change; the rest of the recipe is the run's own (RESUME_FIXED).
    """
    with runs.training_lock(run_dir):
        return _resume_run(Path(run_dir), overrides, console or Console(stderr=True), quiet)


def _resume_run(run_dir: Path, overrides: Overrides, console: Console, quiet: bool) -> RunResult:
    fixed = [f"--{name.replace('_', '-')}" for name in RESUME_FIXED if getattr(overrides, name) is not None]
    if fixed:
        raise UsageError(
            f"{', '.join(fixed)} cannot change when resuming: the run's recipe is fixed in {run_dir / runs.CONFIG}. "
            "Only --epochs (a new total), --device, --data-dir, --nproc, --tensorboard, --compile and --diagnostics "
            "may be given with --resume; "
            "start a new run for other settings."
        )
    record = read_record(run_dir)
    last = run_dir / runs.LAST
    if not last.is_file():
        raise RunError(
            f"{run_dir}: has no {runs.LAST}, so there is nothing to resume from. Start a new run with `graphc train SPEC`."
        )
    checkpoint = load_checkpoint(last)
    spec = spec_of_run(run_dir, record)
    if checkpoint.get("spec_sha256") != spec.sha256:
        raise RunError(
            f"{run_dir / runs.SPEC_COPY} differs from the spec {last} was trained with; "
            "restore the file or start a new run."
        )
    spec = canonical_monitors(spec)  # a pair's cosine watched under graphc 0.3's head-order name
    done = int(checkpoint.get("epoch", 0))
    previous = runs.read_json(run_dir / runs.SUMMARY) if (run_dir / runs.SUMMARY).is_file() else None
    finished = previous is not None and previous.get("status") in ("completed", "early_stopped")
    epochs = overrides.epochs or spec.train.epochs
    if finished and (overrides.epochs is None or epochs <= done):
        raise UsageError(
            f"{run_dir}: the run is already {previous['status'].replace('_', ' ')} after {done} epochs; "
            f"pass --epochs N with N > {done} to train it further."
        )
    if overrides.epochs is not None and overrides.epochs < done:
        raise UsageError(f"--epochs {overrides.epochs} is fewer than the {done} epochs {last} has already completed.")
    spec = apply_overrides(
        spec,
        Overrides(
            epochs=overrides.epochs,
            device=overrides.device,
            data_dir=overrides.data_dir,
            tensorboard=overrides.tensorboard,
            compile=overrides.compile,
            diagnostics=overrides.diagnostics,
        ),
    )
    spec = apply_freeze(spec, record.frozen)  # --freeze of the run's start
    device = resolve_device(spec.train.device)
    if spec.train.tensorboard:
        tensorboard.check_available()
    nproc = processes(overrides.nproc, record.nproc)
    data_root = str(Path(overrides.data_dir).expanduser().resolve()) if overrides.data_dir else None
    say = functools.partial(console.print, markup=False, highlight=False)  # an image folder's progress lines
    dataset = load_run_data(spec, record, data_root, report=say)
    graph = graphc.build_graph(spec, classes=dataset.classes, types=dataset.types)  # the session's one IR build
    model = graphc.compile_graph(graph, seed=spec.train.seed)
    # The session's execution, decided once (the device may have changed): in its resume entry.
    execution = decide_execution(spec.train, device, model, nproc, distributed.threads_per_process(nproc))
    # Each resume is recorded: when, from which epoch, with which flags, where and how.
    session = Resume(
        at=_now(),
        from_epoch=done,
        overrides=overrides.flags(),
        device=str(device),
        nproc=nproc,
        precision=execution.precision,
        memory_format=memory_format_name(execution),
        threads=execution.threads,
        torch_version=torch.__version__,
    )
    record = record.resumed_with(session, spec.data, spec.train, data_root)

    run = build_run(run_dir, spec, graph, dataset, home_device(device, nproc), record, execution=execution, model=model)
    restore_checkpoint(run, checkpoint, last)  # with several processes: into the CPU (the workers load their own)
    if overrides.epochs is not None and overrides.epochs > done and run.monitor["stopped"]:
        # Asked explicitly for more epochs after early stopping: give patience a fresh start,
        # or the first epoch without improvement would stop the run again.
        run.monitor["stopped"], run.monitor["stop_wait"] = False, 0
    check_run(run)
    distributed.check(nproc, device, spec.train.batch_size, run.model, spec.train.sync_batchnorm)
    try:  # a failed write here is worded as every run file's is (disk full, file too large, read-only)
        if done and run.monitor["best_epoch"] == done:
            # last.pt is written before best.pt: a run killed between the two writes of its best
            # epoch has a stale (or no) best.pt, while last.pt holds exactly that best epoch.
            atomic_write_bytes(run_dir / runs.BEST, last.read_bytes())
        runs.truncate_metrics(run_dir, done)  # rows of an epoch that never reached last.pt
        (run_dir / runs.SUMMARY).unlink(missing_ok=True)  # in progress again
        write_record(run_dir, record)
    except OSError as exc:
        raise runs.write_error(run_dir, exc) from None
    console.print(_describe(run, f"resuming after epoch {done}:"), markup=False, highlight=False)
    return train_prepared(run, console, quiet, nproc, device)


def processes(nproc: int | None, default: int) -> int:
    """How many processes train a run: torchrun's job's, else --nproc, else ``default``."""
    job = distributed.current_job()
    if job is not None:
        return job.size
    return default if nproc is None else nproc


def home_device(device: torch.device, nproc: int) -> torch.device:
    """Where this process builds a run that trains on ``device``: there, or on the CPU when ``nproc``
    worker processes train it. This process then only prepares the run directory; a model and Adam
    state of its own on cuda:0 would hold GPU memory and a CUDA context there for the whole run
    (and keep rank 0 from starting on an exclusive-process GPU)."""
    return device if nproc == 1 else torch.device("cpu")


def train_prepared(
    run: Run, console: Console, quiet: bool, nproc: int, device: torch.device | None = None
) -> RunResult:
    """Train a run whose directory is ready (config.json, last.pt): here, or on ``nproc`` processes
    on ``device`` (default: the run's; rank r on cuda:i+r for cuda:i)."""
    if nproc > 1:
        job = distributed.current_job()
        if job is not None:  # torchrun's processes: every rank trains the run with this one (rank 0)
            try:
                return job.step(train_process, device or run.device, _process_args(run, quiet))
            except distributed.LostPeers as exc:
                resume = RunResult(run.run_dir, "failed", {}).resume_command
                raise RunError(
                    f"{exc} {run.run_dir / runs.LAST} holds the last completed epoch; resume with:\n  {resume}"
                ) from None
        return distributed.spawn(
            train_process, nproc, device or run.device, args=_process_args(run, quiet), threads=run.execution.threads
        )
    status = fit(run, console, quiet)
    return RunResult(run.run_dir, status, finish_run(run, status))


def _process_args(run: Run, quiet: bool) -> tuple:
    """What the training processes are given (train_process): the run's directory, its monitor and
    the execution the launcher decided. (Each rebuilds the spec and graph from the directory: an IR
    holds read-only mappings, which do not cross to another process.)"""
    return (run.run_dir, run.monitor, quiet, run.execution)


def train_process(
    world: World, run_dir: Path, monitor: dict, quiet: bool, execution: Execution | None = None
) -> RunResult | None:
    """One of the processes training a run: rebuild the run from its directory and last.pt, as a
    resume does, and train its share. Rank 0 writes the files and prints, and at the end evaluates
    best.pt on the test split (alone: the others have ended) and returns the result.

    ``execution``: how the run executes, as the launcher decided it (default: as its record says)."""
    record = read_record(run_dir)
    spec = apply_freeze(spec_of_run(run_dir, record), record.frozen)
    dataset = load_run_data(spec, record)
    graph = graphc.build_graph(spec, classes=dataset.classes, types=dataset.types)  # this process's one IR build
    run = build_run(run_dir, spec, graph, dataset, world.device, record, world, execution=execution or record.execution)
    restore_checkpoint(run, load_checkpoint(run_dir / runs.LAST), run_dir / runs.LAST)
    run.monitor = monitor  # as the launching process left it (a resume may have given patience a fresh start)
    console = Console(stderr=True, highlight=False, soft_wrap=True, quiet=not world.is_main)
    status = fit(run, console, quiet if world.is_main else True)  # quiet: True or a progress mode (progress.py)
    return RunResult(run_dir, status, finish_run(run, status)) if world.is_main else None


def finish_run(run: Run, status: str) -> dict:
    """loop.finish (the test pass, summary.json), a failed write worded as every run file's is."""
    try:
        return finish(run, status)
    except OSError as exc:
        raise runs.write_error(run.run_dir, exc) from None


def train_command(
    spec_paths: Sequence[Path],
    *,
    seeds: int | None = None,
    seed: int | None = None,
    overrides: Overrides = Overrides(),
    out: Path = Path("runs"),
    resume: Path | None = None,
    quiet: bool | str = False,
    console: Console | None = None,
    on_result: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    """What ``graphc train`` does: every spec x every seed, one after another (or one resume).

    ``quiet``: True for only the per-epoch lines, or a progress mode (auto, bar, lines, none: see
    runtime/train/progress.py), handed down to ``loop.fit`` as it is.
    Stops after an interrupted run. ``on_result`` is called as each run ends.
    Under torchrun, rank 0 does all this and the other ranks train each run with it (``train_job``).
    """
    launched = distributed.launched()
    if launched is not None and launched.size > 1 and distributed.current_job() is None:
        again = functools.partial(
            train_command,
            spec_paths,
            seeds=seeds,
            seed=seed,
            overrides=overrides,
            out=out,
            resume=resume,
            quiet=quiet,
            console=console,
            on_result=on_result,
        )
        return train_job(launched, again)
    console = console or Console(stderr=True)
    if launched is not None and overrides.nproc is not None:
        raise UsageError(
            f"--nproc starts processes on this machine, but this one is process {launched.rank} of {launched.size} "
            "that torchrun started: under torchrun the processes are torchrun's (--nnodes x --nproc-per-node). "
            "Drop --nproc."
        )
    check_overrides(overrides)
    if overrides.nproc is not None:
        distributed.check_count(overrides.nproc)  # before loading any data
    if resume is not None:
        if spec_paths:
            raise UsageError("--resume RUN_DIR continues a run from its own spec.toml; give no SPEC files with it.")
        if seeds is not None or seed is not None:
            raise UsageError("--seed/--seeds cannot be given with --resume: the run keeps its seed.")
        results = [resume_run(resume, overrides, console, quiet)]
        if on_result:
            on_result(results[0])
        return results
    if not spec_paths:
        raise UsageError("give at least one SPEC file to train (e.g. specs/shared_conv.toml), or --resume RUN_DIR.")
    runs.check_output_root(out)  # before any data loads
    specs = [graphc.load_spec(path) for path in spec_paths]  # every spec's form is checked before any training
    checked: list[Graph | None] = []
    for spec in specs:  # and its meaning (graph, class counts, watched metrics) where that needs no data, as check does
        resolved, _ = resolve_data_root(apply_overrides(spec, overrides))  # as train_run resolves it
        # The graph a run of the spec's own seed builds (train_run takes it rather than build it again).
        checked.append(graphc.build_graph(resolved) if counts_known(resolved) else None)
        if resolved.train.init_from:  # a missing source fails before any data loads (transfer.py reads it later)
            resolve_checkpoint(Path(resolved.train.init_from))
    plan = [(spec, graph, s) for spec, graph in zip(specs, checked) for s in seeds_to_run(spec, seeds, seed)]
    if overrides.device is not None:
        resolve_device(overrides.device)  # fail before loading data
    cache: dict = {}
    results = []
    for spec, graph, run_seed in plan:
        result = train_run(spec, run_seed, overrides, out, console, quiet, cache, graph)
        results.append(result)
        if on_result:
            on_result(result)
        if result.status == "interrupted":
            break
    return results


def train_job(launched: distributed.Launched, command: Callable[[], list[RunResult]]) -> list[RunResult]:
    """``graphc train`` as one of a torchrun job's processes: join the job; rank 0 runs ``command``
    (every spec x seed, or the resume, one run after another) and the other ranks train each run with
    it, then return no results. A command rank 0 ends with an error before or between runs ends the
    others with its exit code (they print nothing: rank 0 has said why)."""
    job = distributed.join(launched)
    try:
        if launched.rank > 0:
            code = job.follow()
            if code:
                raise SystemExit(code)
            return []
        try:
            results = command()
        except KeyboardInterrupt:  # the others have ended on their own SIGINT (distributed.join)
            raise
        except BaseException as exc:
            with contextlib.suppress(Exception):  # the others may be gone already: keep rank 0's own error
                job.end(2 if isinstance(exc, (SpecError, UsageError)) else 1)
            raise
        if not (results and results[-1].status == "interrupted"):  # if so, the others have ended on Ctrl-C
            job.end(0)
        return results
    finally:
        distributed.leave()
