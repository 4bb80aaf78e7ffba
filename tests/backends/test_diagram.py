"""graphc render: layout (crossings, overlaps), the five formats, the reference diagrams, the CLI.

Geometry is checked on the scene the pictures are drawn from, against independent
references written here: Bezier curves sampled densely and intersected segment by
segment, rectangles tested pairwise. Formats are parsed back (XML, PIL, pydot, a
grammar for the Mermaid lines graphc emits) and compared with the IR.
"""

from __future__ import annotations

import itertools
import random
import re
import xml.etree.ElementTree as ET

import networkx as nx
import pydot
import pytest
from PIL import Image
from typer.testing import CliRunner

import graphc
from graphc.backends.diagram.draw import Scene, page
from graphc.backends.diagram.layout import count_crossings, layout, order_ranks
from graphc.backends.diagram.render import render, render_specs
from graphc.backends.diagram.style import KIND_COLORS, REUSE_COLOR
from graphc.cli import app
from graphc.errors import UsageError
from tests.conftest import REPO, clean_exit

ROOT = REPO
SPECS = sorted((ROOT / "specs").glob("*.toml"))
DIAGRAMS = ROOT / "docs" / "diagrams"
runner = CliRunner()
# pydot's parser calls pyparsing names that pyparsing 3.3 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pydot")

# Three heads, a head read early in the trunk (a long edge to the last rank), a channel
# concat, a head reused without gradient, and nodes declared out of drawing order.
TRICKY_SPEC = """\
name = "tricky"
description = "Three heads, an early auxiliary head, a channel concat and a reused head."

[data]
dataset = "imagefolder"
hierarchy = { coarse = { a = ["p", "q"], b = ["r", "s"] }, size = { big = ["p", "r"], small = ["q", "s"] } }

[[nodes]]
name = "image"
kind = "input"
shape = [3, 16, 16]

[[nodes]]
name = "stem"
kind = "conv_block"
input = "image"
channels = [8]

[[nodes]]
name = "right"
kind = "conv_block"
input = "stem"
channels = [8, 8]
pool = "max"

[[nodes]]
name = "left"
kind = "conv_block"
input = "stem"
channels = [8]
kernel = 5
stride = 2

[[nodes]]
name = "joined"
kind = "concat"
inputs = ["left", "right"]
mode = "channels"

[[nodes]]
name = "size_head"
kind = "head"
input = "stem"
task = "size"

[[nodes]]
name = "coarse_head"
kind = "head"
input = "joined"
task = "coarse"
reuse_gradient = false

[[nodes]]
name = "fc"
kind = "fc_block"
input = "joined"
units = [16]

[[nodes]]
name = "mix"
kind = "concat"
inputs = ["coarse_head", "fc", "stem"]

[[nodes]]
name = "fine_head"
kind = "head"
input = "mix"
task = "fine"
"""


def build(path) -> graphc.Graph:
    return graphc.build_graph(graphc.load_spec(path))


@pytest.fixture(scope="module")
def graphs() -> dict[str, graphc.Graph]:
    return {path.stem: build(path) for path in SPECS}


@pytest.fixture(scope="module")
def tricky(tmp_path_factory) -> graphc.Graph:
    path = tmp_path_factory.mktemp("tricky") / "tricky.toml"
    path.write_text(TRICKY_SPEC)
    return build(path)


def edge_set(graph: graphc.Graph) -> set[tuple[str, str]]:
    return {(a.name, b.name) for a, b in graph.edges()}


def reuse_edges(graph: graphc.Graph) -> set[tuple[str, str]]:
    return {(a.name, b.name) for a, b in graph.edges() if a.kind == "head"}


# --------------------------------------------------------------------------- independent geometry


def cubic(p, t):
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = p
    u = 1 - t
    return (
        u**3 * x0 + 3 * u * u * t * x1 + 3 * u * t * t * x2 + t**3 * x3,
        u**3 * y0 + 3 * u * u * t * y1 + 3 * u * t * t * y2 + t**3 * y3,
    )


