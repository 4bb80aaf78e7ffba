"""`graphc train --nproc N`: one run trained by N data-parallel processes (gloo on the CPU).

Every process imports torch, so each multi-process run costs a few seconds of start-up
on 2 cores: the tests share one straight run (``straight``) and start few others.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

import graphc
from graphc.errors import Problem, RunError, SpecError, UsageError
from graphc.runtime.evaluate import evaluate_run
from graphc.runtime.runs import rundir as runs
from graphc.runtime.runs.checkpoint import load_checkpoint
from graphc.runtime.train import distributed
from tests.conftest import TESTS, invoke, run_dir_of, train

SPEC = TESTS / "specs" / "tiny_train.toml"
TIMING = ("images_per_s", "time_s")
EPOCHS = 5


def weights(run_dir: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / name)["model"]


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def values(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("epoch", "split", *TIMING)}


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> tuple[Path, Path]:
    """tiny_train with 1,600 images (1,200 train / 400 val), 5 epochs on 2 processes: (run dir, spec)."""
    out = tmp_path_factory.mktemp("nproc2")
    spec = out / "learn.toml"
    spec.write_text(SPEC.read_text().replace("train_size = 480", "train_size = 1600"))
    result = train(spec, "--nproc", 2, "--epochs", EPOCHS, "--out", out, "--quiet")
    return run_dir_of(result), spec


@pytest.mark.slow
def test_two_processes_write_a_normal_run_that_learns(straight):
    run_dir, spec = straight
    for name in (
        "spec.toml",
        "config.json",
        "env.json",
        "metrics.jsonl",
        "metrics.csv",
        "best.pt",
        "last.pt",
        "summary.json",
    ):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.glob(".*.tmp"))
    config = runs.read_json(run_dir / "config.json")
    assert config["nproc"] == 2 and config["overrides"] == {"--epochs": EPOCHS, "--nproc": 2}
    rows = runs.read_metrics(run_dir)
    assert [(r["epoch"], r["split"]) for r in rows] == [(e, s) for e in range(1, EPOCHS + 1) for s in ("train", "val")]
    val = [r for r in rows if r["split"] == "val"]
    best = max(val, key=lambda r: r["fine/acc"])
    assert best["fine/acc"] > 3 / 12 and best["coarse/acc"] > 0.7, val  # chance: 1/12 fine, 1/3 coarse
    assert min(r["loss"] for r in val) < 0.8 * val[0]["loss"]
    # The logged validation metrics are those of the whole split with the saved model (rank 0's
    # batch-norm statistics): `graphc eval` of last.pt, one process over the whole split, agrees.
    result = invoke("eval", run_dir, "--checkpoint", "last", "--json")
    logged = values(val[-1])  # eval adds the split's baselines (TASK/majority_acc, TASK/balanced_acc)
    assert {k: v for k, v in json.loads(result.stdout)["metrics"].items() if k in logged} == pytest.approx(
        logged, rel=1e-6
    )
    # Rank 0 evaluated best.pt on the test split once, at the end.
    summary = runs.read_json(run_dir / "summary.json")
    assert summary["status"] == "completed" and summary["best_epoch"] == best["epoch"]
    assert summary["test"] == pytest.approx(evaluate_run(run_dir, split="test", checkpoint="best").metrics, rel=1e-6)
    assert load_checkpoint(run_dir / "best.pt")["epoch"] == best["epoch"]


def test_each_process_gets_its_own_share_and_draws():
    from graphc.runtime.data.split import Split
    from graphc.runtime.train.loop import steps_per_epoch

    World = distributed.World
    index = torch.randperm(10)
    assert torch.equal(torch.cat([World(r, 2).shard(index) for r in range(2)]), index)
    assert [len(World(r, 2).shard(torch.arange(7))) for r in range(2)] == [3, 3]  # one image left out
    assert World().shard(index) is index
    split = Split(torch.zeros(5, 1, 2, 2, dtype=torch.uint8), {"fine": torch.arange(5)})
    parts = [World(r, 2).share(split) for r in range(2)]
    assert [len(p) for p in parts] == [2, 3] and torch.equal(
        torch.cat([p.labels["fine"] for p in parts]), split.labels["fine"]
    )
    # A last batch is kept only when each process gets 2 or more of its images (batch norm needs two).
    assert steps_per_epoch(360, 32, 2) == 12 and steps_per_epoch(35, 32, 2) == 1 and steps_per_epoch(35, 32) == 2

    # Rank 0 keeps its streams (a single process's); others draw their own, the same for the same epoch.
    def draws(rank: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(1)
        World(rank, 2).reseed(generator, seed=0, epoch=epoch)
        return torch.rand(3), torch.rand(3, generator=generator)

    torch.manual_seed(0)
    unchanged = torch.rand(3)
    assert torch.equal(draws(0, 1)[0], unchanged)
    assert all(torch.equal(a, b) for a, b in zip(draws(1, 1), draws(1, 1)))
    for other in (draws(0, 1), draws(1, 2)):
        assert not any(torch.equal(a, b) for a, b in zip(draws(1, 1), other))


NO_NORM_NO_DROPOUT = (
    ('norm = "batch"\n', ""),
    ("dropout = 0.25", "dropout = 0.0"),
    ('augment = { preset = "flip_crop", padding = 1 }', 'augment = { preset = "none" }'),
    ('optimizer = { name = "adam", lr = 3e-3, eps = 1e-7 }', 'optimizer = { name = "sgd", lr = 0.5, momentum = 0.0 }'),
    # fp32: on a CPU with AMX, precision "auto" is bf16, whose rounding differs between a batch of 32 and two of 16
    ("[train]\n", '[train]\nprecision = "fp32"\n'),
)


@pytest.mark.slow
def test_one_step_on_two_processes_equals_one_step_on_one(tmp_path):
    """With no batch norm, dropout or augmentation, the processes' shares of a global batch and
    DDP's gradient average give the step one process takes on the whole batch. Plain SGD, because
    Adam's first step would hide a gradient summed instead of averaged."""
    text = SPEC.read_text()
    for old, new in NO_NORM_NO_DROPOUT:
        assert old in text
        text = text.replace(old, new)
    spec = tmp_path / "plain.toml"
    spec.write_text(text)
    args = ("--epochs", 1, "--limit-train", 32, "--quiet")  # one batch of 32: one step
    one = run_dir_of(train(spec, *args, "--out", tmp_path / "one"))
    two = run_dir_of(train(spec, *args, "--nproc", 2, "--out", tmp_path / "two"))
    graph = graphc.build_graph(graphc.load_spec(spec), classes={"fine": 12, "coarse": 3})
    initial = graphc.compile_graph(graph, seed=0).state_dict()
    a, b = weights(one), weights(two)
    assert a.keys() == b.keys() == initial.keys()
    assert max((a[k] - initial[k]).abs().max().item() for k in a) > 1e-2  # the step is not negligible
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)
    # Train metrics are the sums over both shares (the whole batch, before the step); val, the whole split after it.
    rows_one, rows_two = runs.read_metrics(one), runs.read_metrics(two)
    assert [r["split"] for r in rows_two] == ["train", "val"]
    for r1, r2 in zip(rows_one, rows_two):
        assert values(r2) == pytest.approx(values(r1), rel=1e-5)


