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
import tomllib
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import networkx as nx

from graphc.errors import Problem, SpecError, did_you_mean
from graphc.ir.gradients import reused_branches, shared_nodes
from graphc.ir.graph import Graph, Node
from graphc.ir.kinds import Context, Seen, layer_outputs, rules
from graphc.ir.metrics import (
    WEIGHT_PREFIX,
    diagnostic_names,
    measured_links,
    metric_names,
    monitor_problem,
    watchable_metrics,
    weight_metrics,
)
from graphc.ir.shapes import ShapeProblem
from graphc.ir.weighting import gradnorm_node
from graphc.lang.hierarchy import hierarchy_paths, listed_twice
from graphc.lang.load import source_map
from graphc.lang.spec import PARTIAL_LABELS, HeadNode, InputNode, Spec

# The largest model graphc builds: a guard against nonsense such as channels = [1000000000],
# a 10^20-pixel input or padding = 100000, caught before anything allocates. Generous on
# purpose: the reference specs have 18.5 M parameters; a chain of ResNet-50's bottleneck blocks
# at 224x224 (tests/lang/test_untrusted_specs.py) has 25.2 M and 0.04 GiB of layer outputs. Environment variables of the same name with a
# GRAPHC_ prefix (GRAPHC_MAX_PARAMS=5e9) raise them for a model that really is that large.
MAX_PARAMS = 2_000_000_000  # all parameters, frozen or not (8 GB as fp32, before optimiser state)
MAX_ACTIVATION_BYTES = 16 * 2**30  # fp32 layer outputs of one image (kinds.layer_outputs), and the test pass's
# memory at batch 1 (the largest node's outputs beside every head's per-class counts, check_memory)
# What one batch, and a synthetic data set being generated, may take: the guard behind the bounds of
# batch_size and synthetic train_size / test_size (graphc.lang.spec's MAX_BATCH_SIZE and MAX_IMAGES
# bound the numbers themselves). GRAPHC_MAX_BATCH_BYTES and GRAPHC_MAX_DATA_BYTES raise them.
MAX_BATCH_BYTES = 2**40  # fp32 layer outputs of one evaluation batch (EVAL_BATCH_FACTOR x batch_size images)
MAX_DATA_BYTES = 16 * 2**30  # a synthetic data set while it is generated (check_memory's estimate)
EVAL_BATCH_FACTOR = 4  # evaluation batches are this many training batches (graphc.runtime.evaluate's constant)
COUNT_BYTES = 16  # per class of a head: the test pass's images and correct answers, one int64 each


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
    return node.reads


