"""What gradient-conflict diagnostics cost: the same run trained without and with ``--diagnostics``,
interleaved in one process (off, on, off, on, ...), on synthetic images.

Per run it reads the training rows: ``time_s`` (the epoch's training and validation, which the
diagnostics are not part of) and ``diag/time_s`` (the diagnostics' own seconds). It prints, side
by side, the seconds per epoch without diagnostics, with them (``time_s + diag/time_s``) and the
ratio; the diagnostics cost a fixed ``DIAGNOSTIC_BATCHES`` batches per epoch (one forward pass and
one backward pass per task each), so it also prints what they would add to an epoch of
``--full-images`` training images at the measured speed. It checks that both runs end with the same
weights, bit for bit (the diagnostics must not change the training). The last line is the ratio. Run::

    python benchmarks/diagnostics_overhead.py [--spec specs/shared_reuse_coarse.toml] [--limit-train 1000]
        [--epochs 2] [--rounds 1] [--full-images 40000] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from common import ROOT
from rich.console import Console

import graphc
from graphc.runtime.runs import rundir
from graphc.runtime.runs.checkpoint import load_checkpoint
from graphc.runtime.train.diagnostics import DIAGNOSTIC_BATCHES
from graphc.runtime.train.launch import Overrides, train_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "specs" / "shared_reuse_coarse.toml")
    parser.add_argument("--limit-train", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--full-images", type=int, default=40000)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    spec = graphc.load_spec(args.spec)
    quiet = Console(stderr=True, quiet=True)
    times: dict[bool, list[float]] = {False: [], True: []}
    diag_times: list[float] = []
    speeds: list[float] = []
    last: dict[bool, Path] = {}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.rounds):
            for on in (False, True):
                overrides = Overrides(
                    dataset="synthetic",
                    epochs=args.epochs,
                    limit_train=args.limit_train,
                    limit_val=200,
                    no_test=True,
                    device=args.device,
                    diagnostics=on or None,
                )
                result = train_run(spec, spec.train.seed, overrides, out=Path(out), console=quiet, quiet=True)
                rows = [r for r in rundir.read_metrics(result.run_dir) if r["split"] == "train"]
                rows = rows[1:] if len(rows) > 1 else rows  # the first epoch warms up (allocations, oneDNN kernels)
                times[on] += [r["time_s"] for r in rows]
                if on:
                    diag_times += [r["diag/time_s"] for r in rows]
                else:
                    speeds += [r["images_per_s"] for r in rows]
                last[on] = result.run_dir
        a, b = (load_checkpoint(last[on] / "last.pt")["model"] for on in (False, True))
        same = all(torch.equal(a[k], b[k]) for k in a)
    off, on_train, extra = statistics.mean(times[False]), statistics.mean(times[True]), statistics.mean(diag_times)
    print(
        f"{spec.name} on {args.device}, synthetic images, {args.limit_train} training images per epoch, "
        f"batch {spec.train.batch_size}, {DIAGNOSTIC_BATCHES} diagnostic batches; epochs after the first, "
        f"{args.rounds} round(s)"
    )
    print(f"{'':28}{'s/epoch':>10}")
    print(f"{'without diagnostics':28}{off:10.2f}")
    print(f"{'with diagnostics':28}{on_train + extra:10.2f}   (training {on_train:.2f} + diagnostics {extra:.2f})")
    full = args.full_images / statistics.mean(speeds)
    print(
        f"an epoch of {args.full_images:,} images at {statistics.mean(speeds):.0f} img/s takes ~{full:.0f} s: "
        f"the diagnostics add {extra / full:.1%}"
    )
    print(f"same weights with and without diagnostics: {'yes' if same else 'NO'}")
    print(f"ratio with/without: {(on_train + extra) / off:.3f}")


if __name__ == "__main__":
    main()
