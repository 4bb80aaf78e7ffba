"""[train] loss_weighting: each method's step against its formula computed here with autograd,
the weights logged and learned, the default unchanged bit for bit, resume exact, --nproc."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console

import graphc
from graphc.errors import SpecError
from graphc.ir.weighting import gradnorm_node
from graphc.lang.spec import TrainSpec
from graphc.runtime.data.augment import to_float
from graphc.runtime.evaluate import evaluate_run
from graphc.runtime.metrics import compute_loss
from graphc.runtime.runs import rundir as runs
from graphc.runtime.runs.checkpoint import load_checkpoint
from graphc.runtime.train import loop
from graphc.runtime.train.launch import load_data
from graphc.runtime.train.progress import EpochProgress
from tests.conftest import TESTS, invoke, run_dir_of, train

SPEC = TESTS / "specs" / "tiny_train.toml"  # fine (loss_weight 2, smoothing 0.1) and coarse heads on "fc"
TIMING = ("images_per_s", "time_s")
CPU = torch.device("cpu")


def spec_file(tmp_path: Path, weighting: str | None, name: str = "tw") -> Path:
    """tiny_train in fp32 (exact on every CPU), with ``loss_weighting = weighting`` when given."""
    text = SPEC.read_text().replace('name = "tiny_train"', f'name = "{name}"')
    text += 'precision = "fp32"\n' + (f"loss_weighting = {weighting}\n" if weighting else "")
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def data():
    spec = graphc.load_spec(SPEC)
    return load_data(spec, None, None)


def make_run(data, weighting: dict | None) -> loop.Run:
    spec = graphc.load_spec(SPEC)
    train = {**spec.train.model_dump(), "precision": "fp32", "loss_weighting": weighting}
    spec = spec.model_copy(update={"train": TrainSpec.model_validate(train)})
    graph = graphc.build_graph(spec, classes=data.classes)
    return loop.build_run(Path("unused"), spec, graph, data, CPU, {})


def batch(data, n: int = 16):
    x = to_float(data.train.images[:n], None)
    return x, {t: data.train.labels[t][:n] for t in ("fine", "coarse")}


def reference_losses(model, x, y, seed: int = 7) -> torch.Tensor:
    """(fine, coarse) cross-entropies of a forward pass with the dropout draws of ``seed``, by hand."""
    torch.manual_seed(seed)
    out = model(x)
    return torch.stack(
        [F.cross_entropy(out["fine"], y["fine"], label_smoothing=0.1), F.cross_entropy(out["coarse"], y["coarse"])]
    )


def step(run, x, y, seed: int = 7) -> torch.Tensor:
    torch.manual_seed(seed)
    _, total, _ = loop.train_step(run, x, y)
    return total


def assert_model_grads(run, expected: tuple[torch.Tensor, ...]) -> None:
    params = [p for p in run.model.parameters() if p.requires_grad]
    assert len(params) == len(expected)
    for p, g in zip(params, expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- one step against the formula


def test_fixed_and_equal_steps_are_their_weighted_sums(data):
    x, y = batch(data)
    for table, weights in ((None, (2.0, 1.0)), ({"name": "fixed"}, (2.0, 1.0)), ({"name": "equal"}, (1.0, 1.0))):
        run = make_run(data, table)
        reference = copy.deepcopy(run.model)
        losses = reference_losses(reference, x, y)
        objective = weights[0] * losses[0] + weights[1] * losses[1]
        expected = torch.autograd.grad(objective, [p for p in reference.parameters() if p.requires_grad])
        total = step(run, x, y)
        assert_model_grads(run, expected)
        torch.testing.assert_close(total, objective.detach())
        if table is not None:
            assert run.weighting.weights().tolist() == list(weights)


def test_fixed_table_logs_exactly_compute_loss_total(data):
    """The explicit fixed table back-propagates and logs graphc.runtime.metrics.compute_loss's own total."""
    x, y = batch(data)
    run = make_run(data, {"name": "fixed"})
    reference = copy.deepcopy(run.model)
    torch.manual_seed(7)
    expected, _ = compute_loss(reference(x), y, run.heads)
    assert torch.equal(step(run, x, y), expected.detach())


