"""graphc bench sized for the machine (runtime/bench.py): by default the precisions the device runs
natively (on a CPU without AMX: fp32 only, bf16 skipped with the reason), no ONNX export unless
--onnx; --precision all keeps the full table."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import graphc.runtime.device as device_module
from graphc.cli import app
from graphc.runtime.bench import precision_plan
from tests.conftest import TESTS, clean_exit

TINY_TRAIN = TESTS / "specs" / "tiny_train.toml"
CPU = torch.device("cpu")
QUICK = ["--device", "cpu", "--batch-size", "4", "--seconds", "0.01", "--repeats", "1", "--json"]


@pytest.fixture
def amx(monkeypatch):
    def set_amx(present: bool) -> None:
        monkeypatch.setattr(device_module, "cpu_has_bf16_matrix_units", lambda: present)

    return set_amx


def test_without_amx_only_fp32_is_measured_and_bf16_is_skipped_with_the_reason(amx):
    amx(False)
    precisions, skipped = precision_plan(CPU, None)
    assert precisions == ["fp32"]
    (entry,) = skipped
    assert entry["precision"] == "bf16"
    assert "no AMX bf16" in entry["reason"] and "emulated" in entry["reason"] and "--precision all" in entry["reason"]
    assert precision_plan(CPU, "native") == (precisions, skipped)
    assert precision_plan(CPU, "all") == (["fp32", "bf16"], [])  # the full table, emulated bf16 included
    assert precision_plan(CPU, "bf16") == (["bf16"], [])  # asked for: measured


def test_with_amx_both_precisions_are_native(amx):
    amx(True)
    assert precision_plan(CPU, None) == (["fp32", "bf16"], [])


def test_the_default_bench_skips_emulated_bf16_and_onnx(amx):
    amx(False)
    result = CliRunner().invoke(app, ["bench", str(TINY_TRAIN), *QUICK])
    assert result.exit_code == 0 and clean_exit(result), result.output
    data = json.loads(result.stdout)
    assert {row["precision"] for row in data["training"]} == {"fp32"}
    assert [s["precision"] for s in data["skipped"]] == ["bf16"]
    assert [row["engine"] for row in data["inference"]] == ["pytorch"]  # no export without --onnx
    assert "--onnx" not in data["command"]


def test_precision_all_and_onnx_keep_the_full_table(amx):
    pytest.importorskip("onnxruntime")
    amx(False)
    result = CliRunner().invoke(app, ["bench", str(TINY_TRAIN), *QUICK, "--precision", "all", "--onnx"])
    assert result.exit_code == 0 and clean_exit(result), result.output
    data = json.loads(result.stdout)
    assert {row["precision"] for row in data["training"]} == {"fp32", "bf16"} and data["skipped"] == []
    assert {row["engine"] for row in data["inference"]} == {"pytorch", "onnxruntime"}


def test_the_table_says_what_was_skipped(amx):
    amx(False)
    result = CliRunner().invoke(app, ["bench", str(TINY_TRAIN), *QUICK[:-1]])
    assert result.exit_code == 0 and clean_exit(result), result.output
    assert "skipped bf16: CPU has no AMX bf16 matrix units" in result.stdout
    assert "infer onnxruntime" not in result.stdout
