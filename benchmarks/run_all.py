"""Run every performance benchmark and regenerate BENCHMARKS.md from what they print.

Each benchmark runs in its own process (so thread settings and TensorFlow stay apart), one
after another; every section of BENCHMARKS.md gets the exact command, its output and its last
line (the ratio). The machine (CPU model and the flags that decide speed), the date and the
load average before each run are written with the figures: on a shared machine the
absolute images/s drop with load, the interleaved ratios much less. Run from the repository
root, on an otherwise idle machine, with the ``bench`` extra installed::

    python benchmarks/run_all.py [--quick] [--only NAME ...] [--out BENCHMARKS.md]

``--quick`` shortens every measurement (to check the scripts, not for figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16")

NO_AMX = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}  # oneDNN (in torch and TensorFlow) as on a CPU without AMX

# (name, title, command[, environment]); --quick replaces --seconds/--repeats
BENCHMARKS = [
    (
        "bench",
        "graphc bench: precision, memory format, torch.compile, pipeline, inference (shared_reuse_coarse, batch 100)",
        [
            "graphc",
            "bench",
            "specs/shared_reuse_coarse.toml",
            "--device",
            "cpu",
            "--compile",
            "--seconds",
            "3",
            "--repeats",
            "3",
            "--json",
        ],
    ),
    (
        "handwritten",
        "Compiled spec vs hand-written PyTorch module, same precision and memory format (target >= 0.97x)",
        [PY, "benchmarks/compiled_vs_handwritten.py", "--seconds", "3", "--repeats", "3"],
    ),
    (
        "keras-1",
        "graphc's default training step vs the original Keras model on tensorflow-cpu, 1 thread "
        "(target >= 2x with bf16 matrix units, >= 1.1x without)",
        [PY, "benchmarks/keras_vs_graphc.py", "--threads", "1", "--seconds", "3", "--repeats", "3"],
    ),
    (
        "keras-2",
        "graphc's default training step vs the original Keras model on tensorflow-cpu, 2 threads",
        [PY, "benchmarks/keras_vs_graphc.py", "--threads", "2", "--seconds", "3", "--repeats", "3"],
    ),
    (
        "keras-1-noamx",
        "The same, 1 thread, oneDNN limited to AVX-512 BF16 as on a CPU without AMX (target >= 1.1x)",
        [PY, "benchmarks/keras_vs_graphc.py", "--threads", "1", "--seconds", "3", "--repeats", "3"],
        NO_AMX,
    ),
    (
        "keras-2-noamx",
        "The same, 2 threads, oneDNN limited to AVX-512 BF16 as on a CPU without AMX",
        [PY, "benchmarks/keras_vs_graphc.py", "--threads", "2", "--seconds", "3", "--repeats", "3"],
        NO_AMX,
    ),
    (
        "keras-1-avx2",
        "The same, 1 thread, oneDNN limited to AVX2 as on an older CPU (no AVX-512, no AMX)",
        [PY, "benchmarks/keras_vs_graphc.py", "--threads", "1", "--seconds", "3", "--repeats", "3"],
        {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    ),
    (
        "onnx",
        "ONNX Runtime vs PyTorch inference, batch 1 and 256",
        [
            PY,
            "benchmarks/onnx_throughput.py",
            "--spec",
            "specs/shared_reuse_coarse.toml",
            "--batches",
            "1",
            "256",
            "--seconds",
            "2",
            "--repeats",
            "3",
            "--no-export-table",
        ],
    ),
    (
        "compile",
        "torch.compile vs eager training step (shared_reuse_coarse, batch 100): is compile worth a default?",
        [PY, "benchmarks/compile_vs_eager.py", "--seconds", "4", "--repeats", "2"],
    ),
    (
        "augment",
        "Augmentation vs training throughput (keras_affine, batch 100)",
        [PY, "benchmarks/augment_vs_training.py", "--seconds", "3", "--repeats", "3"],
    ),
    (
        "pipeline",
        "A graphc train epoch vs the bare training step, same process (target >= 0.9x)",
        [PY, "benchmarks/pipeline_overhead.py", "--seconds", "4", "--repeats", "3"],
    ),
]


def quick(command: list[str]) -> list[str]:
    out = list(command)
    for flag, value in (("--seconds", "0.3"), ("--repeats", "1")):
        if flag in out:
            out[out.index(flag) + 1] = value
    return out


def cpu() -> tuple[str, list[str]]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
        platform.processor() or platform.machine(),
    )
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return model, [f for f in FLAGS if f in flags]


def bench_summary(data: dict) -> list[str]:
    """The ratios graphc bench's JSON implies: compiled / eager, bf16 / fp32, channels-last / contiguous."""
    rows = {(r["precision"], r["memory_format"], r["compiled"]): r["images_per_s"] for r in data["training"]}
    lines = ["| training | precision | memory format | images/s |", "|---|---|---|---|"]
    for (precision, fmt, compiled), value in rows.items():
        shown = "-" if value is None else f"{value:,.1f}"
        lines.append(f"| {'compiled' if compiled else 'eager'} | {precision} | {fmt} | {shown} |")
    lines.append("")
    base = rows.get(("fp32", "contiguous", False))
    for key, value in rows.items():
        if value and base and key != ("fp32", "contiguous", False):
            lines.append(
                f"- {'compiled' if key[2] else 'eager'} {key[0]} {key[1]} / eager fp32 contiguous: {value / base:.2f}x"
            )
    for precision in ("fp32", "bf16"):
        for fmt in ("contiguous", "channels_last"):
            eager, compiled = rows.get((precision, fmt, False)), rows.get((precision, fmt, True))
            if eager and compiled:
                lines.append(f"- compiled / eager, {precision} {fmt}: {compiled / eager:.2f}x")
    lines += [
        f"- {r['precision']} {r['memory_format']} compiled: {' '.join(r['note'].split())}"
        for r in data["training"]
        if r.get("note")
    ]
    pipe = data["pipeline"]
    lines.append(
        f"- pipeline: epoch {pipe['epoch_images_per_s']:,.1f} / bare step {pipe['step_images_per_s']:,.1f} "
        f"img/s = {pipe['ratio']:.3f} ({pipe['precision']}, {pipe['memory_format']})"
    )
    for row in data["inference"]:
        if row["images_per_s"]:
            lines.append(f"- inference {row['engine']} {row['precision']}: {row['images_per_s']:,.1f} img/s")
    lines.append(
        f"- augmentation ({data['augmentation']['preset']}): {data['augmentation']['images_per_s']:,.1f} img/s"
    )
    lines.append(f"- peak memory: {data['peak_memory']['bytes'] / 2**20:,.0f} MiB ({data['peak_memory']['kind']})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Short measurements: checks the scripts, not for figures.")
    parser.add_argument("--only", nargs="+", choices=[b[0] for b in BENCHMARKS])
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    model, flags = cpu()
    sections, summary = (
        [],
        ["## Summary: the last line of each benchmark below", "", "| benchmark | result |", "|---|---|"],
    )
    for name, title, command, *environment in BENCHMARKS:
        if args.only and name not in args.only:
            continue
        extra = environment[0] if environment else {}
        command = quick(command) if args.quick else command
        load = os.getloadavg()[0]
        started = time.perf_counter()
        shown = " ".join([*(f"{k}={v}" for k, v in extra.items()), shlex.join(command).replace(PY, "python")])
        print(f"[{name}] {shown}", file=sys.stderr, flush=True)
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **extra})
        seconds = time.perf_counter() - started
        output = done.stdout.strip()
        section = [
            f"## {title}",
            "",
            f"Command (load average {load:.1f} before it, {seconds:.0f} s):",
            "",
            f"    {shown}",
            "",
        ]
        if done.returncode != 0:
            section += ["Failed:", "", "```", (done.stderr.strip() or output)[-3000:], "```", ""]
            summary.append(f"| {name} | FAILED (exit code {done.returncode}) |")
        elif name == "bench":
            lines = bench_summary(json.loads(output))
            section += lines + [""]
            summary.append(
                f"| {name} | {'; '.join(l[2:] for l in lines if l.startswith('- compiled / eager') or l.startswith('- pipeline'))} |"
            )
        else:
            section += ["```", output, "```", "", f"**{output.splitlines()[-1]}**", ""]
            summary.append(f"| {name} | {output.splitlines()[-1]} |")
        sections.append("\n".join(section))
        print(sections[-1], file=sys.stderr)
    header = TEMPLATE.format(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        model=model,
        flags=", ".join(flags) or "none",
        cores=os.cpu_count(),
        python=platform.python_version(),
        quick=" (QUICK: short measurements, not figures)" if args.quick else "",
    )
    args.out.write_text(header + "\n".join(summary) + "\n\n" + "\n".join(sections) + FOOTER, encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)


