"""The spec language for modern topologies: residual sums, global pooling, norms and their
positions, blocks of no convolutions, repeat, the "what to write instead" hints and
--collapse, each checked against an independent reference (real forward passes, numel,
a hand-written PyTorch module, ONNX Runtime)."""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import graphc
import graphc.runtime.export as run_export
from graphc.backends.diagram.collapse import collapse_chains
from graphc.cli import app
from graphc.lang.hints import HINTS, hint_for
from graphc.lang.spec import NODE_CLASSES
from tests.backends.test_pytorch_compile import node_outputs
from tests.conftest import REPO, clean_exit

runner = CliRunner()
EXAMPLES = REPO / "specs" / "examples"
NEW_EXAMPLES = ["cifar10_resnet", "resnet_small"]

HEADER = """\
name = "lang"

[[nodes]]
name = "image"
kind = "input"
shape = [3, 16, 16]
"""
HEADS = """
[[nodes]]
name = "fine_head"
kind = "head"
input = "{last}"
task = "fine"

[[nodes]]
name = "coarse_head"
kind = "head"
input = "{last}"
task = "coarse"

[data]
dataset = "synthetic"
synthetic = {{ classes = 4, coarse_classes = 2 }}
"""


def spec_text(body: str, last: str) -> str:
    return HEADER + body + HEADS.format(last=last)


def block(name: str, input: str, **fields) -> str:
    lines = [f'[[nodes]]\nname = "{name}"\nkind = "conv_block"\ninput = "{input}"']
    for key, value in fields.items():
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, str) and not value.startswith("["):  # lists are written as TOML already
            value = f'"{value}"'
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n\n"


def build(write_spec, text: str) -> graphc.Graph:
    return graphc.build_graph(graphc.load_spec(write_spec(text)))


def spec_error(write_spec, text: str) -> graphc.SpecError:
    with pytest.raises(graphc.SpecError) as info:
        build(write_spec, text)
    return info.value


def check_against_forward(module, graph) -> dict[str, torch.Tensor]:
    """Every node's inferred shape against a real forward pass, its parameter count against numel."""
    outputs = node_outputs(module.eval(), torch.rand(2, *graph.input.shape))
    for node in graph:
        assert tuple(outputs[node.name].shape) == (2, *node.shape), node.name
        submodule = getattr(module, node.name, None)
        real = sum(p.numel() for p in submodule.parameters()) if submodule is not None else 0
        assert real == node.num_params, node.name
    assert sum(p.numel() for p in module.parameters()) == graph.total_params
    return outputs


# --------------------------------------------------------------------------- each construct


CONSTRUCTS = {
    # name: (conv_block fields, modules expected in order)
    "sum_after_pool_batch": ({"channels": "[8, 8]", "norm": "batch"}, ["conv1", "act1", "conv2", "act2", "norm"]),
    "post_batch_no_bias": (
        {"channels": "[8, 8]", "norm": "batch", "norm_position": "post", "bias": False},
        ["conv1", "norm1", "act1", "conv2", "norm2", "act2"],
    ),
    "pre_group": (
        {"channels": "[8, 8]", "norm": "group", "groups": 4, "norm_position": "pre"},
        ["norm1", "act1", "conv1", "norm2", "act2", "conv2"],
    ),
    "pre_layer": ({"channels": "[8]", "norm": "layer", "norm_position": "pre"}, ["norm1", "act1", "conv1"]),
    "before_pool_group": (
        {"channels": "[8]", "norm": "group", "groups": 2, "norm_position": "before_pool", "pool": "max"},
        ["conv1", "act1", "norm", "pool"],
    ),
    "global_avg": ({"channels": "[8]", "pool": "global_avg"}, ["conv1", "act1", "pool"]),
    "global_max_layer_channel_dropout": (
        {"channels": "[8]", "pool": "global_max", "norm": "layer", "dropout": 0.2, "dropout_kind": "channel"},
        ["conv1", "act1", "pool", "norm", "drop"],
    ),
    "no_convolutions_pre": (
        {"channels": "[]", "norm": "batch", "norm_position": "pre", "pool": "global_avg"},
        ["norm1", "act1", "pool"],
    ),
    "no_convolutions_pool": ({"channels": "[]", "pool": "avg"}, ["pool"]),
}


