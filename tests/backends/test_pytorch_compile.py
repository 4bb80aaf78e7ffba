"""The compiler against independent references: real forward passes, Keras's parameter
arithmetic, a hand-written PyTorch model, torch.compile and DistributedDataParallel."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import pytest
import torch
from torch import fx, nn

import graphc
from tests.conftest import TINY_SPEC

REFERENCE_SPECS = [
    "independent",
    "shared_conv",
    "reuse_coarse",
    "reuse_fine",
    "shared_reuse_coarse",
    "shared_reuse_fine",
]


def keras_param_count(name: str) -> int:
    """Trainable parameters of the original Keras model, worked out from REFERENCE.md."""
    conv = lambda i, o: 3 * 3 * i * o + o  # noqa: E731
    dense = lambda i, o: i * o + o  # noqa: E731
    bn = lambda c: 2 * c  # gamma, beta (moving mean/variance are not trainable)  # noqa: E731
    trunk = conv(3, 64) + conv(64, 64) + conv(64, 64) + bn(64) + conv(64, 128) + conv(128, 128) + bn(128)
    fc1 = dense(128 * 8 * 8, 1024) + bn(1024) + dense(1024, 512) + bn(512)
    fc2 = lambda i: dense(i, 256) + bn(256) + dense(256, 128) + bn(128)  # noqa: E731
    heads = dense(128, 100) + dense(128, 20)
    trunks = 1 if name.startswith("shared") else 2
    reused = {"reuse_coarse": 20, "reuse_fine": 100}
    extra = next((n for key, n in reused.items() if name.endswith(key)), 0)
    return trunks * trunk + 2 * fc1 + fc2(512) + fc2(512 + extra) + heads


def node_outputs(module: fx.GraphModule, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run the generated graph and keep every node's output, keyed by fx node name."""
    outputs: dict[str, torch.Tensor] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            value = super().run_node(n)
            outputs[n.target if n.op == "call_module" else n.name] = value
            return value

    Recorder(module).run(image)
    return outputs


@pytest.fixture(scope="module", params=REFERENCE_SPECS)
def reference(request):
    module, graph = graphc.model_from_spec(f"specs/{request.param}.toml", seed=0)
    return request.param, module.eval(), graph


def test_reference_parameter_counts_match_keras(reference):
    name, module, graph = reference
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    assert trainable == graph.total_params == keras_param_count(name)


def test_inferred_shapes_and_counts_match_a_real_forward(reference):
    _, module, graph = reference
    outputs = node_outputs(module, torch.rand(2, *graph.input.shape))
    for node in graph:
        assert tuple(outputs[node.name].shape) == (2, *node.shape), node.name
        submodule = getattr(module, node.name, None)
        real = sum(p.numel() for p in submodule.parameters()) if submodule is not None else 0
        assert real == node.num_params, node.name
    assert list(module(torch.rand(2, 3, 32, 32))) == ["fine", "coarse"]


@pytest.mark.parametrize("path", sorted(str(p) for p in Path("specs").rglob("*.toml") if "examples" in p.parts))
def test_example_specs_shapes_and_counts_match_a_real_forward(path):
    module, graph = graphc.model_from_spec(path, seed=0)
    outputs = node_outputs(module.eval(), torch.rand(2, *graph.input.shape))
    for node in graph:
        assert tuple(outputs[node.name].shape) == (2, *node.shape), node.name
        submodule = getattr(module, node.name, None)
        assert (sum(p.numel() for p in submodule.parameters()) if submodule is not None else 0) == node.num_params
    assert sum(p.numel() for p in module.parameters()) == graph.total_params


def test_layer_defaults_are_keras_equivalent(reference):
    _, module, _ = reference
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.momentum == 0.01 and m.eps == 1e-3 for m in norms)
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(layer.weight)
            bound = math.sqrt(6 / (fan_in + fan_out))  # Glorot uniform
            assert layer.weight.abs().max() <= bound
            assert layer.weight.abs().max() > 0.9 * bound
            assert torch.count_nonzero(layer.bias) == 0


def test_state_dict_keys_are_named_after_spec_nodes(reference):
    _, module, graph = reference
    prefixes = {key.split(".")[0] for key in module.state_dict()}
    assert prefixes == {n.name for n in graph if n.kind not in ("input", "concat")}


