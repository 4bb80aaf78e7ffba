"""Meaning checks and shape inference: Spec -> Graph (the IR).

``build_graph`` resolves references, rejects cycles and dead ends, infers
every node's output shape and parameter count, binds heads to the data set's
label fields and works out which heads each node serves, in passes over the
nodes in topological order (no per-node graph searches: specs may have
thousands of nodes); networkx only names the cycle of a spec that has one.
"""

from __future__ import annotations

import dataclasses
import heapq
import os
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import networkx as nx

from graphc.errors import Problem, SpecError, did_you_mean
from graphc.ir.gradients import reused_branches, shared_nodes
from graphc.ir.graph import Graph, Node
from graphc.ir.metrics import (
    WEIGHT_PREFIX,
    diagnostic_names,
    measured_links,
    metric_names,
    monitor_problem,
    watchable_metrics,
    weight_metrics,
)
from graphc.ir.shapes import (
    ShapeProblem,
    concat_shape,
    conv_block_params,
    conv_block_shape,
    fc_block_params,
    features,
    layer_outputs,
    same_padding,
)
from graphc.ir.weighting import gradnorm_node
from graphc.lang.hierarchy import hierarchy_paths, listed_twice
from graphc.lang.load import source_map
from graphc.lang.spec import (
    ConcatNode,
    ConvBlockNode,
    FCBlockNode,
    HeadNode,
    InputNode,
    Spec,
)

# The largest model graphc builds: a guard against nonsense such as channels = [1000000000],
# a 10^20-pixel input or padding = 100000, caught before anything allocates. Generous on
# purpose: the reference specs have 18.5 M parameters; a chain of ResNet-50's bottleneck blocks
# at 224x224 (tests/test_safety_spec.py) has 25.2 M and 0.04 GiB of layer outputs. Environment variables of the same name with a
# GRAPHC_ prefix (GRAPHC_MAX_PARAMS=5e9) raise them for a model that really is that large.
MAX_PARAMS = 2_000_000_000  # all parameters, frozen or not (8 GB as fp32, before optimiser state)
MAX_ACTIVATION_BYTES = 16 * 2**30  # fp32 layer outputs of one image (shapes.layer_outputs)


class ModelTooLarge(SpecError):
    """A model past MAX_PARAMS or MAX_ACTIVATION_BYTES (see :func:`check_model_size`)."""


def _limit(name: str, default: int) -> int:
    value = os.environ.get(f"GRAPHC_{name}")
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 1 or number == float("inf"):
        raise SpecError(
            Problem(
                f"GRAPHC_{name}={value!r} is not a positive number.",
                hint=f"unset it (default {default:,}) or give a count such as 5e9.",
            )
        )
    return int(number)


def _size(n: int) -> str:
    if n >= 2**60:  # whole GiB in integer arithmetic: n may be past what a float holds
        return f"{n // 2**30:,} GiB"
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def _inputs_of(node) -> tuple[str, ...]:
    if isinstance(node, ConcatNode):
        return tuple(node.inputs)
    if isinstance(node, InputNode):
        return ()
    return (node.input,)


def _training(node) -> dict[str, Any]:
    """Whether a node with parameters trains from the start, and after how many epochs a frozen one joins."""
    return {"trainable": node.trainable, "unfreeze_after": node.unfreeze_after}


