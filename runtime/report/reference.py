"""``graphc report --reference FILE.csv``: a published table shown beside the rows it describes.

The file is a user's, so every line is checked and a bad one is a RunError naming the file and
line. Columns (a header line first; others are refused, so a misspelt one is not silently ignored):

    row     a row of the report: its label, a --tag, or a spec name
    metric  a metric key as the report names it: fine/acc, coarse/loss, mean_acc ...
    value   the published number; accuracies as fractions (67.5 % as 0.675), losses as they are
    sd      optional: the published standard deviation, in the value's units
    n       optional: the number of runs (seeds) behind it, a whole number >= 1

A reference row is shown beneath each report row it matches (the first of label, tag, spec name
that matches), with the report's mean minus the published value.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path

from graphc.errors import RunError, UsageError

COLUMNS = ("row", "metric", "value", "sd", "n")
REQUIRED = ("row", "metric", "value")
MAX_BYTES = 10_000_000  # a published table is small; a huge file is a mistake, not a table


def _number(text: str, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RunError(f"{where}: '{what}' is {text[:40]!r}, not a number. Fix that line of the file.") from None
    if not math.isfinite(value):
        raise RunError(f"{where}: '{what}' is {text[:40]!r}, not a finite number. Fix that line of the file.")
    return value


def load_reference(path: Path, is_fraction: Callable[[str], bool]) -> dict[str, dict]:
    """{row: {"source": file name, "values": {metric: {"value", "sd", "n", "line"}}}}, every line checked;
    ``is_fraction`` says which metrics are accuracies (build.is_fraction: passed in, so this module
    needs nothing of build's)."""
    if not path.is_file():
        raise UsageError(f"--reference {path}: no such file. Pass a CSV file with columns {', '.join(COLUMNS)}.")
    if path.stat().st_size > MAX_BYTES:
        raise RunError(f"{path}: larger than {MAX_BYTES // 1_000_000} MB; a reference table is a few lines.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: cannot read it as UTF-8 text ({exc}). Save the table as UTF-8 CSV.") from None
    reader = csv.reader(text.splitlines())
    try:
        return _read_table(path, reader, is_fraction)
    except csv.Error as exc:  # a field over csv's size limit, a NUL byte: not a table graphc can read
        raise RunError(
            f"{path}:{reader.line_num}: not CSV graphc can read ({exc}). Fix that line; a reference table is a "
            "few short lines."
        ) from None


def _read_table(path: Path, reader, is_fraction: Callable[[str], bool]) -> dict[str, dict]:
    header = next(reader, None)
    if header is None:
        raise RunError(f"{path}: empty; expected a header line with the columns {', '.join(COLUMNS)}.")
    header = [h.strip() for h in header]
    unknown = [h for h in header if h not in COLUMNS]
    missing = [h for h in REQUIRED if h not in header]
    if unknown or missing or len(set(header)) != len(header):
        raise RunError(
            f"{path}:1: the header is {', '.join(header)!r}; expected the columns row, metric, value and optionally "
            f"sd, n, each once{(' (unknown: ' + ', '.join(unknown) + ')') if unknown else ''}"
            f"{(' (missing: ' + ', '.join(missing) + ')') if missing else ''}."
        )
    table: dict[str, dict] = {}
    for line, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        where = f"{path}:{line}"
        if len(cells) != len(header):
            raise RunError(f"{where}: {len(cells)} fields, the header has {len(header)}. Fix that line of the file.")
        entry = {h: c.strip() for h, c in zip(header, cells)}
        for name in REQUIRED:
            if not entry[name]:
                raise RunError(f"{where}: '{name}' is empty. Every line needs a row, a metric and a value.")
        value = _number(entry["value"], "value", where)
        metric = entry["metric"]
        if is_fraction(metric) and not 0.0 <= value <= 1.0:
            raise RunError(
                f"{where}: {metric} is {entry['value']}, outside [0, 1]: write accuracies as fractions "
                f"(67.5 % as 0.675), as results.csv does."
            )
        sd = _number(entry["sd"], "sd", where) if entry.get("sd") else None
        if sd is not None and sd < 0:
            raise RunError(f"{where}: 'sd' is {entry['sd']}, negative. A standard deviation is >= 0.")
        n = None
        if entry.get("n"):
            # isascii: "²".isdigit() is true, and int("²") fails
            if not (entry["n"].isascii() and entry["n"].isdigit()) or int(entry["n"]) < 1:
                raise RunError(f"{where}: 'n' is {entry['n'][:40]!r}; expected a whole number of runs >= 1.")
            n = int(entry["n"])
        values = table.setdefault(entry["row"], {"source": path.name, "values": {}})["values"]
        if metric in values:
            raise RunError(
                f"{where}: row {entry['row']!r} metric {metric} was given already on line {values[metric]['line']}; "
                "keep one."
            )
        values[metric] = {"value": value, "sd": sd, "n": n, "line": line}
    if not table:
        raise RunError(f"{path}: no lines after the header; nothing to compare with.")
    return table
