"""The arithmetic of shapes and parameter counts: convolutions, pooling, joins.

Pure functions of resolved attributes and input shapes; no torch. The node kinds'
table (``graphc.ir.kinds``) calls them to fill in the IR, and the tests check them
against real forward passes and ``sum(p.numel())``. A shape that cannot be formed
raises :class:`ShapeProblem`, which ``build`` turns into a SpecError naming the node.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import prod
from typing import Any

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
    _check_norm_groups(attrs)
    return pool_shape(attrs, (channels, height, width))


def pool_shape(attrs: Mapping[str, Any], shape: Shape) -> Shape:
    """A map [C, H, W] after pooling (``attrs``: ``pool``, ``pool_size``, ``pool_stride``, as a
    conv_block's): 'global_avg' / 'global_max' give C x 1 x 1, 'max' / 'avg' a window, 'none' nothing."""
    channels, height, width = shape
    if attrs["pool"] in ("global_avg", "global_max"):
        return (channels, 1, 1)  # a C x 1 x 1 map: readers that flatten see C features
    if attrs["pool"] != "none":
        size, stride = attrs["pool_size"], attrs["pool_stride"]
        new_h, new_w = (height - size) // stride + 1, (width - size) // stride + 1
        if height < size or width < size:
            raise ShapeProblem(
                f"{attrs['pool']}-pooling {size}x{size} of a {height}x{width} map collapses it "
                f"to {max(new_h, 0)}x{max(new_w, 0)}.",
                field="pool",
                hint='remove the pooling (pool = "none"), use a smaller pool_size, or pool less in earlier blocks.',
            )
        height, width = new_h, new_w
    return (channels, height, width)


def normalised_channels(attrs: Mapping[str, Any]) -> list[int]:
    """Channel counts of a conv block's norm layers, in order: one per convolution for
    norm_position 'pre' (its input) or 'post' (its output), else one for the block's output."""
    if attrs["norm"] == "none":
        return []
    if attrs["norm_position"] == "pre":
        return [attrs["in_channels"], *attrs["channels"][:-1]]
    if attrs["norm_position"] == "post":
        return list(attrs["channels"])
    return [attrs["channels"][-1] if attrs["channels"] else attrs["in_channels"]]


def _check_norm_groups(attrs: Mapping[str, Any]) -> None:
    groups = attrs.get("groups")
    if attrs["norm"] != "group" or not groups:
        return
    for channels in normalised_channels(attrs):
        if channels % groups:
            raise ShapeProblem(
                f"group norm with {groups} groups cannot split {channels} channels evenly.",
                field="groups",
                hint=f"set groups to a divisor of {channels} (e.g. {max(d for d in range(1, min(groups, channels) + 1) if channels % d == 0)}), "
                "or change the channels.",
            )


def conv_block_outputs(attrs: Mapping[str, Any], in_shape: Shape, out_shape: Shape) -> int:
    """Values a conv block produces per image: every convolution's output, plus the pooled map."""
    total, (channels, height, width) = 0, in_shape
    for channels, kernel, stride, padding in zip(attrs["channels"], attrs["kernel"], attrs["stride"], attrs["padding"]):
        height, width = conv_output(height, kernel, stride, padding), conv_output(width, kernel, stride, padding)
        total += channels * height * width
    return total + (prod(out_shape) if out_shape != (channels, height, width) else 0)


def conv_block_params(attrs: Mapping[str, Any]) -> int:
    total, in_channels = 0, attrs["in_channels"]
    bias = attrs.get("bias", True)
    for out_channels, kernel in zip(attrs["channels"], attrs["kernel"]):
        total += in_channels * out_channels * kernel * kernel + (out_channels if bias else 0)  # weights + bias
        in_channels = out_channels
    # batch, group and layer norm all learn a scale and a shift per channel
    total += sum(2 * channels for channels in normalised_channels(attrs))
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
    if mode == "sum":
        first_name, first = shapes[0]
        for name, shape in shapes[1:]:
            if shape != first:
                raise ShapeProblem(
                    f"mode 'sum' adds inputs of one shape, but '{first_name}' gives {shape_text(first)} "
                    f"and '{name}' gives {shape_text(shape)}.",
                    field="inputs",
                    hint=projection_hint((first_name, first), (name, shape)),
                )
        return first
    vectors = [name for name, s in shapes if len(s) != 3]
    if vectors:
        raise ShapeProblem(
            f"mode 'channels' joins feature maps, but '{vectors[0]}' gives a vector {list(dict(shapes)[vectors[0]])}.",
            field="inputs",
            hint='use mode = "features" to flatten and join, or read feature maps only.',
        )
    sizes = {(s[1], s[2]) for _, s in shapes}
    if len(sizes) > 1:
        listing = ", ".join(f"'{n}' {list(s)}" for n, s in shapes)
        raise ShapeProblem(
            f"mode 'channels' needs inputs of one height and width, found {listing}.",
            field="inputs",
            hint='pool the larger maps to the same size first, or use mode = "features".',
        )
    ((height, width),) = sizes
    return (sum(s[0] for _, s in shapes), height, width)


def shape_text(shape: Shape) -> str:
    return "x".join(map(str, shape))


def projection_hint(a: tuple[str, Shape], b: tuple[str, Shape]) -> str:
    """How to make two summed inputs agree: a 1x1 conv_block projecting the larger map."""
    if len(a[1]) != 3 or len(b[1]) != 3:
        return 'sum feature maps with feature maps, and vectors with vectors of one size; or join them with mode = "features".'
    (source, (_, sh, sw)), (_, (channels, th, tw)) = sorted(
        (a, b), key=lambda item: (-item[1][1] * item[1][2], item[1][0])
    )
    stride = sh // th if th and sh % th == 0 and sw == tw * (sh // th) else None
    if stride is None:
        return "the two maps' sizes are not a whole multiple of each other; pool or stride so that they match."
    stride_text = f", stride = {stride}" if stride > 1 else ""
    return (
        f"add a projection: a conv_block reading '{source}' with channels = [{channels}], kernel = 1{stride_text}, "
        f"activation = \"none\" (the usual ResNet shortcut), and sum its output instead of '{source}'."
    )
