"""CelebA (runtime/data/celeba.py) on a tiny copy in torchvision's layout, its text files in the official
format (the count line, the 40 names with the file's trailing space, values right-aligned in two columns),
with the checksums patched to the fake files' MD5s where a test needs them to pass."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from graphc.errors import RunError, SpecError
from graphc.lang.spec import DataSpec
from graphc.runtime.data import celeba
from graphc.runtime.data.load import load_dataset, probe_dataset
from graphc.runtime.data.split import labelled
from graphc.runtime.data.table import Column
from tests.conftest import REPO, invoke

# list_attr_celeba.txt's second line, in its order.
NAMES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair Blond_Hair "
    "Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones "
    "Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline "
    "Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick "
    "Wearing_Necklace Wearing_Necktie Young"
).split()
PARTS = [0] * 10 + [1] * 4 + [2] * 3  # 10 train, 4 valid, 3 test, in file order as the real file is
SIZE = (18, 14)  # height x width: the aligned images' 218 x 178 proportions, small


def image_of(i: int) -> Image.Image:
    """Image ``i``: flat colour whose red channel encodes ``i`` (JPEG keeps flat colours within a few levels)."""
    rgb = np.zeros((*SIZE, 3), dtype=np.uint8)
    rgb[..., 0] = 10 + 14 * i
    rgb[..., 1] = 128
    return Image.fromarray(rgb, "RGB")


def write_celeba(root: Path, parts: list[int] = PARTS, seed: int = 0) -> tuple[Path, np.ndarray]:
    """ROOT/celeba/{img_align_celeba/NNNNNN.jpg, list_attr_celeba.txt, list_eval_partition.txt};
    returns the folder and the -1/1 values written (one row per image, in file order)."""
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    values = np.where(np.random.default_rng(seed).random((len(parts), 40)) < 0.4, 1, -1)
    names = [f"{i + 1:06d}.jpg" for i in range(len(parts))]
    for i, name in enumerate(names):
        image_of(i).save(folder / "img_align_celeba" / name, quality=95)
    # The real files: CRLF line ends, the name line's trailing space, "%2d"-wide values.
    lines = [str(len(names)), " ".join(NAMES) + " "]
    lines += [name + " " + " ".join(f"{v:2d}" for v in row) for name, row in zip(names, values)]
    (folder / "list_attr_celeba.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    partition = "".join(f"{name} {p}\r\n" for name, p in zip(names, parts))
    (folder / "list_eval_partition.txt").write_bytes(partition.encode())
    return folder, values


def accept(monkeypatch, folder: Path) -> None:
    """Make the fake text files' MD5s the expected ones."""
    sums = {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in celeba.MD5}
    monkeypatch.setattr(celeba, "MD5", sums)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_DATA", str(tmp_path / "cache"))  # the decode cache: not the user's
    folder, values = write_celeba(tmp_path / "data")
    accept(monkeypatch, folder)
    return tmp_path / "data", values


def data(**fields) -> DataSpec:
    return DataSpec(dataset="celeba", **fields)


def red_index(images: torch.Tensor) -> list[int]:
    """Which fake image each is, from its red channel."""
    return [round((float(image[0].float().mean()) - 10) / 14) for image in images]


# --------------------------------------------------------------------------- loading


def test_the_official_partitions_are_the_splits_and_attributes_are_binary_labels(fake):
    root, values = fake
    dataset = load_dataset(data(root=str(root)))
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (10, 4, 3)
    for split, part in ((dataset.train, 0), (dataset.val, 1), (dataset.test, 2)):
        ids = red_index(split.images)
        assert sorted(ids) == [i for i, p in enumerate(PARTS) if p == part]  # each image in its partition
        for a, name in enumerate(NAMES):  # -1/1 in the file -> 0/1, each attribute under its own field
            field = "_5_o_Clock_Shadow" if name == "5_o_Clock_Shadow" else name
            assert split.labels[field].dtype == torch.int64
            assert split.labels[field].tolist() == [int(values[i, a] == 1) for i in ids]
        assert split.labels["attributes"].shape == (len(split), 40)
        assert split.labels["attributes"].tolist() == [[int(v == 1) for v in values[i]] for i in ids]
        assert labelled(split.labels["attributes"]).all() and labelled(split.labels["Smiling"]).all()
    assert dataset.image_shape == (3, *SIZE)
    assert dataset.test.images.dtype == torch.uint8


