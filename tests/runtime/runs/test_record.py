"""The run record (config.json, runtime/runs/record.py): one typed model, written with graphc 0.2's
keys plus its format, checked once on load; run directories of graphc 0.2.x still load in every
command; the IR is built once per run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import graphc
from graphc.errors import RunError
from graphc.runtime.runs import rundir as runs
from graphc.runtime.runs.checkpoint import load_checkpoint, save_checkpoint
from graphc.runtime.runs.record import RECORD_FORMAT, parse_record, read_record
from graphc.runtime.train import launch
from tests.conftest import TESTS, invoke, run_dir_of, train

SPEC = TESTS / "specs" / "tiny_train.toml"
# config.json's keys as graphc 0.2.0 and 0.2.1 wrote them, in their order (runtime/train/launch.py
# of 0.2.1; checked against a run of 0.2.1 itself), with "frozen", "init_from" and "resumed" when
# they applied. graphc 0.3.0 wrote the same.
KEYS_0_2 = [
    "spec",
    "spec_sha256",
    "seed",
    "tasks",
    "classes",
    "dataset",
    "data_root",
    "data",
    "train",
    "overrides",
    "limit_train",
    "limit_val",
    "limit_test",
    "no_test",
    "tag",
    "device",
    "nproc",
    "precision",
    "graphc_version",
    "started",
    "memory_format",
]
ADDED = ["format", "threads", "allocator", "torch_version"]  # graphc-run/1's keys beside those


def as_0_2_1(run_dir: Path) -> dict:
    """Turn a run directory into what graphc 0.2.1 wrote: its config.json with 0.2.1's keys (no
    format), and the same config inside each checkpoint (graphc-checkpoint/2 either way)."""
    config = json.loads((run_dir / runs.CONFIG).read_text())
    old = {key: config[key] for key in KEYS_0_2} | {"graphc_version": "0.2.1"}
    (run_dir / runs.CONFIG).write_text(json.dumps(old, indent=2) + "\n")
    for name in (runs.LAST, runs.BEST):
        checkpoint = load_checkpoint(run_dir / name)
        save_checkpoint(run_dir / name, {**checkpoint, "config": old, "graphc_version": "0.2.1"})
    return old


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    return run_dir_of(train(SPEC, "--epochs", "2", "--limit-train", "64", "--tag", "old", "--out", out, "--quiet"))


@pytest.fixture
def old_run(trained, tmp_path) -> Path:
    """A finished two-epoch run directory as graphc 0.2.1 left it."""
    run = Path(shutil.copytree(trained, tmp_path / "runs" / "tiny_train" / trained.name))
    as_0_2_1(run)
    return run


# --------------------------------------------------------------------------- the file


def test_config_json_has_the_0_2_keys_plus_the_format_and_reads_back_as_written(trained):
    content = json.loads((trained / runs.CONFIG).read_text())
    assert list(content) == ["format", *KEYS_0_2, "threads", "allocator", "torch_version"]
    assert content["format"] == RECORD_FORMAT and content["threads"] >= 1 and content["allocator"]
    assert content["torch_version"] == torch.__version__
    record = read_record(trained)
    assert record.to_json() == content  # one model, both ways
    assert load_checkpoint(trained / runs.BEST)["config"] == content  # the checkpoints carry the same record
    execution = record.execution
    assert (execution.device, execution.nproc, execution.precision) == ("cpu", 1, content["precision"])
    assert execution.channels_last == (content["memory_format"] == "channels_last")
    assert (execution.requested, execution.compile) == (record.train.precision, record.train.compile)


def test_a_0_2_1_record_is_converted_as_it_is_read(old_run):
    old = json.loads((old_run / runs.CONFIG).read_text())
    assert "format" not in old and old["graphc_version"] == "0.2.1"
    record = read_record(old_run)
    assert record.format == RECORD_FORMAT and (record.threads, record.allocator, record.torch_version) == (None,) * 3
    assert record.to_json() == {
        "format": RECORD_FORMAT,
        **old,
        "threads": None,
        "allocator": None,
        "torch_version": None,
    }
    assert (record.tag, record.limit_train, record.precision) == ("old", 64, old["precision"])


def test_a_0_1_record_takes_the_defaults_of_what_it_did_not_write(old_run):
    content = json.loads((old_run / runs.CONFIG).read_text())
    for key in ("nproc", "memory_format", "limit_test", "no_test", "tag"):  # graphc 0.1.0 wrote none of these
        del content[key]
    record = parse_record(content, old_run / runs.CONFIG)
    assert (record.nproc, record.memory_format, record.limit_test, record.no_test, record.tag) == (
        1,
        "contiguous",
        None,
        False,
        None,
    )


def test_a_record_of_an_unknown_format_is_refused(old_run):
    content = json.loads((old_run / runs.CONFIG).read_text())
    with pytest.raises(RunError, match=r"format \"graphc-run/7\", which this graphc .* does not read"):
        parse_record({**content, "format": "graphc-run/7"}, old_run / runs.CONFIG)
    (old_run / runs.CONFIG).write_text(json.dumps({**content, "format": "graphc-run/7"}))
    assert "does not read" in invoke("eval", old_run, code=1).stderr


@pytest.mark.parametrize(
    "change, field",
    [
        ({"precision": "fp16"}, "precision"),
        ({"memory_format": "nhwc"}, "memory_format"),
        ({"limit_test": 0}, "limit_test"),
        ({"no_test": "yes"}, "no_test"),
        ({"frozen": {"trunk": 0}}, "frozen.trunk"),
        ({"tasks": ["fine", 3]}, "tasks"),
        ({"resumed": [{"from_epoch": "one"}]}, "resumed"),
    ],
)
def test_every_field_is_checked_on_load_and_named(old_run, change, field):
    content = json.loads((old_run / runs.CONFIG).read_text())
    with pytest.raises(RunError, match=rf"field '{field}' is .*, expected .* restore it"):
        parse_record({**content, **change}, old_run / runs.CONFIG)


# --------------------------------------------------------------------------- a 0.2.1 run in every command


def test_graphc_eval_reads_a_0_2_1_run(old_run):
    rows = {(r["epoch"], r["split"]): r for r in runs.read_metrics(old_run)}
    data = json.loads(invoke("eval", old_run, "--checkpoint", "last", "--json").stdout)
    assert data["precision"] == json.loads((old_run / runs.CONFIG).read_text())["precision"]
    logged = {k: v for k, v in rows[(2, "val")].items() if k not in ("epoch", "split")}
    assert {k: data["metrics"][k] for k in logged} == pytest.approx(logged, rel=1e-9)
    test = json.loads(invoke("eval", old_run, "--split", "test", "--json").stdout)
    assert test["metrics"] == pytest.approx(runs.read_json(old_run / runs.SUMMARY)["test"], rel=1e-9)


def test_graphc_report_reads_a_0_2_1_run(old_run, tmp_path):
    result = invoke("report", old_run.parent.parent, "--format", "json", "-o", tmp_path / "report")
    assert "old" in result.stdout and "skipped" not in result.stderr


def test_graphc_predict_reads_a_0_2_1_run(old_run, tmp_path):
    from PIL import Image

    image = tmp_path / "image.png"
    Image.new("RGB", (16, 16), (200, 10, 10)).save(image)
    invoke("predict", old_run, image, code=0)


def test_a_0_2_1_run_resumes_and_keeps_its_record(old_run):
    old = json.loads((old_run / runs.CONFIG).read_text())
    (old_run / runs.CONFIG).write_text(json.dumps({**old, "note": "kept as written"}))  # a key graphc never wrote
    invoke("train", "--resume", old_run, "--epochs", "3", "--quiet")
    assert runs.read_json(old_run / runs.SUMMARY)["epochs_completed"] == 3
    content = json.loads((old_run / runs.CONFIG).read_text())
    assert content["format"] == RECORD_FORMAT and content["note"] == "kept as written"
    for key in KEYS_0_2:  # the run's own record, the new total of epochs aside
        if key != "train":
            assert content[key] == old[key], key
    assert content["train"] == {**old["train"], "epochs": 3}
    (resumed,) = content["resumed"]
    assert resumed["from_epoch"] == 2 and resumed["overrides"] == {"--epochs": 3}
    assert (resumed["device"], resumed["nproc"], resumed["precision"]) == ("cpu", 1, old["precision"])
    assert load_checkpoint(old_run / runs.LAST)["config"] == content
    invoke("eval", old_run)  # and reads back


# --------------------------------------------------------------------------- the IR, once per run


@pytest.fixture
def builds(monkeypatch) -> list[str]:
    """Every IR build (graphc.build_graph, launch's size check) of what follows, by its spec's name."""
    calls: list[str] = []
    real_build, real_size = graphc.build_graph, launch.check_model_size

    def build(spec, *args, **kwargs):
        calls.append(spec.name)
        return real_build(spec, *args, **kwargs)

    def size(spec):
        calls.append(f"size check of {spec.name}")
        return real_size(spec)

    monkeypatch.setattr(graphc, "build_graph", build)
    monkeypatch.setattr(launch, "check_model_size", size)
    return calls


def test_the_ir_is_built_once_per_run(builds, tmp_path):
    first = run_dir_of(train(SPEC, "--epochs", "1", "--limit-train", "64", "--out", tmp_path, "--quiet"))
    assert builds == ["tiny_train"]  # checked before any data, and that graph trained (it was 3 builds)
    builds.clear()
    train(SPEC, "--seeds", "2", "--epochs", "1", "--limit-train", "64", "--out", tmp_path / "two", "--quiet")
    assert builds == ["tiny_train", "tiny_train"]  # one per run: the second seed's run builds its own
    builds.clear()
    invoke("train", "--resume", first, "--epochs", "2", "--quiet")
    assert builds == ["tiny_train"]
    builds.clear()
    invoke("eval", first)
    assert builds == ["tiny_train"]
