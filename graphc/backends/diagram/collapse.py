"""``graphc render --collapse``: a view of the IR with every plain chain drawn as one box.

A deep trunk (``repeat = 40``) is forty boxes in a column that no page holds. A
*chain* is a run of two or more conv_block (or fc_block) nodes of one kind where
each reads only the one before and is the only reader of it, and all serve the
same heads the same way and are frozen or trained alike (so the marks of the box
hold for every member).
Each chain becomes one node named after its first member that carries the
members' names, output shape of the last, and their summed parameter count.
Likewise a run of two or more alike *residual units* - the nodes between a sum's
shortcut input and the sum, then the sum, each unit reading the one before and read
by it alone (what ``repeat`` on a sum writes) - becomes one box. Other concats,
heads and the input never collapse: they are where the topology is.

The result is an ordinary :class:`~graphc.ir.graph.Graph`, so layout, drawing,
dot and mermaid need no special case; only the box text (``style.node_text``)
shows the count.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from types import MappingProxyType

from graphc.backends.diagram.style import KIND_STYLES, key_params
from graphc.ir.graph import Graph

COLLAPSIBLE = tuple(kind for kind, style in KIND_STYLES.items() if style.collapsible)  # conv_block, fc_block


def _links(graph: Graph) -> dict[str, str]:
    """next[a] = b for every link a -> b that a chain may run through."""
    readers = Counter(name for node in graph for name in node.inputs)
    links = {}
    for node in graph:
        if node.kind not in COLLAPSIBLE or len(node.inputs) != 1:
            continue
        source = graph[node.inputs[0]]
        if (
            source.kind == node.kind
            and readers[source.name] == 1
            and source.heads == node.heads
            and source.direct_heads == node.direct_heads
            # frozen and trained blocks stay apart (transfer learning marks them differently)
            and (source.attrs.get("trainable"), source.attrs.get("unfreeze_after"))
            == (node.attrs.get("trainable"), node.attrs.get("unfreeze_after"))
        ):
            links[source.name] = node.name
    return links


def _upstream(graph: Graph, name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for source in graph[todo.pop()].inputs:
            if source not in seen:
                seen.add(source)
                todo.append(source)
    return seen


def _residual_runs(graph: Graph) -> list[list[str]]:
    """Runs of two or more alike residual units, each unit (the nodes between a sum's shortcut
    input and the sum, then the sum) reading the previous unit's sum; members in graph order."""
    users: dict[str, list[str]] = {n.name: [] for n in graph}
    for node in graph:
        for source in dict.fromkeys(node.inputs):
            users[source].append(node.name)
    units: dict[str, tuple[str, list[str]]] = {}  # sum -> (shortcut, members ending with the sum)
    for total in graph:
        if total.kind != "concat" or total.attrs.get("mode") != "sum":
            continue
        inputs = list(dict.fromkeys(total.inputs))
        upstream = {name: _upstream(graph, name) for name in inputs}
        shortcut = next((x for x in inputs if all(x == o or x in upstream[o] for o in inputs)), None)
        if shortcut is None:
            continue
        inside = set(inputs).union(*upstream.values()) - upstream[shortcut] - {shortcut}
        members = [n.name for n in graph if n.name in inside] + [total.name]
        alike = {(graph[m].heads, graph[m].direct_heads, graph[m].trainable) for m in members}
        if len(alike) == 1 and all(
            set(graph[m].inputs) <= set(members) | {shortcut} and set(users[m]) <= set(members) for m in members[:-1]
        ):
            units[total.name] = (shortcut, members)
    signature = {
        name: tuple((graph[m].kind, key_params(graph, graph[m]), graph[m].heads) for m in members)
        for name, (_, members) in units.items()
    }
    following = {}  # a unit's sum -> the next unit's sum, where the next unit alone reads it
    for name, (shortcut, members) in units.items():
        if shortcut in units and signature[shortcut] == signature[name] and set(users[shortcut]) <= set(members):
            following[shortcut] = name
    runs = []
    followed = set(following.values())  # a set: `in` on dict values scans them all (quadratic on long runs)
    for start in [name for name in following if name not in followed]:
        run = [start]
        while run[-1] in following:
            run.append(following[run[-1]])
        runs.append([m for name in run for m in units[name][1]])
    return runs


def _chains(graph: Graph) -> list[list[str]]:
    links = _links(graph)
    runs = []
    linked = set(links.values())  # a set: `in` on dict values scans them all (quadratic on long chains)
    for start in [name for name in links if name not in linked]:
        members = [start]
        while members[-1] in links:
            members.append(links[members[-1]])
        runs.append(members)
    return runs


def collapse_chains(graph: Graph) -> Graph:
    """``graph`` with every chain of two or more same-kind blocks, and every run of two or more
    alike residual units, replaced by one node."""
    groups = _residual_runs(graph)
    grouped = {name for group in groups for name in group}
    groups += [chain for chain in _chains(graph) if not grouped & set(chain)]
    if not groups:
        return graph
    group_of = {name: i for i, group in enumerate(groups) for name in group}
    box_of = {group[-1]: group[0] for group in groups}  # readers of a group's last member read its box

    nodes = []
    for node in graph:
        i = group_of.get(node.name)
        if i is None:
            inputs = tuple(box_of.get(name, name) for name in node.inputs)
            nodes.append(replace(node, inputs=inputs) if inputs != node.inputs else node)
            continue
        group = groups[i]
        if node.name != group[0]:
            continue  # drawn inside its group's box
        members, inside = [graph[name] for name in group], set(group)
        outside = tuple(dict.fromkeys(src for m in members for src in m.inputs if src not in inside))
        sums = [m for m in members if m.kind == "concat"]
        if sums:  # residual units: what one unit holds
            unit = members[: members.index(sums[0]) + 1]
            label = f"{len(sums)} × residual unit"
            summary = " + ".join(key_params(graph, m) for m in unit[:-1]) + " + sum"
            kind = unit[0].kind
        else:
            label = f"{len(members)} × {node.kind}"
            lines = [key_params(graph, m) for m in members]
            summary = lines[0] if len(set(lines)) == 1 else f"{lines[0]} … {lines[-1]}"
            kind = node.kind
        attrs = {
            **node.attrs,
            "collapsed": tuple(group),
            "collapsed_label": label,
            "collapsed_params": summary,
        }
        nodes.append(
            replace(
                node,
                kind=kind,
                inputs=tuple(box_of.get(name, name) for name in outside),
                attrs=MappingProxyType(attrs),
                shape=members[-1].shape,
                num_params=sum(m.num_params for m in members),
            )
        )
    return replace(graph, nodes=tuple(nodes))
