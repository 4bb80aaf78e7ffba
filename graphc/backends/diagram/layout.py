"""Layered layout of a DAG: ranks, crossing minimisation, coordinates, edge routes.

The classic Sugiyama pipeline, small enough to read in one sitting:

1. rank nodes by their topological generation (sources first), then move every
   sink (a head nobody reads) to the last rank, so all outputs line up at the end;
2. split edges that span several ranks with dummy waypoints, one per rank crossed,
   so long edges (a trunk feeding a late concat, a reused head) are counted and
   routed like every other edge and never run through a box;
3. order each rank to minimise edge crossings: barycentre sweeps, then an
   exhaustive search over the orders of every small rank;
4. place boxes: a weighted isotonic regression per rank pulls each box towards
   its neighbours' mean position while keeping boxes apart and in order;
5. route each edge as cubic Bezier segments with tangents along the rank axis.
   Between two ranks every segment starts and ends on the same two lines and
   follows the same vertical profile, so two segments cross in the picture
   exactly when their ends are in opposite order - the crossing count of step 3
   is the crossing count of the drawing.

Pure geometry over names and sizes: no IR, no matplotlib. Coordinates are in
points with the rank axis along y, growing downwards ("top to bottom"); the
caller transposes for a left-to-right drawing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import networkx as nx

Point = tuple[float, float]
Bezier = tuple[Point, Point, Point, Point]  # start, two control points, end

EXHAUSTIVE_RANK_SIZE = 7  # 7! = 5040 orders: still instant, and covers any readable diagram's rank
CHAIN_WEIGHT = 50.0  # how much more a chain link resists bending than a fan link


@dataclass(frozen=True)
class Box:
    """A node's rectangle: centre (x, y), width and height."""

    x: float
    y: float
    w: float
    h: float

    @property
    def left(self) -> float:
        return self.x - self.w / 2

    @property
    def right(self) -> float:
        return self.x + self.w / 2

    @property
    def top(self) -> float:
        return self.y - self.h / 2

    @property
    def bottom(self) -> float:
        return self.y + self.h / 2

    def transposed(self) -> Box:
        return Box(self.y, self.x, self.h, self.w)


@dataclass(frozen=True)
class Route:
    """How one edge is drawn: Bezier segments from the source's port to the target's."""

    source: str
    target: str
    index: int  # position of the edge in the input edge list
    segments: tuple[Bezier, ...]

    def transposed(self) -> Route:
        flip = lambda p: (p[1], p[0])  # noqa: E731
        return Route(self.source, self.target, self.index, tuple(tuple(map(flip, s)) for s in self.segments))


@dataclass(frozen=True)
class Layout:
    boxes: Mapping[str, Box]  # real nodes only
    routes: tuple[Route, ...]  # one per input edge, in input order
    ranks: tuple[tuple[Hashable, ...], ...]  # final order of every rank, dummies included
    crossings: int
    width: float
    height: float

    def transposed(self) -> Layout:
        return Layout(
            {name: box.transposed() for name, box in self.boxes.items()},
            tuple(r.transposed() for r in self.routes),
            self.ranks,
            self.crossings,
            self.height,
            self.width,
        )


def bezier_point(segment: Bezier, t: float) -> Point:
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = segment
    a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
    return a * x0 + b * x1 + c * x2 + d * x3, a * y0 + b * y1 + c * y2 + d * y3


# --------------------------------------------------------------------------- ranks


