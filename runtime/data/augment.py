"""Batched image augmentation on the batch's own device, fresh random parameters per image.

The training loop moves a uint8 batch to its device, scales it with
:func:`to_float` and calls the function :func:`make_augment` returns::

    augment = make_augment(spec.data.augment)
    x = to_float(batch_uint8.to(device), spec.data.normalize)   # (B, C, H, W) float32
    x = augment(x, generator)                                   # same shape, same device

One whole batch is transformed by a single ``grid_sample`` (or one gather for crops),
so on a GPU augmentation costs about as much as one convolution, where per-image PIL
transforms would starve it.

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

- ``keras_affine``: Keras's ``ImageDataGenerator`` affine transform, image for image equal to
  ``ImageDataGenerator.apply_transform`` of the spec's ``convention`` given the same parameters:
  ``keras2`` = keras-preprocessing 1.1.2 (TensorFlow <= 2.8, the study's era), ``keras3`` =
  Keras 3 (and tf.keras 2.9 - 2.15), which swaps the row and column axes before scipy
  (:func:`pixel_matrices` has both matrices and centres; docs/augmentation.md the measurements).
  Parameters as ``get_random_transform`` draws them: rotation ``theta ~ U(-rotation, rotation)``
  degrees; shifts ``tx ~ U(-shift, shift) * H`` and ``ty ~ U(-shift, shift) * W`` in pixels;
  shear ``~ U(-shear, shear)`` in *degrees* (Keras's ``shear_range`` is degrees, so the
  reference's 0.3 is tiny); zoom drawn independently per axis, ``zx, zy ~ U(low, high)`` (> 1
  shows a *smaller* picture); then an optional horizontal flip (Keras flips after the transform).
  Bilinear interpolation (Keras's ``interpolation_order=1``) in float64 (:func:`sampling_dtype`);
  fills as scipy.ndimage's: ``reflect`` (half-sample symmetric, ``dcba|abcd|dcba``), ``border`` =
  ``nearest`` (``aaaa|abcd|dddd``), ``zeros`` = ``constant`` 0. :func:`keras_affine_apply`
  applies given parameters in Keras's own dict form.
- ``flip_crop``: pad by ``padding`` pixels (zeros, or ``reflect`` = torch/torchvision
  ``reflect``, ``dcb|abcd|cba``), take a random HxW window, flip it horizontally with
  probability 1/2. Pixels are copied, never interpolated.
- ``none``: the batch unchanged.

Both presets compute each output pixel as a convex combination of input pixels (or
the zero fill), so a batch in [0, 1] stays in [0, 1]; they work on normalised batches too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
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

Convention = Literal["keras2", "keras3"]
CONVENTIONS: tuple[Convention, ...] = ("keras2", "keras3")

# graphc's fill names, and Keras's (fill_mode) names for the same scipy.ndimage modes.
FILLS = {"reflect": "reflect", "border": "border", "zeros": "zeros", "nearest": "border", "constant": "zeros"}

# Keras's per-image parameter names (ImageDataGenerator.get_random_transform / apply_transform)
# and their identity values; "flip" is graphc's own name for flip_horizontal.
KERAS_DEFAULTS = {"theta": 0.0, "tx": 0.0, "ty": 0.0, "shear": 0.0, "zx": 1.0, "zy": 1.0, "flip_horizontal": False}
# Keys get_random_transform also returns, for transforms graphc does not make: accepted only when off.
KERAS_UNSUPPORTED = ("flip_vertical", "channel_shift_intensity", "brightness")

# Keras's "constant" fill zeroes a pixel whose source point lies outside [0, n - 1] on an axis, a hard
# cut with no tolerance in scipy; graphc's coordinates differ from scipy's by ~1e-13 px (other
# rounding), so a point this close to the edge counts as inside (where scipy's own answer is rounding).
EDGE_TOLERANCE_PX = 1e-9


@dataclass(frozen=True)
class AffineParams:
    """Keras ``ImageDataGenerator`` transform parameters, one per image (float64 (B,), flip bool (B,)).

    The names are Keras's; what they do depends on the convention (:func:`pixel_matrices`): under
    ``keras2`` ``tx``/``zx`` act on the rows and ``ty``/``zy`` on the columns, under ``keras3`` the
    other way round."""

    theta: torch.Tensor  # rotation, degrees
    tx: torch.Tensor  # shift, pixels (keras2: along the rows; keras3: along the columns)
    ty: torch.Tensor  # shift, pixels (keras2: along the columns; keras3: along the rows)
    shear: torch.Tensor  # shear angle, degrees
    zx: torch.Tensor  # zoom (keras2: of the rows; keras3: of the columns)
    zy: torch.Tensor  # zoom (keras2: of the columns; keras3: of the rows)
    flip: torch.Tensor  # horizontal flip after the transform

    @staticmethod
    def identity(batch: int) -> AffineParams:
        zeros = torch.zeros(batch, dtype=torch.float64)
        return AffineParams(zeros, zeros, zeros, zeros, zeros + 1, zeros + 1, torch.zeros(batch, dtype=torch.bool))

    @staticmethod
    def of_keras(
        params: Mapping[str, object] | Sequence[Mapping[str, object]], batch: int | None = None
    ) -> AffineParams:
        """Parameters in Keras's dict form (``get_random_transform``'s result, the argument of
        ``apply_transform``): one mapping per image, or one mapping for all ``batch`` images.

        Keys: ``theta``, ``tx``, ``ty``, ``shear``, ``zx``, ``zy``, ``flip_horizontal`` (or ``flip``);
        a missing key is the identity, as in ``apply_transform``. ``flip_vertical``,
        ``channel_shift_intensity`` and ``brightness`` are accepted only when off (False / None),
        any other key is an error (Keras would ignore a misspelt one silently)."""
        rows = [params] * (batch or 1) if isinstance(params, Mapping) else list(params)
        if batch is not None and len(rows) != batch:
            raise ValueError(f"{len(rows)} parameter sets for {batch} images")
        values: dict[str, list[float]] = {name: [] for name in KERAS_DEFAULTS}
        for row in rows:
            row = dict(row)
            if "flip" in row:
                if "flip_horizontal" in row:
                    raise ValueError("give flip_horizontal or its alias flip, not both")
                row["flip_horizontal"] = row.pop("flip")
            # Off as Keras reads them: flip_vertical falsy, the other two None (Keras applies a 0.0).
            made = [
                key
                for key in KERAS_UNSUPPORTED
                if (row.pop(key, None) if key == "flip_vertical" else row.pop(key, None) is not None)
            ]
            if made:
                raise ValueError(f"keras_affine makes only the affine transform and the horizontal flip, not {made}")
            unknown = sorted(set(row) - set(KERAS_DEFAULTS))
            if unknown:
                raise ValueError(f"unknown transform parameters {unknown}; known: {sorted(KERAS_DEFAULTS)}")
            for name, default in KERAS_DEFAULTS.items():
                values[name].append(float(row.get(name, default)))
        f64 = functools.partial(torch.tensor, dtype=torch.float64)
        return AffineParams(
            theta=f64(values["theta"]),
            tx=f64(values["tx"]),
            ty=f64(values["ty"]),
            shear=f64(values["shear"]),
            zx=f64(values["zx"]),
            zy=f64(values["zy"]),
            flip=torch.tensor(values["flip_horizontal"]) != 0,
        )


def sample_affine(
    spec: KerasAffineAugment, batch: int, height: int, width: int, generator: torch.Generator
) -> AffineParams:
    """Draw Keras's random parameters for ``batch`` images, on the generator's device.

    The same draws as ``get_random_transform`` of both Keras versions (tx from the height, ty from
    the width); the convention only decides what they do (:func:`pixel_matrices`)."""
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


def pixel_matrices(p: AffineParams, height: int, width: int, convention: Convention = "keras2") -> torch.Tensor:
    """(B, 2, 3) float64 ``[A | b]``: the output pixel (row, col) reads the input at the point
    ``A @ (row, col) + b``, in array indices (scipy.ndimage.affine_transform's ``matrix, offset``),
    the horizontal flip included. Computed where the parameters are (the CPU).

    Both Keras versions build, in a 2-D frame of their own, ``M = rotation @ shift @ shear @ zoom``
    with ``rotation = [[c, -s], [s, c]]`` (``c, s = cos, sin(theta)``), ``shift = (tx, ty)``,
    ``shear = [[1, -sin(shear)], [0, cos(shear)]]``, ``zoom = diag(zx, zy)``, and move it to a
    centre ``o``: ``point = L @ (p - o) + rotation @ (tx, ty) + o``, ``L = rotation @ shear @ zoom``
    (multiplied out below: ``rotation @ shear = [[c, -sin(theta + shear)], [s, cos(theta + shear)]]``).
    They differ in the frame and the centre:

    - ``keras2`` (keras-preprocessing 1.1.2, Keras <= 2.8): the frame is (row, col) and
      ``o = (H/2 + 0.5, W/2 + 0.5)``, one pixel below and right of the true centre
      ``((H-1)/2, (W-1)/2)``.
    - ``keras3`` (Keras 3, and tf.keras 2.9 - 2.15): the frame is (col, row) - Keras swaps the axes
      before scipy (``M' = P M P``) - and ``o = (H/2 - 0.5, W/2 - 0.5)`` in that frame: the centre's
      column is ``H/2 - 0.5`` and its row ``W/2 - 0.5``, the true centre only for a square image.

    Then Keras flips the result horizontally where ``flip``: output column ``j`` is column
    ``W - 1 - j`` of the transformed image.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, not {convention!r}")
    theta, shear = torch.deg2rad(p.theta), torch.deg2rad(p.shear)
    c, s = theta.cos(), theta.sin()
    # L and the rotated shift t, in Keras's own frame (axes 0, 1).
    l00, l01 = c * p.zx, -(theta + shear).sin() * p.zy
    l10, l11 = s * p.zx, (theta + shear).cos() * p.zy
    t0, t1 = c * p.tx - s * p.ty, s * p.tx + c * p.ty
    o0, o1 = (height / 2 + 0.5, width / 2 + 0.5) if convention == "keras2" else (height / 2 - 0.5, width / 2 - 0.5)
    b0 = o0 + t0 - l00 * o0 - l01 * o1  # point = L p + (o + t - L o)
    b1 = o1 + t1 - l10 * o0 - l11 * o1
    if convention == "keras2":  # the frame is (row, col) already
        a00, a01, a10, a11 = l00, l01, l10, l11
    else:  # the frame is (col, row): P [L | b] P swaps both rows and columns
        a00, a01, a10, a11, b0, b1 = l11, l10, l01, l00, b1, b0
    # The flip reads output column j at W - 1 - j: column 1 of A changes sign, b moves by (W - 1) A[:, 1].
    f = p.flip.to(torch.float64)
    b0, b1 = b0 + f * (width - 1) * a01, b1 + f * (width - 1) * a11
    sign = 1 - 2 * f
    return torch.stack([a00, a01 * sign, b0, a10, a11 * sign, b1], dim=1).view(-1, 2, 3)


def sampling_matrices(p: AffineParams, height: int, width: int, convention: Convention = "keras2") -> torch.Tensor:
    """(B, 2, 3) float64 ``affine_grid`` matrices (normalised (x, y) = (col, row),
    ``align_corners=False``) of :func:`pixel_matrices`, on the parameters' device (the CPU).

    With ``align_corners=False`` the pixel index is ``i = n * S / 2 + (S - 1) / 2`` for a normalised
    coordinate ``n`` on an axis of ``S`` pixels, so ``[A | b]`` in indices becomes
    ``A_n[i, j] = A[i, j] * s_j / s_i`` and ``b_n[i] = (A @ k + b - k)[i] / s_i`` with
    ``s = (H/2, W/2)`` and ``k = ((H-1)/2, (W-1)/2)``, then (row, col) is reordered to (x, y).
    """
    m = pixel_matrices(p, height, width, convention)
    a00, a01, b0, a10, a11, b1 = m.view(-1, 6).unbind(1)
    s0, s1, k0, k1 = height / 2, width / 2, (height - 1) / 2, (width - 1) / 2
    n0 = (a00 * k0 + a01 * k1 + b0 - k0) / s0  # row
    n1 = (a10 * k0 + a11 * k1 + b1 - k1) / s1  # col
    return torch.stack([a11, a10 * (s0 / s1), n1, a01 * (s1 / s0), a00, n0], dim=1).view(-1, 2, 3)


PADDING_MODE = {"reflect": "reflection", "zeros": "zeros", "border": "border"}


def sampling_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, C, H, W), align_corners=False)`` on theta's device and dtype, from
    two broadcast sums: the grid is separable (x = t00 * u_j + (t01 * v_i + t02)), so this costs a few
    passes over (B, H, W), where affine_grid's float64 batched product of (B, H*W, 3) by (B, 3, 2)
    took a fifth of the whole float64 augmentation on a CPU (profiled, batch 256)."""
    u = (torch.arange(width, device=theta.device, dtype=theta.dtype) * 2 + 1) / width - 1  # (W,) x of each column
    v = (torch.arange(height, device=theta.device, dtype=theta.dtype) * 2 + 1) / height - 1  # (H,) y of each row
    rows = theta[:, :, 1:2] * v + theta[:, :, 2:3]  # (B, 2, H): the row's part of (x, y)
    cols = theta[:, :, 0:1] * u  # (B, 2, W): the column's part
    # Summed as (B, 2, H, W) (contiguous runs of W) and viewed as (B, H, W, 2): grid_sample reads
    # the grid through its strides, and this was measured faster than summing into (B, H, W, 2).
    return (rows.unsqueeze(-1) + cols.unsqueeze(-2)).permute(0, 2, 3, 1)


def sampling_dtype(device: torch.device) -> torch.dtype:
    """float64 wherever the device has it (not MPS). In float32 grid_sample finds the sampled point
    only to a few 1e-6 px (the grid is normalised to [-1, 1] and back): measured against scipy, up to
    4.9e-4 on the 0..255 scale on CIFAR-10 pictures and 1.3e-3 on a 24x40 checkerboard, beyond the
    1e-3 the Keras tests allow. In float64 graphc equals scipy to ~1e-12 and only the result is
    rounded to the images' dtype; on a CPU it costs ~2.6x the float32 time (docs/augmentation.md)."""
    return torch.float32 if device.type == "mps" else torch.float64


