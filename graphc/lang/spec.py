"""The spec language: pydantic models of a TOML graph spec (``graphc.lang.load`` reads files).

This layer checks *form* only: types, ranges, known kinds, no unknown keys.
Whether the nodes make a sensible graph (references, cycles, shapes) is
``build``'s job. Every field has a description, so ``graphc schema`` (the JSON
schema of :class:`Spec`) is the reference documentation of the format.

A spec is a TOML file::

    name = "shared_conv"
    [layers]                 # layer defaults (init, batch-norm constants)
    [templates.NAME]         # partial node tables that nodes reuse with `use = "NAME"`
    [[nodes]]                # the DAG, one table per node, in order
    [data]                   # what to train on
    [train]                  # how to train
"""

from __future__ import annotations

import functools
import hashlib
import keyword
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from graphc.lang.hierarchy import hierarchy_links, label_fields

# --------------------------------------------------------------------------- names

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

# Node names become attribute names of the compiled fx.GraphModule, so they must not
# shadow what it (or nn.Module) already defines: add_module refuses most of these, and
# a method name would be called instead of the submodule. "self" would be rebound by
# the generated forward. tests/backends/test_pytorch_compile.py checks this list against torch's.
RESERVED_NAMES = frozenset(
    {
        "self",
        "T_destination",
        "add_module",
        "add_submodule",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "children",
        "code",
        "compile",
        "cpu",
        "cuda",
        "delete_all_unused_submodules",
        "delete_submodule",
        "double",
        "dump_patches",
        "eval",
        "extra_repr",
        "float",
        "forward",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "graph",
        "half",
        "ipu",
        "load_state_dict",
        "meta",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "print_readable",
        "recompile",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "shape_env",
        "share_memory",
        "state_dict",
        "to",
        "to_empty",
        "to_folder",
        "train",
        "training",
        "type",
        "xpu",
        "zero_grad",
    }
)

Activation = Literal["relu", "gelu", "silu", "tanh", "sigmoid", "leaky_relu", "elu", "none"]
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]
# A class or label name as a label table's cell writes it: not empty, no surrounding spaces, no ';'
# (a multilabel cell's separator) and no control characters (they would garble every table printing it).
LabelName = Annotated[
    str, Field(min_length=1, max_length=200, pattern=r"^[^\s;\x00-\x1f\x7f](?:[^;\x00-\x1f\x7f]*[^\s;\x00-\x1f\x7f])?$")
]


def _check_name(value: str) -> str:
    if keyword.iskeyword(value) or value in RESERVED_NAMES or value.startswith("_"):
        raise ValueError(f"'{value}' is reserved (a Python keyword or an nn.Module attribute); pick another name")
    return value


NodeName = Annotated[
    str,
    Field(
        pattern=NAME_PATTERN,
        description="Node name: a Python identifier. Used for the module attribute, "
        "state-dict keys, diagram labels and ONNX names.",
    ),
]


class _Strict(BaseModel):
    # inf and nan are valid TOML floats but no sensible loss weight, rate or epsilon.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- nodes


class _NodeBase(_Strict):
    # How `repeat` copies a node of this kind (graphc.lang.load): "chain" (NAME_1 -> ... -> NAME_N),
    # "unit" (the residual unit a sum closes) or None (the kind has no repeat).
    repeats: ClassVar[str | None] = None

    name: NodeName
    use: str | None = Field(
        default=None,
        description="Name of a [templates.NAME] table whose fields this node starts from; "
        "fields written on the node override the template's.",
    )

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        return _check_name(value)

    @classmethod
    def reference_field(cls) -> str | None:
        """The field that names the nodes this kind reads: 'inputs' (a list), 'input' (one name) or None."""
        return next((f for f in ("inputs", "input") if f in cls.model_fields), None)

    @property
    def reads(self) -> tuple[str, ...]:
        """Names of the nodes this node reads, in order."""
        field = self.reference_field()
        value = getattr(self, field) if field else ()
        return (value,) if isinstance(value, str) else tuple(value)


class InputNode(_NodeBase):
    """The image input."""

    kind: Literal["input"] = Field(description="Node kind tag.")
    shape: tuple[PositiveInt, PositiveInt, PositiveInt] = Field(
        description="Image shape [channels, height, width] (NCHW without the batch)."
    )


IntPerLayer = PositiveInt | list[PositiveInt]


class _Weighted(_NodeBase):
    """A node kind with parameters: it can be frozen for transfer learning."""

    trainable: bool = Field(
        default=True,
        description="false freezes the node: its parameters get no gradient updates (they are left out of the "
        "optimiser) and its batch-norm layers stay in eval mode while training, so their running statistics "
        "do not change either (dropout still applies). For a trunk transferred with [train] init_from.",
    )
    unfreeze_after: PositiveInt | None = Field(
        default=None,
        description="With trainable = false: after this many epochs the node joins training (its parameters "
        "enter the optimiser at the schedule's current learning rate, with fresh optimiser state, and its "
        "batch-norm layers train again). Omitted: frozen for the whole run.",
    )

    @model_validator(mode="after")
    def _unfreeze_needs_frozen(self):
        if self.unfreeze_after is not None and self.trainable:
            raise ValueError(
                "'unfreeze_after' unfreezes a frozen node, but this node is trainable; "
                "add trainable = false or remove unfreeze_after"
            )
        return self


MAX_REPEAT = 1000  # copies one table may make: past it, a slip (repeat = 10000000) would stall the loader


class _Repeatable(_Weighted):
    repeats: ClassVar[str | None] = "chain"

    repeat: PositiveInt = Field(
        default=1,
        le=MAX_REPEAT,
        description="Write N identical blocks as one table: repeat = N on node 'stage' makes the chain "
        "stage_1 -> ... -> stage_N (stage_1 reads this node's input; readers of 'stage' read stage_N). "
        "Expanded when the spec is read, so every tool shows the numbered names.",
    )


