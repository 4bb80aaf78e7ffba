"""The four head types through graphc's commands, on a small label table with missing labels:
train (losses never NaN, every type's metrics, labelled counts, the record's standardisation),
eval, export to ONNX (a regression head answers in the targets' units, the standardisation in the
metadata) and predict (an answer per type)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from graphc.runtime.runs import rundir as runs
from tests.conftest import invoke, run_dir_of, train

SPEC = """\
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

[[nodes]]
name = "tall_head"
kind = "head"
input = "trunk"
task = "tall"
type = "binary"

[[nodes]]
name = "tags_head"
kind = "head"
input = "trunk"
task = "tags"
type = "multilabel"
labels = ["red", "green", "blue"]

[[nodes]]
name = "size_head"
kind = "head"
input = "trunk"
task = "size"
type = "regression"

[data]
dataset = "table"
val_fraction = 0.25

[train]
epochs = 2
batch_size = 8
"""


def write_table(root: Path, rows: int = 48, test: int = 12) -> Path:
    """Images whose brightness is their size label; every fourth 'tall' cell and every fifth 'tags'
    cell empty (missing); in one batch-sized block no 'tall' label at all."""
    rng = np.random.default_rng(0)
    lines = {"train": [], "test": []}
    for i in range(rows + test):
        level = int(rng.integers(0, 256))
        pixels = np.full((8, 8, 3), level, dtype=np.uint8)
        pixels[..., i % 3] = 255 - level
        path = root / "img" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "RGB").save(path)
        tall = "" if i % 4 == 0 or 8 <= i < 16 else ("yes" if level > 127 else "no")
        tags = "" if i % 5 == 0 else ["red", "green", "blue"][i % 3] + (";red" if level > 200 and i % 3 else "")
        kind = ["cat", "dog", "ship"][i % 3]
        lines["train" if i < rows else "test"].append(f"img/{i}.png,{kind},{tall},{tags},{level}")
    for name, body in lines.items():
        (root / f"{name}.csv").write_text("image,kind,tall,tags,size\n" + "\n".join(body) + "\n")
    return root


@pytest.fixture(scope="module")
def typed_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("typed")
    root = write_table(base / "data")
    spec = base / "typed.toml"
    spec.write_text(SPEC)
    import os

    os.environ["GRAPHC_DATA"] = str(base / "cache")  # the decode cache beside the test's files
    result = train(str(spec), "--data-dir", str(root), "--out", str(base / "runs"), "--quiet")
    return base, root, run_dir_of(result)


def test_training_logs_every_type_and_never_nan_losses(typed_run):
    _, _, run_dir = typed_run
    rows = runs.read_metrics(run_dir)
    for row in rows:
        for task in ("kind", "tall", "tags", "size"):
            assert math.isfinite(row[f"{task}/loss"]), (row["split"], task)
    summary = json.loads((run_dir / runs.SUMMARY).read_text())
    test = summary["test"]
    expected = {
        "kind": ["acc", "labelled"],
        "tall": ["acc", "balanced_acc", "auroc", "f1", "positive_rate", "labelled", "majority_acc"],
        "tags": ["mean_auroc", "map", "example_f1", "labelled"],
        "size": ["mae", "rmse", "r2", "mean_mae", "labelled"],
    }
    for task, kinds in expected.items():
        for kind in kinds:
            assert f"{task}/{kind}" in test, f"{task}/{kind}"
    assert "size/acc" not in test and "tags/acc" not in test
    # mean_acc averages the accuracy-typed heads only: kind and tall
    assert test["mean_acc"] == pytest.approx((test["kind/acc"] + test["tall/acc"]) / 2)
    # labelled counts: the test table has every cell but the empty ones (i % 4 == 0 for tall, i % 5 == 0 for tags)
    assert summary["labelled"]["test"] == {
        "kind": 12,
        "tall": sum(1 for i in range(48, 60) if i % 4),
        "tags": sum(1 for i in range(48, 60) if i % 5),
        "size": 12,
    }
    assert summary["labelled"]["train"]["tall"] + summary["labelled"]["val"]["tall"] == sum(
        1 for i in range(48) if i % 4 and not 8 <= i < 16
    )
    assert test["tall/labelled"] == summary["labelled"]["test"]["tall"]


def test_the_record_keeps_types_and_the_training_splits_standardisation(typed_run):
    _, root, run_dir = typed_run
    config = json.loads((run_dir / runs.CONFIG).read_text())
    assert config["types"] == {"tall": "binary", "tags": "multilabel", "size": "regression"}
    targets = config["targets"]["size"]
    assert targets["standardize"] is True and len(targets["mean"]) == len(targets["std"]) == 1
    assert 0 < targets["mean"][0] < 255 and targets["std"][0] > 0


def test_eval_prints_a_table_per_type(typed_run):
    _, _, run_dir = typed_run
    result = invoke("eval", str(run_dir))
    for words in ("binary heads", "multilabel heads", "regression heads", "auroc", "mean_mae", "map"):
        assert words in result.output, words
    # the eval of the run's own test images reproduces the summary's regression numbers (its units)
    summary = json.loads((run_dir / runs.SUMMARY).read_text())
    saved = json.loads(invoke("eval", str(run_dir), "--split", "test", "--json").stdout)
    assert saved["metrics"]["size/mae"] == pytest.approx(summary["test"]["size/mae"], rel=1e-5)


def test_onnx_answers_in_the_targets_units_and_predict_answers_per_type(typed_run):
    base, root, run_dir = typed_run
    out = base / "typed.onnx"
    invoke("export", str(run_dir), "--onnx", str(out))
    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    heads = json.loads(meta["graphc.heads"])
    assert {t: h["type"] for t, h in heads.items()} == {
        "kind": "classification",
        "tall": "binary",
        "tags": "multilabel",
        "size": "regression",
    }
    config = json.loads((run_dir / runs.CONFIG).read_text())
    standardization = heads["size"]["standardization"]
    assert standardization["mean"] == config["targets"]["size"]["mean"]
    assert standardization["std"] == config["targets"]["size"]["std"]
    # the round trip: ONNX's value = the trained model's z-scored output * std + mean
    from graphc.runtime.export import load_model

    graph, deployed, _ = load_model(run_dir)
    images = torch.rand(5, 3, 8, 8)
    with torch.inference_mode():
        z = deployed.model(images)["size"].numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    values = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": images.numpy()})))
    expected = z * standardization["std"][0] + standardization["mean"][0]
    assert np.allclose(values["size"], expected, rtol=1e-4, atol=1e-3)

    result = invoke("predict", str(out), str(root / "img" / "50.png"), "--json")
    answer = json.loads(result.stdout)["predictions"][0]["heads"]
    assert answer["kind"][0]["label"] in ("cat", "dog", "ship") and len(answer["kind"]) == 3
    assert answer["tall"][0]["label"] in ("yes", "no") and 0.5 <= answer["tall"][0]["probability"] <= 1
    assert all(a["label"] in ("red", "green", "blue") and a["probability"] > 0.5 for a in answer["tags"])
    assert set(answer["size"][0]) == {"index", "label", "value"} and math.isfinite(answer["size"][0]["value"])
    table = invoke("predict", str(out), str(root / "img" / "50.png")).output
    assert "size" in table and ("yes" in table or "no" in table)
