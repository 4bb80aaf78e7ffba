"""Where and how a model runs: the device (``--device``) and the numeric precision (``precision``)."""

from __future__ import annotations

import contextlib

import torch

from graphc.errors import RunError, UsageError


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA, then MPS, then CPU; otherwise the named device, which must exist here."""
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unknown device '{name}'; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RunError(
                f"device '{name}' was requested but CUDA is not available here "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}). "
                "Use --device cpu or --device auto."
            )
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise RunError(
                f"device '{name}' was requested but this machine has {torch.cuda.device_count()} CUDA device(s) "
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})."
            )
        return torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RunError(f"device '{name}' was requested but MPS is not available here. Use --device cpu or auto.")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> 'bf16' on CUDA (autocast), 'fp32' elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for the forward pass, or nothing for fp32."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
