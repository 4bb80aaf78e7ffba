"""Write the label tables of cifar10_table.toml over CIFAR-10's JPEG folders.

    python specs/examples/make_cifar10_table.py ROOT

ROOT holds ROOT/train/<class>/*.jpg and ROOT/test/<class>/*.jpg (e.g. ``mkdir -p ROOT && tar -xzf
cifar10-jpeg.tar.gz -C ROOT``). Writes ROOT/train.csv and ROOT/test.csv, one row per image:

    image       the image's path relative to ROOT
    class       classification: the class folder (airplane, automobile, ...)
    animal      binary: yes for bird, cat, deer, dog, frog, horse; no for the vehicles. A third of the
                training table's cells are left empty (a missing label; chosen with --seed), so the
                animal head trains on two thirds of the images and the class head on all of them
    brightness  regression: the image's mean pixel value, 0-255
    colours     multilabel: the channels (red, green, blue) whose mean is above the image's mean over
                all three channels; "-" when none is (a grey image): a known empty set, unlike an
                empty cell, which graphc reads as a missing label
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

import numpy as np
from PIL import Image

ANIMALS = {"bird", "cat", "deer", "dog", "frog", "horse"}
CHANNELS = ("red", "green", "blue")
NONE_APPLIES = "-"  # graphc.runtime.data.table.NONE_APPLIES: no label applies (an empty cell = missing)
SUFFIXES = (".jpg", ".jpeg", ".png")


def row_of(root: Path, path: Path) -> dict[str, str]:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    means = pixels.mean(axis=(0, 1))  # per channel
    overall = pixels.mean()
    colours = [name for name, mean in zip(CHANNELS, means) if mean > overall]
    name = path.parent.name
    return {
        "image": path.relative_to(root).as_posix(),
        "class": name,
        "animal": "yes" if name in ANIMALS else "no",
        "brightness": f"{overall:.2f}",
        "colours": ";".join(colours) or NONE_APPLIES,
    }


def rows_of(root: Path, split: str) -> list[dict[str, str]]:
    folder = root / split
    if not folder.is_dir():
        raise SystemExit(f"{folder} does not exist; ROOT must hold train/<class>/ and test/<class>/ folders of images.")
    paths = sorted(p for p in folder.glob("*/*") if p.suffix.lower() in SUFFIXES and p.is_file())
    if not paths:
        raise SystemExit(f"{folder} holds no images in class folders (<class>/*.jpg).")
    return [row_of(root, path) for path in paths]


def write(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="the folder holding train/<class>/ and test/<class>/")
    parser.add_argument("--seed", type=int, default=0, help="which third of the animal labels is removed")
    parser.add_argument("--drop", type=float, default=1 / 3, help="the share of training animal labels removed")
    args = parser.parse_args()
    root = args.root.resolve()
    train, test = rows_of(root, "train"), rows_of(root, "test")
    dropped = random.Random(args.seed).sample(range(len(train)), round(len(train) * args.drop))
    for i in dropped:
        train[i]["animal"] = ""
    for name, rows in (("train.csv", train), ("test.csv", test)):
        write(root / name, rows)
        print(f"wrote {root / name}: {len(rows):,} images")
    print(f"  animal: {len(dropped):,} of {len(train):,} training labels removed (missing), seed {args.seed}")
    empty = sum(row["colours"] == NONE_APPLIES for row in train + test)
    print(f"  colours: {empty:,} images with no colour above their mean (written '{NONE_APPLIES}')")


if __name__ == "__main__":
    main()
