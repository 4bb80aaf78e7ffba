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

import torch
from common import auto_bench, step_options

from graphc.runtime.bench import machine, rate
from graphc.runtime.data.augment import make_augment, to_float


def main() -> None:
    args = step_options(__doc__, seconds=3.0, repeats=3).parse_args()
    spec, bench, auto = auto_bench(args)
    device = bench.device
    bench.use(auto.precision, auto.channels_last, False)
    augment = make_augment(bench.spec.data.augment)
    images = (bench.pixels() * 255).to(torch.uint8).to(device)
    generator = torch.Generator().manual_seed(0)
    best = {"augment": 0.0, "train": 0.0}
    for _ in range(args.repeats):
        best["augment"] = max(
            best["augment"], rate(lambda: augment(to_float(images, None), generator), args.batch, args.seconds, device)
        )
        best["train"] = max(best["train"], rate(bench.step, args.batch, args.seconds, device))
    info = machine(device)
    print(
        f"{bench.graph.name}, batch {args.batch}, {args.threads} threads, best of {args.repeats} x {args.seconds:g} s; "
        f"{info['device_name']} ({', '.join(info['cpu_flags'])})"
    )
    print(f"{spec.data.augment.preset} augmentation: {best['augment']:,.1f} img/s")
    print(f"training step ({auto.describe()}): {best['train']:,.1f} img/s")
    print(f"ratio augmentation / training: {best['augment'] / best['train']:.2f}")


if __name__ == "__main__":
    main()