class ConvBlockNode(_Repeatable):
    """A stack of 2-D convolutions, each with its activation (and norm, where
    norm_position is 'pre' or 'post'), then optional pooling and a block-level
    norm in an explicit order, then optional dropout."""

    kind: Literal["conv_block"] = Field(description="Node kind tag.")
    input: str = Field(description="Name of the node this block reads (a feature map).")
    channels: list[PositiveInt] = Field(
        description="Output channels of each convolution, in order. [] makes a block of no convolutions: "
        "only its pooling, norm and dropout (e.g. global pooling after a residual sum); with "
        "norm_position = 'pre' its norm is followed by the activation."
    )
    kernel: IntPerLayer = Field(default=3, description="Kernel size: one for all layers, or one per layer.")
    stride: IntPerLayer = Field(default=1, description="Stride: one for all layers, or one per layer.")
    padding: Literal["same", "valid"] | NonNegativeInt | list[Literal["same", "valid"] | NonNegativeInt] = Field(
        default="same",
        description="'same' (output = ceil(input/stride), odd kernels), 'valid' (no padding), "
        "or pixels; one for all layers or one per layer.",
    )
    activation: Activation = Field(default="relu", description="Activation after every convolution.")
    bias: bool = Field(
        default=True, description="Whether the convolutions have a bias (false is usual right before a norm)."
    )
    pool: Literal["max", "avg", "global_avg", "global_max", "none"] = Field(
        default="none",
        description="Pooling after the convolutions. 'global_avg' / 'global_max' pool each channel's "
        "whole map to one value: the output is C x 1 x 1, which fc_block, head and a features "
        "concat read as a vector of C.",
    )
    pool_size: PositiveInt = Field(default=2, description="Pooling window (square); not used by global pooling.")
    pool_stride: PositiveInt | None = Field(default=None, description="Pooling stride; defaults to pool_size.")
    norm: Literal["batch", "group", "layer", "none"] = Field(
        default="none",
        description="Normalisation: 'batch' (BatchNorm2d), 'group' (GroupNorm with `groups` groups), "
        "'layer' (each image over C, H and W: GroupNorm with one group) or 'none'.",
    )
    groups: PositiveInt = Field(
        default=32, description="norm = 'group': number of channel groups; must divide the normalised channels."
    )
    norm_position: Literal["after_pool", "before_pool", "post", "pre"] = Field(
        default="after_pool",
        description="Where the norm sits. Once per block: 'after_pool' (activations, pool, norm: "
        "the reference) or 'before_pool' (activations, norm, pool). Per convolution: 'post' "
        "(conv, norm, activation) or 'pre' (norm, activation, conv: pre-activation ResNet blocks).",
    )
    dropout: Probability = Field(default=0.0, description="Dropout rate at the end of the block (0 = none).")
    dropout_kind: Literal["element", "channel"] = Field(
        default="element",
        description="'element' drops single values (Dropout); 'channel' drops whole feature maps (Dropout2d).",
    )

    @model_validator(mode="after")
    def _per_layer_lengths(self) -> ConvBlockNode:
        for field in ("kernel", "stride", "padding"):
            value = getattr(self, field)
            if isinstance(value, list) and len(value) != len(self.channels):
                raise ValueError(
                    f"'{field}' lists {len(value)} values but 'channels' has {len(self.channels)} layers; "
                    f"give one value for all layers or one per layer"
                )
        if not self.channels:
            if self.pool == "none" and self.norm == "none" and self.dropout == 0:
                raise ValueError(
                    "a conv_block with channels = [] has no convolutions, so it needs a pool, norm or dropout to do anything"
                )
            if self.norm != "none" and self.norm_position == "post":
                raise ValueError(
                    "norm_position = 'post' puts a norm after each convolution, but channels = [] has none; "
                    "use 'pre' (norm, activation, then pooling: the end of a pre-activation ResNet), 'after_pool' or 'before_pool'"
                )
        if "groups" in self.model_fields_set and self.norm != "group":
            raise ValueError(
                f'\'groups\' sets the groups of norm = "group", but norm is {self.norm!r}; remove it or set norm = "group"'
            )
        return self

    def per_layer(self, field: str) -> list:
        """The value of ``field`` (kernel, stride, padding) for each layer."""
        value = getattr(self, field)
        return list(value) if isinstance(value, list) else [value] * len(self.channels)


class PoolNode(_NodeBase):
    """Pooling on its own, with a conv_block's pooling settings: what a conv_block's `pool` does,
    between any two nodes that give and take feature maps (no parameters)."""

    kind: Literal["pool"] = Field(description="Node kind tag.")
    input: str = Field(description="Name of the node this pooling reads (a feature map).")
    pool: Literal["max", "avg", "global_avg", "global_max"] = Field(
        default="max",
        description="'max' or 'avg' pool windows of pool_size; 'global_avg' / 'global_max' pool each channel's "
        "whole map to one value: the output is C x 1 x 1, which fc_block, head and a features concat read as "
        "a vector of C.",
    )
    pool_size: PositiveInt = Field(default=2, description="Pooling window (square); not used by global pooling.")
    pool_stride: PositiveInt | None = Field(default=None, description="Pooling stride; defaults to pool_size.")


class FCBlockNode(_Repeatable):
    """A stack of dense layers, each Linear -> activation -> dropout -> BatchNorm1d
    (the reference order). Flattens a feature-map input itself."""

    kind: Literal["fc_block"] = Field(description="Node kind tag.")
    input: str = Field(description="Name of the node this block reads.")
    units: list[PositiveInt] = Field(min_length=1, description="Output units of each dense layer, in order.")
    activation: Activation = Field(default="relu", description="Activation after every dense layer.")
    dropout: Probability = Field(default=0.0, description="Dropout after every activation (0 = none).")
    norm: Literal["batch", "none"] = Field(default="none", description="BatchNorm1d after every dropout.")


class DropoutNode(_NodeBase):
    """Dropout on its own, with a block's dropout settings: between any two nodes, on a feature map
    or a vector (no parameters; active in training only)."""

    kind: Literal["dropout"] = Field(description="Node kind tag.")
    input: str = Field(description="Name of the node this dropout reads (a feature map or a vector).")
    dropout: float = Field(gt=0.0, lt=1.0, description="Dropout rate: the fraction of values zeroed in training.")
    dropout_kind: Literal["element", "channel"] = Field(
        default="element",
        description="'element' drops single values (Dropout); 'channel' drops whole feature maps (Dropout2d), "
        "for a feature-map input only.",
    )


class ConcatNode(_NodeBase):
    """Concatenates its inputs, in the order listed."""

    repeats: ClassVar[str | None] = "unit"

    kind: Literal["concat"] = Field(description="Node kind tag.")
    inputs: list[str] = Field(min_length=2, description="Names of the nodes to join, in tensor order.")
    mode: Literal["features", "channels", "sum"] = Field(
        default="features",
        description="'features': flatten every input and join along features (vectors and maps mix); "
        "'channels': join feature maps along channels (all inputs must share height and width); "
        "'sum': add inputs of one shape element-wise (a residual join).",
    )
    repeat: PositiveInt = Field(
        default=1,
        le=MAX_REPEAT,
        description="mode = 'sum' only: repeat the residual unit this sum closes - the nodes between "
        "its shortcut input X and itself - N times: branch_1, NAME_1 (reading X), branch_2, NAME_2 "
        "(reading NAME_1), ...; readers of NAME read NAME_N.",
    )

    @model_validator(mode="after")
    def _repeat_needs_sum(self) -> ConcatNode:
        if self.repeat > 1 and self.mode != "sum":
            raise ValueError(
                f"repeat on a concat repeats the residual unit a sum closes, but mode is {self.mode!r}; "
                'set mode = "sum", or write the copies out'
            )
        return self


