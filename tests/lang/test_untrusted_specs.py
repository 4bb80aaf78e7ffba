"""Specs are untrusted input: names that are path components, classes counted twice, templates
nobody checked, TOML nested past the parser, absurd sizes; and `graphc check` stays linear
in the node count (issue 9)."""

from __future__ import annotations

import glob

import networkx as nx
import pytest
from typer.testing import CliRunner

import graphc
from graphc.cli import app
from graphc.errors import SpecError
from graphc.ir import build
from tests.conftest import REPO, TINY_SPEC, clean_exit

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output and clean_exit(result), result.output
    return result


def one_paragraph(result) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(result.stderr.split())


# --------------------------------------------------------------------------- spec names


@pytest.mark.parametrize("name", ["..", ".", ".hidden"])
def test_a_spec_name_that_is_a_path_component_is_refused(tmp_path, write_spec, name):
    spec = write_spec(TINY_SPEC.replace('name = "tiny"', f'name = "{name}"'))
    out = tmp_path / "a" / "runs"
    result = invoke("train", str(spec), "--out", str(out), "--epochs", "1", "-q")
    assert result.exit_code == 2
    assert (
        "field 'name': a spec's name becomes its runs' folder (runs/<name>/), so it cannot start with '.'"
        in one_paragraph(result)
        and f"found '{name}'" in result.stderr
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.toml"]  # no run directory, in --out or above it


def test_a_spec_file_whose_name_would_be_invalid_says_to_set_name(tmp_path):
    path = tmp_path / "...toml"  # named after its file: '..'
    path.write_text(TINY_SPEC.replace('name = "tiny"\n', ""))
    result = invoke("check", str(path))
    assert result.exit_code == 2
    message = one_paragraph(result)
    assert "found '..'" in message and "the spec has no `name`, so it is named after its file; add name =" in message
    # With a name of its own the same file is fine.
    path.write_text(TINY_SPEC)
    assert invoke("check", str(path)).exit_code == 0


# --------------------------------------------------------------------------- hierarchy tables and templates

FOLDER_SPEC = TINY_SPEC.replace(
    'dataset = "synthetic"\nsynthetic = { classes = 4, coarse_classes = 2 }',
    'dataset = "imagefolder"\n\n[data.hierarchy.coarse]\npets = ["cat", "dog"]\nother = ["mouse", "cat"]',
)


def test_a_class_in_two_hierarchy_groups_is_an_error(write_spec):
    path = write_spec(FOLDER_SPEC)
    result = invoke("check", str(path))
    assert result.exit_code == 2
    line = FOLDER_SPEC.splitlines().index('other = ["mouse", "cat"]') + 1
    assert (
        f"{path}:{line}: field 'data.hierarchy.coarse': class 'cat' is listed in both 'pets' and 'other'"
        in one_paragraph(result)
    )
    # Listed once, the same table is fine and counts three classes.
    fixed = write_spec(FOLDER_SPEC.replace('["mouse", "cat"]', '["mouse"]'), "fixed")
    assert "heads fine(3), coarse(2)" in invoke("check", str(fixed)).stdout


UNUSED_TEMPLATES = """
[templates.typo]
kind = "conv_blok"
channels = [4]

[templates.bad_value]
kind = "conv_block"
pool = "maxx"

[templates.kindless]
units = [3]
poool = "max"

[data]"""


def test_every_template_is_validated_even_unused(write_spec):
    text = TINY_SPEC.replace("[data]", UNUSED_TEMPLATES.strip("\n"))
    path = write_spec(text)
    result = invoke("check", str(path))
    assert result.exit_code == 2
    lines = text.splitlines()
    kind, pool, poool = (lines.index(line) + 1 for line in ('kind = "conv_blok"', 'pool = "maxx"', 'poool = "max"'))
    message = one_paragraph(result)
    assert f"{path}:{kind}: field 'templates.typo.kind': unknown node kind 'conv_blok'" in message
    assert "did you mean 'conv_block'?" in message
    assert f"{path}:{pool}: field 'templates.bad_value.pool'" in message
    assert f"{path}:{poool}: field 'templates.kindless.poool': unknown field 'poool'" in message
    # A partial template (the nodes give input and channels) is still fine.
    good = write_spec(
        TINY_SPEC.replace("[data]", '[templates.pooled]\nkind = "conv_block"\npool = "max"\n\n[data]'), "good"
    )
    assert invoke("check", str(good)).exit_code == 0


# --------------------------------------------------------------------------- nesting


@pytest.mark.parametrize(
    "value",
    [
        "[" * 10000 + "]" * 10000,  # past tomllib's recursion
        "{a = " * 10000 + "1" + "}" * 10000,
        "[" * 40 + "]" * 40,  # tomllib reads it; graphc refuses it
    ],
)
def test_deeply_nested_toml_is_a_spec_error(write_spec, value):
    text = TINY_SPEC.replace("[data]", f"[train]\nepochs = {value}\n\n[data]")
    path = write_spec(text)
    result = invoke("check", str(path))
    assert result.exit_code == 2
    line = text.splitlines().index(f"epochs = {value}") + 1
    assert one_paragraph(result).startswith(
        f"invalid {path} {path}:{line}: the TOML is nested too deeply: arrays or tables inside each other more than 32"
    )


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    "change, params",
    [
        (("channels = [4]", "channels = [1000000000]"), "124,000,000,006"),
        (("shape = [3, 8, 8]", "shape = [3, 8, 100000000000000000000]"), "4,800,000,000,000,000,000,118"),
        (("channels = [4]", "channels = [4]\npadding = 100000"), "240,014,400,334"),
    ],
)
def test_absurd_sizes_are_too_large_to_build(write_spec, tmp_path, change, params):
    path = write_spec(TINY_SPEC.replace(*change))
    result = invoke("check", str(path))
    assert result.exit_code == 2
    message = one_paragraph(result)
    assert f"the model is too large to build: {params} parameters (limit 2,000,000,000) and" in message
    assert "GiB of activations at batch 1" in message and "GRAPHC_MAX_PARAMS" in message
    # train refuses it before it builds anything.
    result = invoke("train", str(path), "--out", str(tmp_path / "runs"), "--epochs", "1", "-q")
    assert result.exit_code == 2 and "too large to build" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_sizes_past_what_a_float_holds_are_still_a_message(write_spec):
    result = invoke("check", str(write_spec(TINY_SPEC.replace("shape = [3, 8, 8]", f"shape = [3, 8, 1{'0' * 200}]"))))
    assert result.exit_code == 2 and "too large to build" in result.stderr


