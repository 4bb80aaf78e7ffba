"""A page as a display list - rectangles, Bezier curves, text runs - and its drawing by matplotlib.

Everything is in points (1/72 inch) with y growing downwards, and every text is
measured from the font itself, so the diagram code can check for collisions
before anything is drawn, and the tests can check the geometry without looking
at pixels. Drawing is then a mechanical translation to matplotlib patches and
texts. Matplotlib is used without pyplot and without switching the global
backend: rendering is headless and leaves a caller's notebook alone.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

from graphc.backends.diagram.layout import Bezier, Layout, bezier_point

FONT = "DejaVu Sans"  # ships with matplotlib: the same metrics on every machine
ARROW_LENGTH, ARROW_WIDTH = 7.0, 3.2


# --------------------------------------------------------------------------- scene


@dataclass(frozen=True)
class Rect:
    x0: float
    y0: float
    x1: float
    y1: float

    def overlaps(self, other: Rect, margin: float = 0.0) -> bool:
        return not (
            self.x1 + margin <= other.x0
            or other.x1 + margin <= self.x0
            or self.y1 + margin <= other.y0
            or other.y1 + margin <= self.y0
        )

    def grown(self, margin: float) -> Rect:
        return Rect(self.x0 - margin, self.y0 - margin, self.x1 + margin, self.y1 + margin)

    def moved(self, dx: float, dy: float) -> Rect:
        return Rect(self.x0 + dx, self.y0 + dy, self.x1 + dx, self.y1 + dy)


@dataclass(frozen=True)
class TextRun:
    """One line of text; (x, y) is the anchor on the baseline (``ha`` left or center)."""

    x: float
    y: float
    text: str
    size: float
    weight: str = "normal"
    style: str = "normal"
    color: str = "#1a1a1a"
    ha: str = "center"
    background: str | None = None

    @property
    def rect(self) -> Rect:
        width, ascent, descent = measure(self.text, self.size, self.weight, self.style)
        x0 = self.x - width / 2 if self.ha == "center" else self.x
        return Rect(x0, self.y - ascent, x0 + width, self.y + descent)


@dataclass(frozen=True)
class Block:
    """A rounded rectangle: a node's box, a badge, a legend swatch or a panel frame."""

    rect: Rect
    fill: str
    stroke: str
    linewidth: float = 1.0
    radius: float = 6.0
    dashed: bool = False
    gid: str | None = None
    behind: bool = False  # drawn under the edges (a panel's frame)


@dataclass(frozen=True)
class Curve:
    """An edge: Bezier segments, with an arrowhead at the end if ``arrow``."""

    segments: tuple[Bezier, ...]
    color: str
    linewidth: float = 1.2
    dashed: bool = False
    arrow: bool = True
    gid: str | None = None


@dataclass
class Scene:
    width: float = 0.0
    height: float = 0.0
    blocks: list[Block] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    texts: list[TextRun] = field(default_factory=list)
    # geometry the tests check, per panel id
    node_rects: dict[tuple[str, str], Rect] = field(default_factory=dict)
    edge_label_rects: list[Rect] = field(default_factory=list)
    layouts: dict[str, Layout] = field(default_factory=dict)
    edge_curves: dict[tuple[str, str, str, int], Curve] = field(default_factory=dict)
    description: str = ""

    def shifted(self, dx: float, dy: float) -> Scene:
        """A copy moved by (dx, dy) (how a panel is placed on the page)."""
        move = lambda c: replace(c, segments=tuple(tuple((x + dx, y + dy) for x, y in s) for s in c.segments))  # noqa: E731
        return Scene(
            self.width,
            self.height,
            [replace(b, rect=b.rect.moved(dx, dy)) for b in self.blocks],
            [move(c) for c in self.curves],
            [replace(t, x=t.x + dx, y=t.y + dy) for t in self.texts],
            {k: r.moved(dx, dy) for k, r in self.node_rects.items()},
            [r.moved(dx, dy) for r in self.edge_label_rects],
            self.layouts,
            {k: move(c) for k, c in self.edge_curves.items()},
            self.description,
        )

    def extend(self, other: Scene) -> None:
        self.blocks += other.blocks
        self.curves += other.curves
        self.texts += other.texts
        self.node_rects.update(other.node_rects)
        self.edge_label_rects += other.edge_label_rects
        self.layouts.update(other.layouts)
        self.edge_curves.update(other.edge_curves)