def polyline(segments, steps=60):
    points = []
    for seg in segments:
        points += [cubic(seg, k / steps) for k in range(steps + 1)]
    return points


def proper_intersection(p1, p2, q1, q2) -> bool:
    def orient(a, b, c):
        v = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        return 0 if abs(v) < 1e-9 else (1 if v > 0 else -1)

    return orient(p1, p2, q1) * orient(p1, p2, q2) < 0 and orient(q1, q2, p1) * orient(q1, q2, p2) < 0


def drawn_crossings(scene: Scene) -> list[tuple]:
    """Pairs of edges whose drawn curves intersect (sampled densely)."""
    lines = {key: polyline(curve.segments) for key, curve in scene.edge_curves.items()}
    found = []
    for (k1, l1), (k2, l2) in itertools.combinations(lines.items(), 2):
        if k1[0] != k2[0]:
            continue  # different panels
        box = lambda pts: (
            min(p[0] for p in pts),
            min(p[1] for p in pts),
            max(p[0] for p in pts),
            max(p[1] for p in pts),
        )  # noqa: E731
        a, b = box(l1), box(l2)
        if a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]:
            continue
        if any(proper_intersection(p1, p2, q1, q2) for p1, p2 in zip(l1, l1[1:]) for q1, q2 in zip(l2, l2[1:])):
            found.append((k1, k2))
    return found


def overlap(r1, r2, margin=0.0) -> bool:
    return r1.x0 < r2.x1 + margin and r2.x0 < r1.x1 + margin and r1.y0 < r2.y1 + margin and r2.y0 < r1.y1 + margin


def assert_clean(scene: Scene) -> None:
    """No overlapping boxes, edges only touch their own ends, labels free, text inside the page."""
    rects = scene.node_rects
    for (k1, r1), (k2, r2) in itertools.combinations(rects.items(), 2):
        assert not overlap(r1, r2, 8.0), f"boxes {k1} and {k2} overlap or touch"
    for (pid, source, target, _), curve in scene.edge_curves.items():
        for x, y in polyline(curve.segments):
            for key, r in rects.items():
                if key in ((pid, source), (pid, target)):
                    continue
                assert not (r.x0 - 2 < x < r.x1 + 2 and r.y0 - 2 < y < r.y1 + 2), (
                    f"edge {source}->{target} runs through {key}"
                )
    labels = scene.edge_label_rects
    for a, b in itertools.combinations(labels, 2):
        assert not overlap(a, b), "two edge labels overlap"
    for label in labels:
        for key, r in rects.items():
            assert not overlap(label, r), f"an edge label overlaps box {key}"
    for run in scene.texts:
        r = run.rect
        assert 0 <= r.x0 and r.x1 <= scene.width and 0 <= r.y0 and r.y1 <= scene.height, f"{run.text!r} clipped"
        for key, box in rects.items():  # a text is wholly inside a box or wholly outside it
            inside = box.x0 + 2 <= r.x0 and r.x1 <= box.x1 - 2 and box.y0 + 2 <= r.y0 and r.y1 <= box.y1 - 2
            assert inside or not overlap(r, box), f"{run.text!r} spills over the border of {key}"


# --------------------------------------------------------------------------- layout


def test_crossing_counter_agrees_with_geometry():
    """The combinatorial counter against straight segments intersected geometrically."""
    rng = random.Random(0)
    for _ in range(60):
        upper = [f"u{i}" for i in range(rng.randint(1, 6))]
        lower = [f"l{i}" for i in range(rng.randint(1, 6))]
        links = list({(rng.choice(upper), rng.choice(lower)) for _ in range(rng.randint(1, 10))})
        position = {n: (i * 10.0 + rng.random(), 0.0) for i, n in enumerate(upper)}
        position |= {n: (i * 10.0 + rng.random(), 50.0) for i, n in enumerate(lower)}
        geometric = sum(
            proper_intersection(position[a], position[b], position[c], position[d])
            for (a, b), (c, d) in itertools.combinations(links, 2)
            if a != c and b != d
        )
        assert count_crossings([upper, lower], links) == geometric


