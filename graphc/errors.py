"""graphc's exceptions, and the helpers that word and print its messages.

Every problem a user can make in a spec (bad TOML, an unknown field, a cycle,
a shape that does not fit) is raised as a :class:`SpecError`. Each problem
carries where it is (file, line, node, field), what was expected, what was
found and a hint, so the CLI can print one clear paragraph and exit 2.
A command called wrongly raises :class:`UsageError` (exit 2), a failure at run
time :class:`RunError` (exit 1). :func:`printable` escapes control characters (and
bidirectional controls) in strings that come from files before they reach a terminal.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec."""

    message: str
    file: Path | None = None
    line: int | None = None
    column: int | None = None
    node: str | None = None
    field: str | None = None
    hint: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = str(self.file)
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            where += ": "
        subject = ""
        if self.node is not None:
            subject = f"node '{self.node}'"
            if self.field is not None:
                subject += f", field '{self.field}'"
            subject += ": "
        elif self.field is not None:
            subject = f"field '{self.field}': "
        text = f"{where}{subject}{self.message}"
        if self.hint:
            text += f" Hint: {self.hint}"
        return text


class SpecError(Exception):
    """A spec is malformed (form) or meaningless (graph). Holds one or more problems.

    Attributes mirror the first problem (``file``, ``line``, ``node``, ``field``,
    ``hint``); ``problems`` holds them all. ``str(error)`` is the user-facing
    message, one paragraph per problem.
    """

    def __init__(self, problems: Problem | Iterable[Problem]):
        self.problems: tuple[Problem, ...] = (problems,) if isinstance(problems, Problem) else tuple(problems)
        if not self.problems:
            raise ValueError("SpecError needs at least one problem")
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)

    @property
    def first(self) -> Problem:
        return self.problems[0]

    @property
    def file(self) -> Path | None:
        return self.first.file

    @property
    def line(self) -> int | None:
        return self.first.line

    @property
    def node(self) -> str | None:
        return self.first.node

    @property
    def field(self) -> str | None:
        return self.first.field

    @property
    def hint(self) -> str | None:
        return self.first.hint


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The most similar of ``choices`` to ``word``, if any is reasonably close."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A hint naming the closest valid choice, or listing the choices."""
    choices = list(choices)
    best = closest(word, choices)
    if best is not None:
        return f"did you mean '{best}'?"
    if choices and len(choices) <= 12:
        return "valid names are: " + ", ".join(f"'{c}'" for c in choices) + "."
    return None


class UsageError(Exception):
    """A command was called wrongly (bad option value, unknown format, unwritable path
    given as an option...). The CLI prints the message and exits 2."""


class RunError(Exception):
    """A runtime failure the user can fix (missing data, corrupt checkpoint, failed
    parity check...). The CLI prints the message and exits 1."""


# --------------------------------------------------------------------------- printing strings from files

# C0 controls (ESC starts terminal sequences, CR overwrites a line, BEL rings), DEL and the
# C1 controls (U+009B is a one-character CSI): shown as escapes, never sent to a terminal.
_CONTROLS = [*range(0x20), 0x7F, *range(0x80, 0xA0)]
# Bidirectional controls (embeddings, overrides, isolates, marks: they reorder what follows, so
# "report.md\u202eexe" shows as another name) and the line and paragraph separators: as \uXXXX.
_BIDI = [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C, 0x2028, 0x2029]
_ESCAPES = {code: {"\t": "\\t", "\n": "\\n", "\r": "\\r"}.get(chr(code), f"\\x{code:02x}") for code in _CONTROLS}
_ESCAPES |= {code: f"\\u{code:04x}" for code in _BIDI}
_ESCAPES_KEEP_NEWLINES = {code: text for code, text in _ESCAPES.items() if code != ord("\n")}


def printable(text: str, newlines: bool = False) -> str:
    """``text`` safe to print on a terminal: control characters as escapes (ESC as ``\\x1b``,
    CR as ``\\r``...), bidirectional controls too (U+202E as ``\\u202e``). For strings that
    come from files - class names, spec names and descriptions, run directories, metadata -
    which could otherwise recolour, rewrite, reorder or hide what graphc prints.
    ``newlines=True`` keeps line breaks (for multi-line messages)."""
    return text.translate(_ESCAPES_KEEP_NEWLINES if newlines else _ESCAPES)
