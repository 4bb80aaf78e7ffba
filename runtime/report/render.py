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
from graphc.runtime.collapse import COLLAPSE_RULE
from graphc.runtime.report.build import COUNTS, Comparison, Delta, Report, Row, lower_is_better
from graphc.runtime.report.delta_m import CSV_COLUMNS as DELTA_M_CSV
from graphc.runtime.report.delta_m import as_dict as delta_m_dict
from graphc.runtime.report.delta_m import cell as delta_m_cell
from graphc.runtime.report.delta_m import csv_fields as delta_m_csv
from graphc.runtime.report.delta_m import markdown as delta_m_markdown
from graphc.runtime.report.delta_m import rich_table as delta_m_rich
from graphc.runtime.report.stats import ALPHA, MIN_SEEDS_FOR_T
from graphc.runtime.runs.rundir import finite_json

ACROSS_HEADS = "across heads"  # the terminal table of metrics without a head (mean_acc)


# Higher-is-better figures that are not fractions: printed as numbers, never as percentages
# (a regression head's R^2 runs from -inf to 1; -3.0 is not "-300%").
PLAIN_NUMBERS = ("r2",)


def display_name(key: str) -> str:
    last = key.split("/")[-1]
    return key if lower_is_better(key) or last in COUNTS or last in PLAIN_NUMBERS else f"{key} (%)"


def format_value(key: str, value: float) -> str:
    if math.isnan(value):
        return "nan"
    if key.split("/")[-1] in COUNTS:  # TASK/labelled: images; a mean over seeds whose splits differ may not be whole
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    return f"{value:.3f}" if lower_is_better(key) or key.split("/")[-1] in PLAIN_NUMBERS else f"{100 * value:.2f}"


def signed(key: str, value: float) -> str:
    text = format_value(key, value)
    return text if text.startswith("-") or text == "nan" else "+" + text


def format_delta(key: str, d: Delta) -> str:
    return signed(key, d.value) + {True: " ~", False: "", None: " ?"}[d.within_sd]


def format_comparison(key: str, c: Comparison, sep: str = ", ", unpaired: Delta | None = None) -> str:
    """``+5.17 [-1.20, +11.54], better``: the mean paired difference, its 95% interval (when n >= 2), the
    verdict; with no shared seed, the difference of means (``unpaired``) and why no verdict."""
    text = signed(key, c.paired.mean if c.paired.n or unpaired is None else unpaired.value)
    if not math.isnan(c.paired.ci95[0]):
        text += f" [{signed(key, c.paired.ci95[0])}, {signed(key, c.paired.ci95[1])}]"
    return f"{text}{sep}{c.verdict}"


def collapse_mark(row: Row, key: str) -> str:
    """``⚠ 1 of 2 seeds collapsed`` for the cells of a head that collapsed in some seeds, else ''."""
    seeds = row.collapsed.get(key.split("/", 1)[0]) if "/" in key else None
    return f"⚠ {len(seeds)} of {len(row.points)} seeds collapsed" if seeds else ""


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
    whole = columns is None  # the whole table (markdown) also gets the Δm column (--delta-m); the terminal's own table
    columns = report.columns if columns is None else columns
    header = ["variant", "n", "epoch"] + [printable(display_name(k)) for k in columns]
    delta_m = report.delta_m if whole else None
    header += ["Δm (%)"] if delta_m is not None else []
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
            mark = collapse_mark(row, key)
            if mark:
                text += f" {mark}"
            if key in row.comparisons:
                text += f"{delta_sep}({format_comparison(key, row.comparisons[key], ', ' if delta_sep == ' ' else delta_sep, row.deltas.get(key))})"
            elif key in row.deltas:
                text += f"{delta_sep}({format_delta(key, row.deltas[key])})"
            cells.append(text)
            bold.append(report.is_best(row, key))
        if delta_m is not None:
            entry = delta_m.entries.get(row.label)
            cells.append("-" if entry is None else delta_m_cell(entry))
            bold.append(False)
        lines.append(Line(cells, bold))
        if row.reference:
            values = row.reference["values"]
            ns = {v["n"] for v in values.values() if v["n"] is not None}
            cells = [f"↳ {printable(row.reference['source'])}", str(ns.pop()) if len(ns) == 1 else "-", "-"]
            for key in columns:
                ref = values.get(key)
                if ref is None:
                    cells.append("-")
                    continue
                text = format_value(key, ref["value"])
                if ref["sd"] is not None:
                    text += f" ± {format_value(key, ref['sd'])}"
                stat = row.stats.get(key)
                if stat is not None and not math.isnan(stat.mean):
                    text += f"{delta_sep}(row {signed(key, stat.mean - ref['value'])})"
                cells.append(text)
            lines.append(Line(cells, [False] * len(cells), reported=True))
        if row.reported:
            values = row.reported["values"]
            cells = ["↳ reported", str(row.reported["seeds"]), str(row.reported["epoch"])]
            # two decimals, as the original printed them (its losses had no third digit)
            cells += [f"{values[k] * (1 if lower_is_better(k) else 100):.2f}" if k in values else "-" for k in columns]
            cells += ["-"] if delta_m is not None else []
            lines.append(Line(cells, [False] * len(cells), reported=True))
    return header, lines


