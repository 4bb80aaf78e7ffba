"""Batched augmentation: Keras-affine directions, centres and fills on hand-made images (the
comparisons with the real Keras packages are in test_augment_keras.py), flip + crop against numpy
padding, scaling and randomness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphc.errors import SpecError
from graphc.lang.spec import FlipCropAugment, KerasAffineAugment, NoAugment, Normalize
from graphc.runtime.data.augment import (
    AffineParams,
    apply_affine,
    apply_crop,
    keras_affine_apply,
    make_augment,
    pixel_matrices,
    sample_affine,
    sample_crop,
    to_float,
)

KERAS = KerasAffineAugment(
    preset="keras_affine", rotation=60, shift=0.3, zoom=(0.7, 1.3), shear=20, fill="reflect", flip=True
)


# --------------------------------------------------------------------------- Keras affine


@pytest.mark.parametrize("convention", ["keras2", "keras3"])
def test_identity_parameters_give_the_identity(convention):
    images = torch.rand(3, 3, 9, 12)
    for fill in ("reflect", "zeros", "border"):
        out = apply_affine(images, AffineParams.identity(3), fill, convention)
        torch.testing.assert_close(out, images, atol=1e-6, rtol=0)
    identity = KerasAffineAugment(
        preset="keras_affine", rotation=0, shift=0, zoom=(1, 1), shear=0, convention=convention
    )
    torch.testing.assert_close(make_augment(identity)(images, torch.Generator()), images, atol=1e-6, rtol=0)
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


def _moved(image: torch.Tensor, convention: str, **params) -> tuple[int, int]:
    """Where the one lit pixel of ``image`` lands (row, col)."""
    out = apply_affine(image, _params(**params), "zeros", convention)[0, 0]
    assert out.max() > 0.999
    return divmod(out.argmax().item(), out.shape[1])


def test_keras2_turns_shifts_and_zooms_rows_first_about_a_point_off_centre():
    """keras-preprocessing 1.1.2: (row, col) frame, centre (H/2 + 0.5, W/2 + 0.5) = (5, 5) on 9x9."""
    # theta > 0 turns clockwise on screen about (5, 5): a dot 2 above it goes 2 right of it.
    assert _moved(_dot(9, 9, 3, 5), "keras2", theta=90.0) == (5, 7)
    # tx = +3: output row r reads row r + 3, the picture moves up; ty = -2 moves it right.
    assert _moved(_dot(12, 10, 8, 5), "keras2", tx=3.0) == (5, 5)
    assert _moved(_dot(12, 10, 8, 5), "keras2", ty=-2.0) == (8, 7)
    # zx = 2 halves the picture's height about row 8.5 (row r reads 2 r - 8.5), not its width.
    square = torch.zeros(1, 1, 16, 16)
    square[..., 6:10, 6:10] = 1.0
    out = apply_affine(square, _params(zx=2.0), "zeros", "keras2")[0, 0]
    rows, cols = (out > 0.75).nonzero().unbind(1)
    assert sorted(set(rows.tolist())) == [8] and sorted(set(cols.tolist())) == [6, 7, 8, 9]


def test_keras3_swaps_the_axes():
    """Keras 3: (col, row) frame, so theta turns the other way, tx moves columns, zx scales columns;
    centre (W/2 - 0.5, H/2 - 0.5) = (4, 4) on 9x9."""
    assert _moved(_dot(9, 9, 2, 4), "keras3", theta=90.0) == (4, 2)  # counter-clockwise
    assert _moved(_dot(12, 10, 8, 5), "keras3", tx=3.0) == (8, 2)  # column c reads c + 3: moves left
    assert _moved(_dot(12, 10, 8, 5), "keras3", ty=-2.0) == (10, 5)  # row r reads r - 2: moves down
    square = torch.zeros(1, 1, 16, 16)
    square[..., 6:10, 6:10] = 1.0
    out = apply_affine(square, _params(zx=2.0), "zeros", "keras3")[0, 0]  # column c reads 2 c - 7.5
    rows, cols = (out > 0.75).nonzero().unbind(1)
    assert sorted(set(rows.tolist())) == [6, 7, 8, 9] and sorted(set(cols.tolist())) == [7, 8]


@pytest.mark.parametrize("convention", ["keras2", "keras3"])
def test_the_flip_mirrors_columns_after_the_transform(convention):
    assert _moved(_dot(5, 8, 2, 1), convention, flip=True) == (2, 6)
    # After: a shift that moves the dot left by 1 (keras2 ty = +1, keras3 tx = +1) then the flip.
    shift = {"ty": 1.0} if convention == "keras2" else {"tx": 1.0}
    assert _moved(_dot(5, 8, 2, 3), convention, flip=True, **shift) == (2, 5)


def test_centres_of_a_non_square_image():
    """A pure rotation or zoom keeps one point: keras2's (H/2 + 0.5, W/2 + 0.5); Keras 3's is the
    transposed (W/2 - 0.5, H/2 - 0.5) - it offsets before swapping the axes - so on a 24x40 image
    it is (19.5, 11.5), not the true centre (11.5, 19.5)."""
    expected = {"keras2": [12.5, 20.5], "keras3": [19.5, 11.5]}
    for params in (_params(theta=37.0), _params(zx=1.3, zy=0.8), _params(theta=-20.0, shear=10.0, zx=0.9)):
        for convention, centre in expected.items():
            m = pixel_matrices(params, 24, 40, convention)[0]
            fixed = torch.linalg.solve(torch.eye(2, dtype=torch.float64) - m[:, :2], m[:, 2])
            assert fixed.tolist() == pytest.approx(centre, abs=1e-9), (convention, params)


@pytest.mark.parametrize("convention", ["keras2", "keras3"])
def test_fills_are_scipys_modes(convention):
    """Shifting a ramp by half its width: reflect = dcba|abcd, border (nearest) = aaaa|abcd, zeros
    (constant) = 0 outside; and constant reads 0 as soon as the point leaves [0, W - 1] (at -0.5
    scipy's "grid-constant", grid_sample's zeros, would give half the edge pixel)."""
    ramp = torch.arange(1, 9, dtype=torch.float64).view(1, 1, 1, 8).expand(1, 1, 3, 8).contiguous()
    name = "ty" if convention == "keras2" else "tx"  # the column shift
    expected = {
        "reflect": [4, 3, 2, 1, 1, 2, 3, 4],
        "border": [1, 1, 1, 1, 1, 2, 3, 4],
        "zeros": [0, 0, 0, 0, 1, 2, 3, 4],
    }
    for fill, values in expected.items():
        out = apply_affine(ramp, _params(**{name: -4.0}), fill, convention)[0, 0, 0]  # reads columns -4 .. 3
        assert out.tolist() == pytest.approx(values), fill
    out = apply_affine(ramp, _params(**{name: -0.5}), "zeros", convention)[0, 0, 0]
    assert out.tolist() == pytest.approx([0, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5])


def test_keras_affine_apply_takes_keras_dicts_in_either_layout():
    images = torch.rand(3, 2, 6, 7, dtype=torch.float64)
    dicts = [{"theta": 10.0, "tx": 1.5}, {"zx": 1.2, "zy": 0.9, "flip_horizontal": True}, {}]
    params = AffineParams(
        theta=torch.tensor([10.0, 0, 0], dtype=torch.float64),
        tx=torch.tensor([1.5, 0, 0], dtype=torch.float64),
        ty=torch.zeros(3, dtype=torch.float64),
        shear=torch.zeros(3, dtype=torch.float64),
        zx=torch.tensor([1, 1.2, 1], dtype=torch.float64),
        zy=torch.tensor([1, 0.9, 1], dtype=torch.float64),
        flip=torch.tensor([False, True, False]),
    )
    for convention in ("keras2", "keras3"):
        expected = apply_affine(images, params, "reflect", convention)
        assert torch.equal(keras_affine_apply(images, dicts, convention), expected)
        # numpy, channels last (Keras's layout), one image at a time, graphc's alias "flip"
        channels_last = images.permute(0, 2, 3, 1).numpy()
        out = keras_affine_apply(channels_last, dicts, convention, channels_last=True)
        assert isinstance(out, np.ndarray) and out.shape == channels_last.shape
        np.testing.assert_array_equal(out, expected.permute(0, 2, 3, 1).numpy())
        one = keras_affine_apply(channels_last[1], {"zx": 1.2, "zy": 0.9, "flip": True}, convention, channels_last=True)
        np.testing.assert_array_equal(one, out[1])
    # one dict for the whole batch; Keras's fill names
    same = keras_affine_apply(images, {"theta": 5.0}, fill="nearest")
    assert torch.equal(same, apply_affine(images, AffineParams.of_keras({"theta": 5.0}, 3), "border"))
    # get_random_transform's other keys are fine while off
    off = {"theta": 5.0, "flip_vertical": 0, "channel_shift_intensity": None, "brightness": None}
    assert torch.equal(keras_affine_apply(images, off, fill="nearest"), same)


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda x: keras_affine_apply(x, {"rotation": 5.0}), "unknown transform parameters"),
        (lambda x: keras_affine_apply(x, {"flip_vertical": True}), "not \\['flip_vertical'\\]"),
        (lambda x: keras_affine_apply(x, {"brightness": 0.0}), "not \\['brightness'\\]"),
        (lambda x: keras_affine_apply(x, [{}, {}]), "2 parameter sets for 3 images"),
        (lambda x: keras_affine_apply(x, {}, convention="keras"), "convention must be one of"),
        (lambda x: keras_affine_apply(x, {}, fill="wrap"), "fill must be one of"),
        (lambda x: keras_affine_apply(x[0, 0], {}), "must be \\(B, C, H, W\\)"),
        (lambda x: keras_affine_apply(x, {"flip": True, "flip_horizontal": True}), "not both"),
    ],
)
def test_keras_affine_apply_refuses_what_it_cannot_do(call, error):
    with pytest.raises(ValueError, match=error):
        call(torch.rand(3, 2, 5, 5))


def test_keras_affine_apply_wants_float_images():
    with pytest.raises(TypeError, match="float images"):
        keras_affine_apply(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), {})


def test_the_preset_applies_its_specs_convention():
    assert KERAS.convention == "keras2"  # the default: keras-preprocessing, the study's
    with pytest.raises(ValueError, match="convention"):
        KerasAffineAugment(preset="keras_affine", convention="keras1")
    images = torch.rand(4, 3, 12, 20, generator=torch.Generator().manual_seed(2))
    outs = {}
    for convention in ("keras2", "keras3"):
        spec = KERAS.model_copy(update={"convention": convention})
        params = sample_affine(spec, 4, 12, 20, torch.Generator().manual_seed(5))
        outs[convention] = make_augment(spec)(images, torch.Generator().manual_seed(5))
        assert torch.equal(outs[convention], apply_affine(images, params, spec.fill, convention))
    assert (outs["keras2"] - outs["keras3"]).abs().max() > 0.3


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
