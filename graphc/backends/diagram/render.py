"""``graphc render``: architecture diagrams of the IR, with no system graphviz.

Pictures (svg, png, pdf) are laid out by :mod:`graphc.backends.diagram.layout`, composed by
:mod:`graphc.backends.diagram.draw` and drawn by :mod:`graphc.backends.diagram.scene` through matplotlib; ``dot`` and ``mermaid`` are text for
documentation. All formats say the same things, worded once in
:mod:`graphc.backends.diagram.style`:

- a box per node: name, kind, key parameters, output shape, parameter count,
  and a mark when several heads read it directly ("shared (fine, coarse)") or
  when another task reads it through a head ("reused by fine");
- an edge per input, labelled with the tensor it carries; edges out of a head
  (cross-task reuse) are dashed and coloured;
- a title with the spec's name and its total, shared (and frozen) parameter counts.

Reads the IR only (nodes, shapes, parameter counts, the heads each node serves);
``--collapse`` first merges chains of alike blocks (:mod:`graphc.backends.diagram.collapse`),
and ``--diagnostics`` colours by a run's gradient-conflict values that the command line
reads for it (:class:`graphc.backends.diagram.style.Conflict`).
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from graphc.backends.diagram.style import (
    EDGE_COLOR,
    REUSE_COLOR,
    SHARED_COLOR,
    Conflict,
    edge_label,
    kind_colors,
    node_text,
    panel_id,
    stats_line,
)
from graphc.errors import RunError, UsageError, did_you_mean
from graphc.files import atomic_write_bytes
from graphc.ir.graph import Graph

FORMATS = ("svg", "png", "pdf", "dot", "mermaid")
TEXT_FORMATS = ("svg", "dot", "mermaid")  # the ones ``-o -`` may print
PICTURE_FORMATS = ("svg", "png", "pdf")
SUFFIXES = {
    ".svg": "svg",
    ".png": "png",
    ".pdf": "pdf",
    ".dot": "dot",
    ".gv": "dot",
    ".mmd": "mermaid",
    ".mermaid": "mermaid",
}
DIRECTIONS = ("TB", "LR")

# --------------------------------------------------------------------------- dot


def _dot_quote(text: str) -> str:
    return '"' + _dot_escape_line(text) + '"'


def to_dot(graphs: Sequence[Graph], direction: str = "TB", shapes: bool = True) -> str:
    """Graphviz DOT text: one digraph, a cluster per spec when there are several."""
    several = len(graphs) > 1
    lines = [
        "// graphc render: architecture diagram (Graphviz DOT)",
        "digraph graphc {",
        f'  graph [rankdir={direction}, fontname="Helvetica", fontsize=12, labelloc=t, nodesep=0.35, ranksep=0.45];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
        f'  edge [fontname="Helvetica", fontsize=8, color="{EDGE_COLOR}"];',
    ]
    for i, graph in enumerate(graphs):
        pid = panel_id(graph, i, graphs)
        ident = (lambda name: _dot_quote(f"{pid}.{name}")) if several else _dot_quote  # noqa: B023 (used within this iteration)
        indent = "    " if several else "  "
        title = f"{graph.name}\\n{stats_line(graph)}"
        if several:
            lines.append(f"  subgraph {_dot_quote('cluster_' + pid)} {{")
        lines.append(f'{indent}label="{title}";' if several else f'  graph [label="{title}"];')
        for node in graph:
            text = node_text(graph, node, shapes)
            fill, stroke = kind_colors(node.kind)
            penwidth = 1.0
            if text.shared or text.reused:
                stroke, penwidth = (SHARED_COLOR if text.shared else REUSE_COLOR), 2.5
            label = "\\n".join(
                _dot_escape_line(line)
                for line in (text.name, text.kind, *text.details, *text.shared, *text.reused, *text.frozen)
            )
            dashed = ', style="rounded,filled,dashed"' if text.frozen else ""  # a frozen node, as in the pictures
            lines.append(
                f'{indent}{ident(node.name)} [label="{label}", fillcolor="{fill}", color="{stroke}", penwidth={penwidth}{dashed}];'
            )
        for source, target in graph.edges():
            attrs = [f"label={_dot_quote(edge_label(graph, source, target))}"] if shapes else []
            if graph.is_reuse_edge(source.name):
                attrs += ["style=dashed", f'color="{REUSE_COLOR}"', f'fontcolor="{REUSE_COLOR}"', "penwidth=1.6"]
            attributes = f" [{', '.join(attrs)}]" if attrs else ""
            lines.append(f"{indent}{ident(source.name)} -> {ident(target.name)}{attributes};")
        sinks = [n.name for n in graph if not graph.users(n.name)]
        if len(sinks) > 1:  # outputs side by side at the end, as in the pictures
            lines.append(f"{indent}{{ rank=same; {' '.join(ident(s) + ';' for s in sinks)} }}")
        if several:
            lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_escape_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


# --------------------------------------------------------------------------- mermaid


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def to_mermaid(graphs: Sequence[Graph], direction: str = "TB", shapes: bool = True) -> str:
    """Mermaid flowchart text (renders on GitHub and GitLab); a subgraph per spec when there are several."""
    several = len(graphs) > 1
    lines: list[str] = []
    if not several:
        graph = graphs[0]
        lines += ["---", f'title: "{_mermaid_text(graph.name)}: {_mermaid_text(stats_line(graph))}"', "---"]
    lines.append(f"flowchart {direction}")
    styles: list[str] = []
    link = 0
    for i, graph in enumerate(graphs):
        prefix = f"s{i}_" if several else "n_"  # ids never clash with keywords such as 'end'
        indent = "    " if several else "  "
        if several:
            lines.append(f'  subgraph s{i}["{_mermaid_text(graph.name)}: {_mermaid_text(stats_line(graph))}"]')
            lines.append(f"    direction {direction}")
        by_kind: dict[str, list[str]] = {}
        for node in graph:
            text = node_text(graph, node, shapes)
            parts = [f"<b>{_mermaid_text(text.name)}</b>", f"<i>{_mermaid_text(text.kind)}</i>"]
            parts += [_mermaid_text(line) for line in (*text.details, *text.shared, *text.reused, *text.frozen)]
            lines.append(f'{indent}{prefix}{node.name}["{"<br/>".join(parts)}"]')
            by_kind.setdefault(node.kind, []).append(prefix + node.name)
            if text.shared or text.reused:
                color = SHARED_COLOR if text.shared else REUSE_COLOR
                dash = ",stroke-dasharray:5 3" if text.frozen else ""  # frozen: dashed, as in the pictures
                styles.append(f"  style {prefix}{node.name} stroke:{color},stroke-width:3px{dash}")
            elif text.frozen:
                styles.append(f"  style {prefix}{node.name} stroke-dasharray:5 3")
        for source, target in graph.edges():
            reuse = graph.is_reuse_edge(source.name)
            arrow = "-.->" if reuse else "-->"
            label = f'|"{_mermaid_text(edge_label(graph, source, target))}"|' if shapes else ""
            lines.append(f"{indent}{prefix}{source.name} {arrow}{label} {prefix}{target.name}")
            if reuse:
                styles.append(f"  linkStyle {link} stroke:{REUSE_COLOR},stroke-width:2px,color:{REUSE_COLOR}")
            link += 1
        for kind, ids in by_kind.items():
            styles.append(f"  class {','.join(ids)} k_{kind}")
        if several:
            lines.append("  end")
    kinds = [k for k in dict.fromkeys(n.kind for g in graphs for n in g)]
    for kind in kinds:
        fill, stroke = kind_colors(kind)
        lines.append(f"  classDef k_{kind} fill:{fill},stroke:{stroke},color:#111111")
    return "\n".join(lines + styles) + "\n"


# --------------------------------------------------------------------------- entry points


def check_format(fmt: str) -> str:
    value = fmt.lower().lstrip(".")
    if value not in FORMATS:
        hint = did_you_mean(value, FORMATS)
        raise UsageError(
            f"unknown format '{fmt}': graphc render draws {', '.join(FORMATS)}." + (f" Hint: {hint}" if hint else "")
        )
    return value


def check_direction(direction: str) -> str:
    value = direction.upper()
    if value not in DIRECTIONS:
        raise UsageError(f"unknown direction '{direction}': use TB (top to bottom) or LR (left to right).")
    return value


def render(
    graphs: Graph | Sequence[Graph],
    format: str = "svg",
    *,
    direction: str = "TB",
    shapes: bool = True,
    conflict: Conflict | None = None,
) -> bytes:
    """One graph, or several side by side, as the bytes of an svg, png, pdf, dot or mermaid file;
    ``conflict`` (pictures of one graph): a run's gradient diagnostics, drawn as colours."""
    graphs = [graphs] if isinstance(graphs, Graph) else list(graphs)
    if not graphs:
        raise UsageError("nothing to render: give at least one spec.")
    fmt, direction = check_format(format), check_direction(direction)
    if conflict is not None and fmt not in PICTURE_FORMATS:
        raise UsageError(
            f"--diagnostics colours pictures ({', '.join(PICTURE_FORMATS)}), not {fmt}. Hint: -o diagram.svg."
        )
    if fmt == "dot":
        return to_dot(graphs, direction, shapes).encode()
    if fmt == "mermaid":
        return to_mermaid(graphs, direction, shapes).encode()
    from graphc.backends.diagram.draw import check_legible, page
    from graphc.backends.diagram.scene import save

    check_legible(graphs)
    return save(page(graphs, direction, shapes, conflict), fmt)