def caption(report: Report) -> str:
    if report.evaluation:
        where = f"test split, each run's saved evaluation '{printable(report.evaluation)}' (RUN/evaluations/)"
    elif report.split == "test":
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
    if any(r.marked for r in report.rows):
        parts.append("*: includes runs still in progress, counted at their last completed epoch.")
    if any(r.collapsed for r in report.rows):
        parts.append(
            "⚠ k of n seeds collapsed: in k seeds that head answered little better than a constant class "
            "(accuracy within 1 point of the majority class's, or balanced accuracy within 1 point of chance); "
            "those seeds are still in the mean."
        )
    if report.baseline:
        parts.append(legend(report))
    elif len(report.rows) > 1:
        parts.append(
            "No bold: without --baseline nothing is tested, and the highest mean alone is no evidence of a difference."
        )
    if any(r.reported for r in report.rows):
        parts.append(
            "↳ reported: the original study's numbers (one run, after its last epoch 100; specs/reported_results.csv)."
        )
    return " ".join(parts)


def legend(report: Report) -> str:
    """What the differences, intervals, tests and verdicts mean (docs/reports.md says the same)."""
    return (
        f"(diff [lo, hi], verdict): the row minus the baseline {printable(report.baseline)} (percentage points for "
        "accuracies), the mean of the per-seed differences over the seeds both rows have (paired by seed), with "
        "its 95% confidence interval (Student t, n-1 degrees of freedom; none with one shared seed; for that row "
        "alone, not adjusted for the other rows: an interval that excludes 0 can still lose its Holm test). Tests, "
        f"two-sided at alpha {ALPHA}: the paired t-test over shared seeds; for a head's accuracy (TASK/acc) with "
        "per-image predictions of the same test images, McNemar's exact test (binomial on the discordant "
        "images b, c) on the counts pooled over the shared seeds' pairs of runs. Each test's p is Holm-adjusted "
        f"across the rows compared with the baseline, per metric. Verdict: with >= {MIN_SEEDS_FOR_T} shared seeds "
        f"the t-test decides, with fewer the image test: better/worse when its Holm p < {ALPHA}, the direction "
        "that of the mean difference (lower loss, higher accuracy is better), else no detectable difference; "
        "cannot tell (why) when neither can decide (fewer than 3 shared seeds and no image test). "
        "Bold: only a verdict of better (significantly better than the baseline)."
    )


