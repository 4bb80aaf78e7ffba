"""graphc: declarative graph specs (TOML) -> validated IR -> PyTorch modules.

Public API::

    spec = graphc.load_spec("specs/shared_conv.toml")   # parse + form checks
    graph = graphc.build_graph(spec)                     # meaning checks -> IR
    module = graphc.compile_graph(graph)                 # IR -> torch.fx.GraphModule
    module, graph = graphc.model_from_spec("specs/shared_conv.toml")

Every spec problem raises :class:`graphc.SpecError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from graphc.errors import Problem, SpecError
from graphc.ir.build import build_graph
from graphc.ir.graph import Graph, Node
from graphc.lang.load import load_spec, parse_spec
from graphc.lang.spec import Spec, json_schema

if TYPE_CHECKING:
    from torch import fx

__version__ = "0.5.0"

__all__ = [
    "Graph",
    "Node",
    "Problem",
    "Spec",
    "SpecError",
    "__version__",
    "build_graph",
    "compile_graph",
    "json_schema",
    "load_spec",
    "model_from_spec",
    "parse_spec",
]


def compile_graph(graph: Graph, seed: int | None = None) -> fx.GraphModule:
    """Compile the IR to a torch module; ``forward(image)`` returns ``{task: logits}``."""
    from graphc.backends.pytorch.compile import compile_graph as _compile  # torch is imported only when needed

    return _compile(graph, seed=seed)


def model_from_spec(path: str | Path, seed: int | None = None) -> tuple[fx.GraphModule, Graph]:
    """Load, validate and compile a spec file: returns ``(module, graph)``."""
    graph = build_graph(load_spec(path))
    return compile_graph(graph, seed=seed), graph