class HandWrittenSharedReuseCoarse(nn.Module):
    """shared_reuse_coarse written by hand from REFERENCE.md, parameters registered in
    the compiled model's (topological) order."""

    def __init__(self):
        super().__init__()

        def block(i, o, pool):
            layers = [nn.Conv2d(i, o, 3, padding=1), nn.ReLU(), nn.Conv2d(o, o, 3, padding=1), nn.ReLU()]
            return nn.Sequential(*layers, nn.MaxPool2d(2), nn.BatchNorm2d(o, eps=1e-3, momentum=0.01))

        def dense(i, o):
            return [nn.Linear(i, o), nn.ReLU(), nn.Dropout(0.25), nn.BatchNorm1d(o, eps=1e-3, momentum=0.01)]

        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU())
        self.block1 = block(64, 64, True)
        self.block2 = block(64, 128, True)
        self.fine_fc1 = nn.Sequential(nn.Flatten(), *dense(8192, 1024), *dense(1024, 512))
        self.coarse_fc1 = nn.Sequential(nn.Flatten(), *dense(8192, 1024), *dense(1024, 512))
        self.coarse_fc2 = nn.Sequential(*dense(512, 256), *dense(256, 128))
        self.coarse_out = nn.Linear(128, 20)
        self.fine_fc2 = nn.Sequential(*dense(532, 256), *dense(256, 128))
        self.fine_out = nn.Linear(128, 100)

    def forward(self, x):
        features = self.block2(self.block1(self.stem(x)))  # (B, 128, 8, 8)
        fine_features = self.fine_fc1(features)  # (B, 512)
        coarse = self.coarse_out(self.coarse_fc2(self.coarse_fc1(features)))  # (B, 20)
        fine = self.fine_out(self.fine_fc2(torch.cat([fine_features, coarse], dim=1)))  # (B, 100)
        return fine, coarse


def test_compiled_model_equals_a_hand_written_one():
    module, _ = graphc.model_from_spec("specs/shared_reuse_coarse.toml", seed=0)
    reference = HandWrittenSharedReuseCoarse()
    ours, theirs = module.state_dict(), reference.state_dict()
    assert len(ours) == len(theirs)
    for (key, value), their_key in zip(ours.items(), theirs):
        assert value.shape == theirs[their_key].shape, (key, their_key)
    reference.load_state_dict(dict(zip(theirs, ours.values())))
    image = torch.rand(4, 3, 32, 32)
    module.eval(), reference.eval()
    with torch.no_grad():
        out = module(image)
        fine, coarse = reference(image)
    torch.testing.assert_close(out["fine"], fine)
    torch.testing.assert_close(out["coarse"], coarse)
    # Same in training mode: batch statistics, and the same dropout masks from the same seed
    # (the hand-written forward draws them in the compiled model's order).
    module.train(), reference.train()
    torch.manual_seed(1)
    out = module(image)
    torch.manual_seed(1)
    fine, coarse = reference(image)
    torch.testing.assert_close(out["fine"], fine)


def tiny(write_spec, **replacements) -> graphc.Graph:
    text = TINY_SPEC
    for old, new in replacements.items():
        text = text.replace(old, new)
    return graphc.build_graph(graphc.load_spec(write_spec(text)))


REUSE_TAIL = """
[[nodes]]
name = "joined"
kind = "concat"
inputs = ["trunk", "coarse_head"]

[[nodes]]
name = "fine_head"
kind = "head"
input = "joined"
task = "fine"
"""


def reuse_graph(write_spec, head_options: str) -> graphc.Graph:
    text = TINY_SPEC.replace('[[nodes]]\nname = "fine_head"\nkind = "head"\ninput = "trunk"\ntask = "fine"\n', "")
    text = text.replace('task = "coarse"\n', 'task = "coarse"\n' + head_options + "\n" + REUSE_TAIL)
    return graphc.build_graph(graphc.load_spec(write_spec(text)))


def test_reuse_gradient_and_probabilities(write_spec):
    default = graphc.compile_graph(reuse_graph(write_spec, ""), seed=0)
    out = default(torch.rand(3, 3, 8, 8))
    out["fine"].sum().backward()
    assert default.coarse_head.weight.grad.abs().sum() > 0  # gradients flow through the reuse edge

    detached = graphc.compile_graph(reuse_graph(write_spec, "reuse_gradient = false"), seed=0)
    detached(torch.rand(3, 3, 8, 8))["fine"].sum().backward()
    assert detached.coarse_head.weight.grad is None

    probs = graphc.compile_graph(reuse_graph(write_spec, 'reuse_as = "probabilities"'), seed=0)
    seen = node_outputs(probs, torch.rand(3, 3, 8, 8))
    torch.testing.assert_close(seen["joined"][:, -2:].sum(dim=1), torch.ones(3))
    assert "softmax" in probs.code


