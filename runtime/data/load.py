"""One entry point for every data set: ``load_dataset(spec)`` -> a :class:`Dataset` with train/val/test splits;
and ``probe_dataset(spec)``, what ``graphc check --data`` reads: the class lists and one image per class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from graphc.errors import UsageError
from graphc.lang.spec import DataSpec
from graphc.runtime.data.cifar100 import load_cifar100, probe_cifar100
from graphc.runtime.data.imagefolder import load_imagefolder, probe_imagefolder
from graphc.runtime.data.split import Dataset, check_image_shape, split_pool
from graphc.runtime.data.synthetic import make_synthetic, synthetic_class_names


def load_dataset(
    data: DataSpec,
    *,
    dataset: str | None = None,
    root: str | Path | None = None,
    limit_train: int | None = None,
    limit_val: int | None = None,
    image_shape: tuple[int, int, int] | None = None,
    download: bool = True,
) -> Dataset:
    """Load the data set ``data`` describes.

    ``dataset`` and ``root`` override ``data.dataset`` and ``data.root`` (the CLI's
    ``--dataset`` and ``--data-dir``). ``image_shape`` is the spec input node's
    [C, H, W]: synthetic images are generated at that shape, cifar100 and
    imagefolder images must have it (imagefolder images are resized to it only
    when ``data.resize`` is set). ``limit_train`` / ``limit_val`` keep the first N
    images of the (already shuffled) train and validation splits for quick runs.
    ``download=False`` forbids network access (cifar100 then needs a local copy).
    """
    name = dataset or data.dataset
    root = root if root is not None else data.root
    for flag, value in (("--limit-train", limit_train), ("--limit-val", limit_val)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be a positive number of images, got {value}.")

    if name == "cifar100":
        pool, test, class_names, hierarchy = load_cifar100(root, download=download)
    elif name == "imagefolder":
        pool, test, class_names, hierarchy = load_imagefolder(
            _folder_root(root), label=data.label, hierarchy=data.hierarchy, resize=data.resize, image_shape=image_shape
        )
    elif name == "synthetic":
        pool, test, class_names, hierarchy = make_synthetic(
            data.synthetic, image_shape=image_shape or (3, 32, 32), seed=data.split_seed
        )
    else:
        raise _unknown(name)
    check_image_shape(name, tuple(pool.images.shape[1:]), image_shape)

    train, val = split_pool(pool, data.val_fraction, data.split_seed)
    _check_pool(name, len(pool), len(train), data.val_fraction)
    if limit_train is not None:
        train = train.subset(slice(0, limit_train))
    if limit_val is not None:
        val = val.subset(slice(0, limit_val))
    return Dataset(name=name, train=train, val=val, test=test, class_names=class_names, hierarchy=hierarchy)


def _folder_root(root: str | Path | None) -> str | Path:
    if root is None:
        raise UsageError(
            "the imagefolder data set needs a directory: set [data] root in the spec or pass --data-dir "
            "(it must hold train/<class>/ and test/<class>/ folders of images)."
        )
    return root


def _unknown(name: str) -> UsageError:
    return UsageError(f"unknown data set '{name}'; expected one of cifar100, imagefolder, synthetic.")


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

    @property
    def classes(self) -> dict[str, int]:
        return {field: len(names) for field, names in self.class_names.items()}


def probe_dataset(
    data: DataSpec,
    *,
    dataset: str | None = None,
    root: str | Path | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> Probe:
    """Run the checks :func:`load_dataset` runs, with the same functions and messages, on the data
    set's class lists and one image per class (and split) instead of every image: seconds, not minutes.

    imagefolder: the folder listing, the hierarchy tables against the class folders, the first image
    of each class folder (size, channels, decoding); cifar100: the meta file and the test file (never
    downloads; a missing copy is a RunError); synthetic: nothing to read.
    """
    name = dataset or data.dataset
    root = root if root is not None else data.root
    pool: int | None = None
    if name == "cifar100":
        class_names, found, _ = probe_cifar100(root)
    elif name == "imagefolder":
        class_names, found, pool = probe_imagefolder(
            _folder_root(root), label=data.label, hierarchy=data.hierarchy, resize=data.resize, image_shape=image_shape
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