def test_size_limits_can_be_raised_and_count_what_they_say(write_spec, monkeypatch):
    spec = graphc.load_spec(write_spec(TINY_SPEC.replace("channels = [4]", "channels = [1000]")))
    graph = graphc.build_graph(spec)  # 1000 x 4 x 4 features: fine by default
    # Layer outputs of one image: the 3x8x8 input, the 1000x8x8 conv output, its 1000x4x4 pooling,
    # then 4 and 2 logits, 4 bytes each.
    outputs = 4 * (3 * 64 + 1000 * 64 + 1000 * 16 + 4 + 2)
    monkeypatch.setenv("GRAPHC_MAX_ACTIVATION_BYTES", str(outputs - 1))
    with pytest.raises(
        SpecError,
        match=rf"too large to build: {graph.total_params:,} parameters \(limit 2,000,000,000\) "
        r"and 0.3 MiB of activations .* Node 'fine_head' has the most parameters \(64,004\), node "
        r"'trunk' the largest outputs \(0.3 MiB\)",
    ) as info:
        graphc.build_graph(spec)
    assert info.value.node == "trunk"
    monkeypatch.setenv("GRAPHC_MAX_ACTIVATION_BYTES", str(outputs))
    graphc.build_graph(spec)
    monkeypatch.setenv("GRAPHC_MAX_PARAMS", str(graph.total_params - 1))
    with pytest.raises(SpecError, match="too large to build") as info:
        graphc.build_graph(spec)
    assert info.value.node == "fine_head"  # 16,000 x 4 + 4 parameters: more than trunk's 28,000
    monkeypatch.setenv("GRAPHC_MAX_PARAMS", "lots")
    with pytest.raises(SpecError, match="GRAPHC_MAX_PARAMS='lots' is not a positive number"):
        graphc.build_graph(spec)


def resnet50_sized_spec() -> str:
    """ResNet-50's bottleneck stages at 224x224 (no shortcuts): 1x1 / 3x3 / 1x1 blocks of
    [3, 4, 6, 3] x (64, 128, 256, 512) widths, about ResNet-50's parameter count."""
    lines = [
        'name = "r50"',
        "[[nodes]]",
        'name = "image"',
        'kind = "input"',
        "shape = [3, 224, 224]",
        "[[nodes]]",
        'name = "stem"',
        'kind = "conv_block"',
        'input = "image"',
        "channels = [64]",
        "kernel = 7",
        "stride = 2",
        "padding = 3",
        'pool = "max"',
        "pool_size = 2",
    ]
    previous = "stem"
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        for block in range(blocks):
            stride = 2 if block == 0 and stage > 0 else 1
            name = f"s{stage}b{block}"
            lines += [
                "[[nodes]]",
                f'name = "{name}"',
                'kind = "conv_block"',
                f'input = "{previous}"',
                f"channels = [{width}, {width}, {4 * width}]",
                "kernel = [1, 3, 1]",
                f"stride = [1, {stride}, 1]",
                'norm = "batch"',
            ]
            previous = name
    lines += [
        "[[nodes]]",
        'name = "pool"',
        'kind = "conv_block"',
        f'input = "{previous}"',
        "channels = [2048]",
        "kernel = 1",
        'pool = "avg"',
        "pool_size = 7",
        "[[nodes]]",
        'name = "fine_head"',
        'kind = "head"',
        'input = "pool"',
        'task = "fine"',
        "[[nodes]]",
        'name = "coarse_head"',
        'kind = "head"',
        'input = "pool"',
        'task = "coarse"',
        "[data]",
        'dataset = "synthetic"',
    ]
    return "\n".join(lines) + "\n"


