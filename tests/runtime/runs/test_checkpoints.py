"""Checkpoints never run code: format graphc-checkpoint/2 loads with weights_only=True, crafted
and 0.1.0 files are refused with a message, `graphc convert-checkpoint --trust` converts the
latter exactly; RNG states (numpy, Python, the run's own CUDA device) round-trip; a best epoch
is serialised once; wrapper prefixes are stripped only when they are wrappers'."""

from __future__ import annotations

import io
import pickle
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import graphc.runtime.train.loop as training
from graphc.cli import app
from graphc.errors import RunError
from graphc.runtime.runs.checkpoint import (
    CHECKPOINT_FORMAT,
    LEGACY_FORMAT,
    load_checkpoint,
    numpy_rng_from_plain,
    python_rng_from_plain,
    save_checkpoint,
)
from graphc.runtime.runs.weights import _strip_wrappers
from tests.conftest import TESTS, clean_exit

runner = CliRunner()
SPEC = TESTS / "specs" / "tiny_train.toml"


def cli(*args, code: int):
    result = runner.invoke(app, [*map(str, args)])
    assert result.exit_code == code, result.output
    assert clean_exit(result) and "Traceback" not in result.output
    return result


def train_one_epoch(out: Path, *extra) -> Path:
    result = cli("train", SPEC, "--epochs", "1", "--out", out, "--quiet", *extra, code=0)
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A one-epoch tiny_train run; tests copy it before changing it."""
    return train_one_epoch(tmp_path_factory.mktemp("runs"))


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run_dir, tmp_path / "run"))


class Payload:
    """Unpickling this runs code: it creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def legacy(checkpoint: dict) -> dict:
    """The checkpoint as graphc 0.1.0 wrote it: format 1, numpy's and Python's RNG states as the
    objects np.random.get_state() and random.getstate() return (0.1.0's rng_state)."""
    rng = dict(checkpoint["rng"])
    rng["numpy"] = numpy_rng_from_plain(rng["numpy"])
    rng["python"] = python_rng_from_plain(rng["python"])
    return {**checkpoint, "format": LEGACY_FORMAT, "rng": rng}


# --------------------------------------------------------------------------- the format


def test_checkpoints_hold_only_what_weights_only_loads(run_dir):
    for name in ("last.pt", "best.pt"):
        checkpoint = torch.load(run_dir / name, weights_only=True)  # raises if anything else is inside
        assert checkpoint["format"] == CHECKPOINT_FORMAT
        assert isinstance(checkpoint["rng"]["numpy"]["keys"], torch.Tensor)
        assert isinstance(checkpoint["rng"]["python"]["state"], list)


def test_every_checkpoint_load_is_weights_only(monkeypatch, run_dir, tmp_path):
    """All of runtime reads checkpoints through load_checkpoint, which passes weights_only=True."""
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    from graphc.runtime.evaluate import evaluate_run

    evaluate_run(run_dir)
    run = copy_run(run_dir, tmp_path)
    cli("train", "--resume", run, "--epochs", "2", "--quiet", code=0)
    assert calls and all(c is True for c in calls), calls


def test_rng_states_round_trip_exactly(tmp_path):
    np.random.seed(3)
    random.seed(4)
    np.random.standard_normal()  # an odd number of normals: numpy caches the second one (has_gauss = 1)
    random.gauss(0, 1)  # Python caches one too
    run = SimpleNamespace(
        device=torch.device("cpu"),
        shuffle_rng=torch.Generator().manual_seed(1),
        augment_rng=torch.Generator().manual_seed(2),
    )
    save_checkpoint(tmp_path / "c.pt", {"rng": training.rng_state(run)})
    expected = (
        np.random.standard_normal(5),
        np.random.randint(0, 1000, 5),
        random.gauss(0, 1),
        random.random(),
        torch.rand(3),
        torch.rand(2, generator=run.shuffle_rng),
    )
    np.random.seed(0)
    random.seed(0)
    torch.manual_seed(0)
    run.shuffle_rng.manual_seed(0)
    training.restore_rng(run, load_checkpoint(tmp_path / "c.pt")["rng"])
    again = (
        np.random.standard_normal(5),
        np.random.randint(0, 1000, 5),
        random.gauss(0, 1),
        random.random(),
        torch.rand(3),
        torch.rand(2, generator=run.shuffle_rng),
    )
    assert np.array_equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2:4] == again[2:4]
    assert torch.equal(expected[4], again[4]) and torch.equal(expected[5], again[5])


