"""One trainer per run identity at a time, across processes: the identity lock.

A run's identity is the report's: its variant (runtime/report/build.py: spec name and text hash,
the resolved [train] and [data] tables, data limits, test pass, tag) and its seed. Two processes
that would train the same identity at once - two identical sweeps started together, or a sweep and
a `graphc train` of one of its runs - would make two run folders of one run. So whoever starts a
new run of an identity first takes an OS file lock (``flock``) on
``OUT/.locks/<spec>-<identity hash>.lock``, right before the run folder is created (after every
check, so a refused run leaves nothing behind), and holds it until the run ends; the OS releases it
however the process ends, so a crash leaves no stale lock. The small file stays: deleting a lock file
another process may be opening races with it. It lives in the runs folder, not in a temporary
folder, so processes on several machines that share the runs folder (a job queue running `graphc
sweep plan`'s commands) see one another's locks where the file system has locks; and beside the
spec folders, not in them, which hold run folders only.

- A sweep (runtime/train/sweep.py) takes the lock of each job just before starting it. If another
  process holds it, the sweep skips the job with a message (exit 0; run the sweep again later to
  pick up the finished run, or resume it). Once it has the lock it looks at the runs on disk again
  (another sweep may have finished the run meanwhile: then it is skipped, or resumed if it was
  interrupted). The child `graphc train` inherits the locked descriptor (``pass_fds``; the
  environment variable GRAPHC_RUN_LOCK says which one), so the lock is held as long as either
  process lives.
- A plain `graphc train` takes the lock itself; if another process holds it, the run is refused
  (RunError, exit 1) naming the holder's pid. It never waits: a second training of one identity is
  either a mistake or a retry that the sweep's skip handles.

Where the file system has no locks (some network mounts), training goes on unguarded, as
``rundir.training_lock`` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from graphc.errors import RunError
from graphc.runtime.runs.rundir import flock_now, lock_holder

LOCKS = ".locks"  # under OUT/: hidden, and holds no config.json, so graphc report ignores it
ENV = "GRAPHC_RUN_LOCK"  # "FD:PATH": the identity lock a sweep holds for the `graphc train` it started


def identity_key(variant, seed: int) -> str:
    """A file name for a run identity: a hash of its variant (a report ``Variant``) and seed."""
    text = json.dumps(
        [variant.spec, variant.spec_sha256, variant.tag, [list(s) for s in variant.settings], seed],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def run_variant(spec, overrides):
    """The report ``Variant`` a run of ``spec`` (overrides and seed applied) will have: the fields of
    config.json that runtime/report/build.py's ``variant_settings`` reads, filled as launch.train_run
    fills them. (The sweep matches runs on disk by it too.)"""
    from graphc.runtime.report.build import Variant, variant_settings

    config = {
        "train": spec.train.model_dump(mode="json"),
        "data": spec.data.model_dump(mode="json"),
        "limit_train": overrides.limit_train,
        "limit_val": overrides.limit_val,
        "limit_test": overrides.limit_test,
        "no_test": bool(overrides.no_test),
    }
    return Variant(spec.name, spec.sha256, overrides.tag, variant_settings(config))


def lock_path(out: Path, spec_name: str, key: str) -> Path:
    return Path(out) / LOCKS / f"{spec_name}-{key}.lock"


@dataclass
class IdentityLock:
    """A held identity lock: the lock file and its open descriptor (None once released)."""

    path: Path
    fd: int | None

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # releases the lock (unless a child still has the descriptor)
            self.fd = None


class Held(RunError):
    """Another process holds the identity lock: ``holder`` is its pid as written in the file ('' unknown)."""

    def __init__(self, path: Path, holder: str):
        self.path, self.holder = path, holder
        super().__init__(f"{path} is held by {self.by}")

    @property
    def by(self) -> str:
        return f"pid {self.holder}" if self.holder.isdigit() else "another process"


def try_lock(path: Path) -> IdentityLock:
    """Take the lock at ``path`` without waiting; :class:`Held` if another process has it. A file system
    error (read-only, full) is a RunError naming the file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        raise RunError(
            f"cannot create the run lock {path} ({exc.strerror or exc}); the runs folder must be writable."
        ) from None
    try:
        held = flock_now(fd)
    except OSError as exc:
        os.close(fd)
        raise RunError(f"cannot lock {path} ({exc.strerror or exc}).") from None
    if held is None:  # not POSIX, or no locks on this file system: unguarded
        return IdentityLock(path, fd)
    if not held:
        holder = lock_holder(fd)
        os.close(fd)
        raise Held(path, holder)
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return IdentityLock(path, fd)


def inherited(path: Path) -> bool:
    """Whether this process was started holding the lock at ``path`` (a sweep's child: GRAPHC_RUN_LOCK
    names an open descriptor of that very file)."""
    fd_text, sep, named = os.environ.get(ENV, "").partition(":")
    if not sep or not fd_text.isdigit() or Path(named) != Path(path):
        return False
    try:
        mine, there = os.fstat(int(fd_text)), os.stat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)


@contextlib.contextmanager
def identity_lock(out: Path, spec_name: str, variant, seed: int) -> Iterator[None]:
    """Hold the identity lock of a new run of ``variant`` and ``seed`` under ``out`` while it trains (a
    plain `graphc train`); a RunError naming the holder if another process trains that run. Inherited
    from a sweep (see :func:`inherited`): already held, nothing to take."""
    path = lock_path(out, spec_name, identity_key(variant, seed))
    if inherited(path):
        yield
        return
    try:
        lock = try_lock(path)
    except Held as held:
        raise RunError(
            f"another graphc process ({held.by}) is training spec '{spec_name}' seed {seed} with the same "
            f"settings into {out} (lock {path}); two trainers would make two run folders of one run. Wait for it "
            "to end, then look at its run folder; a sweep (--jobs) skips such a run instead of refusing it."
        ) from None
    try:
        yield
    finally:
        lock.release()
