"""Rendering graphc report's table: the terminal (rich), markdown, CSV and JSON.

The terminal and markdown share one grid (:func:`table_lines`): one line per variant,
mean +/- sample sd per metric, the best mean per column bold (among the rows measured
alike), the difference to the baseline with its marker, ``-`` where a row lacks the
metric, and the original study's numbers on a line beneath its specs. Markdown is one
table; the terminal gets one table per head (and one for cross-head metrics such as
mean_acc), split further into column groups that fit the terminal's width, so a header
is never cut. CSV and JSON carry the raw numbers (accuracies as fractions) for machines.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from graphc.errors import printable
from graphc.runtime.report.build import Delta, Report, lower_is_better
from graphc.runtime.runs.rundir import finite_json

ACROSS_HEADS = "across heads"  # the terminal table of metrics without a head (mean_acc)


def display_name(key: str) -> str:
    return key if lower_is_better(key) else f"{key} (%)"


def format_value(key: str, value: float) -> str:
    if math.isnan(value):
        return "nan"
    return f"{value:.3f}" if lower_is_better(key) else f"{100 * value:.2f}"


def format_delta(key: str, d: Delta) -> str:
    text = format_value(key, d.value)
    text = text if text.startswith("-") or text == "nan" else "+" + text
    return text + {True: " ~", False: "", None: " ?"}[d.within_sd]


def _epochs_text(epochs: list[int]) -> str:
    if not epochs:
        return "-"
    return str(epochs[0]) if epochs[0] == epochs[-1] else f"{epochs[0]}-{epochs[-1]}"


@dataclass
class Line:
    """One table line: a spec, or the original's reported numbers beneath it."""

    cells: list[str]
    bold: list[bool]
    reported: bool = False


def table_lines(report: Report, delta_sep: str = " ", columns: list[str] | None = None) -> tuple[list[str], list[Line]]:
    """Header and lines of the table (of ``columns``, default all), shared by the terminal and markdown."""
    columns = report.columns if columns is None else columns
    header = ["variant", "n", "epoch"] + [printable(display_name(k)) for k in columns]
    lines = []
    for row in report.rows:
        # labels come from run directories, maybe someone else's: no terminal controls
        name = (
            printable(row.label)
            + (" *" if row.marked else "")
            + (" (baseline)" if row.label == report.baseline else "")
        )
        cells, bold = [name, str(len(row.points)), _epochs_text(row.epochs)], [False, False, False]
        for key in columns:
            stat = row.stats.get(key)
            if stat is None:
                cells.append("-")
                bold.append(False)
                continue
            text = format_value(key, stat.mean)
            if stat.n > 1:
                text += f" ± {format_value(key, stat.std)}"
            if key in row.deltas:
                text += f"{delta_sep}({format_delta(key, row.deltas[key])})"
            cells.append(text)
            bold.append(report.is_best(row, key))
        lines.append(Line(cells, bold))
        if row.reported:
            values = row.reported["values"]
            cells = ["↳ reported", str(row.reported["seeds"]), str(row.reported["epoch"])]
            # two decimals, as the original printed them (its losses had no third digit)
            cells += [f"{values[k] * (1 if lower_is_better(k) else 100):.2f}" if k in values else "-" for k in columns]
            lines.append(Line(cells, [False] * len(cells), reported=True))
    return header, lines


def caption(report: Report) -> str:
    if report.split == "test":
        where = "test split, each run's best checkpoint (summary.json 'test')"
    elif report.epoch == "best":
        where = "validation split, each run at its best epoch (summary.json 'best', picked by train.select)"
    else:
        where = "validation split, each run at its last epoch (summary.json 'last')"
    parts = [
        f"One row per variant (spec and settings; the label names what differs, or the runs' --tag). "
        f"Mean ± sample standard deviation (ddof=1) over n seeds (no ± with one seed); {where}; "
        "epoch: the epochs the runs contribute. Losses are cross-entropy, accuracies in %; "
        "-: the row does not have that metric.",
    ]
    if any(k.endswith("/majority_acc") for k in report.columns):
        parts.append(
            "majority_acc: always answering the split's commonest class (a property of the split, not compared)."
        )
    if len(report.rows) > 1:
        parts.append(
            "Bold: the best mean per column (lowest loss, highest accuracy) among the rows measured on the same images."
        )
    if any(r.marked for r in report.rows):
        parts.append("*: includes runs still in progress, counted at their last completed epoch.")
    if report.baseline:
        parts.append(
            f"(+x/-x): difference to the baseline {printable(report.baseline)} (percentage points for accuracies), "
            "the mean of per-seed differences when both rows have the same seeds, else the difference of means; "
            "~: within one standard deviation of the difference (of the per-seed differences, or "
            "sqrt(sd1² + sd2²)), i.e. not beyond seed-to-seed noise; ?: too few seeds to tell."
        )
    if any(r.reported for r in report.rows):
        parts.append(
            "↳ reported: the original study's numbers (one run, after its last epoch 100; specs/reported_results.csv)."
        )
    return " ".join(parts)


