"""Performance choices: precision and memory format per device capability (capabilities mocked),
the run header that states them, torch.compile checked against eager with its fall-backs, and
``graphc bench --json``'s schema. No timing assertions: speed is measured in benchmarks/."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

import graphc
import graphc.runtime.device as device_module
import graphc.runtime.train.loop as training
from graphc.cli import app
from graphc.runtime.device import Execution, configure_matmul, plan_execution, resolve_precision
from graphc.runtime.runs import rundir as runs
from graphc.runtime.train.launch import load_data
from tests.conftest import TESTS, TINY_SPEC, clean_exit

runner = CliRunner()
TINY_TRAIN = TESTS / "specs" / "tiny_train.toml"
FC_ONLY = TINY_SPEC.replace(
    'kind = "conv_block"\ninput = "image"\nchannels = [4]\npool = "max"',
    'kind = "fc_block"\ninput = "image"\nunits = [8]',
)


def conv_model() -> torch.nn.Module:
    return graphc.compile_graph(graphc.build_graph(graphc.parse_spec(TINY_SPEC)), seed=0)


def fc_model() -> torch.nn.Module:
    return graphc.compile_graph(graphc.build_graph(graphc.parse_spec(FC_ONLY)), seed=0)


@pytest.fixture
def cpu_with(monkeypatch):
    """Pretend the CPU has (or lacks) AMX bf16 tiles, and oneDNN."""

    def set_cpu(amx: bool, onednn: bool = True) -> None:
        capabilities = {"amx_bf16": amx, "amx_tile": amx, "avx512_bf16": True, "architecture": "x86_64"}
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
        monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: onednn)

    return set_cpu


@pytest.fixture
def gpu_with(monkeypatch):
    """Pretend cuda:0 has the given compute capability."""

    def set_gpu(major: int, minor: int) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, minor))

    return set_gpu


# --------------------------------------------------------------------------- precision and memory format


@pytest.mark.parametrize(
    "amx, onednn, precision, channels_last, reason",
    [
        (True, True, "bf16", True, "auto: CPU has AMX bf16"),
        (False, True, "fp32", True, "auto: CPU has no AMX bf16 matrix units"),  # AVX-512 BF16 alone is not enough
        (False, False, "fp32", False, "auto: CPU has no AMX bf16 matrix units"),  # no oneDNN: no channels-last win
    ],
)
def test_auto_on_a_cpu_follows_its_bf16_matrix_units(cpu_with, amx, onednn, precision, channels_last, reason):
    cpu_with(amx, onednn)
    execution = plan_execution("auto", torch.device("cpu"), conv_model())
    assert execution == Execution(precision, channels_last, reason)
    assert resolve_precision("auto", torch.device("cpu")) == precision


@pytest.mark.parametrize(
    "capability, precision, channels_last",
    [
        ((9, 0), "bf16", True),
        ((8, 0), "bf16", True),
        ((8, 6), "bf16", True),
        ((7, 5), "fp32", False),
        ((6, 0), "fp32", False),
    ],
)
def test_auto_on_a_gpu_takes_bf16_only_from_compute_capability_8(gpu_with, capability, precision, channels_last):
    gpu_with(*capability)
    execution = plan_execution("auto", torch.device("cuda", 0), conv_model())
    assert (execution.precision, execution.channels_last) == (precision, channels_last)
    assert f"compute capability {capability[0]}.{capability[1]}" in execution.reason


def test_explicit_precision_is_kept_and_a_slow_bf16_is_named(cpu_with, gpu_with):
    cpu_with(amx=True)
    assert plan_execution("fp32", torch.device("cpu"), conv_model()) == Execution("fp32", True, "as set")
    cpu_with(amx=False)
    slow = plan_execution("bf16", torch.device("cpu"), conv_model())
    assert slow.precision == "bf16" and "may be slower than fp32" in slow.reason
    gpu_with(7, 0)
    assert plan_execution("bf16", torch.device("cuda", 0), conv_model()).channels_last  # bf16 on CUDA: NHWC


def test_models_without_convolutions_stay_contiguous(cpu_with, gpu_with):
    cpu_with(amx=True)
    assert not plan_execution("auto", torch.device("cpu"), fc_model()).channels_last
    gpu_with(9, 0)
    assert not plan_execution("auto", torch.device("cuda", 0), fc_model()).channels_last
    assert plan_execution("auto", torch.device("mps"), conv_model()) == Execution(
        "fp32", False, "auto: mps is run in fp32"
    )


@pytest.mark.skipif(not hasattr(torch.backends.cudnn, "conv"), reason="torch < 2.9 has only allow_tf32")
def test_fp32_means_ieee_fp32_on_cuda_and_auto_allows_tf32(gpu_with):
    matmul, conv = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    try:
        configure_matmul(torch.device("cuda", 0), "fp32", "fp32")
        assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == ("ieee", "ieee")
        configure_matmul(torch.device("cuda", 0), "fp32", "auto")  # pre-Ampere auto: TF32 allowed (and absent)
        assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == ("tf32", "tf32")
        configure_matmul(torch.device("cpu"), "fp32", "fp32")  # the CPU has no TF32: nothing changes
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    finally:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = matmul, conv


def test_execution_describe():
    assert (
        Execution("bf16", True, "auto: CPU has AMX bf16").describe()
        == "bf16 autocast, channels-last (auto: CPU has AMX bf16)"
    )
    assert Execution("fp32", False, "as set").describe() == "fp32, contiguous (NCHW) (as set)"


@pytest.mark.parametrize("amx", [True, False])
def test_the_run_header_and_config_state_precision_and_memory_format(cpu_with, tmp_path, amx):
    cpu_with(amx)
    result = runner.invoke(
        app,
        [
            "train",
            str(TINY_TRAIN),
            "--epochs",
            "1",
            "--limit-train",
            "64",
            "--limit-val",
            "32",
            "--out",
            str(tmp_path),
            "--quiet",
        ],
    )
    assert result.exit_code == 0 and clean_exit(result), result.output
    header = result.stderr.splitlines()[0]
    expected = (
        "bf16 autocast, channels-last (auto: CPU has AMX bf16)"
        if amx
        else "fp32, channels-last (auto: CPU has no AMX bf16 matrix units)"
    )
    assert f"on cpu in {expected}:" in header
    config = runs.read_json(Path(result.stdout.strip()) / "config.json")
    assert (config["precision"], config["memory_format"]) == ("bf16" if amx else "fp32", "channels_last")


def test_a_channels_last_run_trains_channels_last_weights_and_inputs(cpu_with):
    cpu_with(amx=False)
    run = tiny_run()
    conv = next(m for m in run.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    run.model.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    x, labels = batch_of(run)
    training.train_step(run, x, labels)
    assert seen == [True]


# --------------------------------------------------------------------------- torch.compile


def tiny_run(precision: str = "auto", compile: bool = False) -> training.Run:
    spec = graphc.load_spec(TINY_TRAIN)
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"precision": precision, "compile": compile})})
    dataset = load_data(spec, 64, 32)
    graph = graphc.build_graph(spec, classes=dataset.classes)
    run = training.build_run(Path("."), spec, graph, dataset, torch.device("cpu"), {})
    run.console = Console(file=io.StringIO(), width=300)
    return run


def batch_of(run: training.Run) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    x = training.first_batch(run)
    return x, {t: run.dataset.train.labels[t][: len(x)] for t in run.tasks}


def said(run: training.Run) -> str:
    return run.console.file.getvalue()


@pytest.mark.slow
def test_compile_failure_falls_back_to_eager(monkeypatch):
    run = tiny_run("fp32", compile=True)

    def broken(module, **kwargs):
        raise RuntimeError("InductorError: no working C++ compiler found\nlong details")

    monkeypatch.setattr(torch, "compile", broken)
    training.compile_model(run, training.first_batch(run))
    assert run.compiled is None
    assert (
        "torch.compile failed (RuntimeError: InductorError: no working C++ compiler found); training in eager mode."
        in said(run)
    )
    assert run.model.training  # left in training mode


def test_a_compiled_model_that_disagrees_with_eager_is_not_used(monkeypatch):
    run = tiny_run("fp32", compile=True)

    def off_by_one(module, **kwargs):
        return lambda x: {task: logits + 1.0 for task, logits in module(x).items()}

    monkeypatch.setattr(torch, "compile", off_by_one)
    training.compile_model(run, training.first_batch(run))
    assert run.compiled is None
    assert "differs from eager on the first batch by" in said(run) and "training in eager mode" in said(run)


@pytest.mark.slow
def test_a_failing_first_compiled_step_is_taken_in_eager_mode():
    run = tiny_run("fp32", compile=True)
    calls = []

    def fails_in_training(x):
        calls.append(len(x))
        raise RuntimeError("BackendCompilerFailed: backward")

    run.compiled = fails_in_training
    before = [p.detach().clone() for p in run.model.parameters()]
    x, labels = batch_of(run)
    outputs, total, parts = training.train_step(run, x, labels)
    assert calls == [len(x)] and run.compiled is None and torch.isfinite(total)
    assert "torch.compile failed in the first training step (RuntimeError: BackendCompilerFailed: backward)" in said(
        run
    )
    assert run.scheduler.last_epoch == 1  # exactly one optimiser (and schedule) step
    assert any(not torch.equal(a, b) for a, b in zip(before, run.model.parameters()))


@pytest.mark.slow
def test_train_compile_flag_checks_and_records_it(monkeypatch, tmp_path):
    compiled = []

    def fake_compile(module, **kwargs):  # the wiring, not the compiler (tested below, marked slow)
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    result = runner.invoke(
        app,
        [
            "train",
            str(TINY_TRAIN),
            "--epochs",
            "1",
            "--limit-train",
            "64",
            "--limit-val",
            "32",
            "--out",
            str(tmp_path),
            "--quiet",
            "--compile",
        ],
    )
    assert result.exit_code == 0 and clean_exit(result), result.output
    assert ", torch.compile:" in result.stderr.splitlines()[0]  # the header says so
    assert "torch.compile: matches eager on the first batch (relative difference 0)" in result.stderr
    assert len(compiled) == 1
    config = runs.read_json(Path(result.stdout.strip()) / "config.json")
    assert config["train"]["compile"] is True and config["overrides"]["--compile"] is True


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compiled_model_agrees_with_eager_and_trains(precision):
    """Real torch.compile (inductor, needs a C++ compiler): ~10-60 s per case on 2 busy cores."""
    run = tiny_run(precision, compile=True)
    x, labels = batch_of(run)
    training.compile_model(run, x)
    assert run.compiled is not None, said(run)
    assert "torch.compile: matches eager on the first batch" in said(run)
    run.model.eval()
    with torch.no_grad(), device_module.autocast(run.device, run.precision):
        eager, compiled = run.model(x), run.compiled(x)
    for task in eager:
        torch.testing.assert_close(
            compiled[task].float(),
            eager[task].float(),
            **({"rtol": 1e-4, "atol": 1e-5} if precision == "fp32" else {"rtol": 2e-2, "atol": 2e-2}),
        )
    run.model.train()
    _, total, _ = training.train_step(run, x, labels)  # compiles forward + backward for training
    assert run.compile_proven and run.compiled is not None and torch.isfinite(total)


# --------------------------------------------------------------------------- graphc bench


@pytest.mark.slow
def test_bench_json_schema(monkeypatch):
    monkeypatch.setattr(
        torch, "compile", lambda module, **kwargs: module
    )  # the schema, not the compiler (tested above)
    result = runner.invoke(
        app,
        [
            "bench",
            str(TINY_TRAIN),
            "--device",
            "cpu",
            "--batch-size",
            "8",
            "--seconds",
            "0.01",
            "--repeats",
            "1",
            "--compile",
            "--precision",
            "all",  # the full table: emulated bf16 too (the default measures the native precisions only)
            "--onnx",
            "--json",
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0 and clean_exit(result), result.output
    data = json.loads(result.stdout)
    assert data["schema"] == "graphc-bench/1" and data["spec"] == "tiny_train" and data["batch_size"] == 8
    assert set(data) == {
        "schema",
        "date",
        "command",
        "spec",
        "machine",
        "batch_size",
        "seconds",
        "repeats",
        "auto",
        "skipped",
        "training",
        "pipeline",
        "inference",
        "augmentation",
        "peak_memory",
    }
    assert data["command"].startswith("graphc bench ") and "--compile" in data["command"] and data["skipped"] == []
    assert {"device", "device_name", "torch", "threads", "cpu_flags"} <= set(data["machine"])
    assert data["auto"]["precision"] == resolve_precision("auto", torch.device("cpu"))
    # eager: every precision x memory format; compiled: each precision in its run's format
    eager = [(r["precision"], r["memory_format"]) for r in data["training"] if not r["compiled"]]
    assert eager == [
        ("fp32", "contiguous"),
        ("fp32", "channels_last"),
        ("bf16", "contiguous"),
        ("bf16", "channels_last"),
    ]
    compiled = [r for r in data["training"] if r["compiled"]]
    assert [(r["precision"], r["memory_format"]) for r in compiled] == [
        ("fp32", "channels_last"),
        ("bf16", "channels_last"),
    ]
    for row in data["training"]:
        assert row["images_per_s"] > 0 and row["step_memory_bytes"] is None  # step memory: measured on CUDA only
    assert all(r["compile_s"] > 0 for r in compiled)
    pipe = data["pipeline"]
    assert pipe["epoch_images_per_s"] > 0 and pipe["step_images_per_s"] > 0
    assert pipe["ratio"] == pytest.approx(pipe["epoch_images_per_s"] / pipe["step_images_per_s"])
    assert pipe["epoch_images"] % 8 == 0 and pipe["epoch_images"] >= 16
    engines = [(r["engine"], r["precision"]) for r in data["inference"]]
    assert engines == [("pytorch", "fp32"), ("pytorch", "bf16"), ("onnxruntime", "fp32")]
    assert all(r["images_per_s"] > 0 and r["batch_size"] == 8 for r in data["inference"])
    assert data["augmentation"]["preset"] == "flip_crop" and data["augmentation"]["images_per_s"] > 0
    assert data["peak_memory"]["kind"] == "process_max_rss" and data["peak_memory"]["bytes"] > 2**20


@pytest.mark.slow
def test_bench_one_precision_and_the_table(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: (_ for _ in ()).throw(RuntimeError("no compiler")))
    result = runner.invoke(
        app,
        [
            "bench",
            str(TINY_TRAIN),
            "--device",
            "cpu",
            "--batch-size",
            "4",
            "--seconds",
            "0.01",
            "--repeats",
            "1",
            "--precision",
            "fp32",
            "--compile",
            "--no-onnx",
        ],
    )
    assert result.exit_code == 0 and clean_exit(result), result.output
    assert "auto picks" in result.stdout and "train epoch" in result.stdout and "the bare step" in result.stdout
    assert "torch.compile failed (RuntimeError: no compiler)" in result.stdout  # the compiled row says why it is empty
    assert "bf16" not in result.stdout.split("auto picks")[1].split("\n", 1)[1]  # only fp32 rows


def test_bench_bad_options():
    for args, message in (
        (["--precision", "fp16"], "unknown precision 'fp16'"),
        (["--seconds", "0"], "--seconds must be positive"),
        (["--device", "gpu"], "unknown device 'gpu'"),
    ):
        result = runner.invoke(app, ["bench", str(TINY_TRAIN), *args])
        assert result.exit_code == 2 and clean_exit(result) and message in result.stderr, result.output


# --------------------------------------------------------------------------- no waiting in the step loop


def test_live_metrics_on_the_cpu_are_the_current_means():
    """Meter.peek, what the progress bar reads: on a GPU it never waits (it shows the previous copy
    of the sums once that has arrived); on the CPU there is nothing to wait for, so it is compute()."""
    from graphc.runtime.metrics import HeadInfo, Meter

    heads = [HeadInfo(task="fine", classes=3, loss_weight=1.0, label_smoothing=0.0)]
    meter = Meter(heads, [], torch.device("cpu"))
    logits, labels = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]), torch.tensor([0, 2])
    loss = torch.nn.functional.cross_entropy(logits, labels)
    meter.update({"fine": logits}, {"fine": labels}, loss, {"fine": loss})
    assert meter.peek() == meter.compute() and meter.peek()["fine/acc"] == 0.5
