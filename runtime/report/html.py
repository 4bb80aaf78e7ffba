"""``graphc report --format html``: results.html, the report as one self-contained page.

The page holds everything inline and fetches nothing (no CDN, no web fonts, no scripts or pictures
from elsewhere): its CSS and one small script are in the file, and its pictures are SVG files
embedded as ``data:`` images. A Content-Security-Policy in the page allows exactly that script and
that style sheet (by hash), pictures from ``data:`` only, and no connections at all.

What it shows, read from :func:`graphc.runtime.report.render.report_dict` (the same numbers as
results.json):

- one table per head (and one for metrics across heads), each with a caption: a row per variant
  with its number of seeds and epochs, then per metric the mean ± sample sd, its per-seed values
  (on hover, in the cell's title, and in a ``<details>`` that opens to list them with the cell's
  n), bold where report_dict marks it best, the original study's and a reference table's numbers
  where there are any; with a baseline, the difference to it and - when the report carries a
  statistical comparison per metric - its 95% interval and verdict (better, worse, no detectable
  difference, cannot tell) with the tests' p-values on hover (else the difference with its ~ and ?
  marks); heads that collapsed in some seeds (graphc.runtime.collapse) are marked;
- every table sorts by a click on a column header (numbers as numbers, missing values last in
  either direction; the header's ``aria-sort`` says how);
- a legend of the marks and verdicts, the caption, notes and warnings of the report;
- the learning curves (the SVG files :func:`graphc.runtime.report.plots.plot_curves` wrote);
- each variant's architecture diagram (graphc's diagram backend, drawn from the run's spec.toml);
  variants of one spec text share one diagram.

Every string from run files (labels, tags, spec names, metric and task names, notes, warnings)
is escaped (graphc.errors.printable for control and bidirectional characters, then
html.escape); nothing from run files ever reaches the script, whose text is fixed.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from graphc.errors import RunError, SpecError, UsageError, printable
from graphc.runtime.report.build import Report, lower_is_better
from graphc.runtime.report.render import ACROSS_HEADS, display_name, format_value, head_of, report_dict, signed

VERDICTS = {
    "better": ("better", "significantly better than the baseline (the tests are in the caption below the tables)"),
    "worse": ("worse", "significantly worse than the baseline"),
    "no detectable difference": ("same", "a test ran and found no significant difference"),
    "cannot tell": ("unknown", "no test could decide (the reason is written beneath: e.g. too few shared seeds)"),
}


def esc(text: Any) -> str:
    """Text from a run file as HTML text or attribute value: controls and bidi marks visible, markup inert."""
    return html.escape(printable(str(text)), quote=True)


def _fmt(key: str, value: float | None) -> str:
    """render.format_value of a number from report_dict (null there: not a number)."""
    return format_value(key, math.nan if value is None else value)


def _signed(key: str, value: float | None) -> str:
    return signed(key, math.nan if value is None else value)


def _unit(key: str) -> str:
    return "" if lower_is_better(key) else " (percentage points)"


def verdict_class(verdict: str) -> str:
    """The CSS class of a verdict; 'cannot tell (...)' with any reason is 'unknown'."""
    for name, (css, _) in VERDICTS.items():
        if verdict == name or verdict.startswith(name):
            return css
    return "unknown"


# --------------------------------------------------------------------------- the tables


def _epochs(row: dict) -> tuple[str, float | None]:
    epochs = sorted(r["epoch"] for r in row.get("runs", ()) if isinstance(r.get("epoch"), int))
    if not epochs:
        return "-", None
    return (str(epochs[0]) if epochs[0] == epochs[-1] else f"{epochs[0]}-{epochs[-1]}"), float(epochs[-1])


def _comparison_title(key: str, comparison: Mapping[str, Any]) -> str:
    lines = [f"against {comparison.get('baseline', 'the baseline')}: {comparison.get('verdict', '')}"]
    if comparison.get("diff_mean") is not None:
        lines.append(f"mean paired difference {_signed(key, comparison['diff_mean'])}{_unit(key)}")
    ci = comparison.get("ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        lines.append(f"95% confidence interval [{_signed(key, ci[0])}, {_signed(key, ci[1])}]")
    seeds = comparison.get("shared_seeds")
    if isinstance(seeds, list):
        lines.append(f"{len(seeds)} shared seed(s): {', '.join(map(str, seeds))}")
    for name, label in (("t_p", "paired t-test p"), ("t_p_holm", "its Holm-adjusted p")):
        if isinstance(comparison.get(name), (int, float)):
            lines.append(f"{label} = {comparison[name]:.3g}")
    test = comparison.get("image_test")
    if isinstance(test, Mapping):
        known = ("test", "images", "b", "c", "p", "p_holm")
        words = [
            f"{test.get('test', 'test on the images')} on {test.get('images', '?')} images",
            f"discordant b = {test.get('b', '?')}, c = {test.get('c', '?')}",
        ]
        words += [f"{label} = {test[k]:.3g}" for k, label in (("p", "p"), ("p_holm", "Holm p")) if _is_num(test.get(k))]
        words += [f"{k} = {v}" for k, v in test.items() if k not in known]
        lines.append("; ".join(words))
    return "\n".join(printable(str(line)) for line in lines)


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _comparison_parts(key: str, comparison: Mapping[str, Any]) -> tuple[str, str]:
    """(css class, the cell's lines) of a comparison with the baseline: difference, interval, verdict."""
    verdict = str(comparison["verdict"])
    css = verdict_class(verdict)
    lines = []
    if _is_num(comparison.get("diff_mean")):
        lines.append(f'<span class="diff">{esc(_signed(key, comparison["diff_mean"]))}</span>')
    ci = comparison.get("ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_is_num(v) for v in ci):
        lines.append(f'<span class="ci">[{esc(_signed(key, ci[0]))}, {esc(_signed(key, ci[1]))}]</span>')
    word, _, why = verdict.partition(" (")  # "cannot tell (2 shared seeds; ...)": the reason beneath, in small
    lines.append(f'<span class="verdict {css}">{esc(word if why.endswith(")") else verdict)}</span>')
    if why.endswith(")"):
        lines.append(f'<span class="why">{esc(why[:-1])}</span>')
    detail = _comparison_title(key, comparison)
    return css, f'<span class="delta" title="{esc(detail)}">{"".join(lines)}</span>'


def _reference_part(key: str, ref: Mapping[str, Any]) -> str:
    """Another source's number for this metric (report_dict's "reference"), and the row's difference to it."""
    text = f"{ref.get('source', 'reference')}: {_fmt(key, ref.get('value'))}"
    if _is_num(ref.get("sd")):
        text += f" ± {_fmt(key, ref['sd'])}"
    if ref.get("n") is not None:
        text += f" (n={ref['n']})"
    title = text + (f"; this row minus it: {_signed(key, ref['diff'])}" if _is_num(ref.get("diff")) else "")
    return f'<span class="reported" title="{esc(title)}">{esc(text)}</span>'


def metric_cell(
    key: str, metric: Mapping[str, Any] | None, baseline_row: bool, collapsed: tuple[int, int] | None = None
) -> str:
    """One table cell: the mean ± sd, per-seed values, n, difference and verdict; data-sort holds the mean.
    ``collapsed``: (seeds in which the metric's head collapsed, seeds of the row)."""
    if metric is None:
        return '<td class="num missing" data-sort="" title="this row does not have this metric">-</td>'
    mean, std, n = metric.get("mean"), metric.get("std"), metric.get("n", 0)
    text = _fmt(key, mean) + (f" ± {_fmt(key, std)}" if n > 1 else "")
    by_seed = metric.get("by_seed") or {}
    seeds_text = ", ".join(f"seed {s}: {_fmt(key, v)}" for s, v in by_seed.items())
    title = f"{display_name(key)}, n = {n}: {seeds_text}"
    classes = ["num"] + (["best"] if metric.get("best") else [])
    parts = [f'<span class="value">{esc(text)}</span>']
    if collapsed:
        parts.append(
            f'<span class="collapse-mark" title="the head collapsed in {collapsed[0]} of {collapsed[1]} seeds '
            f'(still in the mean; see the caption)">⚠ {collapsed[0]} of {collapsed[1]} collapsed</span>'
        )
    comparison = metric.get("comparison")
    delta = metric.get("delta")
    if isinstance(comparison, Mapping) and comparison.get("verdict"):
        css, part = _comparison_parts(key, comparison)
        classes.append(f"v-{css}")
        parts.append(part)
    elif isinstance(delta, Mapping):
        within = delta.get("within_sd")
        mark = {True: " ~", False: "", None: " ?"}.get(within, "")
        detail = (
            f"difference to the baseline{_unit(key)}: {_signed(key, delta.get('value'))}, sd of one difference "
            f"{_fmt(key, delta.get('sd'))} ({'paired by seed' if delta.get('paired') else 'difference of means'}); "
            + {True: "within one sd (seed noise)", False: "beyond one sd"}.get(within, "too few seeds to tell")
        )
        parts.append(f'<span class="delta" title="{esc(detail)}">{esc(_signed(key, delta.get("value")) + mark)}</span>')
    elif baseline_row:
        parts.append('<span class="delta base">baseline</span>')
    if isinstance(metric.get("reference"), Mapping):
        parts.append(_reference_part(key, metric["reference"]))
    if _is_num(metric.get("reported")):
        parts.append(
            '<span class="reported" title="the original study\'s number (specs/reported_results.csv)">'
            f"reported {esc(_reported(key, metric['reported']))}</span>"
        )
    items = "".join(f"<li>seed {esc(s)}: {esc(_fmt(key, v))}</li>" for s, v in by_seed.items())
    parts.append(f'<details class="seeds"><summary>n={n}</summary><ul>{items}</ul></details>')
    sort = repr(float(mean)) if _is_num(mean) else ""
    return f'<td class="{" ".join(classes)}" data-sort="{sort}" title="{esc(title)}">{"".join(parts)}</td>'


def _reported(key: str, value: float) -> str:
    return f"{value * (1 if lower_is_better(key) else 100):.2f}"


def _label_cell(row: Mapping[str, Any], index: int, baseline: str | None, collapsed: list[str]) -> str:
    label = str(row["variant"])
    marks = []
    if label == baseline:
        marks.append('<span class="mark base-mark" title="the baseline: differences are to this row">baseline</span>')
    if row.get("marked"):
        marks.append(
            '<span class="mark" title="includes runs still in progress, at their last completed epoch">*</span>'
        )
    for text in collapsed:
        marks.append(f'<span class="mark collapsed" title="{esc(text)}">collapsed</span>')
    swatch = f'<span class="swatch c{index % 20}" aria-hidden="true"></span>'
    return (
        f'<th scope="row" class="label" data-sort="{esc(label)}">{swatch}<span class="name">{esc(label)}</span>'
        f"{' '.join(marks)}</th>"
    )


def _collapsed_seeds(row: Mapping[str, Any]) -> dict[str, list]:
    """report_dict's "collapsed" of a row: {head: [seeds in which it collapsed]}, heads without seeds left out."""
    collapsed = row.get("collapsed") or {}
    if not isinstance(collapsed, Mapping):
        return {}
    return {str(t): (sorted(s) if isinstance(s, (list, tuple, set)) else [s]) for t, s in collapsed.items() if s}


def _collapsed(row: Mapping[str, Any], tasks: Iterable[str] | None) -> list[str]:
    """The collapsed-head marks (their hover text) of a row for the heads ``tasks`` (None: every head)."""
    return [
        f"head {printable(task)} collapsed in {len(seeds)} of {row.get('n', '?')} seeds (seed "
        + ", ".join(str(s) for s in seeds)
        + "): it answered little better than a constant class; those seeds are still in the mean"
        for task, seeds in _collapsed_seeds(row).items()
        if tasks is None or task in tasks
    ]


def head_table(data: Mapping[str, Any], head: str, keys: list[str], number: int) -> str:
    """One sortable table: the head's metrics (``keys``) for every row."""
    baseline = data.get("baseline")
    across = head == ACROSS_HEADS
    columns = [k if across else k.split("/", 1)[1] for k in keys]
    header = [
        '<th scope="col" data-type="text"><button type="button">variant</button></th>',
        '<th scope="col" data-type="num" data-better="higher" title="seeds in the row"><button type="button">n</button></th>',
        '<th scope="col" data-type="num" data-better="higher" title="the epochs the runs contribute">'
        '<button type="button">epoch</button></th>',
    ]
    for key, column in zip(keys, columns):
        better = "lower" if lower_is_better(key) else "higher"
        header.append(
            f'<th scope="col" data-type="num" data-better="{better}" data-key="{esc(key)}" '
            f'title="{esc(display_name(key))}: {better} is better; click to sort">'
            f'<button type="button">{esc(display_name(column))}</button></th>'
        )
    body = []
    for i, row in enumerate(data["rows"]):
        epochs_text, last = _epochs(row)
        marks = _collapsed(row, None if across else [head])
        cells = [
            _label_cell(row, i, baseline, marks),
            f'<td class="num" data-sort="{row.get("n", 0)}">{row.get("n", 0)}</td>',
            f'<td class="num" data-sort="{"" if last is None else last}">{esc(epochs_text)}</td>',
        ]
        collapsed = _collapsed_seeds(row)
        for key in keys:
            seeds = collapsed.get(key.split("/", 1)[0]) if "/" in key else None
            cells.append(
                metric_cell(
                    key,
                    row["metrics"].get(key),
                    baseline_row=row["variant"] == baseline,
                    collapsed=(len(seeds), row.get("n", len(seeds))) if seeds else None,
                )
            )
        body.append(f'<tr data-index="{i}">{"".join(cells)}</tr>')
    title = "Metrics across heads" if across else f"Head {printable(head)}"
    caption = (
        f"{title}: one row per variant; mean ± sample sd over its n seeds (hover a cell for each seed's value, "
        "or open its n). Click a column header to sort."
    )
    return (
        f'<section class="head" id="head-{number}"><h2>{esc(title)}</h2><div class="scroll">'
        f'<table class="sortable" data-head="{esc(head)}"><caption>{esc(caption)}</caption>'
        f"<thead><tr>{''.join(header)}</tr></thead><tbody>{''.join(body)}</tbody></table></div></section>"
    )


def variants_table(data: Mapping[str, Any]) -> str:
    rows = []
    for i, row in enumerate(data["rows"]):
        settings = row.get("settings") or {}
        listed = "".join(f"<li>{esc(k)} = {esc(v)}</li>" for k, v in settings.items())
        runs = "".join(
            f"<li>seed {esc(r.get('seed'))}: {esc(r.get('path'))} ({esc(r.get('status'))}, epoch {esc(r.get('epoch'))})</li>"
            for r in row.get("runs", ())
        )
        rows.append(
            f"<tr>{_label_cell(row, i, data.get('baseline'), _collapsed(row, None))}"
            f"<td>{esc(row.get('spec'))}</td><td>{esc(row.get('tag') or '-')}</td>"
            f"<td>{esc(', '.join(map(str, row.get('seeds', []))) or '-')}</td>"
            f"<td><details><summary>{len(settings)} settings</summary><ul>{listed}</ul></details></td>"
            f"<td><details><summary>{len(row.get('runs', ()))} runs</summary><ul>{runs}</ul></details></td></tr>"
        )
    return (
        '<section id="variants"><h2>Variants</h2><div class="scroll"><table class="variants">'
        "<caption>What each row is: its spec, tag, seeds, the settings that make it a variant, and its runs.</caption>"
        '<thead><tr><th scope="col">variant</th><th scope="col">spec</th><th scope="col">tag</th>'
        '<th scope="col">seeds</th><th scope="col">settings</th><th scope="col">runs</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div></section>"
    )


def legend(data: Mapping[str, Any]) -> str:
    """What the marks of the tables mean (the report's caption, under the tables, words the statistics)."""
    rows = data["rows"]
    metrics = [m for r in rows for m in r["metrics"].values()]
    compared = any(isinstance(m.get("comparison"), Mapping) for m in metrics)
    items = [
        "<li><em>n=</em>: the seeds a cell averages; open it for each seed's value (or hover the cell)</li>",
        '<li><span class="swatch c0" aria-hidden="true"></span> the row\'s colour in the learning curves</li>',
        "<li>-: the row does not have that metric; *: the row includes runs still in progress</li>",
    ]
    if any(m.get("best") for m in metrics):
        rule = (
            "a verdict of better than the baseline"
            if compared
            else "the best mean of its column among the rows measured on the same images"
        )
        items.insert(0, f'<li><span class="best-sample">bold</span>: {rule}</li>')
    if compared:
        items += [
            f'<li><span class="verdict {css}">{esc(name)}</span>: {esc(meaning)}</li>'
            for name, (css, meaning) in VERDICTS.items()
        ]
        items.append(
            "<li>above a verdict: the mean paired difference to the baseline (percentage points for accuracies) "
            "and its 95% confidence interval in brackets; hover for the tests' p-values</li>"
        )
    elif any("delta" in m for m in metrics):
        items.append(
            "<li>+x / -x: the difference to the baseline (percentage points for accuracies); ~: within one "
            "standard deviation of the difference (seed noise); ?: too few seeds to tell</li>"
        )
    if any(_collapsed_seeds(r) for r in rows):
        items.append(
            '<li><span class="mark collapsed">collapsed</span>, <span class="collapse-sample">⚠ k of n collapsed'
            "</span>: the head answered little better than a constant class in k of the row's n seeds "
            "(hover for which; the caption gives the rule)</li>"
        )
    if any(isinstance(m.get("reference"), Mapping) for m in metrics):
        items.append(
            "<li>in italics under a value: another source's number for the metric (hover for the difference)</li>"
        )
    if any(m.get("reported") is not None for m in metrics):
        items.append("<li>reported: the original study's number (specs/reported_results.csv)</li>")
    return f'<section id="legend"><h2>How to read the tables</h2><ul class="legend">{"".join(items)}</ul></section>'


# --------------------------------------------------------------------------- pictures


def svg_image(svg: bytes, alt: str, css: str = "") -> str:
    """An SVG file as an <img> of a data: URL: its own document, so its styles and ids cannot touch the page
    (or each other's), and it runs no script."""
    data = base64.b64encode(svg).decode("ascii")
    return f'<img class="{css}" src="data:image/svg+xml;base64,{data}" alt="{esc(alt)}" title="{esc(alt)}">'


def curve_figures(report: Report, plots: Iterable[Path]) -> list[tuple[str, bytes]]:
    """(title, SVG bytes) of each learning-curve figure that plot_curves wrote (its .svg files)."""
    from graphc.runtime.report.plots import describe, diagnostic_figures, file_stem, plotted_metrics

    groups = {r.label: r.runs for r in report.rows}
    titles = {
        file_stem(k.replace("/", "_")): describe(k)[0] + "; mean ± 1 sd over seeds" for k in plotted_metrics(groups)
    }
    for name in diagnostic_figures(groups):
        titles[file_stem(name)] = "gradient diagnostics: " + (
            "reuse shares" if name == "diag_share" else name[len("diag_") :]
        )
    figures = []
    for path in plots:
        path = Path(path)
        if path.suffix == ".svg":
            figures.append((titles.get(path.stem, path.stem), path.read_bytes()))
    return figures


def architecture_figures(data: Mapping[str, Any]) -> tuple[list[tuple[str, bytes]], list[str]]:
    """(title, SVG bytes) of each spec text's diagram, drawn from a run's spec.toml, and a note per spec
    that could not be drawn (the report goes on without its picture)."""
    import graphc
    from graphc.backends.diagram.render import render
    from graphc.runtime.runs.record import read_record, spec_of_run

    by_spec: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in data["rows"]:
        by_spec.setdefault((row.get("spec"), row.get("spec_sha256")), []).append(row)
    figures, problems = [], []
    for (spec, _), rows in by_spec.items():
        labels = ", ".join(printable(str(r["variant"])) for r in rows)
        title = f"architecture of {printable(str(spec))} (rows: {labels})"
        paths = [r["path"] for row in rows for r in row.get("runs", ())]
        if not paths:
            continue
        try:
            record = read_record(Path(paths[0]))
            graph = graphc.build_graph(spec_of_run(Path(paths[0]), record), classes=record.classes)
            figures.append((title, render(graph, "svg")))
        except (RunError, SpecError, UsageError, OSError, ValueError) as exc:
            problems.append(f"no diagram of {printable(str(spec))} ({labels}): {printable(str(exc).splitlines()[0])}")
    return figures, problems


def figure_grid(
    section: str, heading: str, figures: list[tuple[str, bytes]], css: str, intro: str, problems: Iterable[str] = ()
) -> str:
    items = "".join(
        f"<figure>{svg_image(svg, title, css)}<figcaption>{esc(title)}</figcaption></figure>" for title, svg in figures
    )
    listed = "".join(f"<li>{esc(p)}</li>" for p in problems)
    return (
        f'<section id="{section}"><h2>{esc(heading)}</h2><p class="caption">{esc(intro)}</p>'
        f'<div class="grid {css}">{items}</div>'
        + (f'<ul class="warnings">{listed}</ul>' if listed else "")
        + "</section>"
    )


# --------------------------------------------------------------------------- the page

STYLE = """
:root { color-scheme: light; --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --zebra: #f6f8fa; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
  color: var(--fg); margin: 1.5rem auto; max-width: 1400px; padding: 0 1rem; line-height: 1.4; }
h1 { font-size: 1.6rem; margin-bottom: 0.3rem; } h2 { font-size: 1.25rem; margin-top: 2rem; }
p.caption, .notes li, footer { color: var(--muted); font-size: 0.9rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 0.5rem 0; }
caption { caption-side: top; text-align: left; color: var(--muted); padding-bottom: 0.4rem; font-size: 0.85rem; }
th, td { border: 1px solid var(--line); padding: 0.3rem 0.55rem; vertical-align: top; }
tbody tr:nth-child(even) { background: var(--zebra); }
thead th { background: #eaeef2; position: sticky; top: 0; white-space: nowrap; }
thead th button { font: inherit; font-weight: 600; background: none; border: 0; padding: 0; cursor: pointer; color: inherit; }
thead th button::after { content: " \\2195"; color: #8c959f; }
thead th[aria-sort="ascending"] button::after { content: " \\25B2"; color: var(--fg); }
thead th[aria-sort="descending"] button::after { content: " \\25BC"; color: var(--fg); }
th.label { text-align: left; font-weight: normal; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num .value { white-space: nowrap; }
td.best .value, .best-sample { font-weight: 700; }
.collapse-sample { color: #a40e26; }
td.missing { color: #8c959f; }
.delta, .reported, .collapse-mark { display: block; font-size: 0.8rem; color: var(--muted); }
.delta .diff, .delta .ci { display: block; white-space: nowrap; }
.delta .why { display: block; font-size: 0.72rem; max-width: 12rem; margin-left: auto; }
.collapse-mark { color: #a40e26; white-space: nowrap; }
.reported { font-style: italic; }
details.seeds summary { font-size: 0.75rem; color: var(--muted); cursor: pointer; }
details.seeds ul, td details ul { margin: 0.2rem 0 0; padding-left: 1rem; text-align: left; font-size: 0.8rem; }
.verdict { display: inline-block; border-radius: 0.6rem; padding: 0 0.45rem; font-size: 0.75rem; border: 1px solid;
  white-space: nowrap; margin-top: 0.1rem; }
.verdict.better { background: #dafbe1; color: #116329; border-color: #4ac26b; }
.verdict.worse { background: #ffebe9; color: #a40e26; border-color: #ff8182; }
.verdict.same { background: #f6f8fa; color: #57606a; border-color: #d0d7de; }
.verdict.unknown { background: #fff8c5; color: #7d4e00; border-color: #d4a72c; }
.mark { display: inline-block; margin-left: 0.35rem; font-size: 0.72rem; border-radius: 0.3rem; padding: 0 0.3rem;
  background: #ddf4ff; color: #0550ae; }
.mark.collapsed { background: #ffebe9; color: #a40e26; }
.swatch { display: inline-block; width: 0.75rem; height: 0.75rem; border-radius: 2px; margin-right: 0.4rem;
  vertical-align: -1px; }
ul.legend { columns: 2 28rem; font-size: 0.9rem; }
nav ul { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 0.3rem 1.2rem; font-size: 0.9rem; }
.grid { display: grid; gap: 1rem; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); }
.grid.diagram { grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); }
figure { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 0.5rem; background: #fff; }
figure img { width: 100%; height: auto; display: block; }
figure img.diagram { max-height: 1100px; object-fit: contain; }
figcaption { font-size: 0.85rem; color: var(--muted); margin-top: 0.3rem; }
.warnings li { color: #7d4e00; }
"""

# Sorting: a click on a header's button sorts its table's rows by that column's data-sort values:
# numbers numerically, text naturally, missing ("") last in either direction. The first click on a
# metric puts the best first (data-better), a second click reverses. Nothing from run files is in here.
SCRIPT = """
(function () {
  "use strict";
  function value(row, col, numeric) {
    var cell = row.children[col];
    var raw = cell ? cell.getAttribute("data-sort") : null;
    if (raw === null || raw === "") return null;
    if (!numeric) return raw;
    var n = Number(raw);
    return isNaN(n) ? null : n;
  }
  function sortTable(table, col, descending) {
    var th = table.tHead.rows[0].cells[col];
    var numeric = th.getAttribute("data-type") === "num";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, col, numeric), y = value(b, col, numeric);
      if (x === null || y === null) {
        if (x === null && y === null) return Number(a.dataset.index) - Number(b.dataset.index);
        return x === null ? 1 : -1;
      }
      var c = numeric ? x - y : String(x).localeCompare(String(y), undefined, {numeric: true});
      if (descending) c = -c;
      return c !== 0 ? c : Number(a.dataset.index) - Number(b.dataset.index);
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell) { cell.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    table.setAttribute("data-sorted-by", String(col));
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      var button = th.querySelector("button");
      if (!button) return;
      button.addEventListener("click", function () {
        var current = th.getAttribute("aria-sort");
        var descending;
        if (current) descending = current === "ascending";
        else descending = th.getAttribute("data-better") === "higher";
        sortTable(table, col, descending);
      });
    });
  });
  document.documentElement.setAttribute("data-ready", "sortable");
})();
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _swatch_css(report: Report) -> str:
    from graphc.runtime.report.plots import spec_colours

    colours = spec_colours([r.label for r in report.rows])
    return "".join(
        f".swatch.c{i} {{ background: #{''.join(f'{round(255 * c):02x}' for c in colour[:3])}; }}\n"
        for i, colour in enumerate(list(colours.values())[:20])
    )


def render_html(report: Report, plots: Iterable[Path] = (), diagrams: bool = True) -> str:
    """results.html: the tables per head, legend, notes, learning curves (the .svg files of ``plots``)
    and, with ``diagrams``, each spec's architecture diagram; one file that needs nothing else."""
    data = report_dict(report)
    by_head: dict[str, list[str]] = {}
    for key in data["columns"]:
        by_head.setdefault(head_of(key, report), []).append(key)
    if ACROSS_HEADS in by_head:
        by_head[ACROSS_HEADS] = by_head.pop(ACROSS_HEADS)  # last, as in the terminal
    split = {"val": "validation", "test": "test"}.get(data["split"], str(data["split"]))
    parts = [f"<h1>graphc report ({esc(split)} split)</h1>"]
    summary = f"{len(data['rows'])} variant(s), {sum(r.get('n', 0) for r in data['rows'])} run(s) in the tables"
    if data.get("baseline"):
        summary += f"; baseline: {printable(str(data['baseline']))}"
    parts.append(f"<p>{esc(summary)}.</p>")
    nav = "".join(
        f'<li><a href="#head-{i}">{esc("across heads" if h == ACROSS_HEADS else h)}</a></li>'
        for i, h in enumerate(by_head)
    )
    nav += '<li><a href="#delta-m">Δm</a></li>' if report.delta_m is not None else ""
    parts.append(
        f'<nav aria-label="contents"><ul>{nav}<li><a href="#curves">learning curves</a></li>'
        '<li><a href="#architectures">architectures</a></li><li><a href="#variants">variants</a></li></ul></nav>'
    )
    parts.append(legend(data))
    for i, (head, keys) in enumerate(by_head.items()):
        parts.append(head_table(data, head, keys, i))
    if report.delta_m is not None:  # --delta-m: the multi-task rows against their single-task models
        from graphc.runtime.report.delta_m import html_section

        parts.append(html_section(report.delta_m))
    parts.append(f'<p class="caption">{esc(data.get("caption", ""))}</p>')
    notes, warnings = data.get("notes") or [], data.get("warnings") or []
    if notes:
        parts.append(
            '<section class="notes"><h2>Notes</h2><ul>'
            + "".join(f"<li>{esc(n)}</li>" for n in notes)
            + "</ul></section>"
        )
    if warnings:
        parts.append(
            '<section class="notes warnings"><h2>Warnings</h2><ul>'
            + "".join(f"<li>{esc(w)}</li>" for w in warnings)
            + "</ul></section>"
        )
    curves = curve_figures(report, plots)
    if curves:
        parts.append(
            figure_grid(
                "curves",
                "Learning curves",
                curves,
                "curve",
                "One colour per row (the swatch beside its name in the tables); validation solid with dots, "
                "training dashed with open squares; bands: ± 1 sample sd over seeds.",
            )
        )
    if diagrams:
        figures, problems = architecture_figures(data)
        if figures or problems:
            parts.append(
                figure_grid(
                    "architectures",
                    "Architectures",
                    figures,
                    "diagram",
                    "Each spec's graph as trained (the run's spec.toml), drawn by graphc render; "
                    "rows of one spec text share a diagram.",
                    problems,
                )
            )
    parts.append(variants_table(data))
    footer = [data.get(k) for k in ("footer", "statistics") if isinstance(data.get(k), str)]
    footer += [str(data.get("note", ""))]
    parts.append("<footer>" + "".join(f"<p>{esc(t)}</p>" for t in footer if t) + "</footer>")
    style = STYLE + _swatch_css(report)
    csp = (
        f"default-src 'none'; img-src data:; style-src {_csp_hash(style)}; script-src {_csp_hash(SCRIPT)}; "
        "base-uri 'none'; form-action 'none'"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>graphc report ({esc(split)})</title><style>{style}</style></head>\n<body>\n"
        + "\n".join(parts)
        + f"\n<script>{SCRIPT}</script>\n</body></html>\n"
    )