class HeadNode(_Weighted):
    """A Linear layer to one task's logits. Other nodes may read a head (cross-task reuse)."""

    kind: Literal["head"] = Field(description="Node kind tag.")
    input: str = Field(description="Name of the node this head reads (flattened if a feature map).")
    task: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="The task (label field of the data set) this head predicts; defaults to the node name.",
    )
    type: Literal["classification", "binary", "multilabel", "regression"] = Field(
        default="classification",
        description="What the head predicts: 'classification' (one class of several: softmax cross-entropy), "
        "'binary' (yes/no: one logit, binary cross-entropy), 'multilabel' (any number of labels: one logit per "
        "label, binary cross-entropy each) or 'regression' (numbers: mse, l1 or huber loss).",
    )
    classes: PositiveInt | Literal["auto"] | Annotated[list[LabelName], Field(min_length=2)] = Field(
        default="auto",
        description="classification: the number of classes, 'auto' to take it from the data set, or the class "
        "names in the order the head's outputs take them (a label table's column; else its sorted values).",
    )
    labels: Annotated[list[LabelName], Field(min_length=1)] | None = Field(
        default=None,
        description="multilabel: the label names in the order the head's outputs take them; omitted: the "
        "sorted labels found in the data set.",
    )
    outputs: PositiveInt | None = Field(
        default=None, description="regression: how many numbers the head predicts (default 1)."
    )
    loss: Literal["mse", "l1", "huber"] | None = Field(
        default=None, description="regression: the loss, 'mse' (default), 'l1' or 'huber' (delta 1)."
    )
    pos_weight: PositiveFloat | None = Field(
        default=None,
        description="binary and multilabel: the weight of a positive example in the binary cross-entropy "
        "(> 1 counts rare positives more; torch's BCEWithLogitsLoss pos_weight, one value for every label).",
    )
    standardize: bool | None = Field(
        default=None,
        description="regression (default true): train on targets z-scored with the training split's mean and "
        "standard deviation (stored in the run and the ONNX metadata); predictions and metrics are in the "
        "original units either way.",
    )
    loss_weight: float = Field(default=1.0, ge=0.0, description="Weight of this head's loss in the total.")
    label_smoothing: Probability = Field(
        default=0.0, description="classification: label smoothing of this head's cross-entropy."
    )
    reuse_as: Literal["logits", "probabilities"] = Field(
        default="logits",
        description="What nodes that read this head see: its logits (the reference) or its probabilities "
        "(softmax for classification, sigmoid for binary and multilabel); a regression head is read as its "
        "output either way.",
    )
    reuse_gradient: bool = Field(
        default=True,
        description="Whether gradients from nodes that read this head flow back into it (the reference: true).",
    )

    @property
    def task_name(self) -> str:
        return self.task or self.name

    # The fields that mean something for one type only: set on a head of another type they are
    # refused (a silently ignored loss = "l1" would mean a run that is not what its spec says).
    _TYPE_FIELDS: ClassVar[dict[str, tuple[str, ...]]] = {
        "label_smoothing": ("classification",),
        "labels": ("multilabel",),
        "outputs": ("regression",),
        "loss": ("regression",),
        "standardize": ("regression",),
        "pos_weight": ("binary", "multilabel"),
    }

    @model_validator(mode="after")
    def _fields_of_type(self):
        for field, types in self._TYPE_FIELDS.items():
            value = getattr(self, field)
            if value is None or (field == "label_smoothing" and value == 0.0):
                continue
            if self.type not in types:
                raise ValueError(
                    f"'{field}' applies to {' and '.join(types)} heads, but this head's type is '{self.type}'; "
                    f"remove {field}" + (f', or set type = "{types[0]}"' if len(types) == 1 else "")
                )
        if self.type != "classification" and self.classes != "auto":
            raise ValueError(
                f"'classes' applies to classification heads, but this head's type is '{self.type}'; remove classes"
                + (" (a multilabel head lists its labels in 'labels')" if self.type == "multilabel" else "")
            )
        if isinstance(self.classes, list) and len(set(self.classes)) != len(self.classes):
            twice = sorted({c for c in self.classes if self.classes.count(c) > 1})
            raise ValueError(f"classes lists {', '.join(map(repr, twice))} more than once; list each class once")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            twice = sorted({c for c in self.labels if self.labels.count(c) > 1})
            raise ValueError(f"labels lists {', '.join(map(repr, twice))} more than once; list each label once")
        return self

    @property
    def output_units(self) -> int | None:
        """Outputs the head has when the spec alone says (binary 1, regression `outputs`, listed classes or
        labels); None when the data set decides (classes = 'auto', multilabel without labels)."""
        if self.type == "binary":
            return 1
        if self.type == "regression":
            return self.outputs or 1
        if self.type == "multilabel":
            return len(self.labels) if self.labels else None
        if isinstance(self.classes, list):
            return len(self.classes)
        return None if self.classes == "auto" else self.classes


# --------------------------------------------------------------------------- the kinds


def _words(words: tuple[str, ...], text: str) -> dict[str, str]:
    return dict.fromkeys(words, text)


@dataclass(frozen=True)
class NodeForm:
    """The spec language's side of one node kind: its pydantic model, and the words other frameworks
    use for what it does (lower case), each with what to write in graphc instead
    (``graphc.lang.hints`` looks them up before guessing a spelling)."""

    model: type[_NodeBase]
    words: Mapping[str, str]


_RESIDUAL = (
    'a residual (skip) connection is a concat node with mode = "sum" and inputs = ["<shortcut>", "<block>"] '
    "(element-wise sum of inputs of one shape); a 1x1 conv_block projects a shortcut whose shape differs."
)
_GLOBAL_POOL = (
    'global {} pooling is pool = "global_{}", on the conv_block before it or on a node of kind = "pool" '
    "(output C x 1 x 1, read as C features)."
)

