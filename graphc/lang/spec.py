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

import hashlib
import keyword
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    field_validator,
    model_validator,
)

# --------------------------------------------------------------------------- names

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

# Node names become attribute names of the compiled fx.GraphModule, so they must not
# shadow what it (or nn.Module) already defines: add_module refuses most of these, and
# a method name would be called instead of the submodule. "self" would be rebound by
# the generated forward. tests/test_compile.py checks this list against torch's.
RESERVED_NAMES = frozenset(
    {
        "self", "T_destination", "add_module", "add_submodule", "apply", "bfloat16", "buffers",
        "call_super_init", "children", "code", "compile", "cpu", "cuda",
        "delete_all_unused_submodules", "delete_submodule", "double", "dump_patches", "eval",
        "extra_repr", "float", "forward", "get_buffer", "get_extra_state", "get_parameter",
        "get_submodule", "graph", "half", "ipu", "load_state_dict", "meta", "modules", "mtia",
        "named_buffers", "named_children", "named_modules", "named_parameters", "parameters",
        "print_readable", "recompile", "register_backward_hook", "register_buffer",
        "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
        "register_full_backward_pre_hook", "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook", "register_module", "register_parameter",
        "register_state_dict_post_hook", "register_state_dict_pre_hook", "requires_grad_",
        "set_extra_state", "set_submodule", "shape_env", "share_memory", "state_dict", "to",
        "to_empty", "to_folder", "train", "training", "type", "xpu", "zero_grad",
    }
)

Activation = Literal["relu", "gelu", "silu", "tanh", "sigmoid", "leaky_relu", "elu", "none"]
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]


def _check_name(value: str) -> str:
    if keyword.iskeyword(value) or value in RESERVED_NAMES or value.startswith("_"):
        raise ValueError(
            f"'{value}' is reserved (a Python keyword or an nn.Module attribute); pick another name"
        )
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


class InputNode(_NodeBase):
    """The image input."""

    kind: Literal["input"] = Field(description="Node kind tag.")
    shape: tuple[PositiveInt, PositiveInt, PositiveInt] = Field(
        description="Image shape [channels, height, width] (NCHW without the batch)."
    )


IntPerLayer = Union[PositiveInt, list[PositiveInt]]


class ConvBlockNode(_NodeBase):
    """A stack of 2-D convolutions (each followed by its activation), then optional
    pooling and batch norm in an explicit order, then optional dropout."""

    kind: Literal["conv_block"] = Field(description="Node kind tag.")
    input: str = Field(description="Name of the node this block reads (a feature map).")
    channels: list[PositiveInt] = Field(
        min_length=1, description="Output channels of each convolution, in order."
    )
    kernel: IntPerLayer = Field(default=3, description="Kernel size: one for all layers, or one per layer.")
    stride: IntPerLayer = Field(default=1, description="Stride: one for all layers, or one per layer.")
    padding: Union[Literal["same", "valid"], NonNegativeInt, list[Union[Literal["same", "valid"], NonNegativeInt]]] = Field(
        default="same",
        description="'same' (output = ceil(input/stride), odd kernels), 'valid' (no padding), "
        "or pixels; one for all layers or one per layer.",
    )
    activation: Activation = Field(default="relu", description="Activation after every convolution.")
    pool: Literal["max", "avg", "none"] = Field(default="none", description="Pooling after the convolutions.")
    pool_size: PositiveInt = Field(default=2, description="Pooling window (square).")
    pool_stride: PositiveInt | None = Field(default=None, description="Pooling stride; defaults to pool_size.")
    norm: Literal["batch", "none"] = Field(default="none", description="Normalisation of the block's output.")
    norm_position: Literal["after_pool", "before_pool"] = Field(
        default="after_pool",
        description="Where the batch norm sits relative to the pooling. The reference pools "
        "before it normalises ('after_pool').",
    )
    dropout: Probability = Field(default=0.0, description="Dropout rate at the end of the block (0 = none).")

    @model_validator(mode="after")
    def _per_layer_lengths(self) -> "ConvBlockNode":
        for field in ("kernel", "stride", "padding"):
            value = getattr(self, field)
            if isinstance(value, list) and len(value) != len(self.channels):
                raise ValueError(
                    f"'{field}' lists {len(value)} values but 'channels' has {len(self.channels)} layers; "
                    f"give one value for all layers or one per layer"
                )
        return self

    def per_layer(self, field: str) -> list:
        """The value of ``field`` (kernel, stride, padding) for each layer."""
        value = getattr(self, field)
        return list(value) if isinstance(value, list) else [value] * len(self.channels)


