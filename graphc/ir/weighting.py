"""What the IR decides for ``[train] loss_weighting``: the node GradNorm balances gradients on.

GradNorm (Chen et al. 2018) measures each task's gradient norm on "the last shared layer". In
graphc's IR that is the last node, in topological order, that several heads read directly
(``Node.is_hard_shared``) and that has parameters; the runtime takes its parameters from the
compiled module of the same name (runtime/train/weighting.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from graphc.ir.graph import Node


def gradnorm_node(nodes: Iterable[Node]) -> Node | None:
    """The last hard-shared node with parameters, of ``nodes`` in topological order; None if there is none."""
    shared = [n for n in nodes if n.is_hard_shared and n.num_params > 0]
    return shared[-1] if shared else None