# The node kinds, one entry each, in the order messages list them. Every layer has a table keyed
# by these names (graphc.ir.kinds, graphc.backends.pytorch.compile, graphc.backends.diagram.style;
# tests/test_kinds.py checks that none is missing); ARCHITECTURE.md says how to add one.
NODE_KINDS: dict[str, NodeForm] = {
    "input": NodeForm(InputNode, {}),
    "conv_block": NodeForm(
        ConvBlockNode,
        {
            **_words(
                ("conv", "conv2d", "convolution", "conv_layer", "convolution2d"),
                'convolutions are written as kind = "conv_block" with channels = [...] (one entry per convolution), '
                "kernel, stride and padding.",
            ),
        },
    ),
    "pool": NodeForm(
        PoolNode,
        {
            **_words(
                (
                    "global_avg",
                    "gap",
                    "global_avg_pool",
                    "global_average_pooling",
                    "globalaveragepooling2d",
                    "global_average",
                    "adaptive_avg_pool",
                    "adaptiveavgpool2d",
                    "mean_pool",
                ),
                _GLOBAL_POOL.format("average", "avg"),
            ),
            **_words(
                (
                    "global_max",
                    "gmp",
                    "global_max_pool",
                    "global_max_pooling",
                    "globalmaxpooling2d",
                    "adaptive_max_pool",
                    "adaptivemaxpool2d",
                ),
                _GLOBAL_POOL.format("max", "max"),
            ),
            **_words(
                (
                    "pool",
                    "pooling",
                    "maxpool",
                    "max_pool",
                    "maxpool2d",
                    "maxpooling2d",
                    "avgpool",
                    "avg_pool",
                    "avgpool2d",
                    "averagepooling2d",
                ),
                'pooling is kind = "pool" with pool = "max" | "avg" | "global_avg" | "global_max", pool_size '
                "and pool_stride; a conv_block takes the same settings for the pooling after its convolutions.",
            ),
        },
    ),
    "fc_block": NodeForm(
        FCBlockNode,
        _words(
            ("dense", "linear", "fc", "fully_connected", "mlp", "perceptron"),
            'dense (linear) layers are written as kind = "fc_block" with units = [...] (one entry per layer); '
            "a head is the final linear layer.",
        ),
    ),
    "dropout": NodeForm(
        DropoutNode,
        {
            **_words(
                ("dropout", "dropout2d", "spatial_dropout", "spatialdropout2d"),
                'dropout is kind = "dropout" with dropout = 0.25 (dropout_kind = "channel" for Dropout2d on feature '
                "maps), or the same settings on a conv_block (fc_block: dropout only) for dropout inside the block.",
            ),
            **_words(
                ("rate", "drop_rate", "dropout_rate", "drop_prob"),
                "a dropout rate is dropout = 0.25 (the fraction of values zeroed in training), on a dropout node "
                "or a block.",
            ),
        },
    ),
    "concat": NodeForm(
        ConcatNode,
        {
            **_words(
                (
                    "add",
                    "residual",
                    "skip",
                    "sum",
                    "shortcut",
                    "skip_connection",
                    "residual_add",
                    "elementwise_add",
                    "plus",
                    "identity_shortcut",
                ),
                _RESIDUAL,
            ),
            **_words(
                ("resblock", "residual_block", "basic_block", "bottleneck"),
                'a residual block is a conv_block (norm_position = "pre" for pre-activation) plus a concat with '
                'mode = "sum" reading the block and its input.',
            ),
            **_words(
                ("concatenate", "cat", "merge", "join", "stack"),
                'joins are kind = "concat": mode = "features" (flatten and join), "channels" (join maps) or '
                '"sum" (residual).',
            ),
        },
    ),
    "head": NodeForm(
        HeadNode,
        _words(
            ("output", "classifier", "logits", "prediction", "task_head"),
            'outputs are kind = "head" nodes: a linear layer to one task\'s logits (task = "<label field>", '
            'classes = "auto").',
        ),
    ),
}
NODE_CLASSES: dict[str, type[_NodeBase]] = {kind: form.model for kind, form in NODE_KINDS.items()}
# The discriminated union of the kinds' models: pydantic picks the model by `kind`.
NodeSpec = Annotated[functools.reduce(operator.or_, NODE_CLASSES.values()), Field(discriminator="kind")]


# --------------------------------------------------------------------------- layer defaults


class LayerDefaults(_Strict):
    """Defaults for every layer of the model. The reference specs set Keras's values."""

    init: Literal["torch_default", "glorot_uniform", "glorot_normal", "he_uniform", "he_normal"] = Field(
        default="torch_default",
        description="Initialisation of conv and dense kernels. Keras uses 'glorot_uniform'.",
    )
    bias_init: Literal["torch_default", "zeros"] = Field(
        default="torch_default", description="Initialisation of biases. Keras uses 'zeros'."
    )
    bn_momentum: float = Field(
        default=0.1,
        gt=0.0,
        lt=1.0,
        description="Batch-norm running-statistics momentum in PyTorch's convention "
        "(weight of the new batch). Keras's momentum 0.99 is 0.01 here.",
    )
    bn_eps: float = Field(default=1e-5, gt=0.0, description="Batch-norm epsilon. Keras uses 1e-3.")


# --------------------------------------------------------------------------- data


