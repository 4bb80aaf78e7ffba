"""Predict labels of image files with an exported ONNX model or a run directory.

This is the consumer side of ``graphc export``: given only a ``.onnx`` file it
reads graphc's metadata (input name, shape, scaling, tasks, class names) and
needs neither the spec nor torch's model code, which proves the file is
self-describing. Given a run directory it compiles the run's spec, loads
``best.pt`` and runs it with PyTorch (no export: quicker, and no ONNX Runtime
needed), through the same ``DeployedModel`` wrapper the export uses, so both
paths take the same [0, 1] input and apply the same normalisation.

Images are read as image folders are (runtime/data/image_files.py: regular files only, no
decompression bombs), decoded with Pillow (PNG, JPEG, ...), converted to the model's
channels (L, RGB or RGBA), and resized (bilinear, to exactly H x W, aspect ratio
not kept) when their size differs from the input's - or rejected with
``resize=False``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphc.errors import RunError, UsageError

MODES = {1: "L", 3: "RGB", 4: "RGBA"}


@dataclass
class Predictor:
    """A model behind one interface: [0, 1] float32 (N, C, H, W) in, {task: logits (N, classes)} out."""

    source: str
    kind: str  # "onnx" or "torch"
    input_shape: tuple[int, int, int]
    tasks: list[str]
    class_names: dict[str, list[str]]
    run: Callable[[np.ndarray], dict[str, np.ndarray]]


def open_model(path: str | Path) -> Predictor:
    """An exported ``.onnx`` file, or a run directory (its spec and best.pt, run with PyTorch)."""
    from graphc.runtime.runs.rundir import is_run_dir

    path = Path(path)
    if path.is_dir():
        if not is_run_dir(path) and not (path / "best.pt").is_file():
            raise UsageError(
                f"{path}: is a directory but not a run directory (no config.json); give a run directory or a .onnx file."
            )
        return _torch_predictor(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file or run directory; give an exported .onnx file or a run directory.")
    return _onnx_predictor(path)


def _onnx_predictor(path: Path) -> Predictor:
    """The file is untrusted: its metadata is checked against its graph (``read_deployment``)
    before ONNX Runtime sees it, and what ONNX Runtime says about it becomes a message."""
    from graphc.backends.onnx import load_model_file, read_deployment, require

    ort = require("onnxruntime")
    proto = load_model_file(path)
    deployment = read_deployment(proto, str(path))
    try:
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types (Fail, InvalidGraph, ...)
        raise RunError(
            f"{path}: ONNX Runtime cannot load it ({_first_line(exc)}). Is it a model exported by graphc?"
        ) from None
    outputs = [o.name for o in session.get_outputs()]
    name = deployment.input_name

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        try:
            return dict(zip(outputs, session.run(None, {name: images})))
        except Exception as exc:
            raise RunError(
                f"{path}: ONNX Runtime failed to run it on {len(images)} image(s) ({_first_line(exc)})."
            ) from None

    return Predictor(str(path), "onnx", deployment.input_shape, list(deployment.tasks), deployment.class_names, run)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _torch_predictor(run_dir: Path) -> Predictor:
    import graphc
    from graphc.runtime.export import build_metadata, load_model
    from graphc.runtime.runs.rundir import SPEC_COPY
    from graphc.runtime.runs.weights import read_checkpoint

    spec_file = run_dir / SPEC_COPY
    if spec_file.is_file():
        spec = graphc.load_spec(spec_file)
    else:  # the checkpoint carries the spec text too
        _, saved = read_checkpoint(run_dir)
        spec = graphc.parse_spec(saved.get("spec_text") or "", name=saved.get("spec_name"))
    graph, model, weights = load_model(spec, run_dir)  # its best.pt
    meta = build_metadata(graph, weights)

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            return {task: t.numpy() for task, t in zip(model.tasks, model(torch.from_numpy(images)))}

    return Predictor(str(run_dir), "torch", tuple(graph.input.shape), list(graph.tasks), meta["class_names"], run)


# --------------------------------------------------------------------------- images


@dataclass
class LoadedImage:
    path: str
    size: tuple[int, int]  # (height, width) as found in the file
    resized: bool


def load_images(
    paths: Sequence[str | Path], shape: tuple[int, int, int], resize: bool = True
) -> tuple[np.ndarray, list[LoadedImage]]:
    """Decode images to uint8 (N, C, H, W) at the model's input shape."""
    from PIL import Image, UnidentifiedImageError

    from graphc.runtime.data.image_files import read_image_file

    channels, height, width = shape
    if channels not in MODES:
        raise RunError(
            f"the model takes {channels}-channel images; image files give 1 (L), 3 (RGB) or 4 (RGBA) channels."
        )
    arrays, loaded = [], []
    for path in map(Path, paths):
        try:
            # as image folders are read: a regular file only (a FIFO named x.png never blocks), and a
            # decompression bomb refused from its header (runtime/data/image_files.py)
            data = read_image_file(path)
            with Image.open(io.BytesIO(data)) as image:
                image = image.convert(MODES[channels])
                found = (image.height, image.width)
                if found != (height, width):
                    if not resize:
                        raise RunError(
                            f"{path}: is {found[1]}x{found[0]} (width x height) but the model takes {width}x{height}. "
                            "Resize it, or drop --no-resize to let graphc resize it (bilinear, aspect ratio not kept)."
                        )
                    image = image.resize((width, height), Image.BILINEAR)
                array = np.asarray(image, dtype=np.uint8)
        except FileNotFoundError:
            raise RunError(f"{path}: no such image file.") from None
        except IsADirectoryError:
            raise RunError(f"{path}: is a directory, not an image file.") from None
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise RunError(f"{path}: cannot be read as an image ({exc}); give PNG or JPEG files.") from None
        arrays.append(array.reshape(height, width, channels).transpose(2, 0, 1))  # (H, W, C) -> (C, H, W)
        loaded.append(LoadedImage(str(path), found, found != (height, width)))
    return np.stack(arrays), loaded


