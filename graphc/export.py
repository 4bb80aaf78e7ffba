"""The 0.1.0 import path of ONNX export (``from graphc.export import export_onnx, read_metadata``), kept working.

0.1.0's ``export_onnx(spec, out, checkpoint=RUN)`` finds a run's weights and data, which
is the runtime's job: it now lives in :mod:`runtime.export`, and the export itself in
:mod:`graphc.backends.onnx`. This module is the one place in ``graphc`` besides the
command line that imports ``runtime`` (tests/test_layers.py names both), and only so
that code written against 0.1.0 keeps working.
"""

from graphc.backends.onnx import read_metadata
from runtime.export import export_onnx

__all__ = ["export_onnx", "read_metadata"]