class KerasAffineAugment(_Strict):
    """Keras ImageDataGenerator-style random affine transform, fresh per image."""

    preset: Literal["keras_affine"] = Field(description="Augmentation preset tag.")
    rotation: float = Field(default=60.0, ge=0.0, le=180.0, description="Max rotation, degrees (+/-).")
    shift: float = Field(default=0.3, ge=0.0, lt=1.0, description="Max shift, fraction of width/height (+/-).")
    zoom: tuple[float, float] = Field(default=(0.7, 1.3), description="Zoom range [low, high], per axis.")
    shear: float = Field(default=0.3, ge=0.0, lt=90.0, description="Max shear angle, degrees (+/-).")
    fill: Literal["reflect", "zeros", "border"] = Field(default="reflect", description="How the border is filled.")
    flip: bool = Field(default=False, description="Also flip horizontally at random.")
    convention: Literal["keras2", "keras3"] = Field(
        default="keras2",
        description="Whose ImageDataGenerator the parameters follow, image for image: 'keras2' = "
        "keras-preprocessing 1.1.2 (TensorFlow 2.0-2.8; the reference specs' choice): tx and zx act on the rows, about "
        "(H/2 + 0.5, W/2 + 0.5); 'keras3' = Keras 3 (and tf.keras 2.9-2.15), which swaps the axes: tx and "
        "zx act on the columns and the rotation turns the other way. See docs/augmentation.md.",
    )

    @field_validator("zoom")
    @classmethod
    def _zoom_order(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError("zoom must be [low, high] with 0 < low <= high")
        return v


class FlipCropAugment(_Strict):
    """Random horizontal flip and random crop of a padded image (the modern CIFAR recipe)."""

    preset: Literal["flip_crop"] = Field(description="Augmentation preset tag.")
    padding: NonNegativeInt = Field(default=4, description="Pixels of padding before the random crop.")
    flip: bool = Field(default=True, description="Random horizontal flip.")
    fill: Literal["reflect", "zeros"] = Field(default="zeros", description="How the padding is filled.")


class NoAugment(_Strict):
    """No augmentation."""

    preset: Literal["none"] = Field(description="Augmentation preset tag.")


AugmentSpec = Annotated[KerasAffineAugment | FlipCropAugment | NoAugment, Field(discriminator="preset")]


class Normalize(_Strict):
    """Per-channel mean/std normalisation applied after scaling pixels to [0, 1]."""

    mean: list[float] = Field(min_length=1, description="Per-channel mean.")
    std: list[Annotated[float, Field(gt=0)]] = Field(min_length=1, description="Per-channel standard deviation.")


# Bounds of the numbers that size or seed a run, checked where they are read (spec fields here, the CLI's
# --seed, --batch-size and --limit-* with the same values): a value `graphc check` accepts never overflows
# in training. Seeds: numpy takes 0 to 2**32 - 1 (torch 64 bits; graphc also seeds with seed + 1).
MAX_SEED = 2**32 - 1
MAX_BATCH_SIZE = 2**20  # images per batch
MAX_IMAGES = 100_000_000  # images of a data-set size (synthetic train_size, test_size) or a --limit-*


class SyntheticData(_Strict):
    """Learnable generated images: each fine class has its own pattern, classes of one
    coarse group share structure, plus noise."""

    classes: PositiveInt = Field(default=100, description="Number of fine classes (label field 'fine').")
    coarse_classes: PositiveInt = Field(
        default=20, description="Number of coarse classes (label field 'coarse'); must divide classes."
    )
    train_size: PositiveInt = Field(
        default=5000,
        le=MAX_IMAGES,
        description="Images in the training pool (before the split); at most 100,000,000, and no more than the "
        "memory limit of graphc check allows at the input shape (GRAPHC_MAX_DATA_BYTES).",
    )
    test_size: PositiveInt = Field(
        default=1000, le=MAX_IMAGES, description="Images in the test split; bounded as train_size."
    )
    noise: float = Field(default=0.25, ge=0.0, description="Standard deviation of the pixel noise.")

    @model_validator(mode="after")
    def _groups_divide(self) -> SyntheticData:
        if self.classes % self.coarse_classes:
            raise ValueError(f"coarse_classes ({self.coarse_classes}) must divide classes ({self.classes})")
        return self


DATASETS = ("cifar100", "imagefolder", "synthetic", "table", "celeba")
# Data sets whose images may lack a task's label (an empty cell of a label table): their heads log
# TASK/labelled, the number of images of the split with that label.
PARTIAL_LABELS = ("table", "celeba")


class DataSpec(_Strict):
    """What to train on. CLI flags (--dataset, --data-dir) override these."""

    dataset: Literal["cifar100", "imagefolder", "synthetic", "table", "celeba"] = Field(
        default="cifar100", description="Data set kind."
    )
    root: str | None = Field(
        default=None,
        description="cifar100: directory holding (or to receive) cifar-100-python/; "
        "imagefolder: directory with train/<class>/ and test/<class>/; table: directory holding the label "
        "tables and the images they name; celeba: directory holding celeba/ (torchvision's layout). A relative "
        "path is read from the spec file's folder (built-in specs: from the working directory); --data-dir "
        "overrides it.",
    )
    train: str = Field(
        default="train.csv",
        description="table: the training label table (.csv or .tsv), relative to root: a column 'image' (the "
        "image's path relative to root) and one column per label field; an empty cell is a missing label.",
    )
    test: str = Field(default="test.csv", description="table: the test label table, in the training table's form.")
    val_fraction: float = Field(
        default=0.2, ge=0.0, lt=1.0, description="Fraction of the training images held out for validation."
    )
    split_seed: int = Field(
        default=0,
        ge=0,
        le=MAX_SEED,
        description="Seed of the train/validation split (fixed across training seeds), 0 to 2**32 - 1.",
    )
    augment: AugmentSpec = Field(default_factory=lambda: NoAugment(preset="none"), description="Training augmentation.")
    normalize: Normalize | None = Field(default=None, description="Optional mean/std normalisation.")
    label: str = Field(
        default="fine",
        pattern=NAME_PATTERN,
        description="imagefolder: label field named by the class folder; table: the classification column "
        "[data.hierarchy] tables group.",
    )
    # Non-empty groups and fields: an empty one would give a head zero classes.
    hierarchy: dict[str, Annotated[dict[str, Annotated[list[str], Field(min_length=1)]], Field(min_length=1)]] = Field(
        default_factory=dict,
        description="imagefolder: extra label fields derived from the folder label, "
        "e.g. coarse = { vehicle = ['airplane', ...], animal = [...] }. Every class must appear exactly once. "
        "A table whose classes are all groups of another table nests under it (fine -> coarse -> super).",
    )
    resize: tuple[PositiveInt, PositiveInt] | None = Field(
        default=None, description="imagefolder: resize images to [height, width] instead of rejecting other sizes."
    )
    synthetic: SyntheticData = Field(default_factory=SyntheticData, description="Options of the synthetic data set.")

    def known_classes(self) -> dict[str, int | None]:
        """Label fields this data set provides and their class counts (None: known only from disk)."""
        if self.dataset == "cifar100":
            return {"fine": 100, "coarse": 20}
        if self.dataset == "synthetic":
            return {"fine": self.synthetic.classes, "coarse": self.synthetic.coarse_classes}
        if self.dataset == "celeba":  # binary attributes: no class counts to give
            return {}
        fields: dict[str, int | None] = {self.label: None}
        if self.hierarchy:  # the classes the tables list, each once (graphc.lang.hierarchy)
            fields.update({field: len(names) for field, names in label_fields(self.label, self.hierarchy).items()})
        return fields

    def hierarchy_links(self) -> list[tuple[str, str]]:
        """``(child field, parent field)`` of every label hierarchy this data set has: fine -> coarse
        for cifar100 and synthetic, one per ``[data.hierarchy]`` table for imagefolder."""
        if self.dataset in ("cifar100", "synthetic"):
            return [("fine", "coarse")]
        return hierarchy_links(self.label, self.hierarchy)


# --------------------------------------------------------------------------- train


class AdamOptimizer(_Strict):
    name: Literal["adam"] = Field(description="Optimiser tag.")
    lr: float = Field(default=1e-3, gt=0, description="Learning rate.")
    betas: tuple[float, float] = Field(default=(0.9, 0.999), description="Adam betas.")
    eps: float = Field(default=1e-8, gt=0, description="Adam epsilon (Keras: 1e-7).")
    weight_decay: float = Field(default=0.0, ge=0, description="L2 penalty added to the gradient.")


class AdamWOptimizer(_Strict):
    name: Literal["adamw"] = Field(description="Optimiser tag.")
    lr: float = Field(default=1e-3, gt=0, description="Learning rate.")
    betas: tuple[float, float] = Field(default=(0.9, 0.999), description="Adam betas.")
    eps: float = Field(default=1e-8, gt=0, description="Adam epsilon.")
    weight_decay: float = Field(default=0.01, ge=0, description="Decoupled weight decay.")


class SGDOptimizer(_Strict):
    name: Literal["sgd"] = Field(description="Optimiser tag.")
    lr: float = Field(default=0.1, gt=0, description="Learning rate.")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="Momentum.")
    nesterov: bool = Field(default=False, description="Nesterov momentum.")
    weight_decay: float = Field(default=0.0, ge=0, description="L2 penalty.")


