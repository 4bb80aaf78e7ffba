"""Data-parallel training on several processes: ``spawn`` starts them, ``World`` is each one's place.

``graphc train SPEC --nproc N`` trains one run on N processes with torch.distributed:
one per GPU on CUDA (NCCL; rank r on ``cuda:r``), or N processes sharing the CPU
cores (gloo). The launching process prepares the run directory exactly as a
single-process run does (every check, config.json, the epoch-0 last.pt), then
:func:`spawn` starts the workers; each rebuilds the run from that directory, as
a resume does, and trains (graphc.runtime.train.launch.train_process)::

    every process                               rank 0 only
    the same seeded batch order                 writes metrics, last.pt, best.pt, summary.json
    its 1/N share of each global batch          prints progress
    DDP averages the gradients                  evaluates best.pt on the test split at the end
    its part of the validation split            (so test_predictions.json has every test image once)
    train and val metric sums all-reduced

So the logged metrics are those of the whole data, and a step's weights equal a
single process's step on the same global batch (up to float rounding) - except
that batch norm normalises with each process's own share of the batch; its
running statistics are rank 0's (each process keeps its own while it trains,
with no broadcast per step), which validation and the checkpoints use. Dropout
and augmentation draw from different streams on each process: rank 0's are a
single process's, the others are reseeded from (seed, rank, epoch) at each
epoch, so a resume on as many processes continues exactly without saving their
states.

Ctrl-C: the workers leave the terminal's process group, so Ctrl-C reaches the
launcher only, which passes it on to rank 0. Rank 0 then stops as a single
process does (after the last completed epoch's files, with an 'interrupted'
summary); the others, left waiting for it, are ended. A second Ctrl-C ends every
process at once (last.pt is written atomically, so it is still valid). If the
launcher dies, torch delivers SIGINT to every worker (PR_SET_PDEATHSIG).

Errors: each worker leaves its outcome in a file; the launcher raises the
earliest error - a SpecError, UsageError or RunError as itself (same message,
same exit code), anything else as a RunError naming the process - and ends the
other processes, which would otherwise wait for the failed one forever.

Under torchrun (``torchrun ... -m graphc train``) there is no launching graphc
process: every process runs the command, :func:`join` puts it in torchrun's
process group (env://, GRAPHC_DIST_TIMEOUT), and a :class:`Job` makes rank 0
do what the launcher does (checks, the run directory) and then, with
:meth:`Job.step`, has every rank run ``train_process`` with it; the other ranks
:meth:`Job.follow`. torchrun itself ends a machine's processes when one fails;
on other machines the next collective fails (gloo) or times out (NCCL).
"""

from __future__ import annotations

import inspect
import os
import pickle
import re
import signal
import socket
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from graphc.errors import Problem, RunError, SpecError, UsageError
from graphc.runtime.train.signals import STOP_SIGNALS

GRACE_S = 1.0  # once rank 0 has ended or a process has failed, the others get this long to end on their own
POLL_S = 0.5  # how often the launcher looks for a failed process's report while all still run
ERRORS = {"SpecError": lambda message: SpecError(Problem(message)), "UsageError": UsageError, "RunError": RunError}


# --------------------------------------------------------------------------- one process's place


