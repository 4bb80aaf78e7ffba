"""graphc predict: an exported file alone gives the labels graphc eval's model gives, on image files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import graphc
from graphc.cli import app
from graphc.runtime.predict import load_images, softmax
from tests.conftest import clean_exit
from tests.runtime.test_export import train_tiny

runner = CliRunner()


@pytest.fixture(scope="module")
def run_and_model(tmp_path_factory) -> tuple[Path, Path]:
    """A trained tiny run (normalised data, two heads of 4 and 2 classes) and its ONNX export."""
    root = tmp_path_factory.mktemp("predict")
    run_dir = train_tiny(root)
    model = root / "tiny.onnx"
    result = runner.invoke(
        app, ["export", str(run_dir / "spec.toml"), "--onnx", str(model), "--checkpoint", str(run_dir)]
    )
    assert result.exit_code == 0, result.output
    return run_dir, model


@pytest.fixture(scope="module")
def test_images(run_and_model, tmp_path_factory) -> tuple[list[Path], torch.Tensor, dict[str, torch.Tensor]]:
    """The run's test split, loaded the way graphc eval loads it, written as PNG files (lossless)."""
    from graphc.runtime.runs.record import load_run_data, read_record, spec_of_run

    run_dir, _ = run_and_model
    record = read_record(run_dir)
    dataset = load_run_data(spec_of_run(run_dir, record), record)
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, image in enumerate(dataset.test.images):
        paths.append(folder / f"test_{i:03d}.png")
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(paths[-1])
    return paths, dataset.test.images, dataset.test.labels


def predict_json(*args: str) -> dict:
    result = runner.invoke(app, ["predict", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def eval_model_logits(run_dir: Path, images: torch.Tensor) -> dict[str, np.ndarray]:
    """What graphc eval's model computes: spec_of_run -> compile -> best.pt -> to_float(images, normalize)."""
    from graphc.runtime.data.augment import to_float
    from graphc.runtime.runs.record import read_record, spec_of_run

    record = read_record(run_dir)
    spec = spec_of_run(run_dir, record)
    model = graphc.compile_graph(graphc.build_graph(spec, classes=record.classes))
    model.load_state_dict(torch.load(run_dir / "best.pt", weights_only=False)["model"])
    with torch.no_grad():
        return {task: t.numpy() for task, t in model.eval()(to_float(images, spec.data.normalize)).items()}


def test_exported_model_predicts_the_labels_of_graphc_eval(run_and_model, test_images):
    run_dir, model = run_and_model
    paths, images, labels = test_images
    predicted = predict_json(str(model), *map(str, paths), "--top-k", "1")
    assert predicted["runtime"] == "onnx" and predicted["tasks"] == ["fine", "coarse"]
    assert [p["path"] for p in predicted["predictions"]] == [str(p) for p in paths]
    expected = eval_model_logits(run_dir, images)
    names = torch.load(run_dir / "best.pt", weights_only=False)["class_names"]
    evaluation = json.loads(runner.invoke(app, ["eval", str(run_dir), "--split", "test", "--json"]).stdout)
    for task in ("fine", "coarse"):
        top = [p["heads"][task][0] for p in predicted["predictions"]]
        indices = np.array([t["index"] for t in top])
        np.testing.assert_array_equal(indices, expected[task].argmax(1))
        assert [t["label"] for t in top] == [names[task][i] for i in indices]
        # the same labels give the same accuracy as graphc eval reports on the test split
        accuracy = float((indices == labels[task].numpy()).mean())
        assert accuracy == pytest.approx(evaluation["metrics"][f"{task}/acc"], abs=1e-9)


def test_run_directory_predicts_like_the_exported_file(run_and_model, test_images):
    run_dir, model = run_and_model
    paths = [str(p) for p in test_images[0][:6]]
    from_onnx = predict_json(str(model), *paths, "-k", "3")
    from_run = predict_json(str(run_dir), *paths, "-k", "3")
    assert from_run["runtime"] == "torch"
    for a, b in zip(from_onnx["predictions"], from_run["predictions"]):
        for task in ("fine", "coarse"):
            assert [c["label"] for c in a["heads"][task]] == [c["label"] for c in b["heads"][task]]
            np.testing.assert_allclose(
                [c["probability"] for c in a["heads"][task]], [c["probability"] for c in b["heads"][task]], atol=1e-5
            )


def test_top_k_probabilities_are_a_sorted_softmax(run_and_model, test_images):
    run_dir, model = run_and_model
    paths, images, _ = test_images
    result = predict_json(str(model), str(paths[0]), "--top-k", "10")  # more than either head has: all classes
    expected = eval_model_logits(run_dir, images[:1])
    for task, classes in (("fine", 4), ("coarse", 2)):
        top = result["predictions"][0]["heads"][task]
        assert len(top) == classes
        probabilities = [c["probability"] for c in top]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) == pytest.approx(1.0)
        reference = softmax(expected[task].astype(np.float64))[0]
        np.testing.assert_allclose(probabilities, reference[[c["index"] for c in top]], atol=1e-5)


def test_human_readable_output_names_labels(run_and_model, test_images):
    run_dir, model = run_and_model
    result = runner.invoke(app, ["predict", str(model), str(test_images[0][0]), "-k", "2"])
    assert result.exit_code == 0, result.output
    names = torch.load(run_dir / "best.pt", weights_only=False)["class_names"]
    assert "fine" in result.stdout and "coarse" in result.stdout and "%" in result.stdout
    assert any(name in result.stdout for name in names["fine"])


def test_other_sizes_are_resized_or_rejected(run_and_model, tmp_path):
    _, model = run_and_model
    big = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 12, 3), dtype=np.uint8)).save(big)
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((8, 8), 200, dtype=np.uint8)).save(gray)
    result = predict_json(str(model), str(big), str(gray))
    assert [p["resized"] for p in result["predictions"]] == [True, False]
    assert result["predictions"][0]["size"] == [16, 12]
    rejected = runner.invoke(app, ["predict", str(model), str(big), "--no-resize"])
    assert rejected.exit_code == 1
    assert "big.jpg: is 12x16 (width x height) but the model takes 8x8" in rejected.stderr


