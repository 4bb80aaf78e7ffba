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

What to predict (:func:`find_images`): image files; folders, searched recursively for .png,
.jpg and .jpeg files (any case; hidden files and folders skipped; a symbolic link that leads out
of the folder is not followed, and the skipped links are counted in a note); and glob patterns
(``'photos/*.jpg'``, ``'shots/**/*.png'``), expanded here when the shell did not. Images are
decoded and run in batches (:data:`BATCH`), with a progress line every few seconds for many
images; :func:`write_predictions` writes one row per image to a .csv or .jsonl file.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphc.errors import RunError, UsageError

MODES = {1: "L", 3: "RGB", 4: "RGBA"}
SUFFIXES = (".png", ".jpg", ".jpeg")  # what a folder or pattern contributes (compared in lower case)
BATCH = 256  # images decoded and run at a time
PROGRESS_EVERY = 5.0  # seconds between progress lines
OUT_FORMATS = (".csv", ".jsonl")


@dataclass
class Predictor:
    """A model behind one interface: [0, 1] float32 (N, C, H, W) in, {task: logits (N, classes)} out."""

    source: str
    kind: str  # "onnx" or "torch"
    input_shape: tuple[int, int, int]
    tasks: list[str]
    class_names: dict[str, list[str]]
    run: Callable[[np.ndarray], dict[str, np.ndarray]]
    types: dict[str, str] = field(default_factory=dict)  # task -> head type; absent: classification

    def type_of(self, task: str) -> str:
        return self.types.get(task, "classification")


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

    return Predictor(
        str(path), "onnx", deployment.input_shape, list(deployment.tasks), deployment.class_names, run, deployment.types
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _torch_predictor(run_dir: Path) -> Predictor:
    from graphc.runtime.export import build_metadata, load_model, spec_of_run_dir

    # The run's spec as it trained (spec.toml with the record's tables; else the checkpoint's text).
    graph, model, weights = load_model(spec_of_run_dir(run_dir), run_dir)  # its best.pt
    meta = build_metadata(graph, weights)

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            return {task: t.numpy() for task, t in zip(model.tasks, model(torch.from_numpy(images)))}

    types = {task: head["type"] for task, head in meta["heads"].items()}
    return Predictor(
        str(run_dir), "torch", tuple(graph.input.shape), list(graph.tasks), meta["class_names"], run, types
    )


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
    model: str | Path | Predictor,
    images: Sequence[str | Path],
    top_k: int = 3,
    resize: bool = True,
    report: Callable[[str], None] | None = None,
) -> tuple[Predictor, list[Prediction]]:
    """Top-k labels and probabilities per head for each image (files, folders or patterns:
    :func:`find_images`), in batches of :data:`BATCH`; ``report`` gets the notes of the search and,
    for more than one batch, a progress line every :data:`PROGRESS_EVERY` seconds."""
    if top_k < 1:
        raise UsageError(f"--top-k {top_k}: expected a positive number of labels per head.")
    if not images:
        raise UsageError("no images given; name one or more PNG or JPEG files, folders of them, or patterns.")
    files, notes = find_images(images)
    for note in notes:
        if report is not None:
            report(note)
    predictor = model if isinstance(model, Predictor) else open_model(model)
    predictions: list[Prediction] = []
    started = last = time.monotonic()
    for start in range(0, len(files), BATCH):
        predictions += _predict_batch(predictor, files[start : start + BATCH], top_k, resize)
        now = time.monotonic()
        if report is not None and len(predictions) < len(files) and now - last >= PROGRESS_EVERY:
            last = now
            report(f"predicting: {len(predictions):,} / {len(files):,} images")
    if report is not None and len(files) > BATCH and time.monotonic() - started >= PROGRESS_EVERY:
        report(f"predicted {len(files):,} images in {time.monotonic() - started:.1f} s")
    return predictor, predictions


def _predict_batch(predictor: Predictor, images: Sequence[Path], top_k: int, resize: bool) -> list[Prediction]:
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
        names = names or [str(i) for i in range(scores.shape[1])]
        answer = ANSWERS[predictor.type_of(task)]
        for row, prediction in zip(scores.astype(np.float64), predictions):
            prediction.heads[task] = answer(row, names, top_k)
    return predictions


def _classes(logits: np.ndarray, names: list[str], top_k: int) -> list[dict[str, Any]]:
    """A classifier's top-k classes, most probable first, with their softmax probabilities."""
    row = softmax(logits[None, :])[0]
    best = np.argsort(-row, kind="stable")[: min(top_k, len(row))]
    return [{"index": int(i), "label": names[i], "probability": float(row[i])} for i in best]