def render_markdown(report: Report, plots: Iterable[Path] = ()) -> str:
    header, lines = table_lines(report)
    split = {"val": "validation", "test": "test"}[report.split]
    out = [f"# graphc report ({split})", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for line in lines:
        cells = [f"**{c}**" if b else c for c, b in zip(line.cells, line.bold)]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    out += ["", caption(report), ""]
    if report.delta_m is not None:
        out += delta_m_markdown(report.delta_m)
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
        columns += [f"{key} {c}" for c in COMPARISON_CSV] if report.baseline else []
    columns += list(DELTA_M_CSV) if report.delta_m is not None else []
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
            if key in row.comparisons:
                block = comparison_dict(row.comparisons[key])
                image = block["image_test"] or {}
                flat = {
                    "diff_mean": block["diff_mean"],
                    "ci95_lo": block["ci95"][0],
                    "ci95_hi": block["ci95"][1],
                    "t_p": block["t_p"],
                    "t_p_holm": block["t_p_holm"],
                    "mcnemar_b": image.get("b"),
                    "mcnemar_c": image.get("c"),
                    "mcnemar_p": image.get("p"),
                    "mcnemar_p_holm": image.get("p_holm"),
                    "verdict": block["verdict"],
                }
                record.update({f"{key} {k}": "" if v is None else v for k, v in flat.items()})
        if report.delta_m is not None:
            record.update(delta_m_csv(report.delta_m, row.label))
        writer.writerow(record)
    return buffer.getvalue()


COMPARISON_CSV = (
    "diff_mean",
    "ci95_lo",
    "ci95_hi",
    "t_p",
    "t_p_holm",
    "mcnemar_b",
    "mcnemar_c",
    "mcnemar_p",
    "mcnemar_p_holm",
    "verdict",
)


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
            if key in row.comparisons:
                entry["best"] = report.is_best(row, key)  # verdict "better" than the baseline
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
            if key in row.comparisons:
                entry["comparison"] = comparison_dict(row.comparisons[key])
            if row.reference and key in row.reference["values"]:
                ref = row.reference["values"][key]
                entry["reference"] = {
                    "source": row.reference["source"],
                    **{k: ref[k] for k in ("value", "sd", "n", "line")},
                    "diff": _json_num(stat.mean - ref["value"]),
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
                "collapsed": row.collapsed,  # {head: [seeds whose evaluation collapsed]}
            }
        )
    return {
        "split": report.split,
        "epoch": report.epoch,
        "std": "sample (ddof=1)",
        "baseline": report.baseline,
        "evaluation": report.evaluation,
        "alpha": ALPHA,
        "collapse_rule": COLLAPSE_RULE,
        "columns": report.columns,
        "rows": rows,
        "caption": caption(report),
        "notes": report.notes,
        "warnings": report.warnings,
        "note": NULL_NOTE,
        **({"delta_m": delta_m_dict(report.delta_m)} if report.delta_m is not None else {}),
    }


