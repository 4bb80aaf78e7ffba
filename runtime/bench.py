"""``graphc bench SPEC``: how fast a spec trains and predicts on this machine, to size a sweep.

On synthetic images of the spec's input shape (so no data set is needed) it measures

- **training**: images/s of the training step (forward, loss, backward, optimiser and schedule
  step) in each precision the device runs natively (fp32, and bf16 where the device has bf16
  matrix units: AMX, Ampere or later; ``--precision all`` adds emulated bf16, ``skipped`` says what
  was left out and why), each memory format that applies, eager and (with ``--compile``)
  torch.compile;
- **pipeline**: a real ``graphc train`` epoch (batching, augmentation, metrics, progress) against
  the bare step in the same process and the same execution; the ratio is the pipeline's cost;
- **inference**: images/s of the eval-mode forward in PyTorch (each precision) and, with
  ``--onnx``, ONNX Runtime (the fp32 graph ``graphc export`` writes), at the bench batch size;
- **augmentation**: images/s of the spec's augmentation alone;
- **peak memory**: the process's peak (CUDA: most bytes allocated; CPU: peak resident set).

Each figure is images/s over at least ``seconds`` of work after warm-up steps. Training figures
are measured in interleaved rounds (every configuration once per round, ``repeats`` rounds,
the best of each kept), so load on a shared machine hits all of them alike: compare ratios.
One model serves every configuration (switching its memory format and optimiser), so the
bench needs little more memory than one training run. ``to_json`` is the ``--json`` form;
its schema (``SCHEMA``) is documented in BENCHMARKS.md.
"""

from __future__ import annotations

import io
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

import graphc
from graphc.errors import UsageError
from graphc.lang.spec import Spec
from graphc.runtime import allocator
from graphc.runtime.data.augment import make_augment, to_float
from graphc.runtime.device import (
    PRECISIONS,
    Execution,
    autocast,
    bf16_native,
    decide_execution,
    has_convolutions,
    plan_execution,
    runs_bf16_autocast,
    uses_channels_last,
)
from graphc.runtime.train.launch import (
    Overrides,
    apply_overrides,
    environment,
    graph_before_data,
    graph_of_data,
    load_data,
)
from graphc.runtime.train.loop import (
    build_run,
    compile_model,
    first_batch,
    placed_split,
    steps_per_epoch,
    train_epoch,
    train_step,
)
from graphc.runtime.train.optim import make_optimizer, make_scheduler
from graphc.runtime.train.progress import EpochProgress

SCHEMA = "graphc-bench/1"
WARMUP_STEPS = 2
MAX_EPOCH_IMAGES = 200_000  # the synthetic epoch of the pipeline figure is sized from the step rate, up to this
MIN_EPOCH_STEPS = 5  # and at least this many batches, so that what an epoch does once weighs as in a real one


