"""Where and how a model runs: the device (``--device``), the numeric precision (``precision``)
and the memory format, chosen from what the hardware can do.

``precision = "auto"`` picks bf16 autocast where the device multiplies bf16 matrices natively
and fp32 elsewhere, decided from torch's capability queries (never from a timing at start-up):

- CUDA with compute capability >= 8 (Ampere and later): bf16 tensor cores.
- A CPU with AMX bf16 tiles (Intel Sapphire Rapids and later), through oneDNN.
- Everything else (pre-Ampere GPUs, CPUs without AMX, MPS): fp32. Pre-Ampere GPUs and CPUs
  with only AVX-512 BF16 dot products convert bf16 rather than multiplying it in matrix units,
  so bf16 would buy rounding error without the speed.

TF32: every GPU that has TF32 (compute capability >= 8) also has native bf16, so ``auto`` never
ends in fp32 on a TF32 GPU. ``precision = "fp32"`` means IEEE fp32 everywhere: on CUDA graphc
turns TF32 off for matmuls and cuDNN convolutions (PyTorch allows it for convolutions by
default), so an "fp32" number is one. On a GPU without bf16 ``auto``'s fp32 allows TF32, which
such GPUs do not have: the setting changes nothing there and only says that auto favours speed.

Memory format: channels-last where the convolution kernels are faster in it - conv models on a
CPU with oneDNN (fp32 and bf16), and on CUDA with bf16 (tensor cores work in NHWC). Models
without convolutions stay contiguous.

A run's execution - device, processes, precision, memory format, torch.compile, CPU threads and
host allocator - is decided once, by :func:`decide_execution`, when ``graphc train`` starts the
run (and for each session a resume starts), recorded in the run record (config.json,
runtime/runs/record.py) and passed down; evaluation reads it from the record
(:func:`evaluation_execution`), and bench takes the same decision for a spec without a run.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from graphc.errors import RunError, UsageError
from graphc.runtime import allocator

if TYPE_CHECKING:
    from graphc.lang.spec import TrainSpec

PRECISIONS = ("auto", "fp32", "bf16")


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


# --------------------------------------------------------------------------- capabilities


def cpu_has_bf16_matrix_units() -> bool:
    """AMX bf16 tiles, used by oneDNN (torch.cpu.get_capabilities reads CPUID through cpuinfo)."""
    capabilities = torch.cpu.get_capabilities()
    return bool(capabilities.get("amx_bf16", False)) and torch.backends.mkldnn.is_available()


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Compute capability >= 8.0 (Ampere and later): bf16 tensor cores."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def bf16_native(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` multiplies bf16 natively, and the reason in words."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if cuda_has_native_bf16(device):
            return True, f"GPU compute capability {major}.{minor} has bf16 tensor cores"
        return False, f"GPU compute capability {major}.{minor} < 8.0 has no bf16 tensor cores"
    if device.type == "cpu":
        if cpu_has_bf16_matrix_units():
            return True, "CPU has AMX bf16"
        return False, "CPU has no AMX bf16 matrix units"
    return False, f"{device.type} is run in fp32"


# --------------------------------------------------------------------------- the choice


@dataclass(frozen=True)
class Execution:
    """How a model runs: precision ('fp32' or 'bf16'), memory format and why (``plan_execution``);
    for a run, also where and with what (``decide_execution``, recorded in the run record)."""

    precision: str
    channels_last: bool
    reason: str
    device: str | None = None  # where the run trains (rank 0's device with several processes)
    nproc: int = 1  # processes training the run
    requested: str | None = None  # [train] precision as asked ("auto", "fp32", "bf16"): TF32 follows it
    compile: bool = False  # [train] compile: torch.compile asked for (checked against eager on the first batch)
    threads: int | None = None  # torch's CPU threads in each training process
    allocator: str | None = None  # what runtime/allocator.py did to the host allocator

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def describe(self) -> str:
        """``bf16 autocast, channels-last (auto: CPU has AMX bf16)`` - the run header's words."""
        precision = "bf16 autocast" if self.precision == "bf16" else "fp32"
        layout = "channels-last" if self.channels_last else "contiguous (NCHW)"
        return f"{precision}, {layout} ({self.reason})"


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> 'bf16' where the device has native bf16 matrix units, else 'fp32'; others as given."""
    if precision == "auto":
        return "bf16" if bf16_native(device)[0] else "fp32"
    return precision


def uses_channels_last(device: torch.device, precision: str, has_conv: bool) -> bool:
    """Channels-last for conv models on a CPU with oneDNN, and on CUDA in bf16."""
    if not has_conv:
        return False
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available()
    return device.type == "cuda" and precision == "bf16"


def has_convolutions(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())


def plan_execution(precision: str, device: torch.device, model: torch.nn.Module | None = None) -> Execution:
    """The precision and memory format a model runs in on ``device`` (``precision`` as in [train])."""
    native, why = bf16_native(device)
    chosen = resolve_precision(precision, device)
    if precision == "auto":
        reason = f"auto: {why}"
    elif chosen == "bf16" and not native:
        reason = f"as set; {why}, so bf16 may be slower than fp32 here"
    else:
        reason = "as set"
    channels_last = uses_channels_last(device, chosen, model is not None and has_convolutions(model))
    return Execution(chosen, channels_last, reason)


def decide_execution(
    train: TrainSpec,
    device: torch.device,
    model: torch.nn.Module | None = None,
    nproc: int = 1,
    threads: int | None = None,
) -> Execution:
    """How a run executes: its one decision, taken when ``graphc train`` starts the run or a resume
    starts a session. Precision and memory format from the device's capabilities and the model
    (:func:`plan_execution`), the device and number of processes, torch.compile as ``[train] compile``
    asks, the CPU threads of each training process (``threads``; default: this process's) and the
    host allocator (runtime/allocator.py, tuned here if it was not yet). The run record keeps it."""
    planned = plan_execution(train.precision, device, model)
    return replace(
        planned,
        device=str(device),
        nproc=nproc,
        requested=train.precision,
        compile=bool(train.compile),
        threads=threads if threads is not None else torch.get_num_threads(),
        allocator=allocator.keep_freed_memory(),
    )


def runs_bf16_autocast(device: torch.device) -> bool:
    """Whether torch runs bf16 autocast on ``device`` at all, natively or not (every CPU does)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"


def evaluation_execution(recorded: Execution, device: torch.device) -> Execution:
    """A run's recorded execution for evaluating its model on ``device`` (graphc eval): the run's own
    precision and memory format, so that its numbers are the logged ones - fp32 where ``device``
    cannot run bf16 autocast at all."""
    if recorded.precision == "bf16" and not runs_bf16_autocast(device):
        return replace(recorded, precision="fp32", reason=f"{device.type} cannot run bf16 autocast")
    return recorded


def configure_matmul(device: torch.device, precision: str, requested: str) -> None:
    """TF32 on CUDA (process-wide): off for an explicit 'fp32', allowed for auto's fp32 (see above)."""
    if device.type != "cuda":
        return
    mode = "ieee" if (precision == "fp32" and requested == "fp32") else "tf32"
    try:  # torch >= 2.9's names for allow_tf32 (mixing the two APIs is an error there)
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
    except AttributeError:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode == "tf32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for the forward pass, or nothing for fp32."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
