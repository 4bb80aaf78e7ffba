"""Results researchers can publish (issue 11, metrics half): every hierarchy table measured, named by
both ends, chains included; the multi-task selection metrics; graphc check (and check --data) catching
what train would reject, with train's words; honest baselines, per-class accuracy and confusion matrices."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from graphc.ir.metrics import metric_names as names_of
from graphc.lang.hierarchy import hierarchy_links, hierarchy_paths, hierarchy_problems
from graphc.runtime.metrics import (
    Confusion,
    HeadInfo,
    Meter,
    balanced_accuracy,
    compute_loss,
    hierarchies_of,
    majority_accuracy,
)
from graphc.runtime.runs import rundir as runs
from tests.conftest import invoke
from tests.data_fixtures import write_cifar100, write_image_folder

CLASSES = ["airplane", "bird", "cat", "dog", "ship", "truck"]  # the folder label 'fine', in sorted order
TABLES = {  # three tables: two map the folder classes, one nests under 'coarse' (a chain fine -> coarse -> super)
    "coarse": {"vehicle": ["airplane", "ship", "truck"], "pet": ["cat", "dog"], "wild": ["bird"]},
    "flies": {"flying": ["airplane", "bird"], "grounded": ["ship", "truck", "cat", "dog"]},
    "super": {"machine": ["vehicle"], "animal": ["pet", "wild"]},
}
HIERARCHY_NAMES = {
    "coarse/acc_from_fine",
    "fine/consistency_with_coarse",
    "flies/acc_from_fine",
    "fine/consistency_with_flies",
    "super/acc_from_coarse",
    "coarse/consistency_with_super",
    "super/acc_from_fine",
    "fine/consistency_with_super",  # the composed chain
}


def toml_tables(order: list[str], tables: dict = TABLES) -> str:
    text = ""
    for field in order:
        text += f"\n[data.hierarchy.{field}]\n"
        for group, members in tables[field].items():
            text += f"{group} = [{', '.join(json.dumps(m) for m in members)}]\n"
    return text


def folder_spec(
    root: Path,
    order: list[str],
    heads=("fine", "coarse", "flies", "super"),
    tables: dict = TABLES,
    select: str = "val/mean_acc",
    shape=(3, 8, 8),
) -> str:
    text = f'name = "folders"\n\n[[nodes]]\nname = "image"\nkind = "input"\nshape = {list(shape)}\n\n'
    text += '[[nodes]]\nname = "trunk"\nkind = "conv_block"\ninput = "image"\nchannels = [4]\npool = "max"\n'
    for task in heads:
        text += f'\n[[nodes]]\nname = "{task}_head"\nkind = "head"\ninput = "trunk"\ntask = "{task}"\n'
    text += f'\n[data]\ndataset = "imagefolder"\nroot = "{root}"\nval_fraction = 0.25\n'
    text += toml_tables(order, tables)
    text += f'\n[train]\nepochs = 1\nbatch_size = 6\nselect = {{ metric = "{select}", mode = "max" }}\n'
    return text


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GRAPHC_DATA", str(tmp_path / "cache"))  # the decoded-image cache stays in the test
    root = tmp_path / "pics"
    write_image_folder(root, CLASSES, per_class=4, test_per_class=2)
    return root


def error_text(result) -> str:
    """The message train prints after 'error: ' (check prints it under 'invalid PATH')."""
    return result.stderr.split("error: ", 1)[1].strip()


# --------------------------------------------------------------------------- hierarchy metrics, every table


def test_links_and_chains_of_any_number_of_tables_in_any_order():
    for order in (["coarse", "flies", "super"], ["super", "flies", "coarse"], ["flies", "super", "coarse"]):
        tables = {field: TABLES[field] for field in order}
        links = hierarchy_links("fine", tables)
        assert sorted(links) == [("coarse", "super"), ("fine", "coarse"), ("fine", "flies")]
        paths = hierarchy_paths(links)
        assert sorted(paths) == sorted(
            [("fine", "coarse"), ("fine", "flies"), ("coarse", "super"), ("fine", "coarse", "super")]
        )
        assert hierarchy_problems("fine", tables) == []
        heads = [(t, n) for t, n in (("fine", 6), ("coarse", 3), ("flies", 2), ("super", 2))]
        names = names_of(heads, [(p[0], p[-1]) for p in paths])
        assert (
            set(names) - {"loss", "mean_acc", "weighted_acc"} - {f"{t}/{k}" for t, _ in heads for k in ("loss", "acc")}
            == HIERARCHY_NAMES
        )


def test_every_table_and_chain_is_measured_against_plain_python():
    """hierarchies_of composes fine -> coarse -> super; the Meter's values equal a count by class names."""
    index = {field: sorted(TABLES[field]) for field in TABLES}
    group_of = {field: {m: g for g, ms in TABLES[field].items() for m in ms} for field in TABLES}
    links = {  # as the image-folder loader gives them: child index -> group index
        ("fine", "coarse"): torch.tensor([index["coarse"].index(group_of["coarse"][c]) for c in CLASSES]),
        ("fine", "flies"): torch.tensor([index["flies"].index(group_of["flies"][c]) for c in CLASSES]),
        ("coarse", "super"): torch.tensor([index["super"].index(group_of["super"][g]) for g in index["coarse"]]),
    }
    heads = [HeadInfo("fine", 6, 1.0, 0.0), HeadInfo("coarse", 3, 0.5, 0.0), HeadInfo("super", 2, 0.0, 0.0)]
    for order in (list(links), list(reversed(links))):
        hierarchies = hierarchies_of({key: links[key] for key in order}, [h.task for h in heads])
        # flies has no head: it is measured from the fine head (acc_from) but has no consistency
        assert {(h.child, h.parent) for h in hierarchies} == {
            ("fine", "coarse"),
            ("fine", "flies"),
            ("coarse", "super"),
            ("fine", "super"),
        }
        g = torch.Generator().manual_seed(len(order))
        n = 40
        fine = torch.randint(0, 6, (n,), generator=g)
        labels = {"fine": fine}
        for field in ("coarse", "flies"):
            labels[field] = torch.tensor([index[field].index(group_of[field][CLASSES[i]]) for i in fine])
        labels["super"] = torch.tensor(
            [index["super"].index(group_of["super"][index["coarse"][c]]) for c in labels["coarse"]]
        )
        outputs = {h.task: torch.randn(n, h.classes, generator=g) for h in heads}
        meter = Meter(heads, hierarchies, torch.device("cpu"))
        assert set(meter.fields) == {"fine", "coarse", "super", "flies"}
        total, parts = compute_loss(outputs, labels, heads)
        meter.update(outputs, labels, total, parts)
        m = meter.compute()
        pred = {t: outputs[t].argmax(1).tolist() for t in outputs}
        names = {"fine": CLASSES, **index}

        def up(field_from: str, field_to: str, i: int) -> str:  # a class name mapped up by the tables' dicts
            name = names[field_from][i]  # noqa: B023 (called within this iteration)
            while field_from != field_to:
                parent = {"fine": "coarse" if field_to in ("coarse", "super") else "flies", "coarse": "super"}[
                    field_from
                ]
                name, field_from = group_of[parent][name], parent
            return name

        for child, parent in [("fine", "coarse"), ("fine", "flies"), ("coarse", "super"), ("fine", "super")]:
            acc = (
                sum(up(child, parent, p) == names[parent][y] for p, y in zip(pred[child], labels[parent].tolist())) / n
            )
            assert m[f"{parent}/acc_from_{child}"] == pytest.approx(acc)
            if parent in pred:
                agree = sum(up(child, parent, p) == names[parent][q] for p, q in zip(pred[child], pred[parent])) / n
                assert m[f"{child}/consistency_with_{parent}"] == pytest.approx(agree)
            else:
                assert f"{child}/consistency_with_{parent}" not in m
        accs = [m["fine/acc"], m["coarse/acc"], m["super/acc"]]
        assert m["mean_acc"] == pytest.approx(sum(accs) / 3)
        assert m["weighted_acc"] == pytest.approx((1.0 * accs[0] + 0.5 * accs[1]) / 1.5)  # super's weight is 0


