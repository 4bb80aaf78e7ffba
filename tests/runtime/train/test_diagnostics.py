"""Gradient-conflict diagnostics ([train] diagnostics, --diagnostics): the numbers against
autograd done by hand, the reuse share, reuse_gradient = false, models with nothing shared,
the training left exactly as it is, the metric names, and render --diagnostics."""

from __future__ import annotations

import math
import re

import pytest
import torch

import graphc
from graphc.backends.diagram.style import conflict_color, share_color, share_text
from graphc.errors import SpecError
from graphc.ir.gradients import gradient_tasks, reused_branches, shared_nodes
from graphc.ir.metrics import diagnostic_names
from graphc.runtime.metrics import heads_of
from graphc.runtime.runs import rundir as runs
from graphc.runtime.runs.checkpoint import load_checkpoint
from graphc.runtime.train import diagnostics as diag
from tests.conftest import REPO, invoke, run_dir_of, train

# shared_reuse_coarse in small: a shared trunk; the fine head reads the coarse head's logits.
# Batch norm and dropout everywhere, so the no-change test covers running statistics and the RNG.
REUSE_SPEC = """\
name = "tiny_reuse"

[[nodes]]
name = "image"
kind = "input"
shape = [3, 12, 12]

[[nodes]]
name = "trunk"
kind = "conv_block"
input = "image"
channels = [6]
pool = "max"
norm = "batch"

[[nodes]]
name = "fine_fc"
kind = "fc_block"
input = "trunk"
units = [16]
dropout = 0.25
norm = "batch"

[[nodes]]
name = "coarse_fc"
kind = "fc_block"
input = "trunk"
units = [16]
dropout = 0.25
norm = "batch"

[[nodes]]
name = "coarse_head"
kind = "head"
input = "coarse_fc"
task = "coarse"
classes = 3
{coarse_extra}

[[nodes]]
name = "fine_concat"
kind = "concat"
inputs = ["fine_fc", "coarse_head"]

[[nodes]]
name = "fine_head"
kind = "head"
input = "fine_concat"
task = "fine"
classes = 12
loss_weight = 2.0
label_smoothing = 0.1

[data]
dataset = "synthetic"
val_fraction = 0.25
synthetic = {{ classes = 12, coarse_classes = 3, train_size = 240, test_size = 60, noise = 0.05 }}
augment = {{ preset = "flip_crop", padding = 1 }}

[train]
epochs = 2
batch_size = 32
precision = "fp32"
optimizer = {{ name = "adam", lr = 3e-3, eps = 1e-7 }}
{train_extra}
"""

# Two trunks, no reuse: no node with parameters gets two tasks' gradients.
INDEPENDENT_SPEC = """\
name = "tiny_independent"

[[nodes]]
name = "image"
kind = "input"
shape = [3, 12, 12]

[[nodes]]
name = "fine_trunk"
kind = "conv_block"
input = "image"
channels = [4]
pool = "max"

[[nodes]]
name = "coarse_trunk"
kind = "conv_block"
input = "image"
channels = [4]
pool = "max"

[[nodes]]
name = "fine_head"
kind = "head"
input = "fine_trunk"
task = "fine"
classes = 12

[[nodes]]
name = "coarse_head"
kind = "head"
input = "coarse_trunk"
task = "coarse"
classes = 3

[data]
dataset = "synthetic"
val_fraction = 0.25
synthetic = { classes = 12, coarse_classes = 3, train_size = 160, test_size = 40 }

[train]
epochs = 1
batch_size = 32
precision = "fp32"
"""


def reuse_spec(coarse_extra: str = "", train_extra: str = "") -> str:
    return REUSE_SPEC.format(coarse_extra=coarse_extra, train_extra=train_extra)


def graph_of(text: str) -> graphc.Graph:
    return graphc.build_graph(graphc.parse_spec(text))


