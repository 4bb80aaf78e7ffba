"""ONNX Runtime vs PyTorch eager CPU inference throughput of an exported spec, and export cost of the six specs.

Both sides run the same model (the spec's seeded initialisation, eval mode, fp32) on
the same random [0, 1] images with the same number of threads: PyTorch eager under
``torch.inference_mode()``, ONNX Runtime with the CPUExecutionProvider on the file
``graphc export`` writes. PyTorch also runs in the execution ``precision = "auto"`` picks
here (bf16 autocast and channels-last on a CPU with AMX), which ONNX Runtime's fp32 graph
does not have. Measurements alternate between the two sides, and each
figure is the best of ``--repeats`` timed runs, so a busy machine slows both alike.
Then, for each reference spec: export time (the exporter alone), the time with
onnx.checker and the parity check, and the file size. The last line is the ratio
ONNX Runtime / PyTorch fp32 at each batch size. Run::

    python benchmarks/onnx_throughput.py [--spec specs/shared_reuse_fine.toml] [--batches 1 256]
        [--seconds 2] [--repeats 3] [--threads N] [--no-export-table]
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from graphc.runtime.device import autocast, plan_execution
from graphc.runtime.export import export_onnx, load_model

SPECS = Path(__file__).resolve().parent.parent / "specs"
REFERENCE = ["independent", "shared_conv", "reuse_coarse", "reuse_fine", "shared_reuse_coarse", "shared_reuse_fine"]


def images_per_second(run, batch: int, seconds: float, repeats: int) -> float:
    """Best of ``repeats`` runs of at least ``seconds`` each (after a warm-up)."""
    for _ in range(2):
        run()
    best = 0.0
    for _ in range(repeats):
        count, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            run()
            count += 1
        best = max(best, count * batch / elapsed)
    return best


def throughput(
    spec: Path, batches: list[int], seconds: float, repeats: int, threads: int, folder: Path
) -> dict[int, float]:
    path = folder / f"{spec.stem}.onnx"
    export_onnx(spec, path)
    graph, model, _ = load_model(spec)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    print(
        f"{graph.name}: {graph.total_params:,} parameters, input {list(graph.input.shape)}; "
        f"{threads} threads each (torch {torch.__version__}, onnxruntime {ort.__version__}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f})"
    )
    cpu = torch.device("cpu")
    auto = plan_execution("auto", cpu, model)
    model_auto = copy.deepcopy(model).to(memory_format=auto.memory_format)
    print(f"PyTorch auto: {auto.describe()}")
    print(
        f"{'batch':>6} {'PyTorch fp32 img/s':>19} {'PyTorch auto img/s':>19} {'ONNX Runtime img/s':>19} {'ORT / torch fp32':>17}"
    )
    ratios = {}
    for batch in batches:
        x = torch.rand(batch, *graph.input.shape, generator=torch.Generator().manual_seed(batch))
        feed = {name: x.numpy()}

        def run_torch():
            with torch.inference_mode():
                model(x)  # noqa: B023 (called within this iteration)

        x_auto = x.contiguous(memory_format=auto.memory_format)

        def run_auto():
            with torch.inference_mode(), autocast(cpu, auto.precision):
                model_auto(x_auto)  # noqa: B023 (called within this iteration)

        def run_ort():
            session.run(None, feed)  # noqa: B023 (called within this iteration)

        eager, fast, onnx_rt = 0.0, 0.0, 0.0
        for _ in range(repeats):  # alternate, so load on the machine hits every side alike
            eager = max(eager, images_per_second(run_torch, batch, seconds, 1))
            fast = max(fast, images_per_second(run_auto, batch, seconds, 1))
            onnx_rt = max(onnx_rt, images_per_second(run_ort, batch, seconds, 1))
        print(f"{batch:>6} {eager:>19,.0f} {fast:>19,.0f} {onnx_rt:>19,.0f} {onnx_rt / eager:>16.2f}x")
        ratios[batch] = onnx_rt / eager
    return ratios


def export_table(folder: Path) -> None:
    print(f"\n{'spec':<20} {'export s':>9} {'with checks s':>14} {'size MB':>8} {'max |diff|':>11}")
    for name in REFERENCE:
        start = time.perf_counter()
        report = export_onnx(SPECS / f"{name}.toml", folder / f"{name}.onnx")
        total = time.perf_counter() - start
        diff = max(row.max_abs_diff for row in report.parity)
        print(f"{name:<20} {report.export_s:>9.1f} {total:>14.1f} {report.size_bytes / 1e6:>8.1f} {diff:>11.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=SPECS / "shared_reuse_fine.toml")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--seconds", type=float, default=2.0, help="Length of one timed run.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-export-table", action="store_true", help="Skip the six specs' export time and size.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    np.random.seed(0)
    with tempfile.TemporaryDirectory() as folder:
        ratios = throughput(args.spec, args.batches, args.seconds, args.repeats, args.threads, Path(folder))
        if not args.no_export_table:
            export_table(Path(folder))
    print("ratio ONNX Runtime / PyTorch fp32: " + ", ".join(f"batch {b} {r:.2f}" for b, r in ratios.items()))


if __name__ == "__main__":
    main()
