"""The CUDA path, exercised on the CPU: what a GPU would wait for in a training step, counted with
the ``meta`` device standing in for the GPU; batches gathered through pinned memory; where data
and the launcher's model live; DDP without buffer broadcasts; evaluation batches, precision and
out-of-memory messages.

The counter (``DeviceTraffic``) is a dispatch mode that sees every operator: a host -> device copy
is a ``_to_copy``/``copy_`` from the CPU to the device, or a device tensor made from host data
below the dispatcher (``torch.tensor(..., device=)``, list indexing, ``new_tensor``), which first
shows up as an operator's input that no operator made; a synchronising call is a scalar read
(``item``) or a device -> host copy. On a GPU each of these blocks the host or adds a transfer.
"""

from __future__ import annotations

import dataclasses
import json
import traceback
import weakref
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from typer.testing import CliRunner

import graphc
from graphc.cli import app
from graphc.lang.spec import FlipCropAugment, Normalize, SyntheticData
from graphc.runtime.data import batches as batching
from graphc.runtime.data.augment import channel_stats, normalize_
from graphc.runtime.data.split import Split
from graphc.runtime.device import Execution, evaluation_execution
from graphc.runtime.metrics import heads_of
from graphc.runtime.runs import rundir as runs
from graphc.runtime.runs.checkpoint import load_checkpoint
from graphc.runtime.runs.record import parse_record
from graphc.runtime.scoring import EVAL_BATCH_FACTOR, eval_batch_size, evaluate
from graphc.runtime.train import distributed, launch, loop
from graphc.runtime.train.progress import EpochProgress
from tests.conftest import REPO, TESTS, clean_exit

runner = CliRunner()
ROOT = REPO
REFERENCE = ROOT / "specs" / "shared_reuse_coarse.toml"
TINY = TESTS / "specs" / "tiny_train.toml"
META = torch.device("meta")
aten = torch.ops.aten


# --------------------------------------------------------------------------- the counter


class DeviceTraffic(TorchDispatchMode):
    """Records host -> device copies ("h2d"), device tensors made from host data ("made"), and
    synchronising calls ("sync": scalar reads, device -> host copies) on ``device``, each with the
    runtime function that caused it (runtime/data/batches.py's helpers count for their caller)."""

    def __init__(self, device: torch.device = META):
        super().__init__()
        self.device = device
        self.seen: dict[int, weakref.ref] = {}  # tensors an operator made (or known beforehand)
        self.events: list[tuple[str, str]] = []

    def know(self, *tensors: torch.Tensor) -> None:
        for t in tensors:
            self.seen[id(t)] = weakref.ref(t)

    def _made_here(self, t: torch.Tensor) -> bool:
        ref = self.seen.get(id(t))
        return ref is not None and ref() is t

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        for t in inputs:
            if t.device == self.device and not self._made_here(t):
                self.events.append(("made", _caller()))
                self.know(t)
        if func is aten._local_scalar_dense.default and inputs[0].device == self.device:
            self.events.append(("sync", _caller()))
        out = func(*args, **kwargs)
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if func in (aten._to_copy.default, aten.copy_.default):
            source = args[1] if func is aten.copy_.default else args[0]
            if source.device != outputs[0].device:
                self.events.append(("h2d" if outputs[0].device == self.device else "sync", _caller()))
        self.know(*outputs)
        return out

    def count(self, kind: str, where: str = "", since: int = 0) -> int:
        return sum(1 for k, w in self.events[since:] if k == kind and where in w)


def _caller() -> str:
    """``file.py:function`` of the innermost runtime frame outside runtime/data/batches.py."""
    runtime = str(REPO / "runtime") + "/"  # graphc.runtime's sources (not this test, which lives in tests/runtime/)
    frames = [
        f for f in traceback.extract_stack() if f.filename.startswith(runtime) and not f.filename.endswith("batches.py")
    ]
    return f"{Path(frames[-1].filename).name}:{frames[-1].name}" if frames else "?"


# --------------------------------------------------------------------------- a training step on the "GPU"


