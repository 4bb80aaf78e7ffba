"""What to write instead: constructs of other frameworks, mapped to the graphc spec language.

A new user writes what they know - ``kind = "add"``, ``dilation = 2``, ``pool = "gap"``,
``trainable = false``. A nearest-spelling guess ("did you mean 'head'?" for ``add``)
then misleads. :func:`hint_for` looks the word up here first; ``graphc.lang.load``
falls back to the nearest spelling only when the word is not in the table.

One table for fields and values, and for constructs graphc has no node kind for: each
entry says what graphc offers instead, or that it is not supported and what comes closest.
The words for what a node kind does (``conv2d``, ``maxpool``, ``add``) come with the kind,
from ``graphc.lang.spec.NODE_KINDS``; the kind lists below are read from it too.
"""

from __future__ import annotations

from graphc.lang.spec import NODE_CLASSES, NODE_KINDS


def _listed(words: list[str], last: str = "and") -> str:
    """``a, b and c``."""
    return ", ".join(words[:-1]) + f" {last} " + words[-1] if len(words) > 1 else "".join(words)


_KINDS = [kind for kind in NODE_KINDS if kind != "input"]  # what a user writes between input and heads

_NORM = (
    'normalisation is a setting of a block: norm = "batch" | "group" | "layer" on a conv_block '
    '(with norm_position and groups), norm = "batch" on an fc_block.'
)
_ACTIVATION = 'activations are a setting of a block: activation = "relu" | "gelu" | "silu" | "tanh" | "sigmoid" | "leaky_relu" | "elu" | "none".'
_FLATTEN = (
    'no flatten node is needed: fc_block, head and a concat with mode = "features" flatten a feature map themselves.'
)
_SOFTMAX = (
    "heads output logits and their loss applies the softmax; a node that reads a head gets probabilities "
    'with reuse_as = "probabilities" on that head.'
)
_LOSS = (
    "every head is trained with cross-entropy; set its weight in the total with loss_weight and "
    "smoothing with label_smoothing on the head."
)
_ATTENTION = (
    "not supported: graphc builds convolutional and dense networks; attention, recurrent and embedding "
    f"layers have no node kind. Use {_listed(_KINDS)}."
)
_CROSS_STITCH = (
    "not supported: cross-stitch units and other learned mixing between task branches have no node kind. "
    "graphc expresses hard sharing (several nodes reading one node) and cross-task reuse (a concat reading "
    "another head's output)."
)
_DILATION = "not supported: convolutions have kernel, stride and padding, but no dilation; a larger kernel or another layer widens the view."
_GROUPED = 'not supported: convolutions are dense over channels (no grouped or depthwise convolutions); groups = N sets the groups of norm = "group".'
_UPSAMPLE = "not supported: graphc has no upsampling or transposed convolution; its models map images to class logits."
_MULTIPLY = 'not supported: inputs are joined by concat with mode = "features", "channels" or "sum", not multiplied.'
_RESHAPE = "not supported: shapes follow from the nodes; fc_block, head and features concat flatten maps themselves."
_OPTIMISER = (
    'optimisation is set for the whole model in [train]: optimizer = { name = "sgd", lr = 0.1, weight_decay = 5e-4 }.'
)
_BN_CONSTANTS = "batch-norm constants are set for every layer in [layers]: bn_momentum and bn_eps."
_INIT = "initialisation is set for every layer in [layers]: init and bias_init."


def _trainable() -> str:
    kinds = [kind for kind, model in NODE_CLASSES.items() if "trainable" in model.model_fields]
    if kinds:
        return f"trainable = false freezes a node with parameters ({', '.join(kinds)}): write it in that node's [[nodes]] table."
    return "not supported: every parameter of the model trains; there is no per-node freezing."


def _repeat() -> str:
    chains = [kind for kind, model in NODE_CLASSES.items() if model.repeats == "chain"]
    return (
        f"repeat = N is written on a {_listed(chains, 'or')} (a chain of N copies, NAME_1 .. NAME_N), or on a "
        'concat with mode = "sum" (N copies of the residual unit it closes).'
    )


