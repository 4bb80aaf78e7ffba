"""What the training-step benchmarks share: the repository on ``sys.path`` (they run as
``python benchmarks/NAME.py``), their command-line options, and a spec's Bench in the execution
``precision = "auto"`` picks on the device (runtime/bench.py does the measuring)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import graphc  # noqa: E402
from graphc.runtime.bench import Bench  # noqa: E402
from graphc.runtime.device import Execution, plan_execution, resolve_device  # noqa: E402


def step_options(doc: str, seconds: float, repeats: int, device: bool = True) -> argparse.ArgumentParser:
    """--spec, --batch, --seconds, --repeats, --threads (and --device), with this benchmark's defaults."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "specs" / "shared_reuse_coarse.toml")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=seconds)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    if device:
        parser.add_argument("--device", default="cpu")
    return parser


def auto_bench(args: argparse.Namespace) -> tuple[graphc.Spec, Bench, Execution]:
    """Set the threads, load ``--spec`` and build its Bench on ``--device`` (cpu when the
    benchmark has no such option); returns the spec, the Bench and what ``auto`` picks there."""
    torch.set_num_threads(args.threads)
    device = resolve_device(getattr(args, "device", "cpu"))
    spec = graphc.load_spec(args.spec)
    bench = Bench(spec, device, args.batch)
    return spec, bench, plan_execution("auto", device, bench.run.model)
