"""graphc predict treats an ONNX file as untrusted input, and strings from files reach the terminal escaped.

Each bad file is a really exported model with one thing changed (a metadata value, a
graph output, a weight's storage) or a small graph made with onnx.helper; each must give
one clear message and exit 1, never a traceback or a wrong answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image
from typer.testing import CliRunner

from graphc.cli import app
from graphc.errors import printable
from tests.conftest import TINY_SPEC, clean_exit

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[onnx.ModelProto, Path]:
    """The tiny spec (heads fine: 4 classes, coarse: 2) exported by graphc, and an 8x8 RGB image."""
    root = tmp_path_factory.mktemp("safety_predict")
    spec = root / "tiny.toml"
    spec.write_text(TINY_SPEC)
    model = root / "tiny.onnx"
    result = runner.invoke(app, ["export", str(spec), "--onnx", str(model), "--no-verify"])
    assert result.exit_code == 0, result.output
    image = root / "ok.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    return onnx.load(str(model)), image


def edited(proto: onnx.ModelProto, **values) -> onnx.ModelProto:
    """A copy with graphc metadata values replaced (stored as JSON) or added."""
    return stored(proto, **{key: json.dumps(value) for key, value in values.items()})


def stored(proto: onnx.ModelProto, **texts: str) -> onnx.ModelProto:
    """A copy with graphc metadata replaced by these texts as they are (JSON or not)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for key, text in texts.items():
        entry = next((p for p in copy.metadata_props if p.key == "graphc." + key), None)
        if entry is None:
            entry = copy.metadata_props.add()
            entry.key = "graphc." + key
        entry.value = text
    return copy


def meta(proto: onnx.ModelProto, key: str):
    return json.loads(next(p.value for p in proto.metadata_props if p.key == "graphc." + key))


def with_input(proto: onnx.ModelProto, **changes) -> onnx.ModelProto:
    return edited(proto, input={**meta(proto, "input"), **changes})


def with_names(proto: onnx.ModelProto, **names) -> onnx.ModelProto:
    return edited(proto, class_names={**meta(proto, "class_names"), **names})


