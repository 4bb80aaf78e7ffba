"""What a diagram says and in which colours, worded once for every format (svg/png/pdf, dot, mermaid):
the text of a node's box, an edge's label, a panel's title line, and the palette."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from graphc.ir.graph import Graph, Node, Shape
from graphc.ir.metrics import DIAGNOSTIC_PREFIX

SHARED_COLOR = "#9b27b0"  # hard sharing: purple
REUSE_COLOR = "#00838f"  # cross-task reuse: teal
FROZEN_COLOR = "#3f51b5"  # trainable = false: indigo badge, dashed border
EDGE_COLOR = "#4a4a4a"


# --------------------------------------------------------------------------- words


@dataclass(frozen=True)
class NodeText:
    name: str
    kind: str
    details: tuple[str, ...]  # key parameters, then output shape and parameter count
    shared: tuple[str, ...]  # "shared (fine, coarse)" when several heads read it directly
    reused: tuple[str, ...]  # "reused by fine" when a task reads it through another head
    frozen: tuple[str, ...] = ()  # "frozen" (or "frozen · unfreezes after epoch N") for trainable = false


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
    norm = attrs.get("norm")
    if norm in ("batch", "group", "layer"):
        label = {"batch": "BN", "group": f"GN{attrs.get('groups')}", "layer": "LN"}[norm]
        if attrs.get("norm_position") == "pre":
            label = "pre-" + label  # norm, activation, conv
        extras.append(label)
    if attrs.get("dropout") and attrs.get("dropout_kind") == "channel":
        extras[extras.index(f"drop {attrs['dropout']:g}")] += " (channel)"
    return extras


def _pool_text(a: Mapping) -> list[str]:
    """A block's pooling (``pool``, ``pool_size``, ``pool_stride``): ``max-pool 2``, ``global avg-pool``."""
    if a.get("pool") in ("global_avg", "global_max"):
        return [f"{a['pool'].replace('_', ' ')}-pool"]
    if a.get("pool", "none") != "none":
        stride = "" if a["pool_stride"] == a["pool_size"] else f"/{a['pool_stride']}"
        return [f"{a['pool']}-pool {a['pool_size']}{stride}"]
    return []


def _conv_block(graph: Graph, node: Node) -> str:
    a, parts = node.attrs, []
    kernels = a["kernel"]
    if kernels:  # a block of no convolutions only pools, normalises or drops
        kernel = f"{kernels[0]}×{kernels[0]}" if len(set(kernels)) == 1 else ", ".join(f"{k}×{k}" for k in kernels)
        if any(s != 1 for s in a["stride"]):
            kernel += " /" + ",".join(map(str, a["stride"]))
        parts.append(f"conv {kernel}: {', '.join(map(str, a['channels']))}")
    return " · ".join(parts + _pool_text(a) + _extras(a))


def _concat(graph: Graph, node: Node) -> str:
    a = node.attrs
    if a.get("mode") == "sum":
        return f"sum of {len(node.inputs)} inputs"
    if a.get("mode") == "channels":
        return "channels " + _sum_text([graph[i].shape[0] for i in node.inputs])
    return "features " + _sum_text([math.prod(graph[i].shape) for i in node.inputs])


def _head(graph: Graph, node: Node) -> str:
    a = node.attrs
    text = f"task {a['task']} · {a['classes']} classes"
    if a.get("loss_weight", 1.0) != 1.0:
        text += f" · loss ×{a['loss_weight']:g}"
    return text


@dataclass(frozen=True)
class KindStyle:
    """How a diagram draws one node kind: the box's fill and border (pale fills keep black text
    readable, borders carry the hue), its key parameters in one short line, and whether a chain of
    such nodes may be drawn as one box (``graphc render --collapse``, graphc.backends.diagram.collapse)."""

    fill: str
    stroke: str
    key_params: Callable[[Graph, Node], str]
    collapsible: bool = False


