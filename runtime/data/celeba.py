"""CelebA (Liu et al. 2015, https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html) from the files and layout
``torchvision.datasets.CelebA`` uses, read by graphc itself::

    ROOT/celeba/img_align_celeba/000001.jpg ... 202599.jpg   aligned and cropped faces, 178 x 218 (W x H)
    ROOT/celeba/list_attr_celeba.txt                          40 binary attributes per image
    ROOT/celeba/list_eval_partition.txt                       the official partition: 0 train, 1 valid, 2 test

(``ROOT`` itself may hold the three instead of ``celeba/``.) The text files are parsed by torchvision's
rules: ``list_attr_celeba.txt`` is the image count, a line of the 40 attribute names, then one line per
image, ``NAME v1 ... v40`` with each value -1 (no) or 1 (yes), separated by runs of spaces;
``list_eval_partition.txt`` is ``NAME PARTITION`` per line. graphc maps -1/1 to 0/1, as torchvision does.

Why not ``torchvision.datasets.CelebA`` itself: it needs three more text files that graphc does not use
(identities, boxes, landmarks), opens every image with PIL one at a time, and downloads from Google Drive
only through the ``gdown`` package (not a graphc dependency), whose downloads Drive's quota often refuses.
So graphc never downloads CelebA: a missing copy is a RunError that says which files go where and where
to get them (including torchvision's own downloader, for those who install gdown).

Checked: both text files' MD5s against torchvision's (``CelebA.file_list``), so a damaged, truncated or
edited copy is refused with both sums; every image the partition names is present (and a regular file
inside the folder: links out of it are refused, as in an image folder). Not checked: the images' bytes.
Hashing 202,599 JPEGs (1.4 GB) on every run would cost more than decoding them; the decode cache is keyed
by each file's size, times and inode instead, as an image folder's is.

Splits: the official ones. graphc's validation split is the ``valid`` partition (19,867 images), not
``val_fraction`` of the training images (a value other than the default is refused, as it would be
silently ignored); ``split_seed`` shuffles the train and valid partitions' order, so ``--limit-train N``
and ``--limit-val M`` take random subsets (and decode only those, and the test partition).

Label fields: each attribute (binary, int64 0/1; class names ``["no", "yes"]``) under its file name, with
a leading ``_`` where the name begins with a digit (``5_o_Clock_Shadow`` -> ``_5_o_Clock_Shadow``: a task
name must be an identifier), and ``attributes``: int64 (N, 40) 0/1, multilabel, its label names the 40
attribute names in the file's order (or a multilabel head's ``labels``, in its order: ``load_celeba(labels=)``).
Images are decoded by the image folder's decoder (torchvision.io,
size and decompression-bomb checks) into its cache.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from graphc.errors import Problem, RunError, SpecError, did_you_mean
from graphc.lang.spec import DataSpec
from graphc.runtime.data.imagefolder import Folder, _follow, _options, decode_all, first_size, read_imagefolder
from graphc.runtime.data.split import BINARY_CLASS_NAMES, Dataset, Split, default_data_dir

FOLDER = "celeba"
IMAGES = "img_align_celeba"
ATTRIBUTES = "list_attr_celeba.txt"
PARTITION = "list_eval_partition.txt"
# torchvision.datasets.CelebA.file_list: the official files' MD5s (the zip's for the user to check, in the message).
MD5 = {ATTRIBUTES: "75e246fa4810816ffd6ee81facbd244c", PARTITION: "d32c9cbf5e040fd4025c592c306e6668"}
ARCHIVE = "img_align_celeba.zip"
ARCHIVE_MD5 = "00d2c5bc6d35e252742224ab0c1e8fcb"
# The Google Drive ids of torchvision's file_list, as links a browser opens.
DRIVE = {
    ARCHIVE: "https://drive.google.com/file/d/0B7EVK8r0v71pZjFTYXZWM3FlRnM",
    ATTRIBUTES: "https://drive.google.com/file/d/0B7EVK8r0v71pblRyaVFSWGxPY0U",
    PARTITION: "https://drive.google.com/file/d/0B7EVK8r0v71pY0NSMzRuSXJEVkk",
}
HOME = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
PARTITIONS = ("train", "valid", "test")  # 0, 1, 2 in list_eval_partition.txt
MULTILABEL = "attributes"  # the label field of all attributes at once
# An image's name in the text files: a plain file name (no folder, no leading dot), so it stays in IMAGES/.
IMAGE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*\.(?:jpe?g|png)$", re.IGNORECASE)
ATTRIBUTE_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def field_name(attribute: str) -> str:
    """The label field of an attribute: its name, with ``_`` in front where it begins with a digit
    (a head's task must be an identifier: ``5_o_Clock_Shadow`` -> ``_5_o_Clock_Shadow``)."""
    return f"_{attribute}" if attribute[:1].isdigit() else attribute


# --------------------------------------------------------------------------- finding the files


def find_celeba(root: Path) -> Path | None:
    """The folder holding the images and both text files: ROOT/celeba (torchvision's), or ROOT itself."""
    for folder in (root / FOLDER, root):
        if (folder / IMAGES).is_dir() and all((folder / name).is_file() for name in MD5):
            return folder
    return None


def how_to_get_it(root: Path) -> str:
    """Where the files go and where to get them: graphc does not download CelebA (see the module)."""
    folder = root / FOLDER
    return (
        f"graphc reads torchvision's layout: {folder / IMAGES}/*.jpg (the aligned and cropped images), "
        f"{folder / ATTRIBUTES} and {folder / PARTITION}. It does not download CelebA (Google Drive serves it only "
        f"through the gdown package, and its quota often refuses scripts). Get the files by hand from {HOME} "
        f"(Google Drive or Baidu: Img/{ARCHIVE}, Anno/{ATTRIBUTES}, Eval/{PARTITION}; or {DRIVE[ARCHIVE]}, "
        f"{DRIVE[ATTRIBUTES]}, {DRIVE[PARTITION]}), check {ARCHIVE}'s md5 is {ARCHIVE_MD5} and run "
        f"`unzip {ARCHIVE} -d {folder}`; or, after "
        f"`pip install gdown`, run `python -c \"from torchvision.datasets import CelebA; CelebA('{root}', "
        f'download=True)"`, which fetches the same files into that layout.'
    )


def locate_celeba(root: Path, where: str) -> Path:
    """The CelebA folder under ``root``, or a RunError saying what is missing and what to do."""
    found = find_celeba(root)
    if found is not None:
        return found
    folder = root / FOLDER if (root / FOLDER).is_dir() or not (root / IMAGES).exists() else root
    missing = [str(folder / name) for name in (IMAGES, *MD5) if not (folder / name).exists()]
    unzip = ""
    if (folder / ARCHIVE).is_file() and not (folder / IMAGES).exists():
        unzip = f" {folder / ARCHIVE} is there but not unpacked: run `unzip {folder / ARCHIVE} -d {folder}`."
    raise RunError(
        f"CelebA was not found in {root}: {', '.join(missing) or 'its files'} "
        f"{'is' if len(missing) == 1 else 'are'} missing.{unzip} {how_to_get_it(root)} "
        f"(The data set's folder is set by {where}.)"
    )


def _read_checked(path: Path, root: Path) -> str:
    """The text of one of the official text files, after its MD5 is checked against torchvision's."""
    if path.is_symlink():
        _follow(path, root)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RunError(f"{path} cannot be read ({exc.strerror or exc}); make it readable.") from None
    found = hashlib.md5(data).hexdigest()
    expected = MD5[path.name]
    if found != expected:
        raise RunError(
            f"checksum mismatch: {path} has md5 {found}, but the official CelebA {path.name} has md5 {expected} "
            f"(torchvision's); the file is damaged, incomplete or edited, and graphc reads the official release "
            f'only (for labels of your own, use [data] dataset = "table"). Get it again: {DRIVE[path.name]} '
            f"(or {HOME})."
        )
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:  # only when MD5 is patched (tests): the real files are ASCII
        raise RunError(f"{path} is not an ASCII text file, as the official CelebA file is.") from None


# --------------------------------------------------------------------------- the text files


@dataclass(frozen=True)
class Tables:
    """What the two text files say: the attribute names (file order), every image's name, its
    attribute bits (uint8 (N, A), 0/1) and its partition (int64 (N,), 0 train, 1 valid, 2 test)."""

    attributes: list[str]
    names: list[str]
    bits: torch.Tensor
    partition: torch.Tensor

    def count(self, part: int) -> int:
        return int((self.partition == part).sum())


def _bad(path: Path, line: int, what: str) -> RunError:
    return RunError(f"{path}, line {line}: {what}; the official CelebA file has no such line. Get it again ({HOME}).")


def parse_attributes(text: str, path: Path) -> tuple[list[str], list[str], torch.Tensor]:
    """``(attribute names, image names, uint8 (N, A) bits)`` of list_attr_celeba.txt, by torchvision's
    rules (count line, name line, ``NAME`` and A values of -1/1 per line; -1 -> 0, 1 -> 1)."""
    lines = text.splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise _bad(path, 1, "the first line should be the number of images")
    count = int(lines[0])
    attributes = lines[1].split()
    if not attributes:
        raise _bad(path, 2, "the second line should list the attribute names")
    if len(set(attributes)) != len(attributes) or MULTILABEL in attributes:
        raise _bad(path, 2, f"an attribute name is listed twice, or is '{MULTILABEL}'")
    for name in attributes:
        if not ATTRIBUTE_NAME.match(name):
            raise _bad(path, 2, f"the attribute name {name!r} has characters other than letters, digits and _")
    width = len(attributes)
    names: list[str] = []
    rows: list[str] = []  # each image's bits as a string of '0' and '1': one buffer for numpy at the end
    allowed = {"1", "-1"}
    for number, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        values = parts[1:]
        if len(values) != width or not allowed.issuperset(values):
            raise _bad(path, number, f"expected an image name and {width} values of -1 or 1, found {line.strip()!r}")
        names.append(parts[0])
        rows.append("".join(values).replace("-1", "0"))
    if len(names) != count:
        raise _bad(path, 1, f"the file says {count} images but lists {len(names)}")
    bits = np.frombuffer("".join(rows).encode("ascii"), dtype=np.uint8).reshape(len(names), width) - ord("0")
    return attributes, names, torch.from_numpy(bits.copy())


def parse_partition(text: str, path: Path) -> dict[str, int]:
    """Image name -> partition (0 train, 1 valid, 2 test) of list_eval_partition.txt."""
    partition: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise _bad(path, number, f"expected an image name and its partition 0, 1 or 2, found {line.strip()!r}")
        if parts[0] in partition:
            raise _bad(path, number, f"{parts[0]} is listed twice")
        partition[parts[0]] = int(parts[1])
    return partition


def read_tables(folder: Path) -> Tables:
    """Both text files, checked (MD5, form) and joined by image name."""
    root = folder.resolve()
    attr_path, part_path = folder / ATTRIBUTES, folder / PARTITION
    attributes, names, bits = parse_attributes(_read_checked(attr_path, root), attr_path)
    partition = parse_partition(_read_checked(part_path, root), part_path)
    listed = set(names)
    if len(listed) != len(names):
        seen: set[str] = set()
        twice = next(name for name in names if name in seen or seen.add(name))
        raise RunError(f"{attr_path} lists {twice} twice; the official file lists every image once ({HOME}).")
    unlisted = [name for name in names if name not in partition]
    extra = [name for name in partition if name not in listed]
    if unlisted or extra:
        raise RunError(
            f"{attr_path} and {part_path} do not list the same images ({len(unlisted)} only in the first, "
            f"{len(extra)} only in the second, e.g. {(unlisted or extra)[0]}); the official files list the same "
            f"{len(names):,}."
        )
    for name in names:
        if not IMAGE_NAME.match(name):
            raise RunError(
                f"{attr_path} names the image {name!r}, which is not a plain .jpg/.png file name; graphc reads "
                f"only files inside {folder / IMAGES}/."
            )
    order = torch.tensor([partition[name] for name in names], dtype=torch.int64)
    return Tables(attributes=attributes, names=names, bits=bits, partition=order)


# --------------------------------------------------------------------------- the images


def _image_entries(folder: Path, names: list[str]) -> tuple[list[str], str]:
    """The path of every named image (in the order of ``names``) and a fingerprint of all of them
    (name, size, mtime, inode, ctime: what keys the decode cache, as an image folder's listing is)."""
    images = folder / IMAGES
    root = folder.resolve()
    if images.is_symlink():  # as an image folder's split folders: no link out of the data folder
        _follow(images, root)
    try:
        entries = {entry.name: entry for entry in os.scandir(images)}
    except OSError as exc:
        raise RunError(f"{images} cannot be read ({exc.strerror or exc}); make it readable.") from None
    absent = [name for name in names if name not in entries]
    if absent:
        raise RunError(
            f"{len(absent):,} of the {len(names):,} images that {folder / PARTITION} names are missing from {images}/ "
            f"(e.g. {', '.join(absent[:3])}): {ARCHIVE} was not fully unpacked, or the folder is another one. "
            f"Unpack it again (`unzip {ARCHIVE} -d {folder}`)."
        )
    fingerprint = hashlib.sha256()
    paths = []
    for name in names:
        entry = entries[name]
        if entry.is_symlink():
            _follow(entry.path, root)
        try:
            stat = entry.stat()
        except OSError as exc:
            raise RunError(f"{entry.path} cannot be read ({exc.strerror or exc}); make it readable.") from None
        fingerprint.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}\0{stat.st_ctime_ns}\n".encode())
        paths.append(entry.path)
    return paths, fingerprint.hexdigest()


