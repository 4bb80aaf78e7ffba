"""The host allocator for training and evaluation: keep freed memory for the next batch.

A training step allocates and frees the same large buffers every batch: activations, their
gradients and, under bf16 autocast, bf16 copies of the weights (16 MiB for one 8192 x 1024
layer). glibc's malloc serves a request above its mmap threshold with a fresh ``mmap`` and
unmaps it again on ``free``, so every step pays the kernel to map and zero the same pages once
more (about 30,000 page faults per step of shared_reuse_coarse at batch 100). Raising the mmap
threshold to glibc's largest (32 MiB) and the trim threshold to 1 GiB keeps those pages in the
process's heap for the next step. Measured on the CPU of BENCHMARKS.md: shared_reuse_coarse's
bf16 training step 1.08-1.5x faster (side by side in benchmarks/keras_vs_graphc.py: 1.36 at
1 thread, 1.08 at 2), its fp32 step about 1.07x, for about 50 MiB more resident memory. PyTorch's CPU performance guide gets the same effect by preloading jemalloc or tcmalloc;
this needs no extra library.

Only glibc has these settings. Elsewhere (macOS, musl) nothing changes, and neither does it
when the user has chosen allocator settings of their own (``MALLOC_*_`` variables,
``GLIBC_TUNABLES`` for malloc, an allocator in ``LD_PRELOAD``) or asked for the system's
defaults with ``GRAPHC_HOST_ALLOCATOR=system`` (benchmarks/keras_vs_graphc.py measures the
difference that way).
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 2**30
OPT_OUT = "GRAPHC_HOST_ALLOCATOR"  # =system: leave the allocator as it is

_state: str | None = None  # what keep_freed_memory did, once


def users_own_settings(environ: os._Environ | dict = os.environ) -> str | None:
    """The variable through which the user already tunes the allocator, if any."""
    for name, value in environ.items():
        if name.startswith("MALLOC_") and name.endswith("_"):
            return name
        if name == "GLIBC_TUNABLES" and "glibc.malloc." in value:
            return name
        if name == "LD_PRELOAD" and "malloc" in value.lower():  # libjemalloc, libtcmalloc, libmimalloc
            return name
    return None


def keep_freed_memory() -> str:
    """Tune glibc's malloc as above (once per process); returns what was done, for env.json."""
    global _state
    if _state is None:
        _state = _tune()
    return _state


def state() -> str:
    """What keep_freed_memory did in this process ("system default" before it ran)."""
    return _state or "system default"


def _tune() -> str:
    if os.environ.get(OPT_OUT, "").strip().lower() == "system":
        return f"system default ({OPT_OUT}=system)"
    own = users_own_settings()
    if own is not None:
        return f"as set by {own}"
    if not sys.platform.startswith("linux"):
        return "system default"
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return "system default"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; musl's stub returns 0 and changes nothing.
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return "system default"
    return f"glibc malloc keeps freed memory (mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold 1 GiB)"
