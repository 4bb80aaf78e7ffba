"""IR -> torch: a ``torch.fx.GraphModule`` with a straight-line generated forward.

Each spec node becomes a submodule named after it (or, for concat and the
reuse of a head's output, a plain function call), and the generated
``forward(image)`` returns ``{task: logits}`` in spec order. Which one, per
node kind, is the table :data:`LOWERINGS` (the modules are in ``blocks``). Because the
forward is ordinary generated Python (see ``print(module.code)``) there is no
per-call interpretation of the graph, and torch.compile, ONNX export and
DistributedDataParallel see a normal module.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import fx, nn

from graphc.backends.pytorch.blocks import ConvBlock, FCBlock, Head, dropout, initialise, pool2d
from graphc.ir.graph import Graph, Node


def _class_name(spec_name: str) -> str:
    words = re.split(r"[^A-Za-z0-9]+", spec_name)
    name = "".join(w[:1].upper() + w[1:] for w in words if w) or "Model"
    return name if name[0].isalpha() else "Model" + name


Read = Callable[[str], fx.Node]  # the value a reader of the named node sees (a head's output as reused)


@dataclass(frozen=True)
class Lowering:
    """How one node kind becomes torch: ``module`` makes an ``nn.Module`` (added as a submodule named
    after the node and called on its input), or ``emit`` writes the node's computation into the
    generated forward as plain calls, given the fx graph and ``read``, and returns its value."""

    module: Callable[[Node, Graph], nn.Module] | None = None
    emit: Callable[[Node, fx.Graph, Read, Graph], fx.Node] | None = None


def _input(node: Node, code: fx.Graph, read: Read, graph: Graph) -> fx.Node:
    return code.placeholder(node.name)


def _concat(node: Node, code: fx.Graph, read: Read, graph: Graph) -> fx.Node:
    if node.attrs["mode"] == "sum":
        # a residual join: x + y (+ ...), shapes checked equal by build. Partial sums are
        # named with a leading _ (no spec node's name has one), so the last keeps the node's.
        total = read(node.inputs[0])
        for i, name in enumerate(node.inputs[1:], start=2):
            partial = node.name if i == len(node.inputs) else f"_{node.name}_{i}"
            total = code.create_node("call_function", operator.add, (total, read(name)), name=partial)
        return total
    parts = []
    for name in node.inputs:
        value = read(name)
        if node.attrs["mode"] == "features" and graph[name].is_map:
            value = code.call_function(torch.flatten, (value, 1))  # (B, C, H, W) -> (B, C*H*W)
        parts.append(value)
    return code.create_node("call_function", torch.cat, (parts,), {"dim": 1}, name=node.name)


# One entry per node kind (the spec language's NODE_KINDS; tests/test_kinds.py checks them).
LOWERINGS: dict[str, Lowering] = {
    "input": Lowering(emit=_input),
    "conv_block": Lowering(module=lambda node, graph: ConvBlock(node.attrs, graph.layers)),
    "pool": Lowering(module=lambda node, graph: pool2d(node.attrs)),
    "fc_block": Lowering(
        module=lambda node, graph: FCBlock(node.attrs, graph.layers, flatten=graph[node.inputs[0]].is_map)
    ),
    "dropout": Lowering(module=lambda node, graph: dropout(node.attrs["dropout"], node.attrs["dropout_kind"])),
    "concat": Lowering(emit=_concat),
    "head": Lowering(module=lambda node, graph: Head(node.attrs["in_features"], node.attrs["classes"])),
}


def lowering(kind: str) -> Lowering:
    """The lowering of ``kind``; a kind missing from the table is a bug, said so."""
    try:
        return LOWERINGS[kind]
    except KeyError:
        raise ValueError(f"node kind '{kind}' has no entry in graphc.backends.pytorch.compile.LOWERINGS") from None


def compile_graph(graph: Graph, seed: int | None = None) -> fx.GraphModule:
    """Compile the IR to an ``nn.Module`` whose ``forward(image)`` returns ``{task: logits}``.

    With ``seed``, initialisation draws from that seed without touching the
    caller's global RNG state, so the same seed gives the same weights.
    """
    if seed is None:
        return _compile(graph)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _compile(graph)


def _compile(graph: Graph) -> fx.GraphModule:
    root = nn.Module()
    code = fx.Graph()
    values: dict[str, fx.Node] = {}
    reused: dict[str, fx.Node] = {}  # a head's output as its readers see it

    def read(name: str) -> fx.Node:
        """The value a reader of ``name`` sees: a head's logits pass through its reuse settings."""
        source = graph[name]
        if source.kind != "head":
            return values[name]
        if name not in reused:
            value = values[name]
            if not source.attrs["reuse_gradient"]:
                value = code.call_method("detach", (value,))
            # Probabilities as the head's type defines them; a regression head's output is read as it is.
            kind = source.attrs.get("type", "classification")
            if source.attrs["reuse_as"] == "probabilities" and kind == "classification":
                value = code.call_function(torch.softmax, (value,), {"dim": 1})
            elif source.attrs["reuse_as"] == "probabilities" and kind in ("binary", "multilabel"):
                value = code.call_function(torch.sigmoid, (value,))
            reused[name] = value
        return reused[name]

    for node in graph:
        rule = lowering(node.kind)
        if rule.module is not None:
            root.add_module(node.name, rule.module(node, graph))
            values[node.name] = code.call_module(node.name, (read(node.inputs[0]),))
        else:
            values[node.name] = rule.emit(node, code, read, graph)
    code.output({head.attrs["task"]: values[head.name] for head in graph.heads})
    initialise(root, graph.layers)
    module = fx.GraphModule(root, code, class_name=_class_name(graph.name))
    return module