def batches_of(graph: graphc.Graph, count: int = 3, size: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    classes = {h.attrs["task"]: h.attrs["classes"] for h in graph.heads}
    return [
        (
            torch.rand(size, *graph.input.shape, generator=generator),
            {t: torch.randint(0, c, (size,), generator=generator) for t, c in classes.items()},
        )
        for _ in range(count)
    ]


def direct_gradients(model, graph, batches, node_names, task, weight, heads):
    """Task ``task``'s gradient on the parameters of ``node_names``, by hand: per batch one forward
    (dropout masks fixed by reseeding before it) and ``backward()`` of weight x that task's own
    cross-entropy into ``.grad``, averaged over the batches. Independent of graphc.runtime.train.diagnostics."""
    head = next(h for h in heads if h.task == task)
    params = [p for name in node_names for p in getattr(model, name).parameters()]
    total = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    for i, (x, labels) in enumerate(batches):
        torch.manual_seed(100 + i)
        model.zero_grad(set_to_none=True)
        loss = weight * torch.nn.functional.cross_entropy(
            model(x)[task], labels[task], label_smoothing=head.label_smoothing
        )
        loss.backward()
        for t, p in zip(total, params):
            if p.grad is not None:
                t += p.grad.double()
    return torch.cat([t.reshape(-1) for t in total]) / len(batches)


def measured(model, graph, batches, weights):
    """graphc.runtime.train.diagnostics on the same batches, with the same dropout masks per batch."""
    heads = heads_of(graph)
    shared, branches = shared_nodes(graph), reused_branches(graph)
    calls = []

    def reseed(module, args):  # before each forward, as direct_gradients does
        torch.manual_seed(100 + len(calls))
        calls.append(1)

    hook = model.register_forward_pre_hook(reseed)
    try:
        gradients = diag.task_gradients(model, batches, heads, weights, diag.places(shared, branches))
    finally:
        hook.remove()
    assert len(calls) == len(batches)  # one forward per batch, every task's gradient from it
    return diag.conflict_metrics(gradients, shared, branches), heads


# --------------------------------------------------------------------------- the IR's facts


def test_places_come_from_the_ir():
    graph = graph_of(reuse_spec())
    assert [(n.name, n.tasks) for n in shared_nodes(graph)] == [
        ("trunk", ("coarse", "fine")),
        ("coarse_fc", ("coarse", "fine")),
        ("coarse_head", ("coarse", "fine")),
    ]
    (branch,) = reused_branches(graph)
    assert (branch.head, branch.task, branch.nodes, branch.readers, branch.detached) == (
        "coarse_head",
        "coarse",
        ("coarse_fc", "coarse_head"),
        ("fine",),
        (),
    )
    # The reference specs: a shared trunk is shared; the reused coarse branch is measured too.
    reference = graphc.build_graph(graphc.load_spec(REPO / "specs" / "shared_reuse_coarse.toml"))
    assert [n.name for n in shared_nodes(reference)] == [
        "trunk_stem",
        "trunk_block1",
        "trunk_block2",
        "coarse_fc1",
        "coarse_fc2",
        "coarse_head",
    ]
    assert reused_branches(reference)[0].nodes == ("coarse_fc1", "coarse_fc2", "coarse_head")
    independent = graphc.build_graph(graphc.load_spec(REPO / "specs" / "independent.toml"))
    assert shared_nodes(independent) == [] and diagnostic_names([], []) == []


# --------------------------------------------------------------------------- the numbers


def test_norms_and_cosines_equal_autograd_by_hand():
    graph = graph_of(reuse_spec())
    model = graphc.compile_graph(graph, seed=3).train()
    batches = batches_of(graph)
    weights = {"coarse": 1.0, "fine": 2.0}
    values, heads = measured(model, graph, batches, weights)
    for node in ("trunk", "coarse_fc", "coarse_head"):
        g = {t: direct_gradients(model, graph, batches, [node], t, weights[t], heads) for t in ("coarse", "fine")}
        for task in ("coarse", "fine"):
            assert values[f"diag/{node}/norm/{task}"] == pytest.approx(float(g[task].norm()), rel=1e-6, abs=1e-9)
        cosine = float(g["coarse"] @ g["fine"]) / float(g["coarse"].norm() * g["fine"].norm())
        assert values[f"diag/{node}/cos/coarse:fine"] == pytest.approx(cosine, abs=1e-6)
        assert g["fine"].norm() > 0 and g["coarse"].norm() > 0  # both tasks really reach every shared node
    # the weights scale the norms, not the cosines
    doubled, _ = measured(model, graph, batches, {"coarse": 2.0, "fine": 2.0})
    assert doubled["diag/trunk/norm/coarse"] == pytest.approx(2 * values["diag/trunk/norm/coarse"], rel=1e-6)
    assert doubled["diag/trunk/cos/coarse:fine"] == pytest.approx(values["diag/trunk/cos/coarse:fine"], abs=1e-6)


def test_reuse_share_equals_a_direct_computation():
    graph = graph_of(reuse_spec())
    model = graphc.compile_graph(graph, seed=5).train()
    batches = batches_of(graph, seed=1)
    weights = {"coarse": 1.0, "fine": 2.0}
    values, heads = measured(model, graph, batches, weights)
    branch = ["coarse_fc", "coarse_head"]
    own = direct_gradients(model, graph, batches, branch, "coarse", 1.0, heads).norm()
    reader = direct_gradients(model, graph, batches, branch, "fine", 2.0, heads).norm()
    share = float(reader / (own + reader))
    assert 0.0 < share < 1.0
    assert values["diag/coarse_head/share/fine"] == pytest.approx(share, abs=1e-6)


def test_reuse_gradient_false_gives_share_zero_by_construction():
    graph = graph_of(reuse_spec(coarse_extra="reuse_gradient = false"))
    assert gradient_tasks(graph)["coarse_fc"] == frozenset({"coarse"})
    assert [n.name for n in shared_nodes(graph)] == ["trunk"]  # the coarse branch gets coarse's gradient only
    (branch,) = reused_branches(graph)
    assert branch.detached == ("fine",)
    model = graphc.compile_graph(graph, seed=0).train()
    batches = batches_of(graph)
    values, heads = measured(model, graph, batches, {"coarse": 1.0, "fine": 2.0})
    assert values["diag/coarse_head/share/fine"] == 0.0
    # ...and it is 0: no gradient of the fine loss reaches the branch
    assert direct_gradients(model, graph, batches, ["coarse_fc", "coarse_head"], "fine", 2.0, heads).abs().max() == 0
    assert "diag/coarse_fc/norm/fine" not in values
    assert set(values) == set(diagnostic_names(shared_nodes(graph), reused_branches(graph))) - {"diag/time_s"}


# --------------------------------------------------------------------------- in training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny reuse spec trained twice, 2 epochs, without and with --diagnostics."""
    root = tmp_path_factory.mktemp("diag")
    spec = root / "tiny_reuse.toml"
    spec.write_text(reuse_spec())
    off = run_dir_of(train(spec, "--out", root / "off", "--quiet", "--no-test"))
    on_result = train(spec, "--diagnostics", "--out", root / "on", "--quiet", "--no-test")
    return spec, off, run_dir_of(on_result), on_result


def test_diagnostics_leave_the_training_exactly_as_it_is(trained):
    _, off, on, _ = trained
    a, b = load_checkpoint(off / "last.pt"), load_checkpoint(on / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:  # weights and batch-norm statistics, bit for bit
        assert torch.equal(a["model"][key], b["model"][key]), key
    for state_a, state_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(state_a["exp_avg"], state_b["exp_avg"])
    for name in ("torch", "shuffle", "augment"):
        assert torch.equal(a["rng"][name], b["rng"][name]), name
    timing = ("images_per_s", "time_s")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing and not k.startswith("diag/")} for r in rows]
    assert strip(runs.read_metrics(off)) == strip(runs.read_metrics(on))


