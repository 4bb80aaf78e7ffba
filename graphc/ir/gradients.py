"""Where the tasks' loss gradients meet: the facts gradient-conflict diagnostics measure.

Read from the IR alone. Task T's loss gradient reaches a node's parameters when a path leads
from the node to T's head and passes through no head whose readers get a detached copy
(``reuse_gradient = false``): that is :func:`gradient_tasks`. Two kinds of place get measured
(runtime/train/diagnostics.py does the measuring, graphc.ir.metrics names the numbers):

- **shared nodes** (:func:`shared_nodes`): nodes with trainable parameters that two or more
  tasks' gradients reach - hard sharing (a trunk several heads read) and cross-task reuse (a
  branch another task reads through its head) alike. A node the IR marks shared
  (``Node.is_shared``) that only one task's gradient reaches (its reader's copy is detached)
  has no conflict to measure and is left out.
- **reused branches** (:func:`reused_branches`): for every head read by another task's node
  (the IR's reuse edges), the nodes with parameters that serve that head's task alone
  directly (``direct_heads == {task}``) and other tasks only through the head's output
  (``reused_by``) - in the reference spec ``shared_reuse_coarse``: coarse_fc1, coarse_fc2 and
  coarse_head. Every reader's gradient reaches them through the head, so "how much of this
  branch's gradient comes from the reader" is well defined. A reader whose gradient is stopped
  (``reuse_gradient = false`` on this head, or on a head further along its path) is listed in
  ``detached``: its share is 0 by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphc.ir.graph import Graph


@dataclass(frozen=True)
class SharedNode:
    """A node with parameters that two or more tasks' loss gradients reach."""

    name: str
    tasks: tuple[str, ...]  # in head (output) order


@dataclass(frozen=True)
class ReusedBranch:
    """The part of the model that serves one head's task alone, read by other tasks through the head."""

    head: str  # the reused head node
    task: str  # its own task
    nodes: tuple[str, ...]  # nodes with parameters, in topological order (the head last)
    readers: tuple[str, ...]  # tasks that read the head's output (directly or further along), head order
    detached: tuple[str, ...]  # those of them whose gradient does not reach the head (share 0)


def gradient_tasks(graph: Graph) -> dict[str, frozenset[str]]:
    """For each node, the tasks whose loss gradient reaches its output: one pass in reverse
    topological order; a head passes its readers' gradients on only with ``reuse_gradient``."""
    readers: dict[str, set[str]] = {node.name: set() for node in graph}
    for source, target in graph.edges():
        readers[source.name].add(target.name)
    reach: dict[str, frozenset[str]] = {}
    for node in reversed(graph.nodes):
        downstream = frozenset().union(*(reach[reader] for reader in readers[node.name]))
        if node.kind == "head":
            reach[node.name] = frozenset({node.attrs["task"]}) | (
                downstream if node.attrs["reuse_gradient"] else frozenset()
            )
        else:
            reach[node.name] = downstream
    return reach


def _in_head_order(graph: Graph, tasks) -> tuple[str, ...]:
    return tuple(t for t in graph.tasks if t in tasks)


def shared_nodes(graph: Graph) -> list[SharedNode]:
    """Nodes with parameters that two or more tasks' gradients reach, in topological order."""
    reach = gradient_tasks(graph)
    return [
        SharedNode(node.name, _in_head_order(graph, reach[node.name]))
        for node in graph
        if node.num_params > 0 and len(reach[node.name]) > 1
    ]


def reused_branches(graph: Graph) -> list[ReusedBranch]:
    """One entry per head that another task reads, in head order."""
    reach = gradient_tasks(graph)
    branches = []
    for head in graph.heads:
        task = head.attrs["task"]
        if not head.reused_by:
            continue
        nodes = tuple(n.name for n in graph if n.num_params > 0 and n.direct_heads == frozenset({task}) and n.reused_by)
        readers = _in_head_order(graph, head.reused_by)
        branches.append(
            ReusedBranch(
                head.name,
                task,
                nodes,
                readers,
                tuple(t for t in readers if t not in reach[head.name]),
            )
        )
    return branches