def apply_affine(
    images: torch.Tensor, params: AffineParams, fill: str = "reflect", convention: Convention = "keras2"
) -> torch.Tensor:
    """Transform float (B, C, H, W) ``images`` with Keras's parameters, one set per image, as
    ``ImageDataGenerator.apply_transform`` of the ``convention``'s Keras does (order-1 interpolation).

    Fills, as scipy.ndimage: ``reflect`` = ``reflect`` (half-sample symmetric, ``dcba|abcd|dcba``;
    ``grid_sample``'s ``reflection`` with ``align_corners=False`` is the same function of the point),
    ``border`` = ``nearest`` (``aaaa|abcd|dddd``), ``zeros`` = ``constant`` with ``cval=0`` (a point
    outside ``[0, H-1] x [0, W-1]`` reads 0; inside, the bilinear mix of the pixels around it).

    The matrices are computed where the parameters are (the CPU) and copied once; the resampling runs
    on the images' device in :func:`sampling_dtype` and the result comes back in the images' dtype."""
    b, c, h, w = images.shape
    dtype = sampling_dtype(images.device)
    theta = to_device(sampling_matrices(params, h, w, convention).to(dtype), images.device)  # (B, 2, 3)
    grid = sampling_grid(theta, h, w)  # (B, H, W, 2): (x, y)
    out = F.grid_sample(images.to(dtype), grid, mode="bilinear", padding_mode=PADDING_MODE[fill], align_corners=False)
    if fill == "zeros":
        # grid_sample's zeros mixes the border pixels with the 0 outside (scipy's "grid-constant");
        # Keras's "constant" reads 0 as soon as the point leaves [0, S - 1]: |n| <= (S - 1 + 2 tol) / S.
        x, y = grid.unbind(-1)
        inside = (x.abs() <= (w - 1 + 2 * EDGE_TOLERANCE_PX) / w) & (y.abs() <= (h - 1 + 2 * EDGE_TOLERANCE_PX) / h)
        out = out * inside.unsqueeze(1)
    return out.to(images.dtype)