class _Builder:
    def __init__(self, spec: Spec, classes: Mapping[str, int] | None):
        self.spec = spec
        self.file = spec.source
        self.where = source_map(spec.text)
        self.index = {node.name: i for i, node in enumerate(spec.nodes)}
        self.data_classes: Mapping[str, int | None] = (
            dict(classes) if classes is not None else spec.data.known_classes()
        )

    def problem(
        self, message: str, node: str | None = None, field: str | None = None, hint: str | None = None
    ) -> Problem:
        line = None
        if node is not None and node in self.index:
            line = self.where.line("nodes", self.spec.origin(self.index[node]), *([field] if field else []))
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
                        line=self.where.line("nodes", self.spec.origin(i), "name"),
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
        monitors = [("select", train.select)] + (
            [("early_stopping", train.early_stopping)] if train.early_stopping else []
        )
        parents = {
            parent for _, parent in self.spec.data.hierarchy_links()
        }  # PARENT/acc_from_CHILD needs no PARENT head
        for name, monitor in monitors:
            parts = monitor.metric.split("/")
            if (
                len(parts) == 3
                and parts[1] not in tasks
                and parts[1] not in parents
                and f"{parts[1]}/" != WEIGHT_PREFIX
            ):
                raise SpecError(
                    Problem(
                        f"watches '{monitor.metric}', but no head predicts task '{parts[1]}'.",
                        file=self.file,
                        line=self.where.line("train", name),
                        field=f"train.{name}.metric",
                        hint=did_you_mean(parts[1], tasks)
                        or "name one of the heads' tasks, or a total such as 'val/loss'.",
                    )
                )
        normalize = self.spec.data.normalize
        channels = next(n.shape[0] for n in self.spec.nodes if isinstance(n, InputNode))
        for key in ("mean", "std") if normalize is not None else ():
            values = getattr(normalize, key)
            if len(values) not in (1, channels):
                raise SpecError(
                    Problem(
                        f"normalize.{key} has {len(values)} values, but the input has {channels} channels.",
                        file=self.file,
                        line=self.where.line("data", "normalize"),
                        field=f"data.normalize.{key}",
                        hint=f"give one value per channel ({channels}) or a single value for all.",
                    )
                )

    def check_size(
        self,
        order: list[str],
        by_name: Mapping[str, Any],
        resolved: Mapping[str, tuple],
        shapes: Mapping[str, tuple[int, ...]],
    ) -> None:
        """Refuse a model too large to build (MAX_PARAMS, MAX_ACTIVATION_BYTES) before anything
        allocates, naming its size at batch 1 and the nodes that contribute most."""
        params = {name: resolved[name][2] for name in order}
        outputs = {
            name: 4
            * layer_outputs(
                by_name[name].kind,
                resolved[name][0],
                shapes[_inputs_of(by_name[name])[0]] if _inputs_of(by_name[name]) else None,
                resolved[name][1],
            )
            for name in order
        }
        total, memory = sum(params.values()), sum(outputs.values())
        max_params, max_bytes = _limit("MAX_PARAMS", MAX_PARAMS), _limit("MAX_ACTIVATION_BYTES", MAX_ACTIVATION_BYTES)
        if total <= max_params and memory <= max_bytes:
            return
        biggest, widest = max(params, key=params.get), max(outputs, key=outputs.get)
        raise ModelTooLarge(
            self.problem(
                f"the model is too large to build: {total:,} parameters (limit {max_params:,}) and "
                f"{_size(memory)} of activations at batch 1 (fp32 layer outputs of one image; limit "
                f"{_size(max_bytes)}). Node '{biggest}' has the most parameters ({params[biggest]:,}), "
                f"node '{widest}' the largest outputs ({_size(outputs[widest])}).",
                node=biggest if total > max_params else widest,
                hint="check the channels, units, padding and input shape that lead to these nodes; if the model "
                "really is this large, raise the limits with the environment variables GRAPHC_MAX_PARAMS and GRAPHC_MAX_ACTIVATION_BYTES.",
            )
        )

    def check_hierarchy(self) -> None:
        """A class listed in two groups of one [data.hierarchy] table (or twice in one group) would
        belong to two classes of that field; the table says each class is in exactly one."""
        problems = [
            dataclasses.replace(problem, file=self.file, line=self.where.line("data", "hierarchy", field, group))
            for field, group, problem in listed_twice(self.spec.data.hierarchy)
        ]
        if problems:
            raise SpecError(problems)

    def check_monitors(self, heads: list[tuple[str, int]], diagnostics: Sequence[str] = ()) -> None:
        """train.select and train.early_stopping must watch a metric training will log: the names
        come from graphc.ir.metrics, as the runtime's own (heads, classes, hierarchy tables;
        ``diagnostics``: the gradient-conflict diagnostics' names, with [train] diagnostics)."""
        links = measured_links(hierarchy_paths(self.spec.data.hierarchy_links()), [task for task, _ in heads])
        data, train = self.spec.data, self.spec.train
        weights = weight_metrics([task for task, _ in heads], train.loss_weighting)
        available = watchable_metrics(
            metric_names(heads, links), validation=data.val_fraction > 0, train_only=[*weights, *diagnostics]
        )
        monitors = [("select", train.select)] + (
            [("early_stopping", train.early_stopping)] if train.early_stopping else []
        )
        for name, monitor in monitors:
            problem = monitor_problem(monitor.metric, available, data.val_fraction)
            if problem is not None:
                raise SpecError(
                    Problem(
                        problem[0],
                        file=self.file,
                        line=self.where.line("train", name),
                        field=f"train.{name}.metric",
                        hint=problem[1],
                    )
                )

    def check_weighting(self, nodes: tuple[Node, ...]) -> None:
        """GradNorm needs a node several heads read directly, with parameters to measure gradients on."""
        weighting = self.spec.train.loss_weighting
        if weighting is not None and weighting.name == "gradnorm" and gradnorm_node(nodes) is None:
            raise SpecError(
                Problem(
                    "is gradnorm, which balances the heads' gradient norms on the last node several heads read "
                    "directly, but no node with parameters is read by more than one head in this model.",
                    file=self.file,
                    line=self.where.line("train", "loss_weighting"),
                    field="train.loss_weighting",
                    hint='share a trunk node between the heads, or choose loss_weighting = { name = "uncertainty" } '
                    'or { name = "dwa" }, which need no shared node.',
                )
            )

    def dag(self) -> tuple[dict[str, list[str]], list[str]]:
        """The nodes that read each node, and the nodes in topological order, ties broken by file
        order (Kahn's algorithm on a heap of file positions: networkx's lexicographical sort,
        without building a networkx graph, which costs seconds on 20,000 nodes)."""
        readers: dict[str, list[str]] = {name: [] for name in self.index}
        waiting: dict[str, int] = {}  # inputs not yet placed
        for node in self.spec.nodes:
            refs = _inputs_of(node)
            waiting[node.name] = len(refs)
            for ref in refs:
                readers[ref].append(node.name)
        ready = [self.index[name] for name, count in waiting.items() if count == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            name = self.spec.nodes[heapq.heappop(ready)].name
            order.append(name)
            for reader in readers[name]:
                waiting[reader] -= 1
                if waiting[reader] == 0:
                    heapq.heappush(ready, self.index[reader])
        if len(order) == len(self.index):
            return readers, order
        # Nodes left over sit on a cycle or after one: networkx names one cycle.
        graph = nx.DiGraph()
        graph.add_nodes_from(self.index)
        graph.add_edges_from((ref, node.name) for node in self.spec.nodes for ref in _inputs_of(node))
        cycle = nx.find_cycle(graph)
        path = [edge[0] for edge in cycle] + [cycle[0][0]]
        self.fail(
            "the graph has a cycle: " + " -> ".join(path) + ".",
            node=cycle[-1][1],
            field="inputs" if isinstance(self.spec.nodes[self.index[cycle[-1][1]]], ConcatNode) else "input",
            hint="a spec is a DAG: data flows from the input to the heads; "
            "break the cycle by changing one of these inputs.",
        )
        raise AssertionError("unreachable")

    def heads_reached(
        self, readers: Mapping[str, list[str]], order: list[str]
    ) -> tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]]:
        """The tasks of the heads each node reaches (``serves``), and of those it reaches without
        passing through another head (``direct``: it feeds their features).

        One pass in reverse topological order, each node's set the union of its readers' (a head's
        direct set is its own task only: what passes through it is reuse): linear in nodes and
        edges times the number of heads, where one ``nx.descendants`` per node was quadratic.
        Sets are bit masks, one bit per head.
        """
        heads = [n for n in self.spec.nodes if isinstance(n, HeadNode)]
        bit = {head.name: 1 << i for i, head in enumerate(heads)}
        serves: dict[str, int] = {}
        direct: dict[str, int] = {}
        for name in reversed(order):
            if name in bit:
                serves[name] = bit[name]
                direct[name] = bit[name]
                for reader in readers[name]:
                    serves[name] |= serves[reader]
            else:
                serves[name] = direct[name] = 0
                for reader in readers[name]:
                    serves[name] |= serves[reader]
                    direct[name] |= direct[reader]

        sets: dict[int, frozenset[str]] = {}  # few distinct masks: make each set once

        def tasks(mask: int) -> frozenset[str]:
            if mask not in sets:
                sets[mask] = frozenset(head.task_name for head in heads if mask & bit[head.name])
            return sets[mask]

        return {n: tasks(m) for n, m in serves.items()}, {n: tasks(m) for n, m in direct.items()}

    def check_reach_heads(self, serves: Mapping[str, frozenset[str]]) -> None:
        problems = []
        for node in self.spec.nodes:
            if isinstance(node, HeadNode):
                continue
            if not serves[node.name]:
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
                "bias": node.bias,
                "pool": node.pool,
                "pool_size": node.pool_size,
                "pool_stride": node.pool_stride or node.pool_size,
                "norm": node.norm,
                "groups": node.groups if node.norm == "group" else 1 if node.norm == "layer" else None,
                "norm_position": node.norm_position,
                "dropout": node.dropout,
                "dropout_kind": node.dropout_kind,
                **_training(node),
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
                **_training(node),
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
                **_training(node),
            }
            return attrs, (classes,), in_features * classes + classes
        raise AssertionError(f"unknown node class {type(node).__name__}")

    def check_frozen(self, order: list[str], resolved: Mapping[str, tuple]) -> None:
        """trainable = false must freeze something, and leave something to train in the first epoch
        (an optimiser with no parameters cannot be built)."""
        frozen = [name for name in order if resolved[name][0].get("trainable") is False]
        for name in frozen:
            if resolved[name][2] == 0:
                self.fail(
                    "has trainable = false, but the node has no parameters to freeze.",
                    node=name,
                    field="trainable",
                    hint="remove trainable = false from this node.",
                )
        weighted = [name for name in order if resolved[name][2] > 0]
        if frozen and all(name in frozen for name in weighted):
            self.fail(
                f"every node with parameters is frozen (trainable = false: {', '.join(frozen)}), so the first "
                "epoch would have nothing to train.",
                node=frozen[0],
                field="trainable",
                hint="leave at least one node trainable, e.g. the heads of the new task.",
            )

    def check_init_map(self, nodes: tuple[Node, ...]) -> None:
        """init_map's new side names nodes of this spec with parameters: checked here, without the
        source run, so `graphc check` refuses what `graphc train` would (the source side needs the
        source's checkpoint: graphc.runtime.train.transfer)."""
        weighted = [node.name for node in nodes if node.num_params > 0]
        kinds = {node.name: node.kind for node in nodes}
        line = self.where.line("train", "init_map")
        for new in self.spec.train.init_map or {}:
            if new not in kinds:
                message = f"names node '{new}', but spec '{self.spec.name}' has no node of that name."
                hint = did_you_mean(new, weighted) or f"its nodes with parameters: {', '.join(weighted)}."
            elif new not in weighted:
                article = "an" if kinds[new][0] in "aeiou" else "a"
                message = f"names node '{new}', {article} {kinds[new]} node, which has no parameters to load."
                hint = f"map only nodes with parameters ({', '.join(weighted)})."
            else:
                continue
            raise SpecError(Problem(message, file=self.file, line=line, field="train.init_map", hint=hint))

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
                f"declares {head.classes} classes for task '{task}', but the {data.dataset} data set has {known}.",
                node=head.name,
                field="classes",
                hint=f'set classes = {known}, or classes = "auto" to take it from the data set.',
            )
        return head.classes

    # ------------------------------------------------------------------ assembly

    def build(self) -> Graph:
        self.check_names()
        self.check_references()
        self.check_inputs_and_heads()
        self.check_recipe()
        self.check_hierarchy()
        readers, order = self.dag()
        serves, direct = self.heads_reached(readers, order)
        self.check_reach_heads(serves)
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
        self.check_size(order, by_name, resolved, shapes)
        self.check_frozen(order, resolved)
        nodes = tuple(
            Node(
                name=name,
                kind=by_name[name].kind,
                inputs=_inputs_of(by_name[name]),
                attrs=MappingProxyType(resolved[name][0]),
                shape=resolved[name][1],
                num_params=resolved[name][2],
                heads=serves[name],
                direct_heads=direct[name],
                line=self.where.line("nodes", self.spec.origin(self.index[name]), "name"),
            )
            for name in order
        )
        self.check_weighting(nodes)
        self.check_init_map(nodes)
        graph = Graph(
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
        # After the graph: the diagnostics' names follow its gradient paths (graphc.ir.gradients).
        diagnostics = (
            diagnostic_names(shared_nodes(graph), reused_branches(graph)) if self.spec.train.diagnostics else []
        )
        self.check_monitors(
            [(n.task_name, resolved[n.name][0]["classes"]) for n in self.spec.nodes if isinstance(n, HeadNode)],
            diagnostics,
        )
        return graph


def build_graph(spec: Spec, classes: Mapping[str, int] | None = None) -> Graph:
    """Check a spec's meaning and return its IR.

    ``classes`` maps label fields to class counts as read from the actual data
    set; without it the counts the ``[data]`` table implies are used. Raises
    :class:`~graphc.errors.SpecError` on any problem.
    """
    return _Builder(spec, classes).build()


def check_model_size(spec: Spec) -> None:
    """Raise :class:`ModelTooLarge` for a spec too large to build, before its data set is loaded
    (at the input node's shape, so an absurd shape would allocate there first). Only the size is
    checked here: other problems, such as class counts that only the data knows (which then also
    keep the size from being worked out), are left to the build that follows the loading."""
    try:
        _Builder(spec, None).build()
    except ModelTooLarge:
        raise
    except SpecError:
        pass