# word (lower case) -> what to use instead: fields, values and constructs without a node kind.
GENERAL_HINTS: dict[str, str] = {
    **dict.fromkeys(
        (
            "batchnorm",
            "batch_norm",
            "batchnorm2d",
            "batchnormalization",
            "bn",
            "layernorm",
            "layer_norm",
            "groupnorm",
            "group_norm",
            "normalization",
            "normalisation",
            "instance_norm",
            "instancenorm",
        ),
        _NORM,
    ),
    **dict.fromkeys(("relu", "activation_layer", "gelu", "silu"), _ACTIVATION),
    **dict.fromkeys(("flatten", "globalflatten"), _FLATTEN),
    **dict.fromkeys(("softmax", "log_softmax", "logsoftmax"), _SOFTMAX),
    **dict.fromkeys(("loss", "criterion", "loss_fn", "objective", "cross_entropy"), _LOSS),
    **dict.fromkeys(
        ("attention", "self_attention", "multihead_attention", "mha", "transformer", "lstm", "gru", "rnn", "embedding"),
        _ATTENTION,
    ),
    **dict.fromkeys(("cross_stitch", "crossstitch", "cross_stitch_unit", "sluice", "mtan", "nddr"), _CROSS_STITCH),
    **dict.fromkeys(("dilation", "dilation_rate", "atrous", "dilated"), _DILATION),
    **dict.fromkeys(("depthwise", "separable", "separable_conv", "depthwise_conv", "conv_groups"), _GROUPED),
    **dict.fromkeys(
        ("upsample", "upsampling", "upsampling2d", "deconv", "conv_transpose", "convtranspose2d", "interpolate"),
        _UPSAMPLE,
    ),
    **dict.fromkeys(("multiply", "mul", "product", "gate", "gating"), _MULTIPLY),
    **dict.fromkeys(("reshape", "view", "permute", "squeeze"), _RESHAPE),
    **dict.fromkeys(
        ("lr", "learning_rate", "weight_decay", "optimizer", "optimiser", "l2", "regularizer", "kernel_regularizer"),
        _OPTIMISER,
    ),
    **dict.fromkeys(("momentum", "bn_momentum", "epsilon", "eps", "bn_eps"), _BN_CONSTANTS),
    **dict.fromkeys(("kernel_initializer", "initializer", "init", "weight_init", "bias_initializer"), _INIT),
    "repeat": _repeat(),
    # fields under the names other frameworks give them
    "filters": "the output channels of a conv_block are channels = [...], one entry per convolution.",
    "out_channels": "the output channels of a conv_block are channels = [...], one entry per convolution.",
    "kernel_size": "the kernel size is kernel = 3 (one for all convolutions) or a list with one per convolution.",
    "strides": "the stride is stride = 1 (one for all convolutions) or a list with one per convolution.",
    "units_per_layer": "an fc_block's widths are units = [...], one entry per dense layer.",
    "num_classes": 'a head\'s class count is classes = N, or classes = "auto" to take it from the data set.',
    "n_classes": 'a head\'s class count is classes = N, or classes = "auto" to take it from the data set.',
    "use_bias": "a conv_block's convolutions have a bias unless bias = false.",
    # values under the names other frameworks give them
    "swish": 'SiLU (swish) is activation = "silu".',
    "linear_activation": 'no activation is activation = "none".',
}
# The words of each node kind's own job, from the kind's entry in NODE_KINDS (a word is one kind's
# or the table's above, never both: tests/test_kinds.py checks).
KIND_WORDS: dict[str, str] = {word: text for form in NODE_KINDS.values() for word, text in form.words.items()}
HINTS: dict[str, str] = {**GENERAL_HINTS, **KIND_WORDS}


# (field, value) -> what to write instead, where a value means something else than the bare word.
VALUE_HINTS: dict[tuple[str, str], str] = {
    ("activation", "linear"): 'no activation is activation = "none".',
    ("activation", "softmax"): _SOFTMAX,
    **dict.fromkeys(
        (("norm", w) for w in ("bn", "batchnorm", "batch_norm", "batchnorm2d")), 'batch norm is norm = "batch".'
    ),
    **dict.fromkeys(
        (("norm", w) for w in ("ln", "layernorm", "layer_norm")), 'layer norm is norm = "layer" (on a conv_block).'
    ),
    **dict.fromkeys(
        (("norm", w) for w in ("gn", "groupnorm", "group_norm")),
        'group norm is norm = "group" with groups = N (on a conv_block).',
    ),
    **dict.fromkeys(
        (("mode", w) for w in ("concat", "concatenate", "cat", "flatten")),
        'mode = "features" flattens and joins; mode = "channels" joins maps along channels.',
    ),
    ("padding", "causal"): 'not supported: padding is "same", "valid" or pixels.',
    (
        "padding",
        "full",
    ): 'not supported: padding is "same", "valid" or pixels (kernel - 1 pixels gives a full convolution).',
}


