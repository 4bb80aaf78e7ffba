"""Every file graphc writes goes through one writer (graphc.files): a symbolic link planted at an
output name is replaced, never followed, so the file it points to is untouched; files get the mode a
plain open() gives under the umask; where another writer is involved (job logs, train.lock,
TensorBoard) a planted link is refused with a message.

Each command is run with a link planted at every name it writes, pointing to a file outside its
output folder; the outside file must keep its bytes, and the output must be a regular file.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

import pytest

from graphc.errors import RunError
from graphc.files import atomic_write, atomic_write_text, open_append, refuse_planted_link
from tests.conftest import TESTS, TINY_SPEC, invoke, run_dir_of, train

SPEC = TESTS / "specs" / "tiny_train.toml"
SECRET = b"the user's own file: must never change\n"


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory) -> Path:
    """A one-epoch tiny_train run (few images); tests copy it before changing it."""
    out = tmp_path_factory.mktemp("runs")
    flags = ["--epochs", "1", "--limit-train", "64", "--limit-val", "32", "--limit-test", "32"]
    return run_dir_of(train(SPEC, *flags, "--out", out, "--quiet"))


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder outside every output folder, holding the files planted links point to."""
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


def plant(names: list[Path], outside: Path) -> dict[Path, Path]:
    """A link at each name to its own file in ``outside``; returns {name: target}."""
    targets = {}
    for i, name in enumerate(names):
        target = outside / f"{i}-{name.name}"
        target.write_bytes(SECRET)
        name.parent.mkdir(parents=True, exist_ok=True)
        name.unlink(missing_ok=True)
        name.symlink_to(target)
        targets[name] = target
    return targets


def assert_untouched(targets: dict[Path, Path], written: bool = True) -> None:
    for name, target in targets.items():
        assert target.read_bytes() == SECRET, f"{target} (linked from {name}) was written through"
        if written:
            assert not name.is_symlink() and name.is_file(), f"{name} is not a regular file"


# --------------------------------------------------------------------------- the writer


def test_the_writer_replaces_a_planted_link_and_never_follows_it(tmp_path, outside):
    targets = plant([tmp_path / "out" / "file.txt", tmp_path / "out" / "dangling.txt"], outside)
    (outside / "1-dangling.txt").unlink()  # a dangling link: replaced too, nothing created where it pointed
    atomic_write_text(tmp_path / "out" / "file.txt", "new")
    atomic_write_text(tmp_path / "out" / "dangling.txt", "new")
    assert (tmp_path / "out" / "file.txt").read_text() == "new" and not (tmp_path / "out" / "file.txt").is_symlink()
    assert not (outside / "1-dangling.txt").exists()
    assert targets[tmp_path / "out" / "file.txt"].read_bytes() == SECRET
    # a link to a directory is replaced as well; a real directory at the name is refused
    (tmp_path / "out" / "dir-link").symlink_to(outside)
    atomic_write_text(tmp_path / "out" / "dir-link", "new")
    assert (tmp_path / "out" / "dir-link").is_file() and sorted(p.name for p in outside.iterdir()) == ["0-file.txt"]
    (tmp_path / "out" / "real-dir").mkdir()
    with pytest.raises(IsADirectoryError) as refused:
        atomic_write_text(tmp_path / "out" / "real-dir", "new")
    assert refused.value.filename == str(tmp_path / "out" / "real-dir")  # the target's name, not the temp file's
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dangling.txt", "dir-link", "file.txt", "real-dir"]


def test_a_folder_the_user_named_may_be_a_link(tmp_path, outside):
    (tmp_path / "results").symlink_to(outside, target_is_directory=True)
    atomic_write_text(tmp_path / "results" / "x.txt", "in the folder the link names")
    assert (outside / "x.txt").read_text() == "in the folder the link names"


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_get_the_mode_open_gives_under_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "new.txt", "x")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
        expected = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
        assert expected == 0o666 & ~mask
        assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == expected  # not mkstemp's 0600
        # an existing file keeps its own mode, as open(path, "w") keeps it
        (tmp_path / "new.txt").chmod(0o640)
        atomic_write(tmp_path / "new.txt", lambda f: f.write(b"y"))
        assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o640
        with open_append(tmp_path / "log.txt") as log:
            log.write("line\n")
        assert stat.S_IMODE((tmp_path / "log.txt").stat().st_mode) == expected
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_run_and_report_files_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        flags = ["--epochs", "1", "--limit-train", "64", "--limit-val", "32", "--no-test"]
        run = run_dir_of(train(SPEC, *flags, "--out", tmp_path / "runs", "--quiet"))
        invoke("report", run, "-o", tmp_path / "report", "--format", "json")
    finally:
        os.umask(old)
    written = [p for p in run.iterdir() if p.name != "train.lock"] + list((tmp_path / "report").iterdir())
    assert {"summary.json", "metrics.jsonl", "metrics.csv", "last.pt", "best.pt", "config.json"} <= {
        p.name for p in written
    }
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path


def test_append_refuses_a_planted_link(tmp_path, outside):
    plant([tmp_path / "job.log"], outside)
    with pytest.raises(OSError) as refused:
        open_append(tmp_path / "job.log")
    assert refused.value.errno == errno.ELOOP and "not followed" in str(refused.value)
    assert (outside / "0-job.log").read_bytes() == SECRET
    with pytest.raises(OSError, match="not followed"):
        refuse_planted_link(tmp_path / "job.log")
    refuse_planted_link(tmp_path / "absent")  # nothing there: nothing to refuse
    os.mkfifo(tmp_path / "fifo.log")  # no reader: a plain open for writing would wait for one
    with pytest.raises(OSError):
        open_append(tmp_path / "fifo.log")


