"""Meaning validation and the IR: references, cycles, dead ends, shapes, class counts, sharing."""

from __future__ import annotations

import dataclasses

import pytest

import graphc
from tests.conftest import TINY_SPEC

REUSE_SPEC = """\
name = "reuse"

[[nodes]]
name = "image"
kind = "input"
shape = [3, 8, 8]

[[nodes]]
name = "trunk"
kind = "conv_block"
input = "image"
channels = [4]
pool = "max"

[[nodes]]
name = "fine_fc"
kind = "fc_block"
input = "trunk"
units = [6]

[[nodes]]
name = "fine_concat"
kind = "concat"
inputs = ["fine_fc", "coarse_head"]

[[nodes]]
name = "fine_head"
kind = "head"
input = "fine_concat"
task = "fine"

[[nodes]]
name = "coarse_fc"
kind = "fc_block"
input = "trunk"
units = [5]

[[nodes]]
name = "coarse_head"
kind = "head"
input = "coarse_fc"
task = "coarse"

[data]
dataset = "synthetic"
synthetic = { classes = 4, coarse_classes = 2 }
"""


def build(write_spec, text: str) -> graphc.Graph:
    return graphc.build_graph(graphc.load_spec(write_spec(text)))


def build_error(write_spec, text: str) -> graphc.SpecError:
    with pytest.raises(graphc.SpecError) as info:
        build(write_spec, text)
    return info.value


def test_ir_is_topological_immutable_and_complete(write_spec):
    graph = build(write_spec, REUSE_SPEC)
    names = [n.name for n in graph]
    # fine_concat reads coarse_head, which the spec lists later: build must reorder.
    assert names.index("coarse_head") < names.index("fine_concat")
    for node in graph:
        assert all(names.index(i) < names.index(node.name) for i in node.inputs)
    assert graph.tasks == ("fine", "coarse")  # spec order, not topological order
    with pytest.raises(dataclasses.FrozenInstanceError):
        graph["trunk"].shape = (1,)
    with pytest.raises(TypeError):
        graph["trunk"].attrs["channels"] = (9,)
    trunk = graph["trunk"]
    assert trunk.shape == (4, 4, 4) and trunk.num_params == 3 * 4 * 9 + 4
    assert graph["fine_concat"].shape == (6 + 2,)
    assert graph["fine_head"].attrs["classes"] == 4 and graph["coarse_head"].attrs["classes"] == 2


def test_heads_served_distinguish_hard_sharing_from_reuse(write_spec):
    graph = build(write_spec, REUSE_SPEC)
    assert graph["trunk"].heads == {"fine", "coarse"} and graph["trunk"].is_hard_shared
    coarse_fc = graph["coarse_fc"]
    assert coarse_fc.heads == {"fine", "coarse"} and coarse_fc.direct_heads == {"coarse"}
    assert coarse_fc.reused_by == {"fine"} and coarse_fc.is_shared and not coarse_fc.is_hard_shared
    assert graph["fine_fc"].heads == {"fine"}
    assert graph.hard_shared_params == graph["trunk"].num_params
    assert graph.shared_params == sum(graph[n].num_params for n in ("trunk", "coarse_fc", "coarse_head"))


def test_dangling_reference_suggests_the_closest_name(write_spec):
    error = build_error(write_spec, TINY_SPEC.replace('input = "trunk"', 'input = "trunc"', 1))
    assert error.node == "fine_head" and error.field == "input" and error.line == 18
    assert "reads 'trunc', but there is no node of that name" in str(error)
    assert "did you mean 'trunk'" in str(error)


def test_duplicate_node_names(write_spec):
    error = build_error(write_spec, TINY_SPEC.replace('name = "coarse_head"', 'name = "fine_head"'))
    assert error.node == "fine_head" and error.field == "name" and error.line == 22
    assert "duplicate node name" in str(error) and "#3" in str(error)


def test_cycle_prints_its_path(write_spec):
    text = TINY_SPEC.replace('input = "image"', 'input = "fine_head"')
    error = build_error(write_spec, text)
    assert "cycle: trunk -> fine_head -> trunk" in str(error) or "cycle: fine_head -> trunk -> fine_head" in str(error)
    assert error.node in ("trunk", "fine_head")


