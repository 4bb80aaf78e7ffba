"""CIFAR-100 from its official python release (``cifar-100-python/{train,test,meta}``).

The on-disk format (https://www.cs.toronto.edu/~kriz/cifar.html): each of
``train`` and ``test`` is a pickle of a dict with byte-string keys ``b'data'``
(uint8 (N, 3072): 1024 red, then 1024 green, then 1024 blue values, each plane
row-major, i.e. (N, 3, 32, 32) flattened), ``b'fine_labels'`` and
``b'coarse_labels'`` (lists of ints); ``meta`` holds ``b'fine_label_names'`` and
``b'coarse_label_names'``. The loader takes any number of images, so small
files written in this format load as well as the real 50,000 + 10,000.

The first time, the archive is downloaded into the data directory and its MD5
is verified (URL and checksum are those of ``torchvision.datasets.CIFAR100``).
With no network, a RunError says where to put the files; an archive whose MD5
differs is refused with both sums.

The files are untrusted input (``--data-dir``, ``[data] root`` and a run's
config.json choose them): they are read with :class:`_CifarUnpickler`, which
builds nothing but dicts, lists, bytes, str, ints and uint8 arrays, and the
archive is unpacked with tarfile's ``"data"`` filter, so no member lands outside
the data directory.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import tempfile
from math import prod
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch

from graphc.errors import RunError
from graphc.runtime.data.split import Split, default_data_dir

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
        f"directory that already holds {FOLDER}/. {TRY_NOW}"
    )


# Every missing-data message ends with it: the way to see graphc work before the data is there.
TRY_NOW = "To try graphc now, without CIFAR-100: add --dataset synthetic (generated images, no download)."


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_md5(archive: Path, what: str, todo: str) -> None:
    found = _md5(archive)
    if found != ARCHIVE_MD5:
        raise RunError(
            f"checksum mismatch: {what} has md5 {found}, but the official CIFAR-100 archive has md5 "
            f"{ARCHIVE_MD5} (expected); the file is damaged, incomplete or not the python release of "
            f"CIFAR-100. {todo}"
        )


def _extract(archive: Path, root: Path) -> None:
    """Unpack the archive into ``root``. tarfile's "data" filter refuses members that would
    land outside ``root`` (absolute paths, ``..``, links out of it) and special files; every
    member is checked before the first one is written.

    The members are unpacked into a fresh folder inside ``root`` and then renamed into
    ``root/cifar-100-python/``: a rename replaces a link planted at a file's name instead of
    writing through it (tarfile itself would open the link and overwrite its target), and a
    planted link in place of the folder is refused."""
    target = root / FOLDER
    if target.is_symlink():
        raise RunError(
            f"{target} is a symbolic link; graphc unpacks CIFAR-100 only into a folder of its own. "
            f"Remove the link (or point --data-dir elsewhere) and run again."
        )
    try:
        with tarfile.open(archive, "r:gz") as tar, tempfile.TemporaryDirectory(dir=root, prefix=".unpack-") as fresh:
            members = tar.getmembers()
            for member in members:
                tarfile.data_filter(member, fresh)
            tar.extractall(fresh, members=members, filter="data")
            target.mkdir(exist_ok=True)
            for unpacked in sorted((Path(fresh) / FOLDER).iterdir()):
                os.replace(unpacked, target / unpacked.name)
    except tarfile.FilterError as exc:
        raise RunError(
            f"the archive {archive} has an unsafe member ({exc}); graphc unpacks nothing outside {root}. "
            f"It is not the official release: delete it. {_how_to_get_it(root)}"
        ) from None


def fetch_cifar100(root: Path, download: bool = True) -> Path:
    """Find CIFAR-100 under ``root``, unpacking or downloading the official archive if needed."""
    found = find_cifar100(root)
    if found is not None:
        return found
    archive = root / ARCHIVE
    try:
        if not archive.is_file():
            if not download:
                raise RunError(
                    f"CIFAR-100 was not found in {root} and downloading is turned off. {_how_to_get_it(root)}"
                )
            from torchvision.datasets.utils import download_url

            # Download under another name and rename once the checksum matches, so an interrupted
            # or corrupted download never sits where a finished archive is expected.
            partial = root / (ARCHIVE + ".part")
            partial.unlink(missing_ok=True)  # download_url would reuse a stale one
            download_url(URL, str(root), filename=partial.name)
            try:
                _check_md5(partial, f"the download from {URL}", "Try again later. " + _how_to_get_it(root))
            except RunError:
                partial.unlink()
                raise
            partial.replace(archive)
        else:
            _check_md5(
                archive, str(archive), "Delete it and run again to download a fresh copy. " + _how_to_get_it(root)
            )
        _extract(archive, root)
    except (URLError, OSError, tarfile.TarError, EOFError, RuntimeError) as exc:
        # URLError / OSError: no network, DNS failure, unwritable directory, disk full;
        # TarError / EOFError: a damaged archive; RuntimeError: torchvision's download errors.
        reason = getattr(exc, "reason", None) or exc
        raise RunError(
            f"CIFAR-100 was not found in {root} and could not be downloaded from {URL} or unpacked ({reason}). "
            f"{_how_to_get_it(root)}"
        ) from None
    found = find_cifar100(root)
    if found is None:
        raise RunError(f"the archive {archive} did not contain {FOLDER}/{{{','.join(FILES)}}}. {_how_to_get_it(root)}")
    return found


class _NotCifar(Exception):
    """Raised by :class:`_CifarUnpickler` for anything the real files do not contain."""


class _DType:
    """Stands in for ``numpy.dtype(name, align, copy)`` while unpickling: uint8 only."""

    def __init__(self, name, align=False, copy=True):
        if name not in ("u1", b"u1"):
            raise _NotCifar(f"an array of dtype {name!r} (the real files hold uint8 only)")

    def __setstate__(self, state) -> None:
        pass  # byte order and flags: meaningless for single bytes


class _Array:
    """Stands in for ``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')`` while
    unpickling; its ``__setstate__`` receives ndarray's pickled state and keeps the
    bytes as a uint8 array after checking that they fit the shape, so numpy's own
    ``__setstate__`` never sees untrusted state."""

    def __init__(self, cls, shape, typecode):
        if cls is not _NDARRAY:
            raise _NotCifar("an array of an unknown class")
        self.array = None

    def __setstate__(self, state) -> None:
        ok = isinstance(state, tuple) and len(state) == 5
        if ok:
            _version, shape, dtype, fortran, raw = state
            ok = (
                isinstance(shape, tuple)
                and 1 <= len(shape) <= 2
                and all(isinstance(n, int) and n >= 0 for n in shape)
                and isinstance(dtype, _DType)
                and fortran in (False, 0)
            )
        if not ok or not isinstance(raw, bytes) or len(raw) != prod(shape):
            raise _NotCifar("an array whose shape, type or bytes are not those of a uint8 matrix")
        self.array = np.frombuffer(raw, dtype=np.uint8).reshape(shape)


_NDARRAY = object()  # what the unpickler gives for numpy.ndarray: only _Array accepts it


class _CifarUnpickler(pickle.Unpickler):
    """Builds only what the official files hold: dicts, lists, tuples, bytes, str, ints and
    uint8 arrays (pickled by numpy 1 or 2). Any other global is refused before it is looked up."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _Array,
        ("numpy._core.multiarray", "_reconstruct"): _Array,
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _DType,
    }

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise _NotCifar(f"a reference to {module}.{name}") from None


