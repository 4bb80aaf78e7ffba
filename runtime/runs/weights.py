"""A run's trained weights in a compiled model, or a clear reason why they don't fit.

``read_checkpoint`` takes a run directory (its best.pt) or a .pt file;
``load_trained`` compiles the graph and loads the weights, naming the node and
tensor that does not fit, or the spec field that changed what the model computes.
Export, predict and eval all load weights through here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

import graphc
from graphc.errors import RunError
from graphc.ir.graph import Graph
from graphc.runtime.runs.checkpoint import load_checkpoint
from graphc.runtime.runs.record import RunRecord, checkpoint_record
from graphc.runtime.runs.rundir import BEST, is_run_dir

if TYPE_CHECKING:
    from graphc.lang.spec import Spec


@dataclass(frozen=True)
class Weights:
    """Where the model's weights came from: a checkpoint of a run, or a seeded initialisation."""

    source: str | None = None  # checkpoint file; None for random initialisation
    epoch: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # validation metrics of that epoch
    class_names: dict[str, list[str]] = field(default_factory=dict)
    normalize: dict | None = None  # the normalisation the run trained with
    record: RunRecord | None = None  # the run's record (its data, for real-image parity)
    note: str | None = None
    seed: int | None = None


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint file, or a run directory (then its best.pt)."""
    path = Path(path)
    if path.is_dir():
        if (path / BEST).is_file():
            return path / BEST
        what = "run directory" if is_run_dir(path) else "directory"
        raise RunError(
            f"{path}: this {what} has no {BEST}. A run writes it after its first epoch; "
            "pass a run directory of a run that completed an epoch, or a .pt file."
        )
    return path


def read_checkpoint(path: Path) -> tuple[Path, dict]:
    file = resolve_checkpoint(path)
    return file, load_checkpoint(file)


def graph_for(spec: Spec, checkpoint: Mapping[str, Any] | None = None) -> Graph:
    """Build the IR; with a checkpoint, with the run's class counts (a folder data set's are known only from disk).

    A spec read from a run's copy (spec.toml) without a ``name`` takes its name from the
    file; when its text is the checkpoint's own, the checkpoint's name is the right one.
    """
    classes = None
    if checkpoint is not None:
        record = checkpoint_record(checkpoint)
        classes = record.classes if record is not None else None
        name = checkpoint.get("spec_name")
        if name and spec.name != name and spec.sha256 == checkpoint.get("spec_sha256"):
            spec = spec.model_copy(update={"name": name})
    return graphc.build_graph(spec, classes=classes)


def load_trained(graph: Graph, file: Path, checkpoint: Mapping[str, Any]) -> tuple[nn.Module, Weights]:
    """Compile ``graph`` and load the checkpoint's weights into it; a clear RunError if it is another spec's."""
    name, sha = checkpoint.get("spec_name"), checkpoint.get("spec_sha256")
    if name != graph.name:
        raise RunError(
            f"{file} is a checkpoint of spec '{name}', not of '{graph.name}' ({graph.source or 'the spec given'}). "
            f"Hint: use the spec the run was trained from (its run directory keeps a copy as spec.toml)."
        )
    model = graphc.compile_graph(graph, seed=0)
    different = (
        f" (its spec text differs: sha256 {str(sha)[:12]}... vs {graph.sha256[:12]}...)" if sha != graph.sha256 else ""
    )
    state = _strip_wrappers(checkpoint.get("model") or {}, model.state_dict().keys())
    problems = _state_dict_problems(model.state_dict(), state)
    if problems:
        shown = problems[:6] + ([f"and {len(problems) - 6} more"] if len(problems) > 6 else [])
        raise RunError(
            f"{file}: its weights do not fit spec '{graph.name}'{different}: " + "; ".join(shown) + ". "
            "Hint: use the spec the run was trained from (its run directory keeps a copy as spec.toml)."
        )
    note = None
    if sha != graph.sha256:
        changes = _inference_changes(graph, checkpoint)
        if changes:
            raise RunError(
                f"{file} was trained from a different version of spec '{graph.name}'{different}; the weights fit "
                f"but the model computes something else: {'; '.join(changes)}. "
                "Hint: use the spec the run was trained from (its run directory keeps a copy as spec.toml)."
            )
        note = "the spec text differs from the checkpoint's, but not in anything inference uses"
    model.load_state_dict(state)
    record = checkpoint_record(checkpoint, file)
    metrics = {k: v for k, v in (checkpoint.get("metrics") or {}).items() if k.startswith("val/")}
    weights = Weights(
        source=str(file),
        epoch=checkpoint.get("epoch"),
        metrics=metrics,
        class_names={k: list(v) for k, v in (checkpoint.get("class_names") or {}).items()},
        normalize=normalize_json(record.data.normalize) if record is not None else normalize_of(graph),
        record=record,
        note=note,
        seed=record.seed if record is not None else None,
    )
    return model, weights


WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # added by DistributedDataParallel and torch.compile


def _strip_wrappers(state: Mapping[str, torch.Tensor], expected: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """Keys saved from a DDP-wrapped or torch.compile'd module carry the wrapper's prefix on every
    key; the weights are the same. A prefix on only some keys is a node's name (a node may be
    called ``module``), and keys that already fit the model are left as they are."""
    clean = dict(state)
    if set(clean) == set(expected):
        return clean
    stripped = True
    while clean and stripped:  # DDP(compile(m)) and compile(DDP(m)) nest the two prefixes
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if all(key.startswith(prefix) for key in clean):
                clean = {key.removeprefix(prefix): value for key, value in clean.items()}
                stripped = True
    return clean


def _state_dict_problems(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> list[str]:
    """What does not fit, per parameter, naming the node (state-dict keys start with the node's name)."""
    problems = []
    for key, tensor in expected.items():
        node = key.split(".")[0]
        if key not in found:
            problems.append(f"node '{node}': '{key}' {list(tensor.shape)} is missing from the checkpoint")
        elif tuple(found[key].shape) != tuple(tensor.shape):
            problems.append(
                f"node '{node}': '{key}' expects {list(tensor.shape)}, checkpoint has {list(found[key].shape)}"
            )
    for key in found:
        if key not in expected:
            problems.append(
                f"the checkpoint has '{key}' {list(found[key].shape)}, which spec node '{key.split('.')[0]}' does not"
            )
    return problems


# Node attributes that change nothing at inference (eval mode, no gradients).
_TRAINING_ONLY = frozenset(
    {"loss_weight", "label_smoothing", "dropout", "reuse_gradient", "trainable", "unfreeze_after"}
)


def _inference_changes(graph: Graph, checkpoint: Mapping[str, Any]) -> list[str]:
    """Differences between ``graph`` and the checkpoint's spec that change what the model computes."""
    text = checkpoint.get("spec_text")
    if not text:
        return ["the checkpoint holds no spec text to compare with"]
    try:
        record = checkpoint_record(checkpoint)
        classes = record.classes if record is not None else None
        trained = graphc.build_graph(graphc.parse_spec(text, name=graph.name), classes=classes)
    except graphc.SpecError as exc:
        return [f"the checkpoint's spec no longer builds ({exc.first})"]
    changes = []
    for node in graph:
        if node.name not in trained:
            changes.append(f"node '{node.name}' is new")
            continue
        old = trained[node.name]
        if (node.kind, node.inputs) != (old.kind, old.inputs):
            changes.append(f"node '{node.name}' reads {list(node.inputs)}, was {list(old.inputs)}")
        for key in sorted(set(node.attrs) | set(old.attrs)):
            if key not in _TRAINING_ONLY and node.attrs.get(key) != old.attrs.get(key):
                changes.append(
                    f"node '{node.name}', field '{key}': {node.attrs.get(key)!r}, was {old.attrs.get(key)!r}"
                )
    changes += [f"node '{n.name}' was removed" for n in trained if n.name not in graph]
    if graph.layers.bn_eps != trained.layers.bn_eps:
        changes.append(f"layers.bn_eps: {graph.layers.bn_eps}, was {trained.layers.bn_eps}")
    if graph.head_order != trained.head_order:
        changes.append(f"head order {list(graph.head_order)}, was {list(trained.head_order)}")
    return changes


def normalize_of(graph: Graph) -> dict | None:
    return normalize_json(graph.data.normalize)


def normalize_json(normalize) -> dict | None:
    """A [data] normalize table as the exported model's metadata holds it (None: no normalisation)."""
    return normalize.model_dump(mode="json") if normalize is not None else None
