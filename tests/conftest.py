"""Shared fixtures and helpers: tiny specs written to temporary files, and CLI calls that must end
cleanly (import the helpers as ``from tests.conftest import ...``)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from graphc.cli import app

TESTS = Path(__file__).resolve().parent  # tests/: its specs/ holds the small training spec
REPO = TESTS.parent  # the repository: specs/, benchmarks/, docs/

# Two cores: keep torch from oversubscribing them when pytest-xdist runs two workers.
torch.set_num_threads(1)

# The Ctrl-C tests need Python's handler for SIGINT. A shell that starts the suite as a background
# job (`pytest &` without job control) hands it SIGINT ignored, and Python keeps it ignored (in
# the test processes and in the graphc processes they start): restore the handler here.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# Likewise SIGHUP under nohup: graphc rightly leaves an ignored SIGHUP alone (runtime/train/signals.py),
# so the tests of its hangup handling need the default disposition whatever started the suite.
if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)

# One head (fine) on the tiny trunk, its [data] table given as TOML lines in {data}: for the tests of
# data sets that need no coarse label (an image folder of one level, a spec/checkpoint mismatch).
ONE_HEAD_SPEC = """\
name = "folders"

[[nodes]]
name = "image"
kind = "input"
shape = [3, 8, 8]

[[nodes]]
name = "trunk"
kind = "conv_block"
input = "image"
channels = [4]
pool = "max"

[[nodes]]
name = "fine_head"
kind = "head"
input = "trunk"
task = "fine"

[data]
{data}
"""

TINY_SPEC = """\
name = "tiny"

[[nodes]]
name = "image"
kind = "input"
shape = [3, 8, 8]

[[nodes]]
name = "trunk"
kind = "conv_block"
input = "image"
channels = [4]
pool = "max"

[[nodes]]
name = "fine_head"
kind = "head"
input = "trunk"
task = "fine"

[[nodes]]
name = "coarse_head"
kind = "head"
input = "trunk"
task = "coarse"

[data]
dataset = "synthetic"
synthetic = { classes = 4, coarse_classes = 2 }
"""


@pytest.fixture
def write_spec(tmp_path: Path):
    """Write spec text to ``tmp_path/<name>.toml`` and return the path."""

    def write(text: str, name: str = "spec") -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        return path

    return write


def clean_exit(result) -> bool:
    """True when a CliRunner result ended by the CLI's own exit, not an escaped exception
    (CliRunner catches those, so a traceback never shows in ``result.output``)."""
    return result.exception is None or isinstance(result.exception, SystemExit)


runner = CliRunner()


def invoke(*args, code: int = 0):
    """Run ``graphc ARGS...`` (each argument str()-ed); assert its exit code, that it ended by the
    CLI's own exit and that no traceback was printed."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    assert clean_exit(result) and "Traceback" not in result.output
    return result


def train(*args, code: int = 0):
    """``graphc train ARGS...`` through :func:`invoke`."""
    return invoke("train", *args, code=code)


def run_dir_of(result) -> Path:
    """The run directory a ``graphc train --quiet`` printed: the only line of its stdout."""
    (line,) = [line for line in result.stdout.splitlines() if line.strip()]
    return Path(line)


def interrupt_at(monkeypatch, call: int) -> None:
    """Make the ``call``-th training step raise KeyboardInterrupt, as Ctrl-C would."""
    import graphc.runtime.train.loop as training

    real, calls = training.train_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_step", step)
