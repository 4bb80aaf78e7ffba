"""Training throughput of ``graphc train --nproc N`` and of torchrun's N processes against one process, side by side.

Each launcher and count of processes trains the same spec for the same epochs in a fresh run
directory (alternating, ``--repeats`` times); the table shows the mean training images/s of
the epochs after the first (which pays for warm-up), the whole command's wall time (process
start-up included) and the ratio to the first row. ``torchrun`` rows run
``python -m torch.distributed.run --standalone --nproc-per-node N -m graphc train ...`` with
``OMP_NUM_THREADS`` = cores // N, the threads ``--nproc N`` gives each process. Run::

    python benchmarks/nproc_throughput.py [SPEC] [--nproc 1 2] [--launchers nproc torchrun] [--epochs 5] [--repeats 2] [-- extra train flags]

e.g. ``python benchmarks/nproc_throughput.py tests/specs/tiny_train.toml --epochs 5``
(2 CPU cores: expect no gain) or ``specs/shared_conv.toml --dataset synthetic`` on GPUs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from graphc.runtime.runs import rundir as runs


def train_once(spec: Path, launcher: str, nproc: int, epochs: int, extra: list[str], out: Path) -> tuple[float, float]:
    """(mean images/s of epochs 2+, wall seconds of the whole command)."""
    train = ["train", str(spec), "--epochs", str(epochs), "--out", str(out), "--quiet", *extra]
    env = dict(os.environ)
    if launcher == "torchrun":
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(nproc),
            "-m",
            "graphc",
            *train,
        ]
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))  # as --nproc splits the threads
    else:
        command = [sys.executable, "-m", "graphc", *train, "--nproc", str(nproc)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")
    run_dir = Path(done.stdout.strip().splitlines()[-1])
    speeds = [r["images_per_s"] for r in runs.read_metrics(run_dir) if r["split"] == "train" and r["epoch"] > 1]
    return sum(speeds) / len(speeds), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", type=Path, default=Path("tests/specs/tiny_train.toml"))
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--launchers", nargs="+", choices=["nproc", "torchrun"], default=["nproc", "torchrun"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    if args.epochs < 2:
        sys.exit("--epochs must be at least 2 (the first epoch is warm-up).")
    setups = [(launcher, n) for launcher in args.launchers for n in args.nproc]
    results: dict[tuple[str, int], list[tuple[float, float]]] = {setup: [] for setup in setups}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.repeats):
            for launcher, n in setups:  # alternate, so a busy moment of the machine hits all
                results[launcher, n].append(train_once(args.spec, launcher, n, args.epochs, extra, Path(out)))
    base = sum(s for s, _ in results[setups[0]]) / args.repeats
    print(
        f"{args.spec}, {args.epochs} epochs, {args.repeats} runs each, {os.cpu_count()} CPU threads {' '.join(extra)}"
    )
    print(
        f"{'launcher':>8}  {'nproc':>5}  {'train images/s':>14}  {'wall s':>7}  {'vs ' + ' '.join(map(str, setups[0])):>12}"
    )
    for (launcher, n), measured in results.items():
        speed = sum(s for s, _ in measured) / len(measured)
        wall = sum(w for _, w in measured) / len(measured)
        print(f"{launcher:>8}  {n:>5}  {speed:>14,.0f}  {wall:>7.1f}  {speed / base:>11.2f}x")


if __name__ == "__main__":
    main()
