"""`graphc predict` on folders and patterns, with --out (issue 26): folders are searched recursively
for .png/.jpg/.jpeg (any case), links out of the folder are not followed, quoted patterns are
expanded by graphc, and --out writes one row per image as CSV or JSON lines."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from graphc.runtime import predict as predicting
from tests.conftest import TINY_SPEC, invoke


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """The tiny spec exported to ONNX (8x8 RGB input, heads fine and coarse), randomly initialised."""
    root = tmp_path_factory.mktemp("predict_inputs")
    spec = root / "tiny.toml"
    spec.write_text(TINY_SPEC)
    invoke("export", spec, "--onnx", root / "tiny.onnx", "--no-verify")
    return root / "tiny.onnx"


def picture(path: Path, value: int = 0, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path, format=fmt)
    return path


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def photos(tmp_path) -> Path:
    """photos/ with images at two depths, in every case of suffix, beside files that are not taken."""
    root = tmp_path / "photos"
    picture(root / "a.png")
    picture(root / "B.JPG", fmt="JPEG")
    picture(root / "deep" / "er" / "c.Jpeg", fmt="JPEG")
    (root / "notes.txt").write_text("not an image")
    picture(root / ".hidden.png")
    picture(root / ".cache" / "d.png")
    return root


def test_a_folder_is_searched_recursively_for_images(photos):
    files, notes = predicting.find_images([photos])
    assert [f.relative_to(photos).as_posix() for f in files] == ["B.JPG", "a.png", "deep/er/c.Jpeg"]
    assert notes == []


def test_links_out_of_the_folder_are_not_followed(photos, tmp_path):
    outside = picture(tmp_path / "secret" / "s.png")
    os.symlink(outside, photos / "link.png")
    os.symlink(tmp_path / "secret", photos / "linked_dir")
    os.symlink(photos / "a.png", photos / "inside.png")  # a link within the folder is an image of it
    os.symlink(tmp_path / "absent.png", photos / "dangling.png")
    files, notes = predicting.find_images([photos])
    names = [f.relative_to(photos).as_posix() for f in files]
    assert names == ["B.JPG", "a.png", "deep/er/c.Jpeg", "inside.png"]
    (note,) = notes
    assert "skipped 3 symbolic link(s)" in note and "out of the folder" in note


def test_patterns_do_not_follow_links_out_of_their_folder(photos, tmp_path):
    """glob's ** descends into linked folders and a linked file may point anywhere: a pattern gets what
    the folder walk would give, and a note says what it skipped."""
    outside = picture(tmp_path / "secret" / "s.png")
    os.symlink(outside, photos / "link.png")
    os.symlink(tmp_path / "secret", photos / "linked_dir")
    os.symlink(photos / "a.png", photos / "inside.png")
    files, notes = predicting.find_images([str(photos / "**" / "*.png")])
    assert sorted(f.relative_to(photos).as_posix() for f in files) == ["a.png", "inside.png"]
    (note,) = notes
    assert "skipped 2 match(es)" in note and "links out of the folder a pattern starts in" in note


def test_quoted_patterns_are_expanded(photos):
    files, _ = predicting.find_images([str(photos / "*.png"), str(photos / "**" / "*.Jpeg")])
    assert [f.name for f in files] == ["a.png", "c.Jpeg"]
    with pytest.raises(predicting.UsageError, match="no images found in the pattern .*matches no file"):
        predicting.find_images([str(photos / "*.gif")])


def test_no_images_is_a_clear_usage_error(model, tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.md").write_text("no pictures")
    text = words(invoke("predict", model, tmp_path / "empty", code=2).stderr)
    assert f"no images found in the folder {tmp_path / 'empty'}" in text and ".png, .jpg and .jpeg" in text


def test_out_writes_one_row_per_image_as_csv_and_jsonl(model, photos, tmp_path):
    result = invoke("predict", model, photos, "--out", tmp_path / "p.csv")
    assert "wrote 3 predictions to" in words(result.stderr) and result.stdout == ""
    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["path"]).name for r in rows] == ["B.JPG", "a.png", "c.Jpeg"]
    assert list(rows[0]) == ["path", "resized", "fine", "fine_probability", "coarse", "coarse_probability"]
    assert all(0.0 < float(r["fine_probability"]) <= 1.0 for r in rows)
    invoke("predict", model, str(photos / "*.png"), photos / "B.JPG", "--out", tmp_path / "p.jsonl", "-k", "2")
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [Path(line["path"]).name for line in lines] == ["a.png", "B.JPG"]
    assert [len(line["heads"]["fine"]) for line in lines] == [2, 2]  # the top-k labels of each head
    assert lines[0]["heads"]["fine"][0]["label"] == rows[1]["fine"]  # the CSV's top class of a.png
    text = words(invoke("predict", model, photos, "--out", tmp_path / "p.txt", code=2).stderr)
    assert "give a .csv or .jsonl file name" in text
    assert "does not exist" in words(
        invoke("predict", model, photos, "--out", tmp_path / "no" / "p.csv", code=2).stderr
    )


def test_many_images_show_progress(model, tmp_path, monkeypatch):
    for k in range(7):
        picture(tmp_path / "many" / f"{k}.png", value=k)
    monkeypatch.setattr(predicting, "BATCH", 2)
    monkeypatch.setattr(predicting, "PROGRESS_EVERY", 0.0)
    lines: list[str] = []
    _, predictions = predicting.predict(model, [tmp_path / "many"], report=lines.append)
    assert len(predictions) == 7
    assert lines[:3] == ["predicting: 2 / 7 images", "predicting: 4 / 7 images", "predicting: 6 / 7 images"]
    assert lines[-1].startswith("predicted 7 images in ")
