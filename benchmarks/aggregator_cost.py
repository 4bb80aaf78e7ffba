"""The training step's cost with each [train] aggregator against the plain summed losses, on a
spec's own data (graphc bench --aggregator measures the same on synthetic images; this one also
runs specs whose label fields synthetic data lacks, e.g. a three-head image-folder spec).

    python benchmarks/aggregator_cost.py SPEC [--data-dir DIR | --synthetic] [--batch-size N] [--seconds S] [--repeats R]
    python benchmarks/aggregator_cost.py SPEC --jacobian K,P       # the aggregation alone, K x P

Prints one JSON object: the machine, the execution, and per method images/s, the ratio to the
summed losses and the growth of the peak resident set during its steps (graphc.runtime.bench.aggregation_cost),
measured in interleaved rounds (best of each kept), so load on a shared machine hits all alike.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import torch
from rich.console import Console

import graphc
from graphc.runtime.bench import Bench, aggregation_cost, machine
from graphc.runtime.train.launch import Overrides, apply_overrides, graph_before_data, graph_of_data, load_data
from graphc.runtime.train.loop import build_run, first_batch

METHODS = ["upgrad", "mgda", "pcgrad", "cagrad", "nash_mtl", "imtl_g", "aligned_mtl", "graddrop", "gradvac"]
METHODS += ["dualproj", "random"]


class DataBench(Bench):
    """graphc bench's Bench on the spec's own data set (the first batch of its training split)."""

    def __init__(self, spec, device: torch.device, batch_size: int, data_dir: Path | None, synthetic: bool = False):
        self.device, self.batch = device, batch_size
        dataset = "synthetic" if synthetic else None
        overrides = Overrides(batch_size=batch_size, device=str(device), data_dir=data_dir, dataset=dataset)
        self.spec = apply_overrides(spec, overrides)
        graph = graph_before_data(self.spec)
        self.dataset = load_data(self.spec, limit_train=2 * batch_size, limit_val=None)
        self.graph = graph_of_data(self.spec, self.dataset, graph)
        self.run = build_run(Path("."), self.spec, self.graph, self.dataset, device)
        self.run.console = Console(file=io.StringIO(), width=10_000)
        self.x = first_batch(self.run)
        index = torch.arange(batch_size) % len(self.dataset.train)
        self.labels = {t: self.dataset.train.labels[t][index].to(device) for t in self.run.tasks}
        self.current, self.compiled = None, {}


def aggregation_only(k: int, p: int, methods: list[str]) -> dict[str, float]:
    """CPU milliseconds of torchjd's aggregation alone (weights and update) of a random K x P
    Jacobian: the part of the step that depends on the method (best of 3 rounds of >= 0.3 s)."""
    import time
    import warnings

    from graphc.lang.spec import TrainSpec
    from graphc.runtime.train.aggregation import aggregate, make_aggregator

    warnings.filterwarnings("ignore", message=".*not DPP.*")
    jacobian = torch.randn(k, p, generator=torch.Generator().manual_seed(0))
    result = {}
    for name in methods:
        aggregator = make_aggregator(TrainSpec(aggregator={"name": name}).aggregator, k)
        aggregate(aggregator, jacobian)
        best = float("inf")
        for _ in range(3):
            start, n = time.process_time(), 0
            while n < 3 or time.process_time() - start < 0.3:
                aggregate(aggregator, jacobian)
                n += 1
            best = min(best, (time.process_time() - start) / n)
        result[name] = round(best * 1000, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("spec")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--synthetic", action="store_true", help="synthetic images, as graphc bench")
    parser.add_argument("--jacobian", metavar="K,P", help="time the aggregation alone of a random K x P Jacobian")
    parser.add_argument("--threads", type=int, help="torch threads (1: CPU time is the work itself, even under load)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.jacobian:
        k, p = (int(v) for v in args.jacobian.split(","))
        print(json.dumps({"jacobian": [k, p], "cpu_ms": aggregation_only(k, p, args.methods.split(","))}, indent=2))
        return
    spec = graphc.load_spec(args.spec)
    device = torch.device("cpu")
    bench = DataBench(spec, device, args.batch_size or spec.train.batch_size, args.data_dir, args.synthetic)
    rows = aggregation_cost(bench, args.methods.split(","), bench.run.execution, args.seconds, args.repeats)
    print(
        json.dumps(
            {
                "spec": bench.graph.name,
                "tasks": bench.run.tasks,
                "machine": machine(device),
                "batch_size": bench.batch,
                "threads": torch.get_num_threads(),
                "seconds": args.seconds,
                "repeats": args.repeats,
                "aggregation": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
