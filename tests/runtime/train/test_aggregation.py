"""[train] aggregator: each method's step against torchjd applied to a Jacobian computed here with
autograd, no conflict for UPGrad/PCGrad, the shared parameters from the IR (reuse edges), bf16
aggregation in fp32, divergence, logged statistics, resume exact for the stateful methods, spec
errors, and --nproc equality."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

import graphc
from graphc.lang.spec import TrainSpec
from graphc.runtime.data.augment import to_float
from graphc.runtime.runs import rundir as runs
from graphc.runtime.runs.checkpoint import load_checkpoint
from graphc.runtime.train import aggregation as agg
from graphc.runtime.train import loop
from graphc.runtime.train.launch import load_data
from tests.conftest import TESTS, run_dir_of, train

SPEC = TESTS / "specs" / "tiny_train.toml"  # fine (loss_weight 2) and coarse heads on "trunk" -> "fc"
CPU = torch.device("cpu")
METHODS = [
    "upgrad",
    "mgda",
    "pcgrad",
    "cagrad",
    "nash_mtl",
    "imtl_g",
    "aligned_mtl",
    "graddrop",
    "gradvac",
    "dualproj",
    "random",
]


@pytest.fixture(scope="module")
def data():
    return load_data(graphc.load_spec(SPEC), None, None)


def make_run(data, aggregator: dict, precision: str = "fp32", weighting: dict | None = None) -> loop.Run:
    spec = graphc.load_spec(SPEC)
    train = {**spec.train.model_dump(), "precision": precision, "aggregator": aggregator, "loss_weighting": weighting}
    spec = spec.model_copy(update={"train": TrainSpec.model_validate(train)})
    graph = graphc.build_graph(spec, classes=data.classes)
    return loop.build_run(Path("unused"), spec, graph, data, CPU, {})


def batch(data, n: int = 32):
    x = to_float(data.train.images[:n], None)
    return x, {t: data.train.labels[t][:n] for t in ("fine", "coarse")}


def spec_file(tmp_path: Path, extra: str, name: str = "ta") -> Path:
    text = SPEC.read_text().replace('name = "tiny_train"', f'name = "{name}"') + 'precision = "fp32"\n' + extra
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("method", METHODS)
def test_step_matches_torchjd_on_an_autograd_jacobian(data, method):
    """The step's gradients: torchjd's aggregator of J (per-head gradients of loss_weight x CE, by
    autograd on a copy of the model) on the shared parameters, the own head's gradient elsewhere."""
    run = make_run(data, {"name": method})
    reference = copy.deepcopy(run.model)
    x, y = batch(data)
    rng = torch.get_rng_state()  # dropout's draws: the copy's forward makes the same
    loop.train_step(run, x, y)
    torch.set_rng_state(rng)
    outputs = reference(x)
    weights = {"fine": 2.0, "coarse": 1.0}
    losses = [
        weights[t] * torch.nn.functional.cross_entropy(outputs[t], y[t], label_smoothing=s)
        for t, s in (("fine", 0.1), ("coarse", 0.0))
    ]
    names = [n for n, _ in reference.named_parameters()]
    shared = [n for n in names if n.split(".")[0] in ("trunk", "fc")]
    assert shared and len(shared) < len(names)
    params = dict(reference.named_parameters())
    grads = [
        dict(zip(names, torch.autograd.grad(l, list(params.values()), retain_graph=True, allow_unused=True)))
        for l in losses
    ]
    jacobian = torch.stack([torch.cat([g[n].flatten() for n in shared]) for g in grads])
    expected_agg = agg.make_aggregator(run.spec.train.aggregator, 2)
    with torch.random.fork_rng():
        torch.set_rng_state(torch.Generator().manual_seed(run.spec.train.seed + agg.RNG_OFFSET).get_state())
        update = expected_agg(jacobian)
    got = dict(run.model.named_parameters())
    offset = 0
    for n in shared:
        size = got[n].numel()
        torch.testing.assert_close(got[n].grad.flatten(), update[offset : offset + size], rtol=1e-5, atol=1e-7)
        offset += size
    for n in names:
        if n not in shared:  # one head's own parameters: that head's gradient
            own = [g[n] for g in grads if g[n] is not None]
            assert len(own) == 1
            torch.testing.assert_close(got[n].grad, own[0], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["upgrad", "pcgrad"])
