"""One entry point for every data set: ``load_dataset(spec)`` -> a :class:`Dataset` with train/val/test splits;
and ``probe_dataset(spec)``, what ``graphc check --data`` reads: the class lists and one image per class.

Limits limit what is read: an image folder decodes only the training and validation images a run
uses (``--limit-train``, ``--limit-val``: chosen from the folder listing by the split seed, the same
images a full read would give), and :func:`validation_limit` is the validation size of a run that
limits training but not validation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from graphc.errors import RunError, UsageError
from graphc.lang.spec import DataSpec
from graphc.runtime.data.celeba import load_celeba, probe_celeba
from graphc.runtime.data.cifar100 import load_cifar100, probe_cifar100
from graphc.runtime.data.imagefolder import open_imagefolder, probe_imagefolder, read_imagefolder
from graphc.runtime.data.split import Dataset, check_image_shape, split_indices
from graphc.runtime.data.synthetic import make_synthetic, synthetic_class_names
from graphc.runtime.data.table import Column, load_table, probe_table

MIN_VALIDATION = 500  # validation images of a run that limits training but not validation, at least
VALIDATION_SHARE = 4  # ... and otherwise a quarter of its training images (train : val = 4 : 1, val_fraction 0.2's)


def validation_limit(limit_train: int | None, limit_val: int | None) -> int | None:
    """``graphc train``'s validation limit: ``--limit-val`` when given; with ``--limit-train N`` alone,
    ``max(ceil(N / 4), 500)``: the 4 : 1 ratio of the default val_fraction (0.2), never fewer than 500
    images (where the validation split has them), so that a quick run validates in proportion to what
    it trains on, not on the whole split, and its accuracy is still measured on enough images."""
    if limit_val is not None or limit_train is None:
        return limit_val
    return max(-(-limit_train // VALIDATION_SHARE), MIN_VALIDATION)


def validation_note(limit_train: int | None, limit_val: int | None) -> str | None:
    """The line ``graphc train`` prints at start when the rule of :func:`validation_limit` set the limit."""
    if limit_train is None or limit_val is None or limit_val != validation_limit(limit_train, None):
        return None
    return (
        f"validation: at most {limit_val:,} images (--limit-train {limit_train:,} without --limit-val validates on "
        f"max(N / {VALIDATION_SHARE}, {MIN_VALIDATION}); --limit-val sets another number)"
    )


def load_dataset(
    data: DataSpec,
    *,
    dataset: str | None = None,
    root: str | Path | None = None,
    limit_train: int | None = None,
    limit_val: int | None = None,
    image_shape: tuple[int, int, int] | None = None,
    download: bool = True,
    source: Path | None = None,
    report: Callable[[str], None] | None = None,
    columns: dict[str, Column] | None = None,
) -> Dataset:
    """Load the data set ``data`` describes.

    ``dataset`` and ``root`` override ``data.dataset`` and ``data.root`` (the CLI's
    ``--dataset`` and ``--data-dir``). ``image_shape`` is the spec input node's
    [C, H, W]: synthetic images are generated at that shape, cifar100 and
    imagefolder images must have it (imagefolder images are resized to it only
    when ``data.resize`` is set). ``limit_train`` / ``limit_val`` keep the first N
    images of the (already shuffled) train and validation splits for quick runs; an
    image folder decodes only those (and the test split).
    ``download=False`` forbids network access (cifar100 then needs a local copy).
    ``source``: the spec file, named in the messages of a missing data set; ``report``: progress lines.
    ``columns``: a label table's columns to read and how (``graphc.runtime.data.table.columns_of(spec)``;
    None: only ``[data] label`` where the spec has a hierarchy); the other data sets ignore it.
    """
    name = dataset or data.dataset
    root = root if root is not None else data.root
    for flag, value in (("--limit-train", limit_train), ("--limit-val", limit_val)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be a positive number of images, got {value}.")

    if name == "imagefolder":
        folder = open_imagefolder(
            _folder_root(root, source),
            label=data.label,
            hierarchy=data.hierarchy,
            resize=data.resize,
            image_shape=image_shape,
            where=root_field(source),
        )
        train_index, val_index = split_indices(folder.pool_size, data.val_fraction, data.split_seed)
        _check_pool(name, folder.pool_size, len(train_index), data.val_fraction)
        if limit_train is None and limit_val is None:  # every image: read the pool once, then split it
            pool, test = read_imagefolder(folder, report=report)
            train, val = pool.subset(train_index), pool.subset(val_index)
        else:  # the images the limits keep, the same a full read would give them
            train_index, val_index = train_index[:limit_train], val_index[:limit_val]
            chosen, test = read_imagefolder(folder, torch.cat([train_index, val_index]), report=report)
            train, val = chosen.subset(slice(0, len(train_index))), chosen.subset(slice(len(train_index), None))
        check_image_shape(name, tuple(test.images.shape[1:]), image_shape)
        return Dataset(
            name=name, train=train, val=val, test=test, class_names=folder.class_names, hierarchy=folder.links
        )
    if name == "table":  # label tables: the columns the spec's heads read (runtime/data/table.py)
        dataset = load_table(
            data,
            _folder_root(root, source, name),
            columns=columns,
            image_shape=image_shape,
            limit_train=limit_train,
            limit_val=limit_val,
            where=root_field(source),
            report=report,
        )
        _check_pool(name, len(dataset.train) + len(dataset.val), len(dataset.train), data.val_fraction)
        check_image_shape(name, tuple(dataset.test.images.shape[1:]), image_shape)
        return dataset
    if name == "celeba":  # the official partitions: no pool to split (runtime/data/celeba.py)
        attributes = (columns or {}).get("attributes")  # a multilabel head's own choice and order of attributes
        return load_celeba(
            data,
            root,
            image_shape=image_shape,
            limit_train=limit_train,
            limit_val=limit_val,
            where=root_field(source),
            labels=attributes.labels if attributes is not None else None,
            report=report,
        )
    if name == "cifar100":
        pool, test, class_names, hierarchy = _missing_names_spec(lambda: load_cifar100(root, download=download), source)
    elif name == "synthetic":
        pool, test, class_names, hierarchy = make_synthetic(
            data.synthetic, image_shape=image_shape or (3, 32, 32), seed=data.split_seed
        )
    else:
        raise _unknown(name)
    check_image_shape(name, tuple(pool.images.shape[1:]), image_shape)
    train_index, val_index = split_indices(len(pool), data.val_fraction, data.split_seed)
    _check_pool(name, len(pool), len(train_index), data.val_fraction)
    train, val = pool.subset(train_index[:limit_train]), pool.subset(val_index[:limit_val])
    return Dataset(name=name, train=train, val=val, test=test, class_names=class_names, hierarchy=hierarchy)


def root_field(source: Path | None) -> str:
    """Where a data set's folder is set: ``--data-dir`` or the spec's field, naming its file."""
    return f"--data-dir, or [data] root in {source}" if source is not None else "--data-dir, or [data] root in the spec"


def _missing_names_spec(load: Callable, source: Path | None):
    """CIFAR-100's own messages name --data-dir and [data] root; add the spec file they are in."""
    try:
        return load()
    except RunError as exc:
        if source is None or "was not found" not in str(exc):
            raise
        raise RunError(f"{exc} (The data set's folder is set by {root_field(source)}.)") from None


