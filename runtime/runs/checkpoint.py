"""Checkpoint files (``last.pt``, ``best.pt``): written atomically, read back safely, with clear errors.

A checkpoint (format ``graphc-checkpoint/2``) is a ``torch.save`` of a dict that holds only
tensors and plain containers (dict, list, tuple, str, int, float, bool, None), so it is read
with ``torch.load(weights_only=True)``: loading one never runs code, whoever made the file.
The states of numpy's and Python's random generators, which are Python objects, are stored
as tensors and lists (:func:`numpy_rng_to_plain`, :func:`python_rng_to_plain`) and restored
exactly.

graphc 0.1.0 wrote format ``graphc-checkpoint/1``, which pickles numpy's RNG state and so can
be read only by full unpickling, which runs whatever code a crafted file holds. Such a file (or
any other that needs more than weights) is refused; ``graphc convert-checkpoint --trust FILE``
(:func:`convert_checkpoint`) rewrites it in the current format once the user says they trust it.
"""

from __future__ import annotations

import io
import re
import shlex
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from graphc.errors import RunError, UsageError
from graphc.files import atomic_write_bytes

CHECKPOINT_FORMAT = "graphc-checkpoint/2"
LEGACY_FORMAT = "graphc-checkpoint/1"  # graphc 0.1.0: pickled numpy/Python RNG state

# Types of the fields graphc reads, when present: a file that loads but holds something else is refused.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "graphc_version": (str,),
    "spec_name": (str,),
    "spec_sha256": (str,),
    "spec_text": (str,),
    "epoch": (int,),
    "model": (dict,),
    "optimizer": (dict,),
    "scheduler": (dict,),
    "rng": (dict,),
    "monitor": (dict,),
    "metrics": (dict,),
    "class_names": (dict,),
    "config": (dict,),
    "weighting": (dict,),  # [train] loss_weighting's state (runtime/train/weighting.py)
    "aggregation": (dict,),  # [train] aggregator's state (runtime/train/aggregation.py)
}


# --------------------------------------------------------------------------- writing


def serialize_checkpoint(checkpoint: Mapping[str, Any]) -> bytes:
    """The bytes of a checkpoint file (serialise once, write as many files as need it)."""
    import torch

    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **checkpoint}, buffer)
    return buffer.getvalue()


def save_checkpoint(paths: Path | Sequence[Path], checkpoint: Mapping[str, Any]) -> None:
    """Serialise ``checkpoint`` once and write it to each of ``paths`` (e.g. last.pt and best.pt),
    each to a temporary file renamed into place: a crash never leaves a torn checkpoint."""
    data = serialize_checkpoint(checkpoint)
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        atomic_write_bytes(Path(path), data)


# --------------------------------------------------------------------------- reading


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict:
    """Load a graphc checkpoint with ``weights_only=True``; a clear RunError if it is missing,
    damaged, not graphc's, or needs more than tensors and plain containers to load."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no such checkpoint.")
    checkpoint = _load_weights_only(path, map_location)
    if not isinstance(checkpoint, dict) or "format" not in checkpoint:
        raise RunError(f"{path}: not a graphc checkpoint (expected format {CHECKPOINT_FORMAT!r}).")
    if checkpoint["format"] == LEGACY_FORMAT:
        raise RunError(f"{path}: a graphc 0.1.0 checkpoint ({LEGACY_FORMAT}). {_convert_hint(path)}")
    if checkpoint["format"] != CHECKPOINT_FORMAT:
        raise RunError(
            f"{path}: not a graphc checkpoint of this version (format {str(checkpoint['format'])[:60]!r}, "
            f"expected {CHECKPOINT_FORMAT!r})."
        )
    for name, types in _FIELD_TYPES.items():
        value = checkpoint.get(name)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            raise RunError(
                f"{path}: damaged checkpoint: field '{name}' is a {type(value).__name__}, "
                f"expected a {' or '.join(t.__name__ for t in types)}."
            )
    model = checkpoint.get("model") or {}
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        raise RunError(f"{path}: damaged checkpoint: its 'model' weights are not all named tensors.")
    names = checkpoint.get("class_names") or {}
    if not all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in names.values()):
        raise RunError(f"{path}: damaged checkpoint: its 'class_names' are not lists of names.")
    metrics = checkpoint.get("metrics") or {}
    if not all(isinstance(v, (int, float)) or v is None for v in metrics.values()):
        raise RunError(f"{path}: damaged checkpoint: its 'metrics' are not all numbers.")
    if checkpoint.get("config") is not None:  # the run record, checked as config.json is
        from graphc.runtime.runs.record import checkpoint_record

        checkpoint_record(checkpoint, path)
    return checkpoint


def _load_weights_only(path: Path, map_location: Any) -> Any:
    """torch.load that never runs code: anything beyond tensors and plain containers is refused."""
    import pickle

    import torch

    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it better
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        needed = re.search(r"GLOBAL (\S+) was not an allowed global", str(exc))
        if needed:
            raise RunError(
                f"{path}: cannot be loaded safely: it needs the Python object {needed.group(1)[:80]!r}, and rebuilding "
                "Python objects from a file can run any code in it. graphc checkpoints hold only tensors and plain "
                f"data; graphc 0.1.0's also pickled numpy's random state. {_convert_hint(path)}"
            ) from None
        raise RunError(f"{path}: cannot be read as a checkpoint: it is damaged or not a graphc checkpoint.") from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise RunError(
            f"{path}: cannot be read as a checkpoint ({detail!r}). It is damaged or not a graphc checkpoint."
        ) from None


def _convert_hint(path: Path) -> str:
    return (
        "It was not loaded. If you trust the file (you made it with graphc 0.1.0, or know who did), "
        f"convert it to the current format first:  graphc convert-checkpoint --trust {shlex.quote(str(path))}"
    )


# --------------------------------------------------------------------------- RNG states as plain data


def numpy_rng_to_plain(state: tuple) -> dict:
    """``np.random.get_state()`` (a tuple holding a uint32 array) as tensors and numbers."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, gauss = state
    return {
        "kind": str(kind),
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64)),  # (624,), exact in int64
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "gauss": float(gauss),
    }