@pytest.mark.slow
def test_bad_nproc_is_a_clear_error_before_any_file(tmp_path, straight):
    assert (
        "--nproc must be at least 1 (the number of training processes), got 0"
        in train(SPEC, "--nproc", 0, code=2).stderr
    )
    assert "got -2" in train(SPEC, "--nproc", -2, code=2).stderr
    result = train(SPEC, "--nproc", 3, "--out", tmp_path, code=2)  # tiny_train: batch 32
    assert "the global batch of 32 images (train.batch_size) does not divide evenly among 3 processes" in result.stderr
    assert "--batch-size 30 or 33" in result.stderr
    result = train(SPEC, "--nproc", 2, "--batch-size", 2, "--out", tmp_path, code=2)
    assert "each process would train on 1 image per batch" in result.stderr and "batch norm" in result.stderr
    assert not (tmp_path / "tiny_train").exists()
    # On resume, before the run directory is touched.
    run_dir = straight[0]
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    result = train("--resume", run_dir, "--epochs", EPOCHS + 1, "--nproc", 3, code=2)
    assert "does not divide evenly among 3 processes" in result.stderr
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def _workers() -> list[int]:
    """PIDs of this process's multiprocessing spawn children (not its resource tracker)."""
    pids = []
    for children in Path("/proc/self/task").glob("*/children"):
        try:
            listed = children.read_text().split()
        except OSError:  # a thread that ended since the glob
            continue
        for pid in map(int, listed):
            try:
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.append(pid)
            except OSError:  # a child that ended
                pass
    return pids


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


