"""Data sets: splits, synthetic data, CIFAR-100 on small real-format files, image folders."""

from __future__ import annotations

import io
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from graphc.errors import RunError, SpecError, UsageError
from graphc.lang.spec import DataSpec, SyntheticData
from graphc.runtime.data import cifar100, imagefolder
from graphc.runtime.data.load import load_dataset
from graphc.runtime.data.split import Split, default_data_dir, split_pool
from tests.data_fixtures import (
    CIFAR10_HIERARCHY,
    cifar100_archive,
    cifar100_coarse_of,
    class_image,
    dump_python2,
    write_cifar100,
    write_image_folder,
)


@pytest.fixture(autouse=True)
def data_home(tmp_path, monkeypatch):
    """Downloads and caches go to a fresh directory, never ~/.cache."""
    home = tmp_path / "graphc-data"
    monkeypatch.setenv("GRAPHC_DATA", str(home))
    return home


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a URL fails as it does offline, and is recorded."""
    calls = []

    def offline(request, *args, **kwargs):
        calls.append(getattr(request, "full_url", request))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    return calls


# --------------------------------------------------------------------------- Split / split_pool / limits


def test_split_subset_keeps_images_and_labels_aligned():
    images = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 1, 2, 2).contiguous()
    split = Split(images=images, labels={"fine": torch.arange(5) * 10})
    part = split.subset(torch.tensor([4, 1]))
    assert len(part) == 2 and part.images.is_contiguous()
    assert part.images[:, 0, 0, 0].tolist() == [4, 1] and part.labels["fine"].tolist() == [40, 10]
    assert split.subset(slice(0, 3)).labels["fine"].tolist() == [0, 10, 20]
    with pytest.raises(ValueError):
        Split(images=images.float(), labels={})
    with pytest.raises(ValueError):
        Split(images=images, labels={"fine": torch.arange(4)})


def test_split_pool_is_seeded_disjoint_and_sized():
    n = 103
    pool = Split(images=torch.zeros(n, 1, 1, 1, dtype=torch.uint8), labels={"id": torch.arange(n)})
    train, val = split_pool(pool, 0.2, seed=7)
    assert len(val) == round(0.2 * n) and len(train) == n - len(val)
    ids = torch.cat([train.labels["id"], val.labels["id"]])
    assert sorted(ids.tolist()) == list(range(n))  # disjoint and complete
    again_train, again_val = split_pool(pool, 0.2, seed=7)
    assert torch.equal(again_val.labels["id"], val.labels["id"])
    other_train, other_val = split_pool(pool, 0.2, seed=8)
    assert not torch.equal(other_val.labels["id"], val.labels["id"])
    assert train.labels["id"][:10].tolist() != list(range(10))  # shuffled, so a prefix is a random subset


def test_default_data_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHC_DATA", str(tmp_path / "x"))
    assert default_data_dir() == tmp_path / "x"
    monkeypatch.delenv("GRAPHC_DATA")
    assert default_data_dir() == Path.home() / ".cache" / "graphc"


# --------------------------------------------------------------------------- synthetic

SMALL = SyntheticData(classes=10, coarse_classes=2, train_size=600, test_size=300, noise=0.25)


def test_synthetic_shapes_labels_hierarchy_and_limits():
    data = DataSpec(dataset="synthetic", synthetic=SMALL, val_fraction=0.25, split_seed=3)
    ds = load_dataset(data, image_shape=(1, 12, 16))
    assert ds.name == "synthetic" and ds.classes == {"fine": 10, "coarse": 2}
    assert (len(ds.train), len(ds.val), len(ds.test)) == (450, 150, 300)
    assert ds.train.images.shape == (450, 1, 12, 16) and ds.train.images.dtype == torch.uint8
    assert ds.class_names["fine"][7] == "fine_7" and ds.class_names["coarse"] == ["coarse_0", "coarse_1"]
    assert list(ds.hierarchy) == [("fine", "coarse")]
    mapping = ds.hierarchy[("fine", "coarse")]
    assert mapping.tolist() == [0] * 5 + [1] * 5
    for split in (ds.train, ds.val, ds.test):
        assert torch.equal(split.labels["coarse"], mapping[split.labels["fine"]])
    assert torch.bincount(ds.test.labels["fine"]).tolist() == [30] * 10  # balanced
    small = load_dataset(data, image_shape=(1, 12, 16), limit_train=20, limit_val=5)
    assert torch.equal(small.train.images, ds.train.images[:20]) and len(small.val) == 5
    with pytest.raises(UsageError, match="--limit-train"):
        load_dataset(data, limit_train=0)
    names = load_dataset(DataSpec(dataset="synthetic", synthetic=SyntheticData(train_size=200, test_size=100)))
    assert names.class_names["fine"][7] == "fine_07" and names.class_names["coarse"][3] == "coarse_03"


def test_synthetic_is_deterministic_per_seed():
    a = load_dataset(DataSpec(dataset="synthetic", synthetic=SMALL, split_seed=1))
    b = load_dataset(DataSpec(dataset="synthetic", synthetic=SMALL, split_seed=1))
    c = load_dataset(DataSpec(dataset="synthetic", synthetic=SMALL, split_seed=2))
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels["fine"], b.test.labels["fine"])
    assert not torch.equal(a.train.images, c.train.images)


def test_synthetic_is_learnable_and_hierarchical():
    """A nearest-class-mean classifier (an independent, trivially simple learner) must beat
    chance by far on held-out images; fine classes of one group must look alike."""
    ds = load_dataset(DataSpec(dataset="synthetic", synthetic=SMALL, val_fraction=0.0))
    x_train = ds.train.images.flatten(1).float() / 255
    x_test = ds.test.images.flatten(1).float() / 255
    for field, chance in (("fine", 0.1), ("coarse", 0.5)):
        labels = ds.train.labels[field]
        means = torch.stack([x_train[labels == k].mean(0) for k in range(ds.classes[field])])
        predicted = torch.cdist(x_test, means).argmin(1)
        accuracy = (predicted == ds.test.labels[field]).float().mean().item()
        assert accuracy > chance + 0.5 * (1 - chance), (field, accuracy)
    means = torch.stack([x_train[ds.train.labels["fine"] == k].mean(0) for k in range(10)])
    distance = torch.cdist(means, means)
    group = torch.arange(10) // 5
    same = distance[(group[:, None] == group[None, :]) & ~torch.eye(10, dtype=torch.bool)].mean()
    other = distance[group[:, None] != group[None, :]].mean()
    assert same < 0.8 * other


def test_synthetic_default_size_is_quick():
    start = time.perf_counter()
    ds = load_dataset(DataSpec(dataset="synthetic"))  # 5000 + 1000 images of 3x32x32
    assert len(ds.train) + len(ds.val) == 5000 and len(ds.test) == 1000
    assert time.perf_counter() - start < 30  # generous: a sanity bound, not a benchmark


# --------------------------------------------------------------------------- CIFAR-100


def test_cifar100_reads_the_real_format(tmp_path):
    written = write_cifar100(tmp_path, train_per_class=2, test_per_class=1)
    ds = load_dataset(DataSpec(dataset="cifar100", root=str(tmp_path), val_fraction=0.2), image_shape=(3, 32, 32))
    assert ds.name == "cifar100" and ds.classes == {"fine": 100, "coarse": 20}
    assert (len(ds.train), len(ds.val), len(ds.test)) == (160, 40, 100)
    assert ds.class_names["fine"][3] == "fine_name_03" and ds.class_names["coarse"][19] == "coarse_name_19"
    assert list(ds.hierarchy) == [("fine", "coarse")]
    mapping = ds.hierarchy[("fine", "coarse")]
    assert mapping.tolist() == [cifar100_coarse_of(f) for f in range(100)]
    # Test split in file order: row i is 1024 red, 1024 green, 1024 blue values, each row-major.
    row = written["test"][b"data"][5]
    assert ds.test.images[5, 0, 0, 1] == row[1] and ds.test.images[5, 1, 2, 3] == row[1024 + 2 * 32 + 3]
    assert ds.test.images[5, 2, 31, 31] == row[3071]
    assert ds.test.labels["fine"].tolist() == written["test"][b"fine_labels"]


def test_cifar100_matches_torchvision(tmp_path, monkeypatch):
    """torchvision's own CIFAR100 class, an independent reader of the format, sees the same pictures."""
    import torchvision.datasets.cifar as tv_cifar

    write_cifar100(tmp_path, train_per_class=1, test_per_class=1)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)  # our files are not the real ones
    reference = tv_cifar.CIFAR100(str(tmp_path), train=False, download=False)
    ds = load_dataset(DataSpec(dataset="cifar100", root=str(tmp_path)), download=False)
    for i in (0, 17, 99):
        image, fine = reference[i]
        assert torch.equal(ds.test.images[i], torch.from_numpy(np.array(image)).permute(2, 0, 1))
        assert ds.test.labels["fine"][i] == fine
    assert ds.class_names["fine"] == reference.classes


