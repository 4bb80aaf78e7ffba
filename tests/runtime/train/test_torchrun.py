"""`torchrun ... -m graphc train`: one run trained by the processes torchrun starts (gloo on the CPU).

Each torchrun here starts its agent and worker processes, which all import torch: on 2 cores
a job costs tens of seconds, so the tests start few. Two agents on localhost, one process each,
stand for two machines (``--nnodes 2 --nproc-per-node 1``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from graphc.cli import app
from graphc.errors import UsageError
from graphc.runtime.runs import rundir as runs
from graphc.runtime.runs.checkpoint import load_checkpoint
from graphc.runtime.train import distributed
from tests.conftest import REPO, TESTS, clean_exit

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="this torch has no torch.distributed (torchrun)"
)

runner = CliRunner()

SPEC = TESTS / "specs" / "tiny_train.toml"
TIMING = ("images_per_s", "time_s")
TIMEOUT_S = 60  # GRAPHC_DIST_TIMEOUT in these jobs: how long a process may wait for a lost peer


def plain_spec(tmp_path: Path) -> Path:
    """tiny_train without dropout or augmentation: every draw is the same on any launcher."""
    text = SPEC.read_text().replace("dropout = 0.25", "dropout = 0.0")
    text = text.replace('augment = { preset = "flip_crop", padding = 1 }', 'augment = { preset = "none" }')
    spec = tmp_path / "plain.toml"
    spec.write_text(text)
    return spec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, nnodes: int, nproc_per_node: int, port: int) -> subprocess.Popen:
    """One torchrun agent (a 'node') running ``graphc train ARGS`` through the c10d rendezvous on localhost."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        str(nnodes),
        "--nproc-per-node",
        str(nproc_per_node),
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"localhost:{port}",
        "-m",
        "graphc",
        "train",
        *map(str, args),
    ]
    # The threads per process --nproc 2 gives (torchrun sets 1 only with several processes per node):
    # a different count rounds the sums differently, which Adam's steps amplify.
    threads = str(max(1, torch.get_num_threads() // 2))
    env = {**os.environ, "GRAPHC_DIST_TIMEOUT": str(TIMEOUT_S), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": threads}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(jobs: list[subprocess.Popen], timeout: float = 240) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of each job once it has ended."""
    outputs = [job.communicate(timeout=timeout) for job in jobs]
    return [(job.returncode, *output) for job, output in zip(jobs, outputs)]


def run_dir_of(ended: list[tuple[int, str, str]]) -> Path:
    """The run directory rank 0 printed on stdout (whichever agent hosts rank 0)."""
    (line,) = [line for _, out, _ in ended for line in out.splitlines() if line.strip()]
    return Path(line)


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


@pytest.mark.slow
def test_two_torchrun_nodes_train_the_same_run_as_nproc_2(tmp_path):
    """Two agents of one process each (two 'machines') give the weights and metrics --nproc 2 gives:
    the same shares of each global batch, the same gradient average, rank 0 writes the run."""
    spec = plain_spec(tmp_path)
    args = (spec, "--epochs", 2, "--limit-train", 128, "--quiet")  # 4 steps of batch 32 per epoch
    port = free_port()
    # Two seeds: one run after another, all ranks in step; seed 0 is compared with --nproc 2.
    jobs = [
        torchrun(*args, "--seeds", 2, "--out", tmp_path / "torchrun", nnodes=2, nproc_per_node=1, port=port)
        for _ in range(2)
    ]
    ended = finish(jobs)  # before the --nproc 2 run, whose own free port could otherwise be the agents' port
    assert [code for code, _, _ in ended] == [0, 0], ended
    result = runner.invoke(app, ["train", *map(str, args), "--nproc", "2", "--out", str(tmp_path / "nproc")])
    assert result.exit_code == 0 and clean_exit(result), result.output
    assert not any("Traceback" in err for _, _, err in ended), ended
    printed = [Path(line) for _, out, _ in ended for line in out.splitlines() if line.strip()]  # rank 0's stdout
    assert [runs.read_json(d / "config.json")["seed"] for d in printed] == [0, 1]
    assert all(runs.read_json(d / "summary.json")["status"] == "completed" for d in printed)
    launched_dir, spawned_dir = printed[0], Path(result.stdout.strip())
    assert launched_dir.parent.parent == tmp_path / "torchrun"
    for name in ("config.json", "metrics.jsonl", "best.pt", "last.pt", "summary.json"):
        assert (launched_dir / name).is_file(), name
    assert runs.read_json(launched_dir / "config.json")["nproc"] == 2
    a, b = load_checkpoint(launched_dir / "last.pt")["model"], load_checkpoint(spawned_dir / "last.pt")["model"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    launched_rows, spawned_rows = (
        without_timing(runs.read_metrics(launched_dir)),
        without_timing(runs.read_metrics(spawned_dir)),
    )
    assert [(r["epoch"], r["split"]) for r in launched_rows] == [(r["epoch"], r["split"]) for r in spawned_rows]
    assert len(launched_rows) == 4
    for r1, r2 in zip(launched_rows, spawned_rows):
        numbers = {k: v for k, v in r1.items() if k not in ("epoch", "split")}
        assert numbers == pytest.approx({k: r2[k] for k in numbers}, rel=1e-5)
    summary = runs.read_json(launched_dir / "summary.json")
    assert summary["status"] == "completed" and summary["test"] is not None


def _workers(agent: subprocess.Popen) -> dict[int, int]:
    """{global rank: pid} of the worker processes an agent has started."""
    found = {}
    for children in Path(f"/proc/{agent.pid}/task").glob("*/children"):
        for pid in map(int, children.read_text().split()):
            try:
                env = dict(
                    v.split(b"=", 1) for v in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in v
                )
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            if b"RANK" in env:
                found[int(env[b"RANK"])] = pid
    return found


@pytest.mark.slow
def test_a_killed_rank_ends_the_job_with_a_clear_message_and_the_run_resumes(tmp_path):
    """SIGKILL one 'machine's process mid-training: both agents end well within the timeout, rank 0
    says which process it lost and how to resume; resuming under torchrun completes the run."""
    spec = plain_spec(tmp_path)
    port = free_port()
    jobs = [
        torchrun(spec, "--epochs", 400, "--out", tmp_path, "--quiet", nnodes=2, nproc_per_node=1, port=port)
        for _ in range(2)
    ]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # until epoch 1 is complete
        files = list(tmp_path.glob("tiny_train/*/metrics.jsonl"))
        if files and len(files[0].read_text().splitlines()) >= 2:
            break
        assert all(job.poll() is None for job in jobs), finish(jobs)
        time.sleep(0.05)
    else:
        pytest.fail(f"no epoch completed: {finish(jobs)}")
    workers = {rank: (pid, job) for job in jobs for rank, pid in _workers(job).items()}
    assert sorted(workers) == [0, 1]
    os.kill(workers[1][0], signal.SIGKILL)
    killed = time.monotonic()
    ended = finish(jobs, timeout=TIMEOUT_S + 30)
    assert time.monotonic() - killed < TIMEOUT_S
    assert all(code != 0 for code, _, _ in ended), ended
    main = next(err for job, (_, _, err) in zip(jobs, ended) if job is workers[0][1])
    run_dir = next((tmp_path / "tiny_train").iterdir())
    # Rank 0's own message: which process, that it lost its peers, and how to resume (no traceback of its own).
    assert "training process 0 of 2 failed:" in main and "lost contact with the other processes" in main, main
    assert f"resume with:\n  torchrun <the same options> -m graphc train --resume {run_dir}" in main
    assert not [
        line for line in main.splitlines() if line.strip().startswith((f'File "{REPO}/graphc', f'File "{REPO}/runtime'))
    ]
    done = load_checkpoint(run_dir / "last.pt")["epoch"]
    assert done >= 1 and not list(run_dir.glob(".*.tmp"))

    # An error before training: rank 0 says it once, the other process ends quietly with it.
    ((code, _, err),) = finish(
        [torchrun("--resume", run_dir, "--batch-size", 8, nnodes=1, nproc_per_node=2, port=free_port())]
    )
    assert code != 0 and err.count("--batch-size cannot change when resuming") == 1, err

    # Resume on one node of two processes, to a total of done + 1 epochs.
    ended = finish(
        [torchrun("--resume", run_dir, "--epochs", done + 1, "--quiet", nnodes=1, nproc_per_node=2, port=free_port())]
    )
    assert ended[0][0] == 0, ended
    assert run_dir_of(ended) == run_dir
    summary = runs.read_json(run_dir / "summary.json")
    assert summary["status"] == "completed" and summary["epochs_completed"] == done + 1
    assert runs.read_json(run_dir / "config.json")["resumed"][-1]["nproc"] == 2


# --------------------------------------------------------------------------- cheap checks, in this process


@pytest.mark.slow
def test_the_launcher_variables_are_read_and_checked():
    assert distributed.launched({}) is None
    env = {
        "RANK": "1",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "h",
        "MASTER_PORT": "29500",
    }
    assert distributed.launched(env) == distributed.Launched(rank=1, size=4, local_rank=1, local_size=2)
    with pytest.raises(
        UsageError,
        match="RANK, WORLD_SIZE are set, as torchrun sets them, but not LOCAL_RANK, MASTER_ADDR, MASTER_PORT",
    ):
        distributed.launched({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(UsageError, match="must be whole numbers, got RANK='one'"):
        distributed.launched({**env, "RANK": "one"})
    with pytest.raises(UsageError, match="inconsistent torchrun variables: RANK=4, WORLD_SIZE=4"):
        distributed.launched({**env, "RANK": "4"})
    assert distributed.timeout({}) == timedelta(seconds=distributed.DEFAULT_TIMEOUT_S)
    assert distributed.timeout({"GRAPHC_DIST_TIMEOUT": "90"}) == timedelta(seconds=90)
    for bad in ("0", "-5", "soon", "nan"):
        with pytest.raises(UsageError, match=f"GRAPHC_DIST_TIMEOUT='{bad}': give the seconds"):
            distributed.timeout({"GRAPHC_DIST_TIMEOUT": bad})


@pytest.mark.slow
def test_nproc_under_torchrun_is_refused(tmp_path, monkeypatch):
    for name, value in {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "1",
    }.items():
        monkeypatch.setenv(name, value)
    result = runner.invoke(app, ["train", str(SPEC), "--nproc", "2", "--out", str(tmp_path)])
    assert result.exit_code == 2 and clean_exit(result), result.output
    assert "under torchrun the processes are torchrun's (--nnodes x --nproc-per-node). Drop --nproc." in result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_sync_batchnorm_is_refused_on_cpu_processes(tmp_path):
    spec = tmp_path / "sync.toml"
    spec.write_text(SPEC.read_text().replace("[train]\n", "[train]\nsync_batchnorm = true\n"))
    result = runner.invoke(
        app, ["train", str(spec), "--nproc", "2", "--device", "cpu", "--out", str(tmp_path / "runs")]
    )
    assert result.exit_code == 2 and clean_exit(result), result.output
    assert "[train] sync_batchnorm = true: torch's SyncBatchNorm runs on CUDA GPUs only" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_sync_batchnorm_replaces_every_batch_norm_in_place():
    """[train] sync_batchnorm: the compiled model's batch norms become SyncBatchNorm with the same
    parameters and buffers (the optimiser and checkpoints are unchanged) and its forward uses them.
    On the CPU torch's DDP then refuses SyncBatchNorm, which is why graphc refuses it there before
    any file (a one-process gloo group stands in for the processes)."""
    import graphc

    graph = graphc.build_graph(graphc.load_spec(SPEC), classes={"fine": 12, "coarse": 3})
    model = graphc.compile_graph(graph, seed=0).eval()
    params, keys = list(model.parameters()), list(model.state_dict())
    x = torch.rand(4, 3, 16, 16)
    before = model(x)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match="SyncBatchNorm layers only work with GPU modules"):
            distributed.World(0, 2).wrap(model, sync_batchnorm=True)
    finally:
        torch.distributed.destroy_process_group()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 2 and all(isinstance(m, torch.nn.SyncBatchNorm) for m in norms)
    assert all(a is b for a, b in zip(model.parameters(), params)) and list(model.state_dict()) == keys
    after = model(x)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
