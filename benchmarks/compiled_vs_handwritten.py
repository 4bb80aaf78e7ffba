"""The compiled spec vs the same network written by hand in PyTorch: throughput ratio.

graphc compiles a spec to a torch.fx GraphModule whose generated forward is straight-line
Python, so it should cost nothing over a hand-written nn.Module. This measures both on
shared_reuse_coarse with identical weights, side by side in one run (alternating, best of
``--repeats``), in training (forward + backward + Adam step) and inference, and prints
images/s and the ratio compiled / hand-written. Run from the repository root::

    python benchmarks/compiled_vs_handwritten.py [--batch 100] [--seconds 3] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import graphc  # noqa: E402
from tests.test_compile import HandWrittenSharedReuseCoarse  # noqa: E402  (the test's reference model; sets 1 thread)


def throughput(step, batch: int, seconds: float) -> float:
    step()  # warm-up
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        step()
        count += batch
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    compiled, _ = graphc.model_from_spec(Path(__file__).resolve().parent.parent / "specs/shared_reuse_coarse.toml", seed=0)
    handwritten = HandWrittenSharedReuseCoarse()
    handwritten.load_state_dict(dict(zip(handwritten.state_dict(), compiled.state_dict().values())))
    images = torch.rand(args.batch, 3, 32, 32)
    fine, coarse = torch.randint(0, 100, (args.batch,)), torch.randint(0, 20, (args.batch,))
    ce = torch.nn.functional.cross_entropy

    def train_step(model, optimizer, as_dict: bool):
        def step():
            out = model(images)
            f, c = (out["fine"], out["coarse"]) if as_dict else out
            loss = 2.0 * ce(f, fine) + ce(c, coarse)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step

    def infer_step(model):
        def step():
            with torch.inference_mode():
                model(images)
        return step

    sides = {"compiled (graphc)": (compiled, True), "hand-written": (handwritten, False)}
    results: dict[tuple[str, str], float] = {}
    for mode in ("train", "inference"):
        for _ in range(args.repeats):
            for name, (model, as_dict) in sides.items():  # alternate, so load drift hits both
                model.train(mode == "train")
                step = (
                    train_step(model, torch.optim.Adam(model.parameters(), lr=1e-9), as_dict)
                    if mode == "train" else infer_step(model)
                )
                rate = throughput(step, args.batch, args.seconds)
                results[mode, name] = max(results.get((mode, name), 0.0), rate)

    print(f"shared_reuse_coarse, batch {args.batch}, {args.threads} threads, best of {args.repeats} x {args.seconds:.0f} s")
    print(f"{'mode':<10} {'compiled img/s':>15} {'hand-written img/s':>19} {'ratio':>7}")
    for mode in ("train", "inference"):
        ours, theirs = results[mode, "compiled (graphc)"], results[mode, "hand-written"]
        print(f"{mode:<10} {ours:>15.1f} {theirs:>19.1f} {ours / theirs:>7.3f}")


if __name__ == "__main__":
    main()