@pytest.mark.slow
def test_ctrl_c_stops_every_process_and_resume_continues_exactly(tmp_path, straight):
    """Ctrl-C reaches the launching process (this one), which passes it on to rank 0; rank 0 stops
    after its last completed epoch's files and the others are ended. Resuming on 2 processes to 5
    epochs then gives exactly the straight 5-epoch run: rank 0's RNG streams are in last.pt, the
    other rank's are reseeded per epoch."""
    straight_dir, spec = straight
    seen: dict = {}

    def press_ctrl_c() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            files = list(tmp_path.glob("tiny_train/*/metrics.jsonl"))
            if files and len(files[0].read_text().splitlines()) >= 2:  # epoch 1 is complete
                try:
                    seen["workers"] = {pid: _group_of(pid) for pid in _workers()}
                finally:  # whatever the look at the workers met, Ctrl-C is pressed
                    os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=press_ctrl_c, daemon=True)
    watcher.start()
    result = train(spec, "--nproc", 2, "--epochs", 50, "--out", tmp_path, "--quiet", code=130)
    watcher.join()
    run_dir = next((tmp_path / "tiny_train").iterdir())
    assert f"graphc train --resume {run_dir}" in result.stderr
    # Both workers ran in process groups of their own (a terminal's Ctrl-C reaches only the
    # launcher), and none is left.
    assert len(seen["workers"]) == 2 and all(pgid == pid for pid, pgid in seen["workers"].items())
    assert not [pid for pid in seen["workers"] if Path(f"/proc/{pid}").exists()]
    summary = runs.read_json(run_dir / "summary.json")
    done = summary["epochs_completed"]
    assert summary["status"] == "interrupted" and 1 <= done < EPOCHS and summary["test"] is None
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == done
    assert {r["epoch"] for r in runs.read_metrics(run_dir)} == set(range(1, done + 1))
    assert not list(run_dir.glob(".*.tmp"))

    train("--resume", run_dir, "--epochs", EPOCHS, "--quiet")  # on the run's own 2 processes
    assert runs.read_json(run_dir / "config.json")["resumed"][0]["nproc"] == 2
    last, reference = weights(run_dir), weights(straight_dir)
    for key in reference:
        assert torch.equal(last[key], reference[key]), key
    assert without_timing(runs.read_metrics(run_dir)) == without_timing(runs.read_metrics(straight_dir))


def _fail_in_process_1(world: distributed.World) -> str:
    if world.rank == 1:
        raise ValueError("a bug in process 1")
    torch.distributed.barrier()  # rank 0 waits for a peer that is gone: its own error is an echo
    return "unreachable"


@pytest.mark.slow
def test_an_error_in_one_process_is_one_clear_message_and_ends_them_all():
    started = time.monotonic()
    with pytest.raises(RunError) as info:
        distributed.spawn(_fail_in_process_1, 2, torch.device("cpu"))
    message = str(info.value)
    assert message.startswith("training process 1 of 2 failed: ValueError: a bug in process 1 (at ")
    assert "test_distributed.py" in message and "\n" not in message
    assert time.monotonic() - started < 30
    assert not _workers()


def test_graphc_errors_keep_their_class_and_the_earliest_error_is_the_cause():
    Outcome = distributed.Outcome
    echo = Outcome(
        "error", ("RunError", "training process 0 of 2 failed: RuntimeError: Connection closed by peer"), 2.0
    )
    with pytest.raises(UsageError, match="^--flag: bad$"):
        distributed._result({0: echo, 1: Outcome("error", ("UsageError", "--flag: bad"), 1.0)})
    problem = str(
        Problem("watches 'val/x'", file=Path("a.toml"), field="train.select.metric", hint="did you mean 'val/y'?")
    )
    with pytest.raises(SpecError) as info:
        distributed._result({0: Outcome("stopped"), 1: Outcome("error", ("SpecError", problem), 1.0)})
    assert str(info.value) == problem
    # Once rank 0 has ended on its own, the others' errors are echoes of its leaving.
    assert distributed._result({0: Outcome("result", "done"), 1: echo}) == "done"
    with pytest.raises(KeyboardInterrupt):
        distributed._result({0: Outcome("interrupted"), 1: echo})
