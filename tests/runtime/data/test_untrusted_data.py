"""Data files are untrusted input: no code runs from them, nothing escapes the data folder,
and every way they can be wrong is a message (issue 9)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from graphc.cli import app
from graphc.errors import RunError
from graphc.lang.spec import DataSpec
from graphc.runtime.data import cifar100
from graphc.runtime.data.load import load_dataset
from tests.conftest import TINY_SPEC, clean_exit
from tests.data_fixtures import class_image, dump_python2, write_cifar100, write_image_folder

runner = CliRunner()

CIFAR_SPEC = (
    TINY_SPEC.replace("shape = [3, 8, 8]", "shape = [3, 32, 32]")
    .replace('dataset = "synthetic"', 'dataset = "cifar100"')
    .replace("synthetic = { classes = 4, coarse_classes = 2 }\n", "")
)


class Payload:
    """Unpickling this creates ``marker`` (by calling ``open(marker, "w")``)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


# --------------------------------------------------------------------------- CIFAR-100 pickles


@pytest.mark.parametrize("name", ["train", "test", "meta"])
def test_planted_cifar_pickle_runs_no_code(tmp_path, write_spec, name):
    written = write_cifar100(tmp_path / "data", train_per_class=1, test_per_class=1)
    marker = tmp_path / "marker"
    table = dict(written[name])
    table[b"fine_labels" if name != "meta" else b"fine_label_names"] = Payload(marker)
    dump_python2(table, tmp_path / "data" / "cifar-100-python" / name)
    result = runner.invoke(
        app,
        [
            "train",
            str(write_spec(CIFAR_SPEC)),
            "--data-dir",
            str(tmp_path / "data"),
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "runs"),
        ],
    )
    assert not marker.exists()
    assert result.exit_code == 1, result.output
    assert f"cifar-100-python/{name} is not a CIFAR-100 file: it holds a reference to io.open" in result.stderr
    assert "Traceback" not in result.output and clean_exit(result)


def test_cifar_arrays_other_than_uint8_are_refused(tmp_path):
    written = write_cifar100(tmp_path, train_per_class=1, test_per_class=1)
    folder = tmp_path / "cifar-100-python"
    # An object array would hold whatever the pickle builds: refused at its dtype.
    dump_python2({**written["test"], b"data": np.array([None, 1], dtype=object)}, folder / "test")
    with pytest.raises(RunError, match=r"test is not a CIFAR-100 file: it holds an array of dtype .*'O8'"):
        load_dataset(DataSpec(dataset="cifar100", root=str(tmp_path)), download=False)
    # Pixel bytes that do not fill the stated shape.
    dump_python2({**written["test"], b"data": ShortArray()}, folder / "test")
    with pytest.raises(RunError, match="test is not a CIFAR-100 file: it holds an array whose shape"):
        load_dataset(DataSpec(dataset="cifar100", root=str(tmp_path)), download=False)


class ShortArray:
    """Pickles as numpy does a (2, 3072) uint8 array, but with 10 bytes of pixels."""

    def __reduce__(self):
        return (
            np._core.multiarray._reconstruct,
            (np.ndarray, (0,), b"b"),
            (1, (2, 3072), np.dtype("u1"), False, b"\0" * 10),
        )


def test_cifar_unpickler_reads_the_real_format_of_numpy_1(tmp_path):
    """The official files were written by Python 2 and numpy 1: 'numpy.core.multiarray',
    str dtype names and int flags. Rewrite the fixture's pickle that way and read it."""
    written = write_cifar100(tmp_path, train_per_class=1, test_per_class=1)
    path = tmp_path / "cifar-100-python" / "test"
    raw = path.read_bytes()
    assert b"numpy._core.multiarray" in raw
    path.write_bytes(raw.replace(b"cnumpy._core.multiarray\n_reconstruct", b"cnumpy.core.multiarray\n_reconstruct"))
    ds = load_dataset(DataSpec(dataset="cifar100", root=str(tmp_path)), download=False)
    expected = written["test"][b"data"].reshape(-1, 3, 32, 32)
    assert (ds.test.images.numpy() == expected).all()


