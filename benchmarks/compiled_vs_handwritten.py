"""The compiled spec vs the same network written by hand in PyTorch: throughput ratio.

graphc compiles a spec to a torch.fx GraphModule whose generated forward is straight-line
Python, so it should cost nothing over a hand-written nn.Module. This measures both on
shared_reuse_coarse with identical weights, side by side in one run (interleaved, best of
``--repeats``), in training (forward, loss, backward, Adam step) and inference, in each
precision (fp32, bf16 autocast) and memory format (contiguous, channels-last) - the same
execution on both sides - and prints images/s and the ratio compiled / hand-written. The
last line is the ratio in the execution ``precision = "auto"`` picks here. Run from the
repository root::

    python benchmarks/compiled_vs_handwritten.py [--batch 100] [--seconds 3] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import graphc  # noqa: E402
from graphc.runtime.allocator import keep_freed_memory  # noqa: E402
from graphc.runtime.bench import machine, rate  # noqa: E402
from graphc.runtime.device import autocast, plan_execution  # noqa: E402
from tests.test_compile import HandWrittenSharedReuseCoarse  # noqa: E402  (the test's reference model)

CPU = torch.device("cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as graphc train runs (runtime/allocator.py); the same for both sides

    compiled, _ = graphc.model_from_spec(
        Path(__file__).resolve().parent.parent / "specs/shared_reuse_coarse.toml", seed=0
    )
    handwritten = HandWrittenSharedReuseCoarse()
    handwritten.load_state_dict(dict(zip(handwritten.state_dict(), compiled.state_dict().values())))
    images = torch.rand(args.batch, 3, 32, 32)
    fine, coarse = torch.randint(0, 100, (args.batch,)), torch.randint(0, 20, (args.batch,))
    ce = torch.nn.functional.cross_entropy
    sides = {"graphc": (compiled, True), "hand-written": (handwritten, False)}
    optimizers = {name: torch.optim.Adam(model.parameters(), lr=1e-9) for name, (model, _) in sides.items()}

    def step_of(name: str, mode: str, precision: str, fmt: torch.memory_format):
        model, as_dict = sides[name]
        x = images.contiguous(memory_format=fmt)

        def prepare():
            model.to(memory_format=fmt)  # conv weights only; the same on both sides
            model.train(mode == "train")

        def train():
            with autocast(CPU, precision):
                out = model(x)
            f, c = (out["fine"], out["coarse"]) if as_dict else out
            loss = 2.0 * ce(f.float(), fine) + ce(c.float(), coarse)
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()

        def infer():
            with torch.inference_mode(), autocast(CPU, precision):
                model(x)

        return prepare, train if mode == "train" else infer

    executions = [(p, f) for p in ("fp32", "bf16") for f in (torch.contiguous_format, torch.channels_last)]
    results: dict[tuple, float] = {}
    for _ in range(args.repeats):
        for mode in ("train", "inference"):
            for precision, fmt in executions:
                for name in sides:  # alternate, so load drift hits both
                    prepare, step = step_of(name, mode, precision, fmt)
                    prepare()
                    key = (mode, precision, fmt, name)
                    results[key] = max(results.get(key, 0.0), rate(step, args.batch, args.seconds, CPU))

    info = machine(CPU)
    print(
        f"shared_reuse_coarse, batch {args.batch}, {args.threads} threads, best of {args.repeats} x {args.seconds:g} s; "
        f"{info['device_name']} ({', '.join(info['cpu_flags'])}), torch {torch.__version__}"
    )
    print(f"{'mode':<10} {'precision':<9} {'format':<14} {'graphc img/s':>13} {'hand-written img/s':>19} {'ratio':>7}")
    for mode in ("train", "inference"):
        for precision, fmt in executions:
            ours, theirs = results[mode, precision, fmt, "graphc"], results[mode, precision, fmt, "hand-written"]
            name = "channels_last" if fmt == torch.channels_last else "contiguous"
            print(f"{mode:<10} {precision:<9} {name:<14} {ours:>13.1f} {theirs:>19.1f} {ours / theirs:>7.3f}")
    auto = plan_execution("auto", CPU, compiled)
    fmt = auto.memory_format
    train = results["train", auto.precision, fmt, "graphc"] / results["train", auto.precision, fmt, "hand-written"]
    infer = (
        results["inference", auto.precision, fmt, "graphc"] / results["inference", auto.precision, fmt, "hand-written"]
    )
    print(
        f"ratio graphc / hand-written in auto's execution ({auto.describe()}): train {train:.3f}, inference {infer:.3f}"
    )


if __name__ == "__main__":
    main()
