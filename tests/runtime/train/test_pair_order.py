"""Gradient diagnostics name a pair of tasks in sorted order (``diag/NODE/cos/coarse:fine``) whatever
the spec's head order, and what graphc before 0.4 wrote in head order still reads as that name."""

from __future__ import annotations

import json

import pytest

import graphc
from graphc.errors import SpecError
from graphc.ir.gradients import reused_branches, shared_nodes
from graphc.ir.metrics import canonical_name, cosine_name, diagnostic_names
from graphc.runtime.train import diagnostics as diag
from tests.conftest import TINY_SPEC

FINE_FIRST = TINY_SPEC  # heads: fine, then coarse
COARSE_FIRST = (
    TINY_SPEC.replace('name = "fine_head"', 'name = "first_head"')
    .replace('task = "fine"', 'task = "FIRST"')
    .replace('task = "coarse"', 'task = "fine"')
    .replace('task = "FIRST"', 'task = "coarse"')
)


def cosines(text: str) -> list[str]:
    graph = graphc.build_graph(graphc.parse_spec(text))
    return [n for n in diagnostic_names(shared_nodes(graph), reused_branches(graph)) if "/cos/" in n]


def test_both_head_orders_name_the_pair_alike():
    assert [h for h in graphc.build_graph(graphc.parse_spec(COARSE_FIRST)).tasks] == ["coarse", "fine"]
    assert cosines(FINE_FIRST) == cosines(COARSE_FIRST) == ["diag/trunk/cos/coarse:fine"]
    assert cosine_name("trunk", "fine", "coarse") == cosine_name("trunk", "coarse", "fine")


def test_the_measured_values_carry_the_sorted_name():
    import torch

    graph = graphc.build_graph(graphc.parse_spec(FINE_FIRST))
    shared = shared_nodes(graph)
    gradients = {"trunk": {"fine": torch.tensor([1.0, 0.0]), "coarse": torch.tensor([1.0, 1.0])}}
    values = diag.conflict_metrics(gradients, shared, reused_branches(graph))
    assert values["diag/trunk/cos/coarse:fine"] == pytest.approx(2**-0.5)
    assert "diag/trunk/cos/fine:coarse" not in values


@pytest.mark.parametrize(
    "old, new",
    [
        ("diag/trunk/cos/fine:coarse", "diag/trunk/cos/coarse:fine"),
        ("train/diag/trunk/cos/fine:coarse", "train/diag/trunk/cos/coarse:fine"),
        ("diag/trunk/cos/coarse:fine", "diag/trunk/cos/coarse:fine"),
        ("diag/trunk/norm/fine", "diag/trunk/norm/fine"),
        ("fine/acc", "fine/acc"),
    ],
)
def test_old_names_read_as_the_sorted_ones(old, new):
    assert canonical_name(old) == new


def test_a_run_logged_in_head_order_is_drawn_under_the_sorted_name(tmp_path):
    row = {"epoch": 1, "split": "train", "loss": 1.0, "diag/trunk/cos/fine:coarse": -0.25, "diag/trunk/norm/fine": 2.0}
    (tmp_path / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    epoch, values = diag.last_diagnostics(tmp_path)
    assert epoch == 1 and values == {"diag/trunk/cos/coarse:fine": -0.25, "diag/trunk/norm/fine": 2.0}


def test_watching_the_old_name_says_the_new_one():
    text = (
        FINE_FIRST
        + '\n[train]\ndiagnostics = true\nselect = { metric = "train/diag/trunk/cos/fine:coarse", mode = "max" }\n'
    )
    with pytest.raises(SpecError, match="logs as 'train/diag/trunk/cos/coarse:fine'"):
        graphc.build_graph(graphc.parse_spec(text))
    fixed = text.replace("fine:coarse", "coarse:fine")
    graphc.build_graph(graphc.parse_spec(fixed))  # accepted


def test_a_run_that_watched_the_old_name_resumes_watching_the_new_one(tmp_path):
    from graphc.runtime.runs import rundir as runs
    from tests.conftest import run_dir_of, train

    spec = tmp_path / "tiny.toml"
    select = 'select = { metric = "train/diag/trunk/cos/coarse:fine", mode = "max" }'
    spec.write_text(FINE_FIRST + f"\n[train]\nepochs = 1\nbatch_size = 16\ndiagnostics = true\n{select}\n")
    run_dir = run_dir_of(train(spec, "--limit-train", "64", "--no-test", "--out", tmp_path / "runs", "--quiet"))
    # as graphc 0.3 left it: the pair in head order (fine, coarse) in the record and the rows
    config = runs.read_json(run_dir / runs.CONFIG)
    config["train"]["select"]["metric"] = "train/diag/trunk/cos/fine:coarse"
    (run_dir / runs.CONFIG).write_text(json.dumps(config))
    text = (run_dir / runs.METRICS_JSONL).read_text()
    (run_dir / runs.METRICS_JSONL).write_text(text.replace("cos/coarse:fine", "cos/fine:coarse"))
    train("--resume", run_dir, "--epochs", "2", "--quiet")
    assert runs.read_json(run_dir / runs.CONFIG)["train"]["select"]["metric"] == "train/diag/trunk/cos/coarse:fine"
    rows = [r for r in runs.read_metrics(run_dir) if r["split"] == "train"]
    assert "diag/trunk/cos/fine:coarse" in rows[0] and "diag/trunk/cos/coarse:fine" in rows[1]
    assert runs.read_json(run_dir / runs.SUMMARY)["status"] == "completed"