def test_ordering_untangles_and_keeps_unavoidable_crossings():
    # A tree scrambled rank by rank has a crossing-free order; ordering must find it.
    tree = nx.balanced_tree(3, 3, create_using=nx.DiGraph)
    depth = nx.shortest_path_length(tree, 0)
    rng = random.Random(1)
    ranks = [[n for n in tree if depth[n] == d] for d in range(4)]
    for rank in ranks:
        rng.shuffle(rank)
    links = list(tree.edges())
    assert count_crossings(ranks, links) > 0
    assert count_crossings(order_ranks(ranks, links), links) == 0
    # K(2,2) between two ranks: one crossing whatever the order.
    k22 = [("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")]
    assert count_crossings(order_ranks([["a", "b"], ["c", "d"]], k22), k22) == 1


def test_layout_ranks_heads_last_and_routes_long_edges():
    nodes = ["in", "a", "aux", "b", "c", "out"]
    edges = [("in", "a"), ("a", "aux"), ("a", "b"), ("b", "c"), ("c", "out"), ("in", "c")]
    lay = layout(nodes, edges, {n: (80.0, 30.0) for n in nodes})
    assert lay.crossings == 0
    # both sinks (aux, out) on the last rank, at the same height
    assert lay.boxes["aux"].y == lay.boxes["out"].y > lay.boxes["c"].y
    by_pair = {(r.source, r.target): r for r in lay.routes}
    # in -> c crosses two ranks: one curve in, a straight run through each, one curve out
    assert len(by_pair[("in", "c")].segments) == 5
    assert by_pair[("in", "c")].segments[0][0][1] == lay.boxes["in"].bottom
    assert by_pair[("in", "c")].segments[-1][-1][1] == lay.boxes["c"].top


@pytest.mark.parametrize("direction", ["TB", "LR"])
@pytest.mark.parametrize("name", [p.stem for p in SPECS] + ["tricky"])
def test_no_crossings_no_overlaps(graphs, tricky, name, direction):
    graph = tricky if name == "tricky" else graphs[name]
    scene = page([graph], direction)
    assert scene.layouts[graph.name].crossings == 0
    assert drawn_crossings(scene) == []
    assert_clean(scene)
    assert {k[1] for k in scene.node_rects} == {n.name for n in graph}
    assert len(scene.edge_curves) == len(list(graph.edges()))
    assert len(scene.edge_label_rects) == len(list(graph.edges()))


def test_reference_layouts_follow_the_data_flow(graphs):
    for graph in graphs.values():
        scene = page([graph], "TB")
        y = {name: (r.y0 + r.y1) / 2 for (_, name), r in scene.node_rects.items()}
        for a, b in graph.edges():
            assert y[a.name] < y[b.name], f"{graph.name}: {a.name} is not above {b.name}"
        sinks = [n.name for n in graph if not graph.users(n.name)]
        assert max(y.values()) == pytest.approx(y[sinks[0]]) and len({round(y[s]) for s in sinks}) == 1


def test_six_specs_on_one_page(graphs):
    scene = page(list(graphs.values()))
    assert {k[0] for k in scene.node_rects} == set(graphs)
    assert drawn_crossings(scene) == []
    assert_clean(scene)
    # panels side by side: no two panels' boxes overlap
    extents = {}
    for (pid, _), r in scene.node_rects.items():
        e = extents.setdefault(pid, [r.x0, r.y0, r.x1, r.y1])
        e[:] = [min(e[0], r.x0), min(e[1], r.y0), max(e[2], r.x1), max(e[3], r.y1)]
    for a, b in itertools.combinations(extents.values(), 2):
        assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]


# --------------------------------------------------------------------------- formats


def svg_ids(data: bytes) -> tuple[ET.Element, set[str]]:
    root = ET.fromstring(data)
    return root, {el.get("id") for el in root.iter() if el.get("id")}


def svg_description(root: ET.Element) -> str:
    return next(el.text for el in root.iter() if el.tag.endswith("description"))


