"""Frozen nodes: ``trainable = false`` on a node (or ``graphc train --freeze NODE``).

A frozen node's parameters get no gradient updates: they have ``requires_grad`` off (gradients
still flow *through* the node to the trainable nodes before it) and are left out of the
optimiser, so weight decay and momentum do not touch them either. Its norm layers stay in eval
mode while the rest of the model trains: batch norm then normalises with its running statistics
and does not update them, so the node computes exactly what it computed in the run it came from.
(Dropout inside a frozen node still drops: it has no state to keep.)

With ``unfreeze_after = N`` the node joins training at the start of epoch N + 1: its parameters
enter the optimiser as a new group at the schedule's current learning rate, following the same
schedule from there, with fresh optimiser state (``graphc.runtime.train.optim.add_param_group``), and its
norm layers train again. A checkpoint of epoch E holds the groups of every node unfrozen by then,
so a resume re-creates them (:func:`unfreeze_due` with E - 1) before it loads the optimiser state.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from graphc.errors import UsageError, did_you_mean
from graphc.ir.graph import Graph
from graphc.lang.spec import Spec

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm)  # batch, instance, group and layer norm


def freeze_plan(graph: Graph) -> dict[str, int | None]:
    """The nodes frozen at the start and the epochs after which each joins training (None: never)."""
    return {node.name: node.attrs.get("unfreeze_after") for node in graph.frozen}


def apply_freeze(spec: Spec, nodes: Mapping[str, int | None], what: str = "--freeze") -> Spec:
    """``spec`` with ``nodes`` (name -> unfreeze_after) set trainable = false; the spec's text (and
    sha256) stay the user's: the run record keeps the plan (``frozen``, checked when it is read) so a
    resume applies it again."""
    by_name = {node.name: node for node in spec.nodes}
    weighted = [node.name for node in spec.nodes if hasattr(node, "trainable")]
    for name in nodes:
        if name not in by_name:
            raise UsageError(
                f"{what} {name}: spec '{spec.name}' has no node '{name}'. "
                + (did_you_mean(name, weighted) or f"Nodes with parameters: {', '.join(weighted)}.")
            )
        if name not in weighted:
            raise UsageError(
                f"{what} {name}: '{name}' is a {by_name[name].kind} node, which has no parameters to freeze."
            )
    if not nodes:
        return spec
    changed = [
        node.model_copy(update={"trainable": False, "unfreeze_after": nodes[node.name]}) if node.name in nodes else node
        for node in spec.nodes
    ]
    return spec.model_copy(update={"nodes": changed})


def _parameters(model: nn.Module, names) -> list[nn.Parameter]:
    return [p for name in names for p in model.get_submodule(name).parameters()]


def freeze(model: nn.Module, plan: Mapping[str, int | None]) -> None:
    """Turn off the gradients of the planned nodes' parameters (before the optimiser is made)."""
    for parameter in _parameters(model, plan):
        parameter.requires_grad_(False)


def hold_norms(model: nn.Module, frozen) -> None:
    """Put the norm layers of the ``frozen`` nodes in eval mode (call after ``model.train()``)."""
    for name in frozen:
        for module in model.get_submodule(name).modules():
            if isinstance(module, NORM_LAYERS):
                module.eval()


def unfreeze_due(run, completed: int) -> list[str]:
    """Unfreeze the run's frozen nodes whose ``unfreeze_after`` is at most ``completed`` epochs: their
    parameters train from now on (a new optimiser group). Returns the nodes unfrozen."""
    from graphc.runtime.train.optim import add_param_group

    due = [name for name, after in run.frozen.items() if after is not None and after <= completed]
    if not due:
        return []
    params = _parameters(run.model, due)
    for parameter in params:
        parameter.requires_grad_(True)
    add_param_group(run.optimizer, run.scheduler, params)
    for name in due:
        del run.frozen[name]
    if run.ddp is not None:  # DDP registers the parameters that need gradients when it is made
        run.ddp = run.world.wrap(run.model)
        if run.compiled is not None:
            run.compiled = torch.compile(run.ddp)
    return due
