"""A real ``graphc train`` epoch vs the bare training step, in the same process: the pipeline's cost.

The epoch is graphc.runtime.train.loop.train_epoch exactly as ``graphc train`` runs it - seeded batch
order, gathering, the spec's augmentation (keras_affine for the reference specs), scaling,
metrics accumulated on the device, progress - on synthetic images of the spec's input shape;
the bare step is the same Run's train_step on one prepared batch. Both run in the execution
``precision = "auto"`` picks here, interleaved, best of ``--repeats`` (runtime/bench.py,
Bench.pipeline). Target: the epoch at >= 0.9x the bare step. On a busy machine the two figures
drift between measurements, so on the CPU it also splits one more epoch's own time into the
training steps and the rest (augmentation, gathering, metrics, progress), measured within that
epoch - robust to load. (On a GPU that split would only time kernel launches; the ratio is the
figure there.) The last line is the ratio. Run::

    python benchmarks/pipeline_overhead.py [--spec specs/shared_reuse_coarse.toml] [--batch 100]
        [--seconds 4] [--repeats 3] [--threads N] [--device cpu]
"""

from __future__ import annotations

import io
import time

from common import auto_bench, step_options
from rich.console import Console

import graphc.runtime.train.loop as loop
from graphc.runtime.bench import Bench, machine
from graphc.runtime.train.progress import EpochProgress


def epoch_split(bench: Bench, images: int) -> tuple[float, float]:
    """(epoch seconds, seconds inside train_step) of one epoch of ``images`` (CPU: no device queue)."""
    real, inside = loop.train_step, [0.0]

    def timed(*args):
        start = time.perf_counter()
        try:
            return real(*args)
        finally:
            inside[0] += time.perf_counter() - start

    loop.train_step = timed
    try:
        start = time.perf_counter()
        loop.train_epoch(bench.run, 99, EpochProgress(Console(file=io.StringIO()), live=False))
        return time.perf_counter() - start, inside[0]
    finally:
        loop.train_step = real


def main() -> None:
    args = step_options(__doc__, seconds=4.0, repeats=3).parse_args()
    spec, bench, auto = auto_bench(args)
    device = bench.device
    result = bench.pipeline(auto, args.seconds, args.repeats)
    split = None
    if device.type == "cpu":
        spec_data = bench.spec.data.synthetic.model_copy(
            update={"train_size": int(result["epoch_images"] * 1.3) + args.batch}
        )
        loop_data = bench.spec.model_copy(update={"data": bench.spec.data.model_copy(update={"synthetic": spec_data})})
        from graphc.runtime.train.launch import load_data

        bench.run.dataset, bench.run.resident = (
            load_data(loop_data, limit_train=result["epoch_images"], limit_val=None),
            {},
        )
        split = epoch_split(bench, result["epoch_images"])
    info = machine(device)
    print(
        f"{bench.graph.name}, {spec.data.augment.preset} augmentation, batch {args.batch}, {args.threads} threads, "
        f"{auto.describe()}; best of {args.repeats}; {info['device_name']} ({', '.join(info['cpu_flags'])})"
    )
    print(f"bare training step: {result['step_images_per_s']:,.1f} img/s")
    print(f"graphc train epoch ({result['epoch_images']:,} images): {result['epoch_images_per_s']:,.1f} img/s")
    if split is not None:
        total, steps = split
        print(
            f"within one more epoch: {total:.2f} s, of which {steps:.2f} s in the training steps and "
            f"{total - steps:.3f} s ({(total - steps) / total:.1%}) in the rest (augmentation, batching, metrics, progress)"
        )
    print(f"ratio epoch / bare step: {result['ratio']:.3f}")


if __name__ == "__main__":
    main()