def render_markdown(report: Report, plots: Iterable[Path] = ()) -> str:
    header, lines = table_lines(report)
    split = {"val": "validation", "test": "test"}[report.split]
    out = [f"# graphc report ({split})", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for line in lines:
        cells = [f"**{c}**" if b else c for c, b in zip(line.cells, line.bold)]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    out += ["", caption(report), ""]
    if report.notes or report.warnings:
        out += [f"- {printable(n)}" for n in report.notes + report.warnings] + [""]
    for path in plots:
        if path.suffix == ".png":
            out += [f"![{path.stem}]({path.name})", ""]
    return "\n".join(out)


def render_csv(report: Report) -> str:
    """One row per variant; raw numbers (accuracies as fractions), wide columns per metric."""
    has_reported = any(r.reported for r in report.rows)
    columns = ["variant", "spec", "spec_sha256", "tag", "n", "seeds", "epoch_min", "epoch_max", "in_progress"]
    for key in report.columns:
        columns += [f"{key} mean", f"{key} std", f"{key} n"]
        columns += [f"{key} reported"] if has_reported else []
        columns += [f"{key} delta", f"{key} delta_sd", f"{key} paired", f"{key} within_sd"] if report.baseline else []
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in report.rows:
        epochs = row.epochs
        record: dict = {
            "variant": printable(row.label),
            "spec": printable(row.spec),
            "spec_sha256": printable(row.variant.spec_sha256 or ""),
            "tag": printable(row.variant.tag or ""),
            "n": len(row.points),
            "seeds": " ".join(map(str, row.seeds)),
            "epoch_min": epochs[0] if epochs else "",
            "epoch_max": epochs[-1] if epochs else "",
            "in_progress": sum(p.marked for p in row.points),
        }
        for key in report.columns:
            stat = row.stats.get(key)
            if stat is not None:
                record.update({f"{key} mean": _num(stat.mean), f"{key} std": _num(stat.std), f"{key} n": stat.n})
            if has_reported and row.reported and key in row.reported["values"]:
                record[f"{key} reported"] = row.reported["values"][key]
            if key in row.deltas:
                d = row.deltas[key]
                within = d.within_sd
                record.update(
                    {
                        f"{key} delta": _num(d.value),
                        f"{key} delta_sd": _num(d.sd),
                        f"{key} paired": d.paired,
                        f"{key} within_sd": "" if within is None else within,
                    }
                )
        writer.writerow(record)
    return buffer.getvalue()


def _num(value: float) -> float | str:
    return "" if math.isnan(value) else value


def _json_num(value: float) -> float | None:
    return None if not math.isfinite(value) else value


NULL_NOTE = (
    "null in place of a number: not a number (e.g. the sd of a single seed, or a metric of a diverged run) "
    "or infinite; JSON has neither."
)


def report_dict(report: Report) -> dict:
    """Everything in the table, and each run's own numbers, as plain data."""
    rows = []
    for row in report.rows:
        metrics = {}
        for key in report.columns:
            if key not in row.stats:
                continue
            stat = row.stats[key]
            entry = {
                "mean": _json_num(stat.mean),
                "std": _json_num(stat.std),
                "n": stat.n,
                "by_seed": {str(s): _json_num(v) for s, v in stat.by_seed.items()},
            }
            if report.best(key, row) is not None:
                entry["best"] = report.is_best(row, key)
            if row.reported and key in row.reported["values"]:
                entry["reported"] = row.reported["values"][key]
            if key in row.deltas:
                d = row.deltas[key]
                entry["delta"] = {
                    "value": _json_num(d.value),
                    "sd": _json_num(d.sd),
                    "paired": d.paired,
                    "within_sd": d.within_sd,
                }
            metrics[key] = entry
        rows.append(
            {
                "variant": row.label,
                "spec": row.spec,
                "spec_sha256": row.variant.spec_sha256,
                "tag": row.variant.tag,
                "settings": dict(row.variant.settings),
                "measured_on": dict(row.measured),
                "n": len(row.points),
                "seeds": row.seeds,
                "marked": row.marked,
                "runs": [
                    {
                        "path": str(p.run.path),
                        "seed": p.run.seed,
                        "status": p.run.status,
                        "epoch": p.epoch,
                        "in_progress": p.marked,
                    }
                    for p in row.points
                ],
                "metrics": metrics,
                "reported": row.reported,
            }
        )
    return {
        "split": report.split,
        "epoch": report.epoch,
        "std": "sample (ddof=1)",
        "baseline": report.baseline,
        "columns": report.columns,
        "rows": rows,
        "caption": caption(report),
        "notes": report.notes,
        "warnings": report.warnings,
        "note": NULL_NOTE,
    }


def render_json(report: Report) -> str:
    """Valid JSON (RFC 8259): NaN and infinity written as null (the "note" field says so)."""
    return json.dumps(finite_json(report_dict(report)), indent=2, allow_nan=False)


def head_of(key: str, report: Report) -> str:
    """The head a metric belongs to, or ACROSS_HEADS (mean_acc and other metrics of no one head)."""
    tasks = {t for row in report.rows for run in row.runs for t in run.tasks}
    head = key.split("/", 1)[0]
    return head if "/" in key and head in tasks else ACROSS_HEADS


def _cell_width(text: str) -> int:
    return max(len(part) for part in text.split("\n"))


def rich_tables(report: Report, width: int = 160) -> list:
    """The terminal's tables: one per head (titled with it; its columns named without it), each
    split into column groups that fit ``width``.

    Headers are never cut: a metric column is as wide as its header and its widest cell.
    Variant labels longer than a third of the width wrap (at their spaces), so that more
    metric columns fit beside them.
    """
    from rich.markup import escape
    from rich.table import Table

    by_head: dict[str, list[str]] = {}
    for key in report.columns:
        by_head.setdefault(head_of(key, report), []).append(key)
    if ACROSS_HEADS in by_head:
        by_head[ACROSS_HEADS] = by_head.pop(ACROSS_HEADS)  # last
    tables = []
    for head, keys in by_head.items():
        # a difference under its value keeps columns narrow
        header, lines = table_lines(report, delta_sep="\n", columns=keys)
        if head != ACROSS_HEADS:  # the table's title names the head: "acc (%)" under "coarse", not "coarse/acc (%)"
            header[3:] = [printable(display_name(k.split("/", 1)[1])) for k in keys]
        widths = [max(len(header[i]), *(_cell_width(line.cells[i]) for line in lines)) for i in range(len(header))]
        widths[0] = min(widths[0], max(24, width // 3))
        fixed = sum(widths[:3]) + 3 * 3 + 1  # the label, n and epoch columns with their padding and borders
        groups: list[list[int]] = [[]]
        used = fixed
        for i in range(3, len(header)):
            if groups[-1] and used + widths[i] + 3 > width:
                groups.append([])
                used = fixed
            groups[-1].append(i)
            used += widths[i] + 3
        for n, group in enumerate(groups, 1):
            title = printable(head) + (f" ({n}/{len(groups)})" if len(groups) > 1 else "")
            table = Table(title=escape(title), title_justify="left")
            for i in (0, 1, 2, *group):
                table.add_column(
                    escape(header[i]),
                    justify="left" if i == 0 else "right",
                    overflow="fold",
                    min_width=None if i == 0 else widths[i],
                    max_width=widths[i] if i == 0 else None,
                    no_wrap=i != 0,
                )
            for line in lines:
                cells = [
                    f"[bold]{escape(line.cells[i])}[/]" if line.bold[i] else escape(line.cells[i])
                    for i in (0, 1, 2, *group)
                ]
                table.add_row(*cells, style="dim italic" if line.reported else None)
            tables.append(table)
    return tables
