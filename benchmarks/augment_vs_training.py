"""Augmentation vs training throughput: how much of a training step's time the augmentation could take.

For a spec (default shared_reuse_coarse, whose recipe is the Keras affine augmentation), on one
batch: images/s of the spec's batched augmentation alone (uint8 -> float, augment) and of the
training step in the execution ``precision = "auto"`` picks here, interleaved, best of
``--repeats``. A ratio well above 1 means augmentation is not what limits training; the
pipeline benchmark (pipeline_overhead.py) measures the whole epoch. The last line is the
ratio augmentation / training. Run::

    python benchmarks/augment_vs_training.py [--spec specs/shared_reuse_coarse.toml] [--batch 100]
        [--seconds 3] [--repeats 3] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import graphc  # noqa: E402
from runtime.bench import Bench, machine, rate  # noqa: E402
from runtime.data.augment import make_augment, to_float  # noqa: E402
from runtime.device import plan_execution, resolve_device  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "specs" / "shared_reuse_coarse.toml")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    spec = graphc.load_spec(args.spec)
    bench = Bench(spec, device, args.batch)
    auto = plan_execution("auto", device, bench.run.model)
    bench.use(auto.precision, auto.channels_last, False)
    augment = make_augment(bench.spec.data.augment)
    images = (bench.pixels() * 255).to(torch.uint8).to(device)
    generator = torch.Generator().manual_seed(0)
    best = {"augment": 0.0, "train": 0.0}
    for _ in range(args.repeats):
        best["augment"] = max(best["augment"], rate(lambda: augment(to_float(images, None), generator), args.batch, args.seconds, device))
        best["train"] = max(best["train"], rate(bench.step, args.batch, args.seconds, device))
    info = machine(device)
    print(f"{bench.graph.name}, batch {args.batch}, {args.threads} threads, best of {args.repeats} x {args.seconds:g} s; "
          f"{info['device_name']} ({', '.join(info['cpu_flags'])})")
    print(f"{spec.data.augment.preset} augmentation: {best['augment']:,.1f} img/s")
    print(f"training step ({auto.describe()}): {best['train']:,.1f} img/s")
    print(f"ratio augmentation / training: {best['augment'] / best['train']:.2f}")


if __name__ == "__main__":
    main()
