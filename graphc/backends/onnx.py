"""IR -> ONNX: a deployable file with checked output names and self-describing metadata.

``export_module(model, graph, out, metadata)`` takes a compiled module wrapped as a
:class:`DeployedModel` (so that the graph's contract is explicit), exports it with the
torch.export-based ("dynamo") exporter, checks it, verifies it against PyTorch in
ONNX Runtime and only then writes it. Finding a run's weights, data and class names
is the runtime's job (``graphc.runtime.export``)::

    input   <input node name>  float32 (batch, C, H, W), pixels / 255 in [0, 1];
            the spec's mean/std normalisation, if any, is applied inside the model
    outputs <task>             float32 (batch, classes) logits, one per head, in spec order

Why the dynamo exporter: it is torch's default and supported path (the TorchScript
exporter, ``dynamo=False``, is deprecated), and with ``dynamic_shapes`` it gives
every output a symbolic ``batch`` dimension. Both exporters flatten a dict output
by position and only *label* the results with ``output_names``, so the model is
wrapped to return a tuple in spec order and the names are then checked against
the values (``verify``): a swapped pair of heads fails the check.

Metadata (``metadata_props``, JSON values, read back with ``read_metadata``) makes
the file self-describing for consumers such as ``graphc predict``, which take a file from
anywhere through ``load_model_file`` and ``read_deployment``: every way its metadata can
disagree with its types or its graph is a RunError naming the key, before anything runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from graphc.errors import RunError, UsageError
from graphc.files import atomic_write_bytes
from graphc.ir.graph import Graph

ATOL = 1e-4  # fp32 tolerance on logits, absolute
PREFIX = "graphc."
SCALING = "pixel / 255"  # the input contract's version: float32 in [0, 1], NCHW
VERIFY_BATCHES = (1, 7)


# --------------------------------------------------------------------------- the deployed model


class DeployedModel(nn.Module):
    """The compiled model as a deployment sees it: [0, 1] pixels in, logits per task out (a tuple in spec order).

    The spec's normalisation lives here, inside the exported graph, so a consumer only
    has to scale pixels to [0, 1] and cannot forget or misapply the mean and std.
    """

    def __init__(
        self,
        model: nn.Module,
        tasks: tuple[str, ...],
        normalize: Mapping[str, Any] | None = None,
        units: Mapping[str, tuple[list[float], list[float]]] | None = None,
    ):
        super().__init__()
        self.model = model
        self.tasks = tuple(tasks)
        self.normalize = normalize is not None
        if normalize is not None:
            self.register_buffer("mean", torch.tensor(normalize["mean"], dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(normalize["std"], dtype=torch.float32).view(1, -1, 1, 1))
        # Regression heads trained on z-scored targets: task -> (mean, std) per output, so that the
        # deployed model answers in the targets' own units (value = output * std + mean).
        self.units = dict(units or {})
        for i, (mean, std) in enumerate(self.units.values()):
            self.register_buffer(f"target_mean_{i}", torch.tensor(mean, dtype=torch.float32).view(1, -1))
            self.register_buffer(f"target_std_{i}", torch.tensor(std, dtype=torch.float32).view(1, -1))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.normalize:
            image = (image - self.mean) / self.std  # (B, C, H, W)
        outputs = dict(self.model(image))
        for i, task in enumerate(self.units):
            outputs[task] = outputs[task] * getattr(self, f"target_std_{i}") + getattr(self, f"target_mean_{i}")
        return tuple(outputs[task] for task in self.tasks)  # spec order, never dict order


def require(package: str):
    """Import ``onnx``/``onnxruntime``/``onnxscript`` or say clearly how to get it."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise RunError(
            f"ONNX export needs the Python package '{package}', which is not installed. "
            "Install it with `pip install onnx onnxscript onnxruntime` (graphc's own dependencies)."
        ) from None


# --------------------------------------------------------------------------- metadata


