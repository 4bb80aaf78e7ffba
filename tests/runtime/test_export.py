"""graphc export --onnx: checker-clean files whose named outputs match PyTorch, with metadata, and clear errors."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

import graphc
import graphc.backends.onnx as export
import graphc.runtime.export as run_export
from graphc.cli import app
from graphc.errors import RunError
from tests.conftest import REPO, clean_exit

runner = CliRunner()
SPECS_DIR = REPO / "specs"
REFERENCE = ["independent", "shared_conv", "reuse_coarse", "reuse_fine", "shared_reuse_coarse", "shared_reuse_fine"]

# No `name`: the spec is named after its file, and its run's copy (spec.toml) is not - export must cope.
# The fine head is reused as probabilities without gradient; the data is normalised (inside the ONNX model).
TRAINED_SPEC = """\
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
norm = "batch"

[[nodes]]
name = "fine_head"
kind = "head"
input = "trunk"
task = "fine"
reuse_as = "probabilities"
reuse_gradient = false

[[nodes]]
name = "coarse_fc"
kind = "fc_block"
input = "trunk"
units = [8]
norm = "batch"

[[nodes]]
name = "coarse_concat"
kind = "concat"
inputs = ["coarse_fc", "fine_head"]

[[nodes]]
name = "coarse_head"
kind = "head"
input = "coarse_concat"
task = "coarse"

[data]
dataset = "synthetic"
synthetic = { classes = 4, coarse_classes = 2, train_size = 96, test_size = 40 }
normalize = { mean = [0.5, 0.45, 0.4], std = [0.25, 0.2, 0.3] }
"""

# Two heads with the same number of classes: a swap of their names changes no shape, only values.
TWINS_SPEC = """\
name = "twins"

[[nodes]]
name = "image"
kind = "input"
shape = [1, 6, 6]

[[nodes]]
name = "fine"
kind = "head"
input = "image"

[[nodes]]
name = "coarse"
kind = "head"
input = "image"

[data]
dataset = "synthetic"
synthetic = { classes = 3, coarse_classes = 3 }
"""

ONE_HEAD_SPEC = """\
name = "solo"

[[nodes]]
name = "pixels"
kind = "input"
shape = [3, 8, 8]

[[nodes]]
name = "features"
kind = "fc_block"
input = "pixels"
units = [6]
norm = "batch"

[[nodes]]
name = "head"
kind = "head"
input = "features"
task = "fine"

[data]
dataset = "synthetic"
synthetic = { classes = 5, coarse_classes = 1 }
"""


def train_tiny(root: Path) -> Path:
    """A real 1-epoch run of TRAINED_SPEC through `graphc train`; returns its run directory."""
    spec = root / "tiny_export.toml"
    spec.write_text(TRAINED_SPEC)
    result = runner.invoke(
        app,
        [
            "train",
            str(spec),
            "--dataset",
            "synthetic",
            "--epochs",
            "1",
            "--limit-train",
            "64",
            "--limit-val",
            "32",
            "--out",
            str(root / "runs"),
            "--quiet",
            "--seed",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = (root / "runs" / "tiny_export").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="module")
def trained_export(trained: Path, tmp_path_factory) -> tuple[Path, dict]:
    """The trained run exported through the CLI (weights from the run directory's best.pt), with its --json report."""
    out = tmp_path_factory.mktemp("export") / "tiny.onnx"
    result = runner.invoke(
        app, ["export", str(trained / "spec.toml"), "--onnx", str(out), "--checkpoint", str(trained), "--json"]
    )
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


@pytest.fixture(scope="module")
def reference_exports(tmp_path_factory) -> dict[str, tuple[Path, export.ExportReport, float]]:
    """All six reference specs exported once (the slow part of this file: 18M parameters each)."""
    root = tmp_path_factory.mktemp("reference")
    exported = {}
    for name in REFERENCE:
        start = time.perf_counter()
        report = run_export.export_onnx(SPECS_DIR / f"{name}.toml", root / f"{name}.onnx")
        exported[name] = (root / f"{name}.onnx", report, time.perf_counter() - start)
    return exported


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- the six reference specs


@pytest.mark.parametrize("name", REFERENCE)
def test_reference_spec_exports_checked_with_named_dynamic_io(reference_exports, name):
    path, report, _ = reference_exports[name]
    graph = graphc.build_graph(graphc.load_spec(SPECS_DIR / f"{name}.toml"))
    assert report.written and report.passed and path.is_file()
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)  # again, from disk
    assert [i.name for i in model.graph.input] == [graph.input.name] == ["image"]
    assert [o.name for o in model.graph.output] == list(graph.tasks)  # spec order: fine, coarse
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch" and not dims[0].HasField("dim_value"), value.name
    classes = {o.name: o.type.tensor_type.shape.dim[1].dim_value for o in model.graph.output}
    assert classes == {h.attrs["task"]: h.attrs["classes"] for h in graph.heads}
    # The report covers batch 1 and 7 for every head.
    assert {(row.inputs, row.task) for row in report.parity} == {
        (f"random, batch {b}", t) for b in (1, 7) for t in graph.tasks
    }


