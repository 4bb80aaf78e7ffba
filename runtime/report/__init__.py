"""``graphc report``: runs -> a comparison table (``build``), its tests and verdicts against a baseline
(``stats``), a user's published table beside it (``reference``), its text formats (``render``: terminal,
markdown, CSV, JSON, LaTeX), the HTML page (``html``), learning-curve plots (``plots``) and the files
on disk (``write``).

Imports graphc, ``graphc.runtime.runs`` and ``graphc.runtime.collapse`` (the collapsed-head rule);
nothing else of the runtime. ``build_report``,
``write_report`` and ``FORMATS`` are re-exported here (their 0.1.0 import path).
"""

from graphc.runtime.report.build import FORMATS as _TEXT_FORMATS
from graphc.runtime.report.build import build_report
from graphc.runtime.report.write import write_report

# --format: build's text formats, and html (results.html: runtime/report/html.py)
FORMATS = tuple(dict.fromkeys((*_TEXT_FORMATS, "html")))

__all__ = ["FORMATS", "build_report", "write_report"]