def without_metadata(proto: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    del copy.metadata_props[:]
    return copy


def twice(proto: onnx.ModelProto) -> onnx.ModelProto:
    copy = edited(proto)
    entry = copy.metadata_props.add()
    entry.key, entry.value = "graphc.tasks", json.dumps(["coarse", "fine"])
    return copy


def extra_output(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The graph gains an output that the metadata's tasks do not name."""
    copy = edited(proto)
    copy.graph.node.append(helper.make_node("Identity", ["fine"], ["spare"]))
    copy.graph.output.append(helper.make_tensor_value_info("spare", TensorProto.FLOAT, ["batch", 4]))
    return copy


def external_weights(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A weight that says it lives in another file, outside the model's folder."""
    copy = edited(proto)
    tensor = copy.graph.initializer[0]
    tensor.ClearField("raw_data")
    del tensor.float_data[:]
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../../etc/passwd"
    return copy


def small_graph(output_shape, **metadata) -> onnx.ModelProto:
    """x (batch, 3, 8, 8) -> Flatten -> 'fine' (batch, 192): 192 logits, whatever the metadata says."""
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["fine"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("fine", TensorProto.FLOAT, output_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = {
        "tasks": ["fine"],
        "class_names": {"fine": ["a", "b", "c", "d"]},
        "outputs": "logits",
        "input": {
            "name": "x",
            "layout": "NCHW",
            "shape": ["batch", 3, 8, 8],
            "scaling": "pixel / 255",
            "normalize": None,
        },
        **metadata,
    }
    return edited(model, **data)


def unknown_operator() -> onnx.ModelProto:
    model = small_graph(["batch", 4])
    model.graph.node[0].op_type = "NoSuchOperator"
    return model


NOT_JSON = "{'fine': ['a', 'b'"

# name -> (make the file from the exported ModelProto, the exit code, a part of the message)
CASES: dict[str, tuple[Callable[[onnx.ModelProto], onnx.ModelProto | bytes], int, str]] = {
    "malformed JSON": (
        lambda p: stored(p, class_names=NOT_JSON),
        1,
        "the metadata 'graphc.class_names' is not valid JSON",
    ),
    "deeply nested JSON": (lambda p: stored(p, tasks="[" * 100000), 1, "the metadata 'graphc.tasks' is not valid JSON"),
    "key given twice": (twice, 1, "the metadata key 'graphc.tasks' appears twice"),
    "class_names a string": (lambda p: edited(p, class_names="cat"), 1, "metadata 'graphc.class_names' is \"cat\""),
    "class_names an int": (
        lambda p: edited(p, class_names=3),
        1,
        "metadata 'graphc.class_names' is 3, expected an object",
    ),
    "a head's names a string": (lambda p: with_names(p, fine="abcd"), 1, "gives task 'fine' \"abcd\", expected a list"),
    "a head without names": (
        lambda p: edited(p, class_names={"fine": ["a", "b", "c", "d"]}),
        1,
        "gives task 'coarse' null",
    ),
    "too few class names": (
        lambda p: with_names(p, fine=["a", "b"]),
        1,
        "its output 'fine' gives 4 logits but its metadata has 2 class names",
    ),
    "tasks a string": (
        lambda p: edited(p, tasks="fine"),
        1,
        "metadata 'graphc.tasks' is \"fine\", expected a non-empty list",
    ),
    "a task twice": (lambda p: edited(p, tasks=["fine", "fine"]), 1, "names a task twice"),
    "input a list": (
        lambda p: edited(p, input=[3, 8, 8]),
        1,
        "metadata 'graphc.input' is [3, 8, 8], expected an object",
    ),
    "short input shape": (
        lambda p: with_input(p, shape=["batch", 3, 8]),
        1,
        'has shape ["batch", 3, 8], expected [batch, channels, height, width]',
    ),
    "shape of strings": (
        lambda p: with_input(p, shape=["batch", "3", 8, 8]),
        1,
        "expected [batch, channels, height, width] with positive whole numbers",
    ),
    "fractional shape": (lambda p: with_input(p, shape=["batch", 3, 8.5, 8]), 1, "with positive whole numbers"),
    "shape of booleans": (lambda p: with_input(p, shape=["batch", True, True, True]), 1, "with positive whole numbers"),
    "two channels": (
        lambda p: with_input(p, shape=["batch", 2, 8, 8]),
        1,
        "has 2 channels; images give 1 (L), 3 (RGB) or 4 (RGBA)",
    ),
    "absurd input size": (
        lambda p: with_input(p, shape=["batch", 3, 100000, 100000]),
        1,
        "graphc takes sides up to 16384",
    ),
    "shape unlike the graph's": (
        lambda p: with_input(p, shape=["batch", 3, 16, 16]),
        1,
        "its graph's input 'image' has shape",
    ),
    "input name not in the graph": (lambda p: with_input(p, name="pixels"), 1, "its metadata names the input 'pixels'"),
    "other scaling": (
        lambda p: with_input(p, scaling="pixel / 127.5 - 1"),
        1,
        "knows only NCHW scaled as 'pixel / 255'",
    ),
    "normalize a string": (
        lambda p: with_input(p, normalize="imagenet"),
        1,
        'has normalize "imagenet", expected null or mean and std',
    ),
    "normalize too short": (
        lambda p: with_input(p, normalize={"mean": [0.5], "std": [0.2]}, normalize_applied="in_model"),
        1,
        "lists of 3 finite numbers",
    ),
    "normalize std zero": (
        lambda p: with_input(p, normalize={"mean": [0.5] * 3, "std": [0, 1, 1]}, normalize_applied="in_model"),
        1,
        "(std positive)",
    ),
    "normalize left to the caller": (
        lambda p: with_input(p, normalize={"mean": [0.5] * 3, "std": [0.2] * 3}, normalize_applied=None),
        1,
        "expects its caller to normalise",
    ),
    "probabilities, not logits": (lambda p: edited(p, outputs="probabilities"), 1, "graphc models output logits"),
    "task with no output": (
        lambda p: edited(with_names(p, extra=["x"]), tasks=["fine", "coarse", "extra"]),
        1,
        "names the task(s) ['extra'], but its graph has no such output",
    ),
    "output with no task": (extra_output, 1, "its graph has output(s) ['spare'] that its metadata's tasks"),
    "graph outputs unnamed by tasks": (lambda p: edited(p, tasks=["fine"]), 1, "its graph has output(s) ['coarse']"),
    "no graphc metadata": (without_metadata, 1, "has no graphc metadata"),
    "some metadata missing": (
        lambda p: edited(without_metadata(p), tasks=["fine", "coarse"]),
        1,
        "its graphc metadata lacks graphc.class_names, graphc.input",
    ),
    "weights in another file": (external_weights, 1, "keeps weights in external data files"),
    "not ONNX at all": (lambda p: b"\x89PNG\r\n\x1a\n not a model", 1, "cannot be read as an ONNX model"),
    "an unknown operator": (lambda p: unknown_operator(), 1, "ONNX Runtime cannot load it"),
    "too few names, shape only known at run time": (
        lambda p: small_graph(["batch", None]),
        1,
        "the head 'fine' gave shape [1, 192] for 1 image(s), expected [1, 4] logits",
    ),
    "too few names, declared shape": (
        lambda p: small_graph(["batch", 192]),
        1,
        "its output 'fine' gives 192 logits but its metadata has 4 class names",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_onnx_files_give_one_clear_message(case, exported, tmp_path):
    proto, image = exported
    make, code, message = CASES[case]
    made = make(proto)
    model = tmp_path / "model.onnx"
    model.write_bytes(made if isinstance(made, bytes) else made.SerializeToString())
    result = runner.invoke(app, ["predict", str(model), str(image)])
    assert result.exit_code == code, (case, result.output)
    assert clean_exit(result) and "Traceback" not in result.output, case
    assert message in result.stderr, (case, result.stderr)
    assert result.stderr.count("error:") == 1


def test_the_unedited_export_still_predicts(exported, tmp_path):
    proto, image = exported
    model = tmp_path / "model.onnx"
    model.write_bytes(edited(proto).SerializeToString())
    result = runner.invoke(app, ["predict", str(model), str(image), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tasks"] == ["fine", "coarse"]


def test_usage_errors_exit_2(exported, tmp_path):
    _, image = exported
    for args, message in (
        ([str(tmp_path / "absent.onnx"), str(image)], "no such file or run directory"),
        ([str(tmp_path), str(image)], "not a run directory"),
    ):
        result = runner.invoke(app, ["predict", *args])
        assert result.exit_code == 2 and message in result.stderr and clean_exit(result)


# --------------------------------------------------------------------------- terminal control characters


def test_printable_escapes_controls_and_keeps_text():
    assert printable("\x1b[31mred") == "\\x1b[31mred"
    assert printable("a\rb\x07c\x9bd\x7fe") == "a\\rb\\x07c\\x9bd\\x7fe"
    assert printable("line\nnext\tcol") == "line\\nnext\\tcol"
    assert printable("line\nnext", newlines=True) == "line\nnext"
    assert printable("café [bold] ñ ✓ C:\\runs") == "café [bold] ñ ✓ C:\\runs"  # only controls change


def test_class_names_from_a_file_print_escaped(exported, tmp_path):
    proto, image = exported
    model = tmp_path / "model.onnx"
    names = ["\x1b[31mred", "bell\x07", "over\rwrite", "csi\x9b2J"]
    model.write_bytes(with_names(proto, fine=names, coarse=["\x1b]0;title\x07", "ok"]).SerializeToString())
    result = runner.invoke(app, ["predict", str(model), str(image), "-k", "4"])
    assert result.exit_code == 0, result.output
    for raw in ("\x1b", "\x07", "\r", "\x9b"):
        assert raw not in result.output
    for shown in ("\\x1b[31mred", "bell\\x07", "over\\rwrite", "csi\\x9b2J", "\\x1b]0;title\\x07"):
        assert shown in result.stdout
    # --json is data: the names survive exactly (JSON escapes them itself)
    data = json.loads(runner.invoke(app, ["predict", str(model), str(image), "-k", "4", "--json"]).stdout)
    assert {c["label"] for c in data["predictions"][0]["heads"]["fine"]} == set(names)


def test_error_messages_quoting_files_are_escaped(exported, tmp_path):
    proto, image = exported
    model = tmp_path / "model.onnx"
    model.write_bytes(edited(proto, tasks=["fine\x1b[2J", "coarse"]).SerializeToString())
    result = runner.invoke(app, ["predict", str(model), str(image)])
    assert result.exit_code == 1 and "\x1b" not in result.output and "fine\\x1b[2J" in result.stderr


def test_spec_descriptions_and_names_print_escaped(write_spec):
    spec = write_spec(TINY_SPEC.replace('name = "tiny"', 'name = "tiny"\ndescription = "\\u001b[31mred\\r"'))
    shown = runner.invoke(app, ["show", str(spec)])
    assert shown.exit_code == 0, shown.output
    assert "\x1b" not in shown.output and "\r" not in shown.output and "\\x1b[31mred\\r" in shown.stdout
    bad = write_spec(TINY_SPEC.replace('kind = "conv_block"', 'kind = "conv\\u001b[2Jblock"'), name="bad")
    checked = runner.invoke(app, ["check", str(bad)])
    assert checked.exit_code == 2 and "\x1b" not in checked.output and "conv\\x1b[2Jblock" in checked.stderr