def read_metadata(model: str | Path | Any, source: str | None = None) -> dict[str, Any]:
    """graphc's metadata of an ONNX file (or ModelProto), JSON values decoded; {} if it has none.

    The file may come from anywhere: a value that is not JSON, or a key given twice, is a
    RunError naming the key (``source`` names the file in messages)."""
    onnx = require("onnx")
    if isinstance(model, onnx.ModelProto):
        proto = model
    else:
        proto = load_model_file(model)
        source = source or str(model)
    where = f"{source}: " if source else ""
    metadata: dict[str, Any] = {}
    for prop in proto.metadata_props:
        if not prop.key.startswith(PREFIX):
            continue
        key = prop.key[len(PREFIX) :]
        if key in metadata:
            raise RunError(
                f"{where}the metadata key '{prop.key}' appears twice; the file is damaged or was edited. {REEXPORT}"
            )
        try:
            metadata[key] = json.loads(prop.value)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; absurd nesting recurses
            reason = (
                f"{exc.msg} at character {exc.pos}" if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
            )
            raise RunError(
                f"{where}the metadata '{prop.key}' is not valid JSON ({reason}); the file is damaged or was edited. {REEXPORT}"
            ) from None
    return metadata


def _write_metadata(proto, metadata: Mapping[str, Any]) -> None:
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = PREFIX + key, json.dumps(value)


# --------------------------------------------------------------------------- reading a file back

REEXPORT = "Re-export it with `graphc export SPEC --onnx FILE`."
MAX_INPUT_SIDE = 16384  # pixels: a taller or wider input in a file's metadata is damage, not a model


def load_model_file(path: str | Path):
    """An ONNX file's ModelProto, read as protobuf whatever its suffix, with no external data.

    graphc writes every weight into the one file; a file that points to other files is
    refused rather than followed (it could name any file on the machine)."""
    onnx = require("onnx")
    path = Path(path)
    try:
        if path.stat().st_size >= 2**31:  # protobuf's limit: no single-file ONNX model is this large
            raise RunError(f"{path}: is over 2 GiB, larger than any single-file ONNX model; is it a .onnx file?")
        data = path.read_bytes()
    except OSError as exc:
        raise RunError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning and friends
        raise RunError(f"{path}: cannot be read as an ONNX model ({type(exc).__name__}). Is it a .onnx file?") from None
    if any(tensor.data_location == onnx.TensorProto.EXTERNAL for tensor in _tensors(proto.graph)):
        raise RunError(
            f"{path}: keeps weights in external data files; graphc reads single-file models only "
            f"(as graphc export writes them). {REEXPORT}"
        )
    return proto