def check_input_shape(found: tuple[int, ...], expected: tuple[int, int, int] | None) -> None:
    """The input node must take CelebA's images: as ``split.check_image_shape``, with the resize hint
    (the aligned images are 218 x 178; most models want them smaller)."""
    if expected is not None and tuple(expected) != tuple(found):
        raise SpecError(
            Problem(
                f"the input node's shape is {list(expected)} but the celeba images are "
                f"{'x'.join(map(str, found))} (channels x height x width).",
                field="shape",
                hint=f"set [data] resize = {list(expected[1:])} to resize the images to the input node's shape "
                f"(64 x 64 is common for CelebA), or set the input node's shape = {list(found)}.",
            )
        )


def _no_val_fraction(data: DataSpec) -> None:
    """Refuse a val_fraction that would be ignored: CelebA's validation split is its official one."""
    default = DataSpec.model_fields["val_fraction"].default
    if data.val_fraction != default:
        raise SpecError(
            Problem(
                f"val_fraction = {data.val_fraction}, but CelebA's validation split is its official 'valid' "
                f"partition ({PARTITION}), not a fraction of the training images.",
                field="val_fraction",
                hint="remove val_fraction (--limit-val M validates on M of the valid partition's images).",
            )
        )


def _prepare(data: DataSpec, root: str | Path | None, image_shape: tuple[int, int, int] | None, where: str):
    """``(folder, tables, channels, size)``: the located, checked files and the decoding options,
    after the checks that need no image (val_fraction, resize against the input node)."""
    _no_val_fraction(data)
    root = Path(root).expanduser() if root is not None else default_data_dir()
    folder = locate_celeba(root, where)
    _, channels, size = _options(folder, data.resize, image_shape)  # resize vs the input node, channels
    return folder, read_tables(folder), channels, size