def assign_ranks(nodes: Sequence[str], edges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Topological generation of each node; sinks all go to the last rank."""
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    rank = {n: i for i, generation in enumerate(nx.topological_generations(graph)) for n in generation}
    last = max(rank.values(), default=0)
    for node in nodes:
        if graph.out_degree(node) == 0:
            rank[node] = last
    return rank


class _Dummy(tuple):
    """A waypoint of a long edge: (edge index, step). A tuple subclass so it can never equal a name."""


def split_long_edges(edges: Sequence[tuple[str, str]], rank: Mapping[str, int]) -> list[list[Hashable]]:
    """For every edge, the chain of nodes it passes: source, one dummy per rank crossed, target."""
    chains = []
    for i, (source, target) in enumerate(edges):
        steps = [_Dummy((i, k)) for k in range(1, rank[target] - rank[source])]
        chains.append([source, *steps, target])
    return chains


# --------------------------------------------------------------------------- crossings


def count_crossings(ranks: Sequence[Sequence[Hashable]], links: Sequence[tuple[Hashable, Hashable]]) -> int:
    """Edge crossings of a layered drawing whose links join adjacent ranks.

    Two links between the same pair of ranks cross when their ends are in
    opposite order; links that share an end never cross.
    """
    where = {node: (r, i) for r, rank in enumerate(ranks) for i, node in enumerate(rank)}
    by_gap: dict[int, list[tuple[int, int]]] = {}
    for a, b in links:
        (ra, ia), (rb, ib) = where[a], where[b]
        if ra > rb:
            (ra, ia), (rb, ib) = (rb, ib), (ra, ia)
        by_gap.setdefault(ra, []).append((ia, ib))
    total = 0
    for pairs in by_gap.values():
        for (a1, b1), (a2, b2) in itertools.combinations(pairs, 2):
            total += (a1 - a2) * (b1 - b2) < 0
    return total


def _gap_crossings(upper: Sequence[Hashable], lower: Sequence[Hashable], links) -> int:
    return count_crossings([upper, lower], [(a, b) for a, b in links if a in upper and b in lower])


# --------------------------------------------------------------------------- ordering


def order_ranks(
    ranks: list[list[Hashable]], links: Sequence[tuple[Hashable, Hashable]], sweeps: int = 24
) -> list[list[Hashable]]:
    """Reorder each rank to minimise crossings. ``ranks`` holds the initial order."""
    up: dict[Hashable, list[Hashable]] = {n: [] for rank in ranks for n in rank}
    down: dict[Hashable, list[Hashable]] = {n: [] for rank in ranks for n in rank}
    for a, b in links:
        down[a].append(b)
        up[b].append(a)

    def barycentre_sort(rank: list[Hashable], fixed: list[Hashable], neighbours) -> list[Hashable]:
        pos = {n: i for i, n in enumerate(fixed)}

        def key(item):
            i, node = item
            near = [pos[m] for m in neighbours[node] if m in pos]
            return (sum(near) / len(near) if near else i, i)  # no neighbours: keep its place

        return [n for _, n in sorted(enumerate(rank), key=key)]

    best = [list(r) for r in ranks]
    best_count = count_crossings(best, links)
    current = [list(r) for r in ranks]
    for _ in range(sweeps):
        if best_count == 0:
            break
        for r in range(1, len(current)):
            current[r] = barycentre_sort(current[r], current[r - 1], up)
        for r in range(len(current) - 2, -1, -1):
            current[r] = barycentre_sort(current[r], current[r + 1], down)
        count = count_crossings(current, links)
        if count < best_count:
            best, best_count = [list(r) for r in current], count
    if best_count:
        best = _exhaustive_refine(best, links)
    return best


def _exhaustive_refine(ranks: list[list[Hashable]], links) -> list[list[Hashable]]:
    """Try every order of each small rank (the others fixed) until nothing improves."""

    def local(r: int, order) -> int:
        total = 0
        if r > 0:
            total += _gap_crossings(ranks[r - 1], order, links)
        if r + 1 < len(ranks):
            total += _gap_crossings(order, ranks[r + 1], links)
        return total

    improved = True
    while improved:
        improved = False
        for r, rank in enumerate(ranks):
            if len(rank) < 2 or len(rank) > EXHAUSTIVE_RANK_SIZE:
                continue
            current = local(r, rank)
            if current == 0:
                continue
            best = min(itertools.permutations(rank), key=lambda order: local(r, order))
            if local(r, best) < current:
                ranks[r] = list(best)
                improved = True
    return ranks


# --------------------------------------------------------------------------- coordinates


def _isotonic(targets: Sequence[float], weights: Sequence[float]) -> list[float]:
    """Weighted least-squares non-decreasing fit (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [value, weight, count]
    for t, w in zip(targets, weights):
        blocks.append([t, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, c2 = blocks.pop()
            v1, w1, c1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    return [v for v, _, c in blocks for _ in range(c)]


def _place_rank(rank, desired, width, weight, gap) -> list[float]:
    """Positions closest to ``desired`` keeping the order and at least ``gap`` between boxes."""
    offsets = [0.0]
    for a, b in zip(rank, rank[1:]):
        offsets.append(offsets[-1] + (width[a] + width[b]) / 2 + gap(a, b))
    fitted = _isotonic([d - o for d, o in zip(desired, offsets)], [weight[n] for n in rank])
    return [f + o for f, o in zip(fitted, offsets)]


def layout(
    nodes: Sequence[str],
    edges: Sequence[tuple[str, str]],
    sizes: Mapping[str, tuple[float, float]],
    *,
    node_gap: float = 28.0,
    rank_gap: float = 40.0,
    waypoint_gap: float = 14.0,
    port_gap: float = 26.0,
    sweeps: int = 400,
) -> Layout:
    """Lay out a DAG top to bottom. ``nodes`` in a topological order (it seeds the
    in-rank order), ``sizes[name] = (width, height)``; returns boxes and routes."""
    rank_of: dict[Hashable, int] = dict(assign_ranks(nodes, edges))
    chains = split_long_edges(edges, rank_of)
    links = [(a, b) for chain in chains for a, b in zip(chain, chain[1:])]
    for chain in chains:
        for k, dummy in enumerate(chain[1:-1], start=1):
            rank_of[dummy] = rank_of[chain[0]] + k
    ranks = order_ranks(_initial_order(nodes, chains, links, rank_of), links)

    # Sizes along the rank (x) and across ranks (y); a rank is as tall as its tallest box.
    width = {n: (0.0 if _is_dummy(n) else sizes[n][0]) for rank in ranks for n in rank}
    heights = [max((sizes[n][1] for n in rank if not _is_dummy(n)), default=0.0) for rank in ranks]
    tops = [sum(heights[:r]) + rank_gap * r for r in range(len(ranks))]

    def gap(a, b) -> float:
        return waypoint_gap if _is_dummy(a) or _is_dummy(b) else node_gap

    x = _place(ranks, links, width, gap, sweeps)
    left = min(x[n] - width[n] / 2 for n in x)
    right = max(x[n] + width[n] / 2 for n in x)
    x = {n: v - left for n, v in x.items()}
    boxes = {n: Box(x[n], tops[rank_of[n]] + heights[rank_of[n]] / 2, sizes[n][0], heights[rank_of[n]]) for n in nodes}
    routes = _routes(
        chains, x, width, boxes, [(tops[r], tops[r] + heights[r]) for r in range(len(ranks))], rank_of, port_gap
    )
    return Layout(
        boxes,
        routes,
        tuple(tuple(r) for r in ranks),
        count_crossings(ranks, links),
        right - left,
        tops[-1] + heights[-1] if ranks else 0.0,
    )


def _is_dummy(node: Hashable) -> bool:
    return isinstance(node, _Dummy)


def _initial_order(nodes, chains, links, rank_of) -> list[list[Hashable]]:
    """Rank by rank, each node after its earliest-placed parent; ties in spec order."""
    spec_index = {n: i for i, n in enumerate(nodes)}
    parents: dict[Hashable, list[Hashable]] = {}
    for a, b in links:
        parents.setdefault(b, []).append(a)
    members: dict[int, list[Hashable]] = {}
    for node, r in rank_of.items():
        members.setdefault(r, []).append(node)
    ranks: list[list[Hashable]] = []
    for r in range(max(rank_of.values(), default=0) + 1):
        above = {n: i for i, n in enumerate(ranks[-1])} if ranks else {}

        def key(node):
            first = min((above[p] for p in parents.get(node, []) if p in above), default=-1)  # noqa: B023 (sorted within this iteration)
            source = chains[node[0]][0] if _is_dummy(node) else node  # a waypoint sorts as its edge's source
            return (first, spec_index[source], str(node))

        ranks.append(sorted(members.get(r, []), key=key))
    return ranks


def _place(ranks, links, width, gap, sweeps: int) -> dict[Hashable, float]:
    """In-rank positions minimising the sum over links of weight * (horizontal run)^2.

    Exact coordinate descent, one rank at a time (a weighted isotonic regression
    keeps each rank's order and gaps). Links inside a chain - a waypoint's, or the
    only link out of one box into the next - weigh more, so chains run straight
    and fan-outs and fan-ins bend instead; chains are then straightened exactly.
    """
    up: dict[Hashable, list[Hashable]] = {n: [] for rank in ranks for n in rank}
    down: dict[Hashable, list[Hashable]] = {n: [] for rank in ranks for n in rank}
    for a, b in links:
        down[a].append(b)
        up[b].append(a)
    in_chain = lambda a, b: len(down[a]) == 1 and len(up[b]) == 1  # noqa: E731
    neighbours: dict[Hashable, list[tuple[Hashable, float]]] = {n: [] for n in up}
    for a, b in links:
        w = CHAIN_WEIGHT if (_is_dummy(a) and _is_dummy(b)) or in_chain(a, b) else 1.0
        neighbours[a].append((b, w))
        neighbours[b].append((a, w))
    weight = {n: sum(w for _, w in near) or 1.0 for n, near in neighbours.items()}
    x: dict[Hashable, float] = {}
    for rank in ranks:
        x.update(zip(rank, _place_rank(rank, [0.0] * len(rank), width, weight, gap)))

    def sweep(order) -> None:
        for r in order:
            desired = [sum(x[m] * w for m, w in neighbours[n]) / weight[n] if neighbours[n] else x[n] for n in ranks[r]]
            x.update(zip(ranks[r], _place_rank(ranks[r], desired, width, weight, gap)))

    for _ in range(sweeps):
        before = dict(x)
        sweep(range(len(ranks)))
        sweep(range(len(ranks) - 1, -1, -1))
        if max(abs(x[n] - before[n]) for n in x) < 0.01:
            break

    # A stiff link still bends a hair: put each chain on one line where every rank it crosses has room.
    chain_of: dict[Hashable, list[Hashable]] = {}
    for a, b in links:
        if in_chain(a, b):
            joined = chain_of.get(a, [a]) + chain_of.get(b, [b])
            chain_of.update((n, joined) for n in joined)
    where = {n: (r, i) for r, rank in enumerate(ranks) for i, n in enumerate(rank)}

    def room(n) -> tuple[float, float]:
        """Where ``n``'s centre may go while its rank neighbours stay put."""
        r, i = where[n]
        rank, lo, hi = ranks[r], -math.inf, math.inf
        if i > 0:
            lo = x[rank[i - 1]] + (width[rank[i - 1]] + width[n]) / 2 + gap(rank[i - 1], n)
        if i + 1 < len(rank):
            hi = x[rank[i + 1]] - (width[rank[i + 1]] + width[n]) / 2 - gap(n, rank[i + 1])
        return lo, hi

    for chain in sorted({id(c): c for c in chain_of.values()}.values(), key=len, reverse=True):
        rooms = [room(n) for n in chain]
        lo, hi = max(r[0] for r in rooms), min(r[1] for r in rooms)
        if lo <= hi + 1e-6:
            x.update((n, min(max(sum(x[m] for m in chain) / len(chain), lo), hi)) for n in chain)
    return x


def _routes(chains, x, width, boxes, bands, rank_of, port_gap: float) -> tuple[Route, ...]:
    """Each edge from a port on its source's bottom to one on its target's top, through its waypoints.

    A box's outgoing edges leave spread out in the order of where they go, its incoming
    edges arrive in the order of where they come from, so ports never add crossings.
    """

    def ports(node, items) -> dict[int, float]:
        items = sorted(items)  # (x of the other end, edge index)
        spacing = min(port_gap, 0.8 * width[node] / len(items))
        return {i: x[node] + (k - (len(items) - 1) / 2) * spacing for k, (_, i) in enumerate(items)}

    leaving: dict[Hashable, list] = {}
    arriving: dict[Hashable, list] = {}
    for i, chain in enumerate(chains):
        leaving.setdefault(chain[0], []).append((x[chain[1]], i))
        arriving.setdefault(chain[-1], []).append((x[chain[-2]], i))
    out_port = {n: ports(n, items) for n, items in leaving.items()}
    in_port = {n: ports(n, items) for n, items in arriving.items()}

    routes = []
    for i, chain in enumerate(chains):
        source, target = chain[0], chain[-1]
        start = (out_port[source][i], boxes[source].bottom)
        segments: list[Bezier] = []
        for dummy in chain[1:-1]:
            top, bottom = bands[rank_of[dummy]]
            segments += [
                _curve(start, (x[dummy], top)),
                ((x[dummy], top), (x[dummy], top), (x[dummy], bottom), (x[dummy], bottom)),
            ]
            start = (x[dummy], bottom)
        segments.append(_curve(start, (in_port[target][i], boxes[target].top)))
        routes.append(Route(source, target, i, tuple(segments)))
    return tuple(routes)


def _curve(p: Point, q: Point) -> Bezier:
    """From p down to q, leaving and arriving vertically."""
    middle = (p[1] + q[1]) / 2
    return (p, (p[0], middle), (q[0], middle), q)