def machine(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on: the device's name and the capabilities that decide speed."""
    info: dict[str, Any] = {
        "device": str(device),
        "device_name": environment(device)["device_name"],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "host_allocator": allocator.state(),
    }
    capabilities = torch.cpu.get_capabilities()
    info["cpu_flags"] = sorted(
        k
        for k in ("avx2", "avx512_f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_fp16")
        if capabilities.get(k) is True
    )
    if device.type == "cuda":
        info["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return info


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def rate(step: Callable[[], Any], batch: int, seconds: float, device: torch.device) -> float:
    """Images/s of ``step`` (one batch each) over at least ``seconds``, after warm-up steps."""
    for _ in range(WARMUP_STEPS):
        step()
    synchronize(device)
    count, start = 0, time.perf_counter()
    while True:
        step()
        count += 1
        if count % 4 == 0 or device.type == "cpu":  # on a GPU, check the clock without a sync each step
            synchronize(device)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return count * batch / elapsed


def precisions_to_measure(device: torch.device, precision: str | None) -> list[str]:
    """The precisions ``--precision`` measures (see :func:`precision_plan`)."""
    return precision_plan(device, precision)[0]


def precision_plan(device: torch.device, precision: str | None) -> tuple[list[str], list[dict]]:
    """``(precisions to measure, [{precision, reason} skipped]``. --precision P: just P; ``all``: fp32
    and bf16 wherever torch runs bf16 autocast, natively or emulated; default (None, ``native``): the
    precisions the device runs natively - fp32, and bf16 where it has bf16 matrix units (auto's choice
    then) - so a CPU without AMX measures fp32 only, and says why it skipped bf16."""
    if precision not in (None, "all", "native"):
        if precision not in PRECISIONS:
            raise UsageError(
                f"--precision: unknown precision '{precision}'; expected native (the default), auto, fp32, bf16 or all."
            )
        return [plan_execution(precision, device).precision], []
    emulated = ["bf16"] if runs_bf16_autocast(device) else []
    if precision == "all" or bf16_native(device)[0]:
        return ["fp32", *emulated], []
    skipped = [
        {
            "precision": p,
            "reason": f"{bf16_native(device)[1]}: bf16 would be emulated, slower than fp32 "
            "(auto trains in fp32 here); --precision all measures it",
        }
        for p in emulated
    ]
    return ["fp32"], skipped


class Bench:
    """One model and its optimiser, switched between the configurations being measured."""

    def __init__(self, spec: Spec, device: torch.device, batch_size: int):
        self.device, self.batch = device, batch_size
        self.spec = apply_overrides(spec, Overrides(dataset="synthetic", batch_size=batch_size, device=str(device)))
        graph = graph_before_data(self.spec)  # built once, as a run builds it
        self.dataset = load_data(self.spec, limit_train=max(2 * batch_size, 2), limit_val=None)
        self.graph = graph_of_data(self.spec, self.dataset, graph)
        self.run = build_run(Path("."), self.spec, self.graph, self.dataset, device)  # its execution: decide_execution
        self.run.console = Console(file=io.StringIO(), width=10_000)  # compile notes go to the report, unwrapped
        self.x = first_batch(self.run)
        if len(self.x) < batch_size:  # tiny synthetic splits: repeat images to a full batch
            self.x = self.x.repeat((batch_size + len(self.x) - 1) // len(self.x), 1, 1, 1)[:batch_size]
        index = torch.arange(batch_size) % len(self.dataset.train)
        self.labels = {t: self.dataset.train.labels[t][index].to(device) for t in self.run.tasks}
        self.current: tuple | None = None
        self.compiled: dict[str, Callable] = {}

    @property
    def has_conv(self) -> bool:
        return has_convolutions(self.run.model)

    def use(self, precision: str, channels_last: bool, compiled: bool) -> None:
        """Switch the model to a configuration (the bench measures each in turn: the run's execution
        with another precision and memory format), with a fresh optimiser (its state in the new format)."""
        if self.current == (precision, channels_last, compiled):
            return
        run = self.run
        run.execution = replace(run.execution, precision=precision, channels_last=channels_last, reason="bench")
        run.model.to(memory_format=run.execution.memory_format)
        run.optimizer = make_optimizer(run.model.parameters(), self.spec.train)
        run.scheduler = make_scheduler(run.optimizer, self.spec.train, 10**9)
        run.compiled, run.compile_proven = None, False
        if compiled:
            key = f"{precision}/{channels_last}"
            if key not in self.compiled:
                compile_model(run, self.x)
                self.compiled[key] = run.compiled
            run.compiled = self.compiled[key]
        self.current = (precision, channels_last, compiled)

    def step(self) -> None:
        train_step(self.run, self.x, self.labels)

    def training(self, configs: list[dict], seconds: float, repeats: int) -> list[dict]:
        for config in configs:
            config.update(images_per_s=0.0, step_memory_bytes=None)
        for _ in range(repeats):
            for config in configs:
                started, said = time.perf_counter(), len(self.run.console.file.getvalue())
                self.use(config["precision"], config["memory_format"] == "channels_last", config["compiled"])
                if config["compiled"] and self.run.compiled is None:  # why: what compiling this one said
                    config["images_per_s"] = None
                    config["note"] = config.get("note") or self.run.console.file.getvalue()[said:].strip()
                    continue
                if self.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(self.device)
                    before = torch.cuda.memory_allocated(self.device)
                if config["compiled"] and "compile_s" not in config:  # checking it, and its first training step
                    self.step()
                    synchronize(self.device)
                    config["compile_s"] = time.perf_counter() - started
                measured = rate(self.step, self.batch, seconds, self.device)
                config["images_per_s"] = max(config["images_per_s"], measured)
                if self.device.type == "cuda":
                    config["step_memory_bytes"] = torch.cuda.max_memory_allocated(self.device) - before
        return configs

    def pipeline(self, execution: Execution, seconds: float, repeats: int, step_rate: float | None = None) -> dict:
        """A real training epoch against the bare step, same run and execution, interleaved.
        ``step_rate``: the step's images/s measured already (sizes the epoch), else measured here."""
        self.use(execution.precision, execution.channels_last, False)
        if not step_rate:
            step_rate = rate(self.step, self.batch, seconds, self.device)
        images = int(min(MAX_EPOCH_IMAGES, max(MIN_EPOCH_STEPS * self.batch, step_rate * seconds)))
        images = (images // self.batch) * self.batch  # full batches, as in a data set of whole batches
        train = self.spec.data.synthetic.model_copy(
            update={"train_size": int(images / (1 - self.spec.data.val_fraction)) + self.batch}
        )
        spec = self.spec.model_copy(update={"data": self.spec.data.model_copy(update={"synthetic": train})})
        dataset = load_data(spec, limit_train=images, limit_val=None)
        self.run.dataset, self.run.resident = dataset, {}  # placed_split places it afresh
        progress = EpochProgress(Console(file=io.StringIO()), live=False)
        best_step, best_epoch = 0.0, 0.0
        placed_split(self.run, "train", dataset.train)  # placed before the timed epochs, as a run's first epoch does
        for repeat in range(repeats):
            best_step = max(best_step, rate(self.step, self.batch, seconds, self.device))
            best_epoch = max(best_epoch, train_epoch(self.run, repeat + 1, progress)[1])
        self.run.dataset, self.run.resident = self.dataset, {}
        return {
            "precision": execution.precision,
            "memory_format": "channels_last" if execution.channels_last else "contiguous",
            "epoch_images": steps_per_epoch(len(dataset.train), self.batch) * self.batch,
            "step_images_per_s": best_step,
            "epoch_images_per_s": best_epoch,
            "ratio": best_epoch / best_step,
        }

    def inference(self, precisions: list[str], seconds: float, repeats: int, onnx: bool) -> list[dict]:
        model = self.run.model.eval()
        results = []
        try:
            sides: list[tuple[dict, Callable[[], Any], torch.memory_format | None]] = []
            for precision in precisions:  # each in the memory format a run would use
                channels_last = uses_channels_last(self.device, precision, self.has_conv)
                fmt = torch.channels_last if channels_last else torch.contiguous_format
                x = self.x.contiguous(memory_format=fmt)

                def forward(x=x, precision=precision):
                    with torch.inference_mode(), autocast(self.device, precision):
                        model(x)

                entry = {
                    "engine": "pytorch",
                    "precision": precision,
                    "memory_format": "channels_last" if channels_last else "contiguous",
                    "batch_size": self.batch,
                }
                sides.append((entry, forward, fmt))
            if onnx:
                session = self.onnx_session()
                if isinstance(session, str):
                    results.append(
                        {
                            "engine": "onnxruntime",
                            "precision": "fp32",
                            "batch_size": self.batch,
                            "images_per_s": None,
                            "note": session,
                        }
                    )
                else:
                    feed = {session.get_inputs()[0].name: self.pixels().cpu().numpy()}
                    provider = session.get_providers()[0]
                    sides.append(
                        (
                            {
                                "engine": "onnxruntime",
                                "precision": "fp32",
                                "provider": provider,
                                "batch_size": self.batch,
                            },
                            lambda: session.run(None, feed),
                            None,
                        )
                    )
            for entry, _, _ in sides:
                entry["images_per_s"] = 0.0
            for _ in range(repeats):  # interleaved, like training
                for entry, forward, fmt in sides:
                    if fmt is not None:
                        model.to(memory_format=fmt)
                    device = self.device if entry["engine"] == "pytorch" else torch.device("cpu")
                    entry["images_per_s"] = max(entry["images_per_s"], rate(forward, self.batch, seconds, device))
            results = [entry for entry, _, _ in sides] + results
        finally:
            model.train()
            self.current = None  # the model's memory format may have changed
        return results

    def pixels(self) -> torch.Tensor:
        """[0, 1] images as a deployment feeds them (the exported graph normalises inside)."""
        return torch.rand(self.batch, *self.graph.input.shape, generator=torch.Generator().manual_seed(0))

    def onnx_session(self):
        """An ONNX Runtime session of the model's fp32 export, or why there is none."""
        try:
            import onnxruntime as ort

            from graphc.backends.onnx import DeployedModel, to_onnx
        except ImportError as exc:
            return f"onnxruntime is not installed ({exc.name})"
        normalize = self.spec.data.normalize.model_dump() if self.spec.data.normalize is not None else None
        cpu_model = graphc.compile_graph(self.graph, seed=0)
        cpu_model.load_state_dict({k: v.cpu() for k, v in self.run.model.state_dict().items()})
        proto = to_onnx(DeployedModel(cpu_model.eval(), self.graph.tasks, normalize).eval(), self.graph)
        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        if self.device.type == "cpu":
            options.intra_op_num_threads = torch.get_num_threads()  # the same threads as PyTorch's side
        return ort.InferenceSession(proto.SerializeToString(), options, providers=providers)

    def augmentation(self, seconds: float) -> dict:
        augment = make_augment(self.spec.data.augment)
        images = (self.pixels() * 255).to(torch.uint8).to(self.device)
        generator = torch.Generator().manual_seed(0)
        return {
            "preset": self.spec.data.augment.preset,
            "images_per_s": rate(lambda: augment(to_float(images, None), generator), self.batch, seconds, self.device),
        }


def aggregation_cost(bench: Bench, names: list[str], execution: Execution, seconds: float, repeats: int) -> list[dict]:
    """``graphc bench --aggregator NAME``: the training step with each ``[train] aggregator`` against the
    plain summed losses ("sum"), in the run's execution, in interleaved rounds (best of each kept), and
    the memory a step needs beyond what was resident (CUDA: bytes allocated; Linux CPU: growth of the
    peak resident set after resetting it, an upper bound of what the method adds)."""
    from typing import get_args

    from graphc.lang.spec import AggregatorSpec, TrainSpec
    from graphc.runtime.train.aggregation import make_aggregation

    known = [m.model_fields["name"].annotation.__args__[0] for m in get_args(get_args(AggregatorSpec)[0])]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"--aggregator {unknown[0]!r} is not an aggregator; choose from {', '.join(known)}.")
    bench.use(execution.precision, execution.channels_last, False)
    run, spec = bench.run, bench.spec
    methods = {}
    for name in ["sum", *names]:
        if name == "sum":
            methods[name] = None
            continue
        train = TrainSpec.model_validate({**spec.train.model_dump(), "aggregator": {"name": name}})
        methods[name] = make_aggregation(
            spec.model_copy(update={"train": train}), bench.graph, run.model, run.tasks, run.world
        )
    rows = {
        n: {"aggregator": n, "images_per_s": 0.0, "cpu_s_per_step": None, "step_memory_bytes": None} for n in methods
    }
    try:
        for _ in range(repeats):
            for name, aggregation in methods.items():
                run.aggregation = aggregation
                bench.step()  # warm-up (first solve, first allocation)
                before = _resident_reset(bench.device)
                images_per_s, cpu = _timed(bench.step, bench.batch, seconds, bench.device)
                row = rows[name]
                row["images_per_s"] = max(row["images_per_s"], images_per_s)
                row["cpu_s_per_step"] = cpu if row["cpu_s_per_step"] is None else min(row["cpu_s_per_step"], cpu)
                grown = _resident_growth(bench.device, before)
                if grown is not None:
                    rows[name]["step_memory_bytes"] = max(rows[name]["step_memory_bytes"] or 0, grown)
    finally:
        run.aggregation = None
    base, base_cpu = rows["sum"]["images_per_s"], rows["sum"]["cpu_s_per_step"]
    for row in rows.values():
        row.update(
            precision=execution.precision,
            memory_format="channels_last" if execution.channels_last else "contiguous",
            relative=row["images_per_s"] / base if base else None,
            cpu_relative=row["cpu_s_per_step"] / base_cpu if base_cpu else None,
        )
    return list(rows.values())


def _timed(step: Callable[[], Any], batch: int, seconds: float, device: torch.device) -> tuple[float, float]:
    """``(images/s, this process's CPU seconds per step)`` over at least ``seconds`` and 2 steps. The CPU
    time barely depends on other processes' load (a busy machine stretches the wall time, not it)."""
    synchronize(device)
    wall, cpu, steps = time.perf_counter(), time.process_time(), 0
    while steps < 2 or time.perf_counter() - wall < seconds:
        step()
        steps += 1
    synchronize(device)
    return steps * batch / (time.perf_counter() - wall), (time.process_time() - cpu) / steps


def _resident_reset(device: torch.device) -> int | None:
    """Bytes in use now, with the peak counter reset (None where it cannot be)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS
        return _status_kib("VmRSS") * 1024
    except OSError:
        return None


def _resident_growth(device: torch.device, before: int | None) -> int | None:
    if before is None:
        return None
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) - before
    return max(0, _status_kib("VmHWM") * 1024 - before)


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise OSError(f"no {key} in /proc/self/status")


def step_rate(training: list[dict], execution: Execution) -> float | None:
    """The eager training figure of ``execution``'s precision and memory format, if measured."""
    layout = "channels_last" if execution.channels_last else "contiguous"
    for row in training:
        if (row["precision"], row["memory_format"], row["compiled"]) == (execution.precision, layout, False):
            return row["images_per_s"]
    return None


def peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"kind": "cuda_max_allocated", "bytes": torch.cuda.max_memory_allocated(device)}
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {"kind": "process_max_rss", "bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale}


def bench(
    spec: Spec,
    device: torch.device,
    *,
    batch_size: int | None = None,
    precision: str | None = None,
    compile: bool = False,
    seconds: float = 2.0,
    repeats: int = 2,
    onnx: bool = False,
    command: str | None = None,
    aggregators: list[str] | None = None,
) -> dict:
    """Measure ``spec`` on ``device``; returns the ``--json`` document (schema ``SCHEMA``); with
    ``aggregators`` also ``aggregation`` (:func:`aggregation_cost`)."""
    if not seconds > 0:
        raise UsageError(f"--seconds must be positive, got {seconds}.")
    if repeats < 1:
        raise UsageError(f"--repeats must be at least 1, got {repeats}.")
    batch_size = batch_size or spec.train.batch_size
    if batch_size < 2:
        raise UsageError(f"--batch-size must be at least 2 (batch norm trains on 2 or more images), got {batch_size}.")
    bench = Bench(spec, device, batch_size)
    # What a run of the spec would decide: with precision auto, and with --precision P.
    auto = decide_execution(bench.spec.train.model_copy(update={"precision": "auto"}), device, bench.run.model)
    precisions, skipped = precision_plan(device, precision)
    configs = []
    for p in precisions:
        formats = [False, True] if bench.has_conv and device.type != "mps" else [False]
        configs += [
            {"precision": p, "memory_format": "channels_last" if cl else "contiguous", "compiled": False}
            for cl in formats
        ]
        if compile:
            cl = uses_channels_last(device, p, bench.has_conv)
            configs.append({"precision": p, "memory_format": "channels_last" if cl else "contiguous", "compiled": True})
    chosen = (
        auto
        if precision in (None, "native", "all", "auto")
        else decide_execution(bench.spec.train.model_copy(update={"precision": precision}), device, bench.run.model)
    )
    extra = {"aggregation": aggregation_cost(bench, aggregators, chosen, seconds, repeats)} if aggregators else {}
    return {
        "schema": SCHEMA,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "spec": bench.graph.name,
        "machine": machine(device),
        "batch_size": batch_size,
        "seconds": seconds,
        "repeats": repeats,
        "auto": {
            "precision": auto.precision,
            "memory_format": "channels_last" if auto.channels_last else "contiguous",
            "reason": auto.reason,
        },
        "skipped": skipped,
        "training": (training := bench.training(configs, seconds, repeats)),
        "pipeline": bench.pipeline(chosen, seconds, repeats, step_rate(training, chosen)),
        "inference": bench.inference(precisions, seconds, repeats, onnx),
        "augmentation": bench.augmentation(seconds),
        "peak_memory": peak_memory(device),
        **extra,
    }
