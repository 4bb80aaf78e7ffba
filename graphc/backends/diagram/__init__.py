"""Architecture diagrams: ``layout`` (layered, crossing-minimised geometry), ``style`` (the
words and colours of every format), ``scene`` (boxes, curves and text drawn through
matplotlib), ``draw`` (a page of panels) and ``render`` (``graphc render``: svg, png, pdf,
dot, mermaid); ``collapse`` (``--collapse``: chains of a collapsible kind as one box).
``style.KIND_STYLES`` is the diagram's table of node kinds: colours, key parameters, collapsibility.

Import order, bottom up: layout -> scene; style; draw (layout, scene, style) -> render.
May import: ``graphc.errors``, ``graphc.files``, ``graphc.ir`` (``render`` also loads spec files).
"""
