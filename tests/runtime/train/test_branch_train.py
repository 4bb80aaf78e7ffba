"""graphc branch on disk and on the command line: the family's folder (members, family.json, the
picture), its table and exit codes, and --train: the family trained through the sweep, resumably,
and ranked on the test split with verdicts against the fully shared member."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_SPEC, invoke

import graphc
from graphc.ir.branch import branch_family
from graphc.runtime.branching.family import FAMILY_JSON, RANKING_JSON, default_metric, write_family

# TINY_SPEC with a two-node trunk: image -> stem -> trunk -> two heads (three branch points)
TWO_STAGE = TINY_SPEC.replace('name = "tiny"', 'name = "two_stage"').replace(
    '[[nodes]]\nname = "trunk"\nkind = "conv_block"\ninput = "image"',
    '[[nodes]]\nname = "stem"\nkind = "conv_block"\ninput = "image"\nchannels = [4]\n\n'
    '[[nodes]]\nname = "trunk"\nkind = "conv_block"\ninput = "stem"',
)


@pytest.fixture
def spec(write_spec) -> Path:
    return write_spec(TWO_STAGE, "two_stage")


def test_the_family_folder_holds_members_their_table_and_a_picture(spec: Path, tmp_path: Path):
    family = branch_family(spec)
    written = write_family(family, tmp_path / "family")
    names = sorted(p.name for p in written)
    assert names == sorted(
        [
            "two_stage__branch_00_nothing_shared.toml",
            "two_stage__branch_01_after_stem.toml",
            "two_stage__branch_02_everything_shared.toml",
            FAMILY_JSON,
            "family.svg",
            "family.png",
        ]
    )
    document = json.loads((tmp_path / "family" / FAMILY_JSON).read_text())
    rows = document["members"]
    assert [r["branch_point"] for r in rows] == [None, "stem", "trunk"]
    assert [r["depth"] for r in rows] == [0, 1, 2]
    for row in rows:  # each entry is its file's graph
        graph = graphc.build_graph(graphc.load_spec(tmp_path / "family" / row["file"]))
        assert row["trainable_params"] == graph.trainable_params
        assert row["shared_fraction"] == pytest.approx(graph.hard_shared_params / graph.total_params)
    # stem 3->4 conv (112), trunk 4->4 conv (148), heads 4*4*4 -> 4 and 2 classes (260, 130): by hand
    assert [r["trainable_params"] for r in rows] == [2 * (112 + 148) + 390, 112 + 2 * 148 + 390, 112 + 148 + 390]
    assert (tmp_path / "family" / "family.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (tmp_path / "family" / "family.svg").read_text()
    assert all(r["name"] in svg for r in rows)


def test_the_command_prints_the_family_and_refuses_what_it_cannot_branch(spec: Path, tmp_path: Path, write_spec):
    result = invoke("branch", spec, "--out", tmp_path / "f")
    assert "two_stage__branch_01_after_stem" in result.stdout and "branch point" in result.stdout
    assert (tmp_path / "f" / "two_stage__branch_00_nothing_shared.toml").exists()
    one_path = write_spec(
        TWO_STAGE.replace('input = "trunk"\ntask = "coarse"', 'input = "image"\ntask = "coarse"'), "x"
    )
    result = invoke("branch", one_path, "--out", tmp_path / "g", code=2)
    assert "nothing to branch" in result.output
    invoke("branch", write_spec("[[nodes]]\nname = 1\n", "bad"), "--out", tmp_path / "h", code=2)
    result = invoke("branch", spec, "--out", tmp_path / "i", "--epochs", "1", code=2)
    assert "go with --train or --score" in result.output
    result = invoke("branch", spec, "--out", tmp_path / "j", "--max-params", "10", code=2)
    assert "every member of the family is larger" in result.output


def test_the_default_ranking_metric_is_the_select_metric_or_mean_acc(spec: Path):
    assert default_metric(branch_family(spec)) == "mean_acc"  # select = val/loss, not a report column
    text = TWO_STAGE + '\n[train]\nselect = { metric = "val/fine/acc", mode = "max" }\n'
    assert default_metric(branch_family("s.toml", text=text)) == "fine/acc"


def test_without_an_accuracy_head_the_default_ranking_metric_is_the_first_heads_main_metric():
    # no classification or binary head: no mean_acc column, and ranking by it would rank nothing
    text = (
        TWO_STAGE.replace('task = "fine"', 'task = "age"\ntype = "regression"')
        .replace('task = "coarse"', 'task = "tags"\ntype = "multilabel"\nlabels = ["a", "b"]')
        .replace('dataset = "synthetic"\nsynthetic = { classes = 4, coarse_classes = 2 }', 'dataset = "table"')
    )
    assert default_metric(branch_family("s.toml", text=text)) == "age/mae"


@pytest.mark.slow  # the sweep starts one graphc train process per member
def test_train_ranks_the_family_and_a_rerun_resumes(spec: Path, tmp_path: Path):
    out = tmp_path / "family"
    flags = ["--train", "--jobs", "1", "--seeds", "1", "--epochs", "1", "--limit-train", "48", "--limit-test", "24"]
    result = invoke("branch", spec, "--out", out, *flags)
    ranking = json.loads((out / RANKING_JSON).read_text())
    assert ranking["metric"] == "mean_acc" and ranking["split"] == "test"
    assert ranking["baseline"] == "two_stage__branch_02_everything_shared"
    assert sorted(r["name"] for r in ranking["rows"]) == sorted(
        f"two_stage__branch_0{k}_{s}" for k, s in enumerate(("nothing_shared", "after_stem", "everything_shared"))
    )
    means = [r["mean"] for r in ranking["rows"]]
    assert means == sorted(means, reverse=True)  # best first
    assert [r["rank"] for r in ranking["rows"]] == [1, 2, 3]
    base = next(r for r in ranking["rows"] if r["name"] == ranking["baseline"])
    assert base["verdict"] == "" and all(
        r["verdict"].startswith("cannot tell") for r in ranking["rows"] if r is not base
    )
    assert "ranked by test mean_acc" in result.stdout
    again = invoke("branch", spec, "--out", out, *flags)
    assert "3 skipped (finished before)" in again.output


def test_score_writes_the_scores_of_every_branch_point_and_a_recommendation(spec: Path, tmp_path: Path):
    out = tmp_path / "family"
    result = invoke("branch", spec, "--out", out, "--score", "--score-epochs", "1", "--score-images", "32")
    scores = json.loads((out / "scores.json").read_text())
    family = json.loads((out / FAMILY_JSON).read_text())
    # one score row per member, in the family's order, keyed by the member's graph node
    assert [r["candidate"] for r in scores["table"]] == ["nothing_shared", "stem", "trunk"]
    assert [r["params"] for r in scores["table"]] == [m["trainable_params"] for m in family["members"]]
    for row in scores["table"][1:]:
        assert -1.0 <= row["conflict_kept"] <= 1.0 and row["affinity"] is not None
    assert scores["recommended"] in ("nothing_shared", "stem", "trunk") and scores["rule"]
    assert "recommended:" in result.stdout and "cheap scores" in result.stdout