def test_svg_is_xml_with_every_node_and_edge(graphs):
    graph = graphs["shared_reuse_fine"]
    data = render(graph, "svg")
    root, ids = svg_ids(data)
    assert root.tag.endswith("svg")
    for node in graph:
        assert f"node--{graph.name}--{node.name}" in ids
    for a, b in edge_set(graph):
        assert f"edge--{graph.name}--{a}--{b}" in ids
    # the reuse edge is dashed and teal, an ordinary edge is neither
    styles = {
        el.get("id"): " ".join(c.get("style", "") for c in el.iter())
        for el in root.iter()
        if el.get("id", "").startswith("edge--")
    }
    reuse = styles[f"edge--{graph.name}--fine_head--coarse_concat"]
    plain = styles[f"edge--{graph.name}--fine_fc1--fine_fc2"]
    assert "stroke-dasharray" in reuse and REUSE_COLOR in reuse
    assert "stroke-dasharray" not in plain and REUSE_COLOR not in plain
    assert "fine_head->coarse_concat" in svg_description(root)
    assert render(graph, "svg") == data  # deterministic: no dates, fixed ids


def test_png_and_pdf_are_real_pictures(graphs, tmp_path):
    graph = graphs["shared_reuse_coarse"]
    (tmp_path / "d.png").write_bytes(render(graph, "png"))
    image = Image.open(tmp_path / "d.png").convert("RGB")
    width, height = image.size
    assert width > 600 and height > 1500
    colors = {c for _, c in image.getcolors(maxcolors=1 << 22)}
    assert len(colors) > 200
    for kind in ("input", "conv_block", "fc_block", "concat", "head"):  # each kind's fill is painted
        fill = KIND_COLORS[kind][0]
        assert tuple(int(fill[i : i + 2], 16) for i in (1, 3, 5)) in colors, kind
    pdf = render(graph, "pdf")
    assert (
        pdf.startswith(b"%PDF") and len(pdf) > 10_000 and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") >= 1
    )


def _dot_name(name: str) -> str:
    return name.strip('"')


def test_dot_parses_with_every_node_and_edge(graphs, tricky):
    for graph in [*graphs.values(), tricky]:
        text = render(graph, "dot").decode()
        parsed = nx.drawing.nx_pydot.from_pydot(pydot.graph_from_dot_data(text)[0])
        assert {_dot_name(n) for n in parsed.nodes} >= {n.name for n in graph}
        assert {(_dot_name(a), _dot_name(b)) for a, b in parsed.edges()} == edge_set(graph)
        dashed = {(_dot_name(a), _dot_name(b)) for a, b, d in parsed.edges(data=True) if d.get("style") == "dashed"}
        assert dashed == reuse_edges(graph)
        labels = {(_dot_name(a), _dot_name(b)): d.get("label", "").strip('"') for a, b, d in parsed.edges(data=True)}
        for a, b in graph.edges():
            assert "×".join(map(str, a.shape)) in labels[(a.name, b.name)]


def test_dot_several_specs_in_clusters(graphs):
    chosen = [graphs["shared_conv"], graphs["reuse_fine"]]
    (parsed,) = pydot.graph_from_dot_data(render(chosen, "dot").decode())
    clusters = {_dot_name(s.get_name()): s for s in parsed.get_subgraphs()}
    assert set(clusters) == {"cluster_shared_conv", "cluster_reuse_fine"}
    for graph in chosen:
        cluster = clusters[f"cluster_{graph.name}"]
        nodes = {_dot_name(n.get_name()) for n in cluster.get_nodes()} - {"node", "graph", "edge"}
        assert nodes == {f"{graph.name}.{n.name}" for n in graph}
        edges = {(_dot_name(e.get_source()), _dot_name(e.get_destination())) for e in cluster.get_edges()}
        assert edges == {(f"{graph.name}.{a}", f"{graph.name}.{b}") for a, b in edge_set(graph)}