# --------------------------------------------------------------------------- predict


@dataclass
class Prediction:
    image: LoadedImage
    heads: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # task -> [{index, label, probability}]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def predict(
    model: str | Path | Predictor, images: Sequence[str | Path], top_k: int = 3, resize: bool = True
) -> tuple[Predictor, list[Prediction]]:
    """Top-k labels and probabilities per head for each image."""
    if top_k < 1:
        raise UsageError(f"--top-k {top_k}: expected a positive number of labels per head.")
    if not images:
        raise UsageError("no images given; name one or more PNG or JPEG files.")
    predictor = model if isinstance(model, Predictor) else open_model(model)
    pixels, loaded = load_images(images, predictor.input_shape, resize=resize)
    logits = predictor.run(pixels.astype(np.float32) / 255.0)  # the exported model's input scaling
    predictions = [Prediction(image) for image in loaded]
    for task in predictor.tasks:
        names = predictor.class_names.get(task)
        scores = logits.get(task)
        if (
            scores is None
            or scores.ndim != 2
            or len(scores) != len(loaded)
            or (names and scores.shape[1] != len(names))
        ):
            shape = "nothing" if scores is None else f"shape {list(scores.shape)}"
            raise RunError(
                f"{predictor.source}: the head '{task}' gave {shape} for {len(loaded)} image(s), expected "
                f"[{len(loaded)}, {len(names) if names else 'classes'}] logits (one per class name)."
            )
        probabilities = softmax(scores.astype(np.float64))
        names = names or [str(i) for i in range(probabilities.shape[1])]
        k = min(top_k, probabilities.shape[1])
        for row, prediction in zip(probabilities, predictions):
            best = np.argsort(-row, kind="stable")[:k]
            prediction.heads[task] = [{"index": int(i), "label": names[i], "probability": float(row[i])} for i in best]
    return predictor, predictions
