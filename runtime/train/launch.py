"""Starting, resuming and sequencing training runs: what ``graphc train`` does.

``train_run`` applies the CLI's overrides to a spec, loads the data, builds the
graph against the data's label fields (so a head the data cannot serve is a
SpecError before any training), creates the run directory and calls
``runtime.train.loop.fit``. ``resume_run`` rebuilds a run from its directory and
``last.pt``. ``train_command`` runs every spec x seed one after another.
With ``--nproc N`` both prepare the run directory as usual, then N processes
(runtime/distributed.py) rebuild the run from it with ``train_process`` and train it.
"""

from __future__ import annotations

import platform
import shlex
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from pydantic import ValidationError
from rich.console import Console

import graphc
from graphc.errors import RunError, UsageError, did_you_mean
from graphc.lang.spec import DATASETS, DataSpec, Spec, TrainSpec
from runtime.train import distributed
from runtime.runs import rundir as runs
from graphc.files import atomic_write_bytes, atomic_write_text
from runtime.runs.checkpoint import load_checkpoint, save_checkpoint
from runtime.train.distributed import World
from runtime.device import resolve_device, resolve_precision
from runtime.evaluate import input_shape, load_run_data, read_config, spec_of_run
from runtime.train.loop import Run, build_run, check_run, finish, fit, make_checkpoint, restore_checkpoint


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Overrides:
    """CLI flags that override the spec's [data] and [train] tables (None = keep the spec's),
    and how many processes train each run (None: 1, or a resumed run's own)."""

    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    device: str | None = None
    dataset: str | None = None
    data_dir: Path | None = None
    limit_train: int | None = None
    limit_val: int | None = None
    nproc: int | None = None

    def flags(self) -> dict[str, Any]:
        """``{"--epochs": 2, ...}`` for the flags given (what config.json records)."""
        return {
            "--" + name.replace("_", "-"): str(value) if isinstance(value, Path) else value
            for name, value in self.__dict__.items()
            if value is not None
        }


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
    for name in ("epochs", "batch_size", "device"):
        if getattr(overrides, name) is not None:
            train[name] = getattr(overrides, name)
    if overrides.lr is not None:
        train["optimizer"]["lr"] = overrides.lr
    if seed is not None:
        train["seed"] = seed
    try:
        return spec.model_copy(update={"data": DataSpec.model_validate(data), "train": TrainSpec.model_validate(train)})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"a command-line override is invalid: {where}: {first['msg']} (got {first.get('input')!r}).") from None


def seeds_to_run(spec: Spec, seeds: int | None, seed: int | None) -> list[int]:
    """--seed K -> [K]; --seeds N -> N seeds counting up from the spec's train.seed; neither -> [train.seed]."""
    if seeds is not None and seed is not None:
        raise UsageError("--seeds and --seed exclude each other: --seeds N runs N seeds from the spec's seed, --seed K runs seed K.")
    if seed is not None:
        return [seed]
    if seeds is not None:
        if seeds < 1:
            raise UsageError(f"--seeds must be at least 1, got {seeds}.")
        return [spec.train.seed + i for i in range(seeds)]
    return [spec.train.seed]


# --------------------------------------------------------------------------- starting and resuming runs


@dataclass
class RunResult:
    run_dir: Path
    status: str  # completed | early_stopped | interrupted
    summary: dict

    @property
    def resume_command(self) -> str:
        return f"graphc train --resume {shlex.quote(str(self.run_dir))}"


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
    }


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _describe(run: Run, verb: str, nproc: int = 1) -> str:
    data = run.dataset
    where = str(run.device) if nproc == 1 else f"{nproc} processes ({run.device.type})"
    return (
        f"{verb} {run.graph.name} seed {run.spec.train.seed} on {where} ({run.precision}): "
        f"{data.name} {len(data.train):,} train / {len(data.val):,} val images, "
        f"{_plural(run.epochs, 'epoch')} of batch {run.spec.train.batch_size} -> {run.run_dir}"
    )


def load_data(spec: Spec, limit_train: int | None, limit_val: int | None, cache: dict | None = None):
    """The spec's data set at its input shape (cached per command: seeds of one spec share it)."""
    from runtime.data.load import load_dataset

    key = (spec.data.model_dump_json(), limit_train, limit_val, input_shape(spec))
    if cache is not None and key in cache:
        return cache[key]
    dataset = load_dataset(spec.data, limit_train=limit_train, limit_val=limit_val, image_shape=input_shape(spec))
    if len(dataset.train) < 2:
        raise UsageError(f"the {dataset.name} training split has {len(dataset.train)} image(s); training needs at least 2.")
    if cache is not None:
        cache[key] = dataset
    return dataset