def test_uncertainty_step_matches_kendall_classification_form(data):
    x, y = batch(data)
    run = make_run(data, {"name": "uncertainty"})
    s0 = torch.tensor([0.3, -0.2])
    with torch.no_grad():
        run.weighting.log_variance.copy_(s0)
    reference = copy.deepcopy(run.model)
    s = s0.clone().requires_grad_(True)
    losses = reference_losses(reference, x, y)
    objective = (torch.exp(-s) * losses).sum() + s.sum() / 2  # Kendall et al. 2018, classification form
    params = [p for p in reference.parameters() if p.requires_grad]
    *expected, expected_s = torch.autograd.grad(objective, params + [s])
    total = step(run, x, y)
    assert_model_grads(run, tuple(expected))
    torch.testing.assert_close(run.weighting.log_variance.grad, expected_s)
    torch.testing.assert_close(total, (torch.exp(-s0) * losses.detach()).sum())  # logged: no regulariser
    assert not torch.equal(run.weighting.log_variance.detach(), s0)  # the optimiser moved it
    # in the model's optimiser, without weight decay
    group = next(g for g in run.optimizer.param_groups if any(p is run.weighting.log_variance for p in g["params"]))
    assert group["weight_decay"] == 0.0 and group["lr"] == run.optimizer.param_groups[0]["lr"]


def test_dwa_weights_are_k_softmax_of_loss_ratios(data):
    x, y = batch(data)
    run = make_run(data, {"name": "dwa", "temperature": 2.0})
    assert run.weighting.weights().tolist() == [1.0, 1.0]  # epochs 1 and 2
    run.weighting.end_epoch({"fine/loss": 2.0, "coarse/loss": 1.0})
    assert run.weighting.weights().tolist() == [1.0, 1.0]
    run.weighting.end_epoch({"fine/loss": 1.5, "coarse/loss": 0.9})
    r = (1.5 / 2.0, 0.9 / 1.0)  # Liu et al. 2019 eq. 7: w_k = K exp(r_k / T) / sum_i exp(r_i / T)
    expected_w = [2 * math.exp(ri / 2) / sum(math.exp(rj / 2) for rj in r) for ri in r]
    assert run.weighting.weights().tolist() == pytest.approx(expected_w, rel=1e-6)
    reference = copy.deepcopy(run.model)
    losses = reference_losses(reference, x, y)
    objective = expected_w[0] * losses[0] + expected_w[1] * losses[1]
    expected = torch.autograd.grad(objective, [p for p in reference.parameters() if p.requires_grad])
    total = step(run, x, y)
    assert_model_grads(run, expected)
    torch.testing.assert_close(total, objective.detach())