@dataclass(frozen=True)
class World:
    """Rank ``rank`` of ``size`` processes, training on ``device``.

    Every method is the identity or does nothing for a single process (``SINGLE``),
    so the training loop calls them whatever the number of processes.
    """

    rank: int = 0
    size: int = 1
    device: torch.device | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run's files and prints."""
        return self.rank == 0

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This process's contiguous share of a global batch's indices: (B,) -> (B // size,)."""
        if self.size == 1:
            return index
        share = len(index) // self.size  # steps_per_epoch keeps a last batch only if every share has 2 or more
        return index[self.rank * share : (self.rank + 1) * share]

    def share(self, split):
        """This process's contiguous part of an evaluation split (a graphc.runtime.data.split.Split; no copy)."""
        if self.size == 1:
            return split
        n = len(split)
        return split.subset(slice(n * self.rank // self.size, n * (self.rank + 1) // self.size))

    def wrap(self, model: torch.nn.Module, sync_batchnorm: bool = False) -> torch.nn.Module | None:
        """``model`` in DistributedDataParallel (which averages the gradients over the processes), or None.

        ``sync_batchnorm`` ([train] sync_batchnorm): first turn ``model``'s batch norms, in place, into
        SyncBatchNorm (the same parameters and buffers, so the optimiser and checkpoints are unchanged)."""
        if self.size == 1:
            return None
        if sync_batchnorm:
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # a GraphModule: its children are replaced
        device_ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        # No broadcast of the batch-norm statistics before every forward: rank 0's statistics depend
        # only on its own shares either way (training-mode batch norm normalises with the batch's
        # own statistics), and evaluation takes them (sync_buffers). torch >= 2.14 calls the
        # switch forward_sync_buffers (and still syncs at the start); broadcast_buffers before.
        ddp = torch.nn.parallel.DistributedDataParallel
        switch = (
            "forward_sync_buffers"
            if "forward_sync_buffers" in inspect.signature(ddp).parameters
            else "broadcast_buffers"
        )
        return ddp(model, device_ids=device_ids, **{switch: False})

    def reduce_meter(self, meter) -> None:
        """Sum a graphc.runtime.metrics.Meter's sums and image count over the processes (one all_reduce),
        so that it computes the means of the whole data; and give every process every process's kept
        scores (binary and multilabel heads: AUROC and average precision rank every image, no sum will do)."""
        if self.size == 1:
            return
        packed = torch.cat([meter.sums, meter.sums.new_tensor([meter.count])])
        dist.all_reduce(packed)
        meter.sums, meter.count = packed[:-1], int(packed[-1].item())
        if getattr(meter, "scores", None):
            # Each process's share differs in length: gathered as objects, on the CPU (once per pass).
            mine = {task: (s.cpu(), t.cpu()) for task, (s, t) in meter.ranked().items()}
            everyone: list = [None] * self.size
            dist.all_gather_object(everyone, mine)
            tasks = dict.fromkeys(task for part in everyone for task in part)  # a process without images has none
            meter.set_ranked(
                {
                    task: tuple(torch.cat([part[task][i] for part in everyone if task in part]) for i in (0, 1))
                    for task in tasks
                }
            )

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Give every process rank 0's buffers (batch-norm running statistics): the model rank 0 saves."""
        if self.size == 1:
            return
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)

    def from_main(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (picklable) on every process."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def reseed(self, generator: torch.Generator, seed: int, epoch: int) -> None:
        """Ranks > 0: this epoch's own dropout (torch's global RNG) and augmentation (``generator``) draws.

        Without it every process would draw the same dropout masks and augmentation for its share.
        Derived from (seed, rank, epoch), so a resume continues them without saved states;
        rank 0 keeps its continuous streams, which are a single process's and are checkpointed.
        """
        if self.rank == 0:
            return
        derived = int(np.random.SeedSequence([seed, self.rank, epoch]).generate_state(1, np.uint64)[0] >> 2)
        torch.manual_seed(derived)
        generator.manual_seed(derived + 1)


SINGLE = World()


# --------------------------------------------------------------------------- checks before any file


def check_count(nproc: int) -> None:
    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1 (the number of training processes), got {nproc}.")


def check(
    nproc: int, device: torch.device, batch_size: int, model: torch.nn.Module, sync_batchnorm: bool = False
) -> None:
    """``--nproc`` (or a torchrun job's processes) against the run: what would otherwise fail inside
    the processes, checked before any file."""
    check_count(nproc)
    if nproc == 1:
        return
    flag = f"--nproc {nproc}" if current_job() is None else f"torchrun's {nproc} processes"
    if sync_batchnorm and device.type != "cuda":
        raise UsageError(
            f"[train] sync_batchnorm = true: torch's SyncBatchNorm runs on CUDA GPUs only, and these {nproc} processes "
            f"would train on {device.type}. Set sync_batchnorm = false (each process then normalises with its own "
            "share of the batch) or train on CUDA (--device cuda)."
        )
    if device.type not in ("cpu", "cuda"):
        raise UsageError(
            f"{flag}: training on several processes runs on CUDA GPUs (one per process) or on the CPU, "
            f"not on {device.type}. Use --device cuda or --device cpu, or --nproc 1."
        )
    if device.type == "cuda":
        first, count = device.index or 0, torch.cuda.device_count()
        job = current_job()
        if job is not None and first + job.local_size > count:
            raise RunError(
                f"torchrun starts {job.local_size} processes on this machine (--nproc-per-node), one per CUDA device "
                f"from {device} on, but it has {count} (cuda:0 to cuda:{count - 1}). Use --nproc-per-node {count - first} or fewer."
            )
        if job is None and first + nproc > count:
            raise RunError(
                f"--nproc {nproc} needs {nproc} CUDA devices from {device} on (one per process), but this machine has "
                f"{count} (cuda:0 to cuda:{count - 1}). Use --nproc {count - first} or fewer."
            )
    if batch_size % nproc:
        down, up = batch_size - batch_size % nproc, batch_size + nproc - batch_size % nproc
        sizes = f"--batch-size {down} or {up}" if down else f"--batch-size {up}"
        how = "--nproc" if current_job() is None else "torchrun --nnodes x --nproc-per-node"
        raise UsageError(
            f"{flag}: the global batch of {batch_size} images (train.batch_size) does not divide evenly "
            f"among {nproc} processes. Use a multiple of {nproc} (e.g. {sizes}) or another {how}."
        )
    if batch_size // nproc < 2 and any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules()):
        raise UsageError(
            f"{flag}: each process would train on {batch_size // nproc} image per batch "
            f"(train.batch_size {batch_size} / {nproc}), but the model has batch norm, which needs at least 2. "
            f"Use --batch-size {2 * nproc} or more, or fewer processes."
        )


# --------------------------------------------------------------------------- launching


@dataclass(frozen=True)
class Outcome:
    """How one process ended: 'result' (``value``), 'interrupted', 'error' (``value`` = (kind, message)),
    or 'stopped' (ended by the launcher after rank 0 ended or another process failed)."""

    kind: str
    value: Any = None
    when: float = 0.0  # time.time() at the end: the earliest error is the cause, later ones its echoes


def threads_per_process(nproc: int) -> int:
    """The CPU threads each of ``nproc`` processes training a run uses: --nproc's share the
    launcher's (``spawn``); torchrun's, and a single process, keep their own."""
    if nproc == 1 or current_job() is not None:
        return torch.get_num_threads()
    return max(1, torch.get_num_threads() // nproc)


def spawn(
    fn: Callable[..., Any], nproc: int, device: torch.device, args: tuple = (), threads: int | None = None
) -> Any:
    """Run ``fn(world, *args)`` on ``nproc`` new processes joined in a process group; return rank 0's result.

    ``fn`` must be a module-level function and its result picklable; as with any spawned
    process, a script that calls this needs the ``if __name__ == "__main__":`` guard. Rank r
    runs on ``cuda:(i + r)`` when ``device`` is ``cuda:i``, else on ``device``; the processes
    share the launcher's CPU threads (``threads`` each: the run's execution; default
    ``threads_per_process``). Raises KeyboardInterrupt when rank 0 was interrupted before it
    could return, and the earliest error of any process (see the module's docstring).
    """
    threads = threads or threads_per_process(nproc)
    with tempfile.TemporaryDirectory(prefix="graphc-processes-") as outbox:
        context = torch.multiprocessing.start_processes(
            _process,
            args=(fn, args, nproc, device, _free_port(), threads, outbox),
            nprocs=nproc,
            join=False,
            start_method="spawn",
        )
        processes = context.processes
        try:
            outcomes = _wait(processes, Path(outbox))
            stopped = _end(processes, GRACE_S)
        except BaseException:  # a second Ctrl-C, or a failure here: leave no process behind
            _end(processes, 0.0)
            raise
        _collect(processes, Path(outbox), outcomes, stopped)
    return _result(outcomes)


def _process(
    rank: int, fn: Callable, args: tuple, size: int, device: torch.device, port: int, threads: int, outbox: str
) -> None:
    """One worker: join the process group, run ``fn`` and leave its outcome for the launcher."""
    if hasattr(os, "setpgrp"):
        os.setpgrp()  # out of the terminal's process group: Ctrl-C reaches the launcher, which tells rank 0
    if device.type == "cuda":
        device = torch.device("cuda", (device.index or 0) + rank)
    try:
        torch.set_num_threads(threads)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size, timeout=timeout()
        )
        outcome = Outcome("result", fn(World(rank, size, device), *args))
    except KeyboardInterrupt:
        outcome = Outcome("interrupted")
    except (SpecError, UsageError, RunError) as exc:
        outcome = Outcome("error", (type(exc).__name__, str(exc)), time.time())
    except Exception as exc:  # a bug, or a process that lost its peers
        outcome = Outcome("error", ("RunError", failure(rank, size, exc)), time.time())
    _post(Path(outbox), rank, outcome)  # before the teardown, which can wait on peers that are gone
    if dist.is_initialized():
        dist.destroy_process_group()


def failure(rank: int, size: int, exc: Exception) -> str:
    """One line for an unexpected error in training process ``rank``: what, and where it happened."""
    where = traceback.extract_tb(exc.__traceback__)[-1]
    what = (str(exc).strip() or "(no message)").splitlines()[0]  # gloo and NCCL append C++ stack frames
    lost = lost_peers(exc)
    if lost:  # gloo's "[.../pair.cc:545] Read error [127.0.0.1]:49352: Connection reset by peer. This is typically..."
        what = re.sub(r"^\[[^\]]*\]\s*", "", what).split(". ")[0]
    message = (
        f"training process {rank} of {size} failed: {type(exc).__name__}: {what} (at {where.filename}:{where.lineno})"
    )
    if lost:
        message += (
            ". It lost contact with the other processes: one of them has probably failed or been stopped "
            f"(its own message, or torchrun's summary, says why), or one took longer than {TIMEOUT_VARIABLE} allows."
        )
    return message


def lost_peers(exc: Exception) -> bool:
    """Whether a collective failed because its peers are gone or too slow: torch raises a DistError
    (or, from gloo, a RuntimeError naming its transport: "Connection reset by peer", "Timed out")."""
    text = str(exc)
    return isinstance(exc, dist.DistError) or (isinstance(exc, RuntimeError) and ("gloo" in text or "by peer" in text))


def _post(outbox: Path, rank: int, outcome: Outcome) -> None:
    # Pickle, not a data format: ``fn``'s result is any picklable object (a RunResult, tensors),
    # as spawn's arguments are. Unpickling it in _collect is safe: the file is not from elsewhere.
    # ``outbox`` is spawn's own TemporaryDirectory (mkdtemp: mode 0700, owned by this user), read
    # only during the spawn that made it, and written only by the processes it started - the same
    # trust as torch.multiprocessing's own pipes, which pickle ``args`` to them. Whoever can write
    # there is this user, and could already run code as this user.
    try:
        data = pickle.dumps(outcome)
    except Exception as exc:  # a result that cannot be pickled is a bug in fn
        data = pickle.dumps(
            Outcome(
                "error", ("RunError", f"training process {rank}: its result cannot be sent back ({exc})."), time.time()
            )
        )
    tmp = outbox / f".{rank}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, outbox / f"{rank}.pickle")  # the launcher never reads half a file


def _wait(processes: list, outbox: Path) -> dict[int, Outcome]:
    """Outcomes as the processes post them, until rank 0 has posted, one has failed, or all have ended.

    A first Ctrl-C is passed on to rank 0 (see the module's docstring); a second one
    is raised, and the caller ends every process.
    """
    outcomes: dict[int, Outcome] = {}
    asked_to_stop = False
    while True:
        try:
            wait([p.sentinel for p in processes if p.exitcode is None], timeout=POLL_S)
            _collect(processes, outbox, outcomes)
        except KeyboardInterrupt:
            if asked_to_stop or processes[0].exitcode is not None:
                raise
            asked_to_stop = True
            os.kill(processes[0].pid, signal.SIGINT)  # rank 0 stops after its last completed epoch's files
            continue
        failed = any(o.kind == "error" for o in outcomes.values())
        if failed or 0 in outcomes or all(p.exitcode is not None for p in processes):
            return outcomes


def _collect(processes: list, outbox: Path, outcomes: dict[int, Outcome], stopped: list[int] = ()) -> None:
    """Add the outcomes the processes have left, and those of processes that ended without one."""
    for rank, process in enumerate(processes):
        if rank in outcomes:
            continue
        ended, path = process.exitcode is not None, outbox / f"{rank}.pickle"  # (a process posts, then ends)
        if path.is_file():
            # Safe to unpickle: the outbox is this launcher's own mkdtemp folder (mode 0700), and only the
            # worker processes it started write there - the same trust multiprocessing's own pipes assume.
            outcomes[rank] = pickle.loads(path.read_bytes())
        elif rank in stopped:
            outcomes[rank] = Outcome("stopped")  # ended by the launcher: not a failure of its own
        elif ended:
            outcomes[rank] = _silent_exit(rank, len(processes), process.exitcode)


def _end(processes: list, grace: float) -> list[int]:
    """Let the processes end within ``grace`` seconds, then terminate (and if need be kill) the rest.
    Returns the ranks that had to be ended."""
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    stopped = [rank for rank, p in enumerate(processes) if p.exitcode is None]
    for rank in stopped:
        processes[rank].terminate()  # SIGTERM: also ends a process blocked in a collective
    for rank in stopped:
        processes[rank].join(5.0)
        if processes[rank].exitcode is None:
            processes[rank].kill()
            processes[rank].join()
    return stopped


def _silent_exit(rank: int, size: int, exitcode: int | None) -> Outcome:
    """The outcome of a process that ended without leaving one."""
    if exitcode == 0:  # interrupted before it ran our code (torch's wrapper swallows KeyboardInterrupt)
        return Outcome("interrupted")
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else f"signal {-exitcode}"
        why = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return Outcome(
            "error", ("RunError", f"training process {rank} of {size} was killed by {name}{why}."), time.time()
        )
    return Outcome(
        "error",
        ("RunError", f"training process {rank} of {size} exited with code {exitcode} before reporting why."),
        time.time(),
    )


def _result(outcomes: dict[int, Outcome]) -> Any:
    """Rank 0's result; KeyboardInterrupt if it was interrupted first; else the earliest error.

    Once rank 0 has ended on its own, the others' errors are echoes of its leaving."""
    main = outcomes[0]
    if main.kind == "result":
        return main.value
    if main.kind == "interrupted":
        raise KeyboardInterrupt
    errors = sorted((o.when, rank, o.value) for rank, o in outcomes.items() if o.kind == "error")
    if not errors:  # rank 0 was stopped with no error anywhere: only a second Ctrl-C does that
        raise KeyboardInterrupt
    kind, message = errors[0][2]
    raise ERRORS[kind](message)


def _free_port() -> int:
    """A free TCP port on localhost for the process group to meet on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- under torchrun

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")  # what torchrun sets for env://
# Every variable torchrun (torch.distributed.elastic's local agent) gives its processes about the job.
JOB_VARIABLES = LAUNCHER_VARIABLES + (
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "ROLE_NAME",
)
TIMEOUT_VARIABLE = "GRAPHC_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0  # a collective waits this long for its peers (e.g. while rank 0 loads the data), then fails


@dataclass(frozen=True)
class Launched:
    """This process's place in a job that torchrun (or any launcher setting its variables) started:
    global ``rank`` of ``size``, ``local_rank`` of the ``local_size`` processes on this machine."""

    rank: int
    size: int
    local_rank: int
    local_size: int

    def world(self, device: torch.device) -> World:
        """This process's World for a run on ``device``: CUDA device (index + local rank), as --nproc does."""
        if device.type == "cuda":
            device = torch.device("cuda", (device.index or 0) + self.local_rank)
            if device.index >= torch.cuda.device_count():
                raise RunError(
                    f"training process {self.rank} of {self.size} (local rank {self.local_rank}) would train on {device}, "
                    f"but its machine has {torch.cuda.device_count()} CUDA device(s). Start at most that many processes "
                    "per machine (torchrun --nproc-per-node)."
                )
            torch.cuda.set_device(device)
        return World(self.rank, self.size, device)


def launched(environ: Mapping[str, str] = os.environ) -> Launched | None:
    """The torchrun job this process belongs to, from the variables torchrun sets; None without them."""
    present = [name for name in LAUNCHER_VARIABLES if name in environ]
    if not present:
        return None
    missing = [name for name in LAUNCHER_VARIABLES if name not in environ]
    if missing:
        raise UsageError(
            f"{', '.join(present)} {'is' if len(present) == 1 else 'are'} set, as torchrun sets them, but not "
            f"{', '.join(missing)}: graphc cannot join a distributed job with part of them. Start it with torchrun "
            "(torchrun ... -m graphc train SPEC), or unset them to train on this machine alone."
        )
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    try:
        rank, size, local_rank = (int(environ[name]) for name in names[:3])
        local_size = int(environ.get("LOCAL_WORLD_SIZE", size))
    except ValueError:
        got = ", ".join(f"{name}={environ.get(name)!r}" for name in names if name in environ)
        raise UsageError(f"torchrun's variables must be whole numbers, got {got}.") from None
    if not (0 <= rank < size and 0 <= local_rank < local_size <= size):
        raise UsageError(
            f"inconsistent torchrun variables: RANK={rank}, WORLD_SIZE={size}, LOCAL_RANK={local_rank}, "
            f"LOCAL_WORLD_SIZE={local_size} (need 0 <= RANK < WORLD_SIZE and 0 <= LOCAL_RANK < LOCAL_WORLD_SIZE <= WORLD_SIZE)."
        )
    return Launched(rank, size, local_rank, local_size)


def outside_job(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """``environ`` without the variables that place a process in a torchrun job: the environment
    of a child process that must train on its own (a sweep's run), not join its parent's job."""
    return {k: v for k, v in environ.items() if k not in JOB_VARIABLES and not k.startswith("TORCHELASTIC_")}


def timeout(environ: Mapping[str, str] = os.environ) -> timedelta:
    """How long a collective waits for its peers: GRAPHC_DIST_TIMEOUT seconds, default DEFAULT_TIMEOUT_S."""
    text = environ.get(TIMEOUT_VARIABLE)
    if text is None:
        return timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < 1e7:
        raise UsageError(
            f"{TIMEOUT_VARIABLE}={text!r}: give the seconds a training process waits for the others "
            f"(e.g. {TIMEOUT_VARIABLE}=1800; default {DEFAULT_TIMEOUT_S:g})."
        )
    return timedelta(seconds=seconds)


class LostPeers(RunError):
    """A torchrun process's collective failed: its peers are gone (or too slow); the message says which process."""


class Job:
    """A torchrun job as one process takes part in it.

    Rank 0 runs ``graphc train`` as a single process would: it checks, prepares each run's
    directory and, with :meth:`step`, asks every rank to train the run with it, as --nproc's
    workers do; the other ranks :meth:`follow`. Runs of several specs or seeds are trained
    one after another, all ranks in step, and :meth:`end` tells the others the command is over.
    """

    def __init__(self, launched: Launched):
        self.launched = launched
        self.size, self.local_size = launched.size, launched.local_size
        self.team = World(launched.rank, launched.size)  # for its messages (CPU objects)
        self.stepping = False  # rank 0: the others are training a run, not waiting for a message

    def step(self, fn: Callable[..., Any], device: torch.device, args: tuple = ()) -> Any:
        """Rank 0: run ``fn(world, *args)`` on every rank (``fn`` module-level); return rank 0's result."""
        self.stepping = True
        self.team.from_main(("run", fn, str(device), args))
        result = self._run(fn, device, args)
        self.stepping = False
        return result

    def follow(self) -> int:
        """Ranks > 0: run what rank 0 asks until it ends the command; return its exit code."""
        while True:
            message = self.team.from_main(None)
            if message[0] == "end":
                return message[1]
            _, fn, device, args = message
            self._run(fn, torch.device(device), args)

    def end(self, code: int) -> None:
        """Rank 0: the command ended with ``code``; the others return (0) or exit with it. Told only
        when they wait for a message: in a run, a failed rank 0's leaving ends them (see ``failure``)."""
        if not self.stepping:
            self.team.from_main(("end", code))

    def _run(self, fn: Callable[..., Any], device: torch.device, args: tuple) -> Any:
        try:
            return fn(self.launched.world(device), *args)
        except (SpecError, UsageError, RunError):
            raise
        except Exception as exc:  # a bug, or a process that lost its peers
            raise (LostPeers if lost_peers(exc) else RunError)(failure(self.launched.rank, self.size, exc)) from None


_JOB: Job | None = None  # the job this process has joined (one per process, as torch's process group)


def current_job() -> Job | None:
    """The torchrun job this process has joined with :func:`join`, or None."""
    return _JOB


def join(launched: Launched) -> Job:
    """Join the torchrun job's process group (env://: MASTER_ADDR and MASTER_PORT), waiting at most
    GRAPHC_DIST_TIMEOUT. gloo for the CPU, and NCCL for CUDA tensors where CUDA is available.

    Ranks > 0 end at once on Ctrl-C (torchrun passes SIGINT to every process): they write
    nothing, and rank 0 then stops as a single process does.
    """
    global _JOB
    wait_for = timeout()
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    try:
        dist.init_process_group(backend, init_method="env://", timeout=wait_for)
    except (dist.DistError, RuntimeError, ValueError) as exc:
        what = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise RunError(
            f"training process {launched.rank} of {launched.size} could not join the job at "
            f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} within {wait_for.total_seconds():g} s ({what}). "
            "Check that every node's torchrun has the same --rdzv-endpoint and --nnodes, and that the nodes can reach it."
        ) from None
    if launched.rank > 0:  # (SIGTERM and SIGHUP too: graphc train turns them into Ctrl-C, runtime/train/signals.py)
        for signum in (signal.SIGINT, *STOP_SIGNALS):
            signal.signal(signum, signal.SIG_DFL)
    _JOB = Job(launched)
    return _JOB


def leave() -> None:
    """Leave the job's process group (at the end of the command)."""
    global _JOB
    _JOB = None
    if dist.is_initialized():
        dist.destroy_process_group()