# --------------------------------------------------------------------------- crafted files run nothing


def test_a_crafted_checkpoint_runs_no_code_in_any_command(run_dir, tmp_path):
    marker = tmp_path / "MARKER"
    crafted = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "model": Payload(marker)}, crafted)
    # The payload is live: full unpickling would run it.
    torch.load(io.BytesIO(crafted.getvalue()), weights_only=False)
    assert marker.exists()
    marker.unlink()

    run = copy_run(run_dir, tmp_path)
    for name in ("best.pt", "last.pt"):
        (run / name).write_bytes(crafted.getvalue())
    image = tmp_path / "image.png"
    Image.new("RGB", (16, 16), (10, 20, 30)).save(image)
    for command in (
        ["eval", run],
        ["eval", run, "--checkpoint", "last"],
        ["export", run / "spec.toml", "--onnx", tmp_path / "m.onnx", "--checkpoint", run],
        ["export", run / "spec.toml", "--onnx", tmp_path / "m.onnx", "--checkpoint", run / "last.pt"],
        ["predict", run, image],
        ["train", "--resume", run, "--epochs", "3"],
        ["train", "--resume", run, "--lr", "0.1"],  # refused for its flags before any file is read
    ):
        result = cli(*command, code=2 if "--lr" in command else 1)
        assert not marker.exists(), command
        if "--lr" not in command:
            assert "cannot be loaded safely" in result.stderr and "'exec'" in result.stderr
            assert "convert-checkpoint --trust" in result.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_convert_checkpoint_reads_nothing_without_trust(tmp_path):
    marker = tmp_path / "MARKER"
    path = tmp_path / "last.pt"
    torch.save({"format": LEGACY_FORMAT, "model": Payload(marker)}, path)
    before = path.read_bytes()
    result = cli("convert-checkpoint", path, code=2)
    assert "--trust" in result.stderr and "runs any code" in result.stderr
    assert not marker.exists() and path.read_bytes() == before


def test_convert_checkpoint_writes_nothing_for_a_file_that_is_not_graphcs(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, path)
    result = cli("convert-checkpoint", "--trust", path, "-o", tmp_path / "out.pt", code=1)
    assert "not a graphc checkpoint" in result.stderr and not (tmp_path / "out.pt").exists()
    assert "no such checkpoint" in cli("convert-checkpoint", "--trust", tmp_path / "absent.pt", code=1).stderr
    assert "has no last.pt or best.pt" in cli("convert-checkpoint", "--trust", tmp_path, code=1).stderr


def test_convert_checkpoint_to_a_place_it_cannot_write_is_a_message(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"format": LEGACY_FORMAT, "model": {"w": torch.ones(1)}, "rng": {}}, path)
    (tmp_path / "out.pt").mkdir()  # a directory at the output's name
    result = cli("convert-checkpoint", "--trust", path, "-o", tmp_path / "out.pt", code=1)
    assert "cannot be written" in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- 0.1.0 checkpoints