def test_gradnorm_step_matches_chen_et_al_with_double_backward(data):
    x, y = batch(data)
    run = make_run(data, {"name": "gradnorm", "alpha": 1.5})
    assert gradnorm_node(run.graph.nodes).name == "fc"  # the last node both heads read directly
    w0, initial = torch.tensor([1.2, 0.8]), torch.tensor([2.6, 1.2])
    with torch.no_grad():
        run.weighting.task_weights.copy_(w0)
    run.weighting.initial = initial.clone()
    reference = copy.deepcopy(run.model)
    shared = list(reference.get_submodule("fc").parameters())
    w = w0.clone().requires_grad_(True)
    losses = reference_losses(reference, x, y)
    # Chen et al. 2018: G_t = ||grad_W w_t L_t||, target G_bar * r_t^alpha held constant, L_grad = sum |G_t - target_t|
    G = torch.stack(
        [
            torch.cat(
                [
                    g.flatten()
                    for g in torch.autograd.grad(w[t] * losses[t], shared, retain_graph=True, create_graph=True)
                ]
            ).norm()
            for t in range(2)
        ]
    )
    ratio = losses.detach() / initial
    target = (G.mean() * (ratio / ratio.mean()) ** 1.5).detach()
    (expected_w_grad,) = torch.autograd.grad((G - target).abs().sum(), w, retain_graph=True)
    params = [p for p in reference.parameters() if p.requires_grad]
    expected = torch.autograd.grad((w.detach() * losses).sum(), params)
    total = step(run, x, y)
    assert_model_grads(run, expected)
    torch.testing.assert_close(run.weighting.task_weights.grad, expected_w_grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(total, (w0 * losses.detach()).sum())
    new = run.weighting.weights()
    assert new.sum().item() == pytest.approx(2.0, rel=1e-6) and not torch.allclose(new, w0)  # renormalised to K


def test_gradnorm_takes_the_first_steps_losses_as_initial(data):
    x, y = batch(data)
    run = make_run(data, {"name": "gradnorm"})
    losses = reference_losses(copy.deepcopy(run.model), x, y)
    step(run, x, y)
    torch.testing.assert_close(run.weighting.initial, losses.detach())


UNSHARED = """\
name = "unshared"

[[nodes]]
name = "image"
kind = "input"
shape = [3, 16, 16]

[[nodes]]
name = "fine_fc"
kind = "fc_block"
input = "image"
units = [8]

[[nodes]]
name = "coarse_fc"
kind = "fc_block"
input = "image"
units = [8]

[[nodes]]
name = "fine_head"
kind = "head"
input = "fine_fc"
task = "fine"

[[nodes]]
name = "coarse_head"
kind = "head"
input = "coarse_fc"
task = "coarse"

[data]
dataset = "synthetic"

[train]
loss_weighting = { name = "gradnorm" }
"""


def test_gradnorm_without_a_shared_node_with_parameters_is_a_spec_error(tmp_path):
    """Both heads read only the input (no parameters) in common: nothing for GradNorm to measure."""
    path = tmp_path / "unshared.toml"
    path.write_text(UNSHARED)
    with pytest.raises(SpecError) as error:
        graphc.build_graph(graphc.load_spec(path))
    assert error.value.problems[0].field == "train.loss_weighting"
    assert "no node with parameters is read by more than one head" in str(error.value)
    assert "gradnorm" in invoke("check", path, code=2).output
    path.write_text(UNSHARED.replace('"gradnorm"', '"uncertainty"'))
    graphc.build_graph(graphc.load_spec(path))  # the other methods need no shared node


def test_unknown_weighting_names_the_choices(tmp_path):
    assert "loss_weighting" in invoke("check", spec_file(tmp_path, '{ name = "pcgrad" }'), code=2).output


# --------------------------------------------------------------------------- training runs


def rows_of(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in runs.read_metrics(run_dir)]


def test_default_trains_bit_for_bit_as_an_explicit_fixed_table(data):
    """No table: the step before this feature (no Weighting); the fixed table: the same weights, bit for bit."""
    progress = EpochProgress(Console(quiet=True), live=False)
    models = []
    for table in (None, {"name": "fixed"}):
        run = make_run(data, table)  # seeds the global generators (dropout) afresh
        assert (run.weighting is None) == (table is None)
        loop.train_epoch(run, 1, progress)
        models.append(run.model)
    plain, fixed = models
    a, b = plain.state_dict(), fixed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_uncertainty_weights_are_learned_logged_and_resume_exactly(tmp_path):
    spec = spec_file(tmp_path, '{ name = "uncertainty" }')
    straight = run_dir_of(train(spec, "--epochs", 3, "--out", tmp_path / "a", "--quiet"))
    rows = rows_of(straight)
    train_rows = [r for r in rows if r["split"] == "train"]
    weights = [(r["weight/fine"], r["weight/coarse"]) for r in train_rows]
    assert len(set(weights)) == 3 and weights[0] != (1.0, 1.0)  # learned: they change every epoch
    assert all("weight/fine" not in r for r in rows if r["split"] == "val")  # training rows only
    # the last epoch's logged weights are exp(-s) of the checkpoint's log-variances
    state = load_checkpoint(straight / runs.LAST)["weighting"]
    assert state["name"] == "uncertainty"
    assert list(weights[-1]) == pytest.approx(torch.exp(-state["log_variance"]).tolist(), rel=1e-6)
    # a validation row's loss: the weighted sum of its parts with the epoch's weights
    for tr, val in zip(train_rows, [r for r in rows if r["split"] == "val"]):
        assert val["loss"] == pytest.approx(
            tr["weight/fine"] * val["fine/loss"] + tr["weight/coarse"] * val["coarse/loss"]
        )
    # graphc report plots them
    invoke("report", straight, "--out", tmp_path / "report")
    assert (tmp_path / "report" / "weight_fine.png").is_file() and (tmp_path / "report" / "weight_coarse.svg").is_file()
    # resume
    first = run_dir_of(train(spec, "--epochs", 1, "--out", tmp_path / "b", "--quiet"))
    train("--resume", first, "--epochs", 3, "--quiet")
    assert rows_of(first) == rows
    a, b = load_checkpoint(straight / runs.LAST), load_checkpoint(first / runs.LAST)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["weighting"]["log_variance"], b["weighting"]["log_variance"])
    # the test split's loss: with the best epoch's weights
    summary = runs.read_json(straight / runs.SUMMARY)
    best, test = train_rows[summary["best_epoch"] - 1], summary["test"]
    assert test["loss"] == pytest.approx(
        best["weight/fine"] * test["fine/loss"] + best["weight/coarse"] * test["coarse/loss"]
    )
    assert evaluate_run(straight, split="test").metrics["loss"] == pytest.approx(
        test["loss"], rel=1e-5
    )  # graphc eval agrees