# One entry per node kind (the spec language's NODE_KINDS; tests/test_kinds.py checks them), in
# the order the legend lists them.
KIND_STYLES: dict[str, KindStyle] = {
    "input": KindStyle("#eef1f4", "#5f6b7a", lambda graph, node: ""),
    "conv_block": KindStyle("#dcebf8", "#2f6db3", _conv_block, collapsible=True),
    "pool": KindStyle("#f1e9e1", "#8d6e63", lambda graph, node: " · ".join(_pool_text(node.attrs))),
    "fc_block": KindStyle(
        "#dff3e5",
        "#2e8b57",
        lambda graph, node: " · ".join([f"dense {', '.join(map(str, node.attrs['units']))}"] + _extras(node.attrs)),
        collapsible=True,
    ),
    "dropout": KindStyle("#eef0dc", "#7c8b1f", lambda graph, node: " · ".join(_extras(node.attrs))),
    "concat": KindStyle("#fff2c9", "#b8860b", _concat),
    "head": KindStyle("#fde3dd", "#c0392b", _head),
}
KIND_COLORS = {kind: (style.fill, style.stroke) for kind, style in KIND_STYLES.items()}
KIND_LABELS = {kind: kind for kind in KIND_STYLES}


def kind_style(kind: str) -> KindStyle:
    """The style of ``kind``; a kind missing from the table is a bug, said so (not drawn grey)."""
    try:
        return KIND_STYLES[kind]
    except KeyError:
        raise ValueError(f"node kind '{kind}' has no entry in graphc.backends.diagram.style.KIND_STYLES") from None


def kind_colors(kind: str) -> tuple[str, str]:
    style = kind_style(kind)
    return style.fill, style.stroke


def key_params(graph: Graph, node: Node) -> str:
    """The parameters that make this node what it is, in one short line."""
    return kind_style(node.kind).key_params(graph, node)


LISTED_TERMS = 8  # a concat of more inputs sums them up in short: every box is as wide as the widest line


def _sum_text(sizes: list[int]) -> str:
    """``4 + 4 + 8``; for many inputs ``500 × 4`` (all alike) or ``4 + 4 + 8 + … + 2 (500 inputs)``."""
    if len(sizes) <= LISTED_TERMS:
        return " + ".join(map(str, sizes))
    if len(set(sizes)) == 1:
        return f"{len(sizes)} × {sizes[0]}"
    return " + ".join(map(str, sizes[:3])) + f" + … + {sizes[-1]} ({len(sizes)} inputs)"


def node_text(graph: Graph, node: Node, shapes: bool = True) -> NodeText:
    members = node.attrs.get("collapsed")  # a chain drawn as one box (graphc render --collapse)
    params = node.attrs["collapsed_params"] if members else key_params(graph, node)
    details = [params] if params else []
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
    frozen = (frozen_text(node),) if not node.trainable else ()
    if members:
        return NodeText(
            f"{members[0]} … {members[-1]}", node.attrs["collapsed_label"], tuple(details), shared, reused, frozen
        )
    return NodeText(node.name, node.kind, tuple(details), shared, reused, frozen)


def frozen_text(node: Node) -> str:
    """The mark of a frozen node (trainable = false): no gradient updates, batch norm in eval mode."""
    after = node.attrs.get("unfreeze_after")
    return "frozen" + (f" · unfreezes after epoch {after}" if after else "")


def edge_label(graph: Graph, source: Node, target: Node, conflict: Conflict | None = None) -> str:
    """The tensor an edge carries; for a head's output, also how it is passed on (and, with a
    run's diagnostics, the reader's share of the reused branch's gradient)."""
    text = shape_text(source.shape)
    if graph.is_reuse_edge(source.name):
        text = f"{source.attrs.get('reuse_as', 'logits')} {text}"
        if not source.attrs.get("reuse_gradient", True):
            text += " · no grad"
        share = conflict.edge_share(source, target) if conflict is not None else None
        if share is not None:
            text += f" · {share[0]} share {share_text(share[1])}"
    return text


# --------------------------------------------------------------------------- gradient conflict


