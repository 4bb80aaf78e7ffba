"""``graphc export --onnx``: a spec, or a run's trained weights, to a verified ONNX file.

The runtime's half of export: it finds the weights (a run directory or a .pt file),
the class names and normalisation the run trained with, and a few of the run's own
images for the parity check; :mod:`graphc.backends.onnx` does the export itself.

``graphc export RUN_DIR --onnx OUT`` exports a run as it trained: its own spec copy (spec.toml
with the record's [data] and [train] tables) and its best.pt. A spec file with ``--checkpoint``
must be the run's spec; one that reads another data set (``shared_conv`` with a checkpoint of
``cifar10_folders``) is refused naming both data sets, with the run-directory command to use.
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
from graphc.errors import RunError, SpecError, UsageError
from graphc.ir.graph import Graph
from graphc.lang.spec import Spec
from graphc.runtime.data.augment import to_float  # pixels / 255: the same scaling as training and eval
from graphc.runtime.data.load import load_dataset
from graphc.runtime.metrics import check_targets, heads_of
from graphc.runtime.runs.record import RunRecord, checkpoint_record, read_record, spec_of_run
from graphc.runtime.runs.rundir import BEST, CONFIG, SPEC_COPY, is_run_dir
from graphc.runtime.runs.weights import Weights, graph_for, load_trained, normalize_of, read_checkpoint

REAL_IMAGES = 64  # data-set images used for parity when a checkpoint and its data are available


def load_model(
    spec: str | Path | Spec | Graph, checkpoint: str | Path | None = None
) -> tuple[Graph, DeployedModel, Weights]:
    """The model to export, in eval mode: a run's weights from ``checkpoint`` (a run directory or a .pt file),
    else the spec's seeded initialisation."""
    if isinstance(spec, (str, Path)) and Path(spec).is_dir():  # a run directory: its spec and (default) best.pt
        run_dir = Path(spec)
        spec = spec_of_run_dir(run_dir)
        checkpoint = run_dir if checkpoint is None else checkpoint
    elif isinstance(spec, (str, Path)):
        spec = graphc.load_spec(spec)
    if checkpoint is None:
        graph = spec if isinstance(spec, Graph) else graph_for(spec)
        model = graphc.compile_graph(graph, seed=graph.train.seed)
        weights = Weights(normalize=normalize_of(graph), seed=graph.train.seed)
    else:
        file, saved = read_checkpoint(Path(checkpoint))
        try:
            graph = spec if isinstance(spec, Graph) else graph_for(spec, saved)
        except SpecError:  # most often: the spec reads another data set than the run trained on
            mismatch = data_mismatch(spec, file, saved)
            if mismatch is None:
                raise
            raise UsageError(mismatch) from None
        model, weights = load_trained(graph, file, saved)
    if weights.record is not None and weights.record.targets:  # from a copied run: checked against the heads
        check_targets(heads_of(graph), weights.record.targets)
    return graph, DeployedModel(model, graph.tasks, weights.normalize, units_of(weights.record)).eval(), weights


def units_of(record: RunRecord | None) -> dict[str, tuple[list[float], list[float]]]:
    """task -> (mean, std) of each regression head trained on standardised targets (the run's record):
    what turns its output back into the targets' units."""
    if record is None:
        return {}
    return {task: (list(t.mean), list(t.std)) for task, t in record.targets.items() if t.standardize}


def spec_of_run_dir(run_dir: Path) -> Spec:
    """The spec a run trained, from its directory: its spec.toml with the record's [data] and [train]
    tables (CLI overrides included); for a directory with a checkpoint but no record or spec copy, the
    spec text the checkpoint carries."""
    run_dir = Path(run_dir)
    if (run_dir / CONFIG).is_file() and (run_dir / SPEC_COPY).is_file():
        return spec_of_run(run_dir, read_record(run_dir))
    if not (run_dir / BEST).is_file() and not is_run_dir(run_dir):
        raise UsageError(
            f"{run_dir}: is a directory, neither a spec file nor a run directory (no {CONFIG}, {SPEC_COPY} or "
            f"{BEST}); give a spec file, a built-in spec name, or a run directory of graphc train."
        )
    _, saved = read_checkpoint(run_dir)
    text = saved.get("spec_text")
    if not text:
        raise RunError(f"{run_dir}: has no {SPEC_COPY}, and its {BEST} carries no spec text; give the spec file.")
    spec = graphc.parse_spec(text, name=saved.get("spec_name"))
    record = checkpoint_record(saved, run_dir / BEST)
    return spec if record is None else spec.model_copy(update={"data": record.data, "train": record.train})