MERMAID_ID = r"[A-Za-z_][A-Za-z0-9_]*"
MERMAID_TEXT = r'(?:[^"<>]|<b>|</b>|<i>|</i>|<br/>)*'  # no raw quotes, only the tags graphc uses
MERMAID_LINES = {
    "header": re.compile(r"^flowchart (TB|LR)$"),
    "front": re.compile(r'^(---|title: "[^"]*")$'),
    "node": re.compile(rf'^ +(?P<id>{MERMAID_ID})\["(?P<label>{MERMAID_TEXT})"\]$'),
    "edge": re.compile(rf'^ +(?P<a>{MERMAID_ID}) (?P<arrow>-->|-\.->)(?:\|"[^"<>]*"\|)? (?P<b>{MERMAID_ID})$'),
    "subgraph": re.compile(rf'^ +subgraph {MERMAID_ID}\["[^"<>]*"\]$'),
    "direction": re.compile(r"^ +direction (TB|LR)$"),
    "end": re.compile(r"^ +end$"),
    "classDef": re.compile(rf"^ +classDef {MERMAID_ID} [a-z-]+:[#\w.]+(,[a-z-]+:[#\w.]+)*$"),
    "class": re.compile(rf"^ +class {MERMAID_ID}(,{MERMAID_ID})* {MERMAID_ID}$"),
    "style": re.compile(rf"^ +style {MERMAID_ID} [a-z-]+:[#\w.]+(,[a-z-]+:[#\w.]+)*$"),
    "linkStyle": re.compile(r"^ +linkStyle (?P<index>\d+) [a-z-]+:[#\w.]+(,[a-z-]+:[#\w.]+)*$"),
}


def parse_mermaid(text: str):
    """Check every line against the grammar; return node labels by id, edges and linkStyle indexes."""
    nodes, edges, link_styles, depth = {}, [], [], 0
    lines = text.splitlines()
    if lines[0] == "---":
        assert lines[2] == "---" and MERMAID_LINES["front"].match(lines[1])
        lines = lines[3:]
    assert MERMAID_LINES["header"].match(lines[0]), lines[0]
    for line in lines[1:]:
        kind = next((k for k, rx in MERMAID_LINES.items() if k not in ("header", "front") and rx.match(line)), None)
        assert kind, f"not a line of graphc's Mermaid grammar: {line!r}"
        match = MERMAID_LINES[kind].match(line)
        if kind == "node":
            nodes[match["id"]] = match["label"]
        elif kind == "edge":
            assert match["a"] in nodes and match["b"] in nodes, "edge before its nodes"
            edges.append((match["a"], match["b"], match["arrow"]))
        elif kind == "linkStyle":
            link_styles.append(int(match["index"]))
        depth += {"subgraph": 1, "end": -1}.get(kind, 0)
        assert depth >= 0
    assert depth == 0
    return nodes, edges, link_styles


def test_mermaid_grammar_with_every_node_and_edge(graphs, tricky):
    for graph in [*graphs.values(), tricky]:
        nodes, edges, link_styles = parse_mermaid(render(graph, "mermaid").decode())
        name_of = {i: re.match(r"<b>(\w+)</b>", label)[1] for i, label in nodes.items()}
        assert sorted(name_of.values()) == sorted(n.name for n in graph)
        assert {(name_of[a], name_of[b]) for a, b, _ in edges} == edge_set(graph)
        assert {(name_of[a], name_of[b]) for a, b, arrow in edges if arrow == "-.->"} == reuse_edges(graph)
        assert [i for i, (_, _, arrow) in enumerate(edges) if arrow == "-.->"] == link_styles
    nodes, edges, _ = parse_mermaid(render(list(graphs.values()), "mermaid", direction="LR").decode())
    assert len(nodes) == sum(len(g) for g in graphs.values())
    assert len(edges) == sum(len(edge_set(g)) for g in graphs.values())