OptimizerSpec = Annotated[AdamOptimizer | AdamWOptimizer | SGDOptimizer, Field(discriminator="name")]


class ScheduleSpec(_Strict):
    """Learning-rate schedule over the whole run, stepped every batch."""

    name: Literal["constant", "cosine", "onecycle", "step", "plateau"] = Field(
        default="constant", description="Schedule shape."
    )
    warmup_epochs: float = Field(
        default=0.0,
        ge=0,
        description="Linear warm-up from 0, in epochs (every schedule but onecycle, which rises by itself); "
        "multiplies the schedule's factor.",
    )
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1, description="cosine: final lr as a fraction of lr.")
    pct_start: float = Field(default=0.3, gt=0, lt=1, description="onecycle: fraction of the run spent rising.")
    milestones: list[PositiveInt] = Field(
        default_factory=list, description="step: epochs after which the lr is multiplied by gamma (increasing)."
    )
    gamma: float = Field(default=0.1, gt=0, le=1, description="step: the factor at each milestone.")
    metric: str | None = Field(
        default=None, description="plateau: the metric watched (as select.metric); omitted: train.select's metric."
    )
    mode: Literal["min", "max"] | None = Field(
        default=None, description="plateau: whether lower or higher is better; omitted: train.select's mode."
    )
    factor: float = Field(default=0.1, gt=0, lt=1, description="plateau: the lr's factor when the metric stalls.")
    patience: NonNegativeInt = Field(
        default=10, description="plateau: epochs without improvement before the lr is reduced."
    )
    threshold: float = Field(
        default=1e-4, ge=0, description="plateau: relative improvement that counts (torch's 'rel' mode)."
    )

    @model_validator(mode="after")
    def _fields_of_its_shape(self):
        if self.milestones and self.milestones != sorted(set(self.milestones)):
            raise ValueError("milestones must be increasing epochs, e.g. [30, 60, 90]")
        if self.name != "step" and self.milestones:
            raise ValueError(f'milestones are for name = "step", not {self.name!r}')
        if self.name != "plateau" and (self.metric is not None or self.mode is not None):
            raise ValueError(f'metric and mode are for name = "plateau", not {self.name!r}')
        if self.metric is not None and (
            self.metric.startswith("test/") or not re.fullmatch(MONITOR_PATTERN, self.metric)
        ):
            raise ValueError("metric must be 'train/METRIC', 'val/METRIC' or 'val/TASK/METRIC', as select.metric")
        return self


class FixedWeighting(_Strict):
    """Each head's loss_weight, constant: the weighted sum of the heads' losses (the default)."""

    name: Literal["fixed"] = Field(description="Loss-weighting tag: the heads' loss_weight.")


class EqualWeighting(_Strict):
    """Every head's loss weighted 1 (the plain sum), whatever its loss_weight."""

    name: Literal["equal"] = Field(description="Loss-weighting tag: weight 1 per head.")


class UncertaintyWeighting(_Strict):
    """Kendall, Gal and Cipolla (2018): a learned log-variance s per head, in the model's optimiser;
    the objective is sum exp(-s) * loss + s / 2, the weight in force exp(-s)."""

    name: Literal["uncertainty"] = Field(description="Loss-weighting tag: learned homoscedastic uncertainty.")


class DWAWeighting(_Strict):
    """Dynamic weight average (Liu, Johns and Davison 2019): each epoch, weights K * softmax(r / T)
    of the heads' loss ratios r over the last two epochs; weight 1 in the first two epochs."""

    name: Literal["dwa"] = Field(description="Loss-weighting tag: dynamic weight average.")
    temperature: float = Field(default=2.0, gt=0, description="Softmax temperature T (higher: more even weights).")


class GradNormWeighting(_Strict):
    """GradNorm (Chen et al. 2018): learned weights that balance the gradient norms of the weighted
    head losses on the last node several heads read (from the IR), renormalised to sum to K."""

    name: Literal["gradnorm"] = Field(description="Loss-weighting tag: gradient normalisation.")
    alpha: float = Field(
        default=1.5, ge=0, description="Asymmetry: how strongly heads that learn slower are pulled up."
    )


class FAMOWeighting(_Strict):
    """FAMO (Liu et al., NeurIPS 2023): task logits xi, z = softmax(xi); the model follows the gradient
    of sum z_t log L_t (rescaled), and xi learns after each step from how much each loss fell."""

    name: Literal["famo"] = Field(description="Loss-weighting tag: fast adaptive multitask optimisation.")
    lr: float = Field(default=0.025, gt=0, description="Learning rate of the logits' own Adam optimiser.")
    gamma: float = Field(default=0.01, ge=0, description="Weight decay (L2) of the logits (0.01: the authors' code).")


class RLWWeighting(_Strict):
    """Random loss weighting (Lin et al., TMLR 2022): each step, K * softmax of K standard normal draws."""

    name: Literal["rlw"] = Field(description="Loss-weighting tag: random loss weighting.")


LossWeightingSpec = Annotated[
    FixedWeighting
    | EqualWeighting
    | UncertaintyWeighting
    | DWAWeighting
    | GradNormWeighting
    | FAMOWeighting
    | RLWWeighting,
    Field(discriminator="name"),
]


# Gradient aggregators ([train] aggregator): torchjd's, options passed through under torchjd's names.
PrefVector = list[Annotated[float, Field(gt=0)]] | None


class UPGradAggregator(_Strict):
    """UPGrad (Quinton and Rey, 2024): each task gradient projected onto the dual cone of all, averaged."""

    name: Literal["upgrad"] = Field(description="Aggregator tag: unconflicting projection of gradients.")
    pref_vector: PrefVector = Field(
        default=None, description="Relative weight per head (head order) before projection; omitted: equal."
    )


class MGDAAggregator(_Strict):
    """MGDA (Desideri 2012; Sener and Koltun 2018): the min-norm point of the gradients' convex hull."""

    name: Literal["mgda"] = Field(description="Aggregator tag: multiple-gradient descent.")
    epsilon: float = Field(default=0.001, gt=0, description="Frank-Wolfe stopping tolerance.")
    max_iters: PositiveInt = Field(default=100, description="Most Frank-Wolfe iterations.")


class PCGradAggregator(_Strict):
    """PCGrad (Yu et al. 2020): each gradient projected off the others it conflicts with, then summed."""

    name: Literal["pcgrad"] = Field(description="Aggregator tag: projecting conflicting gradients.")


class CAGradAggregator(_Strict):
    """CAGrad (Liu et al. 2021): the update maximising the worst task's improvement near the mean gradient."""

    name: Literal["cagrad"] = Field(description="Aggregator tag: conflict-averse gradient descent.")
    c: float = Field(
        default=0.5,
        ge=0,
        description="Radius of the ball around the mean gradient (torchjd requires it; 0.5, the authors' code's default).",
    )
    norm_eps: float = Field(default=0.0001, ge=0, description="Added to the Gramian's norm before normalising.")