def test_off_by_default_and_never_called(tmp_path, monkeypatch, trained):
    """With diagnostics off nothing of them runs, and the run is the one trained before (bit for bit)."""
    spec, off, _, _ = trained
    assert graphc.parse_spec(reuse_spec()).train.diagnostics is False

    def refuse(*args, **kwargs):
        raise AssertionError("diagnostics measured with diagnostics off")

    monkeypatch.setattr(diag, "task_gradients", refuse)
    again = run_dir_of(train(spec, "--out", tmp_path, "--quiet", "--no-test"))
    assert not any(k.startswith("diag/") for r in runs.read_metrics(again) for k in r)
    a, b = load_checkpoint(off / "last.pt")["model"], load_checkpoint(again / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_logged_names_are_the_documented_ones(trained):
    spec, _, on, result = trained
    graph = graphc.build_graph(graphc.load_spec(spec))
    expected = diagnostic_names(shared_nodes(graph), reused_branches(graph))
    assert expected == [
        "diag/trunk/norm/coarse",
        "diag/trunk/norm/fine",
        "diag/trunk/cos/coarse:fine",
        "diag/coarse_fc/norm/coarse",
        "diag/coarse_fc/norm/fine",
        "diag/coarse_fc/cos/coarse:fine",
        "diag/coarse_head/norm/coarse",
        "diag/coarse_head/norm/fine",
        "diag/coarse_head/cos/coarse:fine",
        "diag/coarse_head/share/fine",
        "diag/time_s",
    ]
    rows = runs.read_metrics(on)
    for row in rows:
        logged = [k for k in row if k.startswith("diag/")]
        assert logged == (expected if row["split"] == "train" else [])
    last = [r for r in rows if r["split"] == "train"][-1]
    assert all(-1 <= last[k] <= 1 for k in expected if "/cos/" in k)
    assert 0 < last["diag/coarse_head/share/fine"] < 1
    assert "diagnostics: gradients of coarse, fine on 3 shared node(s) and 1 reused branch(es)" in result.stderr
    # diagnostics do not make a variant of their own in graphc report
    from graphc.runtime.report.build import variant_settings

    configs = [runs.read_json(d / "config.json") for d in (trained[1], on)]
    assert variant_settings(configs[0]) == variant_settings(configs[1])


def test_select_accepts_diagnostic_metrics_only_with_diagnostics(write_spec):
    select = 'select = { metric = "train/diag/trunk/cos/coarse:fine", mode = "max" }'
    graph_of(reuse_spec(train_extra=f"diagnostics = true\n{select}"))  # accepted
    with pytest.raises(SpecError, match="does not log"):
        graph_of(reuse_spec(train_extra=select))
    with pytest.raises(SpecError, match="does not log"):  # a diagnostic of a node that is not shared
        graph_of(reuse_spec(train_extra='diagnostics = true\nselect = { metric = "train/diag/fine_fc/norm/fine" }'))
    path = write_spec(reuse_spec(train_extra=select))
    assert "does not log" in invoke("check", path, code=2).output  # check says what train would


def test_nothing_shared_is_a_note_not_an_error(write_spec, tmp_path):
    path = write_spec(INDEPENDENT_SPEC, "tiny_independent")
    result = train(path, "--diagnostics", "--out", tmp_path, "--quiet", "--no-test")
    assert "diagnostics: nothing to measure" in result.stderr
    assert not any(k.startswith("diag/") for r in runs.read_metrics(run_dir_of(result)) for k in r)


# --------------------------------------------------------------------------- report and render


def test_report_plots_diagnostics_and_keeps_them_out_of_the_tables(trained, tmp_path):
    _, off, on, _ = trained
    result = invoke("report", off, on, "-o", tmp_path / "report")
    for name in ("diag_trunk", "diag_coarse_fc", "diag_coarse_head", "diag_share"):
        assert (tmp_path / "report" / f"{name}.png").is_file()
    assert "diag/" not in (tmp_path / "report" / "results.csv").read_text()
    assert "diag/" not in result.stdout


def test_render_colours_boxes_and_reuse_edges_by_the_last_epoch(trained, tmp_path):
    spec, _, on, _ = trained
    last = [r for r in runs.read_metrics(on) if r["split"] == "train"][-1]
    out = tmp_path / "diag.svg"
    invoke("render", spec, "--diagnostics", on, "-o", out)
    svg = out.read_text()
    plain = graphc.backends.diagram.render.render(graphc.build_graph(graphc.load_spec(spec)), "svg").decode()
    assert svg != plain
    # the trunk's border has the colour of its cosine, the reuse edge that of the fine task's share
    trunk = re.search(r'<g id="node--tiny_reuse--trunk">(.*?)</g>', svg, re.S).group(1)
    assert f"stroke: {conflict_color(last['diag/trunk/cos/coarse:fine'])}" in trunk
    edge = re.search(r'<g id="edge--tiny_reuse--coarse_head--fine_concat">(.*?)</g>', svg, re.S).group(1)
    assert f"stroke: {share_color(last['diag/coarse_head/share/fine'])}" in edge
    assert f"fine share {share_text(last['diag/coarse_head/share/fine'])}" in svg
    assert f"grad cos {last['diag/trunk/cos/coarse:fine']:+.2f}" in svg


def test_render_diagnostics_errors(trained, tmp_path):
    spec, off, on, _ = trained
    cases = [
        (
            ["render", str(spec), "--diagnostics", str(off), "-o", str(tmp_path / "a.svg")],
            1,
            "logged no gradient diagnostics",
        ),
        (
            ["render", str(spec), "--diagnostics", str(tmp_path), "-o", str(tmp_path / "b.svg")],
            2,
            "not a run directory",
        ),
        (["render", str(spec), "--diagnostics", str(on), "-o", str(tmp_path / "c.dot")], 2, "colours pictures"),
    ]
    for args, code, words in cases:
        assert words in invoke(*args, code=code).output


def test_colour_scales():
    assert conflict_color(-1.0) == "#c62828" and conflict_color(0.0) == "#9e9e9e" and conflict_color(1.0) == "#1565c0"
    assert conflict_color(-5.0) == conflict_color(-1.0) and math.isclose(
        int(conflict_color(-0.5)[1:3], 16), (0x9E + 0xC6) / 2, abs_tol=1
    )
    assert share_color(0.0) == "#00838f" and share_color(1.0) == "#c62828"
    assert share_text(0.0013) == "0.1%" and share_text(0.27) == "27%"


def test_frozen_nodes_keep_their_norm_statistics_while_measured(tmp_path, monkeypatch):
    """The gradients are those of a training step: there a frozen node's batch norm normalises with
    its running statistics (runtime/train/freeze.py), so it must in the measurement too."""
    spec = tmp_path / "tiny_reuse.toml"
    spec.write_text(reuse_spec())
    seen = []
    measure = diag.task_gradients

    def spy(model, *args, **kwargs):
        seen.append(
            [
                m.training
                for m in model.get_submodule("trunk").modules()
                if isinstance(m, torch.nn.modules.batchnorm._NormBase)
            ]
        )
        return measure(model, *args, **kwargs)

    monkeypatch.setattr(diag, "task_gradients", spy)
    run = run_dir_of(
        train(
            spec,
            "--diagnostics",
            "--freeze",
            "trunk",
            "--epochs",
            "1",
            "--out",
            tmp_path / "runs",
            "--quiet",
            "--no-test",
        )
    )
    assert seen and all(flags and not any(flags) for flags in seen)
    (row,) = [r for r in runs.read_metrics(run) if r["split"] == "train"]
    assert "diag/coarse_fc/norm/fine" in row and not any(k.startswith("diag/trunk/") for k in row)


def test_diagnostics_can_be_turned_on_when_resuming(tmp_path):
    """--diagnostics with --resume measures the epochs trained from then on (it was silently ignored)."""
    spec = tmp_path / "tiny_reuse.toml"
    spec.write_text(reuse_spec())
    run = run_dir_of(train(spec, "--epochs", "1", "--out", tmp_path / "runs", "--quiet", "--no-test"))
    train("--resume", run, "--epochs", "2", "--diagnostics", "--quiet")
    rows = [r for r in runs.read_metrics(run) if r["split"] == "train"]
    assert [any(k.startswith("diag/") for k in r) for r in rows] == [False, True]
