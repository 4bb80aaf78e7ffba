"""Label tables (runtime/data/table.py): tiny CSV/TSV tables over 8x8 PNGs written in tmp_path.

Each image's red channel encodes its number, so a test can tell which image landed where."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from graphc.errors import RunError, SpecError, UsageError
from graphc.lang.spec import DataSpec
from graphc.runtime.data.load import load_dataset, probe_dataset
from graphc.runtime.data.split import MISSING, labelled, split_indices
from graphc.runtime.data.table import Column, columns_of, load_table, probe_table

COLUMNS = {
    "kind": Column("kind", "classification"),
    "tall": Column("tall", "binary"),
    "tags": Column("tags", "multilabel"),
    "size": Column("size", "regression", outputs=2),
}
HEADER = "image,kind,tall,tags,size"
TRAIN = [  # 10 rows: every type, with missing cells, and '-' (no tag applies) on row 3
    "img/0.png,cat,yes,red;blue,1;2",
    "img/1.png,dog,no,red,3;4",
    "img/2.png,cat,,-,",
    "img/3.png,,TRUE,blue,5.5;-1",
    "img/4.png,dog,0,,0;0",
    "img/5.png,cat,false,green,1e2;7",
    "img/6.png,dog,1,red;green,2;2",
    "img/7.png,cat,No,blue, 3 ; 3 ",
    "img/8.png,dog,yes,red,4;4",
    "img/9.png,cat,no,  ,5;5",
]
TEST = ["img/10.png,dog,yes,blue,1;1", "img/11.png,,,-,"]


def write_image(path: Path, i: int, size: tuple[int, int] = (8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.zeros((*size, 3), dtype=np.uint8)
    rgb[..., 0] = 10 * i
    Image.fromarray(rgb, "RGB").save(path)


def write_tables(root: Path, train=TRAIN, test=TEST, header=HEADER, suffix="csv", images=12) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        if not (root / "img" / f"{i}.png").exists():
            write_image(root / "img" / f"{i}.png", i)
    sep = "\t" if suffix == "tsv" else ","
    for name, rows in (("train", train), ("test", test)):
        text = "\n".join([header, *rows]) + "\n"
        (root / f"{name}.{suffix}").write_text(text.replace(",", sep), encoding="utf-8")
    return root


def data_spec(**fields) -> DataSpec:
    return DataSpec(dataset="table", val_fraction=fields.pop("val_fraction", 0.0), **fields)


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_DATA", str(tmp_path / "graphc-data"))


def red(split) -> list[int]:
    """The image numbers of a split, from the red channel."""
    return [int(v) // 10 for v in split.images[:, 0, 0, 0]]


def test_every_type_and_the_missing_cell(tmp_path):
    root = write_tables(tmp_path / "d")
    ds = load_dataset(data_spec(root=str(root)), columns=COLUMNS, image_shape=(3, 8, 8))
    assert ds.name == "table" and len(ds.train) == 10 and len(ds.val) == 0 and len(ds.test) == 2
    assert ds.types == {"tall": "binary", "tags": "multilabel", "size": "regression"}
    assert ds.class_names == {
        "kind": ["cat", "dog"],
        "tall": ["no", "yes"],
        "tags": ["blue", "green", "red"],
        "size": ["size[0]", "size[1]"],
    }
    # val_fraction 0: the training split is the table in the split seed's order
    order = split_indices(10, 0.0, 0)[0].tolist()
    assert red(ds.train) == order
    back = torch.argsort(torch.tensor(order))
    labels = {f: v[back] for f, v in ds.train.labels.items()}  # in table order again
    assert labels["kind"].tolist() == [0, 1, 0, MISSING, 1, 0, 1, 0, 1, 0]
    assert labels["tall"].tolist() == [1, 0, MISSING, 1, 0, 0, 1, 0, 1, 0]
    tags = labels["tags"].tolist()
    assert tags[0] == [1, 0, 1] and tags[1] == [0, 0, 1]
    assert tags[2] == [0, 0, 0]  # '-': no tag applies, a known (labelled) row of zeros
    assert tags[4] == [MISSING] * 3 and tags[9] == [MISSING] * 3  # empty and whitespace-only: missing
    assert labelled(labels["tags"]).tolist() == [True, True, True, True, False, True, True, True, True, False]
    size = labels["size"]
    assert size.dtype == torch.float32 and size.shape == (10, 2)
    assert size[0].tolist() == [1.0, 2.0] and size[5].tolist() == [100.0, 7.0] and size[7].tolist() == [3.0, 3.0]
    assert torch.isnan(size[2]).all() and labelled(size).sum() == 9
    assert ds.test.labels["kind"].tolist() == [1, MISSING]
    assert ds.test.labels["tags"].tolist() == [[1, 0, 0], [0, 0, 0]]
    assert red(ds.test) == [10, 11]


def test_listed_classes_and_labels_fix_the_order(tmp_path):
    root = write_tables(tmp_path / "d")
    columns = {
        "kind": Column("kind", classes=["dog", "cat", "bird"]),
        "tags": Column("tags", "multilabel", labels=["red", "green", "blue", "violet"]),
    }
    ds = load_table(data_spec(), root, columns=columns, cache_dir=tmp_path / "c")
    assert ds.class_names["kind"] == ["dog", "cat", "bird"] and ds.classes["tags"] == 4
    first = int((torch.tensor(red(ds.train)) == 0).nonzero())
    assert ds.train.labels["kind"][first] == 1 and ds.train.labels["tags"][first].tolist() == [1, 0, 1, 0]
    # a training value the head's list lacks: named with its line
    with pytest.raises(SpecError, match=r"train.csv:2: the class 'cat' of the column 'kind' is not among"):
        load_table(data_spec(), root, columns={"kind": Column("kind", classes=["dog", "bird"])})


def test_tsv_and_a_byte_order_mark(tmp_path):
    root = write_tables(tmp_path / "d", suffix="tsv")
    text = (root / "train.tsv").read_text(encoding="utf-8")
    (root / "train.tsv").write_text("\ufeff" + text, encoding="utf-8")
    ds = load_table(data_spec(train="train.tsv", test="test.tsv"), root, columns=COLUMNS, cache_dir=tmp_path / "c")
    assert ds.class_names["kind"] == ["cat", "dog"] and len(ds.train) == 10


def test_limits_decode_only_the_chosen_images(tmp_path, monkeypatch):
    from graphc.runtime.data import imagefolder

    root = write_tables(tmp_path / "d")
    decoded = []
    original = imagefolder._decode
    monkeypatch.setattr(imagefolder, "_decode", lambda p, *a: decoded.append(Path(p).name) or original(p, *a))
    data = data_spec(root=str(root), val_fraction=0.3, split_seed=5)
    ds = load_dataset(data, columns=COLUMNS, limit_train=2, limit_val=1, image_shape=(3, 8, 8))
    train_index, val_index = split_indices(10, 0.3, 5)
    assert red(ds.train) == train_index[:2].tolist() and red(ds.val) == val_index[:1].tolist()
    assert sorted(decoded) == sorted([f"{i}.png" for i in [*red(ds.train), *red(ds.val)]] + ["10.png", "11.png"])
    # the labels travel with their images
    kinds = [0, 1, 0, MISSING, 1, 0, 1, 0, 1, 0]
    assert ds.train.labels["kind"].tolist() == [kinds[i] for i in red(ds.train)]


def test_hierarchy_over_a_column(tmp_path):
    rows = [f"img/{i}.png,{c}" for i, c in enumerate(["cat", "dog", "car", "", "bus", "cat", "car", "dog"])]
    root = write_tables(tmp_path / "d", rows, ["img/10.png,bus"], header="image,fine")
    hierarchy = {"coarse": {"animal": ["cat", "dog"], "vehicle": ["bus", "car"]}}
    ds = load_table(data_spec(label="fine", hierarchy=hierarchy), root, cache_dir=tmp_path / "c")
    assert ds.class_names == {"fine": ["bus", "car", "cat", "dog"], "coarse": ["animal", "vehicle"]}
    assert ds.hierarchy[("fine", "coarse")].tolist() == [1, 1, 0, 0]
    fine, coarse = ds.train.labels["fine"], ds.train.labels["coarse"]
    expected = {-1: -1, 0: 1, 1: 1, 2: 0, 3: 0}  # a missing class is a missing coarse label
    assert coarse.tolist() == [expected[f] for f in fine.tolist()] and MISSING in coarse.tolist()
    # a class of the hierarchy the column lacks: named with the column, not a folder
    bad = {"coarse": {"animal": ["cat", "dog", "cow"], "vehicle": ["bus", "car"]}}
    with pytest.raises(SpecError, match=r"lists class 'cow', which the column 'fine' of .*train.csv does not have"):
        load_table(data_spec(label="fine", hierarchy=bad), root, cache_dir=tmp_path / "c")


@pytest.mark.parametrize(
    ("train", "test", "error", "where", "message"),
    [
        (["img/0.png,cat,yes,red,1;x", *TRAIN[1:]], TEST, SpecError, "train.csv:2", "not 2 numbers"),
        (["img/0.png,cat,yes,red,nan;1", *TRAIN[1:]], TEST, SpecError, "train.csv:2", r"nan and inf"),
        ([*TRAIN[:2], "img/2.png,cat,inf,red,1;1", *TRAIN[3:]], TEST, SpecError, "train.csv:4", "not yes/no"),
        ([*TRAIN[:2], "img/2.png,cat,yes,red,1", *TRAIN[3:]], TEST, SpecError, "train.csv:4", "has 1 value"),
        ([*TRAIN, "img/0.png,cat,yes,red,1;1"], TEST, SpecError, "train.csv:12", r"again \(line 2"),
        ([*TRAIN, "img/./0.png,cat,yes,red,1;1"], TEST, SpecError, "train.csv:12", r"again \(line 2"),
        (
            TRAIN,
            ["img/10.png,horse,yes,red,1;1"],
            SpecError,
            "test.csv:2",
            "class 'horse' of the column 'kind' is not among",
        ),
        (TRAIN, ["img/10.png,cat,yes,violet,1;1"], SpecError, "test.csv:2", "label 'violet' of the column 'tags'"),
        (TRAIN, ["img/10.png,cat,yes,red;;blue,1;1"], SpecError, "test.csv:2", "empty label"),
        ([*TRAIN[:2], "img/2.png,cat,yes,red;;blue,1;1", *TRAIN[3:]], TEST, SpecError, "train.csv:4", "empty label"),
        (["img/0.png,cat,yes,red,1e300;1", *TRAIN[1:]], TEST, SpecError, "train.csv:2", "not 2 numbers"),
        (TRAIN, ["img/3.png,cat,yes,red,1;1"], SpecError, "test.csv:2", "both trained and tested on"),
        (TRAIN, ["img/10.png,cat,yes,red"], SpecError, "test.csv:2", "has 4 cells"),
        (["/etc/passwd,cat,yes,red,1;1", *TRAIN], TEST, SpecError, "train.csv:2", "out of the data folder"),
        (["img/../../x.png,cat,yes,red,1;1", *TRAIN], TEST, SpecError, "train.csv:2", "out of the data folder"),
        (["img/99.png,cat,yes,red,1;1", *TRAIN], TEST, RunError, "train.csv:2", "does not exist"),
        (
            [",".join(c if i != 2 else "" for i, c in enumerate(r.split(","))) for r in TRAIN],
            TEST,
            SpecError,
            "train.csv:1",
            "'tall' has no label at all",
        ),
        ([f"img/{i}.png,cat,yes,red,1;1" for i in range(3)], TEST, SpecError, "train.csv:1", "single class"),
    ],
)
def test_problems_name_the_table_and_line(tmp_path, train, test, error, where, message):
    root = write_tables(tmp_path / "d", train, test)
    with pytest.raises(error, match=message) as caught:
        load_table(data_spec(), root, columns=COLUMNS, cache_dir=tmp_path / "c")
    assert where in str(caught.value)
    with pytest.raises(error, match=message):  # graphc check --data: the same checks
        probe_table(data_spec(), root, columns=COLUMNS)


def test_line_numbers_count_quoted_line_breaks_and_blank_lines(tmp_path):
    # A quoted cell may span lines (csv's rule): the error names the line its row starts on.
    train = [TRAIN[0], '"img/1.png","dog\nhound",no,red,3;4', "", TRAIN[2], "img/3.png,cat,maybe,red,1;1"]
    root = write_tables(tmp_path / "d", train, header=HEADER)
    (root / "train.csv").write_bytes((root / "train.csv").read_bytes().replace(b"\n", b"\r\n"))
    with pytest.raises(SpecError, match=r"train.csv:7: the binary cell 'maybe' of the column 'tall'"):
        load_table(data_spec(), root, columns=COLUMNS)


def test_missing_columns_and_files(tmp_path):
    root = write_tables(tmp_path / "d", header="image,kinds,tall,tags,size")
    with pytest.raises(SpecError, match=r"no column 'kind'.*did you mean 'kinds'") as caught:
        load_table(data_spec(), root, columns=COLUMNS)
    assert caught.value.line == 1 and caught.value.file == root / "train.csv"
    root = write_tables(tmp_path / "e", header="picture,kind,tall,tags,size")
    with pytest.raises(SpecError, match=r"train.csv:1: .*no 'image' column"):
        load_table(data_spec(), root, columns=COLUMNS)
    (root / "test.csv").unlink()
    write_tables(tmp_path / "f")
    (tmp_path / "f" / "test.csv").unlink()
    with pytest.raises(RunError, match=r"label table .*test.csv does not exist"):
        load_table(data_spec(), tmp_path / "f", columns=COLUMNS)
    with pytest.raises(RunError, match="does not exist"):
        load_table(data_spec(), tmp_path / "nowhere", columns=COLUMNS)
    with pytest.raises(UsageError, match="table data set needs a directory"):
        load_dataset(data_spec(), columns=COLUMNS)
    with pytest.raises(SpecError, match="not a path inside"):
        load_table(data_spec(train="../train.csv"), tmp_path / "f", columns=COLUMNS)


def test_a_link_out_of_the_root_is_refused(tmp_path):
    outside = tmp_path / "outside"
    write_image(outside / "secret.png", 1)
    root = write_tables(tmp_path / "d", [*TRAIN, "img/link.png,cat,yes,red,1;1"])
    os.symlink(outside / "secret.png", root / "img" / "link.png")
    with pytest.raises(RunError, match=r"train.csv:12: the image .*link.png is a symbolic link to .*outside"):
        load_table(data_spec(), root, columns=COLUMNS)
    # a folder link out of the root, anywhere on the path
    (root / "img" / "link.png").unlink()
    os.symlink(outside, root / "img" / "far")
    root = write_tables(root, [*TRAIN, "img/far/secret.png,cat,yes,red,1;1"])
    with pytest.raises(RunError, match="outside the data folder"):
        probe_table(data_spec(), root, columns=COLUMNS)
    # a link inside the root is followed
    (root / "img" / "far").unlink()
    os.symlink(root / "img" / "0.png", root / "img" / "near.png")
    root = write_tables(root, [*TRAIN[1:], "img/near.png,cat,yes,red,1;1"])
    ds = load_table(data_spec(), root, columns=COLUMNS, cache_dir=tmp_path / "c")
    assert sorted(red(ds.train)) == list(range(10))


def test_a_table_linked_out_of_the_root_is_refused(tmp_path):
    root = write_tables(tmp_path / "d")
    outside = tmp_path / "outside.csv"
    outside.write_text("secret,columns\n1,2\n")
    (root / "train.csv").unlink()
    os.symlink(outside, root / "train.csv")
    with pytest.raises(RunError, match=r"train.csv is a symbolic link to .*outside.csv, outside the data folder"):
        probe_table(data_spec(), root, columns=COLUMNS)


def test_images_must_share_a_size_unless_resized(tmp_path):
    root = write_tables(tmp_path / "d")
    write_image(root / "img" / "11.png", 11, size=(6, 6))
    with pytest.raises(RunError, match="11.png is 6x6"):
        load_table(data_spec(), root, columns=COLUMNS, cache_dir=tmp_path / "c")
    ds = load_table(data_spec(resize=(8, 8)), root, columns=COLUMNS, cache_dir=tmp_path / "c")
    assert ds.test.images.shape == (2, 3, 8, 8)


def test_probe_counts_the_labels_of_each_split(tmp_path):
    root = write_tables(tmp_path / "d")
    data = data_spec(root=str(root), val_fraction=0.3, split_seed=2)
    probe = probe_dataset(data, columns=COLUMNS, image_shape=(3, 8, 8))
    ds = load_dataset(data, columns=COLUMNS, image_shape=(3, 8, 8))
    assert probe.pool == 10 and probe.image_shape == (3, 8, 8) and probe.types == ds.types
    assert probe.class_names == ds.class_names
    for split in ("train", "val", "test"):
        expected = {f: int(labelled(v).sum()) for f, v in getattr(ds, split).labels.items()}
        assert probe.labelled[split] == expected
    assert probe.labelled["test"] == {"kind": 1, "tall": 1, "tags": 2, "size": 1}
    assert sum(probe.labelled[s]["tags"] for s in ("train", "val")) == 8  # two of ten cells empty


def test_columns_of_a_spec():
    from graphc.lang.spec import Spec

    def spec_of(heads, **data):
        nodes = [{"name": "image", "kind": "input", "shape": [3, 8, 8]}]
        nodes += [{"name": name, "kind": "head", "input": "image", **h} for name, h in heads.items()]
        return Spec.model_validate({"name": "t", "nodes": nodes, "data": {"dataset": "table", **data}})

    spec = spec_of(
        {
            "a": {"task": "kind", "classes": ["x", "y"]},
            "b": {"task": "tall", "type": "binary"},
            "c": {"task": "tags", "type": "multilabel", "labels": ["r"]},
            "d": {"task": "size", "type": "regression", "outputs": 3},
            "e": {"task": "coarse"},
        },
        label="fine",
        hierarchy={"coarse": {"g": ["x"]}},
    )
    assert columns_of(spec) == {
        "fine": Column("fine"),
        "kind": Column("kind", classes=["x", "y"]),
        "tall": Column("tall", "binary"),
        "tags": Column("tags", "multilabel", labels=["r"]),
        "size": Column("size", "regression", outputs=3),
    }  # coarse is derived by the hierarchy, not a column
    clash = spec_of({"a": {"task": "kind"}, "b": {"task": "kind", "type": "binary"}})
    with pytest.raises(SpecError, match=r"node 'b'.*'kind' as binary, but head 'a' reads it as classification"):
        columns_of(clash)
    # two heads of one type read one column once; with different class lists they clash
    assert columns_of(spec_of({"a": {"task": "kind"}, "b": {"task": "kind"}})) == {"kind": Column("kind")}
    lists = spec_of({"a": {"task": "kind", "classes": ["x", "y"]}, "b": {"task": "kind", "classes": ["y", "x"]}})
    with pytest.raises(SpecError, match="with other classes, labels or outputs than head 'a'"):
        columns_of(lists)
    # the hierarchy's column read as another type
    with pytest.raises(SpecError, match=r"reads the label column 'fine' as binary, but \[data\] label reads it"):
        columns_of(spec_of({"a": {"task": "fine", "type": "binary"}}, label="fine", hierarchy={"coarse": {"g": ["x"]}}))


def test_check_data_prints_the_labelled_counts(tmp_path):
    """graphc check --data on a table whose hierarchy column has missing classes (a table spec needs no
    launcher support for [data] label): the class lists are checked and each task's labelled images printed."""
    from tests.conftest import TINY_SPEC, invoke

    rows = [f"img/{i}.png,{c}" for i, c in enumerate(["cat", "dog", "car", "", "bus", "cat", "car", "dog"])]
    root = write_tables(tmp_path / "d", rows, ["img/10.png,bus", "img/11.png,"], header="image,fine")
    data = 'dataset = "table"\nlabel = "fine"\nval_fraction = 0.25\n'
    data += '[data.hierarchy.coarse]\nanimal = ["cat", "dog"]\nvehicle = ["bus", "car"]\n'
    text = TINY_SPEC.split("[data]")[0].replace('name = "tiny"', 'name = "table"') + "[data]\n" + data
    (tmp_path / "spec.toml").write_text(text)
    out = invoke("check", tmp_path / "spec.toml", "--data", "--data-dir", root).stdout
    assert "data: table, images 3x8x8, 8 training images" in out
    train_index, val_index = split_indices(8, 0.25, 0)
    train_labelled = sum(i != 3 for i in train_index.tolist())  # row 3's class is empty
    val_labelled = sum(i != 3 for i in val_index.tolist())
    for task in ("fine", "coarse"):
        assert f"{task}: labelled images {train_labelled} train / {val_labelled} val / 1 test" in out
