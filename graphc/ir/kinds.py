"""The IR's table of node kinds: how each kind's spec node becomes an IR node.

One :class:`KindRules` per kind in :data:`KINDS`, keyed like the spec language's
``NODE_KINDS`` (tests/test_kinds.py checks that both hold the same kinds):

- ``resolve``: the node's resolved attributes (``Node.attrs``) from its spec node and its
  inputs' shapes; each entry's function says which attributes its kind has;
- ``shape``: its output shape (without the batch), or a :class:`ShapeProblem` saying why
  there is none;
- ``params``: its parameter count (weights and biases, frozen or not; no buffers);
- ``outputs``: the values its forward pass produces per image (what :func:`layer_outputs`
  sums to size a model's memory; a kind the table does not know is refused, not guessed).

``graphc.ir.build`` calls them in topological order; the arithmetic they share lives in
``graphc.ir.shapes``. The tests check shapes and counts against real forward passes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

from graphc.ir.shapes import (
    Shape,
    ShapeProblem,
    concat_shape,
    conv_block_outputs,
    conv_block_params,
    conv_block_shape,
    fc_block_params,
    features,
    pool_shape,
    projection_hint,
    same_padding,
    shape_text,
)

Inputs = Sequence[tuple[str, Shape]]  # a node's inputs, (name, output shape), in the order it reads them


@dataclass(frozen=True)
class Seen:
    """A node resolved earlier in the build."""

    kind: str
    inputs: tuple[str, ...]
    attrs: Mapping[str, Any]
    shape: Shape


@dataclass(frozen=True)
class Context:
    """What a kind's rules may ask about the graph being built (``graphc.ir.build`` provides it)."""

    nodes: Mapping[str, Seen]  # the nodes resolved so far: every input of the node being resolved
    classes: Callable[[Any], int]  # a head's class count, from the data set or the spec (SpecError if wrong)
    template: Callable[[str, str], str | None]  # the template a node's field came from (None: the node's own)


@dataclass(frozen=True)
class KindRules:
    """The IR's rules for one node kind (see the module docstring)."""

    resolve: Callable[[Any, Inputs, Context], dict[str, Any]]
    shape: Callable[[Mapping[str, Any], Inputs, Context], Shape]
    params: Callable[[Mapping[str, Any]], int]
    outputs: Callable[[Mapping[str, Any], Shape | None, Shape], int]


def no_params(attrs: Mapping[str, Any]) -> int:
    return 0


def own_output(attrs: Mapping[str, Any], in_shape: Shape | None, out_shape: Shape) -> int:
    """A kind whose forward makes one tensor, its output."""
    return prod(out_shape)


def _training(node) -> dict[str, Any]:
    """Whether a node with parameters trains from the start, and after how many epochs a frozen one joins."""
    return {"trainable": node.trainable, "unfreeze_after": node.unfreeze_after}


# --------------------------------------------------------------------------- input


def _input(node, inputs: Inputs, ctx: Context) -> dict[str, Any]:
    """input: ``shape``."""
    return {"shape": tuple(node.shape)}


# --------------------------------------------------------------------------- conv_block


def _conv_block(node, inputs: Inputs, ctx: Context) -> dict[str, Any]:
    """conv_block: ``in_channels, channels, kernel, stride, padding`` (tuples, one per layer; empty
    for a block of no convolutions; paddings in pixels), ``activation, bias, pool, pool_size,
    pool_stride, norm, groups`` (group norm's groups; 1 for layer norm; else None),
    ``norm_position, dropout, dropout_kind, trainable, unfreeze_after``."""
    ((_, in_shape),) = inputs
    kernels, strides = node.per_layer("kernel"), node.per_layer("stride")
    paddings = [
        same_padding(k, s) if p == "same" else 0 if p == "valid" else p
        for k, s, p in zip(kernels, strides, node.per_layer("padding"))
    ]
    return {
        "in_channels": in_shape[0],
        "channels": tuple(node.channels),
        "kernel": tuple(kernels),
        "stride": tuple(strides),
        "padding": tuple(paddings),
        "activation": node.activation,
        "bias": node.bias,
        "pool": node.pool,
        "pool_size": node.pool_size,
        "pool_stride": node.pool_stride or node.pool_size,
        "norm": node.norm,
        "groups": node.groups if node.norm == "group" else 1 if node.norm == "layer" else None,
        "norm_position": node.norm_position,
        "dropout": node.dropout,
        "dropout_kind": node.dropout_kind,
        **_training(node),
    }


# --------------------------------------------------------------------------- pool


def _pool(node, inputs: Inputs, ctx: Context) -> dict[str, Any]:
    """pool: ``pool, pool_size, pool_stride`` (as a conv_block's: pool_stride filled in)."""
    return {"pool": node.pool, "pool_size": node.pool_size, "pool_stride": node.pool_stride or node.pool_size}


