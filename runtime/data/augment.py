"""Batched image augmentation on the batch's own device, fresh random parameters per image.

The training loop moves a uint8 batch to its device, scales it with
:func:`to_float` and calls the function :func:`make_augment` returns::

    augment = make_augment(spec.data.augment)
    x = to_float(batch_uint8.to(device), spec.data.normalize)   # (B, C, H, W) float32
    x = augment(x, generator)                                   # same shape, same device

One whole batch is transformed by a single ``affine_grid`` + ``grid_sample``
(or one gather for crops), so on a GPU augmentation costs about as much as one
convolution, where per-image PIL transforms would starve it.

Randomness: the parameters (a handful of numbers per image) are drawn from
``generator`` *on the generator's device*. Pass a CPU ``torch.Generator``: the same
seed then gives the same augmentation whatever device trains, and the generator's
state is easy to checkpoint.

Host and device: everything per image that is not a pixel - the (B, 2, 3) sampling
matrices, the crop windows - is computed on the CPU where the parameters are drawn and
reaches the batch's device in one copy per batch (pinned and asynchronous on CUDA,
graphc.runtime.data.batches.to_device); the device runs only the resampling itself. A GPU
never waits for the host inside augmentation, and the host makes few kernel launches.

Presets (``graphc.lang.spec``):

- ``keras_affine``: Keras's ``ImageDataGenerator`` affine transform, matched to
  ``get_random_transform`` + ``apply_affine_transform`` of keras-preprocessing:
  rotation ``theta ~ U(-rotation, rotation)`` degrees; shifts ``tx ~ U(-shift, shift) * H``
  (rows) and ``ty ~ U(-shift, shift) * W`` (columns) in pixels; shear ``~ U(-shear, shear)``
  in *degrees* (Keras's ``shear_range`` is degrees, so the reference's 0.3 is tiny);
  zoom drawn independently per axis, ``zx, zy ~ U(low, high)``; then an optional
  horizontal flip (Keras flips after the transform). The output pixel ``p`` (row, col,
  about the image centre) reads the input at ``R(theta) @ T(tx, ty) @ Shear @ Zoom @ p``,
  exactly Keras's matrix product and direction, so zoom > 1 shows a *smaller* picture
  and a positive angle turns the picture clockwise on screen. Bilinear interpolation
  (Keras's ``interpolation_order=1``); fills: ``reflect`` = Keras/scipy ``reflect``
  (half-sample symmetric, ``dcba|abcd|dcba``), ``border`` = Keras ``nearest``
  (``aaaa|abcd|dddd``), ``zeros`` = constant 0. Centre: ``(H/2 - 0.5, W/2 - 0.5)``, the
  true centre as in current keras-preprocessing; Keras releases before 2019 used
  ``H/2 + 0.5``, rotating about a point one pixel off-centre.
- ``flip_crop``: pad by ``padding`` pixels (zeros, or ``reflect`` = torch/torchvision
  ``reflect``, ``dcb|abcd|cba``), take a random HxW window, flip it horizontally with
  probability 1/2. Pixels are copied, never interpolated.
- ``none``: the batch unchanged.

Both presets compute each output pixel as a convex combination of input pixels (or
the zero fill), so a batch in [0, 1] stays in [0, 1]; they work on normalised batches too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from graphc.errors import Problem, SpecError
from graphc.lang.spec import AugmentSpec, FlipCropAugment, KerasAffineAugment, Normalize
from graphc.runtime.data.batches import to_device

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


# --------------------------------------------------------------------------- scaling


def normalize_(images: torch.Tensor, normalize: Normalize) -> torch.Tensor:
    """In place: ``(x - mean) / std`` per channel (one value broadcasts to every channel)."""
    channels = images.shape[1]
    for name, values in (("mean", normalize.mean), ("std", normalize.std)):
        if len(values) not in (1, channels):
            raise SpecError(
                Problem(
                    f"normalize.{name} has {len(values)} values but the images have {channels} channels.",
                    field=f"normalize.{name}",
                    hint=f"give one value per channel ({channels}) or a single value.",
                )
            )
    mean, std = channel_stats(tuple(normalize.mean), tuple(normalize.std), images.device, images.dtype)
    return images.sub_(mean).div_(std)


@functools.lru_cache(maxsize=16)
def channel_stats(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, C, 1, 1) mean and std on ``device``: made once per device and dtype, not at every batch
    (on a GPU each would be a blocking copy). Read-only: normalize_ never writes them."""
    return tuple(torch.tensor(v, dtype=dtype).view(1, -1, 1, 1).to(device) for v in (mean, std))