def _arrays(value):
    """Replace the :class:`_Array` stand-ins by their numpy arrays, in dicts and lists."""
    if isinstance(value, _Array):
        return value.array
    if isinstance(value, dict):
        return {k: _arrays(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_arrays(v) for v in value]
    if isinstance(value, (_DType, tuple)):
        raise _NotCifar(f"a {type(value).__name__} outside an array")
    return value


def _unpickle(path: Path, keys: tuple[str, ...]) -> dict:
    """Read one CIFAR pickle; keys come back as str whether the file has bytes or str keys."""
    try:
        with open(path, "rb") as f:
            raw = _arrays(_CifarUnpickler(f, encoding="bytes").load())
    except _NotCifar as exc:
        raise RunError(
            f"{path} is not a CIFAR-100 file: it holds {exc}, which the python release of CIFAR-100 never "
            f"contains, so graphc did not load it (a pickle can run code). Delete the {path.parent.name}/ folder "
            f"and let graphc download it again, or unpack a fresh copy of {ARCHIVE} ({URL}, md5 {ARCHIVE_MD5})."
        ) from None
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
    """Return ``(train_pool, test, class_names, hierarchy)`` of CIFAR-100.

    ``root`` holds (or receives) ``cifar-100-python/``; default :func:`default_data_dir`.
    """
    root = Path(root).expanduser() if root is not None else default_data_dir()
    folder = fetch_cifar100(root, download=download)
    class_names = _class_names(folder)
    n_fine, n_coarse = len(class_names["fine"]), len(class_names["coarse"])
    train = _read_split(folder / "train", n_fine, n_coarse)
    test = _read_split(folder / "test", n_fine, n_coarse)
    hierarchy = {("fine", "coarse"): fine_to_coarse(train, n_fine, folder / "train")}
    return train, test, class_names, hierarchy


def _class_names(folder: Path) -> dict[str, list[str]]:
    meta = _unpickle(folder / "meta", ("fine_label_names", "coarse_label_names"))
    return {
        field: [n.decode() if isinstance(n, bytes) else str(n) for n in meta[f"{field}_label_names"]]
        for field in ("fine", "coarse")
    }


def probe_cifar100(root: str | Path | None) -> tuple[dict[str, list[str]], tuple[int, ...], int]:
    """``(class_names, image shape, test images)`` from the meta file and the test file (a fifth of the
    training file), for ``graphc check --data``: the checks of :func:`load_cifar100` but the training
    set's. Never downloads: a missing copy is a RunError saying where to put it."""
    root = Path(root).expanduser() if root is not None else default_data_dir()
    if find_cifar100(root) is None and not (root / ARCHIVE).is_file():
        raise RunError(
            f"CIFAR-100 was not found in {root}: `graphc train` would download it ({URL}) on first use, "
            f"`graphc check --data` does not. {_how_to_get_it(root)}"
        )
    folder = fetch_cifar100(root, download=False)  # unpacks the archive if it is there, as train would
    class_names = _class_names(folder)
    test = _read_split(folder / "test", len(class_names["fine"]), len(class_names["coarse"]))
    return class_names, tuple(test.images.shape[1:]), len(test)