@pytest.mark.parametrize("name", sorted(CONSTRUCTS))
def test_each_construct_shapes_and_counts_match_a_real_forward(write_spec, name):
    fields, expected = CONSTRUCTS[name]
    # stem -> block (the construct) -> sum of stem and block where the shapes allow
    body = block("stem", "image", channels="[8]")
    body += block("block", "stem", **fields)
    graph = build(write_spec, spec_text(body, "block"))
    module = graphc.compile_graph(graph, seed=0)
    check_against_forward(module, graph)
    assert [name for name, _ in module.block.named_children()] == expected
    if fields.get("dropout_kind") == "channel":
        assert type(module.block.drop) is nn.Dropout2d
    if fields.get("bias") is False:
        assert module.block.conv1.bias is None
    if "global" in str(fields.get("pool")):
        assert graph["block"].shape == (8, 1, 1)
        assert graph["fine_head"].attrs["in_features"] == 8  # a C x 1 x 1 map is read as C features


def test_residual_sum_adds_inputs_element_wise(write_spec):
    body = block("stem", "image", channels="[8]") + block(
        "branch", "stem", channels="[8, 8]", norm="batch", norm_position="pre"
    )
    body += '[[nodes]]\nname = "add"\nkind = "concat"\nmode = "sum"\ninputs = ["stem", "branch", "stem"]\n'
    graph = build(write_spec, spec_text(body, "add"))
    assert graph["add"].shape == (8, 16, 16) and graph["add"].num_params == 0
    module = graphc.compile_graph(graph, seed=0)
    outputs = check_against_forward(module, graph)
    torch.testing.assert_close(outputs["add"], 2 * outputs["stem"] + outputs["branch"], rtol=0, atol=1e-6)
    assert "stem + branch" in module.code


def test_residual_sum_of_different_shapes_names_both_and_suggests_a_projection(write_spec):
    body = block("stem", "image", channels="[8]") + block("down", "stem", channels="[16]", stride=2)
    body += '[[nodes]]\nname = "add"\nkind = "concat"\nmode = "sum"\ninputs = ["stem", "down"]\n'
    error = spec_error(write_spec, spec_text(body, "add"))
    text = str(error)
    assert error.node == "add" and error.field == "inputs" and error.line is not None
    assert "'stem' gives 8x16x16" in text and "'down' gives 16x8x8" in text
    # the larger map is projected: a 1x1 conv_block with the other's channels and the matching stride
    assert "conv_block reading 'stem' with channels = [16], kernel = 1, stride = 2" in error.hint


def test_residual_sum_of_a_vector_and_a_map(write_spec):
    body = block("stem", "image", channels="[8]")
    body += '[[nodes]]\nname = "fc"\nkind = "fc_block"\ninput = "stem"\nunits = [8]\n\n'
    body += '[[nodes]]\nname = "add"\nkind = "concat"\nmode = "sum"\ninputs = ["stem", "fc"]\n'
    error = spec_error(write_spec, spec_text(body, "add"))
    assert "'fc' gives 8" in str(error) and 'mode = "features"' in error.hint


@pytest.mark.parametrize(
    "fields, words",
    [
        (
            {"channels": "[6]", "norm": "group", "groups": 4},
            ["group norm with 4 groups cannot split 6 channels", "divisor of 6"],
        ),
        ({"channels": "[8]", "groups": 4}, ["'groups' sets the groups of norm", "norm is 'none'"]),
        ({"channels": "[]"}, ["channels = [] has no convolutions"]),
        ({"channels": "[]", "norm": "batch", "norm_position": "post"}, ["norm_position = 'post'", "use 'pre'"]),
    ],
)
def test_conv_block_option_errors(write_spec, fields, words):
    error = spec_error(write_spec, spec_text(block("block", "image", **fields), "block"))
    assert error.node == "block" and error.line is not None
    for word in words:
        assert word in str(error)


# --------------------------------------------------------------------------- the residual example