def test_cifar100_accepts_the_folder_itself(tmp_path):
    write_cifar100(tmp_path, train_per_class=1, test_per_class=1)
    ds = load_dataset(DataSpec(dataset="cifar100"), root=tmp_path / "cifar-100-python", download=False)
    assert len(ds.test) == 100


def test_cifar100_offline_says_where_to_put_the_files(tmp_path, no_network):
    with pytest.raises(RunError) as info:
        load_dataset(DataSpec(dataset="cifar100", root=str(tmp_path / "data")))
    message = str(info.value)
    assert no_network, "the loader should have tried to download"
    for needle in (
        str(tmp_path / "data" / "cifar-100-python"),
        "train, test, meta",
        cifar100.URL,
        "tar -xzf",
        "--data-dir",
        "Temporary failure in name resolution",
    ):
        assert needle in message, needle


def test_cifar100_default_directory_and_no_download(data_home, no_network):
    with pytest.raises(RunError) as info:
        load_dataset(DataSpec(dataset="cifar100"), download=False)
    assert str(data_home / "cifar-100-python") in str(info.value) and "downloading is turned off" in str(info.value)
    assert no_network == []  # never touched the network


class _Response(io.BytesIO):
    """Enough of an HTTP response for torchvision's downloader."""

    def __init__(self, data: bytes, url: str):
        super().__init__(data)
        self.length, self.url, self.status = len(data), url, 200


