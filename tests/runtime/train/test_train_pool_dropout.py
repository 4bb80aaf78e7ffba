"""`graphc train` on a spec that uses the standalone pool and dropout node kinds (issue 24):
a short synthetic run, its run directory, and a resume that reads the run's spec back."""

from __future__ import annotations

import json
import math
from pathlib import Path

from graphc.runtime.runs.checkpoint import load_checkpoint
from tests.conftest import run_dir_of, train

SPEC = """\
name = "pool_dropout_train"

[[nodes]]
name = "image"
kind = "input"
shape = [3, 16, 16]

[[nodes]]
name = "stem"
kind = "conv_block"
input = "image"
channels = [8]
norm = "batch"

[[nodes]]
name = "down"
kind = "pool"
input = "stem"
pool = "avg"

[[nodes]]
name = "drop"
kind = "dropout"
input = "down"
dropout = 0.2
dropout_kind = "channel"

[[nodes]]
name = "gap"
kind = "pool"
input = "drop"
pool = "global_avg"

[[nodes]]
name = "fc"
kind = "fc_block"
input = "gap"
units = [16]

[[nodes]]
name = "fc_drop"
kind = "dropout"
input = "fc"
dropout = 0.3

[[nodes]]
name = "fine_head"
kind = "head"
input = "fc_drop"
task = "fine"

[[nodes]]
name = "coarse_head"
kind = "head"
input = "drop"
task = "coarse"

[data]
dataset = "synthetic"
synthetic = { classes = 4, coarse_classes = 2, train_size = 200, test_size = 40 }

[train]
batch_size = 16
"""


def test_a_spec_with_pool_and_dropout_nodes_trains_and_resumes(tmp_path):
    spec = tmp_path / "pool_dropout_train.toml"
    spec.write_text(SPEC)
    common = ("--dataset", "synthetic", "--limit-train", "64", "--limit-val", "32", "--quiet")
    run_dir = run_dir_of(train(spec, "--epochs", "1", "--out", tmp_path / "runs", *common))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert {row["split"] for row in rows} == {"train", "val"} and all(math.isfinite(row["loss"]) for row in rows)
    weights = load_checkpoint(run_dir / "last.pt")["model"]
    # pool and dropout nodes have no parameters or buffers: only the blocks and heads are saved
    assert {key.split(".")[0] for key in weights} == {"stem", "fc", "fine_head", "coarse_head"}
    resumed = Path(train("--resume", run_dir, "--epochs", "2", "--quiet").stdout.strip())
    assert resumed == run_dir and load_checkpoint(run_dir / "last.pt")["epoch"] == 2
