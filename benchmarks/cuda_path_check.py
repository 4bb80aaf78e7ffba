"""On a CUDA GPU: the training step's host-device traffic, checked for real (issue 16).

tests/runtime/test_cuda_path.py counts the copies on the CPU, with the ``meta`` device standing in for
the GPU; this script checks what only a GPU can show:

1. keras_affine and flip_crop augmentation and normalisation under
   ``torch.cuda.set_sync_debug_mode("warn")``: no synchronising call (expected: 0 warnings),
   and the same output as on the CPU from the same generator seed.
2. A second epoch of ``train_epoch`` (shared_reuse_coarse, synthetic images) with the training
   split resident on the GPU, and again streamed through pinned memory: no synchronising call
   inside the step loop (the epoch's one read-back at its end excepted), the same loss both ways.
3. Where the split went, with what ``torch.cuda.mem_get_info`` reported.

Prints one line per check and exits 1 if one fails. Without a GPU it runs part 2 on the CPU
(no sync checks) to show the script itself works::

    python benchmarks/cuda_path_check.py [--images 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from pathlib import Path

import torch
from rich.console import Console

import graphc
from graphc.lang.spec import FlipCropAugment, KerasAffineAugment, Normalize, SyntheticData
from graphc.runtime.data import batches as batching
from graphc.runtime.data.augment import make_augment, normalize_
from graphc.runtime.train import launch, loop
from graphc.runtime.train.progress import EpochProgress

ROOT = Path(__file__).resolve().parents[1]
KERAS = KerasAffineAugment(preset="keras_affine", rotation=60.0, shift=0.3, zoom=(0.7, 1.3), shear=0.3, fill="reflect")
NORMALIZE = Normalize(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])


@contextlib.contextmanager
def sync_warnings(device: torch.device):
    """Collect the warnings torch.cuda.set_sync_debug_mode("warn") gives inside the block."""
    caught: list = []
    if device.type != "cuda":
        yield caught
        return
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield caught
        finally:
            torch.cuda.set_sync_debug_mode(0)
    caught.extend(w for w in seen if "synchroniz" in str(w.message).lower())


def check(name: str, ok: bool, detail: str, failures: list[str]) -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    if not ok:
        failures.append(name)


def augmentation(device: torch.device, failures: list[str]) -> None:
    x = torch.rand(100, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for spec in (KERAS, FlipCropAugment(preset="flip_crop", padding=4)):
        augment = make_augment(spec)
        on_device = x.to(device)
        augment(on_device, torch.Generator().manual_seed(1))  # warm-up: kernels, the pinned host blocks
        normalize_(on_device.clone(), NORMALIZE)  # makes the constants once
        with sync_warnings(device) as caught:
            for _ in range(10):
                out = normalize_(augment(on_device, torch.Generator().manual_seed(2)), NORMALIZE)
        reference = normalize_(augment(x, torch.Generator().manual_seed(2)), NORMALIZE)
        difference = (out.cpu() - reference).abs().max().item()
        check(
            f"{spec.preset} + normalize_, 10 calls",
            not caught and difference < 1e-4,
            f"{len(caught)} sync warnings, max |device - cpu| = {difference:.2g}",
            failures,
        )


def epoch(device: torch.device, images: int, resident: bool, failures: list[str]) -> float:
    spec = graphc.load_spec(ROOT / "specs" / "shared_reuse_coarse.toml")
    data = spec.data.model_copy(
        update={
            "dataset": "synthetic",
            "val_fraction": 0.2,
            "synthetic": SyntheticData(train_size=images, test_size=100),
        }
    )
    spec = spec.model_copy(update={"data": data})
    dataset = launch.load_data(spec, None, None)
    graph = graphc.build_graph(spec, classes=dataset.classes)
    run = loop.build_run(Path("unused"), spec, graph, dataset, device, {})
    real_free = batching.free_memory
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        print(f"     mem_get_info: {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB")
    batching.free_memory = real_free if resident else (lambda d: None)
    progress = EpochProgress(Console(quiet=True), live=False)
    compute, read_backs = loop.Meter.compute, []

    def compute_without_warnings(self):  # the epoch's one read-back, by design
        read_backs.append(1)
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode(0)
        try:
            return compute(self)
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")

    try:
        loop.train_epoch(run, 1, progress)  # warm-up: placement, cuDNN's choice of kernels, Adam's state
        loop.Meter.compute = compute_without_warnings
        with sync_warnings(device) as caught:
            metrics, images_per_s, _ = loop.train_epoch(run, 2, progress)
    finally:
        loop.Meter.compute = compute
        batching.free_memory = real_free
    where = run.resident["train"].images.device
    expected = device if resident else torch.device("cpu")
    check(
        f"epoch 2, split {'resident' if resident else 'streamed'}",
        not caught and where == expected,
        f"{len(caught)} sync warnings in the step loop, split on {where}, loss {metrics['loss']:.5f}, "
        f"{images_per_s:,.0f} images/s",
        failures,
    )
    return metrics["loss"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="synthetic training pool (80%% train)")
    args = parser.parse_args()
    failures: list[str] = []
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU (no GPU: no sync checks)'}")
    if device.type == "cuda":
        augmentation(device, failures)
    losses = [
        epoch(device, args.images, resident, failures)
        for resident in ((True, False) if device.type == "cuda" else (False,))
    ]
    if len(losses) == 2:
        check(
            "resident vs streamed",
            abs(losses[0] - losses[1]) <= 1e-3 * abs(losses[0]),
            f"epoch-2 loss {losses[0]:.6f} vs {losses[1]:.6f}",
            failures,
        )
    print("all checks passed" if not failures else f"{len(failures)} check(s) failed: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
