"""Checkpoint files (``last.pt``, ``best.pt``): written atomically, read back with clear errors."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from graphc.errors import RunError
from graphc.files import atomic_write_bytes

CHECKPOINT_FORMAT = "graphc-checkpoint/1"


def save_checkpoint(path: Path, checkpoint: dict) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a torn checkpoint."""
    import torch

    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **checkpoint}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict:
    """Load a graphc checkpoint; a clear RunError if it is missing, damaged or not graphc's."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no such checkpoint.")
    try:
        # Checkpoints hold plain containers, tensors and numpy RNG state; weights_only=False
        # because numpy's RNG state is not on torch's allow-list. Only load files you trust.
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError) as exc:
        raise RunError(f"{path}: cannot be read as a checkpoint ({exc}). It is damaged or not a graphc checkpoint.") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{path}: not a graphc checkpoint (expected format {CHECKPOINT_FORMAT!r}).")
    return checkpoint