def data_mismatch(spec: Spec, file: Path, checkpoint: dict) -> str | None:
    """Why ``spec`` cannot take the weights of ``file`` when the data set it reads is not the one the
    run trained on (None when the data sets agree: the error is then the spec's own problem)."""
    record = checkpoint_record(checkpoint, file)
    if record is None:
        return None
    trained = record.dataset or record.data.dataset
    known = spec.data.known_classes()
    if (
        trained == spec.data.dataset
        and record.classes is not None
        and all(known.get(task) in (None, count) for task, count in record.classes.items())
    ):
        return None
    root = record.data_root or record.data.root
    theirs = ", ".join(f"{task} {count}" for task, count in (record.classes or {}).items())
    ours = ", ".join(f"{task} {count}" for task, count in known.items() if count is not None)
    run_dir = file.parent if is_run_dir(file.parent) else None
    fix = (
        f"Export the run directory instead, which uses the run's own spec copy and best.pt: "
        f"`graphc export {run_dir} --onnx OUT`."
        if run_dir is not None
        else "Export the run directory the checkpoint came from instead (`graphc export RUN_DIR --onnx OUT`), "
        "which uses the run's own spec copy, or give the spec it was trained from."
    )
    return (
        f"{file} was trained on the {trained} data set{f' ({root})' if root else ''}"
        f"{f' with classes {theirs}' if theirs else ''}, but spec '{spec.name}'"
        f"{f' ({spec.source})' if spec.source else ''} reads the {spec.data.dataset} data set"
        f"{f' with classes {ours}' if ours else ''}, so its heads do not fit those weights. {fix}"
    )


def build_metadata(graph: Graph, weights: Weights) -> dict[str, Any]:
    """What a consumer needs to use the file without the spec: names, classes, input contract, provenance."""
    class_names, heads = {}, {}
    record = weights.record
    for head in graph.heads:
        task, count, kind = head.attrs["task"], head.attrs["classes"], head.attrs.get("type", "classification")
        names = weights.class_names.get(task)
        if kind == "binary":  # one logit, of the positive class
            names = ["yes"]
        elif kind == "regression":
            names = [task] if count == 1 else [f"{task}[{i}]" for i in range(count)]
        class_names[task] = list(names) if names and len(names) == count else [str(i) for i in range(count)]
        heads[task] = {
            "type": kind,
            # what the output is: logits (softmax over them for classification, a sigmoid each for binary and
            # multilabel), or a regression head's value in the targets' units
            "output": "value" if kind == "regression" else "logits",
        }
        if kind == "regression":
            targets = record.targets.get(task) if record is not None else None
            heads[task]["standardization"] = (
                {"mean": list(targets.mean), "std": list(targets.std), "applied": "in_model"}
                if targets is not None and targets.standardize
                else None
            )
    metadata: dict[str, Any] = {
        "version": graphc.__version__,
        "spec_name": graph.name,
        "spec_sha256": graph.sha256,
        "spec": graph.spec_text,
        "tasks": list(graph.tasks),
        "class_names": class_names,
        "class_names_source": "checkpoint" if weights.class_names else "indices (no checkpoint)",
        "outputs": "logits",  # softmax is left to the consumer (a regression head's: "heads" says)
        "heads": heads,
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
    dataset = load_dataset(  # the test split (and a few validation images, where there is none): no more
        record.data,
        dataset=record.dataset,
        root=record.data_root,
        limit_train=1,
        limit_val=REAL_IMAGES,
        image_shape=tuple(shape),
        download=False,
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