def test_types_and_class_names_follow_the_contract(fake):
    dataset = load_dataset(data(root=str(fake[0])))
    assert dataset.types["attributes"] == "multilabel"
    assert dataset.class_names["attributes"] == NAMES  # the file's order
    assert {dataset.types[f] for f in dataset.types if f != "attributes"} == {"binary"}
    assert len(dataset.types) == 41 and set(dataset.types) == set(dataset.class_names)
    assert dataset.class_names["Eyeglasses"] == ["no", "yes"] and dataset.classes["Eyeglasses"] == 2
    assert dataset.classes["attributes"] == 40 and dataset.hierarchy == {}
    assert "5_o_Clock_Shadow" not in dataset.class_names  # not a task name; its field is _5_o_Clock_Shadow


def test_a_multilabel_head_s_labels_choose_and_order_the_columns(fake):
    root, values = fake
    picked = celeba.load_celeba(data(root=str(root)), root, labels=["Smiling", "5_o_Clock_Shadow", "Male"])
    assert picked.class_names["attributes"] == ["Smiling", "5_o_Clock_Shadow", "Male"]
    ids = red_index(picked.train.images)
    columns = [NAMES.index(n) for n in ("Smiling", "5_o_Clock_Shadow", "Male")]
    assert picked.train.labels["attributes"].tolist() == [[int(values[i, c] == 1) for c in columns] for i in ids]
    assert picked.train.labels["attributes"].shape == (10, 3)
    with pytest.raises(SpecError) as info:
        celeba.load_celeba(data(root=str(root)), root, labels=["Smilling"])
    assert info.value.field == "labels" and "Smiling" in str(info.value)  # did you mean


def test_the_same_values_as_torchvision_parses_them(fake):
    """torchvision.datasets.CelebA on the same files (with the three text files it also wants)."""
    from torchvision.datasets import CelebA

    root, _ = fake
    folder = root / "celeba"
    names = [f"{i + 1:06d}.jpg" for i in range(len(PARTS))]
    (folder / "identity_CelebA.txt").write_text("".join(f"{n} 1\n" for n in names))
    (folder / "list_bbox_celeba.txt").write_text(
        f"{len(names)}\nimage_id x_1 y_1 width height\n" + "".join(f"{n} 1 1 1 1\n" for n in names)
    )
    (folder / "list_landmarks_align_celeba.txt").write_text(
        f"{len(names)}\nlefteye_x\n" + "".join(f"{n} {' '.join(['1'] * 10)}\n" for n in names)
    )
    with pytest.MonkeyPatch.context() as patch:  # its integrity check wants the real files' MD5s
        patch.setattr(CelebA, "_check_integrity", lambda self: True)
        reference = CelebA(str(root), split="valid", target_type="attr")
    dataset = load_dataset(data(root=str(root)))
    ids = red_index(dataset.val.images)
    order = [reference.filename.index(f"{i + 1:06d}.jpg") for i in ids]
    assert torch.equal(dataset.val.labels["attributes"], reference.attr[order].to(torch.int64))
    assert reference.attr_names[:40] == NAMES


def test_the_split_seed_shuffles_the_partitions_and_limits_take_the_first(fake):
    root, _ = fake
    full = load_dataset(data(root=str(root), split_seed=3))
    limited = load_dataset(data(root=str(root), split_seed=3), limit_train=4, limit_val=2)
    assert red_index(limited.train.images) == red_index(full.train.images)[:4]
    assert red_index(limited.val.images) == red_index(full.val.images)[:2]
    assert len(limited.test) == 3  # the test partition is never limited
    other = load_dataset(data(root=str(root), split_seed=4))
    assert red_index(other.train.images) != red_index(full.train.images)  # 10! orders: another seed, another
    assert sorted(red_index(other.train.images)) == sorted(red_index(full.train.images))


def test_a_limited_run_decodes_only_the_images_it_uses(fake, monkeypatch):
    from graphc.runtime.data import imagefolder

    decoded: list[str] = []
    real = imagefolder._decode

    def spy(path, *args):
        decoded.append(Path(path).name)
        return real(path, *args)

    monkeypatch.setattr(imagefolder, "_decode", spy)
    dataset = load_dataset(data(root=str(fake[0])), limit_train=2, limit_val=1)
    used = red_index(torch.cat([dataset.train.images, dataset.val.images, dataset.test.images]))
    # the 2 training and 1 validation images, the 3 test images, and the first image (the shape check)
    assert sorted(decoded) == sorted([f"{i + 1:06d}.jpg" for i in used] + ["000001.jpg"])
    decoded.clear()
    again = load_dataset(data(root=str(fake[0])), limit_train=2, limit_val=1)
    assert decoded == ["000001.jpg"]  # the rest from the cache
    assert torch.equal(again.train.images, dataset.train.images)


