"""The node-kind registry: every kind of the spec language has an entry in every layer's table.

One table per layer, each in its own layer (the one-way imports hold):

- the spec language: ``graphc.lang.spec.NODE_KINDS`` (the pydantic model and the words of other
  frameworks for what the kind does; the discriminated union and the hints' kind lists follow);
- the IR: ``graphc.ir.kinds.KINDS`` (resolution, shape, parameter count, layer outputs);
- PyTorch: ``graphc.backends.pytorch.compile.LOWERINGS`` (a module or fx calls);
- diagrams: ``graphc.backends.diagram.style.KIND_STYLES`` (colours, key parameters, collapsibility).

ONNX has no table: torch's exporter traces whatever the PyTorch table builds (the parity tests
in tests/backends/test_node_kinds.py and tests/runtime/test_export.py check the result).
A kind missing from a table fails here, not as an AssertionError at compile time or a grey box.
"""

from __future__ import annotations

from typing import get_args

import pytest

from graphc.backends.diagram.collapse import COLLAPSIBLE
from graphc.backends.diagram.style import KIND_COLORS, KIND_LABELS, KIND_STYLES, kind_colors
from graphc.backends.pytorch.compile import LOWERINGS, lowering
from graphc.ir.kinds import KINDS, layer_outputs, rules
from graphc.lang.hints import GENERAL_HINTS, KIND_WORDS, hint_for
from graphc.lang.spec import NODE_CLASSES, NODE_KINDS, json_schema

LANGUAGE = list(NODE_KINDS)
TABLES = {
    "graphc.ir.kinds.KINDS": KINDS,
    "graphc.backends.pytorch.compile.LOWERINGS": LOWERINGS,
    "graphc.backends.diagram.style.KIND_STYLES": KIND_STYLES,
}


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_kind_of_the_language_has_an_entry_in_every_table(table):
    entries = TABLES[table]
    assert list(entries) == LANGUAGE, (
        f"{table}: missing {set(LANGUAGE) - set(entries)}, extra {set(entries) - set(LANGUAGE)}"
    )


def test_each_model_carries_its_own_kind_tag_and_the_union_holds_them_all():
    for kind, form in NODE_KINDS.items():
        assert get_args(form.model.model_fields["kind"].annotation) == (kind,), kind
    schema = json_schema()
    union = schema["properties"]["nodes"]["items"]
    assert set(union["discriminator"]["mapping"]) == set(LANGUAGE)
    assert [ref["$ref"].rsplit("/", 1)[1] for ref in union["oneOf"]] == [m.__name__ for m in NODE_CLASSES.values()]
    assert NODE_CLASSES == {kind: form.model for kind, form in NODE_KINDS.items()}


def test_every_field_of_every_kind_is_described():
    # `graphc schema` is the format's reference documentation
    for kind, model in NODE_CLASSES.items():
        undescribed = [name for name, info in model.model_fields.items() if not info.description]
        assert not undescribed, (kind, undescribed)


def test_every_kind_reads_through_input_or_inputs():
    for kind, model in NODE_CLASSES.items():
        field = model.reference_field()
        assert field in ("input", "inputs") or kind == "input", kind
        assert model.repeats in (None, "chain", "unit"), kind
        if model.repeats == "chain":
            assert field == "input", f"{kind}: a chain's copies read one node each"


def test_each_pytorch_lowering_is_a_module_or_fx_calls():
    for kind, entry in LOWERINGS.items():
        assert (entry.module is None) != (entry.emit is None), kind


def test_the_diagram_derives_colours_labels_and_collapsibility_from_its_table():
    assert KIND_COLORS == {kind: (style.fill, style.stroke) for kind, style in KIND_STYLES.items()}
    assert list(KIND_LABELS) == LANGUAGE
    assert set(COLLAPSIBLE) == {kind for kind, style in KIND_STYLES.items() if style.collapsible}
    fills = [style.fill for style in KIND_STYLES.values()]
    assert len(set(fills)) == len(fills), "two kinds drawn alike"


def test_an_unknown_kind_is_refused_everywhere_rather_than_guessed():
    with pytest.raises(ValueError, match="no entry in graphc.ir.kinds.KINDS"):
        layer_outputs("mystery", {}, (3, 8, 8), (3, 8, 8))  # no silent under-count of memory
    with pytest.raises(ValueError, match="no entry"):
        rules("mystery")
    with pytest.raises(ValueError, match="no entry"):
        lowering("mystery")
    with pytest.raises(ValueError, match="no entry"):
        kind_colors("mystery")  # not a grey box


def test_hint_words_belong_to_one_kind_or_the_general_table():
    words = [word for form in NODE_KINDS.values() for word in form.words]
    assert len(words) == len(set(words)), "a word in two kinds' entries"
    assert not set(words) & set(GENERAL_HINTS), set(words) & set(GENERAL_HINTS)
    assert all(word == word.lower().replace("-", "_").replace(" ", "_") for word in words)
    assert set(KIND_WORDS) == set(words)


def test_the_hints_list_the_kinds_of_the_language():
    # what to use instead of an unsupported layer: every kind a user writes between input and heads
    text = hint_for("transformer")
    for kind in LANGUAGE[1:]:
        assert kind in text, kind
    assert all(kind in hint_for("repeat") for kind, m in NODE_CLASSES.items() if m.repeats == "chain")
