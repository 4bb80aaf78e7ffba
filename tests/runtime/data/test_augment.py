"""Batched augmentation: Keras-affine semantics against a per-pixel re-implementation of
Keras's apply_affine_transform, flip + crop against numpy padding, scaling and randomness."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from graphc.errors import SpecError
from graphc.lang.spec import FlipCropAugment, KerasAffineAugment, NoAugment, Normalize
from graphc.runtime.data.augment import (
    AffineParams,
    apply_affine,
    apply_crop,
    make_augment,
    sample_affine,
    sample_crop,
    to_float,
)

KERAS = KerasAffineAugment(
    preset="keras_affine", rotation=60, shift=0.3, zoom=(0.7, 1.3), shear=20, fill="reflect", flip=True
)


# --------------------------------------------------------------------------- the independent reference


def keras_transform_matrix(theta, tx, ty, shear, zx, zy, h, w) -> np.ndarray:
    """keras-preprocessing's apply_affine_transform matrix (rotation @ shift @ shear @ zoom),
    moved to the image centre by transform_matrix_offset_center: output (row, col) -> input."""
    t, s = np.deg2rad(theta), np.deg2rad(shear)
    rotation = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    shearing = np.array([[1, -np.sin(s), 0], [0, np.cos(s), 0], [0, 0, 1]])
    zoom = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
    matrix = rotation @ shift @ shearing @ zoom
    o_r, o_c = h / 2 - 0.5, w / 2 - 0.5
    offset = np.array([[1, 0, o_r], [0, 1, o_c], [0, 0, 1]])
    reset = np.array([[1, 0, -o_r], [0, 1, -o_c], [0, 0, 1]])
    return offset @ matrix @ reset


def extend(index: int, n: int, fill: str) -> int | None:
    """scipy.ndimage boundary modes: reflect (dcba|abcd|dcba), nearest, grid-constant (None = 0)."""
    if fill == "reflect":
        index %= 2 * n
        return 2 * n - 1 - index if index >= n else index
    if fill == "border":
        return min(max(index, 0), n - 1)
    return index if 0 <= index < n else None


def keras_reference(image: np.ndarray, p: dict, fill: str) -> np.ndarray:
    """Per-pixel bilinear resampling as scipy.ndimage.affine_transform(order=1) does it, then
    Keras's flip_axis for a horizontal flip. image: (C, H, W) float64."""
    c, h, w = image.shape
    matrix = keras_transform_matrix(p["theta"], p["tx"], p["ty"], p["shear"], p["zx"], p["zy"], h, w)
    out = np.zeros_like(image)
    for r in range(h):
        for col in range(w):
            y, x, _ = matrix @ np.array([r, col, 1.0])
            y0, x0 = math.floor(y), math.floor(x)
            for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                    ey, ex = extend(yy, h, fill), extend(xx, w, fill)
                    if ey is not None and ex is not None:
                        out[:, r, col] += wy * wx * image[:, ey, ex]
    return out[:, :, ::-1] if p["flip"] else out


def params_of(batch: AffineParams, i: int) -> dict:
    return {f: getattr(batch, f)[i].item() for f in ("theta", "tx", "ty", "shear", "zx", "zy", "flip")}


# --------------------------------------------------------------------------- Keras affine


