"""``graphc report --out DIR``: the report's files (results.md, .csv, .json) and its learning-curve plots."""

from __future__ import annotations

from pathlib import Path

from graphc.errors import RunError
from graphc.runtime.report.build import Report
from graphc.runtime.report.plots import plot_curves
from graphc.runtime.report.render import render_csv, render_json, render_markdown


def write_report(report: Report, out_dir: Path, json_file: bool = False) -> list[Path]:
    """results.md, results.csv (results.json) and the learning curves into ``out_dir``."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"{out_dir}: cannot create the output directory ({exc.strerror}).") from None
    plots = plot_curves({r.label: r.runs for r in report.rows}, out_dir)
    written = [out_dir / "results.md", out_dir / "results.csv"]
    written[0].write_text(render_markdown(report, plots), encoding="utf-8")
    written[1].write_text(render_csv(report), encoding="utf-8")
    if json_file:
        written.append(out_dir / "results.json")
        written[-1].write_text(render_json(report) + "\n", encoding="utf-8")
    return written + plots