@pytest.fixture(scope="module")
def reference_data():
    """shared_reuse_coarse (the reference recipe) on 300 synthetic training images: 3 steps of 100."""
    spec = graphc.load_spec(REFERENCE)
    data = spec.data.model_copy(
        update={
            "dataset": "synthetic",
            "synthetic": SyntheticData(train_size=400, test_size=100),
            "val_fraction": 0.25,
            "normalize": Normalize(
                mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25]
            ),  # normalize_'s constants are counted too
        }
    )
    spec = spec.model_copy(update={"data": data})
    return spec, launch.load_data(spec, None, None)


def traffic_of_an_epoch(spec, dataset, monkeypatch, resident: bool) -> tuple[DeviceTraffic, int, int]:
    """Train two epochs on the meta device; returns the counter, where the second epoch's events
    start, and its number of steps. The first epoch places the data and fills the caches."""
    monkeypatch.setattr(batching, "free_memory", lambda device: (1 << 40) if resident else None)
    # meta tensors hold no values: the epoch's one read-back (Meter.compute) returns zeros
    monkeypatch.setattr(loop.Meter, "compute", lambda self: {name: 0.0 for name in self.names})
    graph = graphc.build_graph(spec, classes=dataset.classes)
    run = loop.build_run(Path("unused"), spec, graph, dataset, META, {})
    mode = DeviceTraffic()
    mode.know(*run.model.parameters(), *run.model.buffers())
    progress = EpochProgress(Console(quiet=True), live=False)
    with mode:
        loop.train_epoch(run, 1, progress)
        since = len(mode.events)
        loop.train_epoch(run, 2, progress)
    return mode, since, loop.steps_per_epoch(len(dataset.train), spec.train.batch_size)


@pytest.mark.parametrize("augment", ["keras_affine", "flip_crop"])
def test_a_training_step_copies_the_augmentation_parameters_once_and_nothing_else(augment, reference_data, monkeypatch):
    """Before: keras_affine made 44 copies per step (one per parameter and per constant of its
    3x3 matrices), flip_crop 2, normalize_ 2, and the batch index 1."""
    spec, dataset = reference_data
    if augment == "flip_crop":
        spec = spec.model_copy(
            update={"data": spec.data.model_copy(update={"augment": FlipCropAugment(preset="flip_crop", padding=4)})}
        )
    mode, since, steps = traffic_of_an_epoch(spec, dataset, monkeypatch, resident=True)
    assert steps == 3
    function = "apply_affine" if augment == "keras_affine" else "apply_crop"
    assert (
        mode.count("h2d", f"augment.py:{function}", since) == steps
    )  # one copy per step: the (B, 2, 3) matrices / windows
    assert mode.count("h2d", "augment.py", since) == steps
    assert mode.count("made", since=since) == 0  # no constant made on the device from host data
    assert mode.count("h2d", "loop.py", since) == 1  # the epoch's order, once; batches are gathered on the device
    assert mode.count("sync", since=since) == 0
    # The first epoch placed the training split on the device (images and the two label fields) once.
    assert mode.count("h2d", "loop.py:placed_split") == 3


def test_a_split_that_stays_on_the_cpu_is_copied_batch_by_batch(reference_data, monkeypatch):
    spec, dataset = reference_data
    mode, since, steps = traffic_of_an_epoch(spec, dataset, monkeypatch, resident=False)
    assert mode.count("h2d", "augment.py", since) == steps
    assert mode.count("h2d", "loop.py:train_epoch", since) == 3 * steps  # images, fine, coarse
    assert mode.count("made", since=since) == 0 and mode.count("sync", since=since) == 0


def test_normalisation_constants_are_made_once_per_device_and_dtype():
    normalize = Normalize(mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.2])
    x = torch.rand(2, 3, 4, 4)
    expected = (x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / 0.2
    torch.testing.assert_close(normalize_(x.clone(), normalize), expected)
    first = channel_stats((0.5, 0.4, 0.3), (0.2, 0.2, 0.2), torch.device("cpu"), torch.float32)
    assert channel_stats((0.5, 0.4, 0.3), (0.2, 0.2, 0.2), torch.device("cpu"), torch.float32) is first
    other = channel_stats((0.5, 0.4, 0.3), (0.2, 0.2, 0.2), torch.device("cpu"), torch.float64)
    assert other is not first and other[0].dtype == torch.float64
    normalize_(x.clone(), normalize)
    assert torch.equal(first[0].flatten(), torch.tensor([0.5, 0.4, 0.3]))  # never written in place


# --------------------------------------------------------------------------- batches and placement


def _split(n: int = 23) -> Split:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 4, 5), generator=g, dtype=torch.uint8)
    return Split(
        images, {"fine": torch.randint(0, 9, (n,), generator=g), "coarse": torch.randint(0, 3, (n,), generator=g)}
    )


