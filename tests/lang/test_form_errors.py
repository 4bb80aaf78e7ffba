"""Form validation: every malformed spec gives one clear message naming file, line, node and field."""

from __future__ import annotations

import json

import pytest

import graphc
from graphc.lang.spec import ConvBlockNode, HeadNode, json_schema
from tests.conftest import TINY_SPEC


def spec_error(write_spec, text: str) -> graphc.SpecError:
    path = write_spec(text)
    with pytest.raises(graphc.SpecError) as info:
        graphc.build_graph(graphc.load_spec(path))
    assert str(path) in str(info.value)  # every message names the file
    return info.value


def test_tiny_spec_loads_with_defaults(write_spec):
    spec = graphc.load_spec(write_spec(TINY_SPEC))
    assert spec.name == "tiny"
    trunk = spec.nodes[1]
    assert isinstance(trunk, ConvBlockNode)
    assert trunk.per_layer("kernel") == [3] and trunk.padding == "same" and trunk.norm == "none"
    head = spec.nodes[2]
    assert isinstance(head, HeadNode) and head.classes == "auto" and head.loss_weight == 1.0
    assert spec.train.optimizer.name == "adam" and spec.data.augment.preset == "none"
    assert len(spec.sha256) == 64


def test_name_defaults_to_file_stem(write_spec):
    spec = graphc.load_spec(write_spec(TINY_SPEC.replace('name = "tiny"\n', ""), name="my_model"))
    assert spec.name == "my_model"


def test_templates_fill_fields_and_nodes_override_them(write_spec):
    text = TINY_SPEC.replace(
        '[[nodes]]\nname = "trunk"\nkind = "conv_block"\ninput = "image"\nchannels = [4]\npool = "max"\n',
        '[templates.block]\nkind = "conv_block"\nchannels = [4, 4]\npool = "max"\nnorm = "batch"\n\n'
        '[[nodes]]\nname = "trunk"\nuse = "block"\ninput = "image"\nchannels = [6]\n',
    )
    spec = graphc.load_spec(write_spec(text))
    trunk = spec.nodes[1]
    assert trunk.channels == [6] and trunk.norm == "batch" and trunk.pool == "max"


def test_toml_syntax_error_has_line_and_column(write_spec):
    error = spec_error(write_spec, TINY_SPEC.replace('name = "image"', 'name = "image'))
    assert error.line == 4 and error.first.column is not None
    assert "TOML syntax error" in str(error) and f":4:{error.first.column}:" in str(error)


def test_empty_file(write_spec):
    error = spec_error(write_spec, "  \n")
    assert "empty" in str(error) and error.hint


def test_missing_file(tmp_path):
    with pytest.raises(graphc.SpecError, match="no such file"):
        graphc.load_spec(tmp_path / "absent.toml")


def test_unknown_node_kind_suggests_the_closest(write_spec):
    error = spec_error(write_spec, TINY_SPEC.replace('kind = "conv_block"', 'kind = "conv_blok"'))
    assert error.node == "trunk" and error.field == "kind" and error.line == 10
    assert "unknown node kind 'conv_blok'" in str(error) and "did you mean 'conv_block'" in str(error)


def test_unknown_field_suggests_the_closest(write_spec):
    error = spec_error(write_spec, TINY_SPEC.replace("pool = ", "pool_size = 2\npoool = "))
    problem = next(p for p in error.problems if p.field == "poool")
    assert problem.node == "trunk" and problem.line == 14
    assert "unknown field 'poool'" in str(problem) and "did you mean 'pool'" in str(problem)


def test_missing_required_field(write_spec):
    error = spec_error(write_spec, TINY_SPEC.replace("channels = [4]\n", ""))
    assert error.node == "trunk" and error.field == "channels"
    assert "missing required field 'channels'" in str(error)
    assert "Output channels" in error.hint  # the hint explains the field


@pytest.mark.parametrize(
    "old, new, field, words",
    [
        ("channels = [4]", "channels = [-4]", "channels[0]", "greater than 0; found -4"),
        ("channels = [4]", 'channels = "64"', "channels", "valid list; found '64'"),
        ('pool = "max"', 'pool = "max"\ndropout = 1.5', "dropout", "less than 1; found 1.5"),
        (
            'task = "fine"',
            'task = "fine"\nclasses = 0',
            "classes",
            "greater than 0, or input should be 'auto', or input should be a valid list; found 0",
        ),
        ("shape = [3, 8, 8]", 'shape = "big"', "shape", "valid tuple; found 'big'"),
    ],
)
def test_wrong_type_or_out_of_range(write_spec, old, new, field, words):
    error = spec_error(write_spec, TINY_SPEC.replace(old, new, 1))
    assert error.field == field and words in str(error)
    assert error.line is not None and error.hint


def test_per_layer_lists_must_match_the_layer_count(write_spec):
    error = spec_error(write_spec, TINY_SPEC.replace("channels = [4]", "channels = [4]\nkernel = [3, 5]"))
    assert error.node == "trunk" and "'kernel' lists 2 values but 'channels' has 1 layers" in str(error)


def test_undefined_template(write_spec):
    error = spec_error(write_spec, TINY_SPEC.replace('kind = "conv_block"', 'use = "blok"\nkind = "conv_block"'))
    assert error.node == "trunk" and error.field == "use" and "not defined" in str(error)


def test_reserved_node_name(write_spec):
    error = spec_error(write_spec, TINY_SPEC.replace('"trunk"', '"forward"'))
    assert "reserved" in str(error) and error.field == "name"