# [train] aggregator and loss_weighting under other libraries' names (torchjd, LibMTL).
_AGGREGATORS = "upgrad, mgda, pcgrad, cagrad, nash_mtl, imtl_g, aligned_mtl, graddrop, gradvac, dualproj or random"
_AGGREGATOR_WORDS = {
    "nash_mtl": ("nashmtl", "nash"),
    "imtl_g": ("imtl", "imtlg", "imtl_grad"),
    "aligned_mtl": ("alignedmtl", "aligned"),
    "graddrop": ("grad_drop",),
    "gradvac": ("grad_vac", "gradient_vaccine"),
    "dualproj": ("dual_proj",),
    "mgda": ("mgda_ub", "mgdaub", "min_norm"),
    "pcgrad": ("pc_grad", "gradient_surgery"),
    "cagrad": ("ca_grad",),
    "upgrad": ("up_grad", "jd", "jacobian_descent"),
}
VALUE_HINTS.update(
    {
        **{
            ("train.aggregator", word): f'aggregator = {{ name = "{name}" }}.'
            for name, words in _AGGREGATOR_WORDS.items()
            for word in words
        },
        **dict.fromkeys(
            (("train.aggregator", w) for w in ("famo", "rlw", "gradnorm", "uncertainty", "dwa", "ew", "equal")),
            'that is a loss weighting, not a gradient aggregator: loss_weighting = { name = "..." } '
            "(fixed, equal, uncertainty, dwa, gradnorm, famo, rlw).",
        ),
        **dict.fromkeys(
            (("train.aggregator", w) for w in ("sum", "mean", "none", "linear_scalarization", "ls")),
            "the plain sum of the losses is training without an aggregator: leave aggregator out.",
        ),
        **dict.fromkeys(
            (("train.loss_weighting", w) for w in ("random", "random_weighting", "random_loss_weighting")),
            'random loss weighting is loss_weighting = { name = "rlw" }.',
        ),
        **dict.fromkeys(
            (("train.loss_weighting", w) for w in tuple(_AGGREGATOR_WORDS) + ("nashmtl", "imtl")),
            f"that is a gradient aggregator: aggregator = {{ name = ... }} ({_AGGREGATORS}).",
        ),
    }
)


# (top-level table, word) -> what to write instead, where a word means something else there.
SECTION_HINTS: dict[tuple[str, str], str] = {
    (
        "train",
        "momentum",
    ): 'SGD momentum is set in the optimizer table: optimizer = { name = "sgd", lr = 0.1, momentum = 0.9 }.',
    **dict.fromkeys(
        (("train", w) for w in ("eps", "epsilon")),
        'the Adam epsilon is set in the optimizer table: optimizer = { name = "adam", eps = 1e-7 }.',
    ),
    (
        "train",
        "scheduler",
    ): 'the learning-rate schedule is schedule = { name = "onecycle" } (constant | cosine | onecycle | step | plateau).',
}


def hint_for(word: object, field: str | None = None, section: str | None = None) -> str | None:
    """What graphc offers instead of ``word`` (a node kind, field or value of another
    framework; ``field`` names the field a value was given for, ``section`` the top-level
    table it was found in), or None when the table does not know it."""
    if not isinstance(word, str):
        return None
    key = word.strip().lower().replace("-", "_").replace(" ", "_")
    if field is not None and (field, key) in VALUE_HINTS:
        return VALUE_HINTS[(field, key)]
    if section is not None and (section, key) in SECTION_HINTS:
        return SECTION_HINTS[(section, key)]
    if key == "trainable" or key in ("freeze", "frozen", "requires_grad"):
        return _trainable()
    return HINTS.get(key)