def test_gathered_batches_are_todays_batches(monkeypatch):
    """On the CPU a batch is exactly images[index] (shuffled index tensors and evaluation slices); the
    pinned path (its page-locking swapped for plain memory: no GPU here) gives the same values."""
    split = _split()
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(1))
    indices = list(order.split(5)) + [slice(0, 8), slice(16, 24)]
    expected = [(split.images[i], {f: split.labels[f][i] for f in split.labels}) for i in indices]
    monkeypatch.setattr(batching, "pinned_empty", lambda shape, dtype: torch.empty(shape, dtype=dtype))
    for got in (
        list(batching.gather(split, indices, torch.device("cpu"))),
        list(batching.streamed(split, indices, torch.device("cpu"), pin=True)),
        list(batching.streamed(split, indices, torch.device("cpu"), pin=False)),
    ):
        assert len(got) == len(expected)
        for (images, labels), (want_images, want_labels) in zip(got, expected):
            assert torch.equal(images, want_images) and labels.keys() == want_labels.keys()
            assert all(torch.equal(labels[f], want_labels[f]) for f in labels)


def test_streamed_batches_are_copied_one_ahead():
    """The copy of batch k + 1 is under way before batch k is handed out."""
    split, taken = _split(), []

    def indices():
        for k in range(4):
            taken.append(k)
            yield torch.arange(5 * k, 5 * k + 5)

    handed = []
    for images, labels in batching.gather(split, indices(), META):  # a CPU split for another device: streamed
        assert images.device == META and labels["fine"].device == META and images.shape == (5, 3, 4, 5)
        handed.append(len(taken))
    assert handed == [2, 3, 4, 4]


def test_a_split_is_placed_on_the_device_when_it_fits_its_free_memory(monkeypatch):
    split = _split()
    size = batching.nbytes(split)
    assert batching.place(split, torch.device("cpu")).images is split.images  # the CPU: where it is
    monkeypatch.setattr(batching, "free_memory", lambda device: int(size / batching.RESIDENT_SHARE) - 1)
    assert batching.place(split, META).images.device.type == "cpu"  # just too big: streamed
    monkeypatch.setattr(batching, "free_memory", lambda device: int(size / batching.RESIDENT_SHARE) + 1)
    placed = batching.place(split, META, ["fine"])
    assert placed.images.device == META and list(placed.labels) == ["fine"] and placed.labels["fine"].device == META
    # Free memory is a snapshot: running out of memory during the copy leaves the split on the CPU.
    real = torch.Tensor.to

    def to(self, *args, **kwargs):
        if args and args[0] == META:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)
    assert batching.place(split, META).images.device.type == "cpu"


def test_free_memory_is_the_gpus_own_report(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: calls.append(device) or (3 << 30, 80 << 30))
    assert batching.free_memory(torch.device("cuda", 1)) == 3 << 30 and calls == [torch.device("cuda", 1)]
    assert batching.free_memory(torch.device("cpu")) is None and batching.free_memory(torch.device("mps")) is None


def test_small_tensors_reach_a_cuda_device_through_pinned_memory(monkeypatch):
    seen = []

    class Host:  # a CPU tensor's pin_memory().to(...) chain, recorded
        device = torch.device("cpu")

        def pin_memory(self):
            seen.append("pin")
            return self

        def to(self, device, non_blocking=False):
            seen.append((str(device), non_blocking))
            return self

    batching.to_device(Host(), torch.device("cuda", 0))
    assert seen == ["pin", ("cuda:0", True)]
    x = torch.zeros(3)
    assert batching.to_device(x, torch.device("cpu")) is x


# --------------------------------------------------------------------------- the launcher under --nproc