TEMPLATE = """\
# Benchmarks

Regenerated by `python benchmarks/run_all.py` on {date}{quick}.
Machine: {model}, {cores} logical CPUs; flags that decide speed: {flags}; Python {python}.
No GPU figures: **the GPU figures are unmeasured** (no GPU was available; `benchmarks/gpu_check.sh`
is the prepared script, see the end).

Every comparison measures its sides interleaved, best of several repeats, so load on the machine
hits every side alike (in one process, except graphc vs Keras: there each side has a process of
its own, since one library's idle threads would spin on the cores the other is using); read the
ratios, and the absolute images/s only on an idle machine. Each section gives the exact command and the benchmark's output; its last line is the ratio.
On a virtual machine, one configuration measured in two processes one after the other can differ
by 20% or more even when the machine is otherwise idle (seen on the 2-CPU machine these figures
come from), which is why no figure here is compared with one from another run.

"""

FOOTER = """
## What `precision = "auto"` and the memory format pick, and why

| device | auto precision | memory format (conv models) |
|---|---|---|
| CPU with AMX bf16 (Sapphire Rapids and later) | bf16 autocast | channels-last (oneDNN) |
| CPU without AMX (AVX-512 BF16 alone, AVX2, Arm) | fp32 | channels-last (oneDNN) |
| CUDA, compute capability >= 8.0 | bf16 autocast | channels-last |
| CUDA, compute capability < 8.0 | fp32 (TF32 allowed: such GPUs have none) | contiguous |
| MPS | fp32 | contiguous |

Decided from torch's capability queries (`torch.cpu.get_capabilities()["amx_bf16"]`,
`torch.backends.mkldnn.is_available()`, `torch.cuda.get_device_capability`), never from a timing
at start-up. `precision = "fp32"` is IEEE fp32: graphc turns TF32 off for CUDA matmuls and cuDNN
convolutions. `[train] compile` (torch.compile) is off by default: on the CPU measured here the
compiled step was no faster than auto's eager step (see the compile section) and compiling costs
minutes at the start of every run; in bf16 with channels-last, inductor's CPU code (torch 2.14.1)
even returned non-finite outputs, which graphc's first-batch check caught (it trains eager then).
On GPUs compile is unmeasured.

## `graphc bench --json` schema (graphc-bench/1)

    schema        "graphc-bench/1"
    date          ISO time (UTC) of the measurement
    command       the graphc bench command line
    spec          spec name
    machine       {device, device_name, torch, threads, cpu_flags: [avx2, avx512_f, avx512_bf16, amx_tile,
                   amx_bf16, amx_fp16 present], compute_capability (CUDA only)}
    batch_size, seconds, repeats
    auto          {precision, memory_format, reason}: what precision = "auto" picks on this device
    training      [{precision, memory_format, compiled, images_per_s (null if compilation fell back),
                    step_memory_bytes (CUDA: peak bytes a step allocates beyond what was resident; else null),
                    compile_s (compiled only: checking + first step), note (why a compiled row is empty)}]
    pipeline      {precision, memory_format, epoch_images, step_images_per_s, epoch_images_per_s,
                   ratio = epoch / step}
    inference     [{engine: pytorch | onnxruntime, precision, memory_format (pytorch), provider
                    (onnxruntime), batch_size, images_per_s, note}]
    augmentation  {preset, images_per_s}
    peak_memory   {kind: cuda_max_allocated | process_max_rss, bytes}

## GPU (unmeasured)

No GPU was lent for this work, so no figure above is from a GPU, and the targets (>= 60,000
training images/s at batch 100 and >= 150,000 at batch 512 for shared_reuse_coarse on one
H100/H200-class GPU, augmentation included; the six reference specs' 100-epoch recipe in
<= 10 minutes) are unmeasured. The prepared script, for a machine with a GPU and this project
installed (a carried virtual environment or wheels):

    bash benchmarks/gpu_check.sh [OUT_DIR]

runs `graphc bench` for the six reference specs at batch 100 and 512, a timed multi-epoch `graphc
train` on synthetic data, one keras_affine augmentation call and one training epoch under
`torch.cuda.set_sync_debug_mode("warn")` (benchmarks/cuda_path_check.py), then `graphc eval`, `export` and `predict` on that run,
printing every figure.

## bf16 vs fp32 accuracy on real pictures

    bash benchmarks/bf16_accuracy.sh [DATA_DIR] [EPOCHS]

trains specs/examples/cifar10_folders.toml on the CIFAR-10 pictures (/work/shared/data) with
precision bf16 and fp32, 2 seeds each, and prints `graphc report` of the four runs.
"""

if __name__ == "__main__":
    main()