def numpy_rng_from_plain(state: Mapping[str, Any]) -> tuple:
    """The inverse of :func:`numpy_rng_to_plain`, for ``np.random.set_state``."""
    import numpy as np

    keys = state["keys"].numpy().astype(np.uint32)
    return (state["kind"], keys, int(state["pos"]), int(state["has_gauss"]), float(state["gauss"]))


def python_rng_to_plain(state: tuple) -> dict:
    """``random.getstate()`` (version, 625 ints, gauss) as plain data."""
    version, internal, gauss = state
    return {"version": int(version), "state": list(internal), "gauss": gauss}


def python_rng_from_plain(state: Mapping[str, Any]) -> tuple:
    return (int(state["version"]), tuple(int(v) for v in state["state"]), state["gauss"])


# --------------------------------------------------------------------------- converting 0.1.0 checkpoints


def convert_checkpoints(path: Path, output: Path | None = None, trust: bool = False) -> list[tuple[Path, bool]]:
    """``graphc convert-checkpoint``: a checkpoint file, or a run directory's last.pt and best.pt.
    Returns ``(file written, converted)`` per file; ``converted`` is False for one already current."""
    from graphc.runtime.runs.rundir import BEST, LAST

    path = Path(path)
    if not trust:  # before looking at anything: the flag is the point
        convert_checkpoint(path, output, trust=False)
    if not path.is_dir():
        return [((path if output is None else Path(output)), convert_checkpoint(path, output, trust=True))]
    if output is not None:
        raise UsageError(
            f"-o/--output takes one file; {path} is a directory, whose {LAST} and {BEST} are converted in place."
        )
    files = [path / name for name in (LAST, BEST) if (path / name).is_file()]
    if not files:
        raise RunError(f"{path}: has no {LAST} or {BEST} to convert.")
    return [(file, convert_checkpoint(file, trust=True)) for file in files]


def convert_checkpoint(source: Path, dest: Path | None = None, trust: bool = False) -> bool:
    """Rewrite a graphc 0.1.0 checkpoint in the current format (``dest``: default in place, atomically);
    False (nothing written) when it already is.

    Reading the old format means full unpickling, which runs any code a crafted file holds:
    it happens only with ``trust=True`` (``--trust``), the user's statement that they trust the file.
    """
    import pickle

    import torch

    source = Path(source)
    if not trust:
        raise UsageError(
            f"convert-checkpoint reads {source} with full unpickling, which runs any code a crafted file holds. "
            "Pass --trust only if you trust the file (you made it with graphc 0.1.0, or got it from someone you trust)."
        )
    if not source.is_file():
        raise RunError(f"{source}: no such checkpoint.")
    dest = source if dest is None else Path(dest)
    try:
        old = torch.load(source, map_location="cpu", weights_only=False)  # the user vouched for the file
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        TypeError,
        AttributeError,
        ImportError,
        KeyError,
        IndexError,
    ) as exc:
        raise RunError(f"{source}: cannot be read as a checkpoint ({str(exc)[:200]!r}).") from None
    if not isinstance(old, dict) or old.get("format") not in (LEGACY_FORMAT, CHECKPOINT_FORMAT):
        raise RunError(f"{source}: not a graphc checkpoint (expected format {LEGACY_FORMAT!r}); nothing was written.")
    if old["format"] == CHECKPOINT_FORMAT:
        return False
    new = {k: v for k, v in old.items() if k != "format"}
    rng = dict(new.get("rng") or {})
    if isinstance(rng.get("numpy"), tuple):
        rng["numpy"] = numpy_rng_to_plain(rng["numpy"])
    if isinstance(rng.get("python"), tuple):
        rng["python"] = python_rng_to_plain(rng["python"])
    if rng:
        new["rng"] = rng
    data = serialize_checkpoint(new)
    try:  # what is written must load safely: nothing but tensors and plain containers left
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        needed = re.search(r"GLOBAL (\S+) was not an allowed global", str(exc))
        what = f"the Python object {needed.group(1)!r}" if needed else "objects beyond tensors and plain containers"
        raise RunError(f"{source}: holds {what}, which a graphc checkpoint does not; nothing was written.") from None
    try:
        atomic_write_bytes(dest, data)
    except OSError as exc:  # read-only place, full disk, a directory at the name: the old file is untouched
        raise RunError(f"{dest}: cannot be written ({exc.strerror or exc}); {source} is unchanged.") from None
    return True