# --------------------------------------------------------------------------- every command


def test_report_replaces_links_planted_at_its_files(tmp_path, outside, one_epoch):
    out = tmp_path / "report"
    names = [out / n for n in ("results.md", "results.csv", "results.json", "fine_acc.png", "coarse_loss.svg")]
    targets = plant(names, outside)
    result = invoke("report", one_epoch, "-o", out, "--format", "json")
    assert_untouched(targets)
    assert str(out / "results.json") in result.stderr


def test_report_to_an_unwritable_place_is_a_message(tmp_path, one_epoch, monkeypatch):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "results.md").mkdir()  # a directory where a file goes
    result = invoke("report", one_epoch, "-o", tmp_path / "report", code=1)
    assert f"{tmp_path / 'report' / 'results.md'}: Is a directory" in result.stderr
    (tmp_path / "file").write_text("x")  # -o under a file
    under = invoke("report", one_epoch, "-o", tmp_path / "file" / "report", code=1)
    assert "cannot create the output directory" in under.stderr
    # a folder without write permission (the tests run as root, who may write anywhere: simulated)
    import graphc.files as files

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), kwargs.get("dir"))

    monkeypatch.setattr(files.tempfile, "mkstemp", refused)
    denied = invoke("report", one_epoch, "-o", tmp_path / "elsewhere", code=1)
    assert "cannot write the report in" in denied.stderr and "Permission denied" in denied.stderr


def test_eval_confusion_replaces_planted_links(tmp_path, outside, one_epoch):
    out = tmp_path / "confusion"
    targets = plant([out / f"{t}_confusion.{s}" for t in ("fine", "coarse") for s in ("png", "svg")], outside)
    invoke("eval", one_epoch, "--confusion", out, "--device", "cpu")
    assert_untouched(targets)


def test_export_replaces_a_planted_link(tmp_path, outside):
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_SPEC)
    targets = plant([tmp_path / "model.onnx"], outside)
    invoke("export", spec, "--onnx", tmp_path / "model.onnx", "--no-verify")
    assert_untouched(targets)


def test_render_replaces_a_planted_link(tmp_path, outside):
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_SPEC)
    targets = plant([tmp_path / "tiny.svg", tmp_path / "chosen.png"], outside)
    invoke("render", spec, "-o", tmp_path / "chosen.png")
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the default output: <stem>.svg in the current folder
    try:
        invoke("render", spec)
    finally:
        os.chdir(cwd)
    assert_untouched(targets)


def test_resuming_a_run_replaces_links_planted_at_its_files(tmp_path, outside, one_epoch):
    """Every file of the run moved outside and linked back (so the links read as the run's own
    files): resuming reads through them, but writes only the run's own folder."""
    run = Path(shutil.copytree(one_epoch, tmp_path / "run"))
    targets = {}
    for path in sorted(run.iterdir()):
        if path.is_file() and path.name != "train.lock":
            target = outside / path.name
            shutil.move(path, target)
            path.symlink_to(target)
            targets[path] = target
    before = {target: target.read_bytes() for target in targets.values()}
    train("--resume", run, "--epochs", "2", "--quiet")
    assert {target: target.read_bytes() for target in targets.values()} == before  # all untouched
    for name in ("summary.json", "metrics.jsonl", "metrics.csv", "last.pt", "config.json"):
        assert (run / name).is_file() and not (run / name).is_symlink(), name


def test_a_planted_train_lock_link_is_refused(tmp_path, outside, one_epoch):
    run = Path(shutil.copytree(one_epoch, tmp_path / "run"))
    targets = plant([run / "train.lock"], outside)
    result = train("--resume", run, "--epochs", "2", code=1)
    assert "train.lock is a symbolic link" in result.stderr
    assert_untouched(targets, written=False)


def test_a_planted_tensorboard_folder_link_is_refused(tmp_path, outside):
    from graphc.runtime.train.tensorboard import Board

    run = tmp_path / "run"
    run.mkdir()
    (run / "tensorboard").symlink_to(outside, target_is_directory=True)
    with pytest.raises(RunError, match=r"tensorboard: a symbolic link \(to .*outside\) is where graphc writes"):
        Board(run)
    assert list(outside.iterdir()) == []


@pytest.mark.slow
def test_a_sweep_refuses_a_planted_job_log_link(tmp_path, outside):
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_SPEC)
    out = tmp_path / "runs"
    targets = plant([out / "sweep-logs" / "tiny-seed0.log"], outside)
    result = invoke("train", spec, "--jobs", "1", "--out", out, "--epochs", "1", code=1)
    assert "a symbolic link where the sweep writes its job log" in result.stderr
    assert_untouched(targets, written=False)
    assert not (out / "tiny").exists()  # nothing started


def test_the_image_cache_replaces_a_planted_link(tmp_path, outside):
    from graphc.runtime.data.imagefolder import _write_cache

    targets = plant([tmp_path / "cache" / "root-0123.pt"], outside)
    _write_cache(tmp_path / "cache" / "root-0123.pt", {"format": "x"})
    assert_untouched(targets)