def test_update_does_not_conflict_with_either_of_two_conflicting_tasks(method):
    aggregator = agg.make_aggregator(TrainSpec(aggregator={"name": method}).aggregator, 2)
    generator = torch.Generator().manual_seed(0)
    found = 0
    for _ in range(50):
        jacobian = torch.randn(2, 20, generator=generator)
        if jacobian[0] @ jacobian[1] >= 0:
            continue
        found += 1
        update, _ = agg.aggregate(aggregator, jacobian)
        assert (jacobian @ update >= -1e-5 * jacobian.norm(dim=1) * update.norm()).all()
        assert update.norm() > 0
    assert found > 10


def test_shared_parameters_come_from_the_ir_with_reuse_edges():
    """shared_reuse_coarse: the trunk (hard sharing) and the coarse branch (the fine head reads the
    coarse head's logits, reuse_gradient) get both tasks' gradients; the fine branch only its own."""
    spec = graphc.load_spec(Path("specs/shared_reuse_coarse.toml"))
    graph = graphc.build_graph(spec)
    model = graphc.compile_graph(graph, seed=0)
    nodes, params = agg.shared_parameters(graph, model)
    assert {"trunk_stem", "trunk_block2", "coarse_fc1", "coarse_fc2", "coarse_head"} <= set(nodes)
    assert not any(n.startswith("fine") for n in nodes)
    assert sum(p.numel() for p in params) == sum(graph[n].num_params for n in nodes)


def test_bf16_autocast_aggregates_in_fp32(data, monkeypatch):
    seen = []
    real = agg.aggregate

    def spy(aggregator, jacobian):
        seen.append((jacobian.dtype, torch.is_autocast_enabled("cpu")))
        return real(aggregator, jacobian)

    monkeypatch.setattr(agg, "aggregate", spy)
    run = make_run(data, {"name": "upgrad"}, precision="bf16")
    assert run.precision == "bf16"
    x, y = batch(data)
    _, total, _ = loop.train_step(run, x, y)
    assert seen == [(torch.float32, False)] and torch.isfinite(total)
    assert all(p.grad.dtype == torch.float32 for p in run.model.parameters() if p.grad is not None)


def test_a_non_finite_aggregate_ends_the_run_as_diverged(tmp_path, monkeypatch):
    calls = []
    real = agg.aggregate

    def poisoned(aggregator, jacobian):
        calls.append(1)
        update, weights = real(aggregator, jacobian)
        return (update * float("nan") if len(calls) == 3 else update), weights

    monkeypatch.setattr(agg, "aggregate", poisoned)
    spec = spec_file(tmp_path, 'aggregator = { name = "mgda" }\n')
    output = train(spec, "--epochs", 1, "--out", tmp_path / "r", "--quiet", "--no-test", code=1).output
    assert "diverged" in output and "step 3 of" in output
    (run,) = (tmp_path / "r" / "ta").iterdir()
    summary = json.loads((run / runs.SUMMARY).read_text())
    assert summary["status"] == "diverged" and summary["diverged"]["step"] == 3