def comparison_dict(c: Comparison) -> dict:
    """results.json's comparison block of one metric of one row (docs/reports.md)."""
    image = None
    if c.image is not None:
        image = {
            "test": c.image.test,
            "images": c.image.images,
            "b": c.image.b,
            "c": c.image.c,
            "p": _json_num(c.image.p),
            "p_holm": _json_num(c.image.p_holm),
        }
    return {
        "baseline": c.baseline,
        "shared_seeds": c.shared_seeds,
        "diff_mean": _json_num(c.paired.mean),
        "ci95": [_json_num(c.paired.ci95[0]), _json_num(c.paired.ci95[1])],
        "t_p": _json_num(c.paired.p),
        "t_p_holm": _json_num(c.t_p_holm),
        "image_test": image,
        "verdict": c.verdict,
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
    if report.delta_m is not None:
        tables.append(delta_m_rich(report.delta_m))
    return tables


# --------------------------------------------------------------------------- LaTeX

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Text from run folders (labels, metric names) as LaTeX text: every special character escaped, so a
    label can neither break the table nor run a command."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in printable(text))


def _latex_value(key: str, value: float) -> str:
    return format_value(key, value).replace("nan", "--")


def render_latex(report: Report) -> str:
    """A booktabs table: one row per variant, ``mean $\\pm$ sd`` (accuracies in %), the difference to the
    baseline in small type, bold only where the verdict is better; a footnote with n, the tests and the
    collapsed heads. Needs ``\\usepackage{booktabs}``."""
    columns = report.columns
    split = {"val": "validation", "test": "test"}[report.split]
    out = [
        "% graphc report: needs \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        "\\begin{tabular}{l" + "r" * (1 + len(columns)) + "}",
        "\\toprule",
        " & ".join(["Variant", "$n$"] + [latex_escape(display_name(k)) for k in columns]) + " \\\\",
        "\\midrule",
    ]
    collapsed_any = False
    for row in report.rows:
        label = latex_escape(row.label) + (" (baseline)" if row.label == report.baseline else "")
        cells = [label, str(len(row.points))]
        for key in columns:
            stat = row.stats.get(key)
            if stat is None:
                cells.append("--")
                continue
            text = _latex_value(key, stat.mean)
            if stat.n > 1:
                text += f" $\\pm$ {_latex_value(key, stat.std)}"
            if report.is_best(row, key):
                text = f"\\textbf{{{text}}}"
            if key in row.comparisons:
                c = row.comparisons[key]
                unpaired = row.deltas.get(key)  # no shared seeds: the difference of the means, as markdown shows
                shown = c.paired.mean if c.paired.n or unpaired is None else unpaired.value
                text += f" {{\\scriptsize ({signed(key, shown)})}}" if math.isfinite(shown) else ""
            if collapse_mark(row, key):
                text += "$^\\dagger$"
                collapsed_any = True
            cells.append(text)
        out.append(" & ".join(cells) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}"]
    notes = [
        f"Mean $\\pm$ sample standard deviation over $n$ seeds ({split} split); accuracies in \\%, losses cross-entropy."
    ]
    if report.baseline:
        notes.append(
            f"In parentheses: the mean per-seed difference to {latex_escape(report.baseline)}. Bold: significantly "
            f"better than the baseline (two-sided, $\\alpha = {ALPHA}$, Holm-adjusted across rows): paired $t$-test "
            f"over shared seeds when $n \\geq {MIN_SEEDS_FOR_T}$, else for accuracies McNemar's exact test on the "
            "same test images, discordant counts pooled over seeds."
        )
    else:
        notes.append("No test was run (no baseline), so nothing is bold.")
    if collapsed_any:
        notes.append(
            "$^\\dagger$ The head collapsed (answers little better than a constant class) in some seeds: "
            + "; ".join(
                f"{latex_escape(r.label)}: {latex_escape(t)} in {len(s)} of {len(r.points)}"
                for r in report.rows
                for t, s in r.collapsed.items()
            )
            + ". Included in the mean."
        )
    out += ["\\par\\smallskip{\\footnotesize " + " ".join(notes) + "}", "\\end{table}", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- per seed


def per_seed_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """--per-seed: header and one line per (row, seed) with that seed's value of every metric."""
    header = ["variant", "seed", "epoch"] + [printable(display_name(k)) for k in report.columns]
    lines = []
    for row in report.rows:
        for point in sorted(row.points, key=lambda p: p.run.seed):
            seed = point.run.seed
            cells = [printable(row.label), str(seed), "-" if point.epoch is None else str(point.epoch)]
            for key in report.columns:
                stat = row.stats.get(key)
                value = None if stat is None else stat.by_seed.get(seed)
                text = "-" if value is None else format_value(key, value)
                if value is not None and "/" in key and key.split("/", 1)[0] in point.collapsed:
                    text += " ⚠ collapsed"
                cells.append(text)
            lines.append(cells)
    return header, lines


def per_seed_table(report: Report):
    """The per-seed values as one rich table."""
    from rich.markup import escape
    from rich.table import Table

    header, lines = per_seed_rows(report)
    table = Table(title="per seed", title_justify="left")
    for i, name in enumerate(header):
        table.add_column(escape(name), justify="left" if i == 0 else "right", overflow="fold")
    for cells in lines:
        table.add_row(*(escape(c) for c in cells))
    return table
