"""Meaning checks and shape inference: Spec -> Graph (the IR).

``build_graph`` resolves references, rejects cycles and dead ends, infers
every node's output shape and parameter count, binds heads to the data set's
label fields and works out which heads each node serves. networkx lives here
and nowhere else.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

import networkx as nx

from graphc.errors import Problem, SpecError, did_you_mean
from graphc.ir.graph import Graph, Node
from graphc.ir.shapes import (
    ShapeProblem,
    concat_shape,
    conv_block_params,
    conv_block_shape,
    fc_block_params,
    features,
    same_padding,
)
from graphc.lang.spec import (
    ConcatNode,
    ConvBlockNode,
    FCBlockNode,
    HeadNode,
    InputNode,
    Spec,
)
from graphc.lang.load import SourceMap


def _inputs_of(node) -> tuple[str, ...]:
    if isinstance(node, ConcatNode):
        return tuple(node.inputs)
    if isinstance(node, InputNode):
        return ()
    return (node.input,)


class _Builder:
    def __init__(self, spec: Spec, classes: Mapping[str, int] | None):
        self.spec = spec
        self.file = spec.source
        self.where = SourceMap(spec.text)
        self.index = {node.name: i for i, node in enumerate(spec.nodes)}
        self.data_classes: Mapping[str, int | None] = (
            dict(classes) if classes is not None else spec.data.known_classes()
        )

    def problem(self, message: str, node: str | None = None, field: str | None = None, hint: str | None = None) -> Problem:
        line = None
        if node is not None and node in self.index:
            line = self.where.line("nodes", self.index[node], *( [field] if field else [] ))
        return Problem(message, file=self.file, line=line, node=node, field=field, hint=hint)

    def fail(self, *args, **kwargs) -> None:
        raise SpecError(self.problem(*args, **kwargs))

    # ------------------------------------------------------------------ structure

    def check_names(self) -> None:
        seen: dict[str, int] = {}
        problems = []
        for i, node in enumerate(self.spec.nodes):
            if node.name in seen:
                problems.append(
                    Problem(
                        f"duplicate node name: '{node.name}' is already node #{seen[node.name] + 1}.",
                        file=self.file,
                        line=self.where.line("nodes", i, "name"),
                        node=node.name,
                        field="name",
                        hint="every node needs its own name; rename one of them.",
                    )
                )
            else:
                seen[node.name] = i
        if problems:
            raise SpecError(problems)

    def check_references(self) -> None:
        names = list(self.index)
        problems = []
        for node in self.spec.nodes:
            field = "inputs" if isinstance(node, ConcatNode) else "input"
            for ref in _inputs_of(node):
                if ref not in self.index:
                    problems.append(
                        self.problem(
                            f"reads '{ref}', but there is no node of that name.",
                            node=node.name,
                            field=field,
                            hint=did_you_mean(ref, [n for n in names if n != node.name]),
                        )
                    )
        if problems:
            raise SpecError(problems)

    def check_inputs_and_heads(self) -> None:
        inputs = [n for n in self.spec.nodes if isinstance(n, InputNode)]
        heads = [n for n in self.spec.nodes if isinstance(n, HeadNode)]
        if not inputs:
            self.fail(
                "the spec has no input node.",
                hint='add [[nodes]] with kind = "input" and shape = [3, 32, 32].',
            )
        if len(inputs) > 1:
            self.fail(
                f"the spec has {len(inputs)} input nodes ({', '.join(n.name for n in inputs)}); "
                "graphc models take one image input.",
                node=inputs[1].name,
                hint="read the same input node from every branch.",
            )
        if not heads:
            self.fail(
                "the spec has no head, so the model predicts nothing.",
                hint='add [[nodes]] with kind = "head", input = "<node>", task = "<label field>".',
            )
        tasks: dict[str, str] = {}
        for head in heads:
            if head.task_name in tasks:
                self.fail(
                    f"two heads predict task '{head.task_name}': '{tasks[head.task_name]}' and '{head.name}'.",
                    node=head.name,
                    field="task",
                    hint="each task has exactly one head; give this head another task or remove it.",
                )
            tasks[head.task_name] = head.name

    def check_recipe(self) -> None:
        """The parts of [data] and [train] that refer to the graph: watched tasks, normalisation channels."""
        tasks = [n.task_name for n in self.spec.nodes if isinstance(n, HeadNode)]
        train = self.spec.train
        monitors = [("select", train.select)] + ([("early_stopping", train.early_stopping)] if train.early_stopping else [])
        for name, monitor in monitors:
            parts = monitor.metric.split("/")
            if len(parts) == 3 and parts[1] not in tasks:
                raise SpecError(Problem(
                    f"watches '{monitor.metric}', but no head predicts task '{parts[1]}'.",
                    file=self.file, line=self.where.line("train", name), field=f"train.{name}.metric",
                    hint=did_you_mean(parts[1], tasks) or "name one of the heads' tasks, or a total such as 'val/loss'.",
                ))
        normalize = self.spec.data.normalize
        channels = next(n.shape[0] for n in self.spec.nodes if isinstance(n, InputNode))
        for key in ("mean", "std") if normalize is not None else ():
            values = getattr(normalize, key)
            if len(values) not in (1, channels):
                raise SpecError(Problem(
                    f"normalize.{key} has {len(values)} values, but the input has {channels} channels.",
                    file=self.file, line=self.where.line("data", "normalize"), field=f"data.normalize.{key}",
                    hint=f"give one value per channel ({channels}) or a single value for all.",
                ))

    def dag(self) -> nx.DiGraph:
        graph = nx.DiGraph()
        graph.add_nodes_from(self.index)
        for node in self.spec.nodes:
            for ref in _inputs_of(node):
                graph.add_edge(ref, node.name)
        try:
            cycle = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            return graph
        path = [edge[0] for edge in cycle] + [cycle[0][0]]
        self.fail(
            "the graph has a cycle: " + " -> ".join(path) + ".",
            node=cycle[-1][1],
            field="inputs" if isinstance(self.spec.nodes[self.index[cycle[-1][1]]], ConcatNode) else "input",
            hint="a spec is a DAG: data flows from the input to the heads; "
            "break the cycle by changing one of these inputs.",
        )
        raise AssertionError("unreachable")

    def check_reach_heads(self, graph: nx.DiGraph) -> None:
        heads = {n.name for n in self.spec.nodes if isinstance(n, HeadNode)}
        problems = []
        for node in self.spec.nodes:
            if node.name in heads:
                continue
            if not heads & nx.descendants(graph, node.name):
                problems.append(
                    self.problem(
                        "reaches no head: nothing this node computes is used by any prediction.",
                        node=node.name,
                        hint="remove the node, or make a head (or a node on the way to one) read it.",
                    )
                )
        if problems:
            raise SpecError(problems)

    # ------------------------------------------------------------------ shapes

    def resolve(self, node, shapes: Mapping[str, tuple[int, ...]]) -> tuple[dict[str, Any], tuple[int, ...], int]:
        """Resolved attributes, output shape and parameter count of one node."""
        if isinstance(node, InputNode):
            return {"shape": tuple(node.shape)}, tuple(node.shape), 0
        if isinstance(node, ConvBlockNode):
            in_shape = shapes[node.input]
            kernels, strides = node.per_layer("kernel"), node.per_layer("stride")
            paddings = [
                same_padding(k, s) if p == "same" else 0 if p == "valid" else p
                for k, s, p in zip(kernels, strides, node.per_layer("padding"))
            ]
            attrs = {
                "in_channels": in_shape[0],
                "channels": tuple(node.channels),
                "kernel": tuple(kernels),
                "stride": tuple(strides),
                "padding": tuple(paddings),
                "activation": node.activation,
                "pool": node.pool,
                "pool_size": node.pool_size,
                "pool_stride": node.pool_stride or node.pool_size,
                "norm": node.norm,
                "norm_position": node.norm_position,
                "dropout": node.dropout,
            }
            shape = conv_block_shape(attrs, in_shape)
            return attrs, shape, conv_block_params(attrs)
        if isinstance(node, FCBlockNode):
            attrs = {
                "in_features": features(shapes[node.input]),
                "units": tuple(node.units),
                "activation": node.activation,
                "dropout": node.dropout,
                "norm": node.norm,
            }
            return attrs, (node.units[-1],), fc_block_params(attrs)
        if isinstance(node, ConcatNode):
            shape = concat_shape(node.mode, [(name, shapes[name]) for name in node.inputs])
            return {"mode": node.mode}, shape, 0
        if isinstance(node, HeadNode):
            classes = self.head_classes(node)
            in_features = features(shapes[node.input])
            attrs = {
                "in_features": in_features,
                "task": node.task_name,
                "classes": classes,
                "loss_weight": node.loss_weight,
                "label_smoothing": node.label_smoothing,
                "reuse_as": node.reuse_as,
                "reuse_gradient": node.reuse_gradient,
            }
            return attrs, (classes,), in_features * classes + classes
        raise AssertionError(f"unknown node class {type(node).__name__}")

    def head_classes(self, head: HeadNode) -> int:
        task = head.task_name
        data = self.spec.data
        if task not in self.data_classes:
            provided = ", ".join(f"'{t}'" for t in self.data_classes)
            self.fail(
                f"predicts task '{task}', but the {data.dataset} data set has no such label field "
                f"(it provides {provided}).",
                node=head.name,
                field="task",
                hint=did_you_mean(task, self.data_classes) or "set task to one of the data set's label fields.",
            )
        known = self.data_classes[task]
        if head.classes == "auto":
            if known is None:
                self.fail(
                    f"classes = 'auto', but the number of '{task}' classes of the {data.dataset} "
                    "data set is known only from its folders.",
                    node=head.name,
                    field="classes",
                    hint="write the class count, or list every class in [data.hierarchy].",
                )
            return known
        if known is not None and head.classes != known:
            self.fail(
                f"declares {head.classes} classes for task '{task}', but the {data.dataset} data set "
                f"has {known}.",
                node=head.name,
                field="classes",
                hint=f"set classes = {known}, or classes = \"auto\" to take it from the data set.",
            )
        return head.classes

    # ------------------------------------------------------------------ assembly

    def build(self) -> Graph:
        self.check_names()
        self.check_references()
        self.check_inputs_and_heads()
        self.check_recipe()
        dag = self.dag()
        self.check_reach_heads(dag)
        order = list(nx.lexicographical_topological_sort(dag, key=self.index.__getitem__))
        by_name = {node.name: node for node in self.spec.nodes}
        shapes: dict[str, tuple[int, ...]] = {}
        resolved: dict[str, tuple[dict, tuple[int, ...], int]] = {}
        for name in order:
            try:
                attrs, shape, params = self.resolve(by_name[name], shapes)
            except ShapeProblem as exc:
                self.fail(str(exc), node=name, field=exc.field, hint=exc.hint)
            shapes[name] = shape
            resolved[name] = (attrs, shape, params)
        serves: dict[str, set[str]] = {name: set() for name in order}
        direct: dict[str, set[str]] = {name: set() for name in order}
        heads = [n for n in self.spec.nodes if isinstance(n, HeadNode)]
        # Without the edges out of heads, what reaches a head feeds its features directly.
        features_only = dag.copy()
        features_only.remove_edges_from([e for h in heads for e in dag.out_edges(h.name)])
        for head in heads:
            for name in nx.ancestors(dag, head.name) | {head.name}:
                serves[name].add(head.task_name)
            for name in nx.ancestors(features_only, head.name) | {head.name}:
                direct[name].add(head.task_name)
        nodes = tuple(
            Node(
                name=name,
                kind=by_name[name].kind,
                inputs=_inputs_of(by_name[name]),
                attrs=MappingProxyType(resolved[name][0]),
                shape=resolved[name][1],
                num_params=resolved[name][2],
                heads=frozenset(serves[name]),
                direct_heads=frozenset(direct[name]),
                line=self.where.line("nodes", self.index[name], "name"),
            )
            for name in order
        )
        return Graph(
            name=self.spec.name,
            nodes=nodes,
            layers=self.spec.layers,
            data=self.spec.data,
            train=self.spec.train,
            description=self.spec.description,
            source=self.spec.source,
            sha256=self.spec.sha256,
            spec_text=self.spec.text,
            head_order=tuple(n.name for n in self.spec.nodes if isinstance(n, HeadNode)),
        )


def build_graph(spec: Spec, classes: Mapping[str, int] | None = None) -> Graph:
    """Check a spec's meaning and return its IR.

    ``classes`` maps label fields to class counts as read from the actual data
    set; without it the counts the ``[data]`` table implies are used. Raises
    :class:`~graphc.errors.SpecError` on any problem.
    """
    return _Builder(spec, classes).build()