def _folder_root(root: str | Path | None, source: Path | None = None, name: str = "imagefolder") -> str | Path:
    if root is None:
        spec = f"set [data] root in {source}" if source is not None else "set [data] root in the spec"
        holds = (
            "the label tables and the images they name"
            if name == "table"
            else "train/<class>/ and test/<class>/ folders of images"
        )
        raise UsageError(f"the {name} data set needs a directory: {spec} or pass --data-dir (it must hold {holds}).")
    return root


def _unknown(name: str) -> UsageError:
    return UsageError(f"unknown data set '{name}'; expected one of celeba, cifar100, imagefolder, synthetic, table.")


def _check_pool(name: str, pool: int, train: int, val_fraction: float) -> None:
    if train == 0:
        raise UsageError(
            f"the {name} training pool has {pool} images, so val_fraction = {val_fraction} "
            "leaves none for training; lower [data] val_fraction."
        )


@dataclass(frozen=True)
class Probe:
    """What ``graphc check --data`` learns of a data set without loading it."""

    name: str
    class_names: dict[str, list[str]]  # label field -> class names, as load_dataset would give them
    image_shape: tuple[int, ...]  # (C, H, W) of the images read
    pool: int | None  # images in the training pool (before the validation split), where known without reading them
    types: dict[str, str] = field(default_factory=dict)  # label field -> head type where not classification
    # split ("train", "val", "test") -> label field -> images with that label, where labels may be missing
    labelled: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def classes(self) -> dict[str, int]:
        return {field: len(names) for field, names in self.class_names.items()}