def test_dwa_resumes_exactly_and_logs_its_epoch_weights(tmp_path):
    spec = spec_file(tmp_path, '{ name = "dwa", temperature = 2.0 }')
    straight = run_dir_of(train(spec, "--epochs", 3, "--out", tmp_path / "a", "--quiet"))
    first = run_dir_of(train(spec, "--epochs", 2, "--out", tmp_path / "b", "--quiet"))
    train("--resume", first, "--epochs", 3, "--quiet")  # epoch 3's weights come from the checkpoint's history
    rows = rows_of(straight)
    assert rows_of(first) == rows
    a, b = load_checkpoint(straight / runs.LAST), load_checkpoint(first / runs.LAST)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["weighting"] == b["weighting"] and len(a["weighting"]["history"]) == 2
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [(r["weight/fine"], r["weight/coarse"]) for r in train_rows[:2]] == [(1.0, 1.0), (1.0, 1.0)]
    r = [train_rows[1][f"{t}/loss"] / train_rows[0][f"{t}/loss"] for t in ("fine", "coarse")]
    expected = [2 * math.exp(ri / 2) / sum(math.exp(rj / 2) for rj in r) for ri in r]
    assert [train_rows[2]["weight/fine"], train_rows[2]["weight/coarse"]] == pytest.approx(expected, rel=1e-5)
    # weights constant within the epoch: the logged total is exactly the weighted sum of the logged parts
    for row in train_rows:
        assert row["loss"] == pytest.approx(
            row["weight/fine"] * row["fine/loss"] + row["weight/coarse"] * row["coarse/loss"], rel=1e-6
        )


def test_weights_are_watchable_with_the_table_only(tmp_path):
    spec = (
        spec_file(tmp_path, '{ name = "equal" }')
        .read_text()
        .replace(
            'select = { metric = "val/fine/acc", mode = "max" }',
            'select = { metric = "train/weight/fine", mode = "max" }',
        )
    )
    path = tmp_path / "watch.toml"
    path.write_text(spec)
    graphc.build_graph(graphc.load_spec(path))  # a known name with the table
    without = SPEC.read_text().replace(
        'select = { metric = "val/fine/acc", mode = "max" }', 'select = { metric = "train/weight/fine", mode = "max" }'
    )
    (tmp_path / "nowatch.toml").write_text(without)
    with pytest.raises(SpecError, match=r"loss weights are logged only with a \[train\] loss_weighting table"):
        graphc.build_graph(graphc.load_spec(tmp_path / "nowatch.toml"))


