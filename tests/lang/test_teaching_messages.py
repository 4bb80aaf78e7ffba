"""Messages that teach rather than mislead (issue 24): a list of nodes given to a kind that reads
one says that reading several needs a concat node; problems the data's checks find get the
spec's file and line."""

from __future__ import annotations

import pytest

import graphc
from graphc.errors import Problem, SpecError
from graphc.lang.load import locate
from tests.conftest import TINY_SPEC

TWO_INPUTS = 'inputs = ["trunk", "image"]'


def spec_error(write_spec, text: str) -> SpecError:
    path = write_spec(text)
    with pytest.raises(SpecError) as info:
        graphc.build_graph(graphc.load_spec(path))
    return info.value


@pytest.mark.parametrize(
    "node, replace, kind",
    [
        ("fine_head", 'input = "trunk"\ntask = "fine"', "head"),
        ("trunk", 'input = "image"', "conv_block"),
    ],
)
def test_inputs_on_a_kind_that_reads_one_node_says_to_join_them_with_a_concat(write_spec, node, replace, kind):
    by = replace.replace('input = "trunk"', TWO_INPUTS).replace('input = "image"', TWO_INPUTS)
    error = spec_error(write_spec, TINY_SPEC.replace(replace, by, 1))
    (problem,) = error.problems  # not also "missing required field 'input'": one mistake, one message
    assert problem.node == node and problem.field == "inputs" and problem.line is not None
    assert f"this {kind} reads one node" in problem.message and "needs a concat node" in problem.message
    assert 'kind = "concat", inputs = ["trunk", "image"]' in problem.hint and 'input = "joined"' in problem.hint
    assert "did you mean" not in problem.hint


def test_a_list_given_to_input_says_the_same_not_a_valid_string(write_spec):
    error = spec_error(
        write_spec, TINY_SPEC.replace('input = "trunk"\ntask = "fine"', 'input = ["trunk", "image"]\ntask = "fine"')
    )
    (problem,) = error.problems
    assert problem.field == "input" and "valid string" not in str(problem)
    assert "found a list ['trunk', 'image']" in problem.message and "needs a concat node" in problem.message
    assert 'inputs = ["trunk", "image"]' in problem.hint


@pytest.mark.parametrize("written", ['inputs = ["image"]', 'input = ["image"]'])
def test_one_node_in_a_list_is_written_as_input(write_spec, written):
    (problem,) = spec_error(write_spec, TINY_SPEC.replace('input = "image"', written, 1)).problems
    assert problem.node == "trunk" and problem.hint == 'write input = "image".'


def test_a_fc_block_or_a_template_with_inputs_gets_the_concat_hint(write_spec):
    fc = TINY_SPEC.replace(
        '[[nodes]]\nname = "fine_head"\nkind = "head"\ninput = "trunk"',
        '[[nodes]]\nname = "fc"\nkind = "fc_block"\ninputs = ["trunk", "image"]\nunits = [4]\n\n'
        '[[nodes]]\nname = "fine_head"\nkind = "head"\ninput = "fc"',
    )
    (problem,) = spec_error(write_spec, fc).problems
    assert problem.node == "fc" and "this fc_block reads one node" in problem.message
    template = TINY_SPEC.replace(
        'name = "tiny"\n', 'name = "tiny"\n\n[templates.dense]\nkind = "fc_block"\ninputs = ["a", "b"]\n'
    )
    (problem,) = spec_error(write_spec, template).problems
    assert problem.field == "templates.dense.inputs" and 'inputs = ["a", "b"]' in problem.hint


def test_a_concat_still_reads_inputs(write_spec):
    text = TINY_SPEC.replace(
        '[[nodes]]\nname = "fine_head"\nkind = "head"\ninput = "trunk"',
        '[[nodes]]\nname = "joined"\nkind = "concat"\ninputs = ["trunk", "image"]\n\n'
        '[[nodes]]\nname = "fine_head"\nkind = "head"\ninput = "joined"',
    )
    graph = graphc.build_graph(graphc.load_spec(write_spec(text)))
    assert graph["joined"].shape == (4 * 4 * 4 + 3 * 8 * 8,)


def test_data_problems_get_the_spec_file_and_the_line_of_their_field(write_spec):
    text = TINY_SPEC.replace(
        'dataset = "synthetic"', 'dataset = "imagefolder"\nresize = [16, 16]\nhierarchy = { coarse = { a = ["x"] } }'
    )
    path = write_spec(text)
    spec = graphc.load_spec(path)
    lines = text.splitlines()
    error = SpecError(
        [
            Problem("resize disagrees.", field="resize"),
            Problem("the images disagree.", field="shape"),
            Problem("a group is off.", field="hierarchy.coarse"),
            Problem("already located.", file=path, line=1, field="resize"),
        ]
    )
    located = locate(error, spec).problems
    assert all(p.file == path for p in located)
    assert lines[located[0].line - 1].startswith("resize = ")
    assert lines[located[1].line - 1].startswith("shape = ")  # the input node's shape
    assert lines[located[2].line - 1].startswith("hierarchy = ")
    assert located[3].line == 1 and [p.message for p in located] == [p.message for p in error.problems]
