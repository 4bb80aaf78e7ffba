"""Backends: each turns the IR (``graphc.ir.graph.Graph``) into something else.

- ``pytorch``  the nn.Modules of each node kind and IR -> ``torch.fx.GraphModule``
- ``diagram``  layered layout, drawing and ``graphc render`` (svg/png/pdf/dot/mermaid)
- ``onnx``     a compiled module -> a checked, verified ONNX file with metadata

May import: ``graphc.errors``, ``graphc.files``, ``graphc.ir`` (and ``graphc.lang`` where a
backend loads spec files for the command line). Backends never import each other's
internals, and never import ``runtime``.
"""