@pytest.mark.parametrize("fill", ["reflect", "zeros", "border"])
def test_keras_affine_matches_keras_reference(fill):
    """Random rotation, shift, shear, per-axis zoom and flip on a non-square image."""
    images = torch.rand(6, 2, 7, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    params = sample_affine(KERAS, 6, 7, 10, torch.Generator().manual_seed(1))
    assert params.flip.any() and not params.flip.all()
    out = apply_affine(images, params, fill)
    for i in range(6):
        expected = keras_reference(images[i].numpy(), params_of(params, i), fill)
        np.testing.assert_allclose(out[i].numpy(), expected, atol=1e-9, err_msg=str(params_of(params, i)))


def test_identity_parameters_give_the_identity():
    images = torch.rand(3, 3, 9, 12)
    for fill in ("reflect", "zeros", "border"):
        torch.testing.assert_close(apply_affine(images, AffineParams.identity(3), fill), images, atol=1e-5, rtol=0)
    identity = KerasAffineAugment(preset="keras_affine", rotation=0, shift=0, zoom=(1, 1), shear=0)
    torch.testing.assert_close(make_augment(identity)(images, torch.Generator()), images, atol=1e-5, rtol=0)
    offsets = torch.full((3, 2), 4)
    assert torch.equal(apply_crop(images, offsets, torch.zeros(3, dtype=torch.bool), padding=4), images)


def _dot(h: int, w: int, r: int, c: int) -> torch.Tensor:
    image = torch.zeros(1, 1, h, w)
    image[0, 0, r, c] = 1.0
    return image


def _params(**values) -> AffineParams:
    p = AffineParams.identity(1)
    return AffineParams(
        **{
            f: torch.tensor([values.get(f, getattr(p, f)[0].item())], dtype=getattr(p, f).dtype)
            for f in p.__dataclass_fields__
        }
    )


def test_known_rotation_shift_zoom_and_flip_move_a_dot_where_keras_would():
    # Positive theta turns the picture clockwise on screen: a dot above the centre goes right of it.
    out = apply_affine(_dot(9, 9, 1, 4), _params(theta=90.0), "zeros")
    assert out[0, 0].argmax().item() == 4 * 9 + 7 and out.max() > 0.999
    # tx = +3 rows: the output row r reads input row r + 3, so the picture moves up by 3.
    out = apply_affine(_dot(12, 10, 8, 5), _params(tx=3.0), "zeros")
    assert out[0, 0].argmax().item() == 5 * 10 + 5 and out.max() > 0.999
    out = apply_affine(_dot(12, 10, 8, 5), _params(ty=-2.0), "zeros")  # columns: moves right by 2
    assert out[0, 0].argmax().item() == 8 * 10 + 7
    # Zoom 2 shows a smaller picture: a centred 4x4 square becomes 2x2.
    square = torch.zeros(1, 1, 16, 16)
    square[..., 6:10, 6:10] = 1.0
    out = apply_affine(square, _params(zx=2.0, zy=2.0), "zeros")[0, 0]
    assert (out > 0.5).nonzero().tolist() == [[7, 7], [7, 8], [8, 7], [8, 8]]
    # The flip mirrors columns after the transform.
    out = apply_affine(_dot(5, 8, 2, 1), _params(flip=True), "zeros")
    assert out[0, 0].argmax().item() == 2 * 8 + 6


def test_reflect_fill_mirrors_at_the_edge():
    """Shifting a ramp by half its width with reflect fill gives Keras's dcba|abcd mirror."""
    ramp = torch.arange(8, dtype=torch.float64).view(1, 1, 1, 8).expand(1, 1, 3, 8).contiguous()
    out = apply_affine(ramp, _params(ty=-4.0), "reflect")[0, 0, 0]  # reads columns -4 .. 3
    assert out.tolist() == pytest.approx([3, 2, 1, 0, 0, 1, 2, 3])
    out = apply_affine(ramp, _params(ty=-4.0), "border")[0, 0, 0]
    assert out.tolist() == pytest.approx([0, 0, 0, 0, 0, 1, 2, 3])


def test_sampled_parameters_follow_the_keras_ranges():
    p = sample_affine(KERAS, 4000, 32, 20, torch.Generator().manual_seed(0))
    for field, bound in (("theta", 60), ("tx", 0.3 * 32), ("ty", 0.3 * 20), ("shear", 20)):
        values = getattr(p, field)
        assert values.abs().max() <= bound and values.min() < -0.9 * bound and values.max() > 0.9 * bound
    assert 0.7 <= p.zx.min() and p.zx.max() <= 1.3 and 0.7 <= p.zy.min() and p.zy.max() <= 1.3
    assert abs(torch.corrcoef(torch.stack([p.zx, p.zy]))[0, 1]) < 0.1  # independent per axis
    assert 0.45 < p.flip.double().mean() < 0.55
    no_flip = sample_affine(KERAS.model_copy(update={"flip": False}), 100, 8, 8, torch.Generator())
    assert not no_flip.flip.any()


# --------------------------------------------------------------------------- flip + crop


@pytest.mark.parametrize("fill, numpy_mode", [("zeros", "constant"), ("reflect", "reflect")])
def test_flip_crop_copies_the_padded_window(fill, numpy_mode):
    images = torch.rand(16, 3, 6, 7)
    spec = FlipCropAugment(preset="flip_crop", padding=3, fill=fill)
    offsets, flips = sample_crop(spec, 16, torch.Generator().manual_seed(0))
    assert flips.any() and not flips.all() and offsets.min() >= 0 and offsets.max() <= 6
    out = apply_crop(images, offsets, flips, 3, fill)
    padded = np.pad(images.numpy(), ((0, 0), (0, 0), (3, 3), (3, 3)), mode=numpy_mode)
    for i in range(16):
        r, c = offsets[i].tolist()
        window = padded[i, :, r : r + 6, c : c + 7]
        np.testing.assert_array_equal(out[i].numpy(), window[:, :, ::-1] if flips[i] else window)


def test_flip_crop_offsets_cover_the_range():
    offsets, flips = sample_crop(
        FlipCropAugment(preset="flip_crop", padding=2, flip=False), 2000, torch.Generator().manual_seed(0)
    )
    assert sorted(offsets.unique().tolist()) == [0, 1, 2, 3, 4] and not flips.any()


# --------------------------------------------------------------------------- presets, randomness, devices


@pytest.mark.parametrize("spec", [KERAS, FlipCropAugment(preset="flip_crop")], ids=["keras_affine", "flip_crop"])
def test_presets_are_random_per_image_seeded_and_bounded(spec):
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    batch = image.expand(8, -1, -1, -1).contiguous()
    augment = make_augment(spec)
    out = augment(batch, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and out.device == batch.device and out.dtype == batch.dtype
    distinct = {tuple(o.flatten()[:64].tolist()) for o in out}
    assert len(distinct) >= 6  # fresh parameters per image (flip_crop: 81 x 2 choices)
    assert torch.equal(out, augment(batch, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, augment(batch, torch.Generator().manual_seed(1)))
    assert out.min() >= 0 and out.max() <= 1 + 1e-6
    ones = augment(torch.ones(8, 3, 16, 16), torch.Generator().manual_seed(0))
    assert ones.max() <= 1 + 1e-6


def test_none_returns_the_batch():
    batch = torch.rand(2, 3, 4, 4)
    assert make_augment(NoAugment(preset="none"))(batch, torch.Generator()) is batch


def test_to_float_scales_and_normalises():
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2).contiguous()
    x = to_float(images, None)
    assert x.dtype == torch.float32 and x[0, :, 0, 0].tolist() == pytest.approx([0.0, 0.2, 1.0])
    z = to_float(images, Normalize(mean=[0.0, 0.2, 0.5], std=[1.0, 0.5, 0.25]))
    assert z[1, :, 1, 1].tolist() == pytest.approx([0.0, 0.0, 2.0])
    one = to_float(images, Normalize(mean=[0.5], std=[0.5]))
    assert one[0, :, 0, 0].tolist() == pytest.approx([-1.0, -0.6, 1.0])
    with pytest.raises(SpecError, match="normalize.mean has 2 values but the images have 3 channels"):
        to_float(images, Normalize(mean=[0.5, 0.5], std=[1.0]))
    with pytest.raises(TypeError):
        to_float(images.float(), None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_batch_device_with_a_cpu_generator():
    batch = torch.rand(4, 3, 8, 8)
    for spec in (KERAS, FlipCropAugment(preset="flip_crop")):
        augment = make_augment(spec)
        on_gpu = augment(batch.cuda(), torch.Generator().manual_seed(0))
        assert on_gpu.is_cuda
        torch.testing.assert_close(on_gpu.cpu(), augment(batch, torch.Generator().manual_seed(0)), atol=1e-4, rtol=0)
