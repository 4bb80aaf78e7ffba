"""Head types in the spec and the IR: which fields belong to which type, the outputs each type has,
what a reader of each type's head sees, and the data sets that can serve them."""

from __future__ import annotations

import pytest
import torch

import graphc

TYPED_SPEC = """\
name = "typed"

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
name = "kind_head"
kind = "head"
input = "trunk"
task = "kind"
classes = ["cat", "dog", "ship"]

[[nodes]]
name = "animal_head"
kind = "head"
input = "trunk"
task = "animal"
type = "binary"
pos_weight = 2.0

[[nodes]]
name = "colours_head"
kind = "head"
input = "trunk"
task = "colours"
type = "multilabel"
labels = ["red", "green", "blue"]

[[nodes]]
name = "reader"
kind = "concat"
inputs = ["trunk", "animal_head", "colours_head", "brightness_head"]

[[nodes]]
name = "brightness_head"
kind = "head"
input = "trunk"
task = "brightness"
type = "regression"
outputs = 2
loss = "huber"
{regression_reuse}

[[nodes]]
name = "size_head"
kind = "head"
input = "reader"
task = "size"
type = "regression"
standardize = false

[data]
dataset = "{dataset}"
"""


def typed(write_spec, dataset: str = "table", regression_reuse: str = "", **swap: str) -> graphc.Spec:
    text = TYPED_SPEC.format(dataset=dataset, regression_reuse=regression_reuse)
    for old, new in swap.items():
        text = text.replace(old, new)
    return graphc.load_spec(write_spec(text))


def test_each_type_gets_its_outputs_and_loss(write_spec):
    graph = graphc.build_graph(typed(write_spec))
    heads = {h.attrs["task"]: h.attrs for h in graph.heads}
    assert {t: (a["type"], a["classes"], a["loss"]) for t, a in heads.items()} == {
        "kind": ("classification", 3, "cross_entropy"),
        "animal": ("binary", 1, "bce"),
        "colours": ("multilabel", 3, "bce"),
        "brightness": ("regression", 2, "huber"),
        "size": ("regression", 1, "mse"),
    }
    assert heads["animal"]["pos_weight"] == 2.0
    assert heads["brightness"]["standardize"] is True and heads["size"]["standardize"] is False
    # the reader sees trunk (4 x 4 x 4 = 64 features) + 1 + 3 + 2 outputs
    assert graph["reader"].shape == (64 + 1 + 3 + 2,)


@pytest.mark.parametrize(
    "field, line, head_type",
    [
        ("label_smoothing", "label_smoothing = 0.1", "binary"),
        ("loss", 'loss = "l1"', "binary"),
        ("labels", 'labels = ["a"]', "regression"),
        ("outputs", "outputs = 2", "multilabel"),
        ("pos_weight", "pos_weight = 2.0", "regression"),
        ("standardize", "standardize = true", "classification"),
        ("classes", "classes = 3", "regression"),
    ],
)
def test_a_field_of_another_type_is_refused_naming_both(write_spec, field, line, head_type):
    kind = "" if head_type == "classification" else f'type = "{head_type}"'
    text = f"""\
name = "wrong"
[[nodes]]
name = "image"
kind = "input"
shape = [3, 8, 8]
[[nodes]]
name = "h"
kind = "head"
input = "image"
task = "t"
{kind}
{line}
[data]
dataset = "table"
"""
    with pytest.raises(graphc.SpecError) as caught:
        graphc.load_spec(write_spec(text))
    message = str(caught.value)
    assert f"'{field}' applies to" in message and f"'{head_type}'" in message and "remove" in message


def test_listed_classes_must_be_distinct_names(write_spec):
    with pytest.raises(graphc.SpecError, match="more than once"):
        typed(write_spec, **{'classes = ["cat", "dog", "ship"]': 'classes = ["cat", "dog", "cat"]'})
    with pytest.raises(graphc.SpecError, match="classes"):
        typed(write_spec, **{'classes = ["cat", "dog", "ship"]': 'classes = ["cat", "a;b"]'})