def test_a_0_1_0_checkpoint_is_refused_then_converted_and_resumes_exactly(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    for name in ("last.pt", "best.pt"):
        torch.save(legacy(load_checkpoint(run / name)), run / name)  # what graphc 0.1.0 wrote
    for command in (["eval", run], ["train", "--resume", run, "--epochs", "2"]):
        result = cli(*command, code=1)
        assert "cannot be loaded safely" in result.stderr and "numpy" in result.stderr
        assert f"graphc convert-checkpoint --trust {run}/" in result.stderr
    cli("convert-checkpoint", run / "best.pt", code=2)  # no --trust: refused, file unchanged
    assert torch.load(run / "best.pt", weights_only=False)["format"] == LEGACY_FORMAT

    converted = tmp_path / "converted.pt"
    result = cli("convert-checkpoint", "--trust", run / "best.pt", "-o", converted, code=0)
    assert "converted to graphc-checkpoint/2" in result.stdout
    assert torch.load(run / "best.pt", weights_only=False)["format"] == LEGACY_FORMAT  # -o: the source is kept
    assert torch.load(converted, weights_only=True)["format"] == CHECKPOINT_FORMAT
    result = cli("convert-checkpoint", "--trust", run, code=0)  # a run directory: last.pt and best.pt in place
    assert result.stdout.count("converted to") == 2
    assert "already graphc-checkpoint/2" in cli("convert-checkpoint", "--trust", run / "last.pt", code=0).stdout
    for name in ("last.pt", "best.pt"):
        assert torch.equal(
            load_checkpoint(run / name)["rng"]["numpy"]["keys"], load_checkpoint(run_dir / name)["rng"]["numpy"]["keys"]
        )

    # The converted run resumes exactly as a straight two-epoch run trains.
    cli("train", "--resume", run, "--epochs", "2", "--quiet", code=0)
    straight = Path(
        cli("train", SPEC, "--epochs", "2", "--out", tmp_path / "straight", "--quiet", code=0).stdout.strip()
    )
    a, b = load_checkpoint(run / "last.pt")["model"], load_checkpoint(straight / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- damaged and foreign files


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a checkpoint", "cannot be read as a checkpoint"),
        (b"", "cannot be read as a checkpoint"),
        (pickle.dumps({"format": CHECKPOINT_FORMAT}, protocol=4), "cannot be read as a checkpoint"),
        (_torch_bytes([1, 2, 3]), "not a graphc checkpoint"),
        (_torch_bytes({"epoch": 1}), "not a graphc checkpoint"),
        (_torch_bytes({"format": "graphc-checkpoint/9"}), "not a graphc checkpoint of this version"),
        (_torch_bytes({"format": CHECKPOINT_FORMAT, "epoch": "x"}), "field 'epoch' is a str"),
        (_torch_bytes({"format": CHECKPOINT_FORMAT, "model": {"w": 1.0}}), "not all named tensors"),
        (_torch_bytes({"format": CHECKPOINT_FORMAT, "model": [1]}), "field 'model' is a list"),
        (_torch_bytes({"format": CHECKPOINT_FORMAT, "class_names": {"fine": 3}}), "'class_names' are not lists"),
        (_torch_bytes({"format": CHECKPOINT_FORMAT, "metrics": {"val/loss": "low"}}), "'metrics' are not all numbers"),
        (
            _torch_bytes({"format": CHECKPOINT_FORMAT, "config": {"data": {}, "train": {}, "classes": "x"}}),
            "field 'classes' is",
        ),
        (_torch_bytes({"format": CHECKPOINT_FORMAT, "weighting": [1.0]}), "field 'weighting' is a list"),
    ],
    ids=[
        "garbage",
        "empty",
        "plain-pickle",
        "list",
        "foreign-dict",
        "other-version",
        "epoch-type",
        "model-values",
        "model-type",
        "class-names",
        "metrics",
        "config",
        "weighting",
    ],
)
def test_damaged_or_foreign_checkpoints_are_messages(run_dir, tmp_path, content, message):
    run = copy_run(run_dir, tmp_path)
    (run / "best.pt").write_bytes(content)
    (run / "last.pt").write_bytes(content)
    for command in (["eval", run], ["train", "--resume", run, "--epochs", "2"]):
        assert message in cli(*command, code=1).stderr


def test_a_truncated_checkpoint_is_a_message(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    data = (run / "best.pt").read_bytes()
    (run / "best.pt").write_bytes(data[: len(data) // 2])
    assert "cannot be read as a checkpoint" in cli("eval", run, code=1).stderr


def test_unloadable_checkpoint_raises_run_error(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "x": Payload(tmp_path / "MARKER")}, path)
    with pytest.raises(RunError, match="cannot be loaded safely"):
        load_checkpoint(path)
    assert not (tmp_path / "MARKER").exists()


# --------------------------------------------------------------------------- CUDA RNG state (mocked device)


class FakeCuda:
    """torch.cuda's RNG-state functions on a CPU-only machine: per device index."""

    def __init__(self, monkeypatch, count: int = 4):
        self.states = {i: torch.full((16,), i, dtype=torch.uint8) for i in range(count)}
        self.set_calls = []
        monkeypatch.setattr(torch.cuda, "get_rng_state", self.get)
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("saved every GPU's state"))
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: pytest.fail("set every GPU's state"))
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)

    def get(self, device="cuda"):
        return self.states[torch.device(device).index].clone()

    def set(self, state, device="cuda"):
        self.set_calls.append((torch.device(device).index, int(state[0])))