def _pool_shape(attrs: Mapping[str, Any], inputs: Inputs, ctx: Context) -> Shape:
    ((name, shape),) = inputs
    if len(shape) != 3:
        raise ShapeProblem(
            f"a pool node pools a feature map [C, H, W], but '{name}' gives a vector {list(shape)}.",
            field="input",
            hint="read a node that outputs a feature map (the input, a conv_block or a channels or sum concat).",
        )
    try:
        return pool_shape(attrs, shape)
    except ShapeProblem as problem:  # a pool node has no pool = "none": its fixes are others
        raise ShapeProblem(
            str(problem), field="pool_size", hint="use a smaller pool_size, pool less before it, or remove the node."
        ) from None


# --------------------------------------------------------------------------- fc_block


def _fc_block(node, inputs: Inputs, ctx: Context) -> dict[str, Any]:
    """fc_block: ``in_features, units`` (tuple), ``activation, dropout, norm, trainable, unfreeze_after``."""
    ((_, in_shape),) = inputs
    return {
        "in_features": features(in_shape),
        "units": tuple(node.units),
        "activation": node.activation,
        "dropout": node.dropout,
        "norm": node.norm,
        **_training(node),
    }


# --------------------------------------------------------------------------- dropout


def _dropout(node, inputs: Inputs, ctx: Context) -> dict[str, Any]:
    """dropout: ``dropout, dropout_kind``."""
    return {"dropout": node.dropout, "dropout_kind": node.dropout_kind}


def _dropout_shape(attrs: Mapping[str, Any], inputs: Inputs, ctx: Context) -> Shape:
    ((name, shape),) = inputs
    if attrs["dropout_kind"] == "channel" and len(shape) != 3:
        raise ShapeProblem(
            f"dropout_kind = 'channel' drops whole feature maps, but '{name}' gives a vector {list(shape)}.",
            field="dropout_kind",
            hint='use dropout_kind = "element" on a vector, or read a feature map.',
        )
    return shape


# --------------------------------------------------------------------------- concat


def _concat(node, inputs: Inputs, ctx: Context) -> dict[str, Any]:
    """concat: ``mode`` (features, channels or sum)."""
    return {"mode": node.mode}


def _concat_shape(attrs: Mapping[str, Any], inputs: Inputs, ctx: Context) -> Shape:
    try:
        return concat_shape(attrs["mode"], list(inputs))
    except ShapeProblem as problem:
        parting = _where_sizes_part(inputs, ctx) if attrs["mode"] == "sum" else None
        if parting is None:
            raise
        message, hint = parting
        raise ShapeProblem(f"{problem} {message}", field=problem.field, hint=hint) from None


def _where_sizes_part(inputs: Inputs, ctx: Context) -> tuple[str, str] | None:
    """For summed maps of different heights and widths: the node where they part (walking back
    from the smaller map to the first node that made it smaller than the other), what in it did
    (its stride, padding or pool, and the template that set it), and how to make them agree."""
    maps = [(name, shape) for name, shape in inputs if len(shape) == 3]
    if len(maps) != len(inputs):
        return None
    large = max(maps, key=lambda item: item[1][1] * item[1][2])
    small = min(maps, key=lambda item: item[1][1] * item[1][2])
    target = large[1][1:]
    if small[1][1] >= target[0] or small[1][2] >= target[1]:
        return None  # not one map smaller than the other in both directions
    name = small[0]
    for _ in range(len(ctx.nodes)):
        node = ctx.nodes[name]
        sources = [s for s in node.inputs if len(ctx.nodes[s].shape) == 3]
        if not sources:
            return None
        bigger = next((s for s in sources if ctx.nodes[s].shape[1:] == target), None)
        if bigger is None:
            name = sources[0]
            continue
        change = f"{shape_text(ctx.nodes[bigger].shape[1:])} into {shape_text(node.shape[1:])}"
        why, undo = _what_shrinks(name, node, ctx)
        message = f"The sizes part at '{name}': {why} turns {change}."
        hint = f"if that is not meant, {undo}; if it is, {projection_hint(large, small)}"
        return message, hint
    return None


