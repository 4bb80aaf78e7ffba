"""The 0.1.0 import path of :mod:`graphc.backends.diagram.render` (``from graphc.render import render``), kept working."""

from graphc.backends.diagram.render import FORMATS, render, render_specs

__all__ = ["FORMATS", "render", "render_specs"]