def fake_run(device: str):
    return SimpleNamespace(device=torch.device(device), shuffle_rng=torch.Generator(), augment_rng=torch.Generator())


def test_cuda_rng_state_is_the_run_devices_only_and_restores_on_another_index(monkeypatch, tmp_path):
    cuda = FakeCuda(monkeypatch)
    state = training.rng_state(fake_run("cuda:3"))
    assert torch.equal(state["cuda"], cuda.states[3])  # one tensor: cuda:3's
    save_checkpoint(tmp_path / "c.pt", {"rng": state})
    loaded = load_checkpoint(tmp_path / "c.pt")["rng"]  # weights_only=True
    training.restore_rng(fake_run("cuda:1"), loaded)
    assert cuda.set_calls == [(1, 3)]  # cuda:3's state onto the resumed run's device, cuda:1; nothing else touched


def test_old_all_devices_cuda_rng_list_is_accepted(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    state = training.rng_state(fake_run("cpu"))
    state["cuda"] = [cuda.states[i] for i in range(4)]  # 0.1.0: get_rng_state_all()
    training.restore_rng(fake_run("cuda:0"), state, saved_device="cuda:2")
    training.restore_rng(fake_run("cuda:1"), state, saved_device="cuda")  # "cuda": the current device, 0
    assert cuda.set_calls == [(0, 2), (1, 0)]
    training.restore_rng(fake_run("cpu"), state, saved_device="cuda:2")  # a CPU resume sets no GPU state
    assert len(cuda.set_calls) == 2


# --------------------------------------------------------------------------- one serialisation per best epoch


def test_a_best_epoch_is_serialised_once_for_last_and_best(monkeypatch, tmp_path):
    saves = []
    real = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: (saves.append(obj.get("epoch")), real(obj, f, *a, **k)))
    run = train_one_epoch(tmp_path)
    assert saves == [0, 1]  # the epoch-0 last.pt, then epoch 1 (a best epoch) once, for both files
    assert (run / "best.pt").read_bytes() == (run / "last.pt").read_bytes()


# --------------------------------------------------------------------------- wrapper prefixes


def test_only_wrapper_prefixes_on_every_key_are_stripped():
    w = torch.zeros(1)
    plain = {"module.conv.weight": w, "head.weight": w}  # a node named `module`
    assert set(_strip_wrappers(plain, plain)) == set(plain)
    assert set(_strip_wrappers(plain)) == set(plain)  # not on every key: a node's name
    ddp = {f"module.{k}": w for k in plain}
    assert set(_strip_wrappers(ddp, plain)) == set(plain)
    both = {f"module._orig_mod.{k}": w for k in plain}  # DDP around torch.compile
    assert set(_strip_wrappers(both, plain)) == set(plain)
    both = {f"_orig_mod.module.{k}": w for k in plain}  # torch.compile around DDP
    assert set(_strip_wrappers(both, plain)) == set(plain)


# --------------------------------------------------------------------------- the image-folder decode cache


def test_a_crafted_image_folder_cache_runs_no_code(tmp_path, monkeypatch):
    from graphc.lang.spec import DataSpec
    from graphc.runtime.data.load import load_dataset
    from tests.data_fixtures import write_image_folder

    monkeypatch.setenv("GRAPHC_DATA", str(tmp_path / "data-home"))
    root = tmp_path / "pics"
    write_image_folder(root, ["cat", "dog"], per_class=2)
    spec = DataSpec(dataset="imagefolder", root=str(root), val_fraction=0.0)
    first = load_dataset(spec, image_shape=(3, 8, 8))
    (cache,) = (tmp_path / "data-home" / "imagefolder-cache").iterdir()
    marker = tmp_path / "MARKER"
    torch.save({"format": "anything", "images": Payload(marker)}, cache)  # planted where graphc looks
    again = load_dataset(spec, image_shape=(3, 8, 8))  # the cache is not loadable safely: decoded again
    assert not marker.exists()
    assert torch.equal(first.train.images, again.train.images)