def resolve_format(fmt: str | None, output: str | None) -> tuple[str, str]:
    """The format to write and why: --format, else the -o suffix, else svg."""
    if fmt:
        return check_format(fmt), "from --format"
    if output and output != "-":
        suffix = Path(output).suffix.lower()
        if suffix not in SUFFIXES:
            raise UsageError(
                f"cannot tell the format from the output name '{output}': expected a suffix among "
                f"{', '.join(SUFFIXES)}. Hint: add --format ({', '.join(FORMATS)}) or change the suffix."
            )
        return SUFFIXES[suffix], f"from the suffix of {output}"
    return "svg", "the default"


@dataclass(frozen=True)
class Rendered:
    path: Path | None  # None: for standard output
    format: str
    how: str  # why this format
    data: bytes


def _check_target(path: Path) -> None:
    if path.is_dir():
        raise UsageError(
            f"cannot write '{path}': it is a directory. Hint: give a file name, e.g. -o {path / 'diagram.svg'}."
        )
    parent = path.parent
    if not parent.exists():
        raise UsageError(
            f"cannot write '{path}': the directory '{parent}' does not exist. Hint: create it, or choose another -o."
        )
    if not parent.is_dir():
        raise UsageError(f"cannot write '{path}': '{parent}' is not a directory. Hint: choose another -o.")


