"""Built-in specs: the reference specs by name from any folder, also after a plain (non-editable) install."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

import graphc
from graphc.cli import app
from graphc.lang.builtin import builtin_path, builtin_specs
from tests.conftest import REPO

ROOT = REPO
REFERENCE = ["independent", "reuse_coarse", "reuse_fine", "shared_conv", "shared_reuse_coarse", "shared_reuse_fine"]
runner = CliRunner()


def test_the_six_reference_specs_and_the_examples_are_built_in():
    names = [spec.name for spec in builtin_specs()]
    assert names[:6] == REFERENCE
    assert "examples/cifar10_folders" in names
    assert all(spec.summary for spec in builtin_specs())
    assert builtin_path("shared_conv") == builtin_path("shared_conv.toml") == ROOT / "specs" / "shared_conv.toml"


def test_a_name_loads_the_built_in_spec_and_a_path_still_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert graphc.load_spec("shared_conv").name == "shared_conv"
    (tmp_path / "shared_conv").write_text('name = "mine"\n[[nodes]]\nname = "x"\nkind = "input"\nshape = [3, 8, 8]\n')
    assert graphc.load_spec("shared_conv").name == "mine"  # an existing file of that name is the user's


def test_cli_lists_and_checks_built_in_specs_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    listed = runner.invoke(app, ["specs"])
    assert listed.exit_code == 0, listed.output
    for name in REFERENCE:
        assert name in listed.output
    checked = runner.invoke(app, ["check", "shared_reuse_coarse"])
    assert checked.exit_code == 0, checked.output
    assert "18,483,064 parameters" in checked.output
    wrong = runner.invoke(app, ["check", "shared_con"])
    assert wrong.exit_code == 2
    assert "did you mean the built-in spec 'shared_conv'?" in wrong.output


def test_train_takes_a_built_in_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        [
            "train",
            "shared_conv",
            "--dataset",
            "synthetic",
            "--epochs",
            "1",
            "--batch-size",
            "50",
            "--limit-train",
            "100",
            "--limit-val",
            "50",
            "--out",
            str(tmp_path / "runs"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert (
        run_dir.parent.name == "shared_conv"
        and (run_dir / "spec.toml").read_text() == (ROOT / "specs/shared_conv.toml").read_text()
    )


@pytest.mark.slow
def test_a_plain_install_carries_the_specs(tmp_path):
    """Build the wheel, unpack it outside the checkout and run the installed graphc from another folder."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    site = tmp_path / "site"
    with zipfile.ZipFile(next(wheels.glob("graphc-*.whl"))) as wheel:
        wheel.extractall(site)
    assert (site / "graphc/specs/shared_reuse_coarse.toml").is_file()
    assert (site / "graphc/specs/reported_results.csv").is_file()
    # One import name in site-packages: the runtime and the command line live under graphc's own.
    top_level = {p.name for p in site.iterdir() if not p.name.endswith(".dist-info")}
    assert top_level == {"graphc"}, top_level
    assert (site / "graphc/runtime/train/launch.py").is_file() and (site / "graphc/cli/commands.py").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}

    def graphc_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "graphc", *args], cwd=elsewhere, env=env, capture_output=True, text=True
        )

    where = subprocess.run(
        [sys.executable, "-c", "import graphc.lang.builtin as b; print(b.specs_dir())"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()) == site / "graphc" / "specs"  # the installed copy, not the checkout's
    listed = graphc_cli("specs")
    assert listed.returncode == 0, listed.stderr
    assert "shared_reuse_coarse" in listed.stdout
    checked = graphc_cli("check", "shared_reuse_coarse")
    assert checked.returncode == 0, checked.stderr
    assert "ok shared_reuse_coarse" in checked.stdout
