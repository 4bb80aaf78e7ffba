"""Seconds of ``graphc check``, ``graphc render --collapse`` and a short ``graphc train`` on long chains.

The spec is input -> fc_block (4 units) x (N - 3) -> heads 'fine' and 'coarse' (synthetic data,
8x8 images), written out node by node. For each N the script times, in this process:

- check:  load_spec + build_graph (what ``graphc check`` does),
- render: ``graphc render --collapse`` to an SVG (the chain collapses to one box),
- train:  ``graphc train --epochs 1 --limit-train 64 --limit-val 16 --batch-size 64 --no-test``
  (compile, one training step, one validation pass, the run's files),

then prints each phase's time and its ratio to the previous N's time next to the node ratio (2.0
between these sizes): a phase that is linear in N has a time ratio near 2, a quadratic one near 4.
The issue that asked for this measured check 7 s, render --collapse 69 s and train 113 s at
60,000 nodes. Run::

    python benchmarks/large_chain.py [--nodes 7500 15000 30000 60000] [--phases check render train]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PHASES = ("check", "render", "train")


def chain_spec(nodes: int, width: int = 4) -> str:
    """A valid spec of exactly ``nodes`` nodes: input, a chain of ``nodes - 3`` fc_blocks, two heads."""
    lines = [f'name = "chain{nodes}"', "", "[[nodes]]", 'name = "image"', 'kind = "input"', "shape = [3, 8, 8]", ""]
    previous = "image"
    for i in range(nodes - 3):
        lines += [
            "[[nodes]]",
            f'name = "fc{i}"',
            'kind = "fc_block"',
            f'input = "{previous}"',
            f"units = [{width}]",
            "",
        ]
        previous = f"fc{i}"
    for task in ("fine", "coarse"):
        lines += [
            "[[nodes]]",
            f'name = "{task}_head"',
            'kind = "head"',
            f'input = "{previous}"',
            f'task = "{task}"',
            "",
        ]
    lines += [
        "[data]",
        'dataset = "synthetic"',
        "synthetic = { classes = 4, coarse_classes = 2, train_size = 100, test_size = 20 }",
        "",
        "[train]",
        'device = "cpu"',
        'precision = "fp32"',
        "",
    ]
    return "\n".join(lines)


def time_phase(phase: str, spec: Path, folder: Path) -> float:
    """Seconds of one phase on the spec file ``spec``, run through the CLI in this process."""
    from typer.testing import CliRunner

    import graphc
    from graphc.cli import app

    start = time.perf_counter()
    if phase == "check":
        graphc.build_graph(graphc.load_spec(spec))
        return time.perf_counter() - start
    if phase == "render":
        args = ["render", str(spec), "--collapse", "-o", str(folder / f"{spec.stem}.svg")]
    else:
        args = [
            "train",
            str(spec),
            "--epochs",
            "1",
            "--limit-train",
            "64",
            "--limit-val",
            "16",
            "--batch-size",
            "64",
            "--no-test",
            "--quiet",
            "--out",
            str(folder / "runs"),
        ]
    with contextlib.redirect_stderr(io.StringIO()):
        result = CliRunner().invoke(app, args)
    seconds = time.perf_counter() - start
    if result.exit_code != 0:
        raise SystemExit(f"{phase} failed (exit {result.exit_code}): {result.output[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[7500, 15000, 30000, 60000])
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    header = f"{'nodes':>7}" + "".join(f" {p + ' s':>10} {'ratio':>6}" for p in args.phases) + f" {'node ratio':>11}"
    print(header, flush=True)
    previous: tuple[int, dict[str, float]] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for n in sorted(args.nodes):
            spec = folder / f"chain{n}.toml"
            spec.write_text(chain_spec(n))
            times = {phase: time_phase(phase, spec, folder) for phase in args.phases}
            row = f"{n:>7}"
            for phase in args.phases:
                ratio = f"{times[phase] / previous[1][phase]:.1f}" if previous else "-"
                row += f" {times[phase]:>10.2f} {ratio:>6}"
            row += f" {n / previous[0] if previous else 1.0:>11.1f}"
            print(row, flush=True)
            previous = (n, times)


if __name__ == "__main__":
    main()