class HandWrittenResNet(nn.Module):
    """specs/examples/cifar10_resnet.toml written by hand: conv-BN-ReLU units, two residual sums,
    global average pooling, two linear heads. Child names follow the spec so the state dict loads."""

    def __init__(self):
        super().__init__()

        def unit(i: int, o: int, pool: bool = False) -> nn.Sequential:
            layers = [
                ("conv1", nn.Conv2d(i, o, 3, padding=1, bias=False)),
                ("norm1", nn.BatchNorm2d(o)),
                ("act1", nn.ReLU()),
            ]
            return nn.Sequential(OrderedDict(layers + ([("pool", nn.MaxPool2d(2))] if pool else [])))

        def residual(c: int) -> nn.Sequential:
            a, b = unit(c, c), unit(c, c)
            return nn.Sequential(
                OrderedDict(conv1=a.conv1, norm1=a.norm1, act1=a.act1, conv2=b.conv1, norm2=b.norm1, act2=b.act1)
            )

        self.prep = unit(3, 32)
        self.layer1 = unit(32, 64, pool=True)
        self.res1 = residual(64)
        self.layer2 = unit(64, 128, pool=True)
        self.layer3 = unit(128, 256, pool=True)
        self.res3 = residual(256)
        self.fine_head = nn.Linear(256, 10)
        self.coarse_head = nn.Linear(256, 2)

    def forward(self, image):  # (B, 3, 32, 32)
        x = self.layer1(self.prep(image))  # (B, 64, 16, 16)
        x = x + self.res1(x)
        x = self.layer3(self.layer2(x))  # (B, 256, 4, 4)
        x = x + self.res3(x)
        features = x.mean(dim=(2, 3))  # global average pooling: (B, 256)
        return {"fine": self.fine_head(features), "coarse": self.coarse_head(features)}


