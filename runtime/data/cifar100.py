"""CIFAR-100 from its official python release (``cifar-100-python/{train,test,meta}``).

The on-disk format (https://www.cs.toronto.edu/~kriz/cifar.html): each of
``train`` and ``test`` is a pickle of a dict with byte-string keys ``b'data'``
(uint8 (N, 3072): 1024 red, then 1024 green, then 1024 blue values, each plane
row-major, i.e. (N, 3, 32, 32) flattened), ``b'fine_labels'`` and
``b'coarse_labels'`` (lists of ints); ``meta`` holds ``b'fine_label_names'`` and
``b'coarse_label_names'``. The loader takes any number of images, so small
files written in this format load as well as the real 50,000 + 10,000.

The first time, the archive is downloaded into the data directory and its MD5
is verified (torchvision's download utilities; URL and checksum are those of
``torchvision.datasets.CIFAR100``). With no network, a RunError says where to
put the files.
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch

from graphc.errors import RunError
from runtime.data.split import Split, default_data_dir

URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
ARCHIVE = "cifar-100-python.tar.gz"
ARCHIVE_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
FOLDER = "cifar-100-python"
FILES = ("train", "test", "meta")


def find_cifar100(root: Path) -> Path | None:
    """The folder holding train/test/meta: ROOT/cifar-100-python, or ROOT itself."""
    for folder in (root / FOLDER, root):
        if all((folder / name).is_file() for name in FILES):
            return folder
    return None


def _how_to_get_it(root: Path) -> str:
    return (
        f"Put the CIFAR-100 python release at {root / FOLDER}/ (files {', '.join(FILES)}): on a machine with "
        f"internet, download {URL} (md5 {ARCHIVE_MD5}) and run `tar -xzf {ARCHIVE} -C {root}`, or place "
        f"{ARCHIVE} itself in {root}/ and graphc unpacks it; or point --data-dir (or [data] root) at a "
        f"directory that already holds {FOLDER}/."
    )


def fetch_cifar100(root: Path, download: bool = True) -> Path:
    """Find CIFAR-100 under ``root``, unpacking or downloading the official archive if needed."""
    found = find_cifar100(root)
    if found is not None:
        return found
    from torchvision.datasets.utils import check_integrity, download_and_extract_archive, extract_archive

    archive = root / ARCHIVE
    try:
        if archive.is_file() and check_integrity(str(archive), ARCHIVE_MD5):
            extract_archive(str(archive), str(root))
        elif download:
            # Downloads to ROOT/cifar-100-python.tar.gz, checks the MD5 and unpacks next to it.
            download_and_extract_archive(URL, download_root=str(root), filename=ARCHIVE, md5=ARCHIVE_MD5)
        else:
            raise RunError(f"CIFAR-100 was not found in {root} and downloading is turned off. {_how_to_get_it(root)}")
    except (URLError, OSError, tarfile.TarError, RuntimeError) as exc:
        # URLError / OSError: no network, DNS failure, unwritable directory, disk full;
        # RuntimeError: torchvision's "File not found or corrupted." after an MD5 mismatch.
        reason = getattr(exc, "reason", None) or exc
        raise RunError(
            f"CIFAR-100 was not found in {root} and could not be downloaded from {URL} ({reason}). "
            f"{_how_to_get_it(root)}"
        ) from None
    found = find_cifar100(root)
    if found is None:
        raise RunError(f"the archive {archive} did not contain {FOLDER}/{{{','.join(FILES)}}}. {_how_to_get_it(root)}")
    return found


def _unpickle(path: Path, keys: tuple[str, ...]) -> dict:
    """Read one CIFAR pickle; keys come back as str whether the file has bytes or str keys."""
    try:
        with open(path, "rb") as f:
            raw = pickle.load(f, encoding="bytes")
    except Exception as exc:  # a truncated or foreign file can raise almost anything from pickle
        raise RunError(
            f"{path} is not a readable CIFAR-100 pickle ({type(exc).__name__}: {exc}). Delete the "
            f"{path.parent.name}/ folder and let graphc download it again, or unpack a fresh copy of {ARCHIVE}."
        ) from None
    if not isinstance(raw, dict):
        raise RunError(f"{path} holds a {type(raw).__name__}, not the dict of a CIFAR-100 pickle.")
    table = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
    missing = [k for k in keys if k not in table]
    if missing:
        raise RunError(
            f"{path} is not a CIFAR-100 file: it lacks {', '.join(repr(k) for k in missing)} "
            f"(it has {', '.join(repr(k) for k in table)}). Is this CIFAR-10? graphc's cifar100 data set needs "
            f"the python release of CIFAR-100 ({URL})."
        )
    return table


def _read_split(path: Path, n_fine: int, n_coarse: int) -> Split:
    table = _unpickle(path, ("data", "fine_labels", "coarse_labels"))
    data = np.asarray(table["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise RunError(f"{path}: 'data' should be uint8 (N, 3072), found {data.dtype} {data.shape}.")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())  # planes are already channel-first
    labels = {}
    for field, count in (("fine", n_fine), ("coarse", n_coarse)):
        values = torch.as_tensor(np.asarray(table[f"{field}_labels"], dtype=np.int64))
        if values.shape != (len(images),) or (len(values) and (values.min() < 0 or values.max() >= count)):
            raise RunError(
                f"{path}: '{field}_labels' should hold {len(images)} ints in [0, {count}), found shape "
                f"{tuple(values.shape)}" + (f", range [{values.min()}, {values.max()}]." if len(values) else ".")
            )
        labels[field] = values
    return Split(images=images, labels=labels)


def fine_to_coarse(train: Split, n_fine: int, path: Path) -> torch.Tensor:
    """The coarse class of every fine class, read off the training labels (each fine class
    must occur, always with the same coarse class)."""
    fine, coarse = train.labels["fine"], train.labels["coarse"]
    mapping = torch.full((n_fine,), -1, dtype=torch.int64)
    mapping[fine] = coarse  # any one of each fine class's coarse labels
    if (mapping[fine] != coarse).any():
        bad = int(fine[mapping[fine] != coarse][0])
        raise RunError(f"{path}: fine class {bad} appears with more than one coarse label; the file is corrupt.")
    if (mapping < 0).any():
        absent = (mapping < 0).nonzero().flatten().tolist()
        raise RunError(
            f"{path}: fine classes {absent[:10]}{' ...' if len(absent) > 10 else ''} have no training image, so "
            "their coarse class cannot be derived; the file is incomplete."
        )
    return mapping


def load_cifar100(root: str | Path | None, download: bool = True):
    """Return ``(train_pool, test, class_names, parents)`` of CIFAR-100.

    ``root`` holds (or receives) ``cifar-100-python/``; default :func:`default_data_dir`.
    """
    root = Path(root).expanduser() if root is not None else default_data_dir()
    folder = fetch_cifar100(root, download=download)
    meta = _unpickle(folder / "meta", ("fine_label_names", "coarse_label_names"))
    class_names = {
        field: [n.decode() if isinstance(n, bytes) else str(n) for n in meta[f"{field}_label_names"]]
        for field in ("fine", "coarse")
    }
    n_fine, n_coarse = len(class_names["fine"]), len(class_names["coarse"])
    train = _read_split(folder / "train", n_fine, n_coarse)
    test = _read_split(folder / "test", n_fine, n_coarse)
    parents = {"fine": ("coarse", fine_to_coarse(train, n_fine, folder / "train"))}
    return train, test, class_names, parents