def to_float(images: torch.Tensor, normalize: Normalize | None) -> torch.Tensor:
    """uint8 (B, C, H, W) on any device -> float32 in [0, 1], then optionally ``(x - mean) / std``."""
    if images.dtype != torch.uint8:
        raise TypeError(f"to_float expects uint8 images, got {images.dtype}")
    x = images.to(torch.float32).div_(255)  # (B, C, H, W) in [0, 1]
    return normalize_(x, normalize) if normalize is not None else x


# --------------------------------------------------------------------------- Keras affine


@dataclass(frozen=True)
class AffineParams:
    """Keras ``ImageDataGenerator`` transform parameters, one per image (float64 (B,), flip bool (B,))."""

    theta: torch.Tensor  # rotation, degrees
    tx: torch.Tensor  # shift along the rows (height), pixels
    ty: torch.Tensor  # shift along the columns (width), pixels
    shear: torch.Tensor  # shear angle, degrees
    zx: torch.Tensor  # zoom of the row axis (Keras's zx scales rows)
    zy: torch.Tensor  # zoom of the column axis
    flip: torch.Tensor  # horizontal flip after the transform

    @staticmethod
    def identity(batch: int) -> AffineParams:
        zeros = torch.zeros(batch, dtype=torch.float64)
        return AffineParams(zeros, zeros, zeros, zeros, zeros + 1, zeros + 1, torch.zeros(batch, dtype=torch.bool))


def sample_affine(
    spec: KerasAffineAugment, batch: int, height: int, width: int, generator: torch.Generator
) -> AffineParams:
    """Draw Keras's random parameters for ``batch`` images, on the generator's device."""
    # One draw of 7 uniforms per image whatever the settings, so the stream is stable.
    u = torch.rand(batch, 7, generator=generator, device=generator.device, dtype=torch.float64)
    symmetric = 2 * u - 1  # U(-1, 1)
    low, high = spec.zoom
    return AffineParams(
        theta=symmetric[:, 0] * spec.rotation,
        tx=symmetric[:, 1] * spec.shift * height,
        ty=symmetric[:, 2] * spec.shift * width,
        shear=symmetric[:, 3] * spec.shear,
        zx=low + (high - low) * u[:, 4],
        zy=low + (high - low) * u[:, 5],
        flip=(u[:, 6] < 0.5) & spec.flip,
    )


def sampling_matrices(p: AffineParams, height: int, width: int) -> torch.Tensor:
    """(B, 2, 3) float64 ``affine_grid`` matrices (normalised (x, y), ``align_corners=False``) of
    Keras's transform, on the parameters' device (the CPU: see the module's docstring).

    Keras maps an output pixel (row, col, 1) about the image centre to the input pixel it reads
    with ``rotation @ shift @ shear @ zoom``, then the flip (col -> -col). Multiplied out, with
    ``c, s = cos, sin(theta)`` and ``f = -1`` where the image flips::

        rotation @ shift    = [[c, -s, c tx - s ty], [s, c, s tx + c ty], [0, 0, 1]]
        shear @ zoom @ flip = [[zx, -sin(shear) zy f, 0], [0, cos(shear) zy f, 0], [0, 0, 1]]

    (a dozen operations on (B,) tensors instead of four batched 3x3 products). ``affine_grid``
    wants (x, y) = (col, row) with ``x = col * 2 / W`` about the centre, so the (row, col)
    matrix M becomes ``[[M11, M10 sx / sy, M12 sx], [M01 sy / sx, M00, M02 sy]]`` with
    ``sx, sy = 2 / W, 2 / H``.
    """
    theta, shear = torch.deg2rad(p.theta), torch.deg2rad(p.shear)
    c, s = theta.cos(), theta.sin()
    zy = p.zy * (1 - 2 * p.flip.to(torch.float64))  # the flip negates the column axis
    a, d = -shear.sin() * zy, shear.cos() * zy  # column 1 of shear @ zoom @ flip
    m00, m01, m02 = c * p.zx, c * a - s * d, c * p.tx - s * p.ty  # M's row 0: the input pixel's row
    m10, m11, m12 = s * p.zx, s * a + c * d, s * p.tx + c * p.ty  # M's row 1: its column
    sx, sy = 2.0 / width, 2.0 / height
    return torch.stack([m11, m10 * (sx / sy), m12 * sx, m01 * (sy / sx), m00, m02 * sy], dim=1).view(-1, 2, 3)