def test_statistics_are_logged_per_epoch_and_weighting_composes(tmp_path):
    spec = spec_file(tmp_path, 'aggregator = { name = "upgrad" }\nloss_weighting = { name = "rlw" }\n')
    run = run_dir_of(train(spec, "--epochs", 2, "--out", tmp_path / "r", "--quiet", "--no-test", "--limit-train", 96))
    rows = [json.loads(line) for line in (run / runs.METRICS_JSONL).read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert len(train_rows) == 2
    for row in train_rows:
        assert 0.0 <= row["agg/conflict"] <= 1.0 and row["agg/norm_ratio"] > 0
        assert row["agg/weight/fine"] > 0 and row["agg/weight/coarse"] > 0
        assert row["weight/fine"] + row["weight/coarse"] == pytest.approx(2.0)  # rlw: K softmax
    assert train_rows[0]["agg/weight/fine"] != train_rows[1]["agg/weight/fine"]


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ('aggregator = { name = "nash_mtl" }\n', "aggregation"),
        ('aggregator = { name = "gradvac" }\n', "aggregation"),
        ('loss_weighting = { name = "famo" }\n', "weighting"),
        ('aggregator = { name = "pcgrad" }\nloss_weighting = { name = "famo" }\n', "weighting"),
    ],
)
def test_stateful_methods_resume_bit_identically(tmp_path, extra, key):
    spec = spec_file(tmp_path, extra)
    args = ("--out", tmp_path / "a", "--quiet", "--no-test", "--limit-train", 96)
    straight = run_dir_of(train(spec, "--epochs", 2, *args))
    first = run_dir_of(train(spec, "--epochs", 1, *args[:1], tmp_path / "b", *args[2:]))
    train("--resume", first, "--epochs", 2, "--quiet")
    a, b = load_checkpoint(straight / runs.LAST), load_checkpoint(first / runs.LAST)
    assert key in a
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    rows = [(straight / runs.METRICS_JSONL).read_text(), (first / runs.METRICS_JSONL).read_text()]
    strip = [
        [{k: v for k, v in json.loads(line).items() if k not in ("images_per_s", "time_s")} for line in r.splitlines()]
        for r in rows
    ]
    assert strip[0] == strip[1]


def test_famo_learns_its_logits_from_the_losses_decrease(data):
    """One step by hand: the logits' gradient is J_softmax^T (log L_before - log L_after)."""
    run = make_run(data, None, weighting={"name": "famo"})
    x, y = batch(data)
    weighting = run.weighting
    assert torch.equal(weighting.weights(), torch.ones(2))
    seen = {}
    real = weighting.learn

    def spy(parts):
        seen["before"] = weighting.before.clone()
        seen["after"] = torch.stack([parts[t] for t in weighting.tasks]) + weighting.EPS
        real(parts)

    weighting.learn = spy
    loop.train_step(run, x, y)
    delta = seen["before"].log() - seen["after"].log()
    z = torch.full((2,), 0.5)
    grad = z * (delta - (z * delta).sum())
    # Adam's first step moves every coordinate by lr * sign(grad) (weight decay of zero logits: 0)
    expected = -0.025 * torch.sign(grad)
    torch.testing.assert_close(weighting.logits.detach(), expected, rtol=1e-4, atol=1e-6)
    assert weighting.weights().sum() == pytest.approx(2.0)


def test_rlw_weights_are_k_softmax_of_normal_draws(data):
    run = make_run(data, None, weighting={"name": "rlw"})
    generator = torch.Generator().manual_seed(run.spec.train.seed + 4)
    x, y = batch(data)
    for _ in range(2):
        loop.train_step(run, x, y)
        expected = 2 * torch.softmax(torch.randn(2, generator=generator), dim=0)
        torch.testing.assert_close(run.weighting.weights(), expected)