def test_node_that_reaches_no_head(write_spec):
    text = TINY_SPEC.replace(
        "[data]", '[[nodes]]\nname = "orphan"\nkind = "fc_block"\ninput = "trunk"\nunits = [3]\n\n[data]'
    )
    error = build_error(write_spec, text)
    assert error.node == "orphan" and "reaches no head" in str(error) and error.hint


def test_no_input_and_no_head(write_spec):
    no_head = TINY_SPEC.split('[[nodes]]\nname = "fine_head"')[0] + '[data]\ndataset = "synthetic"\n'
    error = build_error(write_spec, no_head)
    assert "no head" in str(error)
    no_input = TINY_SPEC.replace(
        'kind = "input"\nshape = [3, 8, 8]', 'kind = "conv_block"\ninput = "trunk"\nchannels = [3]'
    )
    error = build_error(write_spec, no_input)
    assert "no input node" in str(error)


def test_two_heads_for_one_task(write_spec):
    error = build_error(write_spec, TINY_SPEC.replace('task = "coarse"', 'task = "fine"'))
    assert error.node == "coarse_head" and error.field == "task"
    assert "two heads predict task 'fine': 'fine_head' and 'coarse_head'" in str(error)


def test_concat_of_incompatible_shapes(write_spec):
    text = TINY_SPEC.replace(
        '[[nodes]]\nname = "fine_head"\nkind = "head"\ninput = "trunk"',
        '[[nodes]]\nname = "joined"\nkind = "concat"\ninputs = ["trunk", "image"]\nmode = "channels"\n\n'
        '[[nodes]]\nname = "fine_head"\nkind = "head"\ninput = "joined"',
    )
    error = build_error(write_spec, text)
    assert error.node == "joined" and error.field == "inputs"
    assert (
        "one height and width" in str(error) and "'trunk' [4, 4, 4]" in str(error) and "'image' [3, 8, 8]" in str(error)
    )
    # In the default 'features' mode both are flattened, so the same inputs fit.
    graph = build(write_spec, text.replace('mode = "channels"\n', ""))
    assert graph["joined"].shape == (4 * 4 * 4 + 3 * 8 * 8,)


def test_concat_channels_of_a_vector(write_spec):
    text = REUSE_SPEC.replace(
        'inputs = ["fine_fc", "coarse_head"]', 'inputs = ["trunk", "coarse_head"]\nmode = "channels"'
    )
    text = text.replace(
        'name = "fine_fc"\nkind = "fc_block"\ninput = "trunk"\nunits = [6]',
        'name = "fine_fc"\nkind = "fc_block"\ninput = "fine_concat"\nunits = [6]',
    )
    text = text.replace('input = "fine_concat"\ntask', 'input = "fine_fc"\ntask')
    error = build_error(write_spec, text)
    assert "'coarse_head' gives a vector [2]" in str(error)


def test_conv_block_reading_a_vector(write_spec):
    text = REUSE_SPEC.replace(
        'name = "coarse_fc"\nkind = "fc_block"\ninput = "trunk"\nunits = [5]',
        'name = "coarse_fc"\nkind = "conv_block"\ninput = "fine_fc"\nchannels = [5]',
    )
    error = build_error(write_spec, text)
    assert error.node == "coarse_fc" and "needs a feature map [C, H, W], found a vector [6]" in str(error)


def test_pooling_that_collapses_the_map(write_spec):
    error = build_error(write_spec, TINY_SPEC.replace("shape = [3, 8, 8]", "shape = [3, 1, 1]"))
    assert error.node == "trunk" and error.field == "pool"
    assert "max-pooling 2x2 of a 1x1 map collapses it to 0x0" in str(error)


def test_valid_convolution_that_leaves_nothing(write_spec):
    text = TINY_SPEC.replace("channels = [4]", 'channels = [4]\nkernel = 9\npadding = "valid"')
    error = build_error(write_spec, text)
    assert "leaves nothing" in str(error) and error.node == "trunk"


def test_head_class_count_contradicting_the_data_set(write_spec):
    error = build_error(write_spec, TINY_SPEC.replace('task = "fine"', 'task = "fine"\nclasses = 5'))
    assert error.node == "fine_head" and error.field == "classes"
    assert "declares 5 classes for task 'fine', but the synthetic data set has 4" in str(error)
    assert "classes = 4" in error.hint


