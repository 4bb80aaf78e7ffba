"""graphc predict reads image files as image folders are read (runtime/data/image_files.py): a FIFO,
socket or device named x.png is refused without blocking, a decompression bomb is refused from its
header, a directory is a message; each is exit 1 with the file named, never a hang or a traceback."""

from __future__ import annotations

import os
import signal
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from graphc.errors import RunError
from graphc.runtime.data.image_files import read_image_file
from tests.conftest import TINY_SPEC, invoke


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """The tiny spec exported to ONNX (8x8 RGB input), randomly initialised."""
    root = tmp_path_factory.mktemp("predict_files")
    spec = root / "tiny.toml"
    spec.write_text(TINY_SPEC)
    invoke("export", spec, "--onnx", root / "tiny.onnx", "--no-verify")
    return root / "tiny.onnx"


@pytest.fixture
def no_hang():
    """Turn a blocked read into a failure after 20 s instead of hanging the suite."""

    def alarm(*_):
        raise TimeoutError("blocked reading the file")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height grey pixels, with one compressed row."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
        + chunk(b"IEND", b"")
    )


def test_a_fifo_named_png_is_refused_without_blocking(tmp_path, model, no_hang):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)  # no writer: a plain open() would wait for one forever
    result = invoke("predict", model, fifo, code=1)
    assert f"{fifo} is a FIFO (named pipe), not an image file" in " ".join(result.stderr.split())
    with pytest.raises(RunError, match="FIFO"):
        read_image_file(fifo)


def test_a_device_named_png_is_refused(tmp_path, model, no_hang):
    device = tmp_path / "zero.png"
    device.symlink_to("/dev/zero")  # endless: reading it all would never end
    result = invoke("predict", model, device, code=1)
    assert "is a character device, not an image file" in result.stderr


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, model):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png(200_000, 200_000))  # 1.2e11 bytes once decoded
    result = invoke("predict", model, bomb, code=1)
    message = " ".join(result.stderr.split())
    assert f"{bomb} claims 40000000000 pixels" in message and "decompression bomb" in message


def test_an_image_over_the_pixel_limit_is_refused(tmp_path, model, monkeypatch):
    """Between PIL's limit and twice it PIL only warns (and decodes): graphc refuses, as for image folders."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50 * 50)
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((60, 60, 3), dtype=np.uint8)).save(big)
    result = invoke("predict", model, big, code=1)
    assert f"{big} claims 60x60 = 3,600 pixels, more than the 2,500" in " ".join(result.stderr.split())


def test_a_directory_and_a_missing_file_are_messages(tmp_path, model):
    (tmp_path / "dir.png").mkdir()  # a folder is searched for images: this one holds none (exit 2)
    assert "no images found in the folder" in invoke("predict", model, tmp_path / "dir.png", code=2).stderr
    assert "no such image file" in invoke("predict", model, tmp_path / "absent.png", code=1).stderr


def test_a_regular_image_still_predicts(tmp_path, model):
    image = tmp_path / "ok.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    assert read_image_file(image) == image.read_bytes()
    assert "ok.png" in invoke("predict", model, image).stdout