def _tensors(graph):
    """Every tensor a graph holds: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


@dataclass(frozen=True)
class Deployment:
    """What a graphc ONNX file promises a consumer, checked against its graph by :func:`read_deployment`."""

    input_name: str
    input_shape: tuple[int, int, int]  # (C, H, W); float32 pixels / 255, NCHW
    tasks: tuple[str, ...]  # one output of logits per task, named after it
    class_names: dict[str, list[str]]  # task -> a name per logit
    metadata: dict[str, Any]
    # task -> head type (metadata "heads"; a file of graphc before 0.5 has none: every head a classifier)
    types: dict[str, str] = field(default_factory=dict)

    def type_of(self, task: str) -> str:
        return self.types.get(task, "classification")


def read_deployment(proto, source: str) -> Deployment:
    """The metadata's contract (input, tasks, class names), checked for types and against the graph.

    Every way a file from elsewhere can disagree with what ``export_module`` writes is a
    RunError naming ``source``, the key and what was expected, before anything runs."""
    meta = read_metadata(proto, source)

    def bad(what: str) -> RunError:
        return RunError(f"{source}: {what}. {REEXPORT}")

    needed = ("tasks", "class_names", "input")
    if not any(key in meta for key in needed):
        raise RunError(
            f"{source}: has no graphc metadata ({', '.join(PREFIX + k for k in needed)}), so its input scaling and class "
            "names are unknown. Export it with `graphc export SPEC --onnx FILE`."
        )
    missing = [PREFIX + key for key in needed if key not in meta]
    if missing:
        raise bad(f"its graphc metadata lacks {', '.join(missing)}")

    tasks = meta["tasks"]
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) and t for t in tasks):
        raise bad(f"metadata '{PREFIX}tasks' is {_shown(tasks)}, expected a non-empty list of task names")
    if len(set(tasks)) != len(tasks):
        raise bad(f"metadata '{PREFIX}tasks' names a task twice: {_shown(tasks)}")
    if meta.get("outputs", "logits") != "logits":
        raise bad(f"metadata '{PREFIX}outputs' is {_shown(meta['outputs'])}; graphc models output logits")

    spec_input = meta["input"]
    if not isinstance(spec_input, dict):
        raise bad(
            f"metadata '{PREFIX}input' is {_shown(spec_input)}, expected an object with name, layout, shape and scaling"
        )
    name = spec_input.get("name")
    if not isinstance(name, str) or not name:
        raise bad(f"metadata '{PREFIX}input' has name {_shown(name)}, expected the input's name")
    if spec_input.get("scaling") != SCALING or spec_input.get("layout") != "NCHW":
        raise RunError(
            f"{source}: expects input {_shown(spec_input.get('layout'))} scaled as {_shown(spec_input.get('scaling'))}; this graphc "
            f"knows only NCHW scaled as {SCALING!r}. Re-export it with this version of graphc."
        )
    shape = spec_input.get("shape")
    dims = shape[1:] if isinstance(shape, list) and len(shape) == 4 else None
    if dims is None or not all(type(d) is int and d >= 1 for d in dims):
        raise bad(
            f"metadata '{PREFIX}input' has shape {_shown(shape)}, expected [batch, channels, height, width] with positive whole numbers"
        )
    channels, height, width = dims
    if channels not in (1, 3, 4):
        raise bad(f"metadata '{PREFIX}input' has {channels} channels; images give 1 (L), 3 (RGB) or 4 (RGBA)")
    if max(height, width) > MAX_INPUT_SIDE:
        raise bad(
            f"metadata '{PREFIX}input' has an input of {width}x{height} pixels; graphc takes sides up to {MAX_INPUT_SIDE}"
        )
    _check_normalize(spec_input, channels, bad)

    class_names = meta["class_names"]
    if not isinstance(class_names, dict):
        raise bad(
            f"metadata '{PREFIX}class_names' is {_shown(class_names)}, expected an object: task -> list of class names"
        )
    for task in tasks:
        names = class_names.get(task)
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise bad(
                f"metadata '{PREFIX}class_names' gives task '{task}' {_shown(names)}, expected a list of class names"
            )

    _check_graph(proto, name, dims, tasks, class_names, bad)
    types = _head_types(meta.get("heads"), tasks, bad)
    return Deployment(
        name, (channels, height, width), tuple(tasks), {t: list(class_names[t]) for t in tasks}, meta, types
    )


HEAD_TYPES = ("classification", "binary", "multilabel", "regression")


def _head_types(heads: Any, tasks: list[str], bad) -> dict[str, str]:
    """task -> type from metadata 'heads' (None: a file of graphc before 0.5, every head a classifier)."""
    if heads is None:
        return {}
    if not isinstance(heads, dict):
        raise bad(f"metadata '{PREFIX}heads' is {_shown(heads)}, expected an object: task -> {{type, output}}")
    types = {}
    for task in tasks:
        head = heads.get(task)
        kind = head.get("type") if isinstance(head, dict) else None
        if kind not in HEAD_TYPES:
            raise bad(
                f"metadata '{PREFIX}heads' gives task '{task}' {_shown(head)}, expected an object whose type is "
                f"one of {', '.join(HEAD_TYPES)}"
            )
        types[task] = kind
    return types


def _check_normalize(spec_input: Mapping[str, Any], channels: int, bad) -> None:
    """The metadata's normalisation must be one applied inside the model: the consumer feeds [0, 1] pixels."""
    normalize = spec_input.get("normalize")
    if normalize is None:
        return
    ok = (
        isinstance(normalize, dict)
        and all(
            isinstance(normalize.get(k), list)
            and len(normalize[k]) == channels
            and all(type(v) in (int, float) and math.isfinite(v) for v in normalize[k])
            for k in ("mean", "std")
        )
        and all(v > 0 for v in normalize["std"])
    )
    if not ok:
        raise bad(
            f"metadata '{PREFIX}input' has normalize {_shown(normalize)}, expected null or mean and std lists "
            f"of {channels} finite numbers (std positive)"
        )
    if spec_input.get("normalize_applied") != "in_model":
        raise bad(
            f"metadata '{PREFIX}input' has normalize_applied {_shown(spec_input.get('normalize_applied'))}: the file expects its "
            'caller to normalise, but graphc\'s contract applies mean and std inside the model ("in_model")'
        )


