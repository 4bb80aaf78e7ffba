"""Class names from image-folder names are read in Unicode normal form NFC: a folder written on macOS
(NFD) names the same class as the spec's (NFC) text, and two folders whose names differ only in
normal form - they look the same - are one class, with a warning naming them."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from graphc.files import nfc_names
from graphc.runtime.data import imagefolder

NFC, NFD = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")


def folder(root: Path, classes: dict[str, list[str]]) -> Path:
    """ROOT/{train,test}/<class>/ with one 8x8 image each."""
    for split, names in classes.items():
        for i, name in enumerate(names):
            (root / split / name).mkdir(parents=True)
            Image.fromarray(np.full((8, 8, 3), 10 * i, dtype=np.uint8)).save(root / split / name / f"{split}{i}.png")
    return root


def test_nfc_names_groups_the_spellings_that_look_the_same():
    assert NFC != NFD
    names, groups = nfc_names([NFD, "dog", NFC, NFD])
    assert names == [NFC, "dog", NFC, NFC] and groups == [(NFD, NFC)]
    assert nfc_names(["a", "b"]) == (["a", "b"], [])


def test_a_folder_named_in_nfd_is_the_class_in_nfc(tmp_path):
    root = folder(tmp_path / "pics", {"train": [NFD, "dog"], "test": [NFD, "dog"]})
    classes, files, _ = imagefolder.scan(root)
    assert classes == sorted([NFC, "dog"])
    assert sorted(index for _, index in files["test"]) == [0, 1]
    # a hierarchy typed in NFC (or NFD) in the spec finds it
    names, links = imagefolder.derive_labels(classes, "fine", {"coarse": {"thing": [NFD, "dog"]}}, root)
    assert names["fine"] == classes and links[("fine", "coarse")].tolist() == [0, 0]


def test_two_folders_differing_only_in_normal_form_are_one_class_with_a_warning(tmp_path):
    root = tmp_path / "pics"
    folder(root, {"train": [NFC, "dog"], "test": [NFC, "dog"]})
    (root / "train" / NFD).mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / "train" / NFD / "more.png")
    with pytest.warns(UserWarning, match=r"differ only in Unicode normal form") as caught:
        classes, files, _ = imagefolder.scan(root)
    assert "'caf\\xe9'" in str(caught[0].message) and "'cafe\\u0301'" in str(caught[0].message)
    assert classes == sorted([NFC, "dog"])
    cafe = classes.index(NFC)
    assert sum(index == cafe for _, index in files["train"]) == 2  # both folders' images, one class