def probe_dataset(
    data: DataSpec,
    *,
    dataset: str | None = None,
    root: str | Path | None = None,
    image_shape: tuple[int, int, int] | None = None,
    source: Path | None = None,
    columns: dict[str, Column] | None = None,
) -> Probe:
    """Run the checks :func:`load_dataset` runs, with the same functions and messages, on the data
    set's class lists and one image per class (and split) instead of every image: seconds, not minutes.

    imagefolder: the folder listing, the hierarchy tables against the class folders, the first image
    of each class folder (size, channels, decoding); cifar100: the meta file and the test file (never
    downloads; a missing copy is a RunError); synthetic: nothing to read; table: both tables whole (every
    row and image path checked, ``columns`` as for :func:`load_dataset`) and the first image of each.
    """
    name = dataset or data.dataset
    root = root if root is not None else data.root
    pool: int | None = None
    if name == "celeba":  # its own checks (shape with the resize hint); the pool is the train partition
        attributes = (columns or {}).get("attributes")  # a multilabel head's labels: checked here, as a load does
        class_names, types, found, counts = probe_celeba(
            data,
            root,
            image_shape=image_shape,
            where=root_field(source),
            labels=attributes.labels if attributes is not None else None,
        )
        return Probe(name=name, class_names=class_names, image_shape=found, pool=counts["train"], types=types)
    if name == "table":  # both tables read and checked whole, one image of each decoded
        class_names, types, found, pool, counts = probe_table(
            data, _folder_root(root, source, name), columns=columns, image_shape=image_shape, where=root_field(source)
        )
        check_image_shape(name, found, image_shape)
        _check_pool(name, pool, pool - round(pool * data.val_fraction), data.val_fraction)
        return Probe(name=name, class_names=class_names, image_shape=found, pool=pool, types=types, labelled=counts)
    if name == "cifar100":
        class_names, found, _ = _missing_names_spec(lambda: probe_cifar100(root), source)
    elif name == "imagefolder":
        class_names, found, pool = probe_imagefolder(
            _folder_root(root, source),
            label=data.label,
            hierarchy=data.hierarchy,
            resize=data.resize,
            image_shape=image_shape,
            where=root_field(source),
        )
    elif name == "synthetic":  # generated at the input shape: only the counts to report
        class_names = synthetic_class_names(data.synthetic)
        found, pool = tuple(image_shape or (3, 32, 32)), data.synthetic.train_size
    else:
        raise _unknown(name)
    check_image_shape(name, found, image_shape)
    if pool is not None:
        _check_pool(name, pool, pool - round(pool * data.val_fraction), data.val_fraction)
    return Probe(name=name, class_names=class_names, image_shape=found, pool=pool)
