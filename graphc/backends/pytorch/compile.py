"""IR -> torch: a ``torch.fx.GraphModule`` with a straight-line generated forward.

Each spec node becomes a submodule named after it (or, for concat and the
reuse of a head's output, a plain function call), and the generated
``forward(image)`` returns ``{task: logits}`` in spec order. Because the
forward is ordinary generated Python (see ``print(module.code)``) there is no
per-call interpretation of the graph, and torch.compile, ONNX export and
DistributedDataParallel see a normal module.
"""

from __future__ import annotations

import operator
import re

import torch
from torch import fx, nn

from graphc.backends.pytorch.blocks import ConvBlock, FCBlock, Head, initialise
from graphc.ir.graph import Graph, Node


def _class_name(spec_name: str) -> str:
    words = re.split(r"[^A-Za-z0-9]+", spec_name)
    name = "".join(w[:1].upper() + w[1:] for w in words if w) or "Model"
    return name if name[0].isalpha() else "Model" + name


def _module_for(node: Node, graph: Graph) -> nn.Module:
    attrs = node.attrs
    if node.kind == "conv_block":
        return ConvBlock(attrs, graph.layers)
    if node.kind == "fc_block":
        return FCBlock(attrs, graph.layers, flatten=graph[node.inputs[0]].is_map)
    if node.kind == "head":
        return Head(attrs["in_features"], attrs["classes"])
    raise AssertionError(f"{node.kind} has no module")


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
            if source.attrs["reuse_as"] == "probabilities":
                value = code.call_function(torch.softmax, (value,), {"dim": 1})
            reused[name] = value
        return reused[name]

    for node in graph:
        if node.kind == "input":
            values[node.name] = code.placeholder(node.name)
        elif node.kind == "concat" and node.attrs["mode"] == "sum":
            # a residual join: x + y (+ ...), shapes checked equal by build. Partial sums are
            # named with a leading _ (no spec node's name has one), so the last keeps the node's.
            total = read(node.inputs[0])
            for i, name in enumerate(node.inputs[1:], start=2):
                partial = node.name if i == len(node.inputs) else f"_{node.name}_{i}"
                total = code.create_node("call_function", operator.add, (total, read(name)), name=partial)
            values[node.name] = total
        elif node.kind == "concat":
            parts = []
            for name in node.inputs:
                value = read(name)
                if node.attrs["mode"] == "features" and graph[name].is_map:
                    value = code.call_function(torch.flatten, (value, 1))  # (B, C, H, W) -> (B, C*H*W)
                parts.append(value)
            values[node.name] = code.create_node("call_function", torch.cat, (parts,), {"dim": 1}, name=node.name)
        else:
            root.add_module(node.name, _module_for(node, graph))
            values[node.name] = code.call_module(node.name, (read(node.inputs[0]),))
    code.output({head.attrs["task"]: values[head.name] for head in graph.heads})
    initialise(root, graph.layers)
    module = fx.GraphModule(root, code, class_name=_class_name(graph.name))
    return module
