"""Seconds ``graphc render`` takes for a wide graph: N parallel branches from one trunk into one concat.

The spec is the worst case for edge-label placement: one rank of N boxes, 2N labelled
edges fanning out of the trunk and into the concat. Each size is timed in three
phases - build (spec -> IR), compose (layout and label placement,
``graphc.backends.diagram.draw.page``) and draw (matplotlib, ``scene.save``) - and the
last column is the total's growth against the previous size divided by the size's
growth (1.0 = linear, 2.0 = quadratic). Run::

    python benchmarks/render_scaling.py [--sizes 50 100 250 500] [--format svg]
"""

from __future__ import annotations

import argparse
import time


def wide_spec(branches: int) -> str:
    """image -> trunk -> branch_0 .. branch_{N-1} -> concat -> head, as TOML."""
    lines = [
        f'name = "wide_{branches}"',
        "",
        '[[nodes]]\nname = "image"\nkind = "input"\nshape = [3, 8, 8]',
        '[[nodes]]\nname = "trunk"\nkind = "conv_block"\ninput = "image"\nchannels = [4]\npool = "max"',
    ]
    for i in range(branches):
        lines.append(f'[[nodes]]\nname = "branch_{i}"\nkind = "fc_block"\ninput = "trunk"\nunits = [4]')
    joined = ", ".join(f'"branch_{i}"' for i in range(branches))
    lines.append(f'[[nodes]]\nname = "join"\nkind = "concat"\ninputs = [{joined}]')
    lines.append('[[nodes]]\nname = "head"\nkind = "head"\ninput = "join"\ntask = "fine"\nclasses = 100')
    return "\n\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 250, 500])
    parser.add_argument("--format", default="svg", choices=("svg", "png", "pdf"))
    args = parser.parse_args()

    from graphc import build_graph, parse_spec
    from graphc.backends.diagram.draw import page
    from graphc.backends.diagram.scene import save

    print(
        f"{'N':>6} {'nodes':>6} {'build s':>8} {'compose s':>10} {'draw s':>8} {'total s':>8} {'cpu s':>7} {'growth/size':>12}"
    )
    previous = None
    for n in args.sizes:
        start, cpu = time.perf_counter(), time.process_time()
        graph = build_graph(parse_spec(wide_spec(n)))
        built = time.perf_counter()
        scene = page([graph])
        composed = time.perf_counter()
        data = save(scene, args.format)
        drawn, cpu = time.perf_counter(), time.process_time() - cpu
        total = drawn - start
        growth = "" if previous is None else f"{(total / previous[1]) / (n / previous[0]):.2f}"
        print(
            f"{n:>6} {len(graph):>6} {built - start:>8.2f} {composed - built:>10.2f} {drawn - composed:>8.2f} "
            f"{total:>8.2f} {cpu:>7.2f} {growth:>12}   ({len(data) / 1e6:.1f} MB {args.format})",
            flush=True,
        )
        previous = (n, total)


if __name__ == "__main__":
    main()
