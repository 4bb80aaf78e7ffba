"""Sweeps: many independent runs (specs x seeds) trained K at a time, each in its own process.

``graphc train SPECS --seeds N --jobs K`` plans one run per spec x seed, then keeps K child
processes busy, each running ``python -m graphc train SPEC --seed S ...`` with the sweep's
flags (or ``--resume RUN_DIR``). On CUDA each job gets its GPU(s) through
``CUDA_VISIBLE_DEVICES`` (``--jobs-per-gpu M`` puts M jobs on one); every job gets an equal
share of this machine's CPU cores as its thread count (``OMP_NUM_THREADS``, which torch reads
at start), so K jobs do not oversubscribe the cores.

A run's identity is the report's: its variant (runtime/report/build.py: spec name and text
hash, the resolved [train] and [data] tables, data limits, test pass, tag) and its seed. Before
starting anything the sweep looks for runs of the same identity under ``--out``: a finished
one is skipped, an interrupted one (no summary.json, or status "interrupted") is resumed, a
diverged one is reported again rather than repeated (it would diverge the same way). So running
the same command again completes a sweep, and ``graphc sweep plan`` prints the commands a job
queue can run one by one with the same effect (each is itself a one-run sweep).

Progress is read from each run's metrics.jsonl as the children write it, never from their
output; their output goes to ``OUT/sweep-logs/<spec>-seed<S>.log``, and a failed job's error
message is taken from there. Ctrl-C sends one SIGINT to every running child (they are in their
own sessions, so the terminal's reaches only this process): each saves its last completed epoch
and ends, as ``graphc train`` does alone; SIGTERM or SIGHUP to the sweep is passed on as that signal,
which each child handles as Ctrl-C (runtime/train/signals.py), and the sweep exits 143 or 129.
Before it starts a run the sweep takes the run identity's lock (runtime/train/run_lock.py): a run
another process is training is skipped with a message, so two identical sweeps make one run folder.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.live import Live
from rich.table import Table

import graphc
from graphc.errors import RunError, UsageError, printable
from graphc.files import control_characters, open_append
from graphc.lang.spec import Spec
from graphc.runtime.collapse import read_collapsed
from graphc.runtime.report.build import Run as ReportRun
from graphc.runtime.report.build import Variant, load_run
from graphc.runtime.runs import rundir as runs
from graphc.runtime.train import distributed, run_lock, signals
from graphc.runtime.train.launch import RESUME_FIXED, Overrides, apply_overrides, check_overrides, seeds_to_run

LOGS = "sweep-logs"  # under --out: one log per run (no config.json there, so graphc report ignores it)
FINISHED = ("completed", "early_stopped")
REFRESH_S = 1.0  # how often the children's metrics files are read
STOP_WAIT_S = 120.0  # after Ctrl-C: how long the children get to save their epoch before a second Ctrl-C is needed
# graphc train's exits after Ctrl-C (130), SIGTERM (143) and SIGHUP (129): its last completed epoch saved
INTERRUPTED_CODES = (130, *(128 + s for s in signals.STOP_SIGNALS))


# --------------------------------------------------------------------------- planning


@dataclass
class Job:
    """One run of the sweep: what to train, and what became of it."""

    spec_arg: str  # the SPEC argument as given (a file or a built-in name): the child gets the same
    name: str  # the spec's name (runs/<name>/)
    seed: int
    variant: Variant
    watch: str  # the metric shown in the progress view: the spec's train.select metric
    epochs: int
    on_cuda: bool
    action: str  # new | resume | done | diverged (the last two are not run again)
    run_dir: Path | None = None
    # while and after it runs
    state: str = "queued"  # queued | running | completed | early_stopped | interrupted | diverged | failed | skipped
    epoch: int = 0
    metric: float | None = None
    images_per_s: float | None = None
    error: str | None = None
    log: Path | None = None
    gpus: str = ""  # its CUDA_VISIBLE_DEVICES while it runs ("" on the CPU)
    collapsed: dict = field(default_factory=dict)  # its summary.json's "collapsed" heads (runtime/collapse.py)
    started: float = 0.0
    process: subprocess.Popen | None = field(default=None, repr=False)
    lock: run_lock.IdentityLock | None = field(default=None, repr=False)  # held from its start to its end

    @property
    def label(self) -> str:
        return f"{self.name} seed {self.seed}"

    @property
    def failed(self) -> bool:
        return self.state in ("failed", "diverged")


def existing_runs(out: Path) -> dict[tuple[Variant, int], list[ReportRun]]:
    """The readable runs under ``out`` by (planned variant, seed); damaged ones are left to graphc report."""
    found: dict[tuple[Variant, int], list[ReportRun]] = {}
    for path in runs.find_runs([out]) if Path(out).is_dir() else []:
        try:
            run = load_run(path)
        except RunError:
            continue
        found.setdefault((run.variant.planned(), run.seed), []).append(run)
    return found


def _action(same: list[ReportRun]) -> tuple[str, Path | None]:
    """What to do about a planned run, given the runs of its identity that exist already."""
    if not same:
        return "new", None
    # as graphc report counts duplicates: finished before unfinished, then the latest start
    run = max(same, key=lambda r: (not r.in_progress and r.status != "interrupted", r.started, r.path.name))
    if run.status in FINISHED:
        return "done", run.path
    if run.status == "diverged":
        return "diverged", run.path
    if (run.path / runs.LAST).is_file():
        return "resume", run.path
    return "new", None  # killed before its first checkpoint: nothing to resume from


def _on_cuda(spec: Spec) -> bool:
    """Whether the run trains on CUDA, without initialising CUDA in this process."""
    name = spec.train.device.strip().lower()
    if name.startswith("cuda:"):
        raise UsageError(
            f"--device {name}: a sweep gives each job its own GPU(s) through CUDA_VISIBLE_DEVICES, so a run cannot "
            "name one; use --device cuda (or auto), and set CUDA_VISIBLE_DEVICES to choose which GPUs the sweep uses."
        )
    return name == "cuda" or (name == "auto" and torch.cuda.is_available())


def plan_sweep(
    spec_paths: Sequence[Path | str],
    *,
    seeds: int | None = None,
    seed: int | None = None,
    overrides: Overrides = Overrides(),
    out: Path = Path("runs"),
) -> list[Job]:
    """Every spec x seed as a Job, each matched against the runs already under ``out``.
    Checks what ``graphc train`` checks before training (every spec, the flags) first."""
    check_overrides(overrides)
    if not spec_paths:
        raise UsageError("give at least one SPEC file to sweep (e.g. specs/*.toml).")
    for spec_arg in spec_paths:
        refuse_control_characters(str(spec_arg), "the SPEC file name")
    refuse_control_characters(str(out), "--out")  # (a tag is letters, digits and _.=+,- : check_overrides)
    runs.check_output_root(out)
    before = existing_runs(out)
    jobs, planned = [], set()
    for spec_arg in spec_paths:
        spec = graphc.load_spec(spec_arg)
        resolved = apply_overrides(spec, overrides)
        if None not in resolved.data.known_classes().values():
            graphc.build_graph(resolved)  # the graph's meaning, where it needs no data (as train does)
        on_cuda = _on_cuda(resolved)
        for run_seed in seeds_to_run(spec, seeds, seed):
            run_spec = apply_overrides(spec, overrides, run_seed)
            variant = run_lock.run_variant(run_spec, overrides)  # what graphc report will call it
            if (variant, run_seed) in planned:  # a spec given twice: one run of each identity
                continue
            planned.add((variant, run_seed))
            action, run_dir = _action(before.get((variant, run_seed), []))
            jobs.append(
                Job(
                    str(spec_arg),
                    run_spec.name,
                    run_seed,
                    variant,
                    run_spec.train.select.metric,
                    run_spec.train.epochs,
                    on_cuda,
                    action,
                    run_dir,
                )
            )
    return jobs


def refuse_control_characters(text: str, what: str) -> None:
    """A UsageError for a name or path holding a control character (newline, carriage return, NUL,
    ESC...): a plan's line would split in two or print as something else, and a job queue, a shell or
    a log that reads it line by line would run or show another command than the one planned."""
    found = control_characters(text)
    if found:
        shown = ", ".join(printable(c) for c in found)
        raise UsageError(
            f"{what} '{printable(text)}' holds the control character(s) {shown}: a command naming it would not "
            "be one line of the plan, and would not print as what it runs. Rename the file or folder (or choose "
            "another value) without control characters, then plan again."
        )


def flag_args(overrides: Overrides, resume: bool = False) -> list[str]:
    """The overrides as ``graphc train`` flags; for a resume only those it may change (not --epochs:
    a matched run already has the sweep's)."""
    args = []
    for flag, value in overrides.flags().items():
        name = flag[2:].replace("-", "_")
        if resume and (name in RESUME_FIXED or name == "epochs"):
            continue
        args += [flag] if value is True else [flag, str(value)]
    return args


def train_args(job: Job, overrides: Overrides, out: Path) -> list[str]:
    """The ``graphc train`` arguments of one job (after ``train``)."""
    if job.action == "resume":
        return ["--resume", str(job.run_dir), *flag_args(overrides, resume=True)]
    return [job.spec_arg, "--seed", str(job.seed), "--out", str(out), *flag_args(overrides)]


def plan_commands(jobs: list[Job], overrides: Overrides, out: Path) -> list[dict]:
    """``graphc sweep plan``: per run a self-contained command that is itself a one-run sweep
    (``--jobs 1``): run twice, or after an interruption, it skips or resumes rather than repeats.

    ``command`` is the argv with every argument shell-quoted (shlex.quote): one line that ``eval``,
    ``bash -c`` and ``sh -c`` split into exactly ``argv`` and run as that one command; ``argv`` is
    the list itself, for job arrays that start it without a shell. No argument holds a control
    character (refused, with the flag that gave it), so a line is never two."""
    rows = []
    for job in jobs:
        argv = [
            "graphc",
            "train",
            job.spec_arg,
            "--seed",
            str(job.seed),
            "--out",
            str(out),
            *flag_args(overrides),
            "--jobs",
            "1",
        ]
        for before, arg in zip(argv, argv[1:]):  # every value, the flags' (--data-dir, --init-from...) too
            refuse_control_characters(arg, before if before.startswith("--") else "the SPEC file name")
        rows.append(
            {
                "spec": job.spec_arg,
                "name": job.name,
                "seed": job.seed,
                "command": shlex.join(argv),
                "argv": argv,
                # the run directory's name has the time it starts: known only for a run that exists
                "state": job.action,
                "run_dir": str(job.run_dir) if job.run_dir else None,
            }
        )
    return rows


# --------------------------------------------------------------------------- where each job runs


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


@dataclass
class Slots:
    """How many jobs run at once, each one's CPU threads, and the GPU sets jobs take turns on."""

    concurrent: int
    threads: int
    gpu_sets: list[str]  # CUDA_VISIBLE_DEVICES values, one per concurrent GPU job (empty: no GPU jobs)
    note: str = ""


def plan_slots(jobs: list[Job], k: int, per_gpu: int = 1, nproc: int = 1) -> Slots:
    """K at a time; on CUDA at most (GPUs // nproc) x per_gpu, each job on nproc GPUs of its own
    (shared by per_gpu jobs). Threads: the cores split evenly among the jobs that run at once."""
    if k < 1 or per_gpu < 1:
        raise UsageError(f"--jobs and --jobs-per-gpu must be at least 1, got {k} and {per_gpu}.")
    to_run = [j for j in jobs if j.action in ("new", "resume")]
    concurrent, gpu_sets, note = max(1, min(k, len(to_run))), [], ""
    if any(j.on_cuda for j in to_run):
        gpus = visible_gpus()
        blocks = [",".join(gpus[i : i + nproc]) for i in range(0, len(gpus) - nproc + 1, nproc)]
        if not blocks:
            raise RunError(f"a run needs {nproc} GPU(s) (--nproc) but {len(gpus)} are visible (CUDA_VISIBLE_DEVICES).")
        gpu_sets = [b for _ in range(per_gpu) for b in blocks]  # spread over the GPUs first, then double up
        if concurrent > len(gpu_sets):
            note = (
                f"running {len(gpu_sets)} at a time, not {concurrent}: {len(blocks)} GPU set(s) x --jobs-per-gpu {per_gpu}; "
                "pass a larger --jobs-per-gpu to put more runs on each GPU."
            )
            concurrent = len(gpu_sets)
    return Slots(concurrent, max(1, cpu_cores() // concurrent), gpu_sets, note)


# --------------------------------------------------------------------------- running


def _no_orphans() -> None:
    """In a child, before it execs: its own session (the terminal's Ctrl-C reaches only the sweep,
    which forwards one SIGINT), and on Linux a SIGINT when the sweep dies, so no run trains on unwatched."""
    os.setsid()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG


def _find_new_run(job: Job, out: Path, known: set[Path]) -> Path | None:
    """The run directory a child created for ``job``: a new one under out/<name>/ of its identity."""
    base = Path(out) / job.name
    if not base.is_dir():
        return None
    for path in sorted(base.glob(f"{job.seed}-*"), reverse=True):
        if path in known or not (path / runs.CONFIG).is_file():
            continue
        try:
            run = load_run(path)
        except RunError:
            continue  # still being written
        if run.variant.planned() == job.variant and run.seed == job.seed:
            return path
    return None


def _read_progress(job: Job) -> None:
    """The job's last completed epoch, its watched metric and training speed, from metrics.jsonl."""
    try:
        rows = runs.read_metrics(job.run_dir)
    except (RunError, OSError):
        return  # mid-write or damaged: keep the last figures
    split, _, key = job.watch.partition("/")
    for row in rows:
        job.epoch = max(job.epoch, int(row["epoch"]) if isinstance(row["epoch"], int) else 0)
        if row["split"] == "train" and isinstance(row.get("images_per_s"), (int, float)):
            job.images_per_s = float(row["images_per_s"])
        if row["split"] == split and isinstance(row.get(key), (int, float)):
            job.metric = float(row[key])


def _read_summary(job: Job) -> dict | None:
    """The job's summary.json (None: not written yet, unreadable or not a table; graphc report names
    damaged files)."""
    path = job.run_dir / runs.SUMMARY if job.run_dir is not None else None
    if path is None or not path.is_file():
        return None
    try:
        summary = runs.read_json(path)
    except RunError:
        return None
    return summary if isinstance(summary, dict) else None


def _note_collapsed(job: Job, summary: dict) -> None:
    """The heads the summary judged collapsed on the test pass (none: not judged, or a damaged table)."""
    with contextlib.suppress(RunError):
        job.collapsed = read_collapsed(summary.get("collapsed"), job.run_dir / runs.SUMMARY) or {}


def _read_collapsed(job: Job) -> None:
    """The heads its summary.json judged collapsed (a run finished before the sweep started)."""
    summary = _read_summary(job)
    if summary is not None:
        _note_collapsed(job, summary)


def _error_of(log: Path) -> str:
    """A failed child's message: its ``error:`` paragraph, else the last line of its output."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return f"the job ended without a message (no log at {log})"
    starts = [i for i, line in enumerate(lines) if line.startswith("error:")]
    if starts:
        return " ".join(line.strip() for line in lines[starts[-1] :] if line.strip()).removeprefix("error:").strip()
    tail = [line for line in lines if line.strip()]
    return (tail[-1].strip() if tail else "the job ended without a message") + f" (see {log})"


@dataclass
class SweepResult:
    jobs: list[Job]
    slots: Slots
    interrupted: bool = False
    wall_s: float = 0.0

    @property
    def run_dirs(self) -> list[Path]:
        return [j.run_dir for j in self.jobs if j.run_dir is not None and (j.run_dir / runs.CONFIG).is_file()]

    @property
    def failed(self) -> list[Job]:
        return [j for j in self.jobs if j.failed]


class View:
    """The combined progress: a live table on a terminal, else a line per event (a run starting,
    an epoch ending, a run ending)."""

    def __init__(self, jobs: list[Job], console: Console, quiet: bool):
        self.jobs, self.console = jobs, console
        self.live = (
            Live(self.table(), console=console, auto_refresh=False) if console.is_terminal and not quiet else None
        )
        self.shown: dict[int, tuple] = {}

    def __enter__(self):
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.update(self.table(), refresh=True)
            self.live.stop()

    @staticmethod
    def cells(job: Job) -> list[str]:
        """spec, seed, state, completed epochs, the watched metric (train.select) at the last one, images/s."""
        metric = (
            "" if job.metric is None else (f"{job.metric:.4f}" if job.watch.endswith("loss") else f"{job.metric:.2%}")
        )
        speed = "" if job.images_per_s is None else f"{job.images_per_s:,.0f}"
        state = job.state.replace("_", " ")
        if job.collapsed:  # judged on the test pass (the metric beside it is train.select's)
            state += f" (collapsed: {', '.join(job.collapsed)})"
        return [
            job.name,
            str(job.seed),
            state,
            f"{job.epoch}/{job.epochs}",
            f"{job.watch} {metric}" if metric else "",
            speed,
        ]

    def table(self) -> Table:
        table = Table(title="sweep (epochs: completed)", title_justify="left")
        for column in ("spec", "seed", "state", "epochs", "metric (train.select)", "train images/s"):
            table.add_column(column, justify="right" if column in ("seed", "epochs", "train images/s") else "left")
        for job in self.jobs:
            table.add_row(*map(printable, self.cells(job)))
        return table

    def line(self, job: Job) -> str:
        name, seed, state, epoch, metric, speed = self.cells(job)
        text = f"{name} seed {seed}: {state}, epochs {epoch}"
        text += f", {metric}" if metric else ""
        text += f", {speed} train img/s" if speed else ""
        if job.state in ("running", "resuming") and job.run_dir is not None:
            text += f" -> {job.run_dir}"
        if job.error:
            text += f": {job.error}"
        return text

    def update(self) -> None:
        if self.live is not None:
            self.live.update(self.table(), refresh=True)
            return
        for i, job in enumerate(self.jobs):
            if job.state == "queued":
                continue
            key = (job.state, job.epoch, job.run_dir is not None)
            if self.shown.get(i) != key:
                self.shown[i] = key
                self.console.print(printable(self.line(job)), markup=False, highlight=False)


def run_sweep(
    jobs: list[Job],
    slots: Slots,
    overrides: Overrides,
    out: Path,
    console: Console,
    quiet: bool = False,
) -> SweepResult:
    """Train the jobs ``slots.concurrent`` at a time; each failure is recorded, none stops the others."""
    out = Path(out)
    started = time.perf_counter()
    result = SweepResult(jobs, slots)
    for job in jobs:
        if job.action == "done":
            job.state = "skipped"
        elif job.action == "diverged":
            job.state, job.error = "diverged", f"diverged before ({job.run_dir / runs.SUMMARY}); not repeated"
    for job in jobs:
        if job.run_dir is not None:
            _read_progress(job)
            _read_collapsed(job)  # a run finished before: its judgement stands
    pending = [j for j in jobs if j.action in ("new", "resume")]
    known = set(runs.find_runs([out])) if out.is_dir() else set()
    free = list(slots.gpu_sets)
    running: list[Job] = []
    logs = out / LOGS
    with View(jobs, console, quiet) as view:
        view.update()
        try:
            while pending or running:
                while pending and len(running) < slots.concurrent:
                    job = pending.pop(0)
                    if not _claim(job, out):  # trained by another process, or finished meanwhile
                        view.update()
                        continue
                    try:
                        _start(job, overrides, out, logs, slots, free)
                    except BaseException:
                        job.lock.release()
                        raise
                    running.append(job)
                time.sleep(REFRESH_S if running else 0)
                for job in list(running):
                    if job.run_dir is None:
                        job.run_dir = _find_new_run(job, out, known)
                    if job.run_dir is not None:
                        _read_progress(job)
                    if job.process.poll() is not None:
                        _ended(job, out, known)
                        running.remove(job)
                        if job.gpus:
                            free.append(job.gpus)
                view.update()
        except KeyboardInterrupt:
            result.interrupted = True
            _stop(running)
            for job in running:
                _ended(job, out, known)
            view.update()
    result.wall_s = time.perf_counter() - started
    return result


def _claim(job: Job, out: Path) -> bool:
    """Take the job's identity lock (runtime/train/run_lock.py) just before it starts, and look at the
    runs of its identity on disk again: False, with the job's state set, when another process holds the
    lock (the job is skipped with a message) or the run has ended meanwhile (skipped, or diverged); an
    interrupted run found now is resumed."""
    path = run_lock.lock_path(out, job.name, run_lock.identity_key(job.variant, job.seed))
    try:
        job.lock = run_lock.try_lock(path)
    except run_lock.Held as held:
        job.state = "skipped"
        job.error = (
            f"another graphc process ({held.by}) is training this run (lock {path}); skipped: "
            "run the sweep again once it has ended"
        )
        return False
    same = existing_runs(Path(out) / job.name).get((job.variant, job.seed), [])
    action, run_dir = _action(same)
    if action in ("done", "diverged"):  # another process trained it since the sweep was planned
        job.lock.release()
        job.action, job.run_dir = action, run_dir
        job.state = "skipped" if action == "done" else "diverged"
        job.error = None if action == "done" else f"diverged before ({run_dir / runs.SUMMARY}); not repeated"
        _read_progress(job)
        return False
    job.action, job.run_dir = action, run_dir
    return True


def _start(job: Job, overrides: Overrides, out: Path, logs: Path, slots: Slots, free: list[str]) -> None:
    env = distributed.outside_job()  # each run its own job, never a member of one that started the sweep
    passed = ()
    if job.lock is not None and job.lock.fd is not None:  # the child holds the identity lock with the sweep
        env[run_lock.ENV], passed = f"{job.lock.fd}:{job.lock.path}", (job.lock.fd,)
    # Each job's share of the cores: torch takes its intra-op thread count from these at start.
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(slots.threads)
    if job.on_cuda:
        job.gpus = free.pop(0)
        env["CUDA_VISIBLE_DEVICES"] = job.gpus
    argv = [sys.executable, "-m", "graphc", "train", *train_args(job, overrides, out), "--quiet"]
    job.log = log_of(job, logs)
    try:
        logs.mkdir(parents=True, exist_ok=True)
        log = open_append(job.log)  # a link planted at the log's name is refused, never followed
    except OSError as exc:
        raise RunError(f"cannot write the job log {job.log} ({exc.strerror or exc}).") from None
    with log:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        job.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_no_orphans if os.name == "posix" else None,
            pass_fds=passed,
        )
    job.state, job.started = ("resuming" if job.action == "resume" else "running"), time.perf_counter()


def log_of(job: Job, logs: Path) -> Path:
    return logs / f"{job.name}-seed{job.seed}.log"


def check_logs(jobs: list[Job], out: Path) -> None:
    """Before anything starts: no job's log name holds a symbolic link (graphc never makes one there;
    appending through it would write wherever it points)."""
    planted = [log_of(j, Path(out) / LOGS) for j in jobs if j.action in ("new", "resume")]
    planted = [log for log in planted if log.is_symlink()]
    if planted:
        raise RunError(
            f"{', '.join(map(str, planted))}: a symbolic link where the sweep writes its job log; graphc never "
            "makes one there and does not write through it. Delete it, then run the sweep again."
        )


def _ended(job: Job, out: Path, known: set[Path]) -> None:
    """Record how a child ended: the run's own status when it wrote one, else the error it printed."""
    code = job.process.wait()
    if job.lock is not None:
        job.lock.release()
    if job.run_dir is None:
        job.run_dir = _find_new_run(job, out, known)
    summary = None
    if job.run_dir is not None:
        known.add(job.run_dir)
        _read_progress(job)
        summary = _read_summary(job)  # read once: the status, and the heads it judged collapsed
        if summary is not None:
            _note_collapsed(job, summary)
    status = summary.get("status") if summary is not None else None
    if code == 0 and status in FINISHED:
        job.state = status
    elif code != 0 and status == "diverged":  # (a diverged run is never resumed: this summary is the child's)
        job.state, job.error = "diverged", _error_of(job.log)
    elif code in INTERRUPTED_CODES:  # graphc train's exit after Ctrl-C, SIGTERM or SIGHUP, its last epoch saved
        job.state = "interrupted"
    else:
        job.state, job.error = "failed", _error_of(job.log)


def _stop(running: list[Job]) -> None:
    """Ctrl-C: one SIGINT to each child (it saves its last completed epoch and ends) - or the SIGTERM or
    SIGHUP the sweep got, which each child handles the same way (runtime/train/signals.py); a second
    one here, or STOP_WAIT_S, kills them (every file is written atomically, so nothing is half written)."""
    stop = signals.received() or signal.SIGINT
    for job in running:
        with contextlib.suppress(ProcessLookupError):
            job.process.send_signal(stop)
    deadline = time.monotonic() + STOP_WAIT_S
    try:
        for job in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                job.process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:
        pass
    for job in running:
        if job.process.poll() is None:
            job.process.kill()
            job.process.wait()


def sweep_command(
    spec_paths: Sequence[Path | str],
    *,
    jobs: int,
    jobs_per_gpu: int = 1,
    seeds: int | None = None,
    seed: int | None = None,
    overrides: Overrides = Overrides(),
    out: Path = Path("runs"),
    quiet: bool = False,
    console: Console | None = None,
) -> SweepResult:
    """What ``graphc train ... --jobs K`` does: plan, say what will happen, train, return the outcome."""
    console = console or Console(stderr=True)
    launched = distributed.launched()
    if launched is not None:  # every process of the job would start the whole sweep, into the same folder
        raise UsageError(
            f"--jobs starts a process per run on this machine, but this one is process {launched.rank} of "
            f"{launched.size} that torchrun started, and each of them would start the whole sweep. Run the "
            "sweep without torchrun (graphc train SPECS --jobs K, with --nproc N for several processes per "
            "run), or hand its runs to a job queue with `graphc sweep plan SPECS`."
        )
    if overrides.nproc is not None:
        distributed.check_count(overrides.nproc)
    planned = plan_sweep(spec_paths, seeds=seeds, seed=seed, overrides=overrides, out=out)
    slots = plan_slots(planned, jobs, jobs_per_gpu, overrides.nproc or 1)
    check_logs(planned, out)
    counts = {a: sum(j.action == a for j in planned) for a in ("new", "resume", "done", "diverged")}
    where = f"on GPUs {' | '.join(dict.fromkeys(slots.gpu_sets))}, " if slots.gpu_sets else ""
    how = (
        f"; {slots.concurrent} at a time, {where}{slots.threads} CPU thread(s) each; logs in {Path(out) / LOGS}"
        if counts["new"] + counts["resume"]
        else "; nothing to train"
    )
    console.print(
        f"sweep of {len(planned)} run(s) into {out}: {counts['new']} new, {counts['resume']} to resume, "
        f"{counts['done']} skipped (finished before)"
        + (f", {counts['diverged']} diverged before" if counts["diverged"] else "")
        + how,
        markup=False,
        highlight=False,
    )
    if slots.note:
        console.print(f"note: {slots.note}", markup=False, highlight=False)
    return run_sweep(planned, slots, overrides, out, console, quiet)
