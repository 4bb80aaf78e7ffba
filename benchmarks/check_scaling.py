"""Seconds of ``graphc check`` (load_spec + build_graph) on long chains of nodes.

The spec is input -> fc_block x (N - 3) -> heads 'fine' and 'coarse' (large_chain.py's)
(synthetic data), written to a temporary file and checked as ``graphc check`` does.
For each N the script prints the time and two ratios against the smallest N: of the
times and of the node counts. A check that is linear in N has the two ratios about
equal; the old per-node ``nx.descendants`` made the time ratio the square of the node
ratio (the issue measured 580 s at 20,000 nodes). ``--reference`` also times that old
per-node reachability alone, side by side, at the sizes where it finishes. Run::

    python benchmarks/check_scaling.py [--nodes 2000 5000 20000] [--reference]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import large_chain
import networkx as nx

import graphc


def chain_spec(nodes: int) -> str:
    """A valid spec of exactly ``nodes`` nodes: input, a chain of ``nodes - 3`` fc_blocks of 8 units, two heads."""
    return large_chain.chain_spec(nodes, width=8)


def time_check(path: Path) -> tuple[float, graphc.Graph]:
    start = time.perf_counter()
    graph = graphc.build_graph(graphc.load_spec(path))
    return time.perf_counter() - start, graph


def time_reference(graph: graphc.Graph) -> float:
    """The old reachability test alone: one nx.descendants per node."""
    dag = nx.DiGraph()
    dag.add_nodes_from(n.name for n in graph)
    dag.add_edges_from((i, n.name) for n in graph for i in n.inputs)
    heads = {h.name for h in graph.heads}
    start = time.perf_counter()
    for node in graph:
        if node.name not in heads:
            assert heads & nx.descendants(dag, node.name)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[2000, 5000, 20000])
    parser.add_argument("--reference", action="store_true", help="also time the old per-node nx.descendants")
    parser.add_argument("--reference-max", type=int, default=5000, help="largest N to run the reference at")
    args = parser.parse_args()
    base = None
    header = f"{'nodes':>7} {'check s':>9} {'time ratio':>11} {'node ratio':>11}"
    print(header + (f" {'old reach s':>12} {'old/new':>8}" if args.reference else ""))
    with tempfile.TemporaryDirectory() as folder:
        for n in sorted(args.nodes):
            path = Path(folder) / f"chain{n}.toml"
            path.write_text(chain_spec(n))
            seconds, graph = time_check(path)
            assert len(graph.nodes) == n
            base = base or (n, seconds)
            row = f"{n:>7} {seconds:>9.2f} {seconds / base[1]:>11.1f} {n / base[0]:>11.1f}"
            if args.reference and n <= args.reference_max:
                old = time_reference(graph)
                row += f" {old:>12.2f} {old / seconds:>8.1f}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