@dataclass(frozen=True)
class Conflict:
    """A run's gradient-conflict diagnostics to draw (``graphc render --diagnostics RUN_DIR``): the
    numbers come in from the caller (the diagram backend reads no runs)."""

    cosines: dict[str, tuple[float, str]]  # node -> (lowest cosine between two tasks' gradients, "a:b")
    shares: dict[str, dict[str, float]]  # reused head -> {reader task: share of the branch's gradient}
    source: str  # what the numbers are, for the title: "run DIR, epoch N"

    @classmethod
    def from_metrics(cls, values: Mapping[str, float], source: str) -> Conflict:
        """From a training row's ``diag/...`` values (graphc.ir.metrics.diagnostic_names); NaN or
        missing values (a zero gradient has no direction) are left out."""
        cosines: dict[str, tuple[float, str]] = {}
        shares: dict[str, dict[str, float]] = {}
        for key, value in values.items():
            parts = key.split("/")
            if len(parts) != 4 or parts[0] + "/" != DIAGNOSTIC_PREFIX or value is None or value != value:
                continue
            _, node, what, tasks = parts
            if what == "cos" and (node not in cosines or value < cosines[node][0]):
                cosines[node] = (float(value), tasks)
            elif what == "share":
                shares.setdefault(node, {})[tasks] = float(value)
        return cls(cosines, shares, source)

    def collapsed(self, graph: Graph) -> Conflict:
        """For ``graph`` drawn with ``--collapse``: a box that stands for several nodes gets the
        lowest cosine of its members (not just its first member's); reused heads never collapse."""
        cosines = {}
        for node in graph:
            found = [self.cosines[m] for m in node.attrs.get("collapsed", (node.name,)) if m in self.cosines]
            if found:
                cosines[node.name] = min(found)
        return replace(self, cosines=cosines)

    def edge_share(self, source: Node, target: Node) -> tuple[str, float] | None:
        """(reader, share) of the task that reads ``source`` through ``target`` with the largest
        share, or None without numbers for that head."""
        readers = self.shares.get(source.name, {})
        found = [
            (task, readers[task]) for task in sorted(target.heads) if task in readers and readers[task] == readers[task]
        ]
        return max(found, key=lambda item: item[1]) if found else None


CONFLICT_NEGATIVE, CONFLICT_ZERO, CONFLICT_POSITIVE = "#c62828", "#9e9e9e", "#1565c0"  # cos -1, 0, +1


def _mix(a: str, b: str, t: float) -> str:
    ca, cb = (tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in (a, b))
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(ca, cb))


def conflict_color(cosine: float) -> str:
    """Red for opposed gradients (cos -1), grey for unrelated (0), blue for aligned (+1), linear between."""
    cosine = max(-1.0, min(1.0, cosine))
    return (
        _mix(CONFLICT_ZERO, CONFLICT_NEGATIVE, -cosine)
        if cosine < 0
        else _mix(CONFLICT_ZERO, CONFLICT_POSITIVE, cosine)
    )


def share_color(share: float) -> str:
    """A reuse edge by the reader's share of the branch's gradient: teal (0) to red (all of it)."""
    return _mix(REUSE_COLOR, CONFLICT_NEGATIVE, max(0.0, min(1.0, share)))


def share_text(share: float) -> str:
    """A share as a percentage: whole points, one decimal below 10% (a 0.1% share is not "0%")."""
    return f"{share:.1%}" if share < 0.1 else f"{share:.0%}"


def conflict_badge(cosine: float, pair: str) -> str:
    return f"grad cos {cosine:+.2f} ({pair.replace(':', ' vs ')})"


def stats_line(graph: Graph) -> str:
    total = graph.total_params
    share = graph.shared_params / total if total else 0.0
    return (
        f"{total:,} parameters · {graph.shared_params:,} ({share:.1%}) serve more than one head"
        f" · {graph.hard_shared_params:,} hard-shared" + (f" · {graph.frozen_params:,} frozen" if graph.frozen else "")
    )


def panel_id(graph: Graph, index: int, graphs: Sequence[Graph]) -> str:
    """A unique id for one graph on a page: its name, numbered if the name repeats."""
    earlier = sum(1 for g in graphs[:index] if g.name == graph.name)
    return graph.name if not earlier else f"{graph.name}-{earlier + 1}"