def _first_image(path: str, channels: int, size, resize, image_shape) -> tuple[int, ...]:
    """Decode one image as every image is decoded and check the input node against it: its (C, H, W).
    Without resize, before any other image is decoded, so the message is the shape error's, with its hint."""
    if resize is None:
        found = (channels, *first_size(path, channels))
        check_input_shape(found, image_shape)
        return found
    return tuple(decode_all([path], channels, size, True).shape[1:])


def _labels(tables: Tables, rows: torch.Tensor, chosen: list[int]) -> dict[str, torch.Tensor]:
    """The label fields of the images at ``rows`` of the tables: one binary field per attribute and
    the multilabel field of the attributes at ``chosen`` (in that order)."""
    bits = tables.bits[rows].to(torch.int64)  # (N, A) 0/1
    labels = {field_name(name): bits[:, a].contiguous() for a, name in enumerate(tables.attributes)}
    labels[MULTILABEL] = bits[:, chosen].contiguous()
    return labels


def chosen_attributes(attributes: list[str], labels: list[str] | None) -> list[int]:
    """The columns of the multilabel field: a multilabel head's ``labels`` (its outputs' order), by name
    as in the file (``5_o_Clock_Shadow``; its field name is accepted too); None: all, in the file's order."""
    if labels is None:
        return list(range(len(attributes)))
    index = {name: a for a, name in enumerate(attributes)} | {field_name(n): a for a, n in enumerate(attributes)}
    unknown = [name for name in labels if name not in index]
    if unknown:
        raise SpecError(
            Problem(
                f"labels names {', '.join(map(repr, unknown))}, which CelebA's {ATTRIBUTES} does not list.",
                field="labels",
                hint=did_you_mean(unknown[0], attributes) or f"choose among: {', '.join(attributes)}.",
            )
        )
    return [index[name] for name in labels]


