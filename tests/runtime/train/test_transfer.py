"""Transfer and freezing (issue 14): --init-from / init_map copy exactly the tensors they say, bad maps
are usage errors, frozen nodes (and their batch-norm statistics) stay put, unfreeze_after lets them
train later (and resumes exactly), show and render mark frozen nodes, and a spec without these
options trains as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import graphc
import graphc.runtime.train.features as features
import graphc.runtime.train.loop as training
from graphc.errors import SpecError
from graphc.runtime.runs import rundir as runs
from graphc.runtime.runs.checkpoint import load_checkpoint
from graphc.runtime.train.transfer import init_from
from tests.conftest import TESTS, interrupt_at, invoke, run_dir_of, train

SPEC = TESTS / "specs" / "tiny_train.toml"
TEXT = SPEC.read_text()


def weights(run_dir: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / name)["model"]


def initial_weights(spec_path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """The weights a run of ``spec_path`` starts from (build_run compiles with the run's seed)."""
    graph = graphc.build_graph(graphc.load_spec(spec_path))
    return {k: v.clone() for k, v in graphc.compile_graph(graph, seed=seed).state_dict().items()}


def node_keys(state: dict, node: str) -> list[str]:
    return [key for key in state if key.split(".")[0] == node]


def variant(tmp_path: Path, name: str, old: str, new: str, text: str = TEXT) -> Path:
    assert old in text
    path = tmp_path / f"{name}.toml"
    path.write_text(text.replace(old, new).replace('name = "tiny_train"', f'name = "{name}"', 1))
    return path


FROZEN_TRUNK = ('name = "trunk"\nkind = "conv_block"', 'name = "trunk"\nkind = "conv_block"\ntrainable = false')


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A trained run of tiny_train (the transfer source)."""
    out = tmp_path_factory.mktemp("source")
    return run_dir_of(train(SPEC, "--epochs", "1", "--out", out, "--quiet"))


# The new spec: 'stem' is tiny_train's 'trunk' renamed (loaded through the map), 'fc' and
# 'fine_head' keep their names and shapes, 'side' is new, and 'coarse_head' now reads 16 features
# where the source's read 32 (a shape mismatch by name: skipped).
TARGET = (
    TEXT.replace('name = "tiny_train"', 'name = "target"')
    .replace('name = "trunk"', 'name = "stem"')
    .replace('input = "trunk"', 'input = "stem"')
    .replace(
        '''name = "coarse_head"
kind = "head"
input = "fc"''',
        '''name = "side"
kind = "fc_block"
input = "stem"
units = [16]

[[nodes]]
name = "coarse_head"
kind = "head"
input = "side"''',
    )
)


@pytest.fixture
def target(tmp_path) -> Path:
    path = tmp_path / "target.toml"
    path.write_text(TARGET)
    return path


# --------------------------------------------------------------------------- transfer


def test_transfer_copies_exactly_the_mapped_tensors_by_value(source, target):
    graph = graphc.build_graph(graphc.load_spec(target))
    model = graphc.compile_graph(graph, seed=0)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    transfer = init_from(model, graph, source, {"stem": "trunk"})
    assert transfer.file == source / "best.pt"
    assert transfer.loaded == {"stem": "trunk", "fc": "fc", "fine_head": "fine_head"}
    skipped = {row.node: row.reason for row in transfer.rows if not row.loaded}
    assert skipped["side"] == "not in the source"
    assert skipped["coarse_head"] == "shape mismatch: weight is [3, 16] here, [3, 32] in the source"
    old = weights(source, "best.pt")
    after = model.state_dict()
    copied = 0
    for key, tensor in after.items():
        node, rest = key.split(".", 1)
        if node in transfer.loaded:  # parameters and buffers (batch-norm statistics) alike
            assert torch.equal(tensor, old[f"{transfer.loaded[node]}.{rest}"]), key
            assert not torch.equal(tensor, fresh[key]) or "num_batches" in key, key
            copied += 1
        else:
            assert torch.equal(tensor, fresh[key]), key  # nothing else touched
    assert copied == sum(len(node_keys(after, n)) for n in ("stem", "fc", "fine_head"))


def test_init_from_on_the_command_line_prints_the_table_and_records_provenance(source, target, tmp_path):
    result = train(
        target, "--init-from", source, "--init-map", "stem=trunk", "--epochs", "1", "--out", tmp_path, "--quiet"
    )
    err = " ".join(result.stderr.split())
    assert "stem │ loaded │ trunk" in err and "side │ skipped" in err and "not in the source" in err
    assert "coarse_head │ skipped" in err and "shape mismatch: weight is" in err  # (the cell may wrap)
    assert "not used from the source: coarse_head" in err
    assert err.index("loaded") < err.index("training target")  # the table comes before training
    config = runs.read_json(run_dir_of(result) / "config.json")
    provenance = config["init_from"]
    assert provenance["checkpoint"] == str((source / "best.pt").resolve())
    assert provenance["loaded"] == {"stem": "trunk", "fc": "fc", "fine_head": "fine_head"}
    assert set(provenance["skipped"]) == {"side", "coarse_head"} and provenance["spec"] == "tiny_train"
    assert config["train"]["init_map"] == {"stem": "trunk"}


def test_init_from_in_the_spec_and_a_last_pt_file(source, tmp_path):
    spec = variant(tmp_path, "from_spec", "[train]\n", f'[train]\ninit_from = "{source / "last.pt"}"\n')
    result = train(spec, "--epochs", "1", "--out", tmp_path, "--quiet")
    provenance = runs.read_json(run_dir_of(result) / "config.json")["init_from"]
    assert provenance["checkpoint"].endswith("last.pt") and len(provenance["loaded"]) == 4


def test_resume_never_reads_the_source_again(source, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "best.pt").write_bytes((source / "best.pt").read_bytes())
    run = run_dir_of(train(SPEC, "--init-from", copy, "--epochs", "1", "--out", tmp_path, "--quiet"))
    (copy / "best.pt").unlink()  # gone: a resume that re-initialised from it would fail
    resumed = train("--resume", run, "--epochs", "2", "--quiet")
    assert "loaded" not in resumed.stderr and load_checkpoint(run / "last.pt")["epoch"] == 2
    refused = train("--resume", run, "--epochs", "3", "--init-from", source, code=2)
    assert "--init-from" in refused.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--init-map", "nosuch=trunk"], "no node of that name"),
        (["--init-map", "stem=nosuch"], "has no node 'nosuch' with weights"),
        (["--init-map", "image=trunk"], "has no parameters to load"),
        (
            ["--init-map", "stem=trunk", "--init-map", "coarse_head=coarse_head"],
            "shape mismatch: weight is [3, 16] here, [3, 32] in the source",
        ),
        (["--init-map", "stem"], "expected NEW=OLD"),
    ],
)
def test_bad_init_maps_are_usage_errors(source, target, tmp_path, args, message):
    result = train(target, "--init-from", source, *args, "--epochs", "1", "--out", tmp_path, code=2)
    assert message in " ".join(result.stderr.split())
    assert not (tmp_path / "target").exists()  # refused before a run directory is made


def test_init_map_without_a_source_is_a_usage_error(target, tmp_path):
    result = train(target, "--init-map", "stem=trunk", "--out", tmp_path, code=2)
    assert "--init-from" in result.stderr


# --------------------------------------------------------------------------- freezing


def test_frozen_parameters_and_batch_norm_statistics_do_not_change(tmp_path):
    spec = variant(tmp_path, "frozen", *FROZEN_TRUNK)
    start = initial_weights(spec)
    run = run_dir_of(train(spec, "--epochs", "2", "--out", tmp_path, "--quiet"))
    for name in ("last.pt", "best.pt"):
        end = weights(run, name)
        trunk = node_keys(end, "trunk")
        assert {k.split(".", 1)[1] for k in trunk} >= {"conv1.weight", "norm.running_mean", "norm.running_var"}
        for key in trunk:
            assert torch.equal(end[key], start[key]), key
        assert not torch.equal(end["fc.fc1.weight"], start["fc.fc1.weight"])  # the rest trained
        assert not torch.equal(end["fc.norm1.running_mean"], start["fc.norm1.running_mean"])
    # Left out of the optimiser: it holds state only for the trainable parameters.
    optimizer = load_checkpoint(run / "last.pt")["optimizer"]
    graph = graphc.build_graph(graphc.load_spec(spec))
    in_optimizer = sum(p.numel() for p in optimizer["state"].values() for p in [p["exp_avg"]])
    assert in_optimizer == graph.trainable_params < graph.total_params


def test_freeze_on_the_command_line_is_recorded_and_kept_by_resume(tmp_path):
    start = initial_weights(SPEC)
    run = run_dir_of(train(SPEC, "--freeze", "trunk", "--epochs", "1", "--out", tmp_path, "--quiet"))
    config = runs.read_json(run / "config.json")
    assert config["frozen"] == {"trunk": None}
    from graphc.runtime.report.build import variant_settings  # a frozen run is its own row in graphc report

    assert ("frozen", "trunk") in variant_settings(config)
    assert not any(name == "frozen" for name, _ in variant_settings({**config, "frozen": {}}))
    train("--resume", run, "--epochs", "2", "--quiet")
    end = weights(run)
    for key in node_keys(end, "trunk"):
        assert torch.equal(end[key], start[key]), key


@pytest.mark.parametrize(
    "args, message",
    [
        (["--freeze", "nosuch"], "has no node 'nosuch'"),
        (["--freeze", "image"], "has no parameters to freeze"),
        (["--unfreeze-after", "1"], "none is frozen"),
        (["--freeze", "trunk,fc,fine_head,coarse_head"], "every node with parameters is frozen"),
    ],
)
def test_bad_freezes_are_usage_errors(tmp_path, args, message):
    result = train(SPEC, *args, "--out", tmp_path, code=2)
    assert message in " ".join(result.stderr.split())


def test_spec_checks_of_trainable(write_spec):
    no_params = TEXT.replace(
        '''channels = [8]
pool = "max"
norm = "batch"''',
        """channels = [8]
pool = "max"
norm = "batch"

[[nodes]]
name = "pool"
kind = "conv_block"
input = "trunk"
channels = []
pool = "max"
trainable = false""",
    ).replace('name = "fc"\nkind = "fc_block"\ninput = "trunk"', 'name = "fc"\nkind = "fc_block"\ninput = "pool"')
    with pytest.raises(SpecError, match="has no parameters to freeze"):
        graphc.build_graph(graphc.load_spec(write_spec(no_params)))
    with pytest.raises(SpecError, match="unfreeze_after"):
        graphc.load_spec(write_spec(TEXT.replace("channels = [8]", "channels = [8]\nunfreeze_after = 2")))


def test_unfreeze_after_lets_the_node_train_after_n_epochs_and_resumes_exactly(tmp_path, monkeypatch):
    old, new = FROZEN_TRUNK
    spec = variant(
        tmp_path,
        "thaw",
        old,
        new + "\nunfreeze_after = 1",
        TEXT.replace("optimizer = {", 'schedule = { name = "cosine" }\noptimizer = {'),
    )
    start = initial_weights(spec)
    straight = train(spec, "--epochs", "3", "--out", tmp_path / "straight", "--quiet")
    assert "unfreezing trunk after epoch 1" in straight.stderr
    end = weights(run_dir_of(straight))
    assert not torch.equal(end["trunk.conv1.weight"], start["trunk.conv1.weight"])
    assert not torch.equal(end["trunk.norm.running_mean"], start["trunk.norm.running_mean"])
    groups = load_checkpoint(run_dir_of(straight) / "last.pt")["optimizer"]["param_groups"]
    assert len(groups) == 2 and groups[1]["lr"] == groups[0]["lr"]  # the same schedule from there on
    steps = training.steps_per_epoch(360, 32)
    for epoch in (2, 3):  # interrupted before the unfreeze (last.pt of epoch 1) and after it (epoch 2)
        out = tmp_path / f"cut{epoch}"
        interrupt_at(monkeypatch, (epoch - 1) * steps + 3)
        train(spec, "--epochs", "3", "--out", out, "--quiet", code=130)
        monkeypatch.undo()
        run = next((out / "thaw").iterdir())
        if epoch == 2:
            kept = weights(run)
            for key in node_keys(kept, "trunk"):
                assert torch.equal(kept[key], start[key]), key  # frozen through epoch 1
        train("--resume", run, "--quiet")
        for key, tensor in weights(run).items():
            assert torch.equal(tensor, end[key]), (epoch, key)


# --------------------------------------------------------------------------- show and render


def test_show_and_render_mark_frozen_nodes(tmp_path):
    spec = variant(tmp_path, "frozen", FROZEN_TRUNK[0], FROZEN_TRUNK[1] + "\nunfreeze_after = 3")
    graph = graphc.build_graph(graphc.load_spec(spec))
    trunk = graph["trunk"].num_params
    shown = invoke("show", spec)
    assert "frozen, unfreezes after epoch 3" in shown.stdout
    assert f"({graph.total_params - trunk:,} trainable from the first epoch, {trunk:,} in frozen nodes)" in shown.stdout
    data = json.loads(invoke("show", spec, "--json").stdout)
    assert data["trainable_params"] == data["total_params"] - trunk
    assert next(n for n in data["nodes"] if n["name"] == "trunk")["attrs"]["trainable"] is False
    checked = invoke("check", spec)
    assert (
        f"{graph.total_params:,} parameters ({graph.total_params - trunk:,} trainable from the first epoch"
        in checked.stdout
    )
    plain = invoke("show", SPEC)
    assert "frozen" not in plain.stdout and "training" not in plain.stdout

    from graphc.backends.diagram.draw import page

    scene = page([graph])
    texts = [t.text for t in scene.texts]
    assert "frozen · unfreezes after epoch 3" in texts
    assert any(t.startswith("frozen: trainable = false") for t in texts)  # the legend
    boxes = {b.gid: b for b in scene.blocks if b.gid}
    assert boxes["node--frozen--trunk"].dashed and not boxes["node--frozen--fc"].dashed
    assert "trunk:conv_block:8x8x8:" in scene.description and ":frozen" in scene.description
    plain_scene = page([graphc.build_graph(graphc.load_spec(SPEC))])
    assert not any(b.dashed for b in plain_scene.blocks) and ":frozen" not in plain_scene.description
    invoke("render", spec, "--format", "dot", "-o", tmp_path / "d.dot")
    assert "rounded,filled,dashed" in (tmp_path / "d.dot").read_text()
    invoke("render", spec, "--format", "mermaid", "-o", tmp_path / "d.mmd")
    styles = [line for line in (tmp_path / "d.mmd").read_text().splitlines() if line.startswith("  style n_")]
    assert [line.split()[1] for line in styles if "stroke-dasharray" in line] == ["n_trunk"]
    invoke("render", spec, "-o", tmp_path / "d.svg")
    assert ":frozen" in (tmp_path / "d.svg").read_text()  # the picture's structure line (metadata)


# --------------------------------------------------------------------------- no options: as before


def test_a_spec_without_these_options_trains_bit_for_bit_as_before(tmp_path, monkeypatch):
    plain = run_dir_of(train(SPEC, "--epochs", "2", "--out", tmp_path / "a", "--quiet"))
    explicit = TEXT.replace('kind = "conv_block"', 'kind = "conv_block"\ntrainable = true').replace(
        'kind = "head"', 'kind = "head"\ntrainable = true'
    )
    spec = tmp_path / "tiny_train.toml"
    spec.write_text(explicit)
    written = run_dir_of(train(spec, "--epochs", "2", "--out", tmp_path / "b", "--quiet"))
    # The loop without this feature's hooks: nothing frozen, no norms held, nothing to unfreeze.
    monkeypatch.setattr(training, "freeze_plan", lambda graph: {})
    monkeypatch.setattr(training, "freeze", lambda model, plan: None)
    monkeypatch.setattr(training, "hold_norms", lambda model, frozen: None)
    monkeypatch.setattr(features, "unfreeze_due", lambda run, completed: [])  # the loop's freezing feature
    without = run_dir_of(train(SPEC, "--epochs", "2", "--out", tmp_path / "c", "--quiet"))
    reference = weights(without)
    for run in (plain, written):
        state = weights(run)
        assert state.keys() == reference.keys()
        for key in state:
            assert torch.equal(state[key], reference[key]), key
    assert "frozen" not in runs.read_json(plain / "config.json") and "init_from" not in runs.read_json(
        plain / "config.json"
    )
