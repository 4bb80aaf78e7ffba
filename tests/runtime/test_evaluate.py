"""`graphc eval RUN_DIR`: rebuilds the model, loads a checkpoint and agrees with what training logged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from graphc.errors import RunError, UsageError
from graphc.runtime.device import resolve_device, resolve_precision
from graphc.runtime.runs import rundir as runs
from tests.conftest import TESTS, invoke

SPEC = TESTS / "specs" / "tiny_train.toml"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    # Select the *last*-epoch-unfriendly metric so best.pt (epoch 1) and last.pt (epoch 2) differ.
    spec = out / "spec.toml"
    spec.write_text(
        SPEC.read_text().replace('metric = "val/fine/acc", mode = "max"', 'metric = "val/fine/acc", mode = "min"')
    )
    result = invoke("train", spec, "--out", out, "--quiet", "--limit-val", "100")
    return Path(result.stdout.strip())


def test_eval_json_reproduces_the_logged_validation_metrics(run_dir):
    rows = {(r["epoch"], r["split"]): r for r in runs.read_metrics(run_dir)}
    for checkpoint, epoch in (("best", 1), ("last", 2)):
        data = json.loads(invoke("eval", run_dir, "--checkpoint", checkpoint, "--json").stdout)
        assert data["epoch"] == epoch and data["split"] == "val" and data["checkpoint"] == checkpoint
        assert data["tasks"] == ["fine", "coarse"] and data["device"] == "cpu"
        logged = {k: v for k, v in rows[(epoch, "val")].items() if k not in ("epoch", "split")}
        # eval adds each head's baselines (majority-class and balanced accuracy) to the logged names
        baselines = {f"{t}/{b}" for t in ("fine", "coarse") for b in ("majority_acc", "balanced_acc")}
        assert set(data["metrics"]) == set(logged) | baselines
        assert {k: data["metrics"][k] for k in logged} == pytest.approx(logged, rel=1e-9)


def test_eval_on_test_is_the_summary_test_metrics(run_dir):
    data = json.loads(invoke("eval", run_dir, "--split", "test", "--json").stdout)
    assert data["metrics"] == pytest.approx(runs.read_json(run_dir / "summary.json")["test"], rel=1e-9)


def test_eval_table(run_dir):
    result = invoke("eval", run_dir, "--split", "test")
    summary = runs.read_json(run_dir / "summary.json")["test"]
    for text in (
        "fine",
        "coarse",
        "majority_acc",
        "balanced_acc",
        "mean of heads",
        "total (weighted)",
        f"{summary['fine/acc']:.2%}",
        f"{summary['weighted_acc']:.2%}",
        "fine -> coarse",
        "PARENT/acc_from_CHILD",
        f"{summary['coarse/acc_from_fine']:.2%}",
        f"{summary['fine/consistency_with_coarse']:.2%}",
    ):
        assert text in result.stdout, text


def test_eval_missing_or_damaged_runs(run_dir, tmp_path):
    assert "no such run directory" in invoke("eval", tmp_path / "absent", code=1).stderr
    assert "not a graphc run directory" in invoke("eval", tmp_path, code=1).stderr
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "best.pt").unlink()
    result = invoke("eval", copy, code=1)
    assert "best.pt: no such checkpoint" in result.stderr and "--checkpoint last" in result.stderr
    (copy / "last.pt").write_bytes(b"\x00garbage")
    assert "cannot be read as a checkpoint" in invoke("eval", copy, "--checkpoint", "last", code=1).stderr
    (copy / "config.json").write_text("{not json")
    assert "not valid JSON" in invoke("eval", copy, code=1).stderr


def test_eval_checkpoint_that_does_not_fit_the_spec(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "spec.toml").write_text((copy / "spec.toml").read_text().replace("units = [32]", "units = [16]"))
    result = invoke("eval", copy, code=1)
    assert "its weights do not fit spec" in result.stderr
    assert "expects [16, " in result.stderr and "node '" in result.stderr  # names the node and tensor


def test_eval_bad_options(run_dir):
    assert "unknown split 'train'" in invoke("eval", run_dir, "--split", "train", code=2).stderr
    assert "unknown checkpoint 'first'" in invoke("eval", run_dir, "--checkpoint", "first", code=2).stderr
    assert "unknown device 'gpu'" in invoke("eval", run_dir, "--device", "gpu", code=2).stderr


def test_resolve_device_and_precision():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu")
    with pytest.raises(UsageError, match="unknown device"):
        resolve_device("gpu:0")
    if not torch.cuda.is_available():
        with pytest.raises(RunError, match="CUDA is not available"):
            resolve_device("cuda:1")
    # auto's choice per device capability: tests/test_performance.py (capabilities mocked)
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