def _yes_no(logits: np.ndarray, names: list[str], top_k: int) -> list[dict[str, Any]]:
    """A binary head's answer, yes (probability above 0.5, as its accuracy counts it) or no, with the
    probability of that answer."""
    yes = float(sigmoid(logits[0]))
    return [{"index": int(yes > 0.5), "label": "yes" if yes > 0.5 else "no", "probability": max(yes, 1 - yes)}]


def _labels(logits: np.ndarray, names: list[str], top_k: int) -> list[dict[str, Any]]:
    """A multilabel head's labels whose probability is above 0.5, most probable first (none: an empty list)."""
    row = sigmoid(logits)
    above = [i for i in np.argsort(-row, kind="stable") if row[i] > 0.5]
    return [{"index": int(i), "label": names[i], "probability": float(row[i])} for i in above]


def _values(outputs: np.ndarray, names: list[str], top_k: int) -> list[dict[str, Any]]:
    """A regression head's numbers, in the targets' units (the exported model turns them back)."""
    return [{"index": i, "label": names[i], "value": float(v)} for i, v in enumerate(outputs)]


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * logits))  # = 1 / (1 + e^-x), without overflow for large |x|


# What each head type answers, from its row of outputs and its output names.
ANSWERS: dict[str, Callable[[np.ndarray, list[str], int], list[dict[str, Any]]]] = {
    "classification": _classes,
    "binary": _yes_no,
    "multilabel": _labels,
    "regression": _values,
}


def shown(answer: list[dict[str, Any]]) -> list[str]:
    """A head's answer as lines of text: 'label 87.5%' per class or label, 'label 12.3' per value;
    a multilabel head with no label above 0.5: '(no label above 50%)'."""
    if not answer:
        return ["(no label above 50%)"]
    return [
        f"{a['label']} {a['value']:.4g}" if "value" in a else f"{a['label']} {a['probability']:.1%}" for a in answer
    ]


# --------------------------------------------------------------------------- what to predict


def find_images(arguments: Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """The image files ``arguments`` name, in order, and notes on what was skipped.

    A file is taken as it is (it is read as an image, whatever its name). A folder gives its
    .png/.jpg/.jpeg files (any case), recursively, sorted; hidden files and folders are skipped,
    and symbolic links are not followed out of the folder. An argument that does not exist but is
    a glob pattern (``*``, ``?``, ``[``) is expanded (``**`` spans folders): the images it matches,
    and those of the folders it matches. A missing plain path is kept, for the reader's message.
    No image at all is a UsageError (exit 2).
    """
    files: list[Path] = []
    notes: list[str] = []
    empty: list[str] = []
    for argument in map(str, arguments):
        path = Path(argument)
        if path.is_dir():
            found = _folder_images(path, notes)
            empty += [] if found else [f"the folder {argument}"]
            files += found
        elif os.path.lexists(argument) or not glob.has_magic(argument):
            files.append(path)  # a file (or a missing one, which the reader names)
        else:
            base = _pattern_base(argument)
            matches, outside = [], []
            for match in map(Path, sorted(glob.glob(argument, recursive=True))):
                (matches if _reached_without_links_out(match, base) else outside).append(match)
            if outside:
                notes.append(
                    f"note: skipped {len(outside):,} match(es) of {argument!r} reached through a symbolic link that "
                    f"leads out of {base} or nowhere (e.g. {outside[0]}); graphc does not follow links out of the "
                    "folder a pattern starts in."
                )
            found = []
            for match in matches:
                if match.is_dir():
                    found += _folder_images(match, notes)
                elif match.name.lower().endswith(SUFFIXES) and not match.name.startswith("."):
                    found.append(match)
            if not matches:
                empty.append(
                    f"the pattern {argument!r} ({'its matches lead out of its folder' if outside else 'it matches no file'})"
                )
            elif not found:
                empty.append(f"the pattern {argument!r} ({len(matches):,} matches, none a .png/.jpg/.jpeg image)")
            files += found
    if not files:
        raise UsageError(
            f"no images found in {', '.join(empty) or 'the arguments'}: graphc predict reads .png, .jpg and .jpeg "
            "files (any case), given one by one, as folders (searched recursively) or as patterns ('photos/*.jpg')."
        )
    if empty:
        notes.append(f"note: no images in {', '.join(empty)}.")
    return files, notes


def _folder_images(folder: Path, notes: list[str]) -> list[Path]:
    """The images under ``folder``, sorted by path; a symbolic link (file or folder) that leads out
    of the folder, dangles or loops is skipped and counted in ``notes``. Links to folders inside
    it are not walked either: what they hold is listed under its own path already."""
    try:
        root = folder.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise RunError(f"{folder}: cannot be read ({exc}).") from None
    found: list[Path] = []
    skipped: list[str] = []
    errors: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=errors.append):  # never into linked folders
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in dirnames:
            if os.path.islink(os.path.join(dirpath, name)) and not _inside(Path(dirpath, name), root):
                skipped.append(os.path.join(dirpath, name))
        for name in sorted(filenames):
            if name.startswith(".") or not name.lower().endswith(SUFFIXES):
                continue
            path = Path(dirpath, name)
            if path.is_symlink() and not _inside(path, root):
                skipped.append(str(path))
                continue
            found.append(path)
    if errors:
        raise RunError(f"{errors[0].filename}: cannot be read ({errors[0].strerror or errors[0]}).")
    if skipped:
        notes.append(
            f"note: skipped {len(skipped):,} symbolic link(s) in {folder} that lead out of it or nowhere "
            f"(e.g. {skipped[0]}); graphc does not follow links out of the folder it is given."
        )
    return sorted(found, key=lambda path: path.parts)


