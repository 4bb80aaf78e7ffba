"""Wall time of one sweep trained three ways, side by side: `graphc train` without --jobs (one
run after another in one process, all the cores), `--jobs 1` (one child process at a time, all
the cores) and `--jobs K` (K children at once, cores // K threads each).

Every way trains the same runs (SPEC x --seeds, the same flags) into a fresh output folder, so
nothing is skipped; the figures include each child's start (importing torch) and data loading.
On a busy machine compare the ratios, and run it twice. Run::

    python benchmarks/sweep_scaling.py [--spec tests/specs/tiny_train.toml] [--seeds 4] [--jobs 2]
        [--epochs 2] [--limit-train 1024]
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {shlex.join(argv)}\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="tests/specs/tiny_train.toml")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit-train", type=int, default=1024)
    args = parser.parse_args()
    flags = [
        "--seeds",
        str(args.seeds),
        "--epochs",
        str(args.epochs),
        "--limit-train",
        str(args.limit_train),
        "--device",
        "cpu",
        "--quiet",
    ]
    ways = [
        ("no --jobs (in process)", []),
        ("--jobs 1", ["--jobs", "1"]),
        (f"--jobs {args.jobs}", ["--jobs", str(args.jobs)]),
    ]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"sweep: {args.spec} x {args.seeds} seeds, {args.epochs} epoch(s) on {args.limit_train} images; {cores} CPU cores"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="graphc-sweep-scaling-") as tmp:
        for i, (name, extra) in enumerate(ways):
            argv = [sys.executable, "-m", "graphc", "train", args.spec, *flags, "--out", f"{tmp}/{i}", *extra]
            seconds = timed(argv)
            results.append((name, seconds))
            print(f"  {name:<24} {seconds:7.1f} s   $ {shlex.join(['graphc', *argv[3:]])}", flush=True)
    base = results[1][1]
    print("ratio to --jobs 1 (higher: faster): " + ", ".join(f"{name} {base / s:.2f}x" for name, s in results))


if __name__ == "__main__":
    main()
