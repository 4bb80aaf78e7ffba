"""Helpers that write small data sets in real on-disk formats (shared by the runtime tests).

Import as ``from data_fixtures import ...`` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_HIERARCHY = {
    "vehicle": ["airplane", "automobile", "ship", "truck"],
    "animal": ["bird", "cat", "deer", "dog", "frog", "horse"],
}


def cifar100_coarse_of(fine: int) -> int:
    """A fine -> coarse map that is *not* fine // 5 (five fine classes per coarse class, shuffled),
    so a loader that assumes the layout instead of reading the labels fails."""
    return (fine * 7) % 20


class _Python2Pickler(pickle._Pickler):
    """Pickles ``bytes`` as Python 2 ``str`` (the BINSTRING opcodes), as the real CIFAR files,
    written by Python 2, store their keys, names and pixel buffers. Python 3 reads those back
    as bytes with ``encoding="bytes"`` and as str with ``encoding="latin1"`` (torchvision's choice)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + len(obj).to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str


def dump_python2(obj, path: Path) -> None:
    with open(path, "wb") as f:
        _Python2Pickler(f, protocol=2).dump(obj)


def write_cifar100(root: Path, train_per_class: int = 2, test_per_class: int = 1, seed: int = 0) -> dict:
    """Write ``root/cifar-100-python/{train,test,meta}`` in the real format (Python 2 pickles,
    protocol 2, str keys; 'data' uint8 (N, 3072) channel-planar). Returns what was written."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, per_class in (("train", train_per_class), ("test", test_per_class)):
        fine = np.repeat(np.arange(100), per_class)
        rng.shuffle(fine)
        data = rng.integers(0, 256, size=(len(fine), 3072), dtype=np.uint8)
        table = {
            b"batch_label": f"{name} batch 1 of 1".encode(),
            b"filenames": [f"img_{i}.png".encode() for i in range(len(fine))],
            b"fine_labels": [int(f) for f in fine],
            b"coarse_labels": [cifar100_coarse_of(int(f)) for f in fine],
            b"data": data,
        }
        dump_python2(table, folder / name)
        written[name] = table
    meta = {
        b"fine_label_names": [f"fine_name_{i:02d}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse_name_{i:02d}".encode() for i in range(20)],
    }
    dump_python2(meta, folder / "meta")
    written["meta"] = meta
    return written


def cifar100_archive(source_root: Path) -> tuple[bytes, str]:
    """The bytes and MD5 of a ``cifar-100-python.tar.gz`` holding ``source_root/cifar-100-python``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(Path(source_root) / "cifar-100-python", arcname="cifar-100-python")
    data = buffer.getvalue()
    return data, hashlib.md5(data).hexdigest()


def class_image(index: int, size: tuple[int, int] = (8, 8), mode: str = "RGB", variant: int = 0) -> Image.Image:
    """A small picture whose colour encodes its class (and ``variant``), in any PIL mode."""
    h, w = size
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    rgb[..., 0] = (index * 40 + 20) % 256
    rgb[..., 1] = (variant * 50 + 10) % 256
    rgb[..., 2] = np.arange(w, dtype=np.uint8)[None, :] * (255 // max(w - 1, 1))
    image = Image.fromarray(rgb, "RGB")
    if mode == "RGBA":
        image = image.convert("RGBA")
    elif mode == "L":
        image = image.convert("L")
    elif mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return image


def write_image_folder(
    root: Path,
    classes: list[str],
    per_class: dict[str, int] | int = 2,
    test_per_class: int = 1,
    size: tuple[int, int] = (8, 8),
    suffix: str = ".png",
) -> dict[str, list[Path]]:
    """Write ``root/{train,test}/<class>/NNN<suffix>`` pictures made by :func:`class_image`."""
    files: dict[str, list[Path]] = {"train": [], "test": []}
    for split in ("train", "test"):
        for index, name in enumerate(classes):
            count = (
                test_per_class if split == "test" else (per_class[name] if isinstance(per_class, dict) else per_class)
            )
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                path = folder / f"{k:03d}{suffix}"
                image = class_image(index, size, variant=k)
                if suffix in (".jpg", ".jpeg"):
                    image.save(path, quality=95)
                else:
                    image.save(path)
                files[split].append(path)
    return files
