"""The standalone pool and dropout node kinds through every backend: shapes and parameter counts
against real forward passes, a pool node against a conv_block's own pooling, dropout in training
and evaluation, ONNX parity, their diagram boxes, and the spec errors they can raise."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import fx

import graphc
from graphc.backends.diagram.render import render
from graphc.backends.diagram.style import KIND_STYLES
from graphc.backends.onnx import ATOL, DeployedModel, to_onnx
from graphc.ir.kinds import layer_outputs

POOL_DROPOUT_SPEC = """\
name = "pool_dropout"

[[nodes]]
name = "image"
kind = "input"
shape = [3, 16, 16]

[[nodes]]
name = "stem"
kind = "conv_block"
input = "image"
channels = [8]
norm = "batch"

[[nodes]]
name = "down"
kind = "pool"
input = "stem"

[[nodes]]
name = "drop_maps"
kind = "dropout"
input = "down"
dropout = 0.3
dropout_kind = "channel"

[[nodes]]
name = "fc"
kind = "fc_block"
input = "drop_maps"
units = [16]

[[nodes]]
name = "drop_vec"
kind = "dropout"
input = "fc"
dropout = 0.5

[[nodes]]
name = "fine_head"
kind = "head"
input = "drop_vec"
task = "fine"

[[nodes]]
name = "overlap"
kind = "pool"
input = "drop_maps"
pool = "avg"
pool_size = 3
pool_stride = 1

[[nodes]]
name = "gap"
kind = "pool"
input = "overlap"
pool = "global_max"

[[nodes]]
name = "coarse_head"
kind = "head"
input = "gap"
task = "coarse"

[data]
dataset = "synthetic"
synthetic = { classes = 4, coarse_classes = 2 }
"""


def build(write_spec, text: str = POOL_DROPOUT_SPEC) -> graphc.Graph:
    return graphc.build_graph(graphc.load_spec(write_spec(text)))


def node_outputs(module: fx.GraphModule, image: torch.Tensor) -> dict[str, torch.Tensor]:
    outputs: dict[str, torch.Tensor] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            value = super().run_node(n)
            outputs[n.target if n.op == "call_module" else n.name] = value
            return value

    Recorder(module).run(image)
    return outputs


def test_shapes_and_parameter_counts_match_a_real_forward(write_spec):
    graph = build(write_spec)
    assert [n.kind for n in graph if n.kind in ("pool", "dropout")] == ["pool", "dropout", "dropout", "pool", "pool"]
    module = graphc.compile_graph(graph, seed=0).eval()
    outputs = node_outputs(module, torch.rand(2, 3, 16, 16))
    for node in graph:
        assert tuple(outputs[node.name].shape) == (2, *node.shape), node.name
        real = sum(p.numel() for p in getattr(module, node.name).parameters()) if node.kind != "input" else 0
        assert real == node.num_params, node.name
    assert {n.name: n.shape for n in graph if n.kind in ("pool", "dropout")} == {
        "down": (8, 8, 8),
        "drop_maps": (8, 8, 8),
        "drop_vec": (16,),
        "overlap": (8, 6, 6),
        "gap": (8, 1, 1),
    }
    assert all(n.num_params == 0 for n in graph if n.kind in ("pool", "dropout"))
    # their memory estimate: the one tensor each makes
    for node in graph:
        if node.kind in ("pool", "dropout"):
            assert layer_outputs(node.kind, node.attrs, graph[node.inputs[0]].shape, node.shape) == math.prod(
                node.shape
            )


def _trunk(pool_on_block: str) -> str:
    return f"""\
name = "trunk"

[[nodes]]
name = "image"
kind = "input"
shape = [3, 12, 12]

[[nodes]]
name = "trunk"
kind = "conv_block"
input = "image"
channels = [4]
{pool_on_block}
{{pool_node}}
[[nodes]]
name = "fine_head"
kind = "head"
input = "{{last}}"
task = "fine"

[[nodes]]
name = "coarse_head"
kind = "head"
input = "{{last}}"
task = "coarse"