def _what_shrinks(name: str, node: Seen, ctx: Context) -> tuple[str, str]:
    """What in node ``name`` makes its map smaller than its input's, in the spec's words, and the
    edit that would not (naming the template that set it, where one did)."""

    def origin(field: str, detail: str = "") -> str:
        template = ctx.template(name, field)
        notes = [note for note in (detail, f"set by template '{template}'" if template else "") if note]
        return f" ({', '.join(notes)})" if notes else ""

    def where(field: str) -> str:
        template = ctx.template(name, field)
        return f" in template '{template}' (or on '{name}' to override it)" if template else f" on '{name}'"

    attrs, whys, undos = node.attrs, [], []
    layers = list(zip(attrs.get("kernel", ()), attrs.get("stride", ()), attrs.get("padding", ())))
    for i, (kernel, stride, padding) in enumerate(layers, start=1):
        which = f"convolution {i}'s " if len(layers) > 1 else ""
        if stride > 1:
            whys.append(f"its {which}stride {stride}{origin('stride')}")
            undos.append(f"set stride = 1{where('stride')}")
        if 2 * padding < kernel - 1:  # less padding than 'same': the convolution trims the map
            whys.append(f"its {which}padding {padding} with kernel {kernel}{origin('padding')}")
            undos.append(f'set padding = "same"{where("padding")}')
    pool = attrs.get("pool", "none")
    if pool != "none":
        size, stride = attrs["pool_size"], attrs["pool_stride"]
        window = (
            ""
            if pool.startswith("global")
            else f"pool_size {size}" + (f", pool_stride {stride}" if stride != size else "")
        )
        whys.append(f'its pool = "{pool}"{origin("pool", window)}')
        if set(attrs) <= {"pool", "pool_size", "pool_stride"}:  # a node that only pools
            undos.append(f"remove '{name}' (and read '{node.inputs[0]}' where it is read)")
        else:
            undos.append(f'set pool = "none"{where("pool")}')
    if not whys:
        return f"the {node.kind} node", f"change '{name}' so that it keeps the size"
    return " and ".join(whys), " and ".join(undos)


# --------------------------------------------------------------------------- head


# The loss of each head type that has one choice; a regression head's is its `loss` (default mse).
_HEAD_LOSS = {"classification": "cross_entropy", "binary": "bce", "multilabel": "bce"}


def _head(node, inputs: Inputs, ctx: Context) -> dict[str, Any]:
    """head: ``in_features, task, type, classes, loss, pos_weight, standardize, loss_weight,
    label_smoothing, reuse_as, reuse_gradient, trainable, unfreeze_after``. ``classes`` is the head's
    output units whatever its type (a classifier's classes, 1 for binary, a multilabel head's labels,
    a regression head's outputs); ``loss`` the loss its type and spec give it."""
    ((_, in_shape),) = inputs
    return {
        "in_features": features(in_shape),
        "task": node.task_name,
        "type": node.type,
        "classes": ctx.classes(node),
        "loss": _HEAD_LOSS.get(node.type) or node.loss or "mse",
        "pos_weight": node.pos_weight,
        "standardize": node.type == "regression" and node.standardize is not False,
        "loss_weight": node.loss_weight,
        "label_smoothing": node.label_smoothing,
        "reuse_as": node.reuse_as,
        "reuse_gradient": node.reuse_gradient,
        **_training(node),
    }


# --------------------------------------------------------------------------- the table

KINDS: dict[str, KindRules] = {
    "input": KindRules(
        resolve=_input,
        shape=lambda attrs, inputs, ctx: attrs["shape"],
        params=no_params,
        outputs=own_output,
    ),
    "conv_block": KindRules(
        resolve=_conv_block,
        shape=lambda attrs, inputs, ctx: conv_block_shape(attrs, inputs[0][1]),
        params=conv_block_params,
        outputs=conv_block_outputs,
    ),
    "pool": KindRules(resolve=_pool, shape=_pool_shape, params=no_params, outputs=own_output),
    "fc_block": KindRules(
        resolve=_fc_block,
        shape=lambda attrs, inputs, ctx: (attrs["units"][-1],),
        params=fc_block_params,
        outputs=lambda attrs, in_shape, out_shape: sum(attrs["units"]),  # every dense layer's output
    ),
    "dropout": KindRules(resolve=_dropout, shape=_dropout_shape, params=no_params, outputs=own_output),
    "concat": KindRules(resolve=_concat, shape=_concat_shape, params=no_params, outputs=own_output),
    "head": KindRules(
        resolve=_head,
        shape=lambda attrs, inputs, ctx: (attrs["classes"],),
        params=lambda attrs: attrs["in_features"] * attrs["classes"] + attrs["classes"],
        outputs=own_output,
    ),
}


def rules(kind: str) -> KindRules:
    """The rules of ``kind``; a kind missing from the table is a bug, said so."""
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"node kind '{kind}' has no entry in graphc.ir.kinds.KINDS") from None


def layer_outputs(kind: str, attrs: Mapping[str, Any], in_shape: Shape | None, out_shape: Shape) -> int:
    """Values one node's forward pass produces per image: every convolution's or dense layer's
    output, plus the node's own output where that is another tensor (after pooling, a join, the
    input image, a pool or dropout node). Activations, norms and dropout inside a block are not
    counted again. Autograd keeps about this much for the backward pass, so it sizes a model's
    memory at batch 1. A kind the table does not know raises ValueError rather than be guessed."""
    return rules(kind).outputs(attrs, in_shape, out_shape)