def _write(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)  # graphc's one writer: a link planted at the name is replaced, not followed
    except OSError as exc:
        message = f"cannot write '{path}': {exc.strerror or exc}."
        # A path the user can change (no permission, read-only place, not a directory)
        # is a usage error; a failing disk is a runtime one.
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
            raise UsageError(message + " Hint: choose another -o.") from None
        raise RunError(message) from None


def render_specs(
    specs: Sequence[str | Path],
    output: str | None = None,
    fmt: str | None = None,
    *,
    direction: str = "TB",
    shapes: bool = True,
    collapse: bool = False,
    conflict: Conflict | None = None,
) -> list[Rendered]:
    """What ``graphc render`` does: load the specs, draw them, write the files.

    With ``output`` one page holds every spec (side by side); ``'-'`` returns the
    text for standard output. Without it each spec goes to ``<stem>.<format>``
    in the current directory. ``collapse`` draws each chain of same-kind blocks
    as one box (:mod:`graphc.backends.diagram.collapse`). ``conflict``: a run's gradient
    diagnostics to colour one spec's picture by (graphc render --diagnostics). Spec problems raise
    SpecError, bad arguments UsageError, both before anything is written.
    """
    from graphc.ir.build import build_graph
    from graphc.lang.load import load_spec

    fmt, how = resolve_format(fmt, output)
    direction = check_direction(direction)
    if output == "-" and fmt not in TEXT_FORMATS:
        raise UsageError(
            f"-o - prints text only ({', '.join(TEXT_FORMATS)}), not {fmt}. Hint: give a file name, e.g. -o diagram.{fmt}."
        )
    if output and output != "-":
        targets = [Path(output)]
    else:
        targets = [Path(f"{Path(s).stem}.{fmt}") for s in specs]
        seen: dict[Path, str] = {}
        for spec, target in zip(specs, targets):
            if target in seen and output != "-":
                raise UsageError(
                    f"'{seen[target]}' and '{spec}' would both be drawn to '{target}'. "
                    "Hint: give -o FILE to draw them side by side on one page, or render them one at a time."
                )
            seen[target] = str(spec)
    if output != "-":
        for target in targets:
            _check_target(target)
    if conflict is not None and len(specs) != 1:
        raise UsageError(f"--diagnostics draws one spec (the run's), got {len(specs)}.")
    graphs = [build_graph(load_spec(spec)) for spec in specs]
    if conflict is not None:
        unknown = sorted((set(conflict.cosines) | set(conflict.shares)) - {n.name for n in graphs[0]})
        if unknown:
            raise UsageError(
                f"the run's diagnostics name node(s) {', '.join(unknown)}, which spec '{specs[0]}' does not have. "
                "Hint: render the spec the run was trained from (RUN_DIR/spec.toml)."
            )
    if collapse:
        from graphc.backends.diagram.collapse import collapse_chains

        graphs = [collapse_chains(graph) for graph in graphs]
        if conflict is not None:  # a box of several nodes shows the lowest cosine among them
            conflict = conflict.collapsed(graphs[0])
    if output:
        data = render(graphs, fmt, direction=direction, shapes=shapes, conflict=conflict)
        if output == "-":
            return [Rendered(None, fmt, how, data)]
        _write(targets[0], data)
        return [Rendered(targets[0], fmt, how, data)]
    results = []
    for graph, target in zip(graphs, targets):
        data = render(graph, fmt, direction=direction, shapes=shapes, conflict=conflict)
        _write(target, data)
        results.append(Rendered(target, fmt, how, data))
    return results
