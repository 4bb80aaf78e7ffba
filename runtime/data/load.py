"""One entry point for every data set: ``load_dataset(spec)`` -> a :class:`Dataset` with train/val/test splits."""

from __future__ import annotations

from pathlib import Path

from graphc.errors import UsageError
from graphc.lang.spec import DataSpec
from runtime.data.cifar100 import load_cifar100
from runtime.data.imagefolder import load_imagefolder
from runtime.data.split import Dataset, check_image_shape, split_pool
from runtime.data.synthetic import make_synthetic


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
        pool, test, class_names, parents = load_cifar100(root, download=download)
    elif name == "imagefolder":
        if root is None:
            raise UsageError(
                "the imagefolder data set needs a directory: set [data] root in the spec or pass --data-dir "
                "(it must hold train/<class>/ and test/<class>/ folders of images)."
            )
        pool, test, class_names, parents = load_imagefolder(
            root, label=data.label, hierarchy=data.hierarchy, resize=data.resize, image_shape=image_shape
        )
    elif name == "synthetic":
        pool, test, class_names, parents = make_synthetic(
            data.synthetic, image_shape=image_shape or (3, 32, 32), seed=data.split_seed
        )
    else:
        raise UsageError(f"unknown data set '{name}'; expected one of cifar100, imagefolder, synthetic.")
    check_image_shape(name, tuple(pool.images.shape[1:]), image_shape)

    train, val = split_pool(pool, data.val_fraction, data.split_seed)
    if len(train) == 0:
        raise UsageError(
            f"the {name} training pool has {len(pool)} images, so val_fraction = {data.val_fraction} "
            "leaves none for training; lower [data] val_fraction."
        )
    if limit_train is not None:
        train = train.subset(slice(0, limit_train))
    if limit_val is not None:
        val = val.subset(slice(0, limit_val))
    return Dataset(name=name, train=train, val=val, test=test, class_names=class_names, parents=parents)