@pytest.mark.parametrize("name", REFERENCE)
def test_reference_spec_onnx_matches_pytorch_by_output_name(reference_exports, name):
    """Independent of export.verify: ORT outputs, looked up by name, against the compiled module's dict."""
    path, _, _ = reference_exports[name]
    module, graph = graphc.model_from_spec(
        SPECS_DIR / f"{name}.toml", seed=graphc.load_spec(SPECS_DIR / f"{name}.toml").train.seed
    )
    module.eval()
    onnx_session = session(path)
    names = [o.name for o in onnx_session.get_outputs()]
    for batch in (1, 7):
        x = torch.rand(batch, *graph.input.shape, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = module(x)
        got = dict(zip(names, onnx_session.run(None, {"image": x.numpy()})))
        for task in graph.tasks:
            assert got[task].shape == (batch, graph.head_for(task).attrs["classes"])
            np.testing.assert_allclose(got[task], expected[task].numpy(), atol=1e-4, rtol=0)
            assert (got[task].argmax(1) == expected[task].numpy().argmax(1)).all()


def test_reference_export_times(reference_exports):
    """Not a timed assertion: prints the figures (pytest -s) so they can be reported."""
    for name, (path, report, seconds) in reference_exports.items():
        print(
            f"{name}: export {report.export_s:.1f} s, total with checks {seconds:.1f} s, {path.stat().st_size / 1e6:.1f} MB"
        )
    assert all(report.size_bytes == path.stat().st_size for path, report, _ in reference_exports.values())


# --------------------------------------------------------------------------- names checked against values


def _swap_output_names(model: onnx.ModelProto, a: str, b: str) -> None:
    """Relabel two outputs: the value computed as `a` is called `b` and vice versa (order and shapes kept)."""
    rename = {a: b, b: a}
    for node in model.graph.node:
        node.output[:] = [rename.get(n, n) for n in node.output]
        node.input[:] = [rename.get(n, n) for n in node.input]


def test_verifier_catches_swapped_output_names(tmp_path, write_spec):
    spec = write_spec(TWINS_SPEC, "twins")
    graph, reference, _ = run_export.load_model(spec)
    out = tmp_path / "twins.onnx"
    report = run_export.export_onnx(spec, out)
    assert report.passed
    model = onnx.load(str(out))
    _swap_output_names(model, "fine", "coarse")
    onnx.checker.check_model(model, full_check=True)  # still a valid model ...
    export.check_structure(model, graph)  # ... with the right names in the right order
    x = {"random, batch 7": torch.rand(7, 1, 6, 6)}
    rows = export.verify(
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]), reference, x
    )
    assert [row.ok for row in rows] == [False, False]
    assert "output 'fine' carries the values of task 'coarse'" in rows[0].problem
    # the untouched file passes the same check
    assert all(row.ok for row in export.verify(session(out), reference, x))


def test_verifier_reports_shape_mismatch_of_swapped_heads(trained_export, trained):
    path, _ = trained_export
    graph, reference, _ = run_export.load_model(trained / "spec.toml", trained)
    model = onnx.load(str(path))
    _swap_output_names(model, "fine", "coarse")
    fine, coarse = model.graph.output  # keep the declared types consistent with the swapped values
    fine_type, coarse_type = onnx.TypeProto(), onnx.TypeProto()
    fine_type.CopyFrom(fine.type)
    coarse_type.CopyFrom(coarse.type)
    fine.type.CopyFrom(coarse_type)
    coarse.type.CopyFrom(fine_type)
    rows = export.verify(
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]),
        reference,
        {"b7": torch.rand(7, 3, 8, 8)},
    )
    assert not any(row.ok for row in rows)
    assert "output 'fine' has shape [7, 2], task 'fine' gives [7, 4]" in rows[0].problem