[data]
dataset = "synthetic"
synthetic = {{{{ classes = 4, coarse_classes = 2 }}}}
"""


@pytest.mark.parametrize(
    "settings",
    ['pool = "max"', 'pool = "avg"\npool_size = 3', 'pool = "max"\npool_size = 3\npool_stride = 2']
    + ['pool = "global_avg"', 'pool = "global_max"'],
)
def test_a_pool_node_pools_as_a_conv_blocks_pool_does(write_spec, settings):
    on_block = build(write_spec, _trunk(settings).format(pool_node="", last="trunk"))
    node = f'[[nodes]]\nname = "pooled"\nkind = "pool"\ninput = "trunk"\n{settings}\n'
    separate = build(write_spec, _trunk("").format(pool_node=node, last="pooled"))
    assert separate["pooled"].shape == on_block["trunk"].shape
    assert separate.total_params == on_block.total_params
    a, b = (graphc.compile_graph(g, seed=0).eval() for g in (on_block, separate))
    b.load_state_dict(a.state_dict())  # the same keys: a pool node has no parameters or buffers
    image = torch.rand(3, 3, 12, 12)
    for task, logits in a(image).items():
        assert torch.equal(logits, b(image)[task]), task


def test_dropout_nodes_drop_in_training_only(write_spec):
    graph = build(write_spec)
    module = graphc.compile_graph(graph, seed=0)
    drop_maps, drop_vec = module.drop_maps, module.drop_vec
    maps, vectors = torch.ones(64, 8, 8, 8), torch.ones(64, 16)
    module.eval()
    assert torch.equal(drop_maps(maps), maps) and torch.equal(drop_vec(vectors), vectors)
    module.train()
    torch.manual_seed(0)
    dropped = drop_maps(maps)
    per_map = dropped.flatten(2)
    # channel dropout: each feature map is all zero or all 1 / (1 - 0.3)
    assert torch.all((per_map == 0).all(2) | torch.isclose(per_map, torch.tensor(1 / 0.7)).all(2))
    assert 0.2 < (per_map == 0).all(2).float().mean() < 0.4
    values = drop_vec(vectors)
    assert set(values.unique().tolist()) == {0.0, 2.0} and 0.4 < (values == 0).float().mean() < 0.6


def test_pool_and_dropout_export_to_onnx_with_parity(write_spec):
    graph = build(write_spec)
    model = DeployedModel(graphc.compile_graph(graph, seed=0).eval(), graph.tasks)
    proto = to_onnx(model, graph)
    ops = {node.op_type for node in proto.graph.node}
    assert {"MaxPool", "AveragePool"} <= ops and "Dropout" not in ops  # eval mode: no dropout
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        image = torch.rand(batch, 3, 16, 16)
        expected = model(image)
        got = session.run([o.name for o in session.get_outputs()], {"image": image.numpy()})
        assert [o.name for o in session.get_outputs()] == list(graph.tasks)
        for want, have in zip(expected, got):
            assert np.abs(want.detach().numpy() - have).max() < ATOL


def test_pool_and_dropout_are_drawn_in_their_own_colours(write_spec):
    graph = build(write_spec)
    svg = render(graph, "svg").decode()
    for kind in ("pool", "dropout"):
        assert KIND_STYLES[kind].fill in svg and KIND_STYLES[kind].stroke in svg, kind
    assert "#f2f2f2" not in svg  # the grey of a kind no table knew
    for text in ("max-pool 2", "avg-pool 3/1", "global max-pool", "drop 0.3 (channel)", "drop 0.5"):
        assert text in svg, text
    mermaid = render(graph, "mermaid").decode()
    assert f"classDef k_pool fill:{KIND_STYLES['pool'].fill}" in mermaid
    assert f"classDef k_dropout fill:{KIND_STYLES['dropout'].fill}" in mermaid
    dot = render(graph, "dot").decode()
    assert f'fillcolor="{KIND_STYLES["dropout"].fill}"' in dot


SPEC_ERRORS = [
    # (replace, by, node, field, words of the message)
    ('pool = "global_max"', 'pool = "none"', "gap", "pool", "'max', 'avg', 'global_avg' or 'global_max'"),
    ('pool = "global_max"', 'pool = "maximum"', "gap", "pool", "found 'maximum'"),
    ("pool_size = 3", "pool_size = 0", "overlap", "pool_size", "greater than 0"),
    ("pool_size = 3", "pool_size = 20", "overlap", "pool_size", "collapses it to 0x0"),
    ("dropout = 0.5", "dropout = 1.0", "drop_vec", "dropout", "less than 1"),
    ("dropout = 0.5", "dropout = 0", "drop_vec", "dropout", "greater than 0"),
    ("dropout = 0.5", "dropout = -0.1", "drop_vec", "dropout", "greater than 0"),
    ("dropout = 0.5", "dropout_kind = 'element'", "drop_vec", "dropout", "missing required field 'dropout'"),
    ("dropout = 0.5", 'dropout = 0.5\ndropout_kind = "channel"', "drop_vec", "dropout_kind", "gives a vector [16]"),
    ('dropout_kind = "channel"', 'dropout_kind = "spatial"', "drop_maps", "dropout_kind", "'element' or 'channel'"),
    (
        'input = "drop_maps"\npool = "avg"',
        'input = "fc"\npool = "avg"',
        "overlap",
        "input",
        "pools a feature map [C, H, W], but 'fc' gives a vector",
    ),
    ("dropout = 0.3\n", "rate = 0.3\n", "drop_maps", "rate", "unknown field 'rate'"),
]


@pytest.mark.parametrize("replace, by, node, field, words", SPEC_ERRORS)
def test_spec_errors_name_the_node_and_field(write_spec, replace, by, node, field, words):
    assert replace in POOL_DROPOUT_SPEC
    path = write_spec(POOL_DROPOUT_SPEC.replace(replace, by, 1))
    with pytest.raises(graphc.SpecError) as info:
        graphc.build_graph(graphc.load_spec(path))
    problem = next(p for p in info.value.problems if p.field == field)
    assert problem.node == node and problem.file == path and problem.line is not None
    assert words in str(problem), str(problem)
    assert 'pool = "none"' not in (problem.hint or "")  # not a value a pool node has


def test_other_frameworks_words_point_to_the_new_kinds(write_spec):
    text = POOL_DROPOUT_SPEC.replace('name = "down"\nkind = "pool"', 'name = "down"\nkind = "MaxPooling2D"')
    with pytest.raises(graphc.SpecError) as info:
        build(write_spec, text)
    assert 'kind = "pool"' in info.value.hint
    text = POOL_DROPOUT_SPEC.replace("dropout = 0.3\n", "rate = 0.3\n")
    with pytest.raises(graphc.SpecError) as info:
        build(write_spec, text)
    rate = next(p for p in info.value.problems if p.field == "rate")
    assert "dropout = 0.25" in rate.hint and "did you mean" not in rate.hint