class _Builder:
    def __init__(self, spec: Spec, classes: Mapping[str, int] | None, types: Mapping[str, str] | None = None):
        self.spec = spec
        self.file = spec.source
        self.where = source_map(spec.text)
        self.index = {node.name: i for i, node in enumerate(spec.nodes)}
        self.data_classes: Mapping[str, int | None] = (
            dict(classes) if classes is not None else spec.data.known_classes()
        )
        self.data_unread = classes is None  # only what the spec says of the data is known
        self.data_types: Mapping[str, str] = dict(types or {})
        self.seen: dict[str, Seen] = {}  # the nodes resolved so far
        self.raw_nodes: list | None = None  # the [[nodes]] tables as written (template_of reads them)
        self.context = Context(self.seen, self.head_classes, self.template_of)

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
        heads = {n.task_name: n.name for n in self.spec.nodes if isinstance(n, HeadNode)}
        problems = []
        for node in self.spec.nodes:
            field = node.reference_field()
            for ref in _inputs_of(node):
                if ref not in self.index:
                    # a task's name where its head's is meant: point to the head, not to a node spelt alike
                    hint = (
                        f"'{ref}' is the task of head '{heads[ref]}'; a node reads a task's predictions through "
                        f"its head (cross-task reuse): write '{heads[ref]}'."
                        if ref in heads and heads[ref] != node.name
                        else did_you_mean(ref, [n for n in names if n != node.name])
                    )
                    problems.append(
                        self.problem(
                            f"reads '{ref}', but there is no node of that name.", node=node.name, field=field, hint=hint
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
        task_of = {n.name: n.task_name for n in self.spec.nodes if isinstance(n, HeadNode)}
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
                        # a head's name where its task's is meant: name the task
                        hint=f"'{parts[1]}' is a head; metrics are named by the task it predicts: "
                        f"'{parts[0]}/{task_of[parts[1]]}/{parts[2]}'."
                        if parts[1] in task_of
                        else did_you_mean(parts[1], tasks)
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
    ) -> tuple[int, int]:
        """Refuse a model too large to build (MAX_PARAMS, MAX_ACTIVATION_BYTES) before anything
        allocates, naming its size at batch 1 and the nodes that contribute most. Returns the bytes
        of its layer outputs at batch 1, all of them and the largest node's."""
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
            return memory, max(outputs.values(), default=0)
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

    def check_memory(self, memory: tuple[int, int], heads: Mapping[str, int]) -> None:
        """Refuse what would not fit where ``check_size`` looks at one image, against the same limits:
        the test pass at batch 1 against MAX_ACTIVATION_BYTES - it runs without autograd, so it holds
        about one node's outputs at a time (``memory[1]``, the largest) beside COUNT_BYTES per class of
        each head in ``heads`` (``{node: classes}``: the per-class counts it keeps, never a classes x
        classes matrix), where training holds every node's (``memory[0]``); one evaluation batch
        (EVAL_BATCH_FACTOR x batch_size images, counted at a training batch's outputs, an upper bound)
        against MAX_BATCH_BYTES; and a synthetic data set being generated against MAX_DATA_BYTES. So a
        batch size or data-set size `graphc check` accepts is one `graphc train` can allocate, and each
        message says which values would fit."""
        memory, largest = memory
        max_bytes = _limit("MAX_ACTIVATION_BYTES", MAX_ACTIVATION_BYTES)
        counts = {name: COUNT_BYTES * classes for name, classes in heads.items()}
        test_pass = largest + sum(counts.values())
        if test_pass > max_bytes:
            widest = max(counts, key=counts.get)
            raise ModelTooLarge(
                self.problem(
                    f"the test pass would need {_size(test_pass)} at batch 1 (the largest node's outputs for one image, "
                    f"{_size(largest)}, and {COUNT_BYTES} bytes of counts per class of each head), more "
                    f"than the limit {_size(max_bytes)}; head '{widest}' has {heads[widest]:,} classes.",
                    node=widest,
                    field="classes",
                    hint="fewer classes, or raise the limit with the environment variable GRAPHC_MAX_ACTIVATION_BYTES.",
                )
            )
        train, per_batch = self.spec.train, EVAL_BATCH_FACTOR * max(memory, 1)
        max_batch = _limit("MAX_BATCH_BYTES", MAX_BATCH_BYTES)
        if train.batch_size * per_batch > max_batch:
            raise ModelTooLarge(
                Problem(
                    f"batch_size = {train.batch_size:,}: an evaluation batch ({EVAL_BATCH_FACTOR} x batch_size images) "
                    f"would take {_size(train.batch_size * per_batch)} of layer outputs ({_size(memory)} per image), "
                    f"more than the limit {_size(max_batch)}; batch_size can be 1 to {max(1, max_batch // per_batch):,} "
                    "for this model.",
                    file=self.file,
                    line=self.where.line("train", "batch_size"),
                    field="train.batch_size",
                    hint="give a smaller batch_size (or --batch-size); if the machine really has that much memory, "
                    "raise the limit with the environment variable GRAPHC_MAX_BATCH_BYTES.",
                )
            )
        data = self.spec.data
        if data.dataset != "synthetic":
            return
        c, h, w = next(n.shape for n in self.spec.nodes if isinstance(n, InputNode))
        options, values = data.synthetic, c * h * w
        # graphc.runtime.data.synthetic: uint8 images of both splits, while the larger split is drawn
        # in float32 (the gathered pattern and the noise), and about five float32 copies of the
        # classes' patterns, each MAX_SHIFT (3) pixels larger on every side.
        patterns = 20 * (options.classes + options.coarse_classes) * c * (h + 6) * (w + 6)
        need = values * (options.train_size + options.test_size + 8 * max(options.train_size, options.test_size))
        max_data = _limit("MAX_DATA_BYTES", MAX_DATA_BYTES)
        if need + patterns > max_data:
            field = "train_size" if options.train_size >= options.test_size else "test_size"
            most = max(0, max_data - patterns) // (10 * values)  # images per split that fit, both splits that size
            raise ModelTooLarge(
                Problem(
                    f"synthetic.{field} = {getattr(options, field):,}: generating the synthetic data set "
                    f"({options.train_size:,} + {options.test_size:,} images of {c}x{h}x{w}, {options.classes:,} "
                    f"classes) would take about {_size(need + patterns)}, more than the limit {_size(max_data)}; "
                    f"train_size and test_size can be 1 to {most:,} each at this input shape.",
                    file=self.file,
                    line=self.where.line("data", "synthetic"),
                    field=f"data.synthetic.{field}",
                    hint="give fewer images (or a smaller input shape); if the machine really has that much memory, "
                    "raise the limit with the environment variable GRAPHC_MAX_DATA_BYTES.",
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

    def check_monitors(self, heads: list[tuple[str, int, str]], diagnostics: Sequence[str] = ()) -> None:
        """train.select and train.early_stopping must watch a metric training will log: the names
        come from graphc.ir.metrics, as the runtime's own (heads' tasks, output units and types, hierarchy tables;
        ``diagnostics``: the gradient-conflict diagnostics' names, with [train] diagnostics)."""
        links = measured_links(hierarchy_paths(self.spec.data.hierarchy_links()), [head[0] for head in heads])
        data, train = self.spec.data, self.spec.train
        weights = weight_metrics([head[0] for head in heads], train.loss_weighting)
        available = watchable_metrics(
            metric_names(heads, links, partial_labels=data.dataset in PARTIAL_LABELS),
            validation=data.val_fraction > 0,
            train_only=[*weights, *diagnostics],
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
            field=self.spec.nodes[self.index[cycle[-1][1]]].reference_field(),
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
        """Resolved attributes, output shape and parameter count of one node, by its kind's rules
        (graphc.ir.kinds)."""
        kind = rules(node.kind)
        inputs = [(name, shapes[name]) for name in node.reads]
        attrs = kind.resolve(node, inputs, self.context)
        shape = kind.shape(attrs, inputs, self.context)
        self.seen[node.name] = Seen(node.kind, node.reads, attrs, shape)
        return attrs, shape, kind.params(attrs)

    def template_of(self, name: str, field: str) -> str | None:
        """The template that gave node ``name`` its ``field`` (None: the node's own table, or the default)."""
        if self.raw_nodes is None:
            try:
                nodes = tomllib.loads(self.spec.text).get("nodes") if self.spec.text else None
            except tomllib.TOMLDecodeError:
                nodes = None
            self.raw_nodes = nodes if isinstance(nodes, list) else []
        origin = self.spec.origin(self.index[name]) if name in self.index else len(self.raw_nodes)
        table = self.raw_nodes[origin] if origin < len(self.raw_nodes) else None
        if not isinstance(table, dict) or field in table or not isinstance(table.get("use"), str):
            return None
        template = self.spec.templates.get(table["use"])
        return table["use"] if isinstance(template, dict) and field in template else None

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
        """The head's output units: a classifier's classes, 1 for binary, a multilabel head's labels,
        a regression head's outputs - checked against what the data set provides where it is known."""
        task = head.task_name
        data = self.spec.data
        partial = data.dataset in PARTIAL_LABELS
        if head.type != "classification" and not partial:
            self.fail(
                f"is a {head.type} head, but the {data.dataset} data set has class labels only.",
                node=head.name,
                field="type",
                hint='remove type (a classification head), or train on a label table ([data] dataset = "table") '
                'or CelebA (dataset = "celeba"), whose columns can hold yes/no, several labels or numbers.',
            )
        # A label table's columns and CelebA's attributes are known only once the files are read:
        # without them (graphc check without --data) any column is accepted here and checked there.
        if task not in self.data_classes and not (partial and self.data_unread):
            provided = ", ".join(f"'{t}'" for t in self.data_classes)
            self.fail(
                f"predicts task '{task}', but the {data.dataset} data set has no such label field "
                f"(it provides {provided}).",
                node=head.name,
                field="task",
                hint=did_you_mean(task, self.data_classes) or "set task to one of the data set's label fields.",
            )
        known = self.data_classes.get(task)
        field_type = self.data_types.get(task, "classification")  # checked where the data set says
        if head.type in ("multilabel", "regression") and field_type != head.type and task in self.data_types:
            self.fail(
                f"is a {head.type} head, but the data set's '{task}' labels are {field_type} labels.",
                node=head.name,
                field="type",
                hint=f'set type = "{field_type}", or name a {head.type} column in task.',
            )
        if head.type == "binary":  # yes/no labels, or a classification field of two classes (0 no, 1 yes)
            if task in self.data_types and field_type != "binary" and known != 2:
                self.fail(
                    f"is a binary head, but the data set's '{task}' labels have {known} classes.",
                    node=head.name,
                    field="type",
                    hint="a binary head needs yes/no labels: name such a column in task, or remove type "
                    "(a classification head).",
                )
            return 1
        if head.type == "regression":
            units = head.output_units
            if known is not None and known != units:
                self.fail(
                    f"predicts {units} number{'s' if units != 1 else ''}, but the data set's '{task}' cells "
                    f"hold {known}.",
                    node=head.name,
                    field="outputs",
                    hint=f"set outputs = {known}.",
                )
            return units
        if head.type == "multilabel":
            if head.labels is not None:
                return len(head.labels)
            if known is None:
                self.fail(
                    f"is a multilabel head without 'labels', and the labels of '{task}' are known only from "
                    f"the {data.dataset} data set's files.",
                    node=head.name,
                    field="labels",
                    hint="list them, labels = [...] (their order is the outputs' order), or check with "
                    "`graphc check --data`, which reads them.",
                )
            return known
        if isinstance(head.classes, list):  # the names fix the order; the data set's must be among them
            if known is not None and known != len(head.classes):
                self.fail(
                    f"lists {len(head.classes)} classes for task '{task}', but the {data.dataset} data set has "
                    f"{known}.",
                    node=head.name,
                    field="classes",
                    hint="list every class of the column once.",
                )
            return len(head.classes)
        if head.classes == "auto":
            if known is None:
                source = "its files" if partial else "its folders"
                self.fail(
                    f"classes = 'auto', but the number of '{task}' classes of the {data.dataset} "
                    f"data set is known only from {source}.",
                    node=head.name,
                    field="classes",
                    hint="list the classes, classes = [...] (their order is the outputs' order), or check with "
                    "`graphc check --data`, which reads them."
                    if partial
                    else "write the class count, or list every class in [data.hierarchy].",
                )
            return self.two_classes(head, known)
        if known is not None and head.classes != known:
            self.fail(
                f"declares {head.classes} classes for task '{task}', but the {data.dataset} data set has {known}.",
                node=head.name,
                field="classes",
                hint=f'set classes = {known}, or classes = "auto" to take it from the data set.',
            )
        return self.two_classes(head, head.classes)

    def two_classes(self, head: HeadNode, classes: int) -> int:
        """``classes``, when a head can learn something from it: with one class (or none) its loss is
        0 and its accuracy 100% whatever the model does, so such a head is refused, with the fix
        that fits where the count came from (the same in `graphc check` and `graphc train`)."""
        if classes >= 2:
            return classes
        task, data = head.task_name, self.spec.data
        hint = "remove the head, or give the task at least two classes"
        if head.classes != "auto":
            where = f"classes = {head.classes}"
            hint = 'set classes = "auto" (or the data set\'s count, at least 2), or remove the head'
        elif data.dataset == "synthetic":
            option = "classes" if task == "fine" else "coarse_classes"
            where = f"[data] synthetic.{option} = {classes}"
            hint = f"set synthetic.{option} to 2 or more" + (
                " (it must divide classes)" if option == "coarse_classes" else ""
            )
            hint += ", or remove the head"
        elif task in data.hierarchy:
            where = f"[data.hierarchy] table '{task}' has {classes} group"
            hint = f"give the '{task}' table at least two groups, or remove the head"
        else:
            where = f"the {data.dataset} data set has {classes} '{task}' class{'' if classes == 1 else 'es'}"
            hint = "add a class folder (at least two), or remove the head"
        self.fail(
            f"predicts task '{task}', which has {classes} class{'' if classes == 1 else 'es'} ({where}): "
            "a classifier needs at least two (with one, its loss is 0 and its accuracy 100% whatever it learns).",
            node=head.name,
            field="classes",
            hint=hint + ".",
        )

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
        memory = self.check_size(order, by_name, resolved, shapes)
        self.check_memory(memory, {name: r[0]["classes"] for name, r in resolved.items() if "classes" in r[0]})
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
            [
                (n.task_name, resolved[n.name][0]["classes"], resolved[n.name][0].get("type", "classification"))
                for n in self.spec.nodes
                if isinstance(n, HeadNode)
            ],
            diagnostics,
        )
        return graph


def build_graph(spec: Spec, classes: Mapping[str, int] | None = None, types: Mapping[str, str] | None = None) -> Graph:
    """Check a spec's meaning and return its IR.

    ``classes`` maps label fields to class counts (a multilabel field: its labels; a regression
    field: its numbers per image) as read from the actual data set; without it the counts the
    ``[data]`` table implies are used. ``types`` maps label fields to their head type where the data
    set says (a label table's, CelebA's; absent: classification). Raises
    :class:`~graphc.errors.SpecError` on any problem.
    """
    return _Builder(spec, classes, types).build()


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
