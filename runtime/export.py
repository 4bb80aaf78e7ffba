"""``graphc export --onnx``: a spec, or a run's trained weights, to a verified ONNX file.

The runtime's half of export: it finds the weights (a run directory or a .pt file),
the class names and normalisation the run trained with, and a few of the run's own
images for the parity check; :mod:`graphc.backends.onnx` does the export itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import graphc
from graphc.backends.onnx import (
    SCALING,
    DeployedModel,
    ExportReport,
    check_writable,
    export_module,
    random_inputs,
    require,
)
from graphc.ir.graph import Graph
from graphc.lang.spec import Spec
from graphc.runtime.data.augment import to_float  # pixels / 255: the same scaling as training and eval
from graphc.runtime.data.load import load_dataset
from graphc.runtime.runs.record import RunRecord
from graphc.runtime.runs.weights import Weights, graph_for, load_trained, normalize_of, read_checkpoint

REAL_IMAGES = 64  # data-set images used for parity when a checkpoint and its data are available


def load_model(
    spec: str | Path | Spec | Graph, checkpoint: str | Path | None = None
) -> tuple[Graph, DeployedModel, Weights]:
    """The model to export, in eval mode: a run's weights from ``checkpoint`` (a run directory or a .pt file),
    else the spec's seeded initialisation."""
    if isinstance(spec, (str, Path)):
        spec = graphc.load_spec(spec)
    if checkpoint is None:
        graph = spec if isinstance(spec, Graph) else graph_for(spec)
        model = graphc.compile_graph(graph, seed=graph.train.seed)
        weights = Weights(normalize=normalize_of(graph), seed=graph.train.seed)
    else:
        file, saved = read_checkpoint(Path(checkpoint))
        graph = spec if isinstance(spec, Graph) else graph_for(spec, saved)
        model, weights = load_trained(graph, file, saved)
    return graph, DeployedModel(model, graph.tasks, weights.normalize).eval(), weights


def build_metadata(graph: Graph, weights: Weights) -> dict[str, Any]:
    """What a consumer needs to use the file without the spec: names, classes, input contract, provenance."""
    class_names = {}
    for head in graph.heads:
        task, count = head.attrs["task"], head.attrs["classes"]
        names = weights.class_names.get(task)
        class_names[task] = list(names) if names and len(names) == count else [str(i) for i in range(count)]
    metadata: dict[str, Any] = {
        "version": graphc.__version__,
        "spec_name": graph.name,
        "spec_sha256": graph.sha256,
        "spec": graph.spec_text,
        "tasks": list(graph.tasks),
        "class_names": class_names,
        "class_names_source": "checkpoint" if weights.class_names else "indices (no checkpoint)",
        "outputs": "logits",  # softmax is left to the consumer
        "input": {
            "name": graph.input.name,
            "layout": "NCHW",
            "shape": ["batch", *graph.input.shape],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "scaling": SCALING,
            "channels": {1: "L", 3: "RGB", 4: "RGBA"}.get(graph.input.shape[0], "unknown"),
            "normalize": weights.normalize,
            "normalize_applied": "in_model" if weights.normalize else None,
        },
        "weights": "checkpoint" if weights.source else f"random initialisation (seed {weights.seed})",
    }
    if weights.source:
        metadata["checkpoint"] = {
            "file": weights.source,
            "epoch": weights.epoch,
            "metrics": weights.metrics,
            "seed": weights.seed,
        }
    return metadata


def verification_inputs(shape: tuple[int, ...], weights: Weights) -> tuple[dict[str, torch.Tensor], str | None]:
    """Random [0, 1] images at batch 1 and 7; plus data-set images when the checkpoint's data is at hand."""
    inputs = random_inputs(shape)
    note = None
    if weights.record is not None:
        try:
            images, split = _real_images(weights.record, shape)
            inputs[f"{weights.record.dataset} {split}, batch {len(images)}"] = to_float(images, None)
        except Exception as exc:  # the data is optional here: say why it was skipped, never fail the export on it
            note = f"data-set images skipped: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return inputs, note


def _real_images(record: RunRecord, shape: tuple[int, ...]) -> tuple[torch.Tensor, str]:
    dataset = load_dataset(
        record.data, dataset=record.dataset, root=record.data_root, image_shape=tuple(shape), download=False
    )
    split, name = (dataset.test, "test") if len(dataset.test) else (dataset.val, "val")
    return split.images[:REAL_IMAGES], name


def export_onnx(
    spec: str | Path | Spec | Graph,
    out: str | Path,
    checkpoint: str | Path | None = None,
    opset: int | None = None,
    verify_model: bool = True,
) -> ExportReport:
    """Export a spec (with a run's weights if ``checkpoint`` is given) to ``out``.

    The file is written only if it passes the checker and, unless ``verify_model`` is
    false, the parity check; ``report.passed`` says whether it did.
    """
    require("onnx")
    if verify_model:
        require("onnxruntime")
    check_writable(Path(out))  # before the (slow) model load and export
    graph, model, weights = load_model(spec, checkpoint)
    notes = [weights.note] if weights.note else []
    inputs = None
    if verify_model:
        inputs, note = verification_inputs(graph.input.shape, weights)
        notes += [note] if note else []
    return export_module(
        model,
        graph,
        out,
        build_metadata(graph, weights),
        inputs=inputs,
        notes=notes,
        opset=opset,
        verify_model=verify_model,
    )
