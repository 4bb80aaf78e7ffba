"""``graphc report --out DIR``: the report's files (results.md, .csv, .json, .html, .tex) and its learning-curve plots.

Every file goes through graphc's one writer (graphc.files.atomic_write): a symbolic link planted
at one of these names is replaced, never followed. A folder that cannot be written, or a directory
where a file goes, is a RunError naming it (exit 1).
"""

from __future__ import annotations

from pathlib import Path

from graphc.errors import RunError
from graphc.files import atomic_write_text
from graphc.runtime.report.build import Report
from graphc.runtime.report.plots import plot_curves
from graphc.runtime.report.render import render_csv, render_json, render_latex, render_markdown


def write_report(
    report: Report, out_dir: Path, json_file: bool = False, html_file: bool = False, latex_file: bool = False
) -> list[Path]:
    """results.md, results.csv (results.json, results.html) and the learning curves into ``out_dir``."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"{out_dir}: cannot create the output directory ({exc.strerror or exc}).") from None
    target = out_dir
    try:
        plots = plot_curves({r.label: r.runs for r in report.rows}, out_dir)
        texts = {"results.md": render_markdown(report, plots), "results.csv": render_csv(report)}
        if json_file:
            texts["results.json"] = render_json(report) + "\n"
        if latex_file:
            texts["results.tex"] = render_latex(report)
        if html_file:  # one self-contained page: the tables, the curves' SVGs and the specs' diagrams inline
            from graphc.runtime.report.html import render_html

            texts["results.html"] = render_html(report, plots)
        for name, text in texts.items():
            target = out_dir / name
            atomic_write_text(target, text)
    except OSError as exc:
        where = exc.filename or target
        raise RunError(
            f"cannot write the report in {out_dir}: {where}: {exc.strerror or exc}. Choose another -o/--out "
            "(a folder you can write to, with no directories at the names results.md, results.csv, results.json, "
            "results.html, results.tex)."
        ) from None
    return [out_dir / name for name in texts] + plots