# --------------------------------------------------------------------------- the archive


def _archive(members: dict[str, bytes]) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), hashlib.md5(buffer.getvalue()).hexdigest()


def test_archive_member_outside_the_data_folder_is_refused(tmp_path, monkeypatch):
    write_cifar100(tmp_path / "source", train_per_class=1, test_per_class=1)
    folder = tmp_path / "source" / "cifar-100-python"
    members = {f"cifar-100-python/{n}": (folder / n).read_bytes() for n in ("train", "test", "meta")}
    archive, md5 = _archive({**members, "../escaped.txt": b"owned"})
    root = tmp_path / "data"
    root.mkdir()
    (root / cifar100.ARCHIVE).write_bytes(archive)
    monkeypatch.setattr(cifar100, "ARCHIVE_MD5", md5)  # the pin alone must not be the safety
    with pytest.raises(RunError, match=r"has an unsafe member .*escaped.txt.*unpacks nothing outside"):
        load_dataset(DataSpec(dataset="cifar100", root=str(root)), download=False)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (root / "cifar-100-python").exists()  # every member is checked before any is written


def test_archive_with_wrong_md5_says_checksum_mismatch(tmp_path):
    archive, md5 = _archive({"cifar-100-python/train": b"x"})
    (tmp_path / cifar100.ARCHIVE).write_bytes(archive)
    with pytest.raises(RunError) as info:
        load_dataset(DataSpec(dataset="cifar100", root=str(tmp_path)), download=False)
    message = str(info.value)
    assert message.startswith(f"checksum mismatch: {tmp_path / cifar100.ARCHIVE} has md5 {md5}")
    assert f"has md5 {cifar100.ARCHIVE_MD5} (expected)" in message
    assert "Delete it and run again" in message and "not found" not in message
    assert not (tmp_path / "cifar-100-python").exists()


# --------------------------------------------------------------------------- image folders

IMAGE_CLASSES = ["cat", "dog"]


@pytest.fixture
def pics(tmp_path, monkeypatch) -> Path:
    """A two-class image folder of 8x8 PNGs; decoded images are cached under tmp_path."""
    monkeypatch.setenv("GRAPHC_DATA", str(tmp_path / "graphc-data"))
    write_image_folder(tmp_path / "pics", IMAGE_CLASSES, per_class=2)
    return tmp_path / "pics"


def load_pics(root: Path):
    return load_dataset(DataSpec(dataset="imagefolder", root=str(root), val_fraction=0.0), image_shape=(3, 8, 8))


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height grey pixels, with one compressed row:
    a few dozen bytes that a decoder would expand into width x height x 3 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_png_is_refused_from_its_header(pics):
    bomb = pics / "train" / "dog" / "bomb.png"
    bomb.write_bytes(bomb_png(200_000, 200_000))  # 1.2e11 bytes once decoded as RGB
    with pytest.raises(RunError) as info:
        load_pics(pics)
    message = str(info.value)
    assert message.startswith(f"{bomb} claims 40000000000 pixels") and "decompression bomb" in message


def test_image_over_the_pixel_limit_is_refused(pics, monkeypatch):
    """Between PIL's limit and twice it PIL only warns; graphc refuses, naming the size."""
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50 * 50)
    big = pics / "test" / "cat" / "big.png"
    class_image(0, size=(60, 60)).save(big)
    with pytest.raises(RunError, match=rf"^{re.escape(str(big))} claims 60x60 = 3,600 pixels, more than the 2,500"):
        load_pics(pics)