def test_class_counts_read_from_the_data_override_the_table(write_spec):
    spec = graphc.load_spec(write_spec(TINY_SPEC))
    graph = graphc.build_graph(spec, classes={"fine": 7, "coarse": 3})
    assert [h.attrs["classes"] for h in graph.heads] == [7, 3]
    with pytest.raises(graphc.SpecError, match="no such label field"):
        graphc.build_graph(spec, classes={"fine": 7})


def test_head_task_missing_from_the_data_set(write_spec):
    error = build_error(write_spec, TINY_SPEC.replace('task = "coarse"', 'task = "coarce"'))
    assert "has no such label field" in str(error) and "did you mean 'coarse'" in str(error)


def test_imagefolder_class_counts_come_from_the_hierarchy(write_spec):
    text = TINY_SPEC.replace(
        '[data]\ndataset = "synthetic"\nsynthetic = { classes = 4, coarse_classes = 2 }',
        '[data]\ndataset = "imagefolder"\nroot = "x"\n[data.hierarchy.coarse]\nvehicle = ["car", "ship", "plane"]\nanimal = ["cat", "dog"]',
    )
    graph = build(write_spec, text)
    assert [h.attrs["classes"] for h in graph.heads] == [5, 2]
    no_hierarchy = (
        text.split("[data.hierarchy.coarse]")[0]
        .replace('task = "coarse"', 'task = "fine"')
        .replace('[[nodes]]\nname = "coarse_head"\nkind = "head"\ninput = "trunk"\ntask = "fine"\n', "")
    )
    error = build_error(write_spec, no_hierarchy)
    assert "known only from its folders" in str(error)


def test_reference_specs_build():
    for name in (
        "independent",
        "shared_conv",
        "reuse_coarse",
        "reuse_fine",
        "shared_reuse_coarse",
        "shared_reuse_fine",
    ):
        graph = graphc.build_graph(graphc.load_spec(f"specs/{name}.toml"))
        assert graph.tasks == ("fine", "coarse")


def test_watched_metric_of_a_task_no_head_predicts(write_spec):
    text = TINY_SPEC + '\n[train]\nselect = { metric = "val/fien/acc", mode = "max" }\n'
    error = build_error(write_spec, text)
    assert error.field == "train.select.metric" and "no head predicts task 'fien'" in str(error)
    assert "did you mean 'fine'" in str(error)


def test_normalisation_must_fit_the_input_channels(write_spec):
    text = TINY_SPEC.replace("[data]", "[data]\nnormalize = { mean = [0.5, 0.5], std = [0.25] }")
    error = build_error(write_spec, text)
    assert error.field == "data.normalize.mean" and "has 2 values, but the input has 3 channels" in str(error)
    assert build(write_spec, TINY_SPEC.replace("[data]", "[data]\nnormalize = { mean = [0.5], std = [0.2, 0.2, 0.2] }"))


def test_init_map_names_nodes_of_this_spec_with_parameters(write_spec):
    # graphc check refuses what graphc train would: the new side of the map needs no source run.
    text = TINY_SPEC + '\n[train]\ninit_map = { trunc = "trunk" }\n'
    error = build_error(write_spec, text)
    assert error.field == "train.init_map" and "names node 'trunc', but spec 'tiny' has no node of that name" in str(
        error
    )
    assert (
        "did you mean 'trunk'" in str(error)
        and error.line == text.splitlines().index('init_map = { trunc = "trunk" }') + 1
    )
    error = build_error(write_spec, text.replace("trunc =", "image ="))
    assert "'image', an input node, which has no parameters to load" in str(error)
    assert build(write_spec, text.replace("trunc =", "trunk ="))


def test_parameter_counts_with_a_frozen_node(write_spec):
    # total_params counts every parameter; trainable_params and frozen_params split it.
    graph = build(write_spec, TINY_SPEC.replace('pool = "max"', 'pool = "max"\ntrainable = false'))
    trunk = graph["trunk"].num_params
    assert trunk > 0 and graph.frozen_params == trunk
    assert graph.trainable_params == graph.total_params - trunk == sum(n.num_params for n in graph if n.kind == "head")