def test_residual_example_equals_a_hand_written_module():
    module, graph = graphc.model_from_spec(EXAMPLES / "cifar10_resnet.toml", seed=0)
    reference = HandWrittenResNet()
    compiled_state = module.state_dict()
    reference.load_state_dict(compiled_state, strict=True)  # the same names and shapes, key for key
    assert sum(p.numel() for p in reference.parameters()) == graph.total_params
    # BatchNorm momentum/eps come from [layers] defaults (PyTorch's): the same in both.
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for train in (False, True):  # eval: running statistics; train: batch statistics
        module.train(train), reference.train(train)
        with torch.no_grad():
            got, expected = module(x), reference(x)
        for task in ("fine", "coarse"):
            torch.testing.assert_close(got[task], expected[task], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", NEW_EXAMPLES)
def test_new_examples_shapes_and_counts_match_a_real_forward(name):
    module, graph = graphc.model_from_spec(EXAMPLES / f"{name}.toml", seed=0)
    check_against_forward(module, graph)


# --------------------------------------------------------------------------- ONNX


ALL_CONSTRUCTS = spec_text(
    block("stem", "image", channels="[8]", norm="batch", norm_position="post", bias=False)
    + block(
        "branch",
        "stem",
        channels="[8, 8]",
        norm="group",
        groups=4,
        norm_position="pre",
        dropout=0.1,
        dropout_kind="channel",
    )
    + '[[nodes]]\nname = "add"\nkind = "concat"\nmode = "sum"\ninputs = ["stem", "branch"]\n\n'
    + block("deep", "add", channels="[8]", norm="layer", repeat=3)
    + block("avg", "deep", channels="[]", norm="batch", norm_position="pre", pool="global_avg")
    + block("top", "add", channels="[4]", pool="global_max")
    + '[[nodes]]\nname = "join"\nkind = "concat"\ninputs = ["avg", "top"]\n',
    "join",
)


@pytest.mark.parametrize("name", [*NEW_EXAMPLES, "all_constructs"])
def test_onnx_export_and_runtime_parity(tmp_path, write_spec, name):
    import onnx
    import onnxruntime as ort

    spec = write_spec(ALL_CONSTRUCTS, "all_constructs") if name == "all_constructs" else EXAMPLES / f"{name}.toml"
    out = tmp_path / f"{name}.onnx"
    report = run_export.export_onnx(spec, out)
    assert report.passed and report.written and out.is_file()
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    ops = {node.op_type for node in model.graph.node}
    assert "Add" in ops  # the residual sums
    # independent of the exporter's own check: ORT against the compiled module, by output name
    module, graph = graphc.model_from_spec(spec, seed=graphc.load_spec(spec).train.seed)
    module.eval()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    x = torch.rand(3, *graph.input.shape, generator=torch.Generator().manual_seed(1))
    got = dict(zip(names, session.run(None, {graph.input.name: x.numpy()})))
    normalize = graph.data.normalize  # applied inside the exported model, to pixels in [0, 1]
    if normalize is not None:
        mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (normalize.mean, normalize.std))
    with torch.no_grad():
        expected = module((x - mean) / std if normalize is not None else x)
    for task in graph.tasks:
        np.testing.assert_allclose(got[task], expected[task].numpy(), atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- repeat


def test_repeat_expands_into_named_chains(write_spec):
    body = block("stage", "image", channels="[8]", norm="batch", norm_position="post", repeat=4)
    body += '[[nodes]]\nname = "fc"\nkind = "fc_block"\ninput = "stage"\nunits = [8]\nrepeat = 2\n\n'
    text = (
        HEADER
        + body
        + HEADS.format(last="fc").replace('input = "fc"\ntask = "coarse"', 'input = "stage_2"\ntask = "coarse"')
    )
    graph = build(write_spec, text)
    names = [n.name for n in graph]
    assert names[:7] == ["image", "stage_1", "stage_2", "stage_3", "stage_4", "fc_1", "fc_2"]
    assert [graph[f"stage_{k}"].inputs for k in range(1, 5)] == [("image",), ("stage_1",), ("stage_2",), ("stage_3",)]
    assert graph["fc_1"].inputs == ("stage_4",)  # readers of 'stage' read its last copy
    assert graph["fine_head"].inputs == ("fc_2",)
    assert graph["coarse_head"].inputs == ("stage_2",)  # a copy can be read by name
    assert graph["stage_1"].attrs["in_channels"] == 3 and graph["stage_2"].attrs["in_channels"] == 8
    # every copy points at the one [[nodes]] table it came from
    line = text.splitlines().index('name = "stage"') + 1
    assert {graph[f"stage_{k}"].line for k in range(1, 5)} == {line}
    module = graphc.compile_graph(graph, seed=0)
    check_against_forward(module, graph)
    keys = module.state_dict()
    assert (
        "stage_3.norm1.running_mean" in keys
        and "fc_2.fc1.weight" in keys
        and not any(k.startswith("stage.") for k in keys)
    )
    assert "stage_4 = self.stage_4(stage_3)" in module.code


def test_repeat_errors_point_at_the_original_table(write_spec):
    # the third copy's pooling collapses the map: the message names stage_3 at stage's line
    body = block("stage", "image", channels="[8]", pool="max", pool_size=4, repeat=3)
    text = spec_text(body, "stage")
    error = spec_error(write_spec, text)
    assert error.node == "stage_3" and error.field == "pool"
    assert error.line == text.splitlines().index('pool = "max"') + 1  # in the one table all copies come from

    clash = block("stage", "image", channels="[8]", repeat=2) + block("stage_2", "stage", channels="[8]")
    error = spec_error(write_spec, spec_text(clash, "stage_2"))
    assert error.field == "repeat" and "'stage_2' is also the name of node #3" in str(error)

    error = spec_error(write_spec, spec_text(block("stage", "image", channels="[8]", repeat=100000), "stage"))
    assert error.field == "repeat" and "less than or equal to 1000" in str(error)  # no hour-long expansion

    on_head = spec_text(block("trunk", "image", channels="[8]"), "trunk").replace(
        'task = "fine"', 'task = "fine"\nrepeat = 2'
    )
    error = spec_error(write_spec, on_head)
    assert "unknown field 'repeat'" in str(error) and "conv_block or fc_block" in error.hint


# --------------------------------------------------------------------------- what to write instead


KIND_HINTS = {
    "add": 'mode = "sum"',
    "residual": 'mode = "sum"',
    "skip": 'mode = "sum"',
    "sum": 'mode = "sum"',
    "cross_stitch": "not supported",
    "global_avg": 'pool = "global_avg"',
    "gap": 'pool = "global_avg"',
    "dense": "fc_block",
    "linear": "fc_block",
    "conv2d": "conv_block",
    "maxpool2d": 'kind = "pool"',  # pool and dropout are node kinds of their own (issue 24)
    "avgpool": 'pool = "max" | "avg"',
    "batchnorm": 'norm = "batch"',
    "spatial_dropout": 'kind = "dropout"',
    "dropout2d": "dropout = 0.25",
    "flatten": "flatten a feature map themselves",
    "softmax": "logits",
    "attention": "not supported",
    "output": 'kind = "head"',
    "loss": "cross-entropy",
}
FIELD_HINTS = {
    "dilation": "not supported",
    "loss": "loss_weight",
    "filters": "channels = [",
    "kernel_size": "kernel = 3",
    "residual": 'mode = "sum"',
    "skip": 'mode = "sum"',
    "lr": "[train]",
    "momentum": "[layers]",
    "dense": "fc_block",
    "num_classes": "classes = N",
}
VALUE_HINTS = {
    ("pool", "gap"): 'pool = "global_avg"',
    ("pool", "global_average_pooling"): 'pool = "global_avg"',
    ("norm", "bn"): 'norm = "batch"',
    ("norm", "layernorm"): 'norm = "layer"',
    ("activation", "linear"): 'activation = "none"',
    ("activation", "swish"): 'activation = "silu"',
    ("activation", "softmax"): "logits",
}


def _unknown(write_spec, replace: str, by: str) -> graphc.SpecError:
    text = spec_text(block("trunk", "image", channels="[8]", norm="batch"), "trunk")
    assert replace in text
    return spec_error(write_spec, text.replace(replace, by, 1))


@pytest.mark.parametrize("word", sorted(KIND_HINTS))
def test_unknown_kind_says_what_to_use_instead(write_spec, word):
    error = _unknown(write_spec, 'kind = "conv_block"', f'kind = "{word}"')
    assert error.field == "kind" and KIND_HINTS[word] in error.hint and "did you mean" not in error.hint


@pytest.mark.parametrize("word", sorted(FIELD_HINTS))
def test_unknown_field_says_what_to_use_instead(write_spec, word):
    error = _unknown(write_spec, 'norm = "batch"', f'norm = "batch"\n{word} = 2')
    assert error.field == word and FIELD_HINTS[word] in error.hint and "did you mean" not in error.hint


@pytest.mark.parametrize("field, value", sorted(VALUE_HINTS))
def test_unknown_value_says_what_to_use_instead(write_spec, field, value):
    replace = 'norm = "batch"'
    by = f'{field} = "{value}"' if field == "norm" else f'norm = "batch"\n{field} = "{value}"'
    error = _unknown(write_spec, replace, by)
    assert error.field == field and VALUE_HINTS[(field, value)] in error.hint


def test_a_misspelling_outside_the_table_still_gets_the_nearest_name(write_spec):
    assert _unknown(write_spec, 'kind = "conv_block"', 'kind = "conv_blok"').hint == "did you mean 'conv_block'?"
    assert hint_for("conv_blok") is None


def test_every_hint_names_a_real_construct_or_says_not_supported():
    generic = {"name", "use", "input", "inputs", "kind", "shape", "task"}  # also plain English words
    constructs = ({f for model in NODE_CLASSES.values() for f in model.model_fields} - generic) | set(NODE_CLASSES) - {
        "input"
    }
    for word, hint in HINTS.items():
        words = set(re.findall(r"[a-z_]+", hint))
        assert hint.startswith("not supported") or words & constructs or "[train]" in hint or "[layers]" in hint, (
            word,
            hint,
        )
        # every `field = value` it suggests is a field of a node, [layers] or [train]
        written = set(re.findall(r"\b([a-z_]+) = ", hint))
        assert written <= constructs | generic | {"optimizer", "name", "lr", "weight_decay"}, (word, written)


@pytest.mark.parametrize("word", ["trainable", "freeze"])
def test_freezing_hint_follows_the_schema(word):
    """Per-node freezing may be a node field (issue 14); the hint says so exactly when it is."""
    if any("trainable" in model.model_fields for model in NODE_CLASSES.values()):
        assert "[[nodes]]" in hint_for(word)
    else:
        assert hint_for(word).startswith("not supported")


def test_cli_prints_the_hint_and_exits_2(write_spec):
    path = write_spec(
        spec_text(block("trunk", "image", channels="[8]"), "trunk").replace('kind = "conv_block"', 'kind = "add"')
    )
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 2 and clean_exit(result) and "Traceback" not in result.output
    assert 'mode = "sum"' in result.output and "did you mean 'head'" not in result.output


# --------------------------------------------------------------------------- diagrams of deep specs


DEEP = spec_text(
    block("stem", "image", channels="[8]")
    + block("stage", "stem", channels="[8]", norm="batch", norm_position="post", repeat=40)
    + '[[nodes]]\nname = "fc"\nkind = "fc_block"\ninput = "stage"\nunits = [16]\nrepeat = 3\n\n',
    "fc",
)


def test_collapse_draws_each_chain_as_one_box(write_spec):
    graph = build(write_spec, DEEP)
    view = collapse_chains(graph)
    # stem and the 40 copies are one chain (same kind, one reader each, the same heads)
    assert [n.name for n in view] == ["image", "stem", "fc_1", "fine_head", "coarse_head"]
    box = view["stem"]
    assert box.attrs["collapsed"] == ("stem", *(f"stage_{k}" for k in range(1, 41)))
    assert box.shape == graph["stage_40"].shape
    assert box.num_params == graph["stem"].num_params + sum(graph[f"stage_{k}"].num_params for k in range(1, 41))
    assert view["fc_1"].inputs == ("stem",) and view["fc_1"].attrs["collapsed"] == ("fc_1", "fc_2", "fc_3")
    assert view.total_params == graph.total_params and view.hard_shared_params == graph.hard_shared_params


def test_collapse_keeps_forks_joins_and_changes_of_sharing(write_spec):
    # a chain stops where a node has two readers, where a sum joins, and where the heads it serves change
    body = block("a", "image", channels="[8]") + block("b", "a", channels="[8]") + block("c", "b", channels="[8]")
    body += block("d", "c", channels="[8]") + block("e", "d", channels="[8]")
    body += '[[nodes]]\nname = "add"\nkind = "concat"\nmode = "sum"\ninputs = ["c", "e"]\n\n'
    body += block("f", "add", channels="[8]") + block("g", "f", channels="[8]")
    text = spec_text(body, "g").replace('input = "g"\ntask = "coarse"', 'input = "f"\ntask = "coarse"')
    view = collapse_chains(build(write_spec, text))
    chains = {n.name: n.attrs.get("collapsed") for n in view}
    assert chains["a"] == ("a", "b", "c")  # c has two readers (d and add): the chain ends there
    assert chains["d"] == ("d", "e")
    assert chains["f"] is None and chains["g"] is None  # f serves both heads, g only fine
    assert view["add"].inputs == ("a", "d")
    # a frozen block does not join a trained chain
    frozen = text.replace(
        'name = "b"\nkind = "conv_block"\ninput = "a"',
        'name = "b"\nkind = "conv_block"\ninput = "a"\ntrainable = false',
    )
    assert frozen != text
    chains = {n.name: n.attrs.get("collapsed") for n in collapse_chains(build(write_spec, frozen))}
    assert chains["a"] is None and chains["b"] is None and chains["c"] is None and chains["d"] == ("d", "e")


def _svg_size(path: Path) -> tuple[float, float]:
    head = path.read_text()[:2000]
    width = float(re.search(r'width="([\d.]+)pt"', head).group(1))
    height = float(re.search(r'height="([\d.]+)pt"', head).group(1))
    return width, height


def test_render_of_a_40_block_spec_with_collapse_fits_on_one_page(write_spec, tmp_path):
    spec = write_spec(DEEP, "deep")
    out, full = tmp_path / "deep.svg", tmp_path / "deep_full.svg"
    result = runner.invoke(app, ["render", str(spec), "-o", str(out), "--collapse"])
    assert result.exit_code == 0 and clean_exit(result), result.output
    width, height = _svg_size(out)
    assert width <= 842 and height <= 842, (width, height)  # within an A4 page's long side, in points
    assert 'id="node--lang--stem"' in out.read_text() and 'id="node--lang--stage_2"' not in out.read_text()
    result = runner.invoke(app, ["render", str(spec), "-o", "-", "--format", "mermaid", "--collapse"])
    assert "stem … stage_40" in result.stdout and "41 × conv_block" in result.stdout and "3 × fc_block" in result.stdout
    result = runner.invoke(app, ["render", str(spec), "-o", str(full)])
    assert result.exit_code == 0
    assert _svg_size(full)[1] > 10 * height  # the same spec uncollapsed: 45 boxes in a column


@pytest.mark.parametrize("direction", ["TB", "LR"])
@pytest.mark.parametrize("name", ["reuse_coarse", "reuse_fine", "shared_reuse_coarse", "shared_reuse_fine"])
def test_reuse_labels_sit_beside_their_own_edge(name, direction):
    from graphc.backends.diagram.draw import page
    from graphc.backends.diagram.scene import crosses, sample

    graph = graphc.build_graph(graphc.load_spec(name))
    scene = page([graph], direction)
    edges = list(graph.edges())
    assert len(scene.edge_label_rects) == len(edges)  # one label per edge, in edge order
    reuse = 0
    for index, ((source, target), rect) in enumerate(zip(edges, scene.edge_label_rects)):
        if not graph.is_reuse_edge(source.name):
            continue
        reuse += 1
        curve = scene.edge_curves[(graph.name, source.name, target.name, index)]
        line = sample(curve.segments)
        assert not any(crosses(rect, p, q) for p, q in zip(line, line[1:])), (source.name, target.name)
        # ... and beside it, not somewhere else on the page
        near = min(math.dist(((rect.x0 + rect.x1) / 2, (rect.y0 + rect.y1) / 2), point) for point in line)
        assert near < 60, near
    assert reuse


def test_legend_words_sharing_as_the_ir_defines_it():
    """The legend's "shared" is Node.is_hard_shared: several heads depend on the node by a path
    through no other head; "reused" is Node.reused_by: a head depends on it only through another head."""
    from graphc.backends.diagram.draw import legend

    graph = graphc.build_graph(graphc.load_spec("shared_reuse_coarse"))
    texts = [t.text for t in legend([graph], 800).texts]
    assert "shared: several heads use it, not only through another head's output" in texts
    assert "reused: another task depends on it only through a head's output" in texts
    trunk, coarse_fc = graph["trunk_block2"], graph["coarse_fc1"]
    assert trunk.is_hard_shared and trunk.direct_heads == {"fine", "coarse"}
    assert not coarse_fc.is_hard_shared and coarse_fc.reused_by == {"fine"}


def test_a_word_means_what_its_table_makes_it_mean(write_spec):
    """momentum on a node is batch norm's ([layers]); in [train] it is the optimiser's."""
    on_node = _unknown(write_spec, 'norm = "batch"', 'norm = "batch"\nmomentum = 0.9')
    assert "[layers]" in on_node.hint and "bn_momentum" in on_node.hint
    text = spec_text(block("trunk", "image", channels="[8]"), "trunk") + "\n[train]\nmomentum = 0.9\n"
    in_train = spec_error(write_spec, text)
    assert in_train.field == "train.momentum" and 'optimizer = { name = "sgd"' in in_train.hint


UNIT = (
    block("stem", "image", channels="[8]", repeat=2)
    + block("branch", "stem", channels="[8]", norm="batch", norm_position="pre")
    + block("branch_b", "branch", channels="[8]", norm="group", groups=2, norm_position="pre")
    + '[[nodes]]\nname = "res"\nkind = "concat"\nmode = "sum"\ninputs = ["stem", "branch_b"]\nrepeat = 3\n\n'
)


def test_repeat_on_a_sum_repeats_its_residual_unit(write_spec):
    text = spec_text(UNIT, "res")
    graph = build(write_spec, text)
    assert [n.name for n in graph][:12] == [
        "image",
        "stem_1",
        "stem_2",
        "branch_1",
        "branch_b_1",
        "res_1",
        "branch_2",
        "branch_b_2",
        "res_2",
        "branch_3",
        "branch_b_3",
        "res_3",
    ]
    assert graph["branch_1"].inputs == ("stem_2",)  # the first unit reads the (repeated) shortcut's last copy
    assert graph["res_1"].inputs == ("stem_2", "branch_b_1")
    assert graph["branch_2"].inputs == ("res_1",) and graph["branch_b_2"].inputs == ("branch_2",)
    assert graph["res_3"].inputs == ("res_2", "branch_b_3")
    assert graph["fine_head"].inputs == ("res_3",)
    assert graph["branch_b_3"].line == text.splitlines().index('name = "branch_b"') + 1
    module = graphc.compile_graph(graph, seed=0)
    outputs = check_against_forward(module, graph)
    torch.testing.assert_close(outputs["res_3"], outputs["res_2"] + outputs["branch_b_3"], rtol=0, atol=1e-6)
    assert "branch_b_2.norm1.weight" in module.state_dict()


@pytest.mark.parametrize(
    "change, words",
    [
        # a node outside the unit reads a member: its copies would leave it ambiguous
        (
            lambda t: t.replace('input = "res"\ntask = "coarse"', 'input = "branch"\ntask = "coarse"'),
            "'coarse_head' reads 'branch'",
        ),
        # no input of the sum is the others' source
        (
            lambda t: t.replace('inputs = ["stem", "branch_b"]', 'inputs = ["branch", "branch_b"]').replace(
                'input = "branch"\nchannels', 'input = "stem"\nchannels'
            ),
            None,
        ),
        (lambda t: t.replace('mode = "sum"\n', 'mode = "features"\n'), "but mode is 'features'"),
        (
            lambda t: t.replace('norm_position = "pre"\n', 'norm_position = "pre"\nrepeat = 2\n', 1),
            "has its own repeat",
        ),
    ],
)
def test_repeat_on_a_sum_errors(write_spec, change, words):
    error = spec_error(write_spec, change(spec_text(UNIT, "res")))
    assert "repeat" in str(error) and error.line is not None
    if words:
        assert words in str(error)


def test_collapse_draws_a_run_of_residual_units_as_one_box(write_spec, tmp_path):
    graph = build(write_spec, spec_text(UNIT.replace("repeat = 3", "repeat = 40"), "res"))
    view = collapse_chains(graph)
    assert [n.name for n in view] == ["image", "stem_1", "branch_1", "fine_head", "coarse_head"]
    box = view["branch_1"]
    assert box.attrs["collapsed"][:3] == ("branch_1", "branch_b_1", "res_1") and box.attrs["collapsed"][-1] == "res_40"
    assert box.attrs["collapsed_label"] == "40 × residual unit"
    assert box.inputs == ("stem_1",) and view["fine_head"].inputs == ("branch_1",)
    assert box.shape == graph["res_40"].shape
    assert box.num_params == sum(graph[f"{m}_{k}"].num_params for m in ("branch", "branch_b") for k in range(1, 41))
    assert view.total_params == graph.total_params
    # two units written out collapse; once another node reads the second one's branch, they do not
    body = (
        block("stem", "image", channels="[8]") + block("b1", "stem", channels="[8]") + block("b2", "r1", channels="[8]")
    )
    body += '[[nodes]]\nname = "r1"\nkind = "concat"\nmode = "sum"\ninputs = ["stem", "b1"]\n\n'
    body += '[[nodes]]\nname = "r2"\nkind = "concat"\nmode = "sum"\ninputs = ["r1", "b2"]\n\n'
    labels = [n.attrs.get("collapsed_label") for n in collapse_chains(build(write_spec, spec_text(body, "r2")))]
    assert "2 × residual unit" in labels
    body += '[[nodes]]\nname = "aux"\nkind = "fc_block"\ninput = "b2"\nunits = [2]\n\n'
    text = spec_text(body, "r2").replace('input = "r2"\ntask = "coarse"', 'input = "aux"\ntask = "coarse"')
    labels = [n.attrs.get("collapsed_label") for n in collapse_chains(build(write_spec, text))]
    assert not any(label and "residual" in label for label in labels)
    # 40 units with their forks and joins fit on a page once collapsed
    spec = write_spec(spec_text(UNIT.replace("repeat = 3", "repeat = 40"), "res"), "deep_res")
    out = tmp_path / "deep_res.svg"
    result = runner.invoke(app, ["render", str(spec), "-o", str(out), "--collapse"])
    assert result.exit_code == 0 and clean_exit(result), result.output
    width, height = _svg_size(out)
    assert width <= 842 and height <= 842, (width, height)