def test_symlink_loops_are_messages(pics, write_spec, tmp_path):
    loop = pics / "train" / "cat" / "loop.png"
    os.symlink("loop.png", loop)
    with pytest.raises(RunError, match=rf"^{re.escape(str(loop))} is a symbolic link that loops"):
        load_pics(pics)
    loop.unlink()
    os.symlink("mouse", pics / "train" / "mouse")  # a class folder that leads back to itself
    spec = write_spec(
        TINY_SPEC.replace("shape = [3, 8, 8]", "shape = [3, 8, 8]").replace(
            'dataset = "synthetic"\nsynthetic = { classes = 4, coarse_classes = 2 }',
            'dataset = "imagefolder"\nhierarchy = { coarse = { pets = ["cat", "dog"], other = ["mouse"] } }',
        )
    )
    result = runner.invoke(
        app, ["train", str(spec), "--data-dir", str(pics), "--epochs", "1", "--out", str(tmp_path / "runs")]
    )
    assert result.exit_code == 1, result.output
    assert f"{pics / 'train' / 'mouse'} is a symbolic link that loops" in " ".join(result.stderr.split())
    assert "Traceback" not in result.output and clean_exit(result)


def test_symlinks_never_lead_out_of_the_data_folder(pics, tmp_path):
    outside = tmp_path / "elsewhere"
    write_image_folder(outside, ["bird"], per_class=1)
    link = pics / "train" / "bird"
    os.symlink(outside / "train" / "bird", link)
    with pytest.raises(
        RunError, match=rf"^{re.escape(str(link))} is a symbolic link to .*elsewhere/train/bird, outside"
    ):
        load_pics(pics)
    link.unlink()
    image_link = pics / "test" / "dog" / "stolen.png"
    os.symlink(outside / "train" / "bird" / "000.png", image_link)
    with pytest.raises(
        RunError, match=rf"^{re.escape(str(image_link))} is a symbolic link to .*, outside the image folder"
    ):
        load_pics(pics)
    image_link.unlink()
    os.symlink("nothing.png", pics / "test" / "dog" / "gone.png")
    with pytest.raises(RunError, match="gone.png is a broken symbolic link"):
        load_pics(pics)


def test_symlinks_within_the_data_folder_and_a_linked_root_are_followed(pics, tmp_path):
    os.symlink("../../train/cat/000.png", pics / "test" / "cat" / "again.png")
    os.symlink(pics, tmp_path / "linked")
    ds = load_pics(tmp_path / "linked")
    assert len(ds.test) == 3 and ds.class_names["fine"] == IMAGE_CLASSES
    assert (ds.test.images[0] == ds.train.images[0]).all() or (ds.test.images == ds.train.images[0]).all(
        dim=(1, 2, 3)
    ).any()


def test_unpacking_cifar100_replaces_links_planted_in_its_folder(tmp_path, monkeypatch):
    """An incomplete cifar-100-python/ whose file names are links to files elsewhere: unpacking the
    archive replaces the links with the real files and leaves the link targets untouched."""
    from tests.data_fixtures import cifar100_archive

    write_cifar100(tmp_path / "source", train_per_class=1, test_per_class=1)
    archive, md5 = cifar100_archive(tmp_path / "source")
    root = tmp_path / "data"
    (root / cifar100.FOLDER).mkdir(parents=True)
    (root / cifar100.ARCHIVE).write_bytes(archive)
    monkeypatch.setattr(cifar100, "ARCHIVE_MD5", md5)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    (root / cifar100.FOLDER / "train").symlink_to(victim)  # meta and test missing: the folder is incomplete
    ds = load_dataset(DataSpec(dataset="cifar100", root=str(root)), download=False)
    assert len(ds.test) == 100
    assert victim.read_text() == "keep me"
    assert not (root / cifar100.FOLDER / "train").is_symlink()
    assert not [p for p in root.iterdir() if p.name.startswith(".unpack-")]  # the unpacking folder is gone


def test_a_link_in_place_of_the_cifar100_folder_is_refused(tmp_path, monkeypatch):
    from tests.data_fixtures import cifar100_archive

    write_cifar100(tmp_path / "source", train_per_class=1, test_per_class=1)
    archive, md5 = cifar100_archive(tmp_path / "source")
    root, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / cifar100.ARCHIVE).write_bytes(archive)
    monkeypatch.setattr(cifar100, "ARCHIVE_MD5", md5)
    (root / cifar100.FOLDER).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(RunError, match="is a symbolic link; graphc unpacks CIFAR-100 only into a folder of its own"):
        load_dataset(DataSpec(dataset="cifar100", root=str(root)), download=False)
    assert not list(elsewhere.iterdir())