def test_errors_in_data_and_train_tables_name_the_dotted_field(write_spec):
    text = TINY_SPEC + '\n[train]\noptimizer = { name = "adam", lr = -1 }\nearly_stopping = { metric = "test/loss" }\n'
    error = spec_error(write_spec, text)
    fields = {p.field for p in error.problems}
    assert fields == {"train.optimizer.lr", "train.early_stopping.metric"}
    assert "never for model selection" in str(error)


def test_schema_documents_every_field():
    schema = json_schema()
    json.dumps(schema)  # serialisable
    assert set(schema["properties"]) == {"name", "description", "layers", "templates", "nodes", "data", "train"}
    conv = schema["$defs"]["ConvBlockNode"]
    assert conv["additionalProperties"] is False
    undocumented = [
        (model, field)
        for model, definition in schema["$defs"].items()
        for field, prop in definition.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert undocumented == []


def test_a_field_named_like_a_node_kind_keeps_its_name(write_spec):
    # 'input' is both a node kind and a field; a wrong value must still name the field and its line.
    error = spec_error(write_spec, TINY_SPEC.replace('input = "trunk"', "input = 5", 1))
    assert error.node == "fine_head" and error.field == "input" and error.line == 18
    assert "valid string; found 5" in str(error)


def test_a_list_item_that_fits_no_member_is_reported_once_at_the_item(write_spec):
    error = spec_error(write_spec, TINY_SPEC.replace("channels = [4]", 'channels = [4, 4]\npadding = ["same", -1]'))
    assert [p.field for p in error.problems] == ["padding[1]"]
    assert "greater than or equal to 0; found -1" in str(error)


def test_a_tuple_with_too_few_values_names_the_tuple(write_spec):
    error = spec_error(write_spec, TINY_SPEC.replace("shape = [3, 8, 8]", "shape = [3, 8]"))
    assert error.node == "image" and error.field == "shape" and error.line == 6
    assert "value 3 is missing; found [3, 8]" in str(error) and "[channels, height, width]" in error.hint


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_infinite_and_nan_numbers_are_rejected(write_spec, value):
    error = spec_error(write_spec, TINY_SPEC.replace('task = "fine"', f'task = "fine"\nloss_weight = {value}'))
    assert error.node == "fine_head" and error.field == "loss_weight"
    assert f"finite number; found {value}" in str(error)


def test_a_template_that_is_not_a_table(write_spec):
    text = "[templates]\nblock = 5\n\n" + TINY_SPEC.replace('kind = "conv_block"', 'use = "block"\nkind = "conv_block"')
    error = spec_error(write_spec, text.replace('name = "tiny"\n', ""))
    assert error.node == "trunk" and error.field == "use" and "'block', which is not a table" in str(error)


def test_chained_templates_are_refused_not_dropped(write_spec):
    text = TINY_SPEC.replace(
        "[data]",
        '[templates.base]\nkind = "conv_block"\nchannels = [4]\n\n[templates.pooled]\nuse = "base"\npool = "max"\n\n[data]',
    )
    error = spec_error(write_spec, text)
    assert error.field == "templates.pooled.use" and "cannot be chained" in str(error)
    assert error.line == text.splitlines().index('use = "base"') + 1


def test_a_kind_that_is_not_a_string_is_a_spec_error(write_spec):
    error = spec_error(write_spec, TINY_SPEC.replace('kind = "input"', 'kind = ["input"]'))
    assert error.node == "image" and error.field == "kind" and "did you mean 'input'" in str(error)


def test_a_byte_order_mark_is_tolerated(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + TINY_SPEC.encode())
    assert graphc.load_spec(path).name == "tiny"


def test_spec_name_errors_say_where_the_name_came_from(write_spec):
    error = spec_error(write_spec, TINY_SPEC.replace('name = "tiny"', 'name = "my model"'))
    assert error.field == "name" and error.line == 1 and "'.' and '-'" in error.hint
    unnamed = write_spec(TINY_SPEC.replace('name = "tiny"\n', ""), name="my model")
    with pytest.raises(graphc.SpecError) as info:
        graphc.load_spec(unnamed)
    assert info.value.field == "name" and "named after its file" in info.value.hint


def test_unknown_fields_of_tagged_tables_are_checked_against_the_chosen_member(write_spec):
    text = TINY_SPEC.replace("[data]", '[train]\noptimizer = { name = "sgd", nesterv = true }\n\n[data]')
    text += 'augment = { preset = "flip_crop", paddng = 4 }\n'
    error = spec_error(write_spec, text)
    hints = {p.field: p.hint for p in error.problems}
    assert hints == {
        "train.optimizer.nesterv": "did you mean 'nesterov'?",
        "data.augment.paddng": "did you mean 'padding'?",
    }


@pytest.mark.parametrize("groups, field", [("{}", "data.hierarchy.coarse"), ("{ a = [] }", "data.hierarchy.coarse.a")])
def test_an_empty_hierarchy_group_cannot_give_a_head_zero_classes(write_spec, groups, field):
    data = f'[data]\ndataset = "imagefolder"\nroot = "x"\n[data.hierarchy]\ncoarse = {groups}\n'
    error = spec_error(write_spec, TINY_SPEC.split("[data]")[0] + data)
    assert error.field == field and "at least 1 item" in str(error)


def test_a_template_cannot_set_a_name(write_spec):
    text = TINY_SPEC.replace("[data]", '[templates.t]\nname = "same"\nkind = "head"\n\n[data]')
    error = spec_error(write_spec, text)
    assert error.field == "templates.t.name" and "belongs to one node" in str(error)