def _check_graph(
    proto, name: str, dims: Sequence[int], tasks: Sequence[str], class_names: Mapping[str, list], bad
) -> None:
    """The graph has the one input and the outputs the metadata names, of the shapes it states."""
    onnx = require("onnx")
    weights = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in weights]
    if [i.name for i in inputs] != [name]:
        raise bad(f"its graph's inputs are {[i.name for i in inputs]}, but its metadata names the input '{name}'")
    outputs = {o.name: o for o in proto.graph.output}
    absent = [t for t in tasks if t not in outputs]
    if absent:
        raise bad(
            f"its metadata names the task(s) {absent}, but its graph has no such output (outputs: {list(outputs)})"
        )
    extra = [o for o in outputs if o not in tasks]
    if extra:
        raise bad(f"its graph has output(s) {extra} that its metadata's tasks {list(tasks)} do not name")

    def static(value) -> list[int | str] | None:
        """The declared dimensions (numbers, or names such as 'batch' for symbolic ones); None if undeclared."""
        if not value.type.HasField("tensor_type"):
            return None
        tensor = value.type.tensor_type
        if tensor.elem_type != onnx.TensorProto.FLOAT:
            raise bad(
                f"its graph's '{value.name}' is {onnx.TensorProto.DataType.Name(tensor.elem_type)}, expected FLOAT (float32)"
            )
        if not tensor.HasField("shape"):
            return None
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]

    declared = static(inputs[0])
    if declared is not None and (
        len(declared) != 4 or any(isinstance(d, int) and d != want for d, want in zip(declared[1:], dims))
    ):
        raise bad(
            f"its graph's input '{name}' has shape {declared}, but its metadata says [batch, {', '.join(map(str, dims))}]"
        )
    for task in tasks:
        declared = static(outputs[task])
        if declared is None:
            continue
        if len(declared) != 2:
            raise bad(f"its graph's output '{task}' has shape {declared}, expected [batch, classes] logits")
        if isinstance(declared[1], int) and declared[1] != len(class_names[task]):
            raise bad(
                f"its output '{task}' gives {declared[1]} logits but its metadata has {len(class_names[task])} class names "
                f"for task '{task}'; a name is needed for each class"
            )