class NashMTLAggregator(_Strict):
    """Nash-MTL (Navon et al. 2022): the Nash bargaining solution between the tasks' gradients (stateful)."""

    name: Literal["nash_mtl"] = Field(description="Aggregator tag: multi-task learning as a bargaining game.")
    max_norm: float = Field(default=1.0, ge=0, description="Largest norm of the update (0: no clipping).")
    update_weights_every: PositiveInt = Field(default=1, description="Steps between solving for new weights.")
    optim_niter: PositiveInt = Field(default=20, description="Iterations of the convex solver per solve.")


class IMTLGAggregator(_Strict):
    """IMTL-G (Liu et al. 2021): weights giving the update an equal projection onto every task's unit gradient."""

    name: Literal["imtl_g"] = Field(description="Aggregator tag: impartial multi-task learning (gradient part).")


class AlignedMTLAggregator(_Strict):
    """Aligned-MTL (Senushkin et al. 2023): the gradients' matrix made well-conditioned (aligned) before summing."""

    name: Literal["aligned_mtl"] = Field(description="Aggregator tag: aligned multi-task learning.")
    pref_vector: PrefVector = Field(default=None, description="Relative weight per head (head order); omitted: equal.")
    scale_mode: Literal["min", "median", "rmse"] = Field(
        default="min", description="Which singular value scales the aligned gradients."
    )


class GradDropAggregator(_Strict):
    """GradDrop (Chen et al. 2020): each coordinate keeps only the gradients of one sign, drawn by their purity."""

    name: Literal["graddrop"] = Field(description="Aggregator tag: gradient sign dropout.")
    leak: list[Annotated[float, Field(ge=0, le=1)]] | None = Field(
        default=None, description="Per head (head order), the fraction of its gradient kept regardless; omitted: 0."
    )


class GradVacAggregator(_Strict):
    """GradVac (Wang et al. 2021): pairs of gradients pushed towards an EMA target cosine (stateful)."""

    name: Literal["gradvac"] = Field(description="Aggregator tag: gradient vaccine.")
    beta: float = Field(default=0.5, ge=0, le=1, description="EMA rate of the target cosines.")
    eps: float = Field(default=1e-8, ge=0, description="Added to denominators.")


class DualProjAggregator(_Strict):
    """DualProj: the mean gradient projected onto the dual cone of the gradients (no conflict with any)."""

    name: Literal["dualproj"] = Field(description="Aggregator tag: projection onto the dual cone.")
    pref_vector: PrefVector = Field(default=None, description="Relative weight per head (head order); omitted: equal.")


class RandomAggregator(_Strict):
    """Random (Lin et al. 2022): a random convex combination of the gradients each step (softmax of normals)."""

    name: Literal["random"] = Field(description="Aggregator tag: random gradient weighting.")


AggregatorSpec = Annotated[
    UPGradAggregator
    | MGDAAggregator
    | PCGradAggregator
    | CAGradAggregator
    | NashMTLAggregator
    | IMTLGAggregator
    | AlignedMTLAggregator
    | GradDropAggregator
    | GradVacAggregator
    | DualProjAggregator
    | RandomAggregator,
    Field(discriminator="name"),
]


MONITOR_PATTERN = (
    r"^(train|val)/([A-Za-z_][A-Za-z0-9_]*/)?[A-Za-z_][A-Za-z0-9_]*$"
    # gradient-conflict diagnostics ([train] diagnostics; graphc.ir.metrics.diagnostic_names)
    r"|^train/diag/[A-Za-z_][A-Za-z0-9_]*/(norm|cos|share)/[A-Za-z_][A-Za-z0-9_]*(:[A-Za-z_][A-Za-z0-9_]*)?$"
)


class Monitor(_Strict):
    metric: str = Field(
        default="val/loss",
        description="Metric to watch: 'SPLIT/METRIC' or 'SPLIT/TASK/METRIC' with SPLIT train or val "
        "(never test), e.g. 'val/loss', 'val/fine/acc'; with [train] diagnostics also 'train/diag/NODE/cos/A:B' "
        "and the other diagnostics.",
    )
    mode: Literal["min", "max"] = Field(default="min", description="Whether lower or higher is better.")

    @field_validator("metric")
    @classmethod
    def _train_or_val(cls, value: str) -> str:
        if value.startswith("test/"):
            raise ValueError(
                "the test split is only for the final evaluation, never for model selection; watch 'val/...'"
            )
        if not re.fullmatch(MONITOR_PATTERN, value):
            raise ValueError(
                "expected 'train/METRIC', 'val/METRIC' or 'val/TASK/METRIC', e.g. 'val/loss' or 'val/fine/acc'"
            )
        return value


class EarlyStopping(Monitor):
    """Stop when the monitored metric has not improved by min_delta for patience epochs."""

    patience: PositiveInt = Field(default=10, description="Epochs without improvement before stopping.")
    min_delta: float = Field(default=0.0, ge=0, description="Smallest change that counts as an improvement.")