def test_load_images_keeps_png_pixels_and_layout(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)  # (H, W, C)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(pixels[:, :, 0]).save(tmp_path / "l.png")
    batch, loaded = load_images([tmp_path / "a.png", tmp_path / "l.png"], (3, 5, 7), resize=False)
    assert batch.dtype == np.uint8 and batch.shape == (2, 3, 5, 7)
    np.testing.assert_array_equal(batch[0], pixels.transpose(2, 0, 1))
    np.testing.assert_array_equal(batch[1], np.stack([pixels[:, :, 0]] * 3))  # L -> RGB repeats the channel
    assert [image.resized for image in loaded] == [False, False]


def test_bad_inputs_give_clear_errors(run_and_model, tmp_path):
    _, model = run_and_model
    good = tmp_path / "ok.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(good)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    bare = tmp_path / "bare.onnx"  # a valid ONNX model that graphc did not export
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = lambda name: onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [1, 3, 8, 8])  # noqa: E731
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([node], "g", [value("x")], [value("y")])), str(bare))
    cases = [
        ([str(model), str(tmp_path / "absent.png")], 1, "absent.png: no such image file"),
        ([str(model), str(text)], 1, "notes.png: cannot be read as an image"),
        ([str(tmp_path / "absent.onnx"), str(good)], 2, "no such file or run directory"),
        ([str(tmp_path), str(good)], 2, "not a run directory"),
        ([str(text), str(good)], 1, "cannot be read as an ONNX model"),
        ([str(bare), str(good)], 1, "has no graphc metadata"),
        ([str(model), str(good), "--top-k", "0"], 2, "--top-k 0"),
    ]
    for args, code, message in cases:
        result = runner.invoke(app, ["predict", *args])
        assert result.exit_code == code, (args, result.output)
        assert message in result.stderr and clean_exit(result)
