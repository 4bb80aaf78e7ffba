"""Limits that limit (issue 26): an image folder decodes only the training and validation images a
limited run uses - the same images, in the same order, a full read would have given it - caches
them as a partial cache that later reads complete, and says what it reads (progress lines)."""

from __future__ import annotations

from pathlib import Path

import torch
from data_fixtures import write_image_folder

from graphc.lang.spec import DataSpec
from graphc.runtime.data import imagefolder
from graphc.runtime.data.load import MIN_VALIDATION, load_dataset, validation_limit, validation_note
from graphc.runtime.data.split import split_indices, split_pool

CLASSES = ["airplane", "cat", "dog"]
PER_CLASS = 20  # 60 training images in the pool, 3 test images
SHAPE = (3, 8, 8)


def folder(tmp_path, **changes) -> DataSpec:
    root = tmp_path / "pics"
    if not root.exists():
        write_image_folder(root, CLASSES, per_class=PER_CLASS, test_per_class=1)
    fields = dict(dataset="imagefolder", root=str(root), val_fraction=0.25, split_seed=7)
    return DataSpec(**{**fields, **changes})


def counting(monkeypatch) -> list[str]:
    """Every file ``imagefolder._decode`` decodes, in order."""
    real, decoded = imagefolder._decode, []

    def decode(path, *args):
        decoded.append(path)
        return real(path, *args)

    monkeypatch.setattr(imagefolder, "_decode", decode)
    return decoded


def test_limit_train_decodes_only_the_images_it_uses(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_DATA", str(tmp_path / "cache"))
    data = folder(tmp_path)
    decoded = counting(monkeypatch)
    ds = load_dataset(data, limit_train=5, limit_val=4, image_shape=SHAPE)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (5, 4, 3)
    listing = [path for path, _ in imagefolder.scan(Path(data.root).resolve())[1]["train"]]
    train, val = split_indices(len(listing), data.val_fraction, data.split_seed)
    chosen = {listing[i] for i in [*train[:5].tolist(), *val[:4].tolist()]}
    train_decoded = [path for path in decoded if "/train/" in path]
    assert sorted(train_decoded) == sorted(chosen)  # 9 of the 60 training images, each once
    assert len(decoded) == 5 + 4 + 3  # and the test split


def test_the_chosen_images_are_those_of_a_full_read(tmp_path, monkeypatch):
    """The images a limited read gives equal, in order, what the full read and the split gave before."""
    data = folder(tmp_path)
    monkeypatch.setenv("GRAPHC_DATA", str(tmp_path / "cache-full"))
    pool, test, _, _ = imagefolder.load_imagefolder(data.root, image_shape=SHAPE)
    old_train, old_val = split_pool(pool, data.val_fraction, data.split_seed)  # the algorithm before the change
    monkeypatch.setenv("GRAPHC_DATA", str(tmp_path / "cache-limited"))  # nothing cached: decoded as selected
    for limit_train, limit_val in ((5, 4), (12, None), (None, 3), (45, 15)):
        ds = load_dataset(data, limit_train=limit_train, limit_val=limit_val, image_shape=SHAPE)
        assert torch.equal(ds.train.images, old_train.images[:limit_train])
        assert torch.equal(ds.val.images, old_val.images[:limit_val])
        assert torch.equal(ds.train.labels["fine"], old_train.labels["fine"][:limit_train])
        assert torch.equal(ds.val.labels["fine"], old_val.labels["fine"][:limit_val])
        assert torch.equal(ds.test.images, test.images)
    full = load_dataset(data, image_shape=SHAPE)  # no limit: the whole split, as before
    assert torch.equal(full.train.images, old_train.images) and torch.equal(full.val.images, old_val.images)


def test_a_partial_cache_grows_and_completes(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GRAPHC_DATA", str(cache))
    data = folder(tmp_path)
    decoded = counting(monkeypatch)
    first = load_dataset(data, limit_train=5, limit_val=4, image_shape=SHAPE)
    (file,) = (cache / "imagefolder-cache").iterdir()
    assert torch.load(file, weights_only=True)["format"] == imagefolder.CACHE_PARTIAL
    decoded.clear()
    again = load_dataset(data, limit_train=5, limit_val=4, image_shape=SHAPE)
    assert decoded == [] and torch.equal(again.train.images, first.train.images)  # all from the cache
    more = load_dataset(data, limit_train=10, limit_val=4, image_shape=SHAPE)
    assert len(decoded) == 5  # only the five new training images
    assert torch.equal(more.train.images[:5], first.train.images)
    decoded.clear()
    load_dataset(data, image_shape=SHAPE)
    assert len(decoded) == 60 - 14  # the rest of the pool; the test split was cached
    assert torch.load(file, weights_only=True)["format"] == imagefolder.CACHE_FORMAT  # complete: a full cache
    decoded.clear()
    load_dataset(data, limit_train=3, image_shape=SHAPE)
    assert decoded == []


def test_reading_says_what_it_reads(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(imagefolder, "CHUNK", 4)
    monkeypatch.setattr(imagefolder.Progress, "EVERY", 0.0)  # a line per chunk instead of every 5 s
    data = folder(tmp_path)
    lines: list[str] = []
    load_dataset(data, limit_train=10, limit_val=4, image_shape=SHAPE, report=lines.append)
    assert lines[0].startswith("reading images from ") and "17 to decode, 0 from the cache" in lines[0]
    assert "reading images: 4 / 17 (cache: 0 hit)" in lines
    assert lines[-1].startswith("read 17 images in ") and lines[-1].endswith("(cache: 0 hit)")
    lines.clear()
    load_dataset(data, limit_train=10, limit_val=4, image_shape=SHAPE, report=lines.append)
    assert lines == []  # all cached: nothing to say
    load_dataset(data, limit_train=12, limit_val=4, image_shape=SHAPE, report=lines.append)
    assert "2 to decode, 17 from the cache" in lines[0] and lines[-1].endswith("(cache: 17 hit)")


def test_validation_follows_the_training_limit():
    assert validation_limit(None, None) is None and validation_limit(None, 30) == 30
    assert validation_limit(2000, 100) == 100  # given: kept
    assert validation_limit(2000, None) == 500 and validation_limit(8000, None) == 2000
    assert validation_limit(8001, None) == 2001  # a quarter, rounded up
    assert validation_limit(10, None) == MIN_VALIDATION  # never fewer than 500
    assert "at most 2,000 images" in validation_note(8000, 2000)
    assert validation_note(8000, 100) is None and validation_note(None, None) is None