def _pattern_base(pattern: str) -> Path:
    """The folder a glob pattern starts in: its leading parts without wildcards ('photos' of
    'photos/**/*.jpg'; '.' of '*.png')."""
    fixed = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _reached_without_links_out(match: Path, base: Path) -> bool:
    """Whether a glob match lies in ``base`` without passing through a symbolic link that leads out of
    it (glob's ``**`` descends into linked folders, and a linked file may point anywhere): the
    pattern gets what the folder walk would give."""
    try:
        root = base.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    if not _inside(match, root) if match.is_symlink() else not match.resolve().is_relative_to(root):
        return False
    for parent in match.parents:  # a linked folder on the way (base itself is the user's to name)
        if parent == base or len(parent.parts) <= len(base.parts):
            break
        if parent.is_symlink() and not _inside(parent, root):
            return False
    return True


def _inside(link: Path, root: Path) -> bool:
    """Whether the symbolic link ``link`` leads to an existing file or folder inside ``root``."""
    try:
        return link.resolve(strict=True).is_relative_to(root)
    except (OSError, RuntimeError):  # dangling, or a loop
        return False


# --------------------------------------------------------------------------- --out


def check_out(path: Path) -> None:
    """Fail before any image is read if ``--out`` cannot be written: its suffix and folder."""
    path = Path(path)
    if path.suffix.lower() not in OUT_FORMATS:
        raise UsageError(f"--out {path}: give a .csv or .jsonl file name (one row per image).")
    if path.is_dir():
        raise UsageError(f"--out {path}: is a directory; give a file name such as {path / 'predictions.csv'}.")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"--out {path}: the directory {parent} does not exist; create it or choose another path.")


def write_predictions(path: Path, predictor: Predictor, predictions: Sequence[Prediction]) -> None:
    """One row per image to ``path`` (.csv or .jsonl, by its suffix), written atomically.

    CSV: ``path, resized, <task>, <task>_probability`` per head (the top class); JSON lines:
    ``{"path", "size": [h, w], "resized", "heads": {task: [{index, label, probability}, ...]}}``
    with the top-k labels of each head."""
    from graphc.files import atomic_write_text

    path = Path(path)
    check_out(path)
    if path.suffix.lower() == ".jsonl":
        lines = [
            json.dumps(
                {"path": p.image.path, "size": list(p.image.size), "resized": p.image.resized, "heads": p.heads},
                ensure_ascii=False,
            )
            for p in predictions
        ]
        text = "".join(line + "\n" for line in lines)
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        header = ["path", "resized"]
        for task in predictor.tasks:  # a regression head's value(s) alone; the others' answer and probability
            header += [task] if predictor.type_of(task) == "regression" else [task, f"{task}_probability"]
        writer.writerow(header)
        for p in predictions:
            cells = [p.image.path, p.image.resized]
            for task in predictor.tasks:
                answer, kind = p.heads[task], predictor.type_of(task)
                if kind == "regression":
                    cells.append(";".join(f"{a['value']:.6g}" for a in answer))
                elif kind == "multilabel":  # every label above 0.5, separated by ';' as a label table's cell
                    cells += [";".join(a["label"] for a in answer), ";".join(f"{a['probability']:.6f}" for a in answer)]
                else:
                    cells += [answer[0]["label"], f"{answer[0]['probability']:.6f}"]
            writer.writerow(cells)
        text = buffer.getvalue()
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise RunError(f"--out {path}: cannot write it ({exc.strerror or exc}); nothing was written.") from None
