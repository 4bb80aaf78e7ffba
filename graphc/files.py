"""The one writer: every file graphc writes for a user goes through here.

Diagrams, ONNX files, reports and their plots, confusion matrices, run directories
(spec copy, config, metrics, checkpoints, summary), data caches: each is written by
:func:`atomic_write` (or :func:`atomic_write_bytes` / :func:`atomic_write_text`) to a
temporary file beside the target, fsynced, then renamed over the target's name. So:

- a process killed at any moment leaves the previous complete file, never a torn one;
- a symbolic link planted at an output *file name* is replaced by the new file, never
  followed: the rename replaces the link itself, so the file it pointed to is untouched
  (a directory at the name is refused: the rename fails with IsADirectoryError);
- the *folders* on the way to the file are the user's: a folder they named (``-o DIR``,
  ``--out``, ``--confusion DIR``), or one above it, may be a link, and is followed;
- the new file gets the mode a plain ``open(path, "w")`` would give it: an existing
  regular file keeps its permission bits, a new one gets ``0o666 & ~umask`` (not the
  0600 of the temporary file).

Files opened for appending (a sweep's job logs) use :func:`open_append`, which refuses a
link at the name (``O_NOFOLLOW``). A folder graphc fills through another library's writer
(TensorBoard's event files) is checked by :func:`refuse_planted_link` first.

Also here, for names read from the file system: :func:`nfc_names` (labels in one Unicode
normal form, NFC) and :func:`control_characters` (what would break a line of a plan).
Imports nothing from graphc.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO, TextIO


def umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux's
    /proc/self/status), else by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    """The permission bits ``open(path, "w")`` would leave: an existing regular file's own, else
    0o666 less the umask. A link at the name does not count (it is replaced, not followed)."""
    try:
        existing = os.lstat(path)
    except OSError:
        existing = None
    if existing is not None and stat.S_ISREG(existing.st_mode):
        return stat.S_IMODE(existing.st_mode) & 0o777
    return 0o666 & ~umask()


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place:
    readers see the old file or the whole new one, never a torn one. A link at ``path`` is
    replaced, never followed; a directory there raises IsADirectoryError (an OSError)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = _mode_for(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if os.path.isdir(path) and not os.path.islink(path):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename != str(path):
            # name the file the caller asked for, not the temporary one (its message names the target)
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def open_append(path: Path) -> TextIO:
    """``path`` opened for appending text (created with the umask's mode when missing); a
    symbolic link at the name is refused (OSError ELOOP), never followed, and so is anything but a
    regular file (a FIFO, a device)."""
    path = Path(path)
    # O_NONBLOCK: a FIFO at the name fails at once (ENXIO) instead of waiting for a reader
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if path.is_symlink():
            raise OSError(
                errno.ELOOP, "a symbolic link graphc did not make is at that name; it is not followed", str(path)
            ) from None
        raise exc from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return os.fdopen(fd, "a", encoding="utf-8")


def refuse_planted_link(path: Path) -> None:
    """OSError (ELOOP) when ``path`` - a folder or file graphc makes itself inside a folder it
    owns - is a symbolic link: graphc never makes one there, and writing through it would
    write wherever it points."""
    if Path(path).is_symlink():
        raise OSError(
            errno.ELOOP,
            f"a symbolic link (to {os.readlink(path)}) is where graphc writes its own files; it is not followed",
            str(path),
        )


# --------------------------------------------------------------------------- names read from files


def nfc_names(names: Iterable[str]) -> tuple[list[str], list[tuple[str, ...]]]:
    """``names`` in Unicode normal form NFC (as typed on most systems; macOS folders hold NFD),
    and the groups of distinct names that differ only in normal form (they look the same,
    and are now one name): the caller warns about each group."""
    names = list(names)
    normal = [unicodedata.normalize("NFC", name) for name in names]
    spellings: dict[str, list[str]] = {}
    for name, nfc in zip(names, normal):
        if name not in spellings.setdefault(nfc, []):
            spellings[nfc].append(name)
    return normal, [tuple(group) for group in spellings.values() if len(group) > 1]


# C0 controls (newline, carriage return, NUL, ESC...), DEL and the C1 controls.
CONTROL_CHARACTERS = frozenset([*map(chr, range(0x20)), "\x7f", *map(chr, range(0x80, 0xA0))])


def control_characters(text: str) -> list[str]:
    """The control characters in ``text`` (in order, once each): a name or path holding one
    would print as something else, or break a line of a plan in two."""
    return list(dict.fromkeys(c for c in text if c in CONTROL_CHARACTERS))