class TrainSpec(_Strict):
    """How to train. CLI flags (--epochs, --batch-size, --lr, --seed, --device) override these."""

    epochs: PositiveInt = Field(default=100, description="Maximum number of epochs.")
    batch_size: PositiveInt = Field(
        default=100,
        le=MAX_BATCH_SIZE,
        description="Images per batch, 1 to 2**20 (and no more than graphc check's memory estimate allows).",
    )
    seed: int = Field(
        default=0,
        ge=0,
        le=MAX_SEED,
        description="Seed of initialisation, augmentation and batch order, 0 to 2**32 - 1 (numpy's range).",
    )
    optimizer: OptimizerSpec = Field(default_factory=lambda: AdamOptimizer(name="adam"), description="Optimiser.")
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec, description="Learning-rate schedule.")
    grad_clip: float | None = Field(default=None, gt=0, description="Clip the global gradient norm to this value.")
    loss_weighting: LossWeightingSpec | None = Field(
        default=None,
        description="How the heads' losses are weighted into the total: fixed (the heads' loss_weight; the default "
        "when omitted), equal, uncertainty, dwa, gradnorm, famo or rlw. With the table, training rows log weight/TASK.",
    )
    aggregator: AggregatorSpec | None = Field(
        default=None,
        description="Jacobian descent: the parameters several heads' gradients reach (the shared nodes of the "
        "gradient diagnostics) "
        "get torchjd's aggregate of the per-head gradients of the (loss-weighted) losses instead of their sum; "
        "the others get their own head's gradient. upgrad, mgda, pcgrad, cagrad, nash_mtl, imtl_g, aligned_mtl, "
        "graddrop, gradvac, dualproj or random. Training rows log agg/weight/TASK, agg/conflict, agg/norm_ratio.",
    )
    early_stopping: EarlyStopping | None = Field(default=None, description="Early stopping; omitted = off.")
    select: Monitor = Field(default_factory=Monitor, description="Metric that picks the best checkpoint (best.pt).")
    device: str = Field(
        default="auto", description="'auto' (CUDA, then MPS, then CPU), 'cpu', 'cuda', 'cuda:1', 'mps'."
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="'auto': bf16 autocast where the device multiplies bf16 natively (CUDA compute capability "
        ">= 8, CPUs with AMX), fp32 elsewhere; 'fp32': IEEE fp32 (no TF32); 'bf16': bf16 autocast.",
    )
    compile: bool = Field(
        default=False,
        description="Train through torch.compile (checked against eager on the first batch; "
        "falls back to eager if it fails or disagrees). Off by default: it did not win on the CPUs measured.",
    )
    tensorboard: bool = Field(
        default=False,
        description="Also write every logged metric and the spec's diagram for TensorBoard, under RUN_DIR/tensorboard "
        "(needs the optional 'tensorboard' package; --tensorboard sets it).",
    )
    sync_batchnorm: bool = Field(
        default=False,
        description="With several training processes (--nproc N or torchrun): batch norm normalises with the "
        "statistics of the whole global batch (torch.nn.SyncBatchNorm, one extra all-reduce per norm layer and "
        "step) instead of each process's share. CUDA only (torch's SyncBatchNorm does not run on the CPU); "
        "no effect on one process.",
    )
    diagnostics: bool = Field(
        default=False,
        description="Gradient-conflict diagnostics: once per epoch, on 4 fixed, un-augmented training batches, "
        "for every node with parameters that several tasks' gradients reach, each task's weighted-loss gradient "
        "norm (diag/NODE/norm/TASK) and the pairwise cosines (diag/NODE/cos/A:B); for every head another task "
        "reads, the reader's share of the gradient on that head's branch (diag/HEAD/share/TASK). Logged in the "
        "training rows; the training itself follows the same trajectory (only the time differs). "
        "--diagnostics sets it.",
    )
    init_from: str | None = Field(
        default=None,
        description="Start from another run's weights (transfer learning): a run directory (its best.pt) or a "
        "checkpoint file (e.g. RUN_DIR/last.pt). Each node with parameters takes the tensors of the source's node "
        "of the same name (or the one init_map names) where every shape fits; the others keep their fresh "
        "initialisation. Relative paths are relative to the working directory. --init-from sets it.",
    )
    init_map: dict[Annotated[str, Field(pattern=NAME_PATTERN)], Annotated[str, Field(pattern=NAME_PATTERN)]] | None = (
        Field(
            default=None,
            description='With init_from: { new_node = "source_node" } loads a node from a source node of another name '
            "(both must have parameters, and every shape must fit). --init-map NEW=OLD adds to it.",
        )
    )

    @field_validator("aggregator", mode="wrap")
    @classmethod
    def _aggregator_options(cls, value, handler):
        # An unknown option: name the aggregator's options (torchjd's names), not only the bad word.
        try:
            return handler(value)
        except ValidationError as exc:
            extra = [e for e in exc.errors() if e["type"] == "extra_forbidden"]
            tag = value.get("name") if isinstance(value, dict) else None
            member = next(
                (m for m in get_args(get_args(AggregatorSpec)[0]) if m.model_fields["name"].annotation == Literal[tag]),
                None,
            )
            if not extra or member is None:
                raise
            bad = ", ".join(repr(str(e["loc"][-1])) for e in extra)
            options = [f for f in member.model_fields if f != "name"]
            known = "its options are " + ", ".join(options) if options else "it takes no options"
            raise ValueError(
                f"unknown option {bad} for aggregator {tag!r}: {known} (torchjd's names; see graphc schema)"
            ) from None

    @model_validator(mode="after")
    def _aggregator_composes(self):
        # Weights scale the losses before aggregation; a method whose weights learn from the weighted
        # sum's own gradient (uncertainty, gradnorm) has no such sum under an aggregator.
        if self.aggregator is not None and self.loss_weighting is not None:
            if self.loss_weighting.name in ("uncertainty", "gradnorm"):
                raise ValueError(
                    f"loss_weighting {self.loss_weighting.name!r} learns its weights from the gradient of the weighted "
                    f"sum of the losses, which aggregator {self.aggregator.name!r} replaces: use one of them, or a "
                    "loss_weighting that composes with an aggregator (fixed, equal, dwa, famo, rlw: the weights scale "
                    "the losses before aggregation)"
                )
        return self


# --------------------------------------------------------------------------- the spec


class Spec(_Strict):
    """A graphc model spec: a DAG of nodes plus the data and training recipe."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$",
        max_length=100,
        description="Spec name (defaults to the file name without .toml): letters, digits, '_', '.' and '-', "
        "not starting with '.'; it names the runs' folder (runs/<name>/).",
    )
    description: str = Field(default="", description="Free text shown by graphc show.")
    layers: LayerDefaults = Field(default_factory=LayerDefaults, description="Layer defaults.")
    templates: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Named partial node tables; a node with use = 'NAME' starts from the template's fields.",
    )
    nodes: list[NodeSpec] = Field(min_length=1, description="The graph, one [[nodes]] table per node.")
    data: DataSpec = Field(default_factory=DataSpec, description="Data set.")
    train: TrainSpec = Field(default_factory=TrainSpec, description="Training recipe.")

    # Where the spec came from; not part of the TOML.
    source: Path | None = Field(default=None, exclude=True, description="File the spec was read from.")
    text: str = Field(default="", exclude=True, description="The spec's TOML text.")
    origins: tuple[int, ...] = Field(
        default=(),
        exclude=True,
        description="For each node, the index of the [[nodes]] table it came from (repeat expands one table "
        "into several nodes); empty when every node is its own table.",
    )

    def origin(self, index: int) -> int:
        """Index of the [[nodes]] table that node ``index`` came from (for line numbers)."""
        return self.origins[index] if index < len(self.origins) else index

    @field_validator("name")
    @classmethod
    def _not_a_path_component(cls, value: str) -> str:
        # The name is a folder of every run (OUT/<name>/<seed>-<time>/): '.' and '..' would put the
        # runs in or above --out itself, and '.x' would hide them.
        if value.startswith("."):
            raise ValueError(
                "a spec's name becomes its runs' folder (runs/<name>/), so it cannot start with '.' "
                "('.', '..' and hidden names are path components, not names)"
            )
        return value

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def json_schema() -> dict:
    """The JSON schema of the spec format (what ``graphc schema`` prints)."""
    schema = Spec.model_json_schema()
    for field in ("source", "text", "origins"):
        schema.get("properties", {}).pop(field, None)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "graphc spec"
    return schema