def test_a_resnet50_sized_model_is_within_the_limits(write_spec):
    graph = graphc.build_graph(graphc.load_spec(write_spec(resnet50_sized_spec())))
    assert 20_000_000 < graph.total_params < 40_000_000


# --------------------------------------------------------------------------- heads reached, in one pass


def reference_heads(graph: graphc.Graph) -> dict[str, tuple[frozenset, frozenset]]:
    """The facts as build worked them out before (networkx ancestors of each head, with and
    without the edges out of heads): an independent reference for the one-pass version."""
    dag = nx.DiGraph()
    dag.add_nodes_from(n.name for n in graph)
    dag.add_edges_from((i, n.name) for n in graph for i in n.inputs)
    features_only = dag.copy()
    features_only.remove_edges_from([e for h in graph.heads for e in dag.out_edges(h.name)])
    serves = {n.name: set() for n in graph}
    direct = {n.name: set() for n in graph}
    for head in graph.heads:
        for name in nx.ancestors(dag, head.name) | {head.name}:
            serves[name].add(head.attrs["task"])
        for name in nx.ancestors(features_only, head.name) | {head.name}:
            direct[name].add(head.attrs["task"])
    return {name: (frozenset(serves[name]), frozenset(direct[name])) for name in serves}


def chain_with_reuse(length: int) -> str:
    """image -> fc0 -> ... -> fc{length-1}; fine_head reads the chain, coarse_head reads the chain
    and fine_head's logits (cross-task reuse), and a side branch feeds coarse only."""
    lines = ['name = "chain"', "[[nodes]]", 'name = "image"', 'kind = "input"', "shape = [3, 4, 4]"]
    previous = "image"
    for i in range(length):
        lines += ["[[nodes]]", f'name = "fc{i}"', 'kind = "fc_block"', f'input = "{previous}"', "units = [4]"]
        previous = f"fc{i}"
    lines += [
        "[[nodes]]",
        'name = "side"',
        'kind = "fc_block"',
        'input = "fc5"',
        "units = [4]",
        "[[nodes]]",
        'name = "fine_head"',
        'kind = "head"',
        f'input = "{previous}"',
        'task = "fine"',
        "[[nodes]]",
        'name = "join"',
        'kind = "concat"',
        f'inputs = ["{previous}", "fine_head", "side"]',
        "[[nodes]]",
        'name = "coarse_head"',
        'kind = "head"',
        'input = "join"',
        'task = "coarse"',
        "[data]",
        'dataset = "synthetic"',
        "synthetic = { classes = 4, coarse_classes = 2 }",
    ]
    return "\n".join(lines) + "\n"


def test_a_2000_node_chain_gets_the_same_heads_as_before(write_spec):
    graph = graphc.build_graph(graphc.load_spec(write_spec(chain_with_reuse(1995))))
    assert len(graph.nodes) == 2000
    facts = {n.name: (n.heads, n.direct_heads) for n in graph}
    assert facts == reference_heads(graph)
    assert facts["fc0"] == ({"fine", "coarse"}, {"fine", "coarse"})
    assert facts["side"] == ({"coarse"}, {"coarse"})
    assert facts["fine_head"] == ({"fine", "coarse"}, {"fine"})
    assert graph["fc1994"].is_hard_shared and not graph["side"].is_shared


@pytest.mark.parametrize("path", sorted(glob.glob("specs/*.toml") + glob.glob("specs/examples/*.toml")))
def test_shipped_specs_get_the_same_heads_as_before(path):
    graph = graphc.build_graph(graphc.load_spec(path))
    assert {n.name: (n.heads, n.direct_heads) for n in graph} == reference_heads(graph)


def test_a_node_that_reaches_no_head_is_still_found(write_spec):
    text = chain_with_reuse(10).replace(
        '[[nodes]]\nname = "side"',
        '[[nodes]]\nname = "orphan"\nkind = "fc_block"\ninput = "fc3"\nunits = [2]\n\n[[nodes]]\nname = "side"',
    )
    with pytest.raises(SpecError, match="reaches no head") as info:
        graphc.build_graph(graphc.load_spec(write_spec(text)))
    assert info.value.node == "orphan"


def test_the_size_limits_are_documented():
    errors_page = (REPO / "docs" / "errors.md").read_text()
    assert f"{build.MAX_PARAMS:,}" in errors_page and "GRAPHC_MAX_ACTIVATION_BYTES" in errors_page