def test_non_classification_heads_need_a_data_set_that_has_such_labels(write_spec):
    with pytest.raises(graphc.SpecError) as caught:
        graphc.build_graph(
            typed(
                write_spec, dataset="synthetic", **{'task = "kind"\nclasses = ["cat", "dog", "ship"]': 'task = "fine"'}
            )
        )
    message = str(caught.value)
    assert "binary head" in message and "synthetic data set has class labels only" in message
    assert 'dataset = "table"' in message


def test_a_table_column_of_auto_classes_needs_the_data_or_the_names(write_spec):
    spec = typed(write_spec, **{'classes = ["cat", "dog", "ship"]': 'classes = "auto"'})
    with pytest.raises(graphc.SpecError) as caught:
        graphc.build_graph(spec)
    assert "classes = [...]" in str(caught.value) and "graphc check --data" in str(caught.value)
    # with the data set's counts (graphc check --data, graphc train) it builds
    counts = {"kind": 3, "animal": 2, "colours": 3, "brightness": 2, "size": 1}
    graph = graphc.build_graph(spec, classes=counts)
    assert graph.head_for("kind").attrs["classes"] == 3


def test_data_read_checks_columns_against_head_types(write_spec):
    spec = typed(write_spec)
    counts = {"kind": 3, "animal": 2, "colours": 3, "brightness": 2, "size": 1}
    types = {"animal": "binary", "colours": "multilabel", "brightness": "regression", "size": "regression"}
    graphc.build_graph(spec, classes=counts, types=types)
    with pytest.raises(graphc.SpecError, match="'brightness' cells hold 3"):
        graphc.build_graph(spec, classes={**counts, "brightness": 3}, types=types)
    with pytest.raises(graphc.SpecError, match="binary head, but the data set's 'animal' labels have 5 classes"):
        graphc.build_graph(spec, classes={**counts, "animal": 5}, types={**types, "animal": "classification"})
    # a run's record gives each head's outputs (a binary head's 1): its graph rebuilds from them
    record_counts = {"kind": 3, "animal": 1, "colours": 3, "brightness": 2, "size": 1}
    assert graphc.build_graph(spec, classes=record_counts).head_for("animal").attrs["classes"] == 1
    with pytest.raises(graphc.SpecError, match="regression head, but the data set's 'size' labels are classification"):
        graphc.build_graph(spec, classes=counts, types={**types, "size": "classification"})
    with pytest.raises(graphc.SpecError, match="no such label field"):
        graphc.build_graph(spec, classes={k: v for k, v in counts.items() if k != "size"}, types=types)


def test_readers_see_probabilities_by_type(write_spec):
    spec = typed(write_spec, regression_reuse='reuse_as = "probabilities"')
    spec = graphc.load_spec(
        write_spec(
            spec.text.replace(
                'type = "binary"\npos_weight = 2.0', 'type = "binary"\npos_weight = 2.0\nreuse_as = "probabilities"'
            ).replace(
                'labels = ["red", "green", "blue"]', 'labels = ["red", "green", "blue"]\nreuse_as = "probabilities"'
            )
        )
    )
    graph = graphc.build_graph(spec)
    model = graphc.compile_graph(graph, seed=0).eval()
    seen = {}
    model.get_submodule("size_head").register_forward_pre_hook(lambda module, args: seen.update(x=args[0]))
    with torch.no_grad():
        outputs = model(torch.rand(5, 3, 8, 8))
    reader = seen["x"]  # trunk (64), animal (1), colours (3), brightness (2)
    assert torch.allclose(reader[:, 64:65], torch.sigmoid(outputs["animal"]))
    assert torch.allclose(reader[:, 65:68], torch.sigmoid(outputs["colours"]))
    assert torch.allclose(reader[:, 68:70], outputs["brightness"])  # a regression output is read as it is