def fake_gpus(monkeypatch):
    """Two CUDA devices as the launcher sees them (it must never put a tensor on one); the workers'
    start is recorded instead of made."""
    started = {}

    def spawn(fn, nproc, device, args=(), threads=None):
        started.update(fn=fn, nproc=nproc, device=device)
        return launch.RunResult(args[0], "completed", {})

    built = []
    real_build = launch.build_run

    def build_run(run_dir, spec, graph, dataset, device, *args, **kwargs):
        run = real_build(run_dir, spec, graph, dataset, device, *args, **kwargs)
        built.append((device, run))
        return run

    monkeypatch.setattr(launch, "resolve_device", lambda name: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a fake GPU")
    monkeypatch.setattr(distributed, "spawn", spawn)
    monkeypatch.setattr(launch, "build_run", build_run)
    return started, built


def _all_on_the_cpu(run) -> bool:
    tensors = [*run.model.parameters(), *run.model.buffers()]
    tensors += [v for state in run.optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    return bool(tensors) and all(t.device.type == "cpu" for t in tensors)


def test_the_launcher_of_several_processes_keeps_its_run_on_the_cpu(tmp_path, monkeypatch):
    started, built = fake_gpus(monkeypatch)
    console = Console(record=True, width=400)
    overrides = launch.Overrides(nproc=2, epochs=1, limit_train=64, device="cuda")
    result = launch.train_run(graphc.load_spec(TINY), 0, overrides, out=tmp_path, console=console, quiet=True)
    ((device, run),) = built
    assert device == torch.device("cpu") and _all_on_the_cpu(run)
    assert started == {
        "fn": launch.train_process,
        "nproc": 2,
        "device": torch.device("cuda", 0),
    }  # the workers: on the GPUs
    config = runs.read_json(result.run_dir / "config.json")
    assert config["device"] == "cuda:0" and config["nproc"] == 2 and config["precision"] == "bf16"
    assert "on 2 processes (cuda) in bf16 autocast" in console.export_text()


def test_resuming_on_several_processes_loads_the_optimiser_state_into_the_cpu(tmp_path, monkeypatch):
    result = runner.invoke(
        app, ["train", str(TINY), "--epochs", "1", "--limit-train", "64", "--out", str(tmp_path), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    run_dir = Path(result.stdout.strip())
    assert load_checkpoint(run_dir / "last.pt")["optimizer"]["state"]  # Adam's moments, to be restored
    started, built = fake_gpus(monkeypatch)
    launch.resume_run(
        run_dir, launch.Overrides(nproc=2, epochs=2, device="cuda"), console=Console(quiet=True), quiet=True
    )
    ((device, run),) = built
    assert device == torch.device("cpu") and run.optimizer.state and _all_on_the_cpu(run)
    assert started["device"] == torch.device("cuda", 0) and started["nproc"] == 2


# --------------------------------------------------------------------------- DDP without buffer broadcasts


def _ddp_steps(world: distributed.World) -> dict | None:
    """Three SGD steps of a batch-norm model on this process's own data, once in DDP as it comes
    (buffers broadcast before every forward) and once as World.wrap wraps it; every rank's results."""
    results = {}
    for name in ("broadcast", "wrap"):
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.LazyLinear(5)
        )
        model(torch.zeros(2, 3, 6, 6))  # materialise the lazy layer the same way on every process
        if name == "broadcast":
            ddp = torch.nn.parallel.DistributedDataParallel(model)  # broadcasts before every forward
        else:
            ddp = world.wrap(model)
            assert getattr(ddp, "forward_sync_buffers", getattr(ddp, "broadcast_buffers", None)) is False
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(100 + world.rank)  # each process its own share
        for _ in range(3):
            x, y = torch.randn(8, 3, 6, 6, generator=g) * (1 + world.rank), torch.randint(0, 5, (8,), generator=g)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(ddp(x), y).backward()
            optimizer.step()
        world.sync_buffers(model)  # what evaluation does: rank 0's statistics everywhere
        results[name] = {k: v.clone() for k, v in model.state_dict().items()}
    gathered = [None] * world.size
    torch.distributed.all_gather_object(gathered, results)
    return gathered if world.is_main else None


def test_ddp_without_buffer_broadcasts_trains_and_evaluates_the_same():
    """Rank 0's batch-norm statistics depend only on its own shares, and evaluation takes them:
    without the per-step broadcast every weight and statistic is the same, bit for bit."""
    per_rank = distributed.spawn(_ddp_steps, 2, torch.device("cpu"))
    for results in per_rank:
        broadcast, wrapped = results["broadcast"], results["wrap"]
        assert broadcast.keys() == wrapped.keys()
        for key in broadcast:
            assert torch.equal(broadcast[key], wrapped[key]), key
    assert all(torch.equal(per_rank[0]["wrap"][k], per_rank[1]["wrap"][k]) for k in per_rank[0]["wrap"])


# --------------------------------------------------------------------------- evaluation


def test_evaluation_batches_change_only_the_order_of_the_sums():
    spec = graphc.load_spec(TINY)
    dataset = launch.load_data(spec, None, None)
    graph = graphc.build_graph(spec, classes=dataset.classes)
    model = graphc.compile_graph(graph, seed=0)
    heads = heads_of(graph)
    assert eval_batch_size(spec.train.batch_size) == EVAL_BATCH_FACTOR * spec.train.batch_size == 128
    small = evaluate(model, dataset.val, heads, [], device=torch.device("cpu"), batch_size=spec.train.batch_size)
    large = evaluate(
        model, dataset.val, heads, [], device=torch.device("cpu"), batch_size=eval_batch_size(spec.train.batch_size)
    )
    assert small.keys() == large.keys()
    for name in small:
        assert large[name] == pytest.approx(small[name], rel=1e-6, abs=1e-9), name


def test_graphc_eval_runs_in_the_runs_precision(monkeypatch):
    recorded = Execution("bf16", True, "as the run trained", device="cuda:0")
    assert evaluation_execution(recorded, torch.device("cpu")) == recorded  # whatever auto would pick here
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    on_gpu = evaluation_execution(recorded, torch.device("cuda", 0))  # a device without bf16 at all
    assert (on_gpu.precision, on_gpu.channels_last) == ("fp32", True)
    fp32 = dataclasses.replace(recorded, precision="fp32")
    assert evaluation_execution(fp32, torch.device("cpu")) == fp32
    # A config.json without "precision" (every graphc wrote one: a hand-made file) takes [train]'s, else fp32.
    spec = graphc.load_spec(TINY)
    config = {"spec": "tiny", "seed": 0, "tasks": ["fine", "coarse"], "data": spec.data.model_dump(mode="json")}
    for asked, taken in (("auto", "fp32"), ("bf16", "bf16"), ("fp32", "fp32")):
        train = spec.train.model_copy(update={"precision": asked}).model_dump(mode="json")
        assert parse_record({**config, "train": train}, Path("config.json")).precision == taken


def _train(*args, code: int = 0):
    result = runner.invoke(app, ["train", *map(str, args)])
    assert result.exit_code == code, result.output
    assert clean_exit(result) and "Traceback" not in result.output
    return result


def test_out_of_memory_in_the_final_test_pass_and_in_graphc_eval_is_a_message(tmp_path, monkeypatch):
    real = loop.evaluate_split

    def test_pass_out_of_memory(run, split, *args, keep=None, **kwargs):
        if keep is None:  # the final test pass (validation is kept as "val")
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(run, split, *args, keep=keep, **kwargs)

    monkeypatch.setattr(loop, "evaluate_split", test_pass_out_of_memory)
    result = _train(TINY, "--epochs", "1", "--limit-train", "64", "--out", tmp_path, "--quiet", code=1)
    assert "out of GPU memory on cpu evaluating" in result.stderr and "best.pt on the test split" in result.stderr
    run_dir = next((tmp_path / "tiny_train").iterdir())
    assert f"graphc train --resume {run_dir} --device cpu" in " ".join(result.stderr.split())
    assert not (run_dir / "summary.json").exists()
    monkeypatch.setattr(loop, "evaluate_split", real)
    _train("--resume", run_dir, "--device", "cpu", "--quiet")  # the hint works: test pass, summary.json
    summary = runs.read_json(run_dir / "summary.json")
    assert summary["status"] == "completed" and summary["test"]["loss"] > 0

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("graphc.runtime.evaluate.evaluate", out_of_memory)
    result = runner.invoke(app, ["eval", str(run_dir), "--json"])
    assert result.exit_code == 1 and clean_exit(result) and "Traceback" not in result.output
    assert "out of memory on cpu evaluating" in result.stderr and "--device cpu" in result.stderr
    monkeypatch.undo()
    data = json.loads(runner.invoke(app, ["eval", str(run_dir), "--split", "test", "--json"]).stdout)
    assert data["precision"] == runs.read_json(run_dir / "config.json")["precision"]
    assert data["metrics"]["loss"] == pytest.approx(summary["test"]["loss"], rel=1e-9)