def train_run(
    spec: Spec,
    seed: int,
    overrides: Overrides = Overrides(),
    out: Path = Path("runs"),
    console: Console | None = None,
    quiet: bool = False,
    data_cache: dict | None = None,
) -> RunResult:
    """Train one spec with one seed into a new run directory under ``out``."""
    console = console or Console(stderr=True)
    nproc = 1 if overrides.nproc is None else overrides.nproc
    spec = apply_overrides(spec, overrides, seed)
    device = resolve_device(spec.train.device)  # before the data: a bad device fails fast
    dataset = load_data(spec, overrides.limit_train, overrides.limit_val, data_cache)
    graph = graphc.build_graph(spec, classes=dataset.classes)  # heads vs the data's label fields
    config = {
        "spec": graph.name,
        "spec_sha256": graph.sha256,
        "seed": seed,
        "tasks": list(graph.tasks),
        "classes": {h.attrs["task"]: h.attrs["classes"] for h in graph.heads},
        "dataset": spec.data.dataset,
        "data_root": spec.data.root,
        "data": spec.data.model_dump(mode="json"),
        "train": spec.train.model_dump(mode="json"),
        "overrides": overrides.flags(),
        "limit_train": overrides.limit_train,
        "limit_val": overrides.limit_val,
        "device": str(device),
        "nproc": nproc,  # extension of the run contract: processes that trained it (rank 0 on "device")
        "precision": resolve_precision(spec.train.precision, device),
        "graphc_version": graphc.__version__,
        "started": _now(),
    }
    run = build_run(Path("."), spec, graph, dataset, device, config)
    check_run(run)
    distributed.check(nproc, device, spec.train.batch_size, run.model)
    run.run_dir = runs.new_run_dir(out, graph.name, seed)
    atomic_write_text(run.run_dir / runs.SPEC_COPY, graph.spec_text)
    runs.write_json(run.run_dir / runs.CONFIG, config)
    runs.write_json(run.run_dir / "env.json", environment(device))
    # An epoch-0 last.pt: even a run stopped in its first epoch can be resumed.
    save_checkpoint(run.run_dir / runs.LAST, make_checkpoint(run, {}))
    console.print(_describe(run, "training", nproc), markup=False, highlight=False)
    return train_prepared(run, console, quiet, nproc)


RESUME_FIXED = ("batch_size", "lr", "dataset", "limit_train", "limit_val")