def test_cifar100_downloads_verifies_and_unpacks(tmp_path, monkeypatch):
    write_cifar100(tmp_path / "source", train_per_class=1, test_per_class=1)
    archive, md5 = cifar100_archive(tmp_path / "source")
    requested = []

    def serve(request, *args, **kwargs):
        requested.append(request.full_url)
        return _Response(archive, request.full_url)

    monkeypatch.setattr(urllib.request, "urlopen", serve)
    monkeypatch.setattr(cifar100, "ARCHIVE_MD5", md5)
    ds = load_dataset(DataSpec(dataset="cifar100", root=str(tmp_path / "cache")))
    assert cifar100.URL in requested and len(ds.test) == 100
    assert (tmp_path / "cache" / "cifar-100-python.tar.gz").is_file()

    # A download whose checksum does not match is refused with both sums and the same guidance.
    monkeypatch.setattr(cifar100, "ARCHIVE_MD5", "0" * 32)
    with pytest.raises(RunError, match=f"checksum mismatch: the download .* has md5 {md5}.* md5 {'0' * 32}.*tar -xzf"):
        load_dataset(DataSpec(dataset="cifar100", root=str(tmp_path / "elsewhere")))
    assert not list((tmp_path / "elsewhere").iterdir())  # the bad download is not kept


def test_cifar100_unpacks_a_present_archive_offline(tmp_path, monkeypatch, no_network):
    write_cifar100(tmp_path / "source", train_per_class=1, test_per_class=1)
    archive, md5 = cifar100_archive(tmp_path / "source")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cifar-100-python.tar.gz").write_bytes(archive)
    monkeypatch.setattr(cifar100, "ARCHIVE_MD5", md5)
    ds = load_dataset(DataSpec(dataset="cifar100", root=str(tmp_path / "data")), download=False)
    assert len(ds.test) == 100 and no_network == []