def _shown(value: Any, limit: int = 80) -> str:
    """A metadata value in a message: as JSON, cut short."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- checks


def check_structure(proto, graph: Graph) -> None:
    """Input named after the input node; outputs named after the tasks, in spec order; a symbolic batch axis on each."""
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    problems = []
    if inputs != [graph.input.name]:
        problems.append(f"inputs are {inputs}, expected ['{graph.input.name}']")
    if outputs != list(graph.tasks):
        problems.append(f"outputs are {outputs}, expected {list(graph.tasks)} (the tasks in spec order)")
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if not dims or not dims[0].dim_param:
            shown = [d.dim_param or d.dim_value for d in dims]
            problems.append(f"'{value.name}' has shape {shown}, expected a symbolic batch dimension first")
    if problems:
        raise RunError("the exported ONNX graph is not what graphc promises: " + "; ".join(problems) + ".")


@dataclass(frozen=True)
class Parity:
    """One row of the parity table: one head on one set of inputs."""

    inputs: str  # e.g. "random, batch 7"
    task: str
    max_abs_diff: float
    argmax_agreement: float  # fraction of images with the same top class
    ties: int  # disagreements where torch's top two logits are within the tolerance
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(session, reference: DeployedModel, inputs: Mapping[str, torch.Tensor], atol: float = ATOL) -> list[Parity]:
    """Run ONNX Runtime and PyTorch on the same inputs; compare each ONNX output with the torch output of the
    task it is *named* after (so a mislabelled output fails, whatever its position)."""
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]
    rows = []
    for label, images in inputs.items():
        with torch.inference_mode():
            expected = dict(zip(reference.tasks, (t.numpy() for t in reference(images))))
        results = dict(zip(output_names, session.run(None, {input_name: images.numpy()})))
        for task in reference.tasks:
            if task in reference.units:  # a value in the targets' units: the tolerance scaled with them, no argmax
                scale = max(1.0, *reference.units[task][1])
                rows.append(_compare(label, task, results, expected, atol * scale, values=True))
            else:
                rows.append(_compare(label, task, results, expected, atol))
    return rows


def _compare(
    label: str, task: str, results: Mapping[str, Any], expected: Mapping[str, Any], atol: float, values: bool = False
) -> Parity:
    if task not in results:
        return Parity(label, task, math.nan, 0.0, 0, f"no ONNX output is named '{task}'")
    got, want = results[task], expected[task]
    if got.shape != want.shape:
        return Parity(
            label,
            task,
            math.nan,
            0.0,
            0,
            f"output '{task}' has shape {list(got.shape)}, task '{task}' gives {list(want.shape)}",
        )
    diff = float(np.abs(got - want).max())
    # a regression head's outputs are numbers, not scores of classes: its "argmax" agrees by definition
    same = np.ones(len(want), bool) if values else got.argmax(1) == want.argmax(1)
    ordered = np.sort(want, axis=1)
    tie = (ordered[:, -1] - ordered[:, -2] <= atol) if want.shape[1] > 1 else np.zeros(len(want), bool)
    ties = int((~same & tie).sum())
    problem = None
    if not diff <= atol or not (same | tie).all():
        problem = f"max |diff| {diff:.3g} > {atol:g}" if not diff <= atol else "argmax disagrees"
        swapped = [
            other
            for other, values in expected.items()
            if other != task and values.shape == got.shape and float(np.abs(got - values).max()) <= atol
        ]
        if swapped:
            problem = f"output '{task}' carries the values of task '{swapped[0]}' (outputs mislabelled)"
    return Parity(label, task, diff, float(same.mean()), ties, problem)


# --------------------------------------------------------------------------- export


@dataclass
class ExportReport:
    path: str
    spec: str
    tasks: list[str]
    opset: int
    size_bytes: int
    export_s: float
    verify_s: float | None
    parity: list[Parity]
    metadata: dict[str, Any]
    notes: list[str]
    written: bool

    @property
    def passed(self) -> bool:
        return all(row.ok for row in self.parity)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["parity"] = [
            {**asdict(row), "max_abs_diff": row.max_abs_diff if math.isfinite(row.max_abs_diff) else None, "ok": row.ok}
            for row in self.parity
        ]
        out["verified"] = bool(self.parity)
        out["passed"] = self.passed
        out["metadata"] = {k: v for k, v in self.metadata.items() if k != "spec"}
        return out


def check_writable(path: Path) -> None:
    """Fail before the (slow) export if ``path`` cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--onnx {path}: is a directory; give a file name such as {path / 'model.onnx'}.")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"--onnx {path}: the directory {parent} does not exist; create it or choose another path.")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise UsageError(f"--onnx {path}: cannot write in {parent} ({exc.strerror}); choose another path.") from None


