"""The nn.Modules each node kind compiles to, built from IR attributes.

Children get readable names so state-dict keys say what they are:
``block1.conv1.weight``, ``fine_fc1.norm2.running_mean``, ``fine_head.weight``.
"""

from __future__ import annotations

from typing import Any, Mapping

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


class ConvBlock(nn.Sequential):
    """conv -> act, repeated; then pool and batch norm in the spec's order; then dropout."""

    def __init__(self, attrs: Mapping[str, Any], layers: LayerDefaults):
        super().__init__()
        in_channels = attrs["in_channels"]
        convs = zip(attrs["channels"], attrs["kernel"], attrs["stride"], attrs["padding"])
        for i, (out_channels, kernel, stride, padding) in enumerate(convs, start=1):
            self.add_module(f"conv{i}", nn.Conv2d(in_channels, out_channels, kernel, stride, padding))
            self.add_module(f"act{i}", activation(attrs["activation"]))
            in_channels = out_channels
        pool = None
        if attrs["pool"] != "none":
            pool_class = nn.MaxPool2d if attrs["pool"] == "max" else nn.AvgPool2d
            pool = pool_class(attrs["pool_size"], attrs["pool_stride"])
        norm = None
        if attrs["norm"] == "batch":
            norm = nn.BatchNorm2d(in_channels, eps=layers.bn_eps, momentum=layers.bn_momentum)
        tail = [("pool", pool), ("norm", norm)]
        if attrs["norm_position"] == "before_pool":
            tail.reverse()
        for name, module in tail:
            if module is not None:
                self.add_module(name, module)
        if attrs["dropout"] > 0:
            self.add_module("drop", nn.Dropout(attrs["dropout"]))


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