@pytest.mark.parametrize("order", [["coarse", "flies", "super"], ["super", "flies", "coarse"]])
def test_three_tables_in_an_image_folder_get_every_metric_whatever_their_order(folder, tmp_path, order):
    spec = tmp_path / "folders.toml"
    spec.write_text(folder_spec(folder, order))
    checked = invoke("check", spec)
    assert "heads fine(6), coarse(3), flies(2), super(2)" in checked.stdout
    run_dir = Path(invoke("train", spec, "--out", tmp_path / "runs", "--quiet").stdout.strip())
    rows = runs.read_metrics(run_dir)
    for row in rows:
        logged = set(row) - {"epoch", "split", "lr", "images_per_s", "time_s"}
        heads = {f"{t}/{k}" for t in ("fine", "coarse", "flies", "super") for k in ("loss", "acc")}
        assert logged == {"loss", "mean_acc", "weighted_acc"} | heads | HIERARCHY_NAMES
    # The labels of every field, nested ones included, follow the tables: check them on the split itself.
    from graphc import load_spec
    from graphc.runtime.data.load import load_dataset

    data = load_dataset(load_spec(spec).data, image_shape=(3, 8, 8))
    for split in (data.train, data.test):
        for i in range(len(split)):
            fine = CLASSES[int(split.labels["fine"][i])]
            coarse = data.class_names["coarse"][int(split.labels["coarse"][i])]
            assert fine in TABLES["coarse"][coarse]
            assert fine in TABLES["flies"][data.class_names["flies"][int(split.labels["flies"][i])]]
            assert coarse in TABLES["super"][data.class_names["super"][int(split.labels["super"][i])]]
    summary = runs.read_json(run_dir / "summary.json")
    assert summary["select"]["metric"] == "val/mean_acc" and summary["best_epoch"] == 1
    assert HIERARCHY_NAMES <= set(summary["test"])