# --------------------------------------------------------------------------- trained weights and metadata


def test_export_from_run_verifies_on_data_set_images(trained_export):
    path, report = trained_export
    assert report["written"] and report["passed"] and report["verified"]
    assert {row["inputs"] for row in report["parity"]} == {
        "random, batch 1",
        "random, batch 7",
        "synthetic test, batch 40",
    }
    assert all(row["max_abs_diff"] <= 1e-4 and row["argmax_agreement"] == 1.0 for row in report["parity"])
    assert report["size_bytes"] == path.stat().st_size


def test_metadata_round_trips(trained_export, trained):
    path, _ = trained_export
    meta = export.read_metadata(path)
    checkpoint = torch.load(trained / "best.pt", weights_only=False)
    spec_text = (trained / "spec.toml").read_text()
    assert meta["version"] == graphc.__version__
    assert meta["spec_name"] == "tiny_export"
    assert meta["spec_sha256"] == hashlib.sha256(spec_text.encode()).hexdigest() == checkpoint["spec_sha256"]
    assert meta["spec"] == spec_text
    assert meta["tasks"] == ["fine", "coarse"]
    assert meta["class_names"] == checkpoint["class_names"] and len(meta["class_names"]["coarse"]) == 2
    assert meta["outputs"] == "logits"
    assert meta["input"] == {
        "name": "image",
        "layout": "NCHW",
        "shape": ["batch", 3, 8, 8],
        "dtype": "float32",
        "range": [0.0, 1.0],
        "scaling": "pixel / 255",
        "channels": "RGB",
        "normalize": {"mean": [0.5, 0.45, 0.4], "std": [0.25, 0.2, 0.3]},
        "normalize_applied": "in_model",
    }
    assert meta["checkpoint"]["epoch"] == checkpoint["epoch"] == 1
    assert meta["checkpoint"]["metrics"] == {k: v for k, v in checkpoint["metrics"].items() if k.startswith("val/")}
    assert "val/fine/acc" in meta["checkpoint"]["metrics"]
    # metadata as written == metadata as built
    graph, _, weights = run_export.load_model(trained / "spec.toml", trained)
    assert meta == json.loads(json.dumps(run_export.build_metadata(graph, weights)))


def test_normalisation_inside_the_model_matches_training_pipeline(trained):
    """The ONNX input is pixels / 255; eval feeds graphc.runtime.data.augment.to_float(images, normalize) to the bare module."""
    from graphc.runtime.data.augment import to_float
    from graphc.runtime.runs.record import read_record, spec_of_run

    spec = spec_of_run(trained, read_record(trained))
    graph, deployed, _ = run_export.load_model(trained / "spec.toml", trained)
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        ours = deployed(to_float(images, None))  # the exported input: pixels / 255, no normalisation
        theirs = deployed.model(to_float(images, spec.data.normalize))
    for task, logits in zip(graph.tasks, ours):
        torch.testing.assert_close(logits, theirs[task], atol=1e-6, rtol=0)


def test_random_initialisation_metadata_has_index_labels_and_no_checkpoint(write_spec, tmp_path):
    graph, _, weights = run_export.load_model(write_spec(ONE_HEAD_SPEC, "solo"))
    meta = run_export.build_metadata(graph, weights)
    assert meta["class_names"] == {"fine": ["0", "1", "2", "3", "4"]}
    assert "checkpoint" not in meta and meta["weights"] == "random initialisation (seed 0)"
    assert meta["input"]["normalize"] is None and meta["input"]["name"] == "pixels"