def test_no_shapes_leaves_shapes_out(graphs):
    graph = graphs["reuse_coarse"]
    dot = render(graph, "dot", shapes=False).decode()
    assert "64×32×32" not in dot and "→" not in dot and 'label="512"' not in dot
    nodes, edges, _ = parse_mermaid(render(graph, "mermaid", shapes=False).decode())
    assert "→" not in "".join(nodes.values())
    assert "|" not in render(graph, "mermaid", shapes=False).decode().split("flowchart")[1].split("classDef")[0]
    scene = page([graph], shapes=False)
    assert scene.edge_label_rects == [] and not any("×32" in t.text or "→" in t.text for t in scene.texts)
    assert any("8,917,504 params" in t.text for t in scene.texts)  # parameter counts stay


def test_boxes_say_what_the_node_is(graphs, tricky):
    texts = {t.text for t in page([graphs["shared_reuse_coarse"]]).texts}
    assert {"conv 3×3: 64, 64 · max-pool 2 · BN", "dense 1024, 512 · drop 0.25 · BN", "features 512 + 20"} <= texts
    assert {
        "task fine · 100 classes · loss ×2",
        "→ 128×8×8 · 221,696 params",
        "shared (fine, coarse)",
        "reused by fine",
    } <= texts
    assert {"logits 20", "128×8×8"} <= texts
    assert any(t.startswith("18,483,064 parameters · 9,382,548 (50.8%)") for t in texts)
    tricky_texts = {t.text for t in page([tricky]).texts}
    assert {"conv 5×5 /2: 8", "channels 8 + 8", "shared (size, coarse, fine)", "logits 2 · no grad"} <= tricky_texts
    assert not any(
        t.startswith(("shared (", "reused by")) for t in {t.text for t in page([graphs["independent"]]).texts}
    )


# --------------------------------------------------------------------------- the reference diagrams


def test_reference_diagrams_are_up_to_date(graphs):
    """docs/diagrams against the specs, by structure (names, kinds, shapes, counts, edges)."""
    regenerate = "regenerate: (cd docs/diagrams && graphc render ../../specs/*.toml) && graphc render specs/*.toml -o docs/diagrams/all.svg && graphc render specs/*.toml -o docs/diagrams/all.png"
    for path in SPECS:
        kept = DIAGRAMS / f"{path.stem}.svg"
        assert kept.exists(), f"{kept} is missing; {regenerate}"
        root, ids = svg_ids(kept.read_bytes())
        fresh_root, fresh_ids = svg_ids(render(graphs[path.stem], "svg"))
        assert svg_description(root) == svg_description(fresh_root), f"{kept} is out of date; {regenerate}"
        assert {i for i in ids if i.startswith(("node--", "edge--"))} == {
            i for i in fresh_ids if i.startswith(("node--", "edge--"))
        }
    expected = page([graphs[p.stem] for p in SPECS]).description
    root, _ = svg_ids((DIAGRAMS / "all.svg").read_bytes())
    assert svg_description(root) == expected, f"all.svg is out of date; {regenerate}"
    assert Image.open(DIAGRAMS / "all.png").info.get("Description") == expected, f"all.png is out of date; {regenerate}"


# --------------------------------------------------------------------------- command line


def test_cli_default_output_and_inferred_formats(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["render", str(SPECS[0])])
    assert result.exit_code == 0, result.output
    assert (tmp_path / f"{SPECS[0].stem}.svg").exists() and "svg, the default" in result.stdout
    result = runner.invoke(app, ["render", str(SPECS[0]), "-o", "out.dot"])
    assert result.exit_code == 0 and "dot, from the suffix" in result.stdout
    assert pydot.graph_from_dot_data((tmp_path / "out.dot").read_text())
    result = runner.invoke(
        app, ["render", str(SPECS[0]), "-o", "picture.svg", "--format", "mermaid", "--direction", "lr"]
    )
    assert result.exit_code == 0 and "mermaid, from --format" in result.stdout
    assert "flowchart LR" in (tmp_path / "picture.svg").read_text()
    result = runner.invoke(app, ["render", str(SPECS[0]), "--format", "mermaid"])
    assert result.exit_code == 0 and (tmp_path / f"{SPECS[0].stem}.mermaid").exists()