def resume_run(
    run_dir: Path,
    overrides: Overrides = Overrides(),
    console: Console | None = None,
    quiet: bool = False,
) -> RunResult:
    """Continue a run from its last.pt, in the same directory.

    ``overrides.epochs`` sets a new total number of epochs (to train a finished
    run further); ``device`` and ``data_dir`` may change; the rest of the
    recipe is the run's own.
    """
    console = console or Console(stderr=True)
    run_dir = Path(run_dir)
    fixed = [f"--{name.replace('_', '-')}" for name in RESUME_FIXED if getattr(overrides, name) is not None]
    if fixed:
        raise UsageError(
            f"{', '.join(fixed)} cannot change when resuming: the run's recipe is fixed in {run_dir / runs.CONFIG}. "
            "Only --epochs (a new total), --device, --data-dir and --nproc may be given with --resume; start a new run for other settings."
        )
    config = read_config(run_dir)
    last = run_dir / runs.LAST
    if not last.is_file():
        raise RunError(f"{run_dir}: has no {runs.LAST}, so there is nothing to resume from. Start a new run with `graphc train SPEC`.")
    checkpoint = load_checkpoint(last)
    spec = spec_of_run(run_dir, config)
    if checkpoint.get("spec_sha256") != spec.sha256:
        raise RunError(
            f"{run_dir / runs.SPEC_COPY} differs from the spec {last} was trained with; "
            "restore the file or start a new run."
        )
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
    spec = apply_overrides(spec, Overrides(epochs=overrides.epochs, device=overrides.device, data_dir=overrides.data_dir))
    device = resolve_device(spec.train.device)
    nproc = config.get("nproc", 1) if overrides.nproc is None else overrides.nproc
    data_root = str(Path(overrides.data_dir).expanduser().resolve()) if overrides.data_dir else None
    dataset = load_run_data(spec, config, data_root)
    graph = graphc.build_graph(spec, classes=dataset.classes)

    config = dict(config)
    config["train"] = spec.train.model_dump(mode="json")
    config["data"] = spec.data.model_dump(mode="json")
    if data_root:
        config["data_root"] = data_root
    # Extension of the run contract: each resume is recorded (when, from which epoch, with which flags).
    config["resumed"] = [
        *config.get("resumed", []),
        {"at": _now(), "from_epoch": done, "overrides": overrides.flags(), "device": str(device), "nproc": nproc},
    ]

    run = build_run(run_dir, spec, graph, dataset, device, config)
    restore_checkpoint(run, checkpoint, last)
    if overrides.epochs is not None and overrides.epochs > done and run.monitor["stopped"]:
        # Asked explicitly for more epochs after early stopping: give patience a fresh start,
        # or the first epoch without improvement would stop the run again.
        run.monitor["stopped"], run.monitor["stop_wait"] = False, 0
    check_run(run)
    distributed.check(nproc, device, spec.train.batch_size, run.model)
    if done and run.monitor["best_epoch"] == done:
        # last.pt is written before best.pt: a run killed between the two writes of its best
        # epoch has a stale (or no) best.pt, while last.pt holds exactly that best epoch.
        atomic_write_bytes(run_dir / runs.BEST, last.read_bytes())
    runs.truncate_metrics(run_dir, done)  # rows of an epoch that never reached last.pt
    (run_dir / runs.SUMMARY).unlink(missing_ok=True)  # in progress again
    runs.write_json(run_dir / runs.CONFIG, config)
    console.print(_describe(run, f"resuming after epoch {done}:", nproc), markup=False, highlight=False)
    return train_prepared(run, console, quiet, nproc)


def train_prepared(run: Run, console: Console, quiet: bool, nproc: int) -> RunResult:
    """Train a run whose directory is ready (config.json, last.pt): here, or on ``nproc`` processes."""
    if nproc > 1:
        return distributed.spawn(train_process, nproc, run.device, args=(run.run_dir, run.monitor, quiet))
    status = fit(run, console, quiet)
    return RunResult(run.run_dir, status, finish(run, status))


def train_process(world: World, run_dir: Path, monitor: dict, quiet: bool) -> RunResult | None:
    """One of the processes training a run: rebuild the run from its directory and last.pt, as a
    resume does, and train its share. Rank 0 writes the files and prints, and at the end evaluates
    best.pt on the test split (alone: the others have ended) and returns the result."""
    config = read_config(run_dir)
    spec = spec_of_run(run_dir, config)
    dataset = load_run_data(spec, config)
    graph = graphc.build_graph(spec, classes=dataset.classes)
    run = build_run(run_dir, spec, graph, dataset, world.device, config, world)
    restore_checkpoint(run, load_checkpoint(run_dir / runs.LAST), run_dir / runs.LAST)
    run.monitor = monitor  # as the launching process left it (a resume may have given patience a fresh start)
    console = Console(stderr=True, highlight=False, soft_wrap=True, quiet=not world.is_main)
    status = fit(run, console, quiet or not world.is_main)
    return RunResult(run_dir, status, finish(run, status)) if world.is_main else None


def train_command(
    spec_paths: Sequence[Path],
    *,
    seeds: int | None = None,
    seed: int | None = None,
    overrides: Overrides = Overrides(),
    out: Path = Path("runs"),
    resume: Path | None = None,
    quiet: bool = False,
    console: Console | None = None,
    on_result: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    """What ``graphc train`` does: every spec x every seed, one after another (or one resume).

    Stops after an interrupted run. ``on_result`` is called as each run ends.
    """
    console = console or Console(stderr=True)
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
    specs = [graphc.load_spec(path) for path in spec_paths]  # every spec's form is checked before any training
    plan = [(spec, s) for spec in specs for s in seeds_to_run(spec, seeds, seed)]
    if overrides.device is not None:
        resolve_device(overrides.device)  # fail before loading data
    cache: dict = {}
    results = []
    for spec, run_seed in plan:
        result = train_run(spec, run_seed, overrides, out, console, quiet, cache)
        results.append(result)
        if on_result:
            on_result(result)
        if result.status == "interrupted":
            break
    return results