def test_resize_applies_and_a_shape_mismatch_says_to_set_it(fake):
    root, _ = fake
    resized = load_dataset(data(root=str(root), resize=(8, 8)), image_shape=(3, 8, 8))
    assert resized.image_shape == (3, 8, 8)
    assert abs(float(resized.train.images[:, 1].float().mean()) - 128) < 4  # still the image (green 128)
    with pytest.raises(SpecError) as info:
        load_dataset(data(root=str(root)), image_shape=(3, 8, 8))
    assert info.value.field == "shape" and "resize = [8, 8]" in str(info.value)
    assert "18x14" in str(info.value)
    gray = load_dataset(data(root=str(root), resize=(8, 8)), image_shape=(1, 8, 8), limit_train=1, limit_val=1)
    assert gray.image_shape == (1, 8, 8)


def test_a_val_fraction_is_refused_as_it_would_be_ignored(fake):
    with pytest.raises(SpecError) as info:
        load_dataset(data(root=str(fake[0]), val_fraction=0.1))
    assert info.value.field == "val_fraction" and "official 'valid' partition" in str(info.value)


# --------------------------------------------------------------------------- checksums and the files' form


def test_checksums_of_the_text_files_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_DATA", str(tmp_path / "cache"))
    folder, _ = write_celeba(tmp_path)
    with pytest.raises(RunError) as info:  # the official MD5s: a fake copy is refused
        load_dataset(data(root=str(tmp_path)))
    message = str(info.value)
    found = hashlib.md5((folder / "list_attr_celeba.txt").read_bytes()).hexdigest()
    assert "checksum mismatch" in message and found in message and "75e246fa4810816ffd6ee81facbd244c" in message
    accept(monkeypatch, folder)
    assert len(load_dataset(data(root=str(tmp_path))).train) == 10  # the right sums: accepted
    with open(folder / "list_eval_partition.txt", "ab") as f:
        f.write(b"000018.jpg 0\r\n")  # an edit after the sums were taken
    with pytest.raises(RunError, match="checksum mismatch: .*list_eval_partition.txt"):
        load_dataset(data(root=str(tmp_path)))


def test_the_official_sums_are_torchvisions():
    from torchvision.datasets import CelebA

    listed = {name: md5 for _, md5, name in CelebA.file_list}
    assert celeba.MD5 == {name: listed[name] for name in celeba.MD5}
    assert celeba.ARCHIVE_MD5 == listed[celeba.ARCHIVE]
    assert all(
        celeba.DRIVE[name].endswith(next(i for i, _, n in CelebA.file_list if n == name)) for name in celeba.DRIVE
    )


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda text: text.replace(" 1", " 0", 1).replace("-1 ", " 2 ", 1), "values of -1 or 1"),
        (lambda text: text.replace("17\r\n", "18\r\n", 1), "says 18 images but lists 17"),
        (lambda text: text.replace("000003.jpg", "../x.jpg"), "not a plain"),
    ],
)
def test_a_malformed_attribute_file_is_refused(tmp_path, monkeypatch, edit, match):
    monkeypatch.setenv("GRAPHC_DATA", str(tmp_path / "cache"))
    folder, _ = write_celeba(tmp_path)
    path = folder / "list_attr_celeba.txt"
    path.write_bytes(edit(path.read_bytes().decode()).encode())
    if "../" in path.read_text():  # the same name in both files, so the name check is what fails
        part = folder / "list_eval_partition.txt"
        part.write_text(part.read_text().replace("000003.jpg", "../x.jpg"))
    accept(monkeypatch, folder)
    with pytest.raises(RunError, match=match):
        load_dataset(data(root=str(tmp_path)))


def test_a_missing_image_and_a_link_out_of_the_folder_are_refused(fake, tmp_path):
    root, _ = fake
    images = root / "celeba" / "img_align_celeba"
    (images / "000005.jpg").unlink()
    with pytest.raises(RunError, match=r"1 of the 17 images .* missing .*000005.jpg"):
        load_dataset(data(root=str(root)))
    image_of(4).save(tmp_path / "outside.jpg")
    os.symlink(tmp_path / "outside.jpg", images / "000005.jpg")
    with pytest.raises(RunError, match="outside the image folder"):
        load_dataset(data(root=str(root)))
    (images / "000005.jpg").unlink()
    image_of(4).save(images / "000005.jpg", quality=95)
    images.rename(tmp_path / "elsewhere")
    images.symlink_to(tmp_path / "elsewhere")  # the image folder itself, a link out of celeba/
    with pytest.raises(RunError, match="img_align_celeba is a symbolic link to .*elsewhere"):
        load_dataset(data(root=str(root)))


