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
``generator`` *on the generator's device* and then moved to the batch's device.
Pass a CPU ``torch.Generator``: the same seed then gives the same augmentation
whatever device trains, and the generator's state is easy to checkpoint.

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

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from graphc.errors import Problem, SpecError
from graphc.lang.spec import AugmentSpec, FlipCropAugment, KerasAffineAugment, Normalize

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


# --------------------------------------------------------------------------- scaling


def normalize_(images: torch.Tensor, normalize: Normalize) -> torch.Tensor:
    """In place: ``(x - mean) / std`` per channel (one value broadcasts to every channel)."""
    channels = images.shape[1]
    for name, values in (("mean", normalize.mean), ("std", normalize.std)):
        if len(values) not in (1, channels):
            raise SpecError(Problem(
                f"normalize.{name} has {len(values)} values but the images have {channels} channels.",
                field=f"normalize.{name}", hint=f"give one value per channel ({channels}) or a single value.",
            ))
    mean = torch.tensor(normalize.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(normalize.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return images.sub_(mean).div_(std)


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
    def identity(batch: int) -> "AffineParams":
        zeros = torch.zeros(batch, dtype=torch.float64)
        return AffineParams(zeros, zeros, zeros, zeros, zeros + 1, zeros + 1, torch.zeros(batch, dtype=torch.bool))

    def to(self, device: torch.device | str) -> "AffineParams":
        return AffineParams(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def sample_affine(spec: KerasAffineAugment, batch: int, height: int, width: int,
                  generator: torch.Generator) -> AffineParams:
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


def keras_matrix(p: AffineParams) -> torch.Tensor:
    """(B, 3, 3) float64: output pixel -> input pixel in (row, col, 1) coordinates about the
    image centre; Keras's ``rotation @ shift @ shear @ zoom``, then the flip."""
    batch = p.theta.shape[0]

    def matrices(*rows: tuple) -> torch.Tensor:  # rows of (B,) tensors or numbers -> (B, 3, 3)
        return torch.stack(
            [torch.stack([torch.as_tensor(v, dtype=torch.float64, device=p.theta.device).expand(batch)
                          for v in row], dim=-1) for row in rows], dim=-2)

    theta, shear = torch.deg2rad(p.theta), torch.deg2rad(p.shear)
    rotation = matrices((theta.cos(), -theta.sin(), 0), (theta.sin(), theta.cos(), 0), (0, 0, 1))
    shift = matrices((1, 0, p.tx), (0, 1, p.ty), (0, 0, 1))
    shearing = matrices((1, -shear.sin(), 0), (0, shear.cos(), 0), (0, 0, 1))
    zoom = matrices((p.zx, 0, 0), (0, p.zy, 0), (0, 0, 1))
    flip = matrices((1, 0, 0), (0, 1 - 2 * p.flip.to(torch.float64), 0), (0, 0, 1))  # col -> -col
    return rotation @ shift @ shearing @ zoom @ flip


def affine_theta(matrix: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 3, 3) pixel (row, col) matrices -> (B, 2, 3) ``affine_grid`` matrices in normalised (x, y).

    With ``align_corners=False`` normalised ``x = col * 2 / W`` about the centre, so the
    matrix only needs its axes swapped and rescaled.
    """
    swapped = matrix[:, [1, 0]][:, :, [1, 0, 2]]  # (row, col) -> (x, y) = (col, row)
    scale = matrix.new_tensor([2.0 / width, 2.0 / height])  # pixels -> normalised, per axis
    linear = swapped[:, :2, :2] * scale[None, :, None] / scale[None, None, :]
    translation = swapped[:, :2, 2] * scale[None, :]
    return torch.cat([linear, translation[:, :, None]], dim=2)  # (B, 2, 3)


PADDING_MODE = {"reflect": "reflection", "zeros": "zeros", "border": "border"}


def apply_affine(images: torch.Tensor, params: AffineParams, fill: str = "reflect") -> torch.Tensor:
    """Transform float (B, C, H, W) ``images`` with Keras's parameters, one set per image."""
    b, c, h, w = images.shape
    theta = affine_theta(keras_matrix(params.to(images.device)), h, w).to(images.dtype)  # (B, 2, 3)
    grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=PADDING_MODE[fill], align_corners=False)


# --------------------------------------------------------------------------- flip + crop


def sample_crop(spec: FlipCropAugment, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Window offsets (B, 2) in [0, 2 * padding] (row, col) and flips (B,), on the generator's device."""
    offsets = torch.randint(0, 2 * spec.padding + 1, (batch, 2), generator=generator, device=generator.device)
    flips = torch.rand(batch, generator=generator, device=generator.device) < 0.5
    return offsets, flips & spec.flip


def apply_crop(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int,
               fill: str = "zeros") -> torch.Tensor:
    """Pad, then copy each image's HxW window at ``offsets`` (row, col), mirrored where ``flips``."""
    b, c, h, w = images.shape
    offsets, flips = offsets.to(images.device), flips.to(images.device)
    if padding:
        images = F.pad(images, (padding,) * 4, mode="reflect" if fill == "reflect" else "constant")
    rows = offsets[:, 0, None] + torch.arange(h, device=images.device)  # (B, H)
    steps = torch.arange(w, device=images.device)
    cols = offsets[:, 1, None] + torch.where(flips[:, None], w - 1 - steps, steps)  # (B, W)
    # One gather along the flattened padded plane (several times faster than 4-D fancy indexing).
    flat = (rows[:, :, None] * images.shape[3] + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
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