@contextlib.contextmanager
def _quiet():
    """The exporter reports progress on stdout and version-conversion fallbacks as warnings and log
    records (with tracebacks); graphc reports the outcome itself, so silence them for the call."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def to_onnx(model: DeployedModel, graph: Graph, opset: int | None = None):
    """Export ``model`` (eval mode) with the dynamo exporter: a ModelProto with named I/O and a symbolic batch axis."""
    require("onnxscript")
    onnx = require("onnx")
    if opset is not None and not 13 <= opset <= onnx.defs.onnx_opset_version():
        raise UsageError(
            f"--opset {opset}: expected 13 to {onnx.defs.onnx_opset_version()} (the installed onnx's newest)."
        )
    clash = graph.input.name in graph.tasks
    if clash:
        raise UsageError(
            f"the input node '{graph.input.name}' has the name of a task; ONNX needs distinct input and output names. "
            "Rename the input node."
        )
    example = torch.rand(2, *graph.input.shape)  # batch 2: torch.export specialises a batch of 1
    try:
        with _quiet():
            program = torch.onnx.export(
                model,
                (example,),
                input_names=[graph.input.name],
                output_names=list(graph.tasks),
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; the user needs the gist, not its traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(f"ONNX export of spec '{graph.name}' failed ({type(exc).__name__}: {first}).") from None
    proto = program.model_proto
    if opset is not None and _opset_of(proto) != opset:
        raise RunError(
            f"the exporter could not convert spec '{graph.name}' to opset {opset} (it produced opset {_opset_of(proto)}). "
            "Choose a newer --opset, or omit it for the exporter's own."
        )
    proto.graph.name = graph.name
    proto.doc_string = graph.description or f"graphc spec {graph.name}"
    return proto


def random_inputs(shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Seeded random [0, 1] images at batch 1 and 7: the parity check's inputs when no data is at hand."""
    g = torch.Generator().manual_seed(0)
    return {f"random, batch {b}": torch.rand(b, *shape, generator=g) for b in VERIFY_BATCHES}


def export_module(
    model: DeployedModel,
    graph: Graph,
    out: str | Path,
    metadata: Mapping[str, Any],
    *,
    inputs: Mapping[str, torch.Tensor] | None = None,
    notes: Sequence[str] = (),
    opset: int | None = None,
    verify_model: bool = True,
) -> ExportReport:
    """Export ``model`` (eval mode; ``graph`` is its IR) to ``out`` with ``metadata`` embedded.

    The file is written only if it passes the checker and, unless ``verify_model`` is
    false, the parity check on ``inputs`` (default: :func:`random_inputs`);
    ``report.passed`` says whether it did.
    """
    onnx = require("onnx")
    if verify_model:
        ort = require("onnxruntime")
    out = Path(out)
    check_writable(out)

    start = time.perf_counter()
    proto = to_onnx(model, graph, opset)
    export_s = time.perf_counter() - start
    _write_metadata(proto, metadata)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise RunError(
            f"the exported ONNX model of spec '{graph.name}' fails onnx.checker: {str(exc).splitlines()[0]}"
        ) from None
    check_structure(proto, graph)
    data = proto.SerializeToString()

    parity: list[Parity] = []
    verify_s = None
    if verify_model:
        start = time.perf_counter()
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        parity = verify(session, model, inputs if inputs is not None else random_inputs(graph.input.shape))
        verify_s = time.perf_counter() - start

    report = ExportReport(
        path=str(out),
        spec=graph.name,
        tasks=list(graph.tasks),
        opset=_opset_of(proto),
        size_bytes=len(data),
        export_s=export_s,
        verify_s=verify_s,
        parity=parity,
        metadata=dict(metadata),
        notes=list(notes),
        written=False,
    )
    if report.passed:
        try:
            atomic_write_bytes(out, data)
        except OSError as exc:
            raise RunError(f"{out}: cannot be written ({exc.strerror}).") from None
        report.written = True
    return report


def _opset_of(proto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
