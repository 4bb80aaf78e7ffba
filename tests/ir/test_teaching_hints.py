"""Hints that name the real cause (issue 24): a residual sum of maps of different sizes names the
node where the sizes part and what in it did (its pool, stride or padding, and the template that
set it); a reference suggests a node of the kind the field expects (a task's name points to its
head, a head's name in a metric to its task)."""

from __future__ import annotations

import pytest

import graphc
from graphc.errors import SpecError
from tests.ir.test_build import REUSE_SPEC

RESIDUAL = """\
name = "residual"

[templates.down]
kind = "conv_block"
channels = [8]
pool = "max"

[[nodes]]
name = "image"
kind = "input"
shape = [3, 16, 16]

[[nodes]]
name = "stem"
kind = "conv_block"
input = "image"
channels = [8]

[[nodes]]
name = "branch"
use = "down"
input = "stem"

[[nodes]]
name = "branch2"
kind = "conv_block"
input = "branch"
channels = [8]

[[nodes]]
name = "join"
kind = "concat"
mode = "sum"
inputs = ["stem", "branch2"]

[[nodes]]
name = "fine_head"
kind = "head"
input = "join"
task = "fine"

[[nodes]]
name = "coarse_head"
kind = "head"
input = "join"
task = "coarse"

[data]
dataset = "synthetic"
synthetic = { classes = 4, coarse_classes = 2 }
"""


def spec_error(write_spec, text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        graphc.build_graph(graphc.load_spec(write_spec(text)))
    return info.value


def test_a_sum_names_the_template_pool_where_the_sizes_part(write_spec):
    error = spec_error(write_spec, RESIDUAL)
    assert error.node == "join" and error.field == "inputs"
    assert (
        "The sizes part at 'branch': its pool = \"max\" (pool_size 2, set by template 'down') turns 16x16 into 8x8."
        in str(error)
    )
    assert error.hint.startswith("if that is not meant, set pool = \"none\" in template 'down' (or on 'branch'")
    assert "stride = 2" in error.hint  # the projection, when the pooling is meant
    # the order of the inputs does not matter
    swapped = spec_error(write_spec, RESIDUAL.replace('["stem", "branch2"]', '["branch2", "stem"]'))
    assert "The sizes part at 'branch'" in str(swapped)


@pytest.mark.parametrize(
    "edit, cause, fix",
    [
        (
            ('use = "down"', 'kind = "conv_block"\nchannels = [8]\nstride = 2'),
            "its stride 2",
            "set stride = 1 on 'branch'",
        ),
        (
            ('use = "down"', 'kind = "conv_block"\nchannels = [8, 8]\nstride = [1, 2]'),
            "its convolution 2's stride 2",
            "set stride = 1 on 'branch'",
        ),
        (
            ('use = "down"', 'kind = "conv_block"\nchannels = [8]\npadding = "valid"'),
            "its padding 0 with kernel 3",
            'set padding = "same"',
        ),
        (('use = "down"', 'kind = "pool"\npool = "avg"'), 'its pool = "avg" (pool_size 2)', "remove 'branch'"),
        (
            ('use = "down"', 'use = "down"\npool = "global_max"'),
            'its pool = "global_max" turns 16x16 into 1x1',
            'set pool = "none" on',
        ),
    ],
)
def test_a_sum_names_the_stride_padding_or_pool_that_parts_the_sizes(write_spec, edit, cause, fix):
    error = spec_error(write_spec, RESIDUAL.replace(*edit))
    assert f"The sizes part at 'branch': {cause}" in str(error), str(error)
    assert fix in error.hint and "template" not in str(error)


def test_a_sum_whose_maps_differ_only_in_channels_keeps_the_projection_hint(write_spec):
    text = RESIDUAL.replace('use = "down"', 'kind = "conv_block"\nchannels = [8]')
    text = text.replace('input = "branch"\nchannels = [8]', 'input = "branch"\nchannels = [16]')
    error = spec_error(write_spec, text)
    assert "The sizes part" not in str(error)
    assert error.hint.startswith("add a projection: a conv_block reading 'stem' with channels = [16], kernel = 1,")


def test_a_task_name_where_a_node_is_read_points_to_the_head_of_that_task(write_spec):
    text = REUSE_SPEC.replace('inputs = ["fine_fc", "coarse_head"]', 'inputs = ["fine_fc", "coarse"]')
    error = spec_error(write_spec, text)
    assert error.node == "fine_concat" and error.field == "inputs"
    assert "'coarse' is the task of head 'coarse_head'" in error.hint and "write 'coarse_head'" in error.hint
    assert "coarse_fc" not in error.hint  # not the fc node spelt alike
    # a misspelt node name still gets the nearest name
    text = REUSE_SPEC.replace('inputs = ["fine_fc", "coarse_head"]', 'inputs = ["fine_fcc", "coarse_head"]')
    assert spec_error(write_spec, text).hint == "did you mean 'fine_fc'?"


def test_a_head_name_where_a_task_is_watched_points_to_its_task(write_spec):
    text = REUSE_SPEC.replace("[data]", '[train]\nselect = { metric = "val/coarse_head/acc", mode = "max" }\n\n[data]')
    error = spec_error(write_spec, text)
    assert error.field == "train.select.metric" and error.line is not None
    assert error.hint == "'coarse_head' is a head; metrics are named by the task it predicts: 'val/coarse/acc'."