def test_root_may_hold_the_files_itself(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_DATA", str(tmp_path / "cache"))
    folder, _ = write_celeba(tmp_path)
    accept(monkeypatch, folder)
    assert len(load_dataset(data(root=str(folder))).val) == 4


# --------------------------------------------------------------------------- missing copy, graphc check --data


def test_a_missing_copy_says_which_files_go_where(tmp_path):
    with pytest.raises(RunError) as info:
        load_dataset(data(root=str(tmp_path)), source=Path("spec.toml"))
    message = str(info.value)
    for part in (
        str(tmp_path / "celeba" / "img_align_celeba"),
        "list_attr_celeba.txt",
        "list_eval_partition.txt",
        "does not download",
        "gdown",
        celeba.HOME,
        "[data] root in spec.toml",
    ):
        assert part in message, part


def test_an_unpacked_archive_is_named(tmp_path):
    folder = tmp_path / "celeba"
    folder.mkdir()
    (folder / "img_align_celeba.zip").write_bytes(b"PK")
    with pytest.raises(RunError, match="img_align_celeba.zip is there but not unpacked"):
        load_dataset(data(root=str(tmp_path)))


SPEC = """\
name = "faces"

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
name = "smiling"
kind = "head"
input = "trunk"
task = "Smiling"
type = "binary"

[data]
dataset = "celeba"
{data}
"""


def test_check_data_exits_1_with_the_message_and_probes_a_copy(tmp_path, monkeypatch):
    spec = tmp_path / "faces.toml"
    spec.write_text(SPEC.format(data="resize = [8, 8]"))
    result = invoke("check", spec, "--data", "--data-dir", tmp_path / "nothing", code=1)
    message = " ".join(result.output.split())
    assert "CelebA was not found" in message and "list_eval_partition.txt" in message and "--data-dir" in message
    folder, _ = write_celeba(tmp_path / "data")
    accept(monkeypatch, folder)
    probe = probe_dataset(data(root=str(tmp_path / "data"), resize=(8, 8)), image_shape=(3, 8, 8))
    assert (probe.pool, probe.image_shape, probe.types["Smiling"]) == (10, (3, 8, 8), "binary")
    assert probe.classes["attributes"] == 40
    # a multilabel head's labels are checked by graphc check --data too, not first by graphc train
    chosen = {"attributes": Column("attributes", "multilabel", labels=["Male", "Smiling"])}
    probe = probe_dataset(data(root=str(tmp_path / "data"), resize=(8, 8)), image_shape=(3, 8, 8), columns=chosen)
    assert probe.class_names["attributes"] == ["Male", "Smiling"]
    typo = {"attributes": Column("attributes", "multilabel", labels=["Smilling"])}
    with pytest.raises(SpecError, match="Smiling"):
        probe_dataset(data(root=str(tmp_path / "data"), resize=(8, 8)), image_shape=(3, 8, 8), columns=typo)
    with pytest.raises(SpecError, match=r"resize = \[8, 8\]"):
        probe_dataset(data(root=str(tmp_path / "data")), image_shape=(3, 8, 8))
    result = invoke("check", spec, "--data", "--data-dir", tmp_path / "data")
    assert "data: celeba, images 3x8x8, 10 training images" in " ".join(result.output.split())
    spec.write_text(SPEC.format(data=""))  # no resize: the shape error, exit 2, with the resize hint and line
    result = invoke("check", spec, "--data", "--data-dir", tmp_path / "data", code=2)
    assert "resize = [8, 8]" in result.output and "faces.toml:6" in result.output


def test_the_example_spec_reads_celeba_at_64_by_64():
    import graphc

    spec = graphc.load_spec(REPO / "specs" / "examples" / "celeba_attributes.toml")
    assert spec.data.dataset == "celeba" and tuple(spec.data.resize) == (64, 64)
    heads = [n for n in spec.nodes if n.kind == "head"]
    assert heads and all(n.type == "binary" and n.task_name in NAMES for n in heads)