class FCBlockNode(_NodeBase):
    """A stack of dense layers, each Linear -> activation -> dropout -> BatchNorm1d
    (the reference order). Flattens a feature-map input itself."""

    kind: Literal["fc_block"] = Field(description="Node kind tag.")
    input: str = Field(description="Name of the node this block reads.")
    units: list[PositiveInt] = Field(min_length=1, description="Output units of each dense layer, in order.")
    activation: Activation = Field(default="relu", description="Activation after every dense layer.")
    dropout: Probability = Field(default=0.0, description="Dropout after every activation (0 = none).")
    norm: Literal["batch", "none"] = Field(default="none", description="BatchNorm1d after every dropout.")


class ConcatNode(_NodeBase):
    """Concatenates its inputs, in the order listed."""

    kind: Literal["concat"] = Field(description="Node kind tag.")
    inputs: list[str] = Field(min_length=2, description="Names of the nodes to join, in tensor order.")
    mode: Literal["features", "channels"] = Field(
        default="features",
        description="'features': flatten every input and join along features (vectors and maps mix); "
        "'channels': join feature maps along channels (all inputs must share height and width).",
    )


class HeadNode(_NodeBase):
    """A Linear layer to one task's logits. Other nodes may read a head (cross-task reuse)."""

    kind: Literal["head"] = Field(description="Node kind tag.")
    input: str = Field(description="Name of the node this head reads (flattened if a feature map).")
    task: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="The task (label field of the data set) this head predicts; defaults to the node name.",
    )
    classes: PositiveInt | Literal["auto"] = Field(
        default="auto", description="Number of classes, or 'auto' to take it from the data set."
    )
    loss_weight: float = Field(default=1.0, ge=0.0, description="Weight of this head's loss in the total.")
    label_smoothing: Probability = Field(default=0.0, description="Label smoothing of this head's cross-entropy.")
    reuse_as: Literal["logits", "probabilities"] = Field(
        default="logits",
        description="What nodes that read this head see: its logits (the reference) or softmax probabilities.",
    )
    reuse_gradient: bool = Field(
        default=True,
        description="Whether gradients from nodes that read this head flow back into it (the reference: true).",
    )

    @property
    def task_name(self) -> str:
        return self.task or self.name


NodeSpec = Annotated[
    Union[InputNode, ConvBlockNode, FCBlockNode, ConcatNode, HeadNode],
    Field(discriminator="kind"),
]
NODE_CLASSES: dict[str, type[_NodeBase]] = {
    "input": InputNode,
    "conv_block": ConvBlockNode,
    "fc_block": FCBlockNode,
    "concat": ConcatNode,
    "head": HeadNode,
}


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


AugmentSpec = Annotated[
    Union[KerasAffineAugment, FlipCropAugment, NoAugment], Field(discriminator="preset")
]


class Normalize(_Strict):
    """Per-channel mean/std normalisation applied after scaling pixels to [0, 1]."""

    mean: list[float] = Field(min_length=1, description="Per-channel mean.")
    std: list[Annotated[float, Field(gt=0)]] = Field(min_length=1, description="Per-channel standard deviation.")


class SyntheticData(_Strict):
    """Learnable generated images: each fine class has its own pattern, classes of one
    coarse group share structure, plus noise."""

    classes: PositiveInt = Field(default=100, description="Number of fine classes (label field 'fine').")
    coarse_classes: PositiveInt = Field(
        default=20, description="Number of coarse classes (label field 'coarse'); must divide classes."
    )
    train_size: PositiveInt = Field(default=5000, description="Images in the training pool (before the split).")
    test_size: PositiveInt = Field(default=1000, description="Images in the test split.")
    noise: float = Field(default=0.25, ge=0.0, description="Standard deviation of the pixel noise.")

    @model_validator(mode="after")
    def _groups_divide(self) -> "SyntheticData":
        if self.classes % self.coarse_classes:
            raise ValueError(
                f"coarse_classes ({self.coarse_classes}) must divide classes ({self.classes})"
            )
        return self


DATASETS = ("cifar100", "imagefolder", "synthetic")