PADDING_MODE = {"reflect": "reflection", "zeros": "zeros", "border": "border"}


def apply_affine(images: torch.Tensor, params: AffineParams, fill: str = "reflect") -> torch.Tensor:
    """Transform float (B, C, H, W) ``images`` with Keras's parameters, one set per image.

    The matrices are computed where the parameters are (the CPU) and copied once."""
    b, c, h, w = images.shape
    theta = to_device(sampling_matrices(params, h, w).to(images.dtype), images.device)  # (B, 2, 3)
    grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=PADDING_MODE[fill], align_corners=False)


# --------------------------------------------------------------------------- flip + crop


def sample_crop(spec: FlipCropAugment, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Window offsets (B, 2) in [0, 2 * padding] (row, col) and flips (B,), on the generator's device."""
    offsets = torch.randint(0, 2 * spec.padding + 1, (batch, 2), generator=generator, device=generator.device)
    flips = torch.rand(batch, generator=generator, device=generator.device) < 0.5
    return offsets, flips & spec.flip


def apply_crop(
    images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int, fill: str = "zeros"
) -> torch.Tensor:
    """Pad, then copy each image's HxW window at ``offsets`` (row, col), mirrored where ``flips``."""
    b, c, h, w = images.shape
    if padding:
        images = F.pad(images, (padding,) * 4, mode="reflect" if fill == "reflect" else "constant")
    # Output pixel (i, j) reads the padded plane at  start + i * row + j * step : per image, the
    # window's first pixel and a column step of +1, or -1 from its last column when mirrored.
    # Computed where the offsets are drawn (the CPU) and copied in one piece.
    row = images.shape[3]
    flips = flips.to(offsets.dtype)
    start = offsets[:, 0] * row + offsets[:, 1] + (w - 1) * flips
    window = to_device(torch.stack([start, 1 - 2 * flips], dim=1), images.device)  # (B, 2): start, step
    rows = torch.arange(0, h * row, row, device=images.device)  # (H,)
    cols = torch.arange(w, device=images.device)  # (W,)
    flat = window[:, :1, None] + rows[None, :, None] + window[:, 1:, None] * cols  # (B, H, W)
    # One gather along the flattened padded plane (several times faster than 4-D fancy indexing).
    flat = flat.view(b, 1, h * w).expand(b, c, h * w)
    return images.flatten(2).gather(2, flat).view(b, c, h, w)  # (B, C, H, W)


# --------------------------------------------------------------------------- presets


def make_augment(spec: AugmentSpec) -> Augment:
    """The batched augmentation of a preset: ``augment(images, generator) -> images``.

    ``images`` is float (B, C, H, W) on any device; the result is on the same device.
    ``generator`` draws the random parameters on its own device (use a CPU generator).
    """
    if isinstance(spec, KerasAffineAugment):

        def keras_affine(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            b, _, h, w = images.shape
            return apply_affine(images, sample_affine(spec, b, h, w, generator), spec.fill)

        return keras_affine
    if isinstance(spec, FlipCropAugment):

        def flip_crop(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            offsets, flips = sample_crop(spec, images.shape[0], generator)
            return apply_crop(images, offsets, flips, spec.padding, spec.fill)

        return flip_crop

    def none(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return images

    return none
