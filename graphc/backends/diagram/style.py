"""What a diagram says and in which colours, worded once for every format (svg/png/pdf, dot, mermaid):
the text of a node's box, an edge's label, a panel's title line, and the palette."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from graphc.ir.graph import Graph, Node, Shape

# Fill and border per node kind: pale fills keep black text readable, borders carry the hue.
KIND_COLORS = {
    "input": ("#eef1f4", "#5f6b7a"),
    "conv_block": ("#dcebf8", "#2f6db3"),
    "fc_block": ("#dff3e5", "#2e8b57"),
    "concat": ("#fff2c9", "#b8860b"),
    "head": ("#fde3dd", "#c0392b"),
}
KIND_LABELS = {kind: kind for kind in KIND_COLORS}
SHARED_COLOR = "#9b27b0"  # hard sharing: purple
REUSE_COLOR = "#00838f"  # cross-task reuse: teal
EDGE_COLOR = "#4a4a4a"


def kind_colors(kind: str) -> tuple[str, str]:
    return KIND_COLORS.get(kind, ("#f2f2f2", "#777777"))


# --------------------------------------------------------------------------- words


@dataclass(frozen=True)
class NodeText:
    name: str
    kind: str
    details: tuple[str, ...]  # key parameters, then output shape and parameter count
    shared: tuple[str, ...]  # "shared (fine, coarse)" when several heads read it directly
    reused: tuple[str, ...]  # "reused by fine" when a task reads it through another head


def shape_text(shape: Shape) -> str:
    return "×".join(map(str, shape))


def _tasks(graph: Graph, tasks) -> str:
    order = {t: i for i, t in enumerate(graph.tasks)}
    return ", ".join(sorted(tasks, key=lambda t: (order.get(t, len(order)), t)))


def _extras(attrs, activation_default: str = "relu") -> list[str]:
    extras = []
    if attrs.get("activation", activation_default) != activation_default:
        extras.append(attrs["activation"])
    if attrs.get("dropout"):
        extras.append(f"drop {attrs['dropout']:g}")
    if attrs.get("norm") == "batch":
        extras.append("BN")
    return extras


def key_params(graph: Graph, node: Node) -> str:
    """The parameters that make this node what it is, in one short line."""
    a = node.attrs
    if node.kind == "conv_block":
        kernels = a["kernel"]
        kernel = f"{kernels[0]}×{kernels[0]}" if len(set(kernels)) == 1 else ", ".join(f"{k}×{k}" for k in kernels)
        if any(s != 1 for s in a["stride"]):
            kernel += " /" + ",".join(map(str, a["stride"]))
        parts = [f"conv {kernel}: {', '.join(map(str, a['channels']))}"]
        if a.get("pool", "none") != "none":
            stride = "" if a["pool_stride"] == a["pool_size"] else f"/{a['pool_stride']}"
            parts.append(f"{a['pool']}-pool {a['pool_size']}{stride}")
        return " · ".join(parts + _extras(a))
    if node.kind == "fc_block":
        return " · ".join([f"dense {', '.join(map(str, a['units']))}"] + _extras(a))
    if node.kind == "concat":
        if a.get("mode") == "channels":
            return "channels " + " + ".join(str(graph[i].shape[0]) for i in node.inputs)
        return "features " + " + ".join(str(math.prod(graph[i].shape)) for i in node.inputs)
    if node.kind == "head":
        text = f"task {a['task']} · {a['classes']} classes"
        if a.get("loss_weight", 1.0) != 1.0:
            text += f" · loss ×{a['loss_weight']:g}"
        return text
    return ""


def node_text(graph: Graph, node: Node, shapes: bool = True) -> NodeText:
    details = [params] if (params := key_params(graph, node)) else []
    size = []
    if shapes:
        size.append(shape_text(node.shape) if node.kind == "input" else "→ " + shape_text(node.shape))
    if node.num_params:
        size.append(f"{node.num_params:,} params")
    if size:
        details.append(" · ".join(size))
    # The input feeds every head by definition; marking it "shared" would say nothing.
    shared = (f"shared ({_tasks(graph, node.direct_heads)})",) if node.is_hard_shared and node.kind != "input" else ()
    reused = (f"reused by {_tasks(graph, node.reused_by)}",) if node.reused_by else ()
    return NodeText(node.name, node.kind, tuple(details), shared, reused)


def edge_label(graph: Graph, source: Node, target: Node) -> str:
    """The tensor an edge carries; for a head's output, also how it is passed on."""
    text = shape_text(source.shape)
    if graph.is_reuse_edge(source.name):
        text = f"{source.attrs.get('reuse_as', 'logits')} {text}"
        if not source.attrs.get("reuse_gradient", True):
            text += " · no grad"
    return text


def stats_line(graph: Graph) -> str:
    total = graph.total_params
    share = graph.shared_params / total if total else 0.0
    return (
        f"{total:,} parameters · {graph.shared_params:,} ({share:.1%}) serve more than one head"
        f" · {graph.hard_shared_params:,} hard-shared"
    )


def panel_id(graph: Graph, index: int, graphs: Sequence[Graph]) -> str:
    """A unique id for one graph on a page: its name, numbered if the name repeats."""
    earlier = sum(1 for g in graphs[:index] if g.name == graph.name)
    return graph.name if not earlier else f"{graph.name}-{earlier + 1}"
