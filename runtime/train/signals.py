"""SIGTERM and SIGHUP stop training as Ctrl-C does.

A job scheduler (Slurm, Kubernetes, systemd) ends a process with SIGTERM, a closed terminal or ssh
session sends SIGHUP. While ``graphc train`` runs (:func:`stop_signals`, installed by the CLI for the
command's duration and restored after), each raises :class:`Terminated`, a KeyboardInterrupt that
carries the signal: everything that handles Ctrl-C handles it the same way - the run stops at a safe
point (the files of an epoch are written all or nothing, :func:`deferred_interrupt`), its summary.json
says ``interrupted``, the resume command is printed - and the command exits 128 + the signal's number
(143 for SIGTERM, 129 for SIGHUP; Ctrl-C keeps 130), as a shell reports a process that signal ended.
A sweep passes the signal it got to its runs (runtime/train/sweep.py).

A signal that is ignored when graphc starts stays ignored: ``nohup graphc train ...`` (SIGHUP
ignored) trains on after the terminal closes, as a SIGINT ignored by a background job is left alone.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

# The signals that stop training like Ctrl-C, where the platform has them (Windows has no SIGHUP).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))

_received: list[int] = []  # the stop signals received while stop_signals was installed, in order


class Terminated(KeyboardInterrupt):
    """Raised by SIGTERM or SIGHUP while training: a KeyboardInterrupt, so it stops a run as Ctrl-C does."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise(signum: int, frame) -> None:
    _received.append(signum)
    raise Terminated(signum)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """For the block: SIGTERM and SIGHUP raise :class:`Terminated` (those not ignored at the start);
    the previous handlers are restored after. Only in the main thread (elsewhere Python has no handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = {}
    for signum in STOP_SIGNALS:
        handler = signal.getsignal(signum)
        if handler is signal.SIG_IGN:  # nohup, or a parent that wants it ignored: leave it so
            continue
        previous[signum] = signal.signal(signum, _raise)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def received() -> int | None:
    """The first stop signal received during :func:`stop_signals` (None: none, or only Ctrl-C)."""
    return _received[0] if _received else None


def exit_code(default: int = 130) -> int:
    """The exit code of a command that training stopped: 128 + the stop signal, else ``default`` (Ctrl-C's 130)."""
    signum = received()
    return 128 + signum if signum is not None else default


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP until the block is done (then raise KeyboardInterrupt, or
    :class:`Terminated` for the latter two), so files are never half written. A signal that is
    ignored, or left to its default action, stays so."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {}
    for signum in (signal.SIGINT, *STOP_SIGNALS):
        handler = signal.getsignal(signum)
        if handler in (signal.SIG_IGN, signal.SIG_DFL) or (signum != signal.SIGINT and handler is None):
            continue  # not turned into an exception (a background job's ignored SIGINT too): nothing to defer
        previous[signum] = signal.signal(signum, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            restored = handler if handler is not None else signal.SIG_DFL
            if signum == signal.SIGINT and handler is None:
                restored = signal.default_int_handler
            signal.signal(signum, restored)
        if held:
            first = held[0]
            if first == signal.SIGINT:
                raise KeyboardInterrupt
            _received.append(first)
            raise Terminated(first)
