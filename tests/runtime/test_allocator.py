"""The host allocator's settings (runtime/allocator.py): glibc keeps freed memory for the next batch."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from graphc.runtime import allocator


def test_the_users_own_allocator_settings_are_left_alone():
    assert allocator.users_own_settings({"MALLOC_ARENA_MAX_": "2"}) == "MALLOC_ARENA_MAX_"
    assert allocator.users_own_settings({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}) == "GLIBC_TUNABLES"
    assert allocator.users_own_settings({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}) == "LD_PRELOAD"
    assert (
        allocator.users_own_settings(
            {"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2", "LD_PRELOAD": "libfoo.so", "PATH": "/bin"}
        )
        is None
    )


def test_graphc_host_allocator_system_leaves_the_allocator_alone(monkeypatch):
    monkeypatch.setenv("GRAPHC_HOST_ALLOCATOR", "system")
    monkeypatch.setattr(allocator, "_state", None)  # as in a fresh process
    assert allocator.keep_freed_memory() == "system default (GRAPHC_HOST_ALLOCATOR=system)"
    assert allocator.state() == "system default (GRAPHC_HOST_ALLOCATOR=system)"


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _glibc(), reason="mallopt's settings exist only in glibc")
def test_freed_batch_sized_buffers_stay_in_the_heap_for_the_next_batch():
    # In a fresh process, six 16 MiB buffers are allocated and freed. With glibc's defaults the
    # first ones are mapped apart and unmapped on free (the next batch faults its pages in again);
    # after keep_freed_memory() they come from the heap and stay there when freed.
    probe = """
import sys
import torch
from graphc.runtime import allocator
if sys.argv[1] == "keep":
    print(allocator.keep_freed_memory())
def heap_bytes():
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            low, high = (int(x, 16) for x in line.split()[0].split("-"))
            return high - low
    return 0
before = heap_bytes()
held = [torch.ones(4 * 2**20) for _ in range(6)]  # 6 x 16 MiB, written in full
del held
print((heap_bytes() - before) >> 20)
"""
    env = {
        k: v for k, v in os.environ.items() if allocator.users_own_settings({k: v}) is None and k != allocator.OPT_OUT
    }
    runs = {
        mode: subprocess.run(
            [sys.executable, "-c", probe, mode], capture_output=True, text=True, env=env, check=True
        ).stdout.split()
        for mode in ("keep", "default")
    }
    assert " ".join(runs["keep"][:-1]).startswith("glibc malloc keeps freed memory")
    assert int(runs["keep"][-1]) >= 6 * 16 - 1  # MiB still in the heap after the free
    assert int(runs["default"][-1]) < 16  # mapped apart, given back


def test_the_run_environment_records_the_allocator():
    import torch

    from graphc.runtime.train.launch import environment

    assert environment(torch.device("cpu"))["host_allocator"] == allocator.state()