def keras_affine_apply(
    images: torch.Tensor | np.ndarray,
    params: Mapping[str, object] | Sequence[Mapping[str, object]] | AffineParams,
    convention: Convention = "keras2",
    fill: str = "reflect",
    channels_last: bool = False,
) -> torch.Tensor | np.ndarray:
    """Keras's ``ImageDataGenerator.apply_transform(x, transform_parameters)`` for given parameters,
    batched: what the ``keras_affine`` preset does with the parameters it draws.

    Args:
        images: float images, (B, C, H, W) or one (C, H, W) - (B, H, W, C) / (H, W, C) with
            ``channels_last`` (Keras's layout) - as a torch tensor on any device or a numpy array;
            the result has the same type, layout, dtype and device. Any value range (0..1, 0..255).
        params: one dict per image, or one dict for all, with Keras's names (missing = identity):
            ``theta`` rotation in degrees; ``tx``, ``ty`` shifts in pixels; ``shear`` shear angle in
            degrees (not radians, and not a shear factor); ``zx``, ``zy`` zoom factors (> 1 shows a
            smaller picture); ``flip_horizontal`` (alias ``flip``) mirrors the columns after the
            transform. Or an :class:`AffineParams`.
        convention: whose Keras (:func:`pixel_matrices` has the matrices):

            - ``"keras2"``: keras-preprocessing 1.1.2's ``apply_transform`` / ``apply_affine_transform``
              (TensorFlow <= 2.8's ``ImageDataGenerator``): ``tx`` moves along the rows (tx > 0 reads
              row ``i + tx``: the picture moves up), ``ty`` along the columns (the picture moves
              left), ``zx`` scales the rows, ``zy`` the columns, theta > 0 turns the picture
              clockwise on screen about (H/2 + 0.5, W/2 + 0.5).
            - ``"keras3"``: Keras 3's ``ImageDataGenerator.apply_transform`` /
              ``keras.src.legacy.preprocessing.image.apply_affine_transform`` (also tf.keras 2.9 -
              2.15): ``tx`` moves along the columns, ``ty`` along the rows, ``zx`` scales the
              columns, ``zy`` the rows, theta > 0 turns counter-clockwise, about the point
              (row W/2 - 0.5, col H/2 - 0.5).

        fill: ``"reflect"`` (the study's), ``"border"`` or ``"zeros"``; Keras's names ``"nearest"``
            and ``"constant"`` (cval 0) are accepted for the last two.
        channels_last: the images are (..., H, W, C).

    Interpolation is bilinear (Keras's ``interpolation_order=1``, its default). Measured against the
    real packages on CIFAR-10 pictures with float32 images in [0, 1]: max |diff| 1.5e-5 on the 0..255
    scale (the float32 rounding of the result), see docs/augmentation.md.
    """
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {sorted(FILLS)}, not {fill!r}")
    as_numpy = isinstance(images, np.ndarray)
    x = torch.from_numpy(np.ascontiguousarray(images)) if as_numpy else images  # (Keras's flips are views)
    if not x.is_floating_point():
        raise TypeError(f"keras_affine_apply expects float images, got {x.dtype} (Keras works on float32)")
    if x.dim() not in (3, 4):
        raise ValueError(
            f"images must be (B, C, H, W) or (C, H, W) (channels last: (B, H, W, C)), got {tuple(x.shape)}"
        )
    single = x.dim() == 3
    batch = x.unsqueeze(0) if single else x
    if channels_last:
        batch = batch.permute(0, 3, 1, 2)
    p = params if isinstance(params, AffineParams) else AffineParams.of_keras(params, batch.shape[0])
    if p.theta.shape[0] != batch.shape[0]:
        raise ValueError(f"{p.theta.shape[0]} parameter sets for {batch.shape[0]} images")
    out = apply_affine(batch.contiguous(), p, FILLS[fill], convention)
    if channels_last:
        out = out.permute(0, 2, 3, 1).contiguous()
    if single:
        out = out[0]
    return out.numpy() if as_numpy else out


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
            return apply_affine(images, sample_affine(spec, b, h, w, generator), spec.fill, spec.convention)

        return keras_affine
    if isinstance(spec, FlipCropAugment):

        def flip_crop(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            offsets, flips = sample_crop(spec, images.shape[0], generator)
            return apply_crop(images, offsets, flips, spec.padding, spec.fill)

        return flip_crop

    def none(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return images

    return none
