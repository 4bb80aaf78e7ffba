"""``graphc report``: runs -> a comparison table (``build``), its text formats (``render``),
learning-curve plots (``plots``) and the files on disk (``write``).

Imports graphc and ``graphc.runtime.runs``; nothing else of the runtime. ``build_report``,
``write_report`` and ``FORMATS`` are re-exported here (their 0.1.0 import path).
"""

from graphc.runtime.report.build import FORMATS, build_report
from graphc.runtime.report.write import write_report

__all__ = ["FORMATS", "build_report", "write_report"]