NO_NORM_NO_DROPOUT = (
    ('norm = "batch"\n', ""),
    ("dropout = 0.25", "dropout = 0.0"),
    ('augment = { preset = "flip_crop", padding = 1 }', 'augment = { preset = "none" }'),
    ('optimizer = { name = "adam", lr = 3e-3, eps = 1e-7 }', 'optimizer = { name = "sgd", lr = 0.5, momentum = 0.0 }'),
)


def plain_spec(tmp_path: Path, weighting: str) -> Path:
    """spec_file without batch norm, dropout or augmentation: one process and two see the same batch."""
    text = spec_file(tmp_path, weighting).read_text()
    for old, new in NO_NORM_NO_DROPOUT:
        text = text.replace(old, new)
    spec = tmp_path / "plain.toml"
    spec.write_text(text)
    return spec


@pytest.mark.slow
def test_uncertainty_on_two_processes_learns_the_same_log_variances(tmp_path):
    """The log-variances' gradients are averaged over the processes, as DDP averages the model's:
    one step on two processes equals one on one process (no batch norm, dropout or augmentation)."""
    spec = plain_spec(tmp_path, '{ name = "uncertainty" }')
    args = ("--epochs", 1, "--limit-train", 32, "--quiet")  # one batch of 32: one step
    one = run_dir_of(train(spec, *args, "--out", tmp_path / "one"))
    two = run_dir_of(train(spec, *args, "--nproc", 2, "--out", tmp_path / "two"))
    a, b = (load_checkpoint(d / runs.LAST)["weighting"]["log_variance"] for d in (one, two))
    assert a.abs().max() > 1e-3
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_gradnorm_on_two_processes_equals_one(tmp_path):
    """GradNorm's norms and loss ratios are the global batch's: two steps on two processes give the
    weights, initial losses and model of two steps on one."""
    spec = plain_spec(tmp_path, '{ name = "gradnorm" }')
    args = ("--epochs", 1, "--limit-train", 64, "--quiet")  # two batches of 32: two steps
    one = run_dir_of(train(spec, *args, "--out", tmp_path / "one"))
    two = run_dir_of(train(spec, *args, "--nproc", 2, "--out", tmp_path / "two"))
    a, b = (load_checkpoint(d / runs.LAST) for d in (one, two))
    assert not torch.equal(a["weighting"]["weights"], torch.ones(2))
    torch.testing.assert_close(b["weighting"]["weights"], a["weighting"]["weights"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(b["weighting"]["initial"], a["weighting"]["initial"], rtol=1e-5, atol=1e-7)
    for key in a["model"]:
        torch.testing.assert_close(b["model"][key], a["model"][key], rtol=1e-5, atol=1e-6)


def test_learned_weights_with_a_node_unfrozen_mid_run_resume_exactly(tmp_path):
    """Uncertainty weighting's optimiser group and an unfrozen node's group (added after it in
    epoch 2) come back in the same order on resume, with their state: the run continues exactly."""
    spec = spec_file(tmp_path, '{ name = "uncertainty" }')
    flags = ("--freeze", "trunk", "--unfreeze-after", 1, "--quiet", "--no-test")
    straight = run_dir_of(train(spec, "--epochs", 3, "--out", tmp_path / "a", *flags))
    for cut in (1, 2):  # resumed before the unfreeze and after it
        first = run_dir_of(train(spec, "--epochs", cut, "--out", tmp_path / f"cut{cut}", *flags))
        train("--resume", first, "--epochs", 3, "--quiet")
        assert rows_of(first) == rows_of(straight), cut
        a, b = load_checkpoint(straight / runs.LAST), load_checkpoint(first / runs.LAST)
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), cut
        assert torch.equal(a["weighting"]["log_variance"], b["weighting"]["log_variance"]), cut
        assert [len(g["params"]) for g in a["optimizer"]["param_groups"]] == [
            len(g["params"]) for g in b["optimizer"]["param_groups"]
        ]