class DataSpec(_Strict):
    """What to train on. CLI flags (--dataset, --data-dir) override these."""

    dataset: Literal["cifar100", "imagefolder", "synthetic"] = Field(
        default="cifar100", description="Data set kind."
    )
    root: str | None = Field(
        default=None,
        description="cifar100: directory holding (or to receive) cifar-100-python/; "
        "imagefolder: directory with train/<class>/ and test/<class>/.",
    )
    val_fraction: float = Field(
        default=0.2, ge=0.0, lt=1.0, description="Fraction of the training images held out for validation."
    )
    split_seed: int = Field(default=0, description="Seed of the train/validation split (fixed across training seeds).")
    augment: AugmentSpec = Field(default_factory=lambda: NoAugment(preset="none"), description="Training augmentation.")
    normalize: Normalize | None = Field(default=None, description="Optional mean/std normalisation.")
    label: str = Field(
        default="fine", pattern=NAME_PATTERN, description="imagefolder: label field named by the class folder."
    )
    # Non-empty groups and fields: an empty one would give a head zero classes.
    hierarchy: dict[str, Annotated[dict[str, Annotated[list[str], Field(min_length=1)]], Field(min_length=1)]] = Field(
        default_factory=dict,
        description="imagefolder: extra label fields derived from the folder label, "
        "e.g. coarse = { vehicle = ['airplane', ...], animal = [...] }. Every class must appear exactly once.",
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
        fields: dict[str, int | None] = {self.label: None}
        if self.hierarchy:
            first = next(iter(self.hierarchy.values()))
            fields[self.label] = sum(len(members) for members in first.values())
        for field, groups in self.hierarchy.items():
            fields[field] = len(groups)
        return fields


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


OptimizerSpec = Annotated[Union[AdamOptimizer, AdamWOptimizer, SGDOptimizer], Field(discriminator="name")]


class ScheduleSpec(_Strict):
    """Learning-rate schedule over the whole run, stepped every batch."""

    name: Literal["constant", "cosine", "onecycle"] = Field(default="constant", description="Schedule shape.")
    warmup_epochs: float = Field(default=0.0, ge=0, description="Linear warm-up from 0, in epochs (constant, cosine).")
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1, description="cosine: final lr as a fraction of lr.")
    pct_start: float = Field(default=0.3, gt=0, lt=1, description="onecycle: fraction of the run spent rising.")


MONITOR_PATTERN = r"^(train|val)/([A-Za-z_][A-Za-z0-9_]*/)?[A-Za-z_][A-Za-z0-9_]*$"


class Monitor(_Strict):
    metric: str = Field(
        default="val/loss",
        description="Metric to watch: 'SPLIT/METRIC' or 'SPLIT/TASK/METRIC' with SPLIT train or val "
        "(never test), e.g. 'val/loss', 'val/fine/acc'.",
    )
    mode: Literal["min", "max"] = Field(default="min", description="Whether lower or higher is better.")

    @field_validator("metric")
    @classmethod
    def _train_or_val(cls, value: str) -> str:
        if value.startswith("test/"):
            raise ValueError("the test split is only for the final evaluation, never for model selection; watch 'val/...'")
        if not re.fullmatch(MONITOR_PATTERN, value):
            raise ValueError("expected 'train/METRIC', 'val/METRIC' or 'val/TASK/METRIC', e.g. 'val/loss' or 'val/fine/acc'")
        return value


class EarlyStopping(Monitor):
    """Stop when the monitored metric has not improved by min_delta for patience epochs."""

    patience: PositiveInt = Field(default=10, description="Epochs without improvement before stopping.")
    min_delta: float = Field(default=0.0, ge=0, description="Smallest change that counts as an improvement.")


class TrainSpec(_Strict):
    """How to train. CLI flags (--epochs, --batch-size, --lr, --seed, --device) override these."""

    epochs: PositiveInt = Field(default=100, description="Maximum number of epochs.")
    batch_size: PositiveInt = Field(default=100, description="Images per batch.")
    seed: int = Field(default=0, description="Seed of initialisation, augmentation and batch order.")
    optimizer: OptimizerSpec = Field(default_factory=lambda: AdamOptimizer(name="adam"), description="Optimiser.")
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec, description="Learning-rate schedule.")
    grad_clip: float | None = Field(default=None, gt=0, description="Clip the global gradient norm to this value.")
    early_stopping: EarlyStopping | None = Field(default=None, description="Early stopping; omitted = off.")
    select: Monitor = Field(
        default_factory=Monitor, description="Metric that picks the best checkpoint (best.pt)."
    )
    device: str = Field(default="auto", description="'auto' (CUDA, then MPS, then CPU), 'cpu', 'cuda', 'cuda:1', 'mps'.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="'auto': bf16 autocast on CUDA, fp32 elsewhere."
    )


# --------------------------------------------------------------------------- the spec


class Spec(_Strict):
    """A graphc model spec: a DAG of nodes plus the data and training recipe."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$", description="Spec name (defaults to the file name without .toml)."
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

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def json_schema() -> dict:
    """The JSON schema of the spec format (what ``graphc schema`` prints)."""
    schema = Spec.model_json_schema()
    for field in ("source", "text"):
        schema.get("properties", {}).pop(field, None)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "graphc spec"
    return schema