def test_cli_several_specs_side_by_side_and_stdout(tmp_path):
    out = tmp_path / "two.svg"
    result = runner.invoke(app, ["render", str(SPECS[0]), str(SPECS[3]), "-o", str(out)])
    assert result.exit_code == 0, result.output
    _, ids = svg_ids(out.read_bytes())
    assert {f"node--{SPECS[0].stem}--image", f"node--{SPECS[3].stem}--image"} <= ids
    result = runner.invoke(app, ["render", str(SPECS[1]), "-o", "-", "-f", "dot"])
    assert result.exit_code == 0 and result.stdout.startswith("// graphc render")
    assert pydot.graph_from_dot_data(result.stdout)


def test_cli_bad_input(tmp_path, write_spec, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = write_spec(
        TRICKY_SPEC.replace('input = "joined"\ntask = "coarse"', 'input = "joind"\ntask = "coarse"'), "bad"
    )
    cases = [
        (["render", str(bad)], 2, "joind"),  # invalid spec: the spec's own message
        (["render", str(SPECS[0]), "--format", "jpeg"], 2, "unknown format 'jpeg'"),
        (["render", str(SPECS[0]), "-o", str(tmp_path / "x.jpg")], 2, "cannot tell the format"),
        (["render", str(SPECS[0]), "-o", "-", "-f", "png"], 2, "prints text only"),
        (["render", str(SPECS[0]), "--direction", "up"], 2, "unknown direction"),
        (["render", str(SPECS[0]), "-o", str(tmp_path / "missing" / "x.svg")], 2, "does not exist"),
        (["render", str(SPECS[0]), "-o", str(bad / "x.svg")], 2, "is not a directory"),
        (["render", str(SPECS[0]), "-f", "svg", "-o", str(tmp_path)], 2, "is a directory"),
        (["render", str(SPECS[0]), str(tmp_path / "no_such.toml")], 2, "no_such.toml"),
    ]
    for args, code, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
        assert clean_exit(result)
    assert not list(tmp_path.glob("*.svg")) and not list(tmp_path.glob("*.jpg"))


def test_same_stem_twice_without_output_is_refused(tmp_path):
    other = tmp_path / SPECS[0].name
    other.write_text(SPECS[0].read_text())
    with pytest.raises(UsageError, match="would both be drawn"):
        render_specs([SPECS[0], other])


def test_an_input_read_twice_gives_two_edges_with_unique_svg_ids(write_spec):
    text = TRICKY_SPEC.replace('inputs = ["left", "right"]', 'inputs = ["left", "right", "right"]')
    graph = build(write_spec(text, "twice"))
    root = ET.fromstring(render(graph, "svg"))
    ids = [el.get("id") for el in root.iter() if el.get("id", "").startswith("edge--")]
    assert len(ids) == len(set(ids)) == len(list(graph.edges()))
    assert {"edge--tricky--right--joined", "edge--tricky--right--joined--2"} <= set(ids)


def test_collapsed_box_shows_the_lowest_cosine_of_its_members(tmp_path):
    # --collapse with --diagnostics: a box standing for trunk_1 .. trunk_3 must not show trunk_1's
    # cosine as if it were the whole chain's.
    from graphc.backends.diagram.style import Conflict, conflict_badge
    from tests.conftest import TINY_SPEC

    spec = tmp_path / "deep.toml"
    spec.write_text(TINY_SPEC.replace('pool = "max"', 'padding = "same"\nrepeat = 3'))
    values = {
        "diag/trunk_1/cos/coarse:fine": 0.5,
        "diag/trunk_2/cos/coarse:fine": -0.4,
        "diag/trunk_3/cos/coarse:fine": 0.2,
    }
    out = tmp_path / "deep.svg"
    render_specs([spec], str(out), collapse=True, conflict=Conflict.from_metrics(values, "test"))
    svg = out.read_text()
    assert "trunk_1 … trunk_3" in svg
    assert conflict_badge(-0.4, "coarse:fine") in svg and conflict_badge(0.5, "coarse:fine") not in svg
