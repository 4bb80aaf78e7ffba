"""The intermediate representation: an immutable, topologically ordered graph.

``build`` produces it; every backend (compile, render, export, show) and the
runtime read it and nothing else. Each node carries the facts backends need -
resolved parameters, output shape, parameter count, the heads it serves - so
that no backend recomputes or re-validates them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from graphc.lang.spec import DataSpec, LayerDefaults, TrainSpec

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Node:
    """One node of the graph.

    ``attrs`` holds the resolved parameters of the node's kind (per-layer
    lists expanded, paddings in pixels, head class counts filled in). Each
    kind's entry in ``graphc.ir.kinds.KINDS`` makes them: its ``resolve``
    function's docstring lists them. Kinds with parameters also have
    ``trainable`` (False: frozen) and ``unfreeze_after`` (epochs after which a
    frozen node joins training, or None).
    """

    name: str
    kind: str
    inputs: tuple[str, ...]
    attrs: Mapping[str, Any]
    shape: Shape  # output shape without the batch dimension
    num_params: int  # parameters (weights and biases) of this node alone, frozen or not; buffers not counted
    heads: frozenset[str]  # tasks of the heads whose output depends on this node
    direct_heads: frozenset[str]  # those reached without passing through another head
    line: int | None = None  # line of the node in the spec file, where known

    @property
    def is_shared(self) -> bool:
        """Whether more than one head depends on this node (hard sharing or cross-task reuse)."""
        return len(self.heads) > 1

    @property
    def is_hard_shared(self) -> bool:
        """Whether several heads read this node's features directly (hard parameter sharing)."""
        return len(self.direct_heads) > 1

    @property
    def reused_by(self) -> frozenset[str]:
        """Heads that depend on this node only through another head's output (cross-task reuse)."""
        return self.heads - self.direct_heads

    @property
    def trainable(self) -> bool:
        """Whether the node's parameters train from the first epoch (False: frozen, see ``unfreeze_after``)."""
        return self.attrs.get("trainable", True)

    @property
    def is_map(self) -> bool:
        """Whether the output is a feature map (C, H, W) rather than a vector."""
        return len(self.shape) == 3


@dataclass(frozen=True)
class Graph:
    """A validated model graph. Nodes are in topological order (spec order where free)."""

    name: str
    nodes: tuple[Node, ...]
    layers: LayerDefaults
    data: DataSpec
    train: TrainSpec
    description: str = ""
    source: Path | None = None
    sha256: str = ""
    spec_text: str = ""
    head_order: tuple[str, ...] = ()  # head names in spec order (the model's output order)
    _index: Mapping[str, Node] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", MappingProxyType({n.name: n for n in self.nodes}))

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, name: str) -> Node:
        return self._index[name]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    @property
    def inputs(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.kind == "input")

    @property
    def input(self) -> Node:
        """The (single) input node."""
        return self.inputs[0]

    @property
    def heads(self) -> tuple[Node, ...]:
        """Head nodes in spec order (the order of the model's outputs)."""
        return tuple(self[name] for name in self.head_order)

    @property
    def tasks(self) -> tuple[str, ...]:
        """Task names in output order."""
        return tuple(h.attrs["task"] for h in self.heads)

    def head_for(self, task: str) -> Node:
        return next(h for h in self.heads if h.attrs["task"] == task)

    def users(self, name: str) -> tuple[Node, ...]:
        """Nodes that read ``name``, in topological order."""
        return tuple(n for n in self.nodes if name in n.inputs)

    def edges(self) -> Iterator[tuple[Node, Node]]:
        """(source, destination) pairs, in destination order then input order."""
        for node in self.nodes:
            for source in node.inputs:
                yield self[source], node

    def is_reuse_edge(self, source: str) -> bool:
        """Whether edges out of ``source`` carry a head's output into another node (cross-task reuse)."""
        return self[source].kind == "head"

    @property
    def total_params(self) -> int:
        return sum(n.num_params for n in self.nodes)

    @property
    def trainable_params(self) -> int:
        """Parameters that train from the first epoch: the total less those of frozen nodes."""
        return sum(n.num_params for n in self.nodes if n.trainable)

    @property
    def frozen_params(self) -> int:
        """Parameters of the nodes frozen at the start (trainable = false): the total less the trainable."""
        return self.total_params - self.trainable_params

    @property
    def frozen(self) -> tuple[Node, ...]:
        """Nodes frozen at the start (trainable = false), in topological order."""
        return tuple(n for n in self.nodes if not n.trainable)

    @property
    def shared_params(self) -> int:
        """Parameters in nodes that serve more than one head (by hard sharing or reuse)."""
        return sum(n.num_params for n in self.nodes if n.is_shared)

    @property
    def hard_shared_params(self) -> int:
        """Parameters in nodes whose features several heads read directly."""
        return sum(n.num_params for n in self.nodes if n.is_hard_shared)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (what ``graphc show --json`` prints)."""
        return {
            "name": self.name,
            "description": self.description,
            "source": str(self.source) if self.source else None,
            "sha256": self.sha256,
            "tasks": list(self.tasks),
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "shared_params": self.shared_params,
            "shared_fraction": self.shared_params / self.total_params if self.total_params else 0.0,
            "hard_shared_params": self.hard_shared_params,
            "nodes": [
                {
                    "name": n.name,
                    "kind": n.kind,
                    "inputs": list(n.inputs),
                    "shape": list(n.shape),
                    "params": n.num_params,
                    "heads": sorted(n.heads),
                    "direct_heads": sorted(n.direct_heads),
                    "shared": n.is_shared,
                    "hard_shared": n.is_hard_shared,
                    "attrs": {k: list(v) if isinstance(v, tuple) else v for k, v in n.attrs.items()},
                }
                for n in self.nodes
            ],
        }
