"""torch.compile vs eager for graphc's training step: does ``[train] compile = true`` pay here?

On shared_reuse_coarse (batch 100 by default) it measures the training step eager in the
execution ``precision = "auto"`` picks and in the other formats, and compiled (each compiled
model first checked against eager on the first batch, as ``graphc train --compile`` does; one
that fails or disagrees is reported and skipped), interleaved, best of ``--repeats``, plus the
time compiling costs (checking + the first training step). The last line is the ratio of the
fastest compiled configuration to auto's eager step. Run::

    python benchmarks/compile_vs_eager.py [--batch 100] [--seconds 4] [--repeats 2] [--threads N]
"""

from __future__ import annotations

import time

import torch
from common import auto_bench, step_options

from graphc.runtime.bench import machine, rate


def main() -> None:
    args = step_options(__doc__, seconds=4.0, repeats=2, device=False).parse_args()  # torch.compile on the CPU
    _, bench, auto = auto_bench(args)
    cpu = bench.device
    configs = [(auto.precision, auto.channels_last, False), (auto.precision, not auto.channels_last, False)]
    configs += [(p, cl, True) for p in ("bf16", "fp32") for cl in (True, False)]
    best: dict[tuple, float | None] = dict.fromkeys(configs, 0.0)
    compile_s: dict[tuple, float] = {}
    for _ in range(args.repeats):
        for config in configs:
            if best[config] is None:
                continue
            started = time.perf_counter()
            bench.use(*config)
            if config[2] and bench.run.compiled is None:
                best[config] = None  # failed or disagreed: the note below says which
                continue
            if config[2] and config not in compile_s:
                bench.step()
                compile_s[config] = time.perf_counter() - started
            best[config] = max(best[config], rate(bench.step, args.batch, args.seconds, cpu))
    info = machine(cpu)
    print(
        f"{bench.graph.name}, batch {args.batch}, {args.threads} threads, best of {args.repeats} x {args.seconds:g} s; "
        f"{info['device_name']} ({', '.join(info['cpu_flags'])}), torch {torch.__version__}"
    )
    notes = bench.run.console.file.getvalue().strip()
    if notes:
        print(notes)
    base = best[configs[0]]
    for (precision, channels_last, compiled), value in best.items():
        name = f"{'compiled' if compiled else 'eager':<9} {precision} {'channels-last' if channels_last else 'contiguous':<14}"
        extra = (
            f"  (compiling: {compile_s[(precision, channels_last, compiled)]:.0f} s)"
            if (precision, channels_last, compiled) in compile_s
            else ""
        )
        shown = "   fell back" if value is None else f"{value:>9.1f} img/s {value / base:>6.2f}x auto eager"
        print(f"{name} {shown}{extra}")
    fastest = max((v for (p, cl, c), v in best.items() if c and v), default=None)
    print(
        f"ratio fastest compiled / auto eager ({auto.describe()}): "
        + (f"{fastest / base:.2f}" if fastest else "no compiled configuration ran")
    )


if __name__ == "__main__":
    main()
