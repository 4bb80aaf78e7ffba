"""Seeds, batch sizes and data-set sizes are bounded where they are read - spec fields, the CLI's
--seed, --seeds, --batch-size and --limit-*, and the memory estimate of `graphc check` - and `graphc
check` agrees with `graphc train`: what check accepts trains without overflowing, what it refuses
train refuses the same way (exit 2, naming the field and the range)."""

from __future__ import annotations

import pytest

from graphc.lang.spec import MAX_BATCH_SIZE, MAX_IMAGES, MAX_SEED
from graphc.runtime.runs import rundir as runs
from tests.conftest import TINY_SPEC, invoke, run_dir_of

SMALL = TINY_SPEC.replace("coarse_classes = 2 }", "coarse_classes = 2, train_size = 48, test_size = 16 }")


def refused_by_both(spec, tmp_path, *train_args: str) -> list[str]:
    """`graphc check` and `graphc train` of ``spec``: both exit 2, nothing trained; their outputs."""
    checked = invoke("check", spec, code=2).output
    trained = invoke("train", spec, *train_args, "--out", tmp_path / "runs", "--quiet", code=2).output
    assert not (tmp_path / "runs").exists() or not runs.find_runs([tmp_path / "runs"])
    return [checked, trained]


@pytest.mark.parametrize(
    ("table", "line", "field", "bound"),
    [
        ("train", f"seed = {2**64}", "train.seed", "less than or equal to 4294967295"),
        ("train", "seed = -1", "train.seed", "greater than or equal to 0"),
        ("train", f"batch_size = {10**20}", "train.batch_size", f"less than or equal to {MAX_BATCH_SIZE}"),
        ("data", f"split_seed = {2**40}", "data.split_seed", "less than or equal to 4294967295"),
    ],
)
def test_spec_numbers_out_of_range_are_refused_by_check_and_train(write_spec, tmp_path, table, line, field, bound):
    text = SMALL + f"\n[{table}]\n{line}\n" if table == "train" else SMALL.replace("[data]\n", f"[data]\n{line}\n")
    for output in refused_by_both(write_spec(text), tmp_path):
        assert f"field '{field}'" in output and bound in output


def test_a_synthetic_train_size_past_the_bound_is_refused(write_spec, tmp_path):
    spec = write_spec(TINY_SPEC.replace("coarse_classes = 2 }", f"coarse_classes = 2, train_size = {10**9} }}"))
    for output in refused_by_both(spec, tmp_path):
        assert "field 'data.synthetic.train_size'" in output and f"less than or equal to {MAX_IMAGES}" in output


def test_a_synthetic_data_set_past_the_memory_limit_is_refused_with_the_sizes_that_fit(write_spec, tmp_path):
    # 50 million images of 3x8x8 pass the field's bound but not the memory estimate (about 80 GiB)
    spec = write_spec(TINY_SPEC.replace("coarse_classes = 2 }", "coarse_classes = 2, train_size = 50000000 }"))
    for output in refused_by_both(spec, tmp_path):
        assert "field 'data.synthetic.train_size'" in output and "train_size and test_size can be 1 to" in output
        assert "GRAPHC_MAX_DATA_BYTES" in output


def test_a_batch_past_the_memory_limit_is_refused_with_the_sizes_that_fit(write_spec, tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_MAX_BATCH_BYTES", str(2**20))  # 1 MiB of layer outputs per batch
    spec = write_spec(SMALL + "\n[train]\nbatch_size = 100000\n")
    for output in refused_by_both(spec, tmp_path):
        assert "field 'train.batch_size'" in output and "batch_size can be 1 to" in output
    # the same limit holds for --batch-size (the override is checked as the spec's value)
    output = invoke("train", write_spec(SMALL, "ok"), "--batch-size", "100000", "--out", tmp_path / "r", code=2).output
    assert "batch_size can be 1 to" in output


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--seed", 2**70),
        ("--seed", -1),
        ("--seeds", 2**40),
        ("--batch-size", 10**20),
        ("--limit-train", 10**20),
        ("--limit-val", 10**20),
        ("--limit-test", 10**20),
    ],
)
def test_cli_numbers_out_of_range_are_refused(write_spec, tmp_path, flag, value):
    output = invoke("train", write_spec(SMALL), flag, value, "--out", tmp_path / "runs", code=2).output
    assert flag in output and "Traceback" not in output
    assert not (tmp_path / "runs").exists()


def test_seeds_counting_past_the_largest_seed_are_refused(write_spec, tmp_path):
    spec = write_spec(SMALL + f"\n[train]\nseed = {MAX_SEED - 1}\n")
    invoke("check", spec)  # the spec itself is fine
    output = invoke("train", spec, "--seeds", "3", "--out", tmp_path / "runs", code=2).output
    assert "--seeds 3" in output and "past the largest seed" in output


def test_the_largest_seed_check_accepts_trains(write_spec, tmp_path):
    # seed + 1 seeds the augmentation generator, numpy takes 32 bits: the bound is what every one accepts
    spec = write_spec(SMALL + f"\n[train]\nseed = {MAX_SEED}\nepochs = 1\nbatch_size = 16\n")
    invoke("check", spec)
    run_dir = run_dir_of(invoke("train", spec, "--out", tmp_path / "runs", "--quiet", "--no-test"))
    assert runs.read_json(run_dir / runs.SUMMARY)["status"] == "completed"
    run_dir = run_dir_of(
        invoke(
            "train",
            write_spec(SMALL, "b"),
            "--seed",
            MAX_SEED,
            "--epochs",
            1,
            "--out",
            tmp_path / "r",
            "-q",
            "--no-test",
        )
    )
    assert runs.read_json(run_dir / runs.SUMMARY)["seed"] == MAX_SEED