def test_cifar100_bad_files_are_named(tmp_path):
    write_cifar100(tmp_path, train_per_class=1, test_per_class=1)
    folder = tmp_path / "cifar-100-python"
    (folder / "test").write_bytes(b"not a pickle")
    with pytest.raises(RunError, match=r"cifar-100-python/test is not a readable CIFAR-100 pickle"):
        load_dataset(DataSpec(dataset="cifar100", root=str(tmp_path)), download=False)
    # CIFAR-10's files have 'labels', not fine/coarse labels.
    dump_python2({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, folder / "test")
    with pytest.raises(RunError, match="lacks 'fine_labels', 'coarse_labels'.*CIFAR-10"):
        load_dataset(DataSpec(dataset="cifar100", root=str(tmp_path)), download=False)


def test_cifar100_inconsistent_hierarchy_and_input_shape(tmp_path):
    written = write_cifar100(tmp_path, train_per_class=1, test_per_class=1)
    with pytest.raises(SpecError, match=r"input node's shape is \[1, 28, 28\].*3x32x32"):
        load_dataset(DataSpec(dataset="cifar100", root=str(tmp_path)), image_shape=(1, 28, 28), download=False)
    table = written["train"]
    table[b"coarse_labels"][0] = (table[b"coarse_labels"][0] + 1) % 20
    fine = table[b"fine_labels"][0]
    table[b"fine_labels"][1] = fine  # the same fine class now has two coarse labels
    table[b"coarse_labels"][1] = cifar100_coarse_of(fine)
    dump_python2(table, tmp_path / "cifar-100-python" / "train")
    with pytest.raises(RunError, match=f"fine class {fine} appears with more than one coarse label"):
        load_dataset(DataSpec(dataset="cifar100", root=str(tmp_path)), download=False)


# --------------------------------------------------------------------------- image folders

CLASSES = ["truck", "cat", "airplane", "dog"]  # written in this (unsorted) order
HIERARCHY = {"coarse": {"vehicle": ["airplane", "truck"], "animal": ["cat", "dog"]}}


def folder_spec(root: Path, **changes) -> DataSpec:
    fields = dict(dataset="imagefolder", root=str(root), hierarchy=HIERARCHY, val_fraction=0.0)
    return DataSpec(**{**fields, **changes})


def reference_pixels(path: Path, mode: str = "RGB") -> torch.Tensor:
    """PIL's decoding of a file, the independent reference: (C, H, W) uint8."""
    with Image.open(path) as image:
        array = np.asarray(image.convert(mode))
    return torch.from_numpy(array.reshape(*array.shape[:2], -1).copy()).permute(2, 0, 1)


def test_imagefolder_png_labels_hierarchy_and_pixels(tmp_path):
    files = write_image_folder(tmp_path / "pics", CLASSES, per_class={"truck": 3, "cat": 2, "airplane": 2, "dog": 1})
    ds = load_dataset(folder_spec(tmp_path / "pics"), image_shape=(3, 8, 8))
    assert ds.name == "imagefolder" and ds.classes == {"fine": 4, "coarse": 2}
    assert ds.class_names == {"fine": ["airplane", "cat", "dog", "truck"], "coarse": ["animal", "vehicle"]}
    assert list(ds.hierarchy) == [("fine", "coarse")]
    mapping = ds.hierarchy[("fine", "coarse")]
    assert mapping.tolist() == [1, 0, 0, 1]
    assert torch.bincount(ds.train.labels["fine"]).tolist() == [2, 2, 1, 3]
    assert len(ds.test) == 4 and len(ds.val) == 0
    assert torch.equal(ds.train.labels["coarse"], mapping[ds.train.labels["fine"]])
    # Every decoded image is exactly PIL's decoding of one file of its class.
    by_class = {name: [reference_pixels(p) for p in files["train"] if p.parent.name == name] for name in CLASSES}
    for image, fine in zip(ds.train.images, ds.train.labels["fine"]):
        candidates = by_class[ds.class_names["fine"][fine]]
        assert any(torch.equal(image, ref) for ref in candidates)


def test_imagefolder_jpeg_and_modes_convert_to_rgb(tmp_path):
    root = tmp_path / "pics"
    files = write_image_folder(root, ["cat", "dog"], per_class=1, suffix=".jpg")
    odd = {}
    for mode, name in (("RGBA", "a.png"), ("L", "b.png"), ("P", "c.png"), ("L", "d.jpeg")):
        path = root / "train" / "cat" / name
        class_image(0, (8, 8), mode=mode, variant=3).save(path)
        odd[name] = path
    (root / "train" / "cat" / "notes.txt").write_text("ignored")  # other files are skipped
    (root / "train" / ".hidden").mkdir()
    ds = load_dataset(folder_spec(root, hierarchy={}), image_shape=(3, 8, 8))
    assert ds.classes == {"fine": 2} and len(ds.train) == 6
    cat_files = sorted([*odd.values(), files["train"][0]], key=lambda p: p.name)
    cat_images = ds.train.images[ds.train.labels["fine"] == 0]
    for path in cat_files:  # decoded and converted like PIL's convert("RGB"), within JPEG rounding
        ref = reference_pixels(path)
        tolerance = 3 if path.suffix in (".jpg", ".jpeg") else 0
        assert any((image.int() - ref.int()).abs().max() <= tolerance for image in cat_images), path.name
    gray = load_dataset(folder_spec(root, hierarchy={}), image_shape=(1, 8, 8))
    assert gray.train.images.shape == (6, 1, 8, 8)
    ref = reference_pixels(odd["b.png"], "L")
    assert any((image.int() - ref.int()).abs().max() <= 2 for image in gray.train.images)


def test_imagefolder_cache_is_reused_and_invalidated(tmp_path, monkeypatch, data_home):
    root = tmp_path / "pics"
    write_image_folder(root, CLASSES, per_class=2)
    first = load_dataset(folder_spec(root), image_shape=(3, 8, 8))
    cache_files = list((data_home / "imagefolder-cache").iterdir())
    assert len(cache_files) == 1 and cache_files[0].suffix == ".pt"  # no temporary files left behind

    real_decode = imagefolder._decode
    decoded = []

    def counting_decode(path, *args):
        decoded.append(path)
        return real_decode(path, *args)

    monkeypatch.setattr(imagefolder, "_decode", counting_decode)
    second = load_dataset(folder_spec(root), image_shape=(3, 8, 8))
    assert decoded == [] and torch.equal(first.train.images, second.train.images)

    changed = root / "train" / "cat" / "001.png"
    class_image(0, (8, 8), variant=9).save(changed)
    stamp = time.time() + 5
    os.utime(changed, (stamp, stamp))
    third = load_dataset(folder_spec(root), image_shape=(3, 8, 8))
    assert decoded and any(torch.equal(image, reference_pixels(changed)) for image in third.train.images)
    assert not torch.equal(first.train.images, third.train.images)


def test_imagefolder_sizes_need_resize(tmp_path):
    root = tmp_path / "pics"
    write_image_folder(root, CLASSES, per_class=1)
    class_image(1, (10, 6)).save(root / "train" / "cat" / "odd.png")
    with pytest.raises(RunError, match=r"odd.png is 10x6 .* must be 8x8.*resize = \[8, 8\]"):
        load_dataset(folder_spec(root), image_shape=(3, 8, 8))
    with pytest.raises(RunError, match=r"is 8x8 .* must be 16x16"):  # the spec wants another size
        load_dataset(folder_spec(root), image_shape=(3, 16, 16))
    ds = load_dataset(folder_spec(root, resize=(16, 16)), image_shape=(3, 16, 16))
    assert ds.train.images.shape == (5, 3, 16, 16) and ds.test.images.shape == (4, 3, 16, 16)
    with pytest.raises(SpecError, match=r"resize = \[16, 16\] but the input node's shape is \[3, 8, 8\]"):
        load_dataset(folder_spec(root, resize=(16, 16)), image_shape=(3, 8, 8))
    with pytest.raises(SpecError, match="RGB \\(3\\) or grayscale \\(1\\)"):
        load_dataset(folder_spec(root), image_shape=(4, 8, 8))


@pytest.mark.parametrize(
    "hierarchy, message",
    [
        (
            {"coarse": {"vehicle": ["airplane", "truck"], "animal": ["cat"]}},
            r"class 'dog' \(folder .*\) is in no group",
        ),
        (
            {"coarse": {"vehicle": ["airplane", "truck"], "animal": ["cat", "dog", "dgo"]}},
            r"lists class 'dgo', but .* has no folder.*did you mean 'dog'",
        ),
        (
            {"coarse": {"vehicle": ["airplane", "truck", "cat"], "animal": ["cat", "dog"]}},
            r"class 'cat' is listed in both 'animal' and 'vehicle'",
        ),
        (
            {"coarse": {"vehicle": ["airplane", "truck"], "animal": ["cat", "dog", "dog"]}},
            r"class 'dog' is listed twice in 'animal'",
        ),
        ({"fine": {"a": ["airplane", "truck", "cat", "dog"]}}, r"'fine' is the label the class folders give"),
    ],
)
def test_imagefolder_hierarchy_must_map_every_class_once(tmp_path, hierarchy, message):
    write_image_folder(tmp_path / "pics", CLASSES, per_class=1)
    with pytest.raises(SpecError, match=message) as info:
        load_dataset(folder_spec(tmp_path / "pics", hierarchy=hierarchy))
    assert info.value.field.startswith("hierarchy.")


def test_imagefolder_layout_errors(tmp_path):
    root = tmp_path / "pics"
    with pytest.raises(RunError, match="does not exist"):
        load_dataset(folder_spec(root))
    with pytest.raises(UsageError, match="--data-dir"):
        load_dataset(DataSpec(dataset="imagefolder"))
    write_image_folder(root, CLASSES, per_class=1)
    (root / "test" / "horse").mkdir()
    with pytest.raises(RunError, match=r"test/horse is a class with no training folder"):
        load_dataset(folder_spec(root))
    (root / "train" / "horse").mkdir()
    with pytest.raises(RunError, match=r"class folder .*train/horse holds no .png/.jpg/.jpeg images"):
        load_dataset(folder_spec(root, hierarchy={}))
    for path in (root / "train" / "horse", root / "test" / "horse"):
        path.rmdir()
    (root / "train" / "cat" / "000.png").write_bytes(b"garbage")
    with pytest.raises(RunError, match=r"cat/000.png cannot be decoded"):
        load_dataset(folder_spec(root))
    for child in (root / "test").rglob("*.png"):
        child.unlink()
    for child in sorted((root / "test").iterdir()):
        child.rmdir()
    (root / "test").rmdir()
    with pytest.raises(RunError, match="has no test/ directory"):
        load_dataset(folder_spec(root))


def test_imagefolder_with_a_single_class_is_refused(tmp_path):
    # One class: every loss would be 0 and every accuracy 100%, whatever the model learns.
    write_image_folder(tmp_path / "pics", ["cat"], per_class=2)
    with pytest.raises(SpecError, match=r"train has a single class folder \(cat\); a classifier needs at least two"):
        load_dataset(folder_spec(tmp_path / "pics", hierarchy={}))


def test_imagefolder_cifar10_style_hierarchy(tmp_path):
    """The shape of the shared CIFAR-10 example: 10 classes, vehicle/animal."""
    classes = sorted(c for group in CIFAR10_HIERARCHY.values() for c in group)
    write_image_folder(tmp_path / "c10", classes, per_class=2, suffix=".jpg")
    ds = load_dataset(folder_spec(tmp_path / "c10", hierarchy={"coarse": CIFAR10_HIERARCHY}, val_fraction=0.25))
    assert ds.classes == {"fine": 10, "coarse": 2} and (len(ds.train), len(ds.val)) == (15, 5)
    vehicles = [classes.index(c) for c in CIFAR10_HIERARCHY["vehicle"]]
    assert ds.hierarchy[("fine", "coarse")][vehicles].tolist() == [ds.class_names["coarse"].index("vehicle")] * 4
