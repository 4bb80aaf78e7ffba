"""The nn.Modules each node kind compiles to, built from IR attributes.

Children get readable names so state-dict keys say what they are:
``block1.conv1.weight``, ``fine_fc1.norm2.running_mean``, ``fine_head.weight``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from graphc.lang.spec import LayerDefaults


def activation(name: str) -> nn.Module:
    return {
        "relu": nn.ReLU,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
        "leaky_relu": nn.LeakyReLU,
        "elu": nn.ELU,
        "none": nn.Identity,
    }[name]()


def norm2d(kind: str, channels: int, groups: int | None, layers: LayerDefaults) -> nn.Module:
    """The norm layer of a conv block: batch, group, or layer norm (GroupNorm with one group:
    each image normalised over C, H and W, with a scale and shift per channel)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels, eps=layers.bn_eps, momentum=layers.bn_momentum)
    return nn.GroupNorm(groups, channels, eps=layers.bn_eps)


def pool2d(attrs: Mapping[str, Any]) -> nn.Module:
    """The pooling layer of ``attrs`` (``pool``, ``pool_size``, ``pool_stride``; pool is not 'none')."""
    if attrs["pool"] in ("global_avg", "global_max"):
        # (B, C, H, W) -> (B, C, 1, 1); exported to ONNX as GlobalAveragePool / GlobalMaxPool
        return nn.AdaptiveAvgPool2d(1) if attrs["pool"] == "global_avg" else nn.AdaptiveMaxPool2d(1)
    pool_class = nn.MaxPool2d if attrs["pool"] == "max" else nn.AvgPool2d
    return pool_class(attrs["pool_size"], attrs["pool_stride"])


def dropout(rate: float, kind: str) -> nn.Module:
    """'element' drops single values (Dropout); 'channel' drops whole feature maps (Dropout2d)."""
    return nn.Dropout2d(rate) if kind == "channel" else nn.Dropout(rate)


class ConvBlock(nn.Sequential):
    """Per convolution: conv -> act ('after_pool', 'before_pool'), conv -> norm -> act ('post')
    or norm -> act -> conv ('pre'); then pool and a block-level norm in the spec's order;
    then dropout."""

    def __init__(self, attrs: Mapping[str, Any], layers: LayerDefaults):
        super().__init__()
        in_channels = attrs["in_channels"]
        position, norm_kind = attrs["norm_position"], attrs["norm"]
        per_conv = norm_kind != "none" and position in ("pre", "post")
        convs = zip(attrs["channels"], attrs["kernel"], attrs["stride"], attrs["padding"])
        for i, (out_channels, kernel, stride, padding) in enumerate(convs, start=1):
            conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=attrs.get("bias", True))
            if per_conv and position == "pre":
                self.add_module(f"norm{i}", norm2d(norm_kind, in_channels, attrs.get("groups"), layers))
                self.add_module(f"act{i}", activation(attrs["activation"]))
                self.add_module(f"conv{i}", conv)
            else:
                self.add_module(f"conv{i}", conv)
                if per_conv:
                    self.add_module(f"norm{i}", norm2d(norm_kind, out_channels, attrs.get("groups"), layers))
                self.add_module(f"act{i}", activation(attrs["activation"]))
            in_channels = out_channels
        if per_conv and position == "pre" and not attrs["channels"]:
            # no convolutions: norm -> act, as a pre-activation network ends before its pooling
            self.add_module("norm1", norm2d(norm_kind, in_channels, attrs.get("groups"), layers))
            self.add_module("act1", activation(attrs["activation"]))
        pool = pool2d(attrs) if attrs["pool"] != "none" else None
        norm = None
        if norm_kind != "none" and not per_conv:
            norm = norm2d(norm_kind, in_channels, attrs.get("groups"), layers)
        tail = [("pool", pool), ("norm", norm)]
        if position == "before_pool":
            tail.reverse()
        for name, module in tail:
            if module is not None:
                self.add_module(name, module)
        if attrs["dropout"] > 0:
            self.add_module("drop", dropout(attrs["dropout"], attrs.get("dropout_kind", "element")))


class FCBlock(nn.Sequential):
    """Flatten (for a map input), then per layer: Linear -> act -> dropout -> BatchNorm1d."""

    def __init__(self, attrs: Mapping[str, Any], layers: LayerDefaults, flatten: bool):
        super().__init__()
        if flatten:
            self.add_module("flatten", nn.Flatten())
        in_features = attrs["in_features"]
        for i, units in enumerate(attrs["units"], start=1):
            self.add_module(f"fc{i}", nn.Linear(in_features, units))
            self.add_module(f"act{i}", activation(attrs["activation"]))
            if attrs["dropout"] > 0:
                self.add_module(f"drop{i}", nn.Dropout(attrs["dropout"]))
            if attrs["norm"] == "batch":
                self.add_module(f"norm{i}", nn.BatchNorm1d(units, eps=layers.bn_eps, momentum=layers.bn_momentum))
            in_features = units


class Head(nn.Linear):
    """A Linear layer to one task's logits; flattens a feature-map input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))  # (B, in_features) -> (B, classes)


_INITIALISERS = {
    "glorot_uniform": nn.init.xavier_uniform_,
    "glorot_normal": nn.init.xavier_normal_,
    # Keras's he_* draw with fan_in and gain sqrt(2), as kaiming_* with ReLU does.
    "he_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
    "he_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
}


def initialise(module: nn.Module, layers: LayerDefaults) -> None:
    """Apply the spec's kernel and bias initialisation to every conv and dense layer."""
    for layer in module.modules():
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            continue
        if layers.init != "torch_default":
            _INITIALISERS[layers.init](layer.weight)
        if layers.bias_init == "zeros" and layer.bias is not None:
            nn.init.zeros_(layer.bias)