def test_dwa_with_two_epochs_warns(tmp_path):
    spec = spec_file(tmp_path, 'loss_weighting = { name = "dwa" }\n')
    out = train(spec, "--epochs", 2, "--out", tmp_path / "r", "--no-test", "--limit-train", 64).output
    assert "dwa keeps every weight at 1 in epochs 1 and 2" in out


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ('aggregator = { name = "upgrad", c = 0.5 }\n', "unknown option 'c' for aggregator 'upgrad'"),
        ('aggregator = { name = "cagrad", cc = 0.5 }\n', "its options are c, norm_eps"),
        ('aggregator = { name = "nashmtl" }\n', 'Hint: aggregator = { name = "nash_mtl" }'),
        ('aggregator = { name = "famo" }\n', "that is a loss weighting"),
        ('aggregator = { name = "upgrad" }\nloss_weighting = { name = "gradnorm" }\n', "replaces"),
        ('aggregator = { name = "upgrad", pref_vector = [1.0, 2.0, 3.0] }\n', "2 heads"),
    ],
)
def test_spec_errors_name_the_fix(tmp_path, extra, words):
    spec = spec_file(tmp_path, extra)
    result = train(spec, "--epochs", 1, "--out", tmp_path / "r", "--quiet", code=2)
    assert words in result.output


# --------------------------------------------------------------------------- several processes


PLAIN = (('norm = "batch"\n', ""), ("dropout = 0.25", "dropout = 0.0"))  # one process and two see the same batch


def _updates(rank: int, size: int) -> dict:
    """For UPGrad, PCGrad, MGDA and CAGrad: every parameter's gradient after one training step
    (loop.train_step: DDP, its no_sync, the aggregation's all_reduce) on this process's share of a
    fixed global batch of 32, and the step's logged statistics; tiny_train without batch norm or dropout."""
    from graphc.lang.load import parse_spec
    from graphc.runtime.train.distributed import World

    text = SPEC.read_text()
    for old, new in PLAIN:
        text = text.replace(old, new)
    base = parse_spec(text)
    data = load_data(base, None, None)
    x, y = batch(data)
    world = World(rank, size, CPU)
    share = world.shard(torch.arange(32))
    result = {}
    for method in ("upgrad", "pcgrad", "mgda", "cagrad"):
        train = {**base.train.model_dump(), "precision": "fp32", "aggregator": {"name": method}}
        spec = base.model_copy(update={"train": TrainSpec.model_validate(train)})
        graph = graphc.build_graph(spec, classes=data.classes)
        run = loop.build_run(Path("unused"), spec, graph, data, CPU, {}, world)
        loop.train_step(run, x[share], {t: v[share] for t, v in y.items()})
        result[method] = {
            "grads": {n: p.grad.clone() for n, p in run.model.named_parameters()},
            "entries": run.aggregation.epoch_entries(),
        }
    return result


def _two_process_worker(rank: int, size: int, port: int, out: str) -> None:  # pragma: no cover - in a child
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size)
    try:
        torch.save(_updates(rank, size), f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_aggregate_the_global_batch_as_one(tmp_path):
    """UPGrad, PCGrad, MGDA, CAGrad in one launch of 2 gloo processes training through the loop (DDP):
    the same gradients and statistics as one process on the whole global batch, to 1e-5 (fp32)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_two_process_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    one = _updates(0, 1)
    for rank in (0, 1):
        two = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        for method, expected in one.items():
            assert set(two[method]["grads"]) == set(expected["grads"])
            for name, want in expected["grads"].items():
                torch.testing.assert_close(two[method]["grads"][name], want, rtol=1e-5, atol=1e-6)
            assert expected["entries"]
            for name, value in expected["entries"].items():
                assert two[method]["entries"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), (method, name)


def test_bench_measures_each_aggregator_beside_the_summed_losses():
    from graphc.errors import UsageError
    from graphc.runtime.bench import Bench, aggregation_cost

    bench = Bench(graphc.load_spec(SPEC), CPU, 8)
    rows = aggregation_cost(bench, ["upgrad", "pcgrad"], bench.run.execution, 0.01, 1)
    assert [r["aggregator"] for r in rows] == ["sum", "upgrad", "pcgrad"]
    assert rows[0]["relative"] == 1.0 and all(r["images_per_s"] > 0 and r["relative"] > 0 for r in rows)
    assert bench.run.aggregation is None  # the bench's run is left as it was
    with pytest.raises(UsageError, match="not an aggregator"):
        aggregation_cost(bench, ["nashmtl"], bench.run.execution, 0.01, 1)