@lru_cache(maxsize=4096)
def measure(text: str, size: float, weight: str = "normal", style: str = "normal") -> tuple[float, float, float]:
    """(width, ascent, descent) of a line in points, from the font's own outlines."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    prop = FontProperties(family=FONT, size=size, weight=weight, style=style)
    width, _, _ = TextToPath().get_text_width_height_descent(text, prop, ismath=False)
    # Line metrics from a tall and a deep glyph, so every line of a size has the same box.
    _, height, descent = TextToPath().get_text_width_height_descent("ÁgjÉ|", prop, ismath=False)
    return width, height - descent, descent


def sample(segments, steps: int = 24) -> list[tuple[float, float]]:
    points = [segments[0][0]]
    for seg in segments:
        points += [bezier_point(seg, k / steps) for k in range(1, steps + 1)]
    return points


def crosses(rect: Rect, p, q) -> bool:
    """Whether the segment p-q touches the rectangle (Liang-Barsky clipping)."""
    (x0, y0), (x1, y1) = p, q
    dx, dy = x1 - x0, y1 - y0
    low, high = 0.0, 1.0
    for step, distance in ((-dx, x0 - rect.x0), (dx, rect.x1 - x0), (-dy, y0 - rect.y0), (dy, rect.y1 - y0)):
        if step == 0:
            if distance < 0:
                return False
            continue
        t = distance / step
        if step < 0:
            low = max(low, t)
        else:
            high = min(high, t)
        if low > high:
            return False
    return True


class Grid:
    """Things on the page in a uniform grid of square cells, by their bounding boxes.

    ``near(rect)`` gives every thing whose box meets ``rect`` (and some that come close):
    a collision test then looks at its neighbourhood only, not at the whole page, so
    placing n labels among n edges costs about n tests instead of n squared.
    """

    def __init__(self, cell: float = 48.0):
        self.cell = cell
        self.things: list = []
        self.cells: dict[tuple[int, int], list[int]] = {}

    def _span(self, low: float, high: float) -> range:
        return range(math.floor(low / self.cell), math.floor(high / self.cell) + 1)

    def add(self, thing, x0: float, y0: float, x1: float, y1: float) -> None:
        index = len(self.things)
        self.things.append(thing)
        rows = self._span(y0, y1)
        for i in self._span(x0, x1):
            for j in rows:
                self.cells.setdefault((i, j), []).append(index)

    def add_rect(self, rect: Rect) -> None:
        self.add(rect, rect.x0, rect.y0, rect.x1, rect.y1)

    def near(self, rect: Rect, margin: float = 0.0) -> list:
        """The things whose boxes meet ``rect`` grown by ``margin`` (a superset: the caller tests exactly)."""
        found: set[int] = set()
        rows = self._span(rect.y0 - margin, rect.y1 + margin)
        for i in self._span(rect.x0 - margin, rect.x1 + margin):
            for j in rows:
                found.update(self.cells.get((i, j), ()))
        return [self.things[k] for k in found]


# --------------------------------------------------------------------------- matplotlib


def figure(scene: Scene):
    """The scene as a matplotlib Figure (1 data unit = 1 point, y downwards)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch, PathPatch, Polygon
    from matplotlib.path import Path

    fig = Figure(figsize=(scene.width / 72, scene.height / 72))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, scene.width)
    ax.set_ylim(scene.height, 0)
    ax.set_axis_off()
    fig.patch.set_facecolor("white")

    for block in scene.blocks:
        r = block.rect
        patch = FancyBboxPatch(
            (r.x0, r.y0),
            r.x1 - r.x0,
            r.y1 - r.y0,
            boxstyle=f"round,pad=0,rounding_size={block.radius}",
            facecolor=block.fill,
            edgecolor=block.stroke,
            linewidth=block.linewidth,
            linestyle="--" if block.dashed else "-",
            zorder=0 if block.behind else 2,
        )
        if block.gid:
            patch.set_gid(block.gid)
        ax.add_patch(patch)
    for curve in scene.curves:
        segments = list(curve.segments)
        if curve.arrow:
            # A solid head drawn apart from the (maybe dashed) line, which stops at the head's base.
            (p0, p1, p2, p3) = segments[-1]
            dx, dy = p3[0] - p2[0], p3[1] - p2[1]
            norm = math.hypot(dx, dy) or 1.0
            ux, uy = dx / norm, dy / norm
            base = (p3[0] - ux * ARROW_LENGTH, p3[1] - uy * ARROW_LENGTH)
            tip_line = (p3[0] - ux * ARROW_LENGTH * 0.8, p3[1] - uy * ARROW_LENGTH * 0.8)
            segments[-1] = (p0, p1, p2, tip_line)
            head = Polygon(
                [
                    p3,
                    (base[0] - uy * ARROW_WIDTH, base[1] + ux * ARROW_WIDTH),
                    (base[0] + uy * ARROW_WIDTH, base[1] - ux * ARROW_WIDTH),
                ],
                closed=True,
                facecolor=curve.color,
                edgecolor=curve.color,
                linewidth=0.6,
                zorder=1.5,
            )
            ax.add_patch(head)
        vertices = [segments[0][0]]
        codes = [Path.MOVETO]
        for seg in segments:
            vertices += list(seg[1:])
            codes += [Path.CURVE4] * 3
        line = PathPatch(
            Path(vertices, codes),
            facecolor="none",
            edgecolor=curve.color,
            linewidth=curve.linewidth,
            linestyle=(0, (4, 2.5)) if curve.dashed else "-",
            capstyle="butt",
            zorder=1,
        )
        if curve.gid:
            line.set_gid(curve.gid)
        ax.add_patch(line)
    for run in scene.texts:
        kwargs = {}
        if run.background:
            kwargs["bbox"] = dict(boxstyle="square,pad=0.15", facecolor=run.background, edgecolor="none")
        ax.text(
            run.x,
            run.y,
            run.text,
            fontsize=run.size,
            fontweight=run.weight,
            fontstyle=run.style,
            fontfamily=FONT,
            color=run.color,
            ha=run.ha,
            va="baseline",
            parse_math=False,
            zorder=3,
            **kwargs,
        )
    return fig


def save(scene: Scene, fmt: str, dpi: float = 150.0) -> bytes:
    """The scene as svg, png or pdf bytes; svg and pdf are deterministic (no dates, fixed ids)."""
    import matplotlib

    fig = figure(scene)
    metadata = {
        "svg": {"Date": None, "Creator": "graphc", "Description": scene.description},
        "pdf": {"CreationDate": None, "ModDate": None, "Creator": "graphc"},
        "png": {"Software": "graphc", "Description": scene.description},
    }[fmt]
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "graphc", "svg.fonttype": "path", "pdf.fonttype": 42}):
        fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata, facecolor="white")
    return buffer.getvalue()