def test_generated_forward_is_straight_line(write_spec):
    module = graphc.compile_graph(tiny(write_spec))
    code = module.code
    assert "self.trunk(image)" in code and "self.fine_head(trunk)" in code
    assert "for " not in code and "{'fine': fine_head, 'coarse': coarse_head}" in code


def test_seed_gives_the_same_weights_without_touching_global_rng(write_spec):
    graph = tiny(write_spec)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    a, b = graphc.compile_graph(graph, seed=3), graphc.compile_graph(graph, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.slow
def test_torch_compile_matches_eager(write_spec):
    module = graphc.compile_graph(tiny(write_spec), seed=0).eval()
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    image = torch.rand(4, 3, 8, 8)
    eager, fast = module(image), compiled(image)
    for task in eager:
        torch.testing.assert_close(fast[task], eager[task])


def _ddp_worker(rank: int, world: int, port: int, spec_text: str, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        graph = graphc.build_graph(graphc.parse_spec(spec_text))
        model = nn.parallel.DistributedDataParallel(graphc.compile_graph(graph, seed=0))
        torch.manual_seed(100 + rank)  # each rank sees different data
        out = model(torch.rand(4, 3, 8, 8))
        (out["fine"].sum() + out["coarse"].sum()).backward()
        torch.save({k: p.grad for k, p in model.module.named_parameters()}, f"{tmp}/grads{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_distributed_data_parallel_averages_gradients_across_processes(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.start_processes(
        _ddp_worker, args=(2, port, TINY_SPEC, str(tmp_path)), nprocs=2, start_method="spawn"
    )
    grads = [torch.load(tmp_path / f"grads{rank}.pt") for rank in range(2)]
    # Reference: the same two batches in one process; DDP's gradient is their mean.
    graph = graphc.build_graph(graphc.parse_spec(TINY_SPEC))
    expected = {}
    for rank in range(2):
        model = graphc.compile_graph(graph, seed=0)
        torch.manual_seed(100 + rank)
        out = model(torch.rand(4, 3, 8, 8))
        (out["fine"].sum() + out["coarse"].sum()).backward()
        for key, p in model.named_parameters():
            expected[key] = expected.get(key, 0) + p.grad / 2
    for key, value in expected.items():
        torch.testing.assert_close(grads[0][key], value)
        torch.testing.assert_close(grads[1][key], value)


def test_reserved_names_cover_every_graph_module_attribute(write_spec):
    """A node named after a GraphModule attribute either fails add_module or is shadowed by a method,
    and 'self' is rebound by the generated forward: the spec must refuse them all."""
    from graphc.lang.spec import RESERVED_NAMES

    attributes = {n for n in dir(fx.GraphModule) if not n.startswith("_")}
    attributes |= {n for n in vars(fx.GraphModule(nn.Module(), fx.Graph())) if not n.startswith("_")}
    assert attributes | {"self"} <= RESERVED_NAMES
    for name in ("self", "compile", "print_readable", "named_buffers"):
        with pytest.raises(graphc.SpecError, match="reserved"):
            graphc.load_spec(write_spec(TINY_SPEC.replace('"trunk"', f'"{name}"')))


CODE_NAMES_SPEC = """\
[[nodes]]
name = "input"
kind = "input"
shape = [3, 8, 8]

[[nodes]]
name = "torch"
kind = "conv_block"
input = "input"
channels = [4]

[[nodes]]
name = "detach"
kind = "head"
input = "torch"
task = "coarse"
reuse_as = "probabilities"
reuse_gradient = false

[[nodes]]
name = "flatten"
kind = "concat"
inputs = ["torch", "detach"]

[[nodes]]
name = "softmax"
kind = "fc_block"
input = "flatten"
units = [5]

[[nodes]]
name = "cat"
kind = "head"
input = "softmax"
task = "fine"

[data]
dataset = "synthetic"
synthetic = { classes = 4, coarse_classes = 2 }
"""


def test_node_names_that_are_names_in_the_generated_code(write_spec):
    """Nodes named like the functions and builtins the generated forward calls still compute the right thing."""
    module = graphc.compile_graph(graphc.build_graph(graphc.load_spec(write_spec(CODE_NAMES_SPEC))), seed=0).eval()
    image = torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        out = module(image)
        trunk = module.torch(image)  # (B, 4, 8, 8)
        coarse = module.detach(trunk)  # (B, 2)
        joined = torch.cat([trunk.flatten(1), torch.softmax(coarse, dim=1)], dim=1)
        fine = module.cat(module.softmax(joined))
    torch.testing.assert_close(out["coarse"], coarse)
    torch.testing.assert_close(out["fine"], fine)
