"""Batches of a split on the device that trains or evaluates: where the data lives, how it gets there.

A split is uint8 images and int64 labels on the CPU (graphc.runtime.data.split). On a CUDA device:

- a split that fits - at most ``RESIDENT_SHARE`` of the GPU's free memory, as
  ``torch.cuda.mem_get_info`` reports it when the split is placed - is copied there once
  (:func:`place`), and every batch is then gathered on the GPU: no copy per step;
- a larger split (or one whose copy runs out of memory after all: free memory is a
  snapshot) stays on the CPU, and :func:`gather` takes each batch straight into
  page-locked (pinned) memory and copies it asynchronously, one batch ahead, so the host
  never waits for the copy and the next batch is on its way while the GPU works on this one.

On the CPU a batch is ``images[index]``, exactly as it always was. :func:`to_device`
is the rule for a small host tensor bound for the device (augmentation parameters):
one copy, pinned and asynchronous on CUDA.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from graphc.runtime.data.split import Split

# A resident split may take this share of the GPU's free memory: the rest is for the model,
# its optimiser state and the activations, most of which appear only at the first step.
RESIDENT_SHARE = 0.5

Index = torch.Tensor | slice  # an index tensor (training's shuffled batches) or a slice (evaluation)
Batch = tuple[torch.Tensor, dict[str, torch.Tensor]]  # uint8 (B, C, H, W), {field: int64 (B,)}


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor on ``device`` in one copy; through pinned memory on CUDA, so the copy is
    asynchronous (the pinned block is not reused before the copy is done: torch's host allocator
    records it with the copy's stream)."""
    if tensor.device.type == "cpu" and device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def nbytes(split: Split) -> int:
    return split.images.nbytes + sum(labels.nbytes for labels in split.labels.values())


def free_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` for a resident split, or None where data stays on the CPU
    (the CPU itself; MPS shares the CPU's memory)."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return free


def place(split: Split, device: torch.device, fields: Iterable[str] | None = None) -> Split:
    """``split`` (only its label ``fields``, when given) on ``device`` if it fits there, copied
    once; otherwise on the CPU, where :func:`gather` streams it through pinned memory."""
    if fields is not None:
        split = Split(split.images, {field: split.labels[field] for field in fields})
    free = free_memory(device)
    if free is None or nbytes(split) > RESIDENT_SHARE * free:
        return split
    try:
        return Split(split.images.to(device), {field: labels.to(device) for field, labels in split.labels.items()})
    except torch.OutOfMemoryError:  # another process took the memory since mem_get_info: stream it instead
        return split


def gather(split: Split, indices: Iterable[Index], device: torch.device) -> Iterator[Batch]:
    """``(images, labels)`` on ``device`` for each index of ``indices``, in order.

    A split already on the device (placed), or any split for the CPU, is gathered where it
    lives; the indices must be there too. A CPU split for another device is :func:`streamed`.
    """
    if split.images.device.type != "cpu" or device.type == "cpu":
        for index in indices:
            yield split.images[index], {field: labels[index] for field, labels in split.labels.items()}
        return
    yield from streamed(split, indices, device, pin=device.type == "cuda")


def streamed(split: Split, indices: Iterable[Index], device: torch.device, pin: bool) -> Iterator[Batch]:
    """Batches of a CPU split gathered on the CPU (into pinned memory when ``pin``) and copied to
    ``device`` without waiting, each batch's copy issued before the one before it is handed out."""
    ahead: Batch | None = None
    for index in indices:
        batch = (
            _take(split.images, index, pin).to(device, non_blocking=pin),
            {field: _take(labels, index, pin).to(device, non_blocking=pin) for field, labels in split.labels.items()},
        )
        if ahead is not None:
            yield ahead
        ahead = batch
    if ahead is not None:
        yield ahead


def _take(tensor: torch.Tensor, index: Index, pin: bool) -> torch.Tensor:
    """``tensor[index]``, written straight into pinned memory when ``pin`` (no second copy)."""
    if not pin:
        return tensor[index]
    rows = len(range(*index.indices(len(tensor)))) if isinstance(index, slice) else len(index)
    out = pinned_empty((rows, *tensor.shape[1:]), tensor.dtype)
    if isinstance(index, slice):
        return out.copy_(tensor[index])
    return torch.index_select(tensor, 0, index, out=out)


def pinned_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised page-locked CPU tensor (from torch's caching host allocator)."""
    return torch.empty(shape, dtype=dtype, pin_memory=True)