def test_one_head_spec_exports_at_an_older_opset_without_verify(write_spec, tmp_path):
    out = tmp_path / "solo.onnx"
    spec = write_spec(ONE_HEAD_SPEC, "solo")
    result = runner.invoke(app, ["export", str(spec), "--onnx", str(out), "--opset", "17", "--no-verify", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["verified"] is False and report["parity"] == [] and report["written"]
    model = onnx.load(str(out))
    assert [(o.domain, o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")] == [("", 17)]
    assert [o.name for o in model.graph.output] == ["fine"]
    # --no-verify skipped ORT in graphc; check here that the file is right anyway
    module, graph = graphc.model_from_spec(write_spec(ONE_HEAD_SPEC, "solo"), seed=0)
    x = torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        expected = module.eval()(x)["fine"].numpy()
    (got,) = session(out).run(None, {"pixels": x.numpy()})
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- errors


def _edit_run_spec(trained: Path, tmp_path: Path, old: str, new: str, name: str = "tiny_export") -> Path:
    text = (trained / "spec.toml").read_text()
    assert old in text
    path = tmp_path / f"{name}.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_checkpoint_of_another_spec_is_named(trained, tmp_path):
    other = _edit_run_spec(trained, tmp_path, "[[nodes]]", 'name = "other"\n\n[[nodes]]', name="other")
    result = runner.invoke(
        app, ["export", str(other), "--onnx", str(tmp_path / "x.onnx"), "--checkpoint", str(trained)]
    )
    assert result.exit_code == 1
    assert "checkpoint of spec 'tiny_export', not of 'other'" in result.stderr
    assert clean_exit(result) and not (tmp_path / "x.onnx").exists()


def test_checkpoint_shape_mismatch_names_the_node(trained, tmp_path):
    edited = _edit_run_spec(trained, tmp_path, "units = [8]", "units = [16]")
    with pytest.raises(RunError) as info:
        run_export.load_model(edited, trained / "best.pt")
    message = str(info.value)
    assert "node 'coarse_fc': 'coarse_fc.fc1.weight' expects [16, 64], checkpoint has [8, 64]" in message
    assert "its spec text differs" in message


def test_checkpoint_of_a_changed_spec_without_new_shapes_is_refused(trained, tmp_path):
    edited = _edit_run_spec(trained, tmp_path, 'pool = "max"', 'pool = "avg"')
    with pytest.raises(RunError, match="node 'trunk', field 'pool': 'avg', was 'max'"):
        run_export.load_model(edited, trained)


def test_checkpoint_of_a_spec_edited_only_in_comments_and_recipe_loads(trained, tmp_path):
    edited = _edit_run_spec(trained, tmp_path, "[data]", "# a comment\n[train]\nepochs = 7\n\n[data]")
    graph, _, weights = run_export.load_model(edited, trained)
    assert graph.name == "tiny_export" and weights.epoch == 1
    assert "not in anything inference uses" in weights.note


def test_bad_paths_and_options(trained, tmp_path):
    spec = trained / "spec.toml"
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    cases = [
        (["--onnx", str(blocker / "x.onnx")], 2, "does not exist"),
        (["--onnx", str(tmp_path)], 2, "is a directory"),
        (["--onnx", str(tmp_path / "x.onnx"), "--opset", "5"], 2, "--opset 5"),
        (["--onnx", str(tmp_path / "x.onnx"), "--checkpoint", str(tmp_path)], 1, "has no best.pt"),
        (["--onnx", str(tmp_path / "x.onnx"), "--checkpoint", str(blocker)], 1, "cannot be read as a checkpoint"),
    ]
    for options, code, message in cases:
        result = runner.invoke(app, ["export", str(spec), *options])
        assert result.exit_code == code, (options, result.output)
        assert message in result.stderr and clean_exit(result)


def test_missing_onnxruntime_is_a_clear_error(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    result = runner.invoke(app, ["export", str(trained / "spec.toml"), "--onnx", str(tmp_path / "x.onnx")])
    assert result.exit_code == 1
    assert "needs the Python package 'onnxruntime'" in result.stderr and "pip install" in result.stderr


def test_failed_parity_exits_1_and_writes_nothing(write_spec, tmp_path, monkeypatch):
    strict = export.verify
    monkeypatch.setattr(export, "verify", lambda *args, **kwargs: strict(*args, atol=-1.0))  # nothing can pass
    out = tmp_path / "twins.onnx"
    result = runner.invoke(app, ["export", str(write_spec(TWINS_SPEC, "twins")), "--onnx", str(out)])
    assert result.exit_code == 1
    assert "does not match PyTorch" in result.stderr and "was not written" in result.stderr
    assert not out.exists()
