"""Transfer learning: start a new run from another run's weights, node by node (``[train] init_from``).

Every node with parameters takes the tensors of the source checkpoint's node of the same name, or
of the node ``init_map`` names, when the two have the same tensors (parameters and buffers, e.g.
batch-norm statistics) of the same shapes; otherwise it keeps its fresh initialisation and the
table :func:`transfer_table` prints says why. A node the map names explicitly must fit: a map that
names an unknown node, or a node whose shapes differ, is a usage error (exit 2), never a silent skip.

The source is read only through :func:`graphc.runtime.runs.weights.read_checkpoint` (``weights_only=True``,
format graphc-checkpoint/2): a run directory means its best.pt (the epoch its run selected by
``train.select``, the weights eval and export use); a file such as ``RUN_DIR/last.pt`` is taken as it is.
The new run's config.json records what was loaded from where (``init_from``); a resume continues
from the run's own last.pt and never reads the source again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.table import Table

from graphc.errors import UsageError, did_you_mean
from graphc.ir.graph import Graph
from graphc.runtime.runs.weights import _strip_wrappers, read_checkpoint


@dataclass(frozen=True)
class NodeLoad:
    """What happened to one node of the new model."""

    node: str
    source: str  # the source node it was (or would have been) loaded from
    loaded: bool
    tensors: int = 0  # tensors copied (parameters and buffers)
    reason: str = ""  # why it was skipped


@dataclass
class Transfer:
    """The outcome of :func:`init_from`: the checkpoint read and one row per node with parameters."""

    file: Path
    spec_name: str | None
    spec_sha256: str | None
    epoch: int | None
    rows: list[NodeLoad] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # source nodes with weights that no node took

    @property
    def loaded(self) -> dict[str, str]:
        return {row.node: row.source for row in self.rows if row.loaded}

    def to_config(self) -> dict:
        """config.json's ``init_from``: the run's provenance."""
        return {
            "checkpoint": str(Path(self.file).resolve()),
            "spec": self.spec_name,
            "spec_sha256": self.spec_sha256,
            "epoch": self.epoch,
            "loaded": self.loaded,
            "skipped": {row.node: row.reason for row in self.rows if not row.loaded},
        }


def _by_node(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """State-dict entries grouped by node (keys are ``node.layer.tensor``), keyed by the rest of the key."""
    nodes: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        node, _, rest = key.partition(".")
        nodes.setdefault(node, {})[rest] = tensor
    return nodes


def _misfit(here: Mapping[str, torch.Tensor], there: Mapping[str, torch.Tensor]) -> str:
    """Why a source node's tensors do not fit a node of the new model ('' when they do)."""
    for key, tensor in here.items():
        if key in there and tuple(there[key].shape) != tuple(tensor.shape):
            return f"shape mismatch: {key} is {list(tensor.shape)} here, {list(there[key].shape)} in the source"
    missing, extra = sorted(set(here) - set(there)), sorted(set(there) - set(here))
    if missing or extra:
        parts = ([f"the source lacks {', '.join(missing[:3])}"] if missing else []) + (
            [f"the source has {', '.join(extra[:3])} too"] if extra else []
        )
        return "different layers: " + "; ".join(parts)
    return ""


def init_from(model: torch.nn.Module, graph: Graph, source: Path, mapping: Mapping[str, str] | None = None) -> Transfer:
    """Copy into ``model`` (compiled from ``graph``) the tensors of the checkpoint at ``source`` (a run
    directory: its best.pt; or a .pt file), node by node, by name or by ``mapping`` (new -> source node).

    Raises UsageError for a map entry that names a node unknown on either side (or one without
    parameters) or whose shapes do not fit; RunError (from the checkpoint reader) for a missing or
    unreadable source.
    """
    mapping = dict(mapping or {})
    file, checkpoint = read_checkpoint(Path(source))
    target = _by_node(model.state_dict())
    weighted = [node.name for node in graph if node.num_params > 0]
    found = _by_node(_strip_wrappers(checkpoint.get("model") or {}))
    for new, old in mapping.items():
        if new not in graph:
            raise UsageError(
                f"init_map names node '{new}', but spec '{graph.name}' has no node of that name. "
                + (did_you_mean(new, weighted) or f"Its nodes with parameters: {', '.join(weighted)}.")
            )
        if new not in weighted:
            raise UsageError(
                f"init_map names node '{new}', a {graph[new].kind} node, which has no parameters to load; "
                f"map only nodes with parameters ({', '.join(weighted)})."
            )
        if old not in found:
            raise UsageError(
                f"init_map loads node '{new}' from '{old}', but {file} has no node '{old}' with weights. "
                + (did_you_mean(old, list(found)) or f"Its nodes with weights: {', '.join(found)}.")
            )
        reason = _misfit(target[new], found[old])
        if reason:
            raise UsageError(
                f"init_map loads node '{new}' from '{old}' of {file}, but they do not fit: {reason}. "
                "Map a node of the same layers and shapes, or remove the entry (the node then starts fresh)."
            )
    transfer = Transfer(
        file=file,
        spec_name=checkpoint.get("spec_name"),
        spec_sha256=checkpoint.get("spec_sha256"),
        epoch=checkpoint.get("epoch"),
    )
    used = set()
    with torch.no_grad():
        for name in weighted:
            old = mapping.get(name, name)
            if old not in found:
                transfer.rows.append(NodeLoad(name, old, False, reason="not in the source"))
                continue
            reason = _misfit(target[name], found[old])
            if reason:
                transfer.rows.append(NodeLoad(name, old, False, reason=reason))
                continue
            for key, tensor in target[name].items():  # state-dict tensors share the model's storage
                tensor.copy_(found[old][key])
            used.add(old)
            transfer.rows.append(NodeLoad(name, old, True, tensors=len(target[name])))
    transfer.unused = [name for name in found if name not in used]
    return transfer


def transfer_table(transfer: Transfer) -> Table:
    """The table ``graphc train`` prints before training: each node with parameters, loaded or skipped and why."""
    where = (
        f"epoch {transfer.epoch} of spec '{transfer.spec_name}'" if transfer.spec_name else f"epoch {transfer.epoch}"
    )
    table = Table(title=f"weights from {transfer.file} ({where})", title_justify="left")
    for column in ("node", "status", "from", "tensors", "why"):
        table.add_column(column, justify="right" if column == "tensors" else "left")
    for row in transfer.rows:
        table.add_row(
            row.node,
            "loaded" if row.loaded else "skipped",
            row.source,
            str(row.tensors) if row.loaded else "",
            row.reason if not row.loaded else "",
        )
    if transfer.unused:
        table.caption = f"not used from the source: {', '.join(transfer.unused)}"
        table.caption_justify = "left"
    return table
