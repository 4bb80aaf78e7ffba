"""Data that cannot mean what it claims is refused: a head of fewer than two classes (however the
count arises, the same in `graphc check` and `graphc train`, exit 2, naming the head and the fix),
a class folder that is another class folder, an unreadable folder; and the decoded-image cache sees
a replaced image even when its size and modification time were kept."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from graphc.errors import RunError
from graphc.lang.spec import DataSpec
from graphc.runtime.data import imagefolder
from graphc.runtime.data.load import load_dataset
from tests.conftest import TINY_SPEC, invoke
from tests.data_fixtures import write_image_folder

# conftest's tiny spec, one head reading the folder label (an image folder has no coarse labels by default)
ONE_HEAD = TINY_SPEC.split('[[nodes]]\nname = "coarse_head"')[0]


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_DATA", str(tmp_path / "graphc-data"))  # the decoded-image cache stays here


def folder_spec_text(root: Path, hierarchy: str = "", heads: str = "") -> str:
    return ONE_HEAD + heads + f'[data]\ndataset = "imagefolder"\nroot = "{root}"\n' + hierarchy


def check_and_train(spec: Path, tmp_path: Path, *check_args: str) -> tuple[str, str]:
    """`graphc check` and `graphc train` of ``spec``: both must refuse it with exit 2; their outputs."""
    checked = invoke("check", spec, *check_args, code=2).output
    trained = invoke("train", spec, "--epochs", "1", "--out", tmp_path / "runs", "--quiet", code=2).output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.json"))
    return checked, trained


def test_a_synthetic_head_of_one_class_is_refused_by_check_and_train(write_spec, tmp_path):
    spec = write_spec(TINY_SPEC.replace("coarse_classes = 2", "coarse_classes = 1"))
    for output in check_and_train(spec, tmp_path):
        assert "node 'coarse_head'" in output and "predicts task 'coarse', which has 1 class" in output
        assert "synthetic.coarse_classes to 2 or more" in output  # the fix


def test_a_declared_head_of_one_class_is_refused(write_spec, tmp_path):
    spec = write_spec(TINY_SPEC.replace('task = "coarse"', 'task = "coarse"\nclasses = 1'))
    checked = invoke("check", spec, code=2).output
    # the data set says 2, the head 1: either way the head is refused, naming itself
    assert "node 'coarse_head'" in checked and "classes" in checked


def test_a_head_declared_with_one_class_is_refused_before_any_data_is_read(tmp_path):
    # An image-folder spec checked without --data: nothing contradicts `classes = 1` but the rule itself.
    spec = tmp_path / "one_declared.toml"
    spec.write_text(folder_spec_text(tmp_path / "not-read").replace('task = "fine"', 'task = "fine"\nclasses = 1'))
    checked = invoke("check", spec, code=2).output
    assert "node 'fine_head'" in checked and "which has 1 class" in checked


def test_a_hierarchy_table_of_one_group_under_a_head_is_refused(tmp_path):
    write_image_folder(tmp_path / "pics", ["cat", "dog"], per_class=2)
    heads = '[[nodes]]\nname = "kind_head"\nkind = "head"\ninput = "trunk"\ntask = "kind"\n\n'
    text = folder_spec_text(tmp_path / "pics", "hierarchy = { kind = { animal = ['cat', 'dog'] } }\n", heads)
    spec = tmp_path / "one_group.toml"
    spec.write_text(text.replace('task = "fine"', 'task = "fine"\nclasses = 2'))
    checked, trained = check_and_train(spec, tmp_path)
    invoke("check", spec, "--data", code=2)  # with the folder read too
    for output in (checked, trained):
        assert "node 'kind_head'" in output and "table 'kind' has 1 group" in output
        assert "at least two groups" in output


def test_an_image_folder_of_one_class_is_refused_with_exit_2(tmp_path):
    write_image_folder(tmp_path / "pics", ["cat"], per_class=2)
    spec = tmp_path / "one_class.toml"
    spec.write_text(folder_spec_text(tmp_path / "pics").replace('task = "fine"', 'task = "fine"\nclasses = 2'))
    checked = invoke("check", spec, "--data", code=2).output
    trained = invoke("train", spec, "--epochs", "1", "--out", tmp_path / "runs", "--quiet", code=2).output
    for output in (checked, trained):
        assert "single class folder (cat)" in output and "at least two" in output


@pytest.mark.parametrize("link", ["train/dog", "test/cat"])
def test_a_class_folder_that_is_another_class_folder_is_refused_naming_both(tmp_path, link):
    root = tmp_path / "pics"
    write_image_folder(root, ["cat", "dog", "eel"], per_class=2)
    folder = root / link
    for image in folder.iterdir():
        image.unlink()
    folder.rmdir()
    folder.symlink_to(root / "train" / "cat", target_is_directory=True)  # dog's images would be cat's too
    with pytest.raises(RunError) as raised:
        load_dataset(DataSpec(dataset="imagefolder", root=str(root), val_fraction=0.0))
    message = str(raised.value)
    assert str(root / "train" / "cat") in message and str(folder) in message
    assert ("two labels" if link.startswith("train") else "both trained and tested on") in message


def test_a_replaced_image_of_the_same_size_and_mtime_is_read_again(tmp_path):
    root = tmp_path / "pics"
    files = write_image_folder(root, ["cat", "dog"], per_class=2)
    data = DataSpec(dataset="imagefolder", root=str(root), val_fraction=0.0)
    first = load_dataset(data, image_shape=(3, 8, 8))
    target = files["train"][0]
    before = os.stat(target)
    replacement = tmp_path / "replacement.png"
    Image.new("RGB", (8, 8), (7, 200, 13)).save(replacement)
    # the same byte size: pad the shorter PNG after its end (decoders stop at IEND)
    content = replacement.read_bytes()
    assert len(content) <= before.st_size
    new = tmp_path / "new.png"
    new.write_bytes(content + b"\0" * (before.st_size - len(content)))
    os.replace(new, target)  # a new file at the old name, as a copy tool or an editor leaves it
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # ... with the old mtime
    after = os.stat(target)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    second = load_dataset(data, image_shape=(3, 8, 8))
    new_pixels = torch.tensor([7, 200, 13], dtype=torch.uint8)[:, None, None].expand(3, 8, 8)
    assert not any(torch.equal(image, new_pixels) for image in first.train.images)
    assert any(torch.equal(image, new_pixels) for image in second.train.images)  # the new pixels, not the cache's


def test_an_unreadable_class_folder_is_refused_with_the_folder_named(tmp_path, monkeypatch):
    root = tmp_path / "pics"
    write_image_folder(root, ["cat", "dog"], per_class=2)
    blocked = str(root / "train" / "dog")
    real = os.scandir

    def scandir(path="."):  # what chmod 000 gives a user who is not root (the tests run as root)
        if str(path) == blocked:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(imagefolder.os, "scandir", scandir)
    with pytest.raises(RunError, match=f"{blocked} cannot be read \\(Permission denied\\)"):
        load_dataset(DataSpec(dataset="imagefolder", root=str(root), val_fraction=0.0))
    spec = tmp_path / "s.toml"
    spec.write_text(folder_spec_text(root).replace('task = "fine"', 'task = "fine"\nclasses = 2'))
    output = invoke("train", spec, "--epochs", "1", "--out", tmp_path / "runs", "--quiet", code=1).output
    assert "cannot be read (Permission denied)" in output and "dog" in output
    assert "error" in invoke("check", spec, "--data", code=1).output


def test_an_unreadable_split_folder_is_refused(tmp_path, monkeypatch):
    root = tmp_path / "pics"
    write_image_folder(root, ["cat", "dog"], per_class=2)
    real = Path.iterdir

    def iterdir(self):
        if self == root / "test":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(RunError, match="test cannot be read"):
        load_dataset(DataSpec(dataset="imagefolder", root=str(root), val_fraction=0.0))
