"""Data sets as in-memory uint8 tensors: ``Split`` and ``Dataset``, the shape every source returns.

Every data set ends up the same shape, whatever its source::

    Dataset(name, train=Split, val=Split, test=Split, class_names, hierarchy)
    Split(images=uint8 (N, C, H, W), labels={"fine": int64 (N,), "coarse": int64 (N,)})

Images stay uint8 on the CPU (a quarter of float32's memory and transfer); the
training loop moves a batch to its device and calls ``graphc.runtime.data.augment.to_float``
there. The sources live in their own modules:

- ``graphc.runtime.data.cifar100``    the real CIFAR-100 pickles, downloaded on first use
- ``graphc.runtime.data.imagefolder`` ROOT/{train,test}/<class>/*.png|jpg, decoded once into a cache
- ``graphc.runtime.data.synthetic``   generated, learnable images with a fine/coarse hierarchy
- ``graphc.runtime.data.table``       label tables (CSV/TSV): an image path and a column per label field

Each returns a training *pool* and a test split; ``graphc.runtime.data.load.load_dataset`` carves the
validation split out of the pool with ``data.split_seed`` (independent of the
training seed, so every seed of an experiment sees the same validation images)
and never touches the test split, which is for final evaluation only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from graphc.errors import Problem, SpecError


def default_data_dir() -> Path:
    """Where downloads and caches go: ``$GRAPHC_DATA`` if set, else ``~/.cache/graphc``."""
    configured = os.environ.get("GRAPHC_DATA")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "graphc"


# The class names of a binary label field: index 0 is no, 1 is yes (a label table's, CelebA's).
BINARY_CLASS_NAMES = ("no", "yes")

# A missing label: -1 in an int64 label (a class index, a binary 0/1, a multilabel row of 0/1s: the whole
# row -1); a regression label's row is NaN instead. See :func:`labelled`.
MISSING = -1


def labelled(labels: torch.Tensor) -> torch.Tensor:
    """bool (N,): which images have the label. int64 (N,): not -1; int64 (N, L) (multilabel): the row is
    not -1; float (N, K) (regression): no NaN in the row."""
    if labels.is_floating_point():
        return ~torch.isnan(labels).any(dim=1) if labels.dim() == 2 else ~torch.isnan(labels)
    return labels[:, 0] >= 0 if labels.dim() == 2 else labels >= 0


@dataclass(frozen=True)
class Split:
    """Images and their labels, one entry per image."""

    images: torch.Tensor  # uint8 (N, C, H, W), CPU, contiguous
    # label field -> int64 (N,) (a class, binary 0/1), int64 (N, L) (multilabel 0/1s) or float32 (N, K)
    # (regression); a missing label is MISSING (-1), or NaN for regression
    labels: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        for name, labels in self.labels.items():
            rows_ok = labels.dim() in (1, 2) and labels.shape[0] == len(self.images)
            if not rows_ok or (
                labels.dtype != torch.int64 and not (labels.dtype == torch.float32 and labels.dim() == 2)
            ):
                raise ValueError(
                    f"labels '{name}' must be int64 ({len(self.images)},) or ({len(self.images)}, L), or float32 "
                    f"({len(self.images)}, K), got {labels.dtype} {tuple(labels.shape)}"
                )

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: torch.Tensor | slice) -> Split:
        """The images at ``index`` (an index tensor, a boolean mask or a slice), copied contiguous."""
        return Split(
            images=self.images[index].contiguous(),
            labels={field: labels[index].contiguous() for field, labels in self.labels.items()},
        )


@dataclass(frozen=True)
class Dataset:
    """A data set split three ways, with its label fields' class names and hierarchy."""

    name: str  # "cifar100", "synthetic", "imagefolder"
    train: Split
    val: Split  # held out of the training pool (data.val_fraction, data.split_seed)
    test: Split  # for final evaluation only
    class_names: dict[str, list[str]]  # label field -> class names in index order
    # (child field, parent field) -> int64 (n_child_classes,) child index -> parent index: one entry
    # per label hierarchy (each [data.hierarchy] table; cifar100/synthetic: fine -> coarse). Chains of
    # them (fine -> coarse -> super) are composed by graphc.runtime.metrics.hierarchies_of.
    hierarchy: dict[tuple[str, str], torch.Tensor]
    # label field -> head type where it is not "classification": "binary", "multilabel" or "regression"
    # (a label table's columns, CelebA's attributes). class_names then holds ["no", "yes"] (binary), the
    # label names (multilabel) or the output names (regression: [field] or [field[0], field[1], ...]).
    types: dict[str, str] = field(default_factory=dict)

    @property
    def classes(self) -> dict[str, int]:
        """Label field -> number of classes (what ``graphc.build_graph(spec, classes=...)`` checks heads against)."""
        return {field: len(names) for field, names in self.class_names.items()}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]


def compose(hierarchy: dict[tuple[str, str], torch.Tensor], path: tuple[str, ...]) -> torch.Tensor:
    """The class map along a chain of hierarchy links, e.g. (fine, coarse, super): fine index -> super index."""
    mapping = hierarchy[(path[0], path[1])].long()
    for child, parent in zip(path[1:], path[2:]):
        mapping = hierarchy[(child, parent)].long()[mapping]
    return mapping


def split_indices(size: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, val)``: positions in a training pool of ``size`` images. The pool is shuffled with
    ``seed`` and the first ``round(val_fraction * size)`` are held out for validation.

    Both parts keep the shuffled order, so taking the first N of either is a random subset. Only the
    pool's size is needed: an image folder picks the images a run uses before decoding any.
    """
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
    n_val = round(size * val_fraction)
    return order[n_val:], order[:n_val]


def split_pool(pool: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """Shuffle the training pool with ``seed`` and hold out ``round(val_fraction * N)`` images
    (:func:`split_indices`)."""
    train, val = split_indices(len(pool), val_fraction, seed)
    return pool.subset(train), pool.subset(val)


def check_image_shape(name: str, found: tuple[int, ...], expected: tuple[int, int, int] | None) -> None:
    """The spec's input node must accept the data set's images."""
    if expected is not None and tuple(expected) != tuple(found):
        raise SpecError(
            Problem(
                f"the input node's shape is {list(expected)} but the {name} images are "
                f"{'x'.join(map(str, found))} (channels x height x width).",
                field="shape",
                hint=f"set the input node's shape = {list(found)}"
                + (", or set [data] resize = [H, W] to resize the images." if name == "imagefolder" else "."),
            )
        )
