"""Rendering graphc report's table: the terminal (rich), markdown, CSV and JSON.

The terminal and markdown share one grid (:func:`table_lines`): one line per spec,
mean +/- sample sd per metric, the best mean per column bold, the difference to the
baseline with its marker, and the original study's numbers on a line beneath its specs.
CSV and JSON carry the raw numbers (accuracies as fractions) for machines.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from runtime.report.build import Delta, Report, lower_is_better


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


def table_lines(report: Report, delta_sep: str = " ") -> tuple[list[str], list[Line]]:
    """Header and lines of the table, shared by the terminal and markdown."""
    header = ["spec", "n", "epoch"] + [display_name(k) for k in report.columns]
    lines = []
    for row in report.rows:
        name = row.spec + (" *" if row.marked else "") + (" (baseline)" if row.spec == report.baseline else "")
        cells, bold = [name, str(len(row.points)), _epochs_text(row.epochs)], [False, False, False]
        for key in report.columns:
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
            best = report.best(key)
            bold.append(best is not None and stat.mean == best)
        lines.append(Line(cells, bold))
        if row.reported:
            values = row.reported["values"]
            cells = ["↳ reported", str(row.reported["seeds"]), str(row.reported["epoch"])]
            # two decimals, as the original printed them (its losses had no third digit)
            cells += [f"{values[k] * (1 if lower_is_better(k) else 100):.2f}" if k in values else "-" for k in report.columns]
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
        f"Mean ± sample standard deviation (ddof=1) over n seeds (no ± with one seed); {where}; "
        "epoch: the epochs the runs contribute. Losses are cross-entropy, accuracies in %.",
    ]
    if len(report.rows) > 1:
        parts.append("Bold: the best mean per column (lowest loss, highest accuracy).")
    if any(r.marked for r in report.rows):
        parts.append("*: includes runs still in progress, counted at their last completed epoch.")
    if report.baseline:
        parts.append(
            f"(+x/-x): difference to the baseline {report.baseline} (percentage points for accuracies), "
            "the mean of per-seed differences when both specs have the same seeds, else the difference of means; "
            "~: within one standard deviation of the difference (of the per-seed differences, or "
            "sqrt(sd1² + sd2²)), i.e. not beyond seed-to-seed noise; ?: too few seeds to tell."
        )
    if any(r.reported for r in report.rows):
        parts.append(
            "↳ reported: the original study's numbers (one run, after its last epoch 100; "
            "specs/reported_results.csv)."
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
        out += [f"- {n}" for n in report.notes + report.warnings] + [""]
    for path in plots:
        if path.suffix == ".png":
            out += [f"![{path.stem}]({path.name})", ""]
    return "\n".join(out)


def render_csv(report: Report) -> str:
    """One row per spec; raw numbers (accuracies as fractions), wide columns per metric."""
    has_reported = any(r.reported for r in report.rows)
    columns = ["spec", "n", "seeds", "epoch_min", "epoch_max", "in_progress"]
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
            "spec": row.spec, "n": len(row.points), "seeds": " ".join(map(str, row.seeds)),
            "epoch_min": epochs[0] if epochs else "", "epoch_max": epochs[-1] if epochs else "",
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
                record.update({
                    f"{key} delta": _num(d.value), f"{key} delta_sd": _num(d.sd), f"{key} paired": d.paired,
                    f"{key} within_sd": "" if within is None else within,
                })
        writer.writerow(record)
    return buffer.getvalue()


def _num(value: float) -> float | str:
    return "" if math.isnan(value) else value


def _json_num(value: float) -> float | None:
    return None if math.isnan(value) else value


def report_dict(report: Report) -> dict:
    """Everything in the table, and each run's own numbers, as plain data."""
    rows = []
    for row in report.rows:
        metrics = {}
        for key in report.columns:
            if key not in row.stats:
                continue
            stat = row.stats[key]
            entry = {"mean": _json_num(stat.mean), "std": _json_num(stat.std), "n": stat.n,
                     "by_seed": {str(s): _json_num(v) for s, v in stat.by_seed.items()}}
            if report.best(key) is not None:
                entry["best"] = stat.mean == report.best(key)
            if row.reported and key in row.reported["values"]:
                entry["reported"] = row.reported["values"][key]
            if key in row.deltas:
                d = row.deltas[key]
                entry["delta"] = {"value": _json_num(d.value), "sd": _json_num(d.sd), "paired": d.paired, "within_sd": d.within_sd}
            metrics[key] = entry
        rows.append({
            "spec": row.spec, "n": len(row.points), "seeds": row.seeds, "marked": row.marked,
            "runs": [{"path": str(p.run.path), "seed": p.run.seed, "status": p.run.status,
                      "epoch": p.epoch, "in_progress": p.marked} for p in row.points],
            "metrics": metrics,
            "reported": row.reported,
        })
    return {
        "split": report.split, "epoch": report.epoch, "std": "sample (ddof=1)", "baseline": report.baseline,
        "columns": report.columns, "specs": rows, "caption": caption(report),
        "notes": report.notes, "warnings": report.warnings,
    }


def render_json(report: Report) -> str:
    return json.dumps(report_dict(report), indent=2)


def rich_table(report: Report):
    from rich.markup import escape
    from rich.table import Table

    header, lines = table_lines(report, delta_sep="\n")  # a difference under its value keeps columns narrow
    table = Table(caption=caption(report), caption_justify="left")
    for i, name in enumerate(header):
        # spec, n and epoch never wrap; metric cells may, between value and difference
        width = max(len(name), *(len(part) for line in lines for part in line.cells[i].split("\n")))
        table.add_column(escape(name), justify="left" if i == 0 else "right", min_width=width if i < 3 else None, no_wrap=i < 3)
    for line in lines:
        cells = [f"[bold]{escape(c)}[/]" if b else escape(c) for c, b in zip(line.cells, line.bold)]
        table.add_row(*cells, style="dim italic" if line.reported else None)
    return table
