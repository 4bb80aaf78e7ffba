"""Architecture diagrams as pictures: the IR laid out and dressed as a page of boxes, edges and text.

Each graph becomes a panel - title, boxes, edges, edge labels - from
:mod:`graphc.backends.diagram.layout`'s geometry and :mod:`graphc.backends.diagram.style`'s words and colours;
several panels share a page in a grid, with one legend. The result is a
:class:`graphc.backends.diagram.scene.Scene`, which :func:`graphc.backends.diagram.scene.save` turns into svg, png or pdf.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from graphc.backends.diagram.layout import assign_ranks, bezier_point, layout
from graphc.backends.diagram.scene import Block, Curve, Grid, Rect, Scene, TextRun, crosses, measure, sample
from graphc.backends.diagram.style import (
    EDGE_COLOR,
    FROZEN_COLOR,
    KIND_LABELS,
    REUSE_COLOR,
    SHARED_COLOR,
    Conflict,
    conflict_badge,
    conflict_color,
    edge_label,
    kind_colors,
    node_text,
    panel_id,
    share_color,
    stats_line,
)
from graphc.errors import UsageError
from graphc.ir.build import _limit
from graphc.ir.graph import Graph

MARGIN = 18.0
PAD_X, PAD_Y = 10.0, 7.0
# Boxes side by side in one rank that a picture still shows: about 150 pt each, 200 make a
# page 30,000 pt (10 m) wide, and from a few dozen on the edge labels of a fan run into
# each other. Wider graphs are refused with a pointer to the text formats; the environment
# variable GRAPHC_MAX_RANK_BOXES raises the limit (as GRAPHC_MAX_PARAMS does graphc.ir.build's).
MAX_RANK_BOXES = 200


def check_legible(graphs: Sequence[Graph]) -> None:
    """Refuse a picture of a graph wider than :data:`MAX_RANK_BOXES` in some rank, before laying it out."""
    for graph in graphs:
        ranks = Counter(assign_ranks([n.name for n in graph], [(a.name, b.name) for a, b in graph.edges()]).values())
        widest, limit = max(ranks.values(), default=0), _limit("MAX_RANK_BOXES", MAX_RANK_BOXES)
        if widest > limit:
            raise UsageError(
                f"spec '{graph.name}' has {widest} boxes side by side in one rank, too many for a legible picture "
                f"(graphc draws up to {limit}: beyond that the page is metres wide and the edge labels run "
                "into each other). Draw it as text instead: --format dot (for Graphviz) or --format mermaid; "
                f"or raise the limit with the environment variable GRAPHC_MAX_RANK_BOXES={widest}."
            )


# --------------------------------------------------------------------------- one panel


NAME_SIZE, KIND_SIZE, BODY_SIZE, BADGE_SIZE, EDGE_SIZE = 10.0, 8.0, 8.5, 7.5, 7.5
LINE_GAP = 3.0
BADGE_H = 13.0


@dataclass(frozen=True)
class _NodeContent:
    lines: tuple[tuple[str, float, str, str, str], ...]  # text, size, weight, style, color
    badges: tuple[tuple[str, str], ...]  # text, colour

    def size(self) -> tuple[float, float]:
        widths = [measure(t, s, w, st)[0] for t, s, w, st, _ in self.lines]
        widths += [measure(t, BADGE_SIZE, "bold")[0] + 12 for t, _ in self.badges]
        height = sum(_line_height(s) for _, s, *_ in self.lines) + LINE_GAP * (len(self.lines) - 1)
        height += len(self.badges) * (BADGE_H + 3) + (2 if self.badges else 0)
        return max(widths) + 2 * PAD_X, height + 2 * PAD_Y


def _line_height(size: float) -> float:
    _, ascent, descent = measure("Ag", size)
    return ascent + descent


def _content(graph: Graph, name: str, shapes: bool, conflict: Conflict | None = None) -> _NodeContent:
    text = node_text(graph, graph[name], shapes)
    lines = [(text.name, NAME_SIZE, "bold", "normal", "#111111"), (text.kind, KIND_SIZE, "normal", "italic", "#555555")]
    lines += [(line, BODY_SIZE, "normal", "normal", "#222222") for line in text.details]
    badges = [(b, SHARED_COLOR) for b in text.shared] + [(b, REUSE_COLOR) for b in text.reused]
    badges += [(b, FROZEN_COLOR) for b in text.frozen]
    if conflict is not None and name in conflict.cosines:  # graphc render --diagnostics
        cosine, pair = conflict.cosines[name]
        badges.append((conflict_badge(cosine, pair), conflict_color(cosine)))
    return _NodeContent(tuple(lines), tuple(badges))


def panel(graph: Graph, pid: str, direction: str, shapes: bool, conflict: Conflict | None = None) -> Scene:
    """One graph's title and diagram, with its top-left corner at (0, 0); ``conflict``: a run's
    gradient-conflict diagnostics to colour boxes and reuse edges by.

    Where an edge label finds no free spot, the ranks move further apart and it tries again.
    """
    for extra in (0.0, 16.0, 32.0, 48.0):
        scene, misplaced = _panel(graph, pid, direction, shapes, extra, conflict)
        if not misplaced:
            break
    return scene


def _panel(
    graph: Graph, pid: str, direction: str, shapes: bool, extra_gap: float, conflict: Conflict | None = None
) -> tuple[Scene, int]:
    scene = Scene()
    contents = {n.name: _content(graph, n.name, shapes, conflict) for n in graph}
    # One width for every box: the diagram reads as columns (TB) or rows of equal cells.
    box_w = max(c.size()[0] for c in contents.values())
    sizes = {name: (box_w, c.size()[1]) for name, c in contents.items()}
    edges = [(a.name, b.name) for a, b in graph.edges()]
    labels = [edge_label(graph, a, b, conflict) if shapes else "" for a, b in graph.edges()]
    label_w = max((measure(t, EDGE_SIZE)[0] for t in labels if t), default=0.0)
    label_h = _line_height(EDGE_SIZE)
    if direction == "TB":
        lay = layout([n.name for n in graph], edges, sizes, rank_gap=(label_h + 30 if shapes else 30) + extra_gap)
    else:
        flipped = {n: (h, w) for n, (w, h) in sizes.items()}
        lay = layout(
            [n.name for n in graph],
            edges,
            flipped,
            node_gap=18,
            rank_gap=max(label_w + 30, 36) + extra_gap,
            waypoint_gap=18,
        )
        lay = lay.transposed()

    # Title block: spec name, description, parameter counts.
    title_lines = [(graph.name, 13.0, "bold", "normal", "#111111")]
    if graph.description:
        title_lines.append((graph.description, 9.0, "normal", "italic", "#444444"))
    title_lines.append((stats_line(graph), 9.0, "normal", "normal", "#222222"))
    if conflict is not None:
        title_lines.append((f"gradient diagnostics of {conflict.source}", 9.0, "normal", "italic", "#222222"))
    title_w = max(measure(t, s, w, st)[0] for t, s, w, st, _ in title_lines)
    width = max(lay.width, title_w)
    y = 0.0
    for text, size, weight, style, color in title_lines:
        _, ascent, descent = measure(text, size, weight, style)
        scene.texts.append(TextRun(width / 2, y + ascent, text, size, weight, style, color))
        y += ascent + descent + 4
    top = y + 14
    dx = (width - lay.width) / 2
    scene.width, scene.height = width, top + lay.height

    for node in graph:
        box = lay.boxes[node.name]
        rect = Rect(box.left + dx, box.top + top, box.right + dx, box.bottom + top)
        fill, stroke = kind_colors(node.kind)
        content = contents[node.name]
        marked = (
            SHARED_COLOR if node.is_hard_shared and node.kind != "input" else (REUSE_COLOR if node.reused_by else None)
        )
        if conflict is not None and node.name in conflict.cosines:  # the border says how the tasks' gradients agree
            marked = conflict_color(conflict.cosines[node.name][0])
        scene.blocks.append(  # a frozen node's border is dashed (and it carries a "frozen" badge)
            Block(
                rect,
                fill,
                marked or stroke,
                2.6 if marked else 1.2,
                dashed=not node.trainable,
                gid=f"node--{pid}--{node.name}",
            )
        )
        scene.node_rects[(pid, node.name)] = rect
        _node_text(scene, rect, content)

    curves = []
    seen: dict[tuple[str, str], int] = {}
    for route, (source, target) in zip(lay.routes, edges):
        # A concat may read one node twice: number the repeats so SVG ids stay unique.
        repeat = seen[(source, target)] = seen.get((source, target), 0) + 1
        reuse = graph.is_reuse_edge(source)
        segments = tuple(tuple((x + dx, y + top) for x, y in seg) for seg in route.segments)
        share = conflict.edge_share(graph[source], graph[target]) if conflict is not None and reuse else None
        curve = Curve(
            segments,
            color=share_color(share[1]) if share else (REUSE_COLOR if reuse else EDGE_COLOR),
            linewidth=2.6 if share else (1.8 if reuse else 1.2),
            dashed=reuse,
            gid=f"edge--{pid}--{source}--{target}" + (f"--{repeat}" if repeat > 1 else ""),
        )
        curves.append(curve)
        scene.curves.append(curve)
        scene.edge_curves[(pid, source, target, route.index)] = curve

    # Labels go where they touch no box, no other label and no other edge. Edges that fan
    # out of one node are furthest apart near their targets, edges that fan into one node
    # near their sources: look there first.
    fan_out = Counter(s for s, _ in edges)
    fan_in = Counter(t for _, t in edges)
    boxes, placed, pieces = Grid(), Grid(), Grid()  # where to look for collisions: see _place_label
    for rect in scene.node_rects.values():
        boxes.add_rect(rect)
    for i, curve in enumerate(curves):
        line = sample(curve.segments)
        for p, q in zip(line, line[1:]):
            pieces.add((i, p, q), min(p[0], q[0]), min(p[1], q[1]), max(p[0], q[0]), max(p[1], q[1]))
    misplaced = 0
    for i, (curve, label, (source, target)) in enumerate(zip(curves, labels, edges)):
        if not label:
            continue
        if fan_out[source] > 1 and fan_in[target] == 1:
            first = (0.72, 0.62, 0.82, 0.5)
        elif fan_in[target] > 1 and fan_out[source] == 1:
            first = (0.3, 0.4, 0.2, 0.5)
        else:
            first = (0.5, 0.4, 0.6, 0.3, 0.7)
        candidates = [(0, t) for t in first] + [
            (k, t)
            for k in range(len(curve.segments))
            for t in (0.5, 0.3, 0.7, 0.15, 0.85)
            if (k, t) not in [(0, f) for f in first]
        ]
        run, free = _place_label(label, curve, i, candidates, placed, boxes, pieces, graph.is_reuse_edge(source))
        misplaced += not free
        scene.texts.append(run)
        placed.add_rect(run.rect)
        scene.edge_label_rects.append(run.rect)
    scene.layouts[pid] = lay
    return scene, misplaced


def _node_text(scene: Scene, rect: Rect, content: _NodeContent) -> None:
    _, height = content.size()
    y = (rect.y0 + rect.y1) / 2 - height / 2 + PAD_Y  # content centred in a box as tall as its rank
    cx = (rect.x0 + rect.x1) / 2
    for text, size, weight, style, color in content.lines:
        ascent, descent = measure("Ag", size)[1:]
        scene.texts.append(TextRun(cx, y + ascent, text, size, weight, style, color))
        y += ascent + descent + LINE_GAP
    y += 2 - LINE_GAP + 3
    for text, color in content.badges:
        w = measure(text, BADGE_SIZE, "bold")[0] + 12
        badge = Rect(cx - w / 2, y, cx + w / 2, y + BADGE_H)
        scene.blocks.append(Block(badge, color, color, 0.0, radius=BADGE_H / 2))
        _, ascent, descent = measure("Ag", BADGE_SIZE, "bold")
        baseline = y + BADGE_H / 2 + (ascent - descent) / 2
        scene.texts.append(TextRun(cx, baseline, text, BADGE_SIZE, "bold", color="white"))
        y += BADGE_H + 3


def _place_label(
    text, curve: Curve, edge: int, candidates, labels: Grid, boxes: Grid, pieces: Grid, reuse: bool
) -> tuple[TextRun, bool]:
    """The first candidate spot (segment, t) on edge number ``edge`` where the label collides
    with nothing, and True; or the first candidate and False.

    ``labels`` and ``boxes`` hold rectangles, ``pieces`` the straight pieces (edge number, p, q)
    of every edge's sampled curve. Each test asks the grids for what lies near the label
    only; it decides exactly as testing against everything on the page would."""
    _, ascent, descent = measure("Ag", EDGE_SIZE)
    color = REUSE_COLOR if reuse else "#444444"
    weight = "bold" if reuse else "normal"
    # A shape label sits on its edge (its white background cuts the line); a reuse label sits
    # beside its edge, clear of the whole stretch of curve at its height (or width), so the
    # dashes stay whole: right of it, left of it, then above or below.
    own = sample(curve.segments) if reuse else []
    half_w, half_h = measure(text, EDGE_SIZE, weight)[0] / 2, (ascent + descent) / 2
    fallback = None
    for k, t in candidates:
        x, y = bezier_point(curve.segments[k], t)
        spots = [(x, y)]
        if reuse:
            xs = [px for px, py in own if abs(py - y) <= half_h + 3] or [x]
            ys = [py for px, py in own if abs(px - x) <= half_w + 3] or [y]
            spots = [
                (max(xs) + half_w + 4, y),
                (min(xs) - half_w - 4, y),
                (x, min(ys) - half_h - 4),
                (x, max(ys) + half_h + 4),
            ]
        for sx, sy in spots:
            run = TextRun(sx, sy + (ascent - descent) / 2, text, EDGE_SIZE, weight, color=color, background="white")
            fallback = fallback or run
            rect = run.rect
            # keep clear of box borders (drawn up to 1.3 pt outside the box) and of other labels
            if any(rect.overlaps(r, 4.0) for r in boxes.near(rect, 4.0)) or any(
                rect.overlaps(r, 3.0) for r in labels.near(rect, 3.0)
            ):
                continue
            grown = rect.grown(2.0)
            if any(crosses(grown, p, q) for j, p, q in pieces.near(grown) if j != edge or reuse):
                continue
            return run, True
    return fallback, False


# --------------------------------------------------------------------------- page


def legend(graphs: Sequence[Graph], width: float, shapes: bool = True, conflict: Conflict | None = None) -> Scene:
    """Swatches for the kinds present, the sharing marks and the edge styles, in rows (and with
    ``conflict``, the colours of a run's gradient diagnostics)."""
    scene = Scene()
    kinds = [k for k in KIND_LABELS if any(n.kind == k for g in graphs for n in g)]
    items: list[tuple[str, object]] = [(KIND_LABELS[k], ("box", *kind_colors(k))) for k in kinds]
    if any(n.is_hard_shared and n.kind != "input" for g in graphs for n in g):
        # Node.is_hard_shared: several heads depend on it by paths that pass through no other head
        items.append(
            ("shared: several heads use it, not only through another head's output", ("box", "#ffffff", SHARED_COLOR))
        )
    if any(n.reused_by for g in graphs for n in g):
        items.append(
            ("reused: another task depends on it only through a head's output", ("box", "#ffffff", REUSE_COLOR))
        )
    if any(not n.trainable for g in graphs for n in g):
        items.append(
            (
                "frozen: trainable = false, no gradient updates, batch-norm statistics kept",
                ("box", "#ffffff", FROZEN_COLOR),
            )
        )
    items.append(("tensor, labelled with its shape" if shapes else "tensor", ("line", EDGE_COLOR, False)))
    if any(g.is_reuse_edge(a.name) for g in graphs for a, _ in g.edges()):
        items.append(("reuse: a head's output fed to another task", ("line", REUSE_COLOR, True)))
    if conflict is not None:
        items += [
            (
                f"grad cos {cosine:+g}: tasks' gradients {words} (lowest pair)",
                ("box", "#ffffff", conflict_color(cosine)),
            )
            for cosine, words in ((-1.0, "opposed"), (0.0, "unrelated"), (1.0, "aligned"))
        ]
        if conflict.shares:
            items.append(
                (
                    "reuse edge, 'TASK share N%': the reader's share of the reused branch's gradient (teal 0%, red 100%)",
                    ("line", share_color(1.0), True),
                )
            )
    size = 8.5
    _, ascent, descent = measure("Ag", size)
    row_h = 18.0
    x, y = 0.0, 0.0
    previous_group = 0
    for text, (what, *style) in items:
        w = 26 + measure(text, size)[0] + 16
        group = 2 if what == "line" else int(style[1] in (SHARED_COLOR, REUSE_COLOR, FROZEN_COLOR))
        if x > 0 and (x + w > width or group != previous_group):  # kinds, marks, edges: a row each
            x, y = 0.0, y + row_h
        previous_group = group
        if what == "box":
            fill, stroke = style
            marked = stroke in (SHARED_COLOR, REUSE_COLOR, FROZEN_COLOR)
            scene.blocks.append(
                Block(
                    Rect(x, y + 3, x + 20, y + 15),
                    fill,
                    stroke,
                    2.2 if marked else 1.2,
                    radius=3,
                    dashed=stroke == FROZEN_COLOR,
                )
            )
        else:
            color, dashed = style
            scene.curves.append(
                Curve(
                    (((x, y + 9), (x + 8, y + 9), (x + 14, y + 9), (x + 22, y + 9)),),
                    color,
                    1.8 if dashed else 1.2,
                    dashed,
                )
            )
        scene.texts.append(TextRun(x + 28, y + 9 + (ascent - descent) / 2, text, size, ha="left", color="#222222"))
        x += w
    scene.width = max((t.rect.x1 for t in scene.texts), default=0.0)
    scene.height = y + row_h
    return scene


def _grid(count: int, sizes: list[tuple[float, float]]) -> int:
    """Columns for ``count`` panels: a page close to square, with few empty cells."""
    best, best_cost = 1, math.inf
    for columns in range(1, count + 1):
        rows = math.ceil(count / columns)
        widths = [max(sizes[i][0] for i in range(c, count, columns)) for c in range(columns)]
        heights = [max(sizes[i][1] for i in range(r * columns, min(count, (r + 1) * columns))) for r in range(rows)]
        cost = abs(math.log(sum(widths) / sum(heights))) + 0.3 * (rows * columns - count)
        if cost < best_cost - 1e-9:
            best, best_cost = columns, cost
    return best


def page(
    graphs: Sequence[Graph], direction: str = "TB", shapes: bool = True, conflict: Conflict | None = None
) -> Scene:
    """The whole page: one panel per graph (in a grid if several), then the legend; ``conflict``
    (one graph only): a run's gradient diagnostics drawn on it."""
    if conflict is not None and len(graphs) != 1:
        raise UsageError("gradient diagnostics are drawn on one spec at a time.")
    ids = panel_ids(graphs)
    panels = [panel(g, pid, direction, shapes, conflict) for g, pid in zip(graphs, ids)]
    framed = len(panels) > 1
    pad = 14.0 if framed else 0.0
    gap = 24.0
    sizes = [(p.width + 2 * pad, p.height + 2 * pad) for p in panels]
    columns = _grid(len(panels), sizes)
    rows = math.ceil(len(panels) / columns)
    col_w = [max(sizes[i][0] for i in range(c, len(panels), columns)) for c in range(columns)]
    row_h = [max(sizes[i][1] for i in range(r * columns, min(len(panels), (r + 1) * columns))) for r in range(rows)]
    grid_w = sum(col_w) + gap * (columns - 1)
    grid_h = sum(row_h) + gap * (rows - 1)
    key = legend(graphs, max(grid_w, 420.0), shapes, conflict)
    width = max(grid_w, key.width) + 2 * MARGIN
    scene = Scene()
    left = (width - grid_w) / 2
    for i, p in enumerate(panels):
        r, c = divmod(i, columns)
        x0 = left + sum(col_w[:c]) + gap * c
        y0 = MARGIN + sum(row_h[:r]) + gap * r
        if framed:
            frame = Rect(x0, y0, x0 + col_w[c], y0 + row_h[r])
            scene.blocks.append(Block(frame, "#ffffff", "#d5d9de", 1.0, radius=10, behind=True))
        scene.extend(p.shifted(x0 + (col_w[c] - p.width) / 2, y0 + pad))
    legend_top = MARGIN + grid_h + 22
    scene.extend(key.shifted((width - key.width) / 2, legend_top))
    scene.width, scene.height = width, legend_top + key.height + MARGIN - 6
    scene.description = "; ".join(structure_line(g, pid) for g, pid in zip(graphs, ids))
    return scene


def panel_ids(graphs: Sequence[Graph]) -> list[str]:
    return [panel_id(g, i, graphs) for i, g in enumerate(graphs)]


def structure_line(graph: Graph, pid: str) -> str:
    """What the picture shows, as text: kept in the SVG's metadata for up-to-date checks."""
    nodes = ", ".join(
        f"{n.name}:{n.kind}:{'x'.join(map(str, n.shape))}:{n.num_params}"
        f"{':shared' if n.is_hard_shared else ''}{':reused' if n.reused_by else ''}{'' if n.trainable else ':frozen'}"
        for n in graph
    )
    edges = ", ".join(f"{a.name}->{b.name}" for a, b in graph.edges())
    return (
        f"{pid} ({graph.description}) [{graph.total_params}/{graph.shared_params}/{graph.hard_shared_params}]"
        f" nodes {nodes}; edges {edges}"
    )