# --------------------------------------------------------------------------- graphc check: what train would reject


def both(spec: Path, tmp_path: Path, code: int = 2, check_args=()) -> str:
    """Run check and train on a spec that both must reject; returns the one message they share."""
    check = invoke("check", spec, *check_args, code=code)
    train = invoke("train", spec, "--out", tmp_path / "runs", "--quiet", code=code)
    message = error_text(train)
    assert message in check.stderr, (message, check.stderr)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pt"))  # rejected before training
    return message


def test_check_rejects_a_watched_metric_the_model_does_not_log_as_train_does(folder, tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(folder_spec(folder, ["coarse"], heads=("fine", "coarse"), select="val/fine/consistency"))
    message = both(spec, tmp_path)
    assert "watches 'val/fine/consistency', which this model does not log" in message
    assert "val/fine/consistency_with_coarse" in message  # the hint names the metric meant
    # The multi-task metrics and hierarchy metrics are watchable, even a parent without a head.
    for metric in ("val/mean_acc", "val/weighted_acc", "train/weighted_acc", "val/flies/acc_from_fine"):
        spec.write_text(folder_spec(folder, ["coarse", "flies"], heads=("fine", "coarse"), select=metric))
        invoke("check", spec)
    spec.write_text(
        folder_spec(folder, ["coarse", "flies"], heads=("fine", "coarse"), select="val/fine/consistency_with_flies")
    )
    assert "which this model does not log" in both(spec, tmp_path)  # no flies head: no consistency with it
    spec.write_text(
        folder_spec(folder, ["coarse"], heads=("fine", "coarse")).replace(
            "[train]\n", '[train]\nearly_stopping = { metric = "val/mean_accuracy", patience = 2 }\n'
        )
    )
    message = both(spec, tmp_path)
    assert "train.early_stopping.metric" in message and "did you mean 'val/mean_acc'" in message


def test_train_rejects_every_spec_of_a_list_before_training_or_decoding_any(folder, tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(folder_spec(folder, ["coarse"], heads=("fine", "coarse")))
    bad = tmp_path / "bad.toml"
    bad.write_text(folder_spec(folder, ["coarse"], heads=("fine", "coarse"), select="val/fine/consistency"))
    (folder / "train" / "cat" / "001.png").write_bytes(b"not a png")  # decoding the set would fail (exit 1)
    result = invoke("train", good, bad, "--out", tmp_path / "runs", "--quiet", code=2)
    assert "which this model does not log" in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # not even the good spec ran


def test_check_rejects_a_class_one_table_lists_and_another_leaves_out(folder, tmp_path):
    tables = {**TABLES, "flies": {"flying": ["airplane", "bird"], "grounded": ["ship", "truck", "cat"]}}  # no dog
    spec = tmp_path / "s.toml"
    spec.write_text(folder_spec(folder, ["coarse", "flies", "super"], tables=tables))
    message = both(spec, tmp_path)
    assert (
        "field 'data.hierarchy.flies'" in message
        and "'coarse' lists class 'dog', but no group of 'flies' lists it" in message
    )
    assert re.search(r"s\.toml:\d+: ", message)  # file and line of the table


def test_check_rejects_a_misspelt_class_and_says_which(folder, tmp_path):
    tables = {**TABLES, "flies": {"flying": ["airplane", "bird"], "grounded": ["ship", "truck", "cat", "dgo"]}}
    spec = tmp_path / "s.toml"
    spec.write_text(folder_spec(folder, ["coarse", "flies", "super"], tables=tables))
    message = both(spec, tmp_path)
    assert "'flies' lists 'dgo' instead" in message and "'coarse' lists class 'dog'" in message
    # a misspelt group in a nested table
    tables = {**TABLES, "super": {"machine": ["vehicle"], "animal": ["pet", "wlid"]}}
    spec.write_text(folder_spec(folder, ["coarse", "flies", "super"], tables=tables))
    message = both(spec, tmp_path)
    assert "'wlid', which is not a group of 'coarse'" in message and "did you mean 'wild'" in message


def test_check_counts_each_class_once_and_agrees_with_train_on_counts(folder, tmp_path):
    spec = tmp_path / "s.toml"
    # A nested table first: 0.1.0 counted the classes of the first table (2 groups) as the fine classes.
    spec.write_text(folder_spec(folder, ["super", "coarse"], heads=("fine", "super")))
    assert "heads fine(6), super(2)" in invoke("check", spec).stdout
    spec.write_text(spec.read_text().replace('task = "fine"\n', 'task = "fine"\nclasses = 5\n'))
    message = both(spec, tmp_path)
    assert "declares 5 classes for task 'fine', but the imagefolder data set has 6" in message


# --------------------------------------------------------------------------- graphc check --data


def test_check_data_reads_one_image_per_class(folder, tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(folder_spec(folder, ["coarse", "flies", "super"]))
    # A broken second image: train decodes it (and fails), check --data reads only each class's first.
    (folder / "train" / "cat" / "001.png").write_bytes(b"not a png")
    result = invoke("check", spec, "--data")
    assert "heads fine(6), coarse(3), flies(2), super(2)" in result.stdout
    assert "data: imagefolder, images 3x8x8, 24 training images" in result.stdout
    assert "cannot be decoded" in invoke("train", spec, "--out", tmp_path / "runs", "--quiet", code=1).stderr


def test_check_data_catches_a_missing_class_folder_as_train_does(folder, tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(folder_spec(folder, ["coarse", "flies", "super"]))
    invoke("check", spec)  # the tables agree with each other: only the data can tell
    for split in ("train", "test"):
        for f in (folder / split / "dog").iterdir():
            f.unlink()
        (folder / split / "dog").rmdir()
    message = both(spec, tmp_path, check_args=["--data"])
    assert "lists class 'dog', but" in message and "has no folder of that name" in message


def test_check_data_catches_a_wrong_image_size_and_a_missing_root_as_train_does(folder, tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(folder_spec(folder, ["coarse"], heads=("fine", "coarse"), shape=(3, 16, 16)))
    invoke("check", spec)
    message = both(spec, tmp_path, code=1, check_args=["--data"])
    assert "is 8x8 (height x width) but the images must be 16x16" in message and "resize" in message
    spec.write_text(folder_spec(tmp_path / "nowhere", ["coarse"], heads=("fine", "coarse")))
    message = both(spec, tmp_path, code=1, check_args=["--data"])
    assert "does not exist" in message
    # --data-dir points check at the data, as it does train
    assert "ok" in invoke("check", spec, "--data", "--data-dir", folder).stdout


def test_check_data_on_synthetic_and_exit_codes_of_a_mixed_list(folder, tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(folder_spec(folder, ["coarse"], heads=("fine", "coarse")))
    missing = tmp_path / "missing.toml"
    missing.write_text(folder_spec(tmp_path / "nowhere", ["coarse"], heads=("fine", "coarse")))
    assert invoke("check", good, missing, "--data", code=1).stdout.count("ok") == 1
    bad = tmp_path / "bad.toml"
    bad.write_text(folder_spec(folder, ["coarse"], heads=("fine", "coarse"), select="val/nope"))
    invoke("check", good, missing, bad, "--data", code=2)  # a spec error outranks missing data
    result = invoke("check", "tests/specs/tiny_train.toml", "--data")
    assert "heads fine(12), coarse(3)" in result.stdout and "data: synthetic" in result.stdout


def test_check_data_on_cifar100_reads_the_meta_and_test_files(tmp_path):
    write_cifar100(tmp_path / "c100")
    (tmp_path / "c100" / "cifar-100-python" / "train").write_bytes(b"never read by check --data")
    result = invoke("check", "shared_conv", "--data", "--data-dir", tmp_path / "c100")
    assert "heads fine(100), coarse(20)" in result.stdout and "data: cifar100, images 3x32x32" in result.stdout
    missing = invoke("check", "shared_conv", "--data", "--data-dir", tmp_path / "none", code=1).stderr
    assert "CIFAR-100 was not found" in missing and "`graphc check --data` does not" in missing
    assert not (tmp_path / "none").exists()  # nothing downloaded, nothing made


# --------------------------------------------------------------------------- baselines, per-class, confusion


def test_majority_and_balanced_accuracy_on_a_hand_computed_example():
    # true:      0 0 0 0 1 1 2     (class 3 absent from the split)
    # predicted: 0 0 0 1 1 0 0
    true = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    predicted = torch.tensor([0, 0, 0, 1, 1, 0, 0])
    head = HeadInfo("x", 4, 1.0, 0.0)
    confusion = Confusion([head], torch.device("cpu"), matrix=True)
    confusion.update({"x": torch.nn.functional.one_hot(predicted, 4).float()}, {"x": true})
    matrix = confusion.matrices()["x"]
    assert matrix.tolist() == [[3, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert majority_accuracy(matrix) == pytest.approx(4 / 7)  # always answering class 0
    assert balanced_accuracy(matrix) == pytest.approx((3 / 4 + 1 / 2 + 0 / 1) / 3)  # class 3 has no images
    assert confusion.baselines() == pytest.approx({"x/majority_acc": 4 / 7, "x/balanced_acc": 5 / 12})
    # A constant answer on an imbalanced split: high accuracy, majority-level, balanced = 1 / classes.
    constant = Confusion([HeadInfo("y", 2, 1.0, 0.0)], torch.device("cpu"))
    labels = torch.tensor([1] * 8 + [0] * 2)
    constant.update({"y": torch.tensor([[0.0, 1.0]]).repeat(10, 1)}, {"y": labels})
    assert constant.baselines() == pytest.approx({"y/majority_acc": 0.8, "y/balanced_acc": 0.5})
    assert math.isnan(balanced_accuracy(torch.zeros(3, 3, dtype=torch.int64)))


def test_eval_per_class_and_confusion_pictures(folder, tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(folder_spec(folder, ["coarse", "flies"], heads=("fine", "flies")))
    run_dir = Path(invoke("train", spec, "--out", tmp_path / "runs", "--quiet").stdout.strip())
    summary = runs.read_json(run_dir / "summary.json")
    for task in ("fine", "flies"):  # logged with the final test metrics
        assert 0 < summary["test"][f"{task}/majority_acc"] <= 1 and 0 <= summary["test"][f"{task}/balanced_acc"] <= 1
    assert summary["test"]["flies/majority_acc"] == pytest.approx(8 / 12)  # 4 grounded classes x 2 of 6 x 2 test images
    assert summary["test"]["fine/majority_acc"] == pytest.approx(2 / 12)  # balanced test split

    out = tmp_path / "confusion"
    data = json.loads(invoke("eval", run_dir, "--split", "test", "--per-class", "--json", "--confusion", out).stdout)
    assert data["metrics"] == pytest.approx(summary["test"], rel=1e-9)
    for task, classes in (("fine", CLASSES), ("flies", ["flying", "grounded"])):
        rows = data["per_class"][task]
        assert [r["class"] for r in rows] == classes
        assert sum(r["images"] for r in rows) == 12  # the confusion matrix sums to the split size
        assert sum(r["correct"] for r in rows) / 12 == pytest.approx(data["metrics"][f"{task}/acc"])
        present = [r["acc"] for r in rows if r["images"]]
        assert sum(present) / len(present) == pytest.approx(data["metrics"][f"{task}/balanced_acc"])
        for suffix in ("png", "svg"):
            assert (out / f"{task}_confusion.{suffix}").stat().st_size > 1000
        svg = (out / f"{task}_confusion.svg").read_text()
        assert all(name in svg for name in classes)
    table = invoke("eval", run_dir, "--split", "test", "--per-class").stdout
    assert "per-class accuracy on the test split" in table and "truck" in table and "grounded" in table
    assert "fine -> coarse" in table and "(no parent head)" in table  # a parent without a head is still measured


def test_confusion_picture_of_100_classes(tmp_path):
    from graphc.runtime.report.confusion import plot_confusion

    g = torch.Generator().manual_seed(0)
    matrix = torch.randint(0, 5, (100, 100), generator=g) + torch.diag(torch.full((100,), 40))
    names = [f"class_{i:02d}$" for i in range(100)]  # a '$' must not start TeX
    written = plot_confusion(matrix.numpy(), names, "100 classes", tmp_path / "big")
    assert [p.suffix for p in written] == [".png", ".svg"]
    svg = (tmp_path / "big.svg").read_text()
    assert "class_00$" in svg and "class_99$" in svg
    assert ">40<" not in svg  # no per-cell numbers beyond 20 classes
