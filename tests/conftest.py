"""Shared fixtures: tiny specs written to temporary files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Two cores: keep torch from oversubscribing them when pytest-xdist runs two workers.
torch.set_num_threads(1)

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
