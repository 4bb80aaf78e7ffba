"""Output shapes and parameter counts of each node kind, worked out by arithmetic.

Pure functions of resolved attributes and input shapes; no torch. ``build``
calls them to fill in the IR, and the tests check them against real forward
passes and ``sum(p.numel())``. A shape that cannot be formed raises
:class:`ShapeProblem`, which ``build`` turns into a SpecError naming the node.
"""

from __future__ import annotations

from math import prod
from typing import Any, Mapping

Shape = tuple[int, ...]


class ShapeProblem(ValueError):
    """A shape that does not fit; the message says what and why, ``field`` where."""

    def __init__(self, message: str, field: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.field = field
        self.hint = hint


def features(shape: Shape) -> int:
    """Size of ``shape`` once flattened."""
    return prod(shape)


def same_padding(kernel: int, stride: int) -> int:
    """Padding that makes a convolution's output ceil(input / stride), for odd kernels."""
    if kernel % 2 == 0:
        raise ShapeProblem(
            f"padding 'same' needs an odd kernel, found kernel {kernel}.",
            field="padding",
            hint="use an odd kernel or give the padding in pixels.",
        )
    return kernel // 2


def conv_output(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def conv_block_shape(attrs: Mapping[str, Any], shape: Shape) -> Shape:
    if len(shape) != 3:
        raise ShapeProblem(
            f"a conv_block needs a feature map [C, H, W], found a vector {list(shape)}.",
            field="input",
            hint="read a node that outputs a feature map (an input or another conv_block).",
        )
    channels, height, width = shape
    layers = zip(attrs["channels"], attrs["kernel"], attrs["stride"], attrs["padding"])
    for layer, (out_channels, kernel, stride, padding) in enumerate(layers, start=1):
        new_h = conv_output(height, kernel, stride, padding)
        new_w = conv_output(width, kernel, stride, padding)
        if new_h < 1 or new_w < 1:
            raise ShapeProblem(
                f"convolution {layer} (kernel {kernel}, stride {stride}, padding {padding}) of a "
                f"{height}x{width} map leaves nothing ({new_h}x{new_w}).",
                field="kernel",
                hint="use padding 'same', a smaller kernel, or fewer downsampling layers before this block.",
            )
        channels, height, width = out_channels, new_h, new_w
    if attrs["pool"] != "none":
        size, stride = attrs["pool_size"], attrs["pool_stride"]
        new_h, new_w = (height - size) // stride + 1, (width - size) // stride + 1
        if height < size or width < size:
            raise ShapeProblem(
                f"{attrs['pool']}-pooling {size}x{size} of a {height}x{width} map collapses it "
                f"to {max(new_h, 0)}x{max(new_w, 0)}.",
                field="pool",
                hint="remove the pooling (pool = \"none\"), use a smaller pool_size, "
                "or pool less in earlier blocks.",
            )
        height, width = new_h, new_w
    return (channels, height, width)


def conv_block_params(attrs: Mapping[str, Any]) -> int:
    total, in_channels = 0, attrs["in_channels"]
    for out_channels, kernel in zip(attrs["channels"], attrs["kernel"]):
        total += in_channels * out_channels * kernel * kernel + out_channels  # weights + bias
        in_channels = out_channels
    if attrs["norm"] == "batch":
        total += 2 * in_channels  # gamma and beta
    return total


def fc_block_params(attrs: Mapping[str, Any]) -> int:
    total, in_features = 0, attrs["in_features"]
    for units in attrs["units"]:
        total += in_features * units + units
        if attrs["norm"] == "batch":
            total += 2 * units
        in_features = units
    return total


def concat_shape(mode: str, shapes: list[tuple[str, Shape]]) -> Shape:
    if mode == "features":
        return (sum(features(s) for _, s in shapes),)
    vectors = [name for name, s in shapes if len(s) != 3]
    if vectors:
        raise ShapeProblem(
            f"mode 'channels' joins feature maps, but '{vectors[0]}' gives a vector "
            f"{list(dict(shapes)[vectors[0]])}.",
            field="inputs",
            hint="use mode = \"features\" to flatten and join, or read feature maps only.",
        )
    sizes = {(s[1], s[2]) for _, s in shapes}
    if len(sizes) > 1:
        listing = ", ".join(f"'{n}' {list(s)}" for n, s in shapes)
        raise ShapeProblem(
            f"mode 'channels' needs inputs of one height and width, found {listing}.",
            field="inputs",
            hint="pool the larger maps to the same size first, or use mode = \"features\".",
        )
    (height, width), = sizes
    return (sum(s[0] for _, s in shapes), height, width)