def class_names_and_types(
    attributes: list[str], chosen: list[int] | None = None
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """``Dataset.class_names`` and ``Dataset.types`` of CelebA's label fields (the contract's:
    binary ``["no", "yes"]``, multilabel the label names in index order)."""
    fields = [field_name(name) for name in attributes]
    class_names = {field: list(BINARY_CLASS_NAMES) for field in fields}
    class_names[MULTILABEL] = [attributes[a] for a in (range(len(attributes)) if chosen is None else chosen)]
    types = {field: "binary" for field in fields}
    types[MULTILABEL] = "multilabel"
    return class_names, types


def load_celeba(
    data: DataSpec,
    root: str | Path | None,
    *,
    image_shape: tuple[int, int, int] | None = None,
    limit_train: int | None = None,
    limit_val: int | None = None,
    where: str = "--data-dir, or [data] root in the spec",
    labels: list[str] | None = None,
    cache_dir: Path | None = None,
    report: Callable[[str], None] | None = None,
) -> Dataset:
    """CelebA's official train / valid / test partitions as graphc's train / val / test splits.

    The train and valid partitions are shuffled with ``data.split_seed``; ``limit_train`` /
    ``limit_val`` keep the first N of each, and only those (and the test partition) are decoded.
    ``where``: what sets the folder, for the messages of a missing copy. ``labels``: the label names of
    the multilabel head on ``attributes``, where it lists them (:func:`chosen_attributes`)."""
    folder, tables, channels, size = _prepare(data, root, image_shape, where)
    chosen = chosen_attributes(tables.attributes, labels)
    train_rows, val_rows, test_rows = (torch.nonzero(tables.partition == p).flatten() for p in range(3))
    for name, rows in zip(PARTITIONS, (train_rows, val_rows, test_rows)):
        if not len(rows):
            raise RunError(f"{folder / PARTITION} puts no image in the {name} partition; the official file does.")
    generator = torch.Generator().manual_seed(data.split_seed)
    train_rows = train_rows[torch.randperm(len(train_rows), generator=generator)][:limit_train]
    val_rows = val_rows[torch.randperm(len(val_rows), generator=generator)][:limit_val]
    # The image folder's reader over a pool of train + valid (in file order) and the test partition.
    pool_rows = torch.nonzero(tables.partition != 2).flatten()
    paths, key = _image_entries(folder, tables.names)
    # The first image: the shape check, and the size of every image where neither resize nor the input node sets it.
    size = _first_image(paths[int(pool_rows[0])], channels, size, data.resize, image_shape)[1:]
    position = torch.full((len(tables.names),), -1, dtype=torch.int64)
    position[pool_rows] = torch.arange(len(pool_rows))
    images = Folder(
        root=(folder / IMAGES).resolve(),
        channels=channels,
        size=size,
        resize=data.resize is not None,
        classes=[],
        files={
            "train": [(paths[i], i) for i in pool_rows.tolist()],  # "class" = the row in the tables
            "test": [(paths[i], i) for i in test_rows.tolist()],
        },
        key=hashlib.sha256(f"{key}\0{MD5[ATTRIBUTES]}\0{MD5[PARTITION]}".encode()).hexdigest(),
        label="row",
        class_names={},
        links={},
        maps={},
    )
    picked, test = read_imagefolder(
        images, position[torch.cat([train_rows, val_rows])], cache_dir=cache_dir, report=report
    )
    rows = picked.labels["row"]
    train = _split(picked.images[: len(train_rows)], rows[: len(train_rows)], tables, chosen)
    val = _split(picked.images[len(train_rows) :], rows[len(train_rows) :], tables, chosen)
    class_names, types = class_names_and_types(tables.attributes, chosen)
    check_input_shape(tuple(test.images.shape[1:]), image_shape)
    return Dataset(
        name="celeba",
        train=train,
        val=val,
        test=_split(test.images, test.labels["row"], tables, chosen),
        class_names=class_names,
        hierarchy={},
        types=types,
    )


def _split(images: torch.Tensor, rows: torch.Tensor, tables: Tables, chosen: list[int]) -> Split:
    return Split(images=images.contiguous(), labels=_labels(tables, rows, chosen))


def probe_celeba(
    data: DataSpec,
    root: str | Path | None,
    *,
    image_shape: tuple[int, int, int] | None = None,
    where: str = "--data-dir, or [data] root in the spec",
    labels: list[str] | None = None,
) -> tuple[dict[str, list[str]], dict[str, str], tuple[int, ...], dict[str, int]]:
    """``(class_names, types, image shape, images per partition)`` for ``graphc check --data``: the checks
    of :func:`load_celeba` on the text files (MD5, form) and the first training image, in a second."""
    folder, tables, channels, size = _prepare(data, root, image_shape, where)
    counts = {name: tables.count(p) for p, name in enumerate(PARTITIONS)}
    first = tables.names[int(torch.nonzero(tables.partition == 0).flatten()[0])] if counts["train"] else None
    if first is None:
        raise RunError(f"{folder / PARTITION} puts no image in the train partition; the official file does.")
    path = folder / IMAGES / first
    if not path.is_file():
        raise RunError(f"{path}, the first training image, is missing: unpack {ARCHIVE} into {folder} again.")
    if path.is_symlink():
        _follow(path, folder.resolve())
    found = _first_image(str(path), channels, size, data.resize, image_shape)
    check_input_shape(found, image_shape)
    class_names, types = class_names_and_types(tables.attributes, chosen_attributes(tables.attributes, labels))
    return class_names, types, found, counts
