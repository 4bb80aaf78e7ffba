"""Results researchers can publish (issue 11, the report half): run variants as report rows,
true duplicates, --tag, comparisons only between rows measured alike, the terminal table at
a narrow width, one-epoch and hierarchy plots, --limit-test / --no-test and TensorBoard.

Run directories are written by hand (graphc.runtime.runs.rundir's writers) with numbers chosen so
the expected means can be worked out on paper; the train tests run `graphc train` on a tiny
synthetic spec for one epoch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from graphc.cli import app
from graphc.errors import UsageError
from graphc.runtime.report.build import build_report
from graphc.runtime.report.plots import metric_figure, plot_curves, spec_colours
from graphc.runtime.report.render import render_markdown, rich_tables
from graphc.runtime.runs.rundir import append_metrics, write_json
from tests.conftest import TESTS, clean_exit

runner = CliRunner()
SPEC = TESTS / "specs" / "tiny_train.toml"
SHA = "a" * 64
TRAIN = {"epochs": 3, "batch_size": 32, "seed": 0, "device": "cpu", "optimizer": {"name": "adam", "lr": 0.003}}
DATA = {"dataset": "synthetic", "root": None, "val_fraction": 0.25, "split_seed": 0, "augment": {"preset": "none"}}


def write_run(
    root: Path,
    name: str,
    seed: int,
    val: dict,
    *,
    spec: str = "s",
    epochs: int = 3,
    tag: str | None = None,
    train: dict | None = None,
    config: dict | None = None,
    started: str = "2026-01-01T00:00:00",
    test: dict | None = None,
    tasks=("fine", "coarse"),
    train_rows: dict | None = None,
) -> Path:
    """A finished run whose every epoch logs ``val`` (and ``train_rows`` for training), so its best
    and last epochs both hold exactly these numbers."""
    run = root / spec / name
    run.mkdir(parents=True)
    write_json(
        run / "config.json",
        {
            "spec": spec,
            "spec_sha256": SHA,
            "seed": seed,
            "tasks": list(tasks),
            "train": {**TRAIN, "epochs": epochs, "seed": seed, **(train or {})},
            "data": DATA,
            "limit_train": None,
            "limit_val": None,
            "tag": tag,
            "started": started,
            **(config or {}),
        },
    )
    for epoch in range(1, epochs + 1):
        append_metrics(
            run,
            [
                {
                    "epoch": epoch,
                    "split": "train",
                    "loss": 1.0,
                    **(train_rows or val),
                    "lr": 1e-3,
                    "images_per_s": 1.0,
                    "time_s": 1.0,
                },
                {"epoch": epoch, "split": "val", "loss": 1.0, **val},
            ],
        )
    block = {f"val/{k}": v for k, v in val.items()}
    write_json(
        run / "summary.json",
        {
            "spec": spec,
            "seed": seed,
            "status": "completed",
            "epochs_completed": epochs,
            "best_epoch": epochs,
            "select": {"metric": "val/loss", "mode": "min"},
            "best": block,
            "last": block,
            "test": test,
        },
    )
    return run


def acc(fine: float, coarse: float = 0.5) -> dict:
    return {"fine/loss": 2.0 - fine, "fine/acc": fine, "coarse/loss": 1.0, "coarse/acc": coarse}


# --------------------------------------------------------------------------- variants


def test_two_variants_of_one_spec_over_two_seeds_are_two_rows_with_their_own_means(tmp_path):
    # epochs 1: fine accuracy 0.50 and 0.70 -> mean 0.60, sd sqrt(2 * 0.1^2 / 1) = 0.141421...
    write_run(tmp_path, "0-a", 0, acc(0.50), epochs=1)
    write_run(tmp_path, "1-a", 1, acc(0.70), epochs=1, train={"device": "cuda"})  # where it ran: same variant
    # epochs 3: 0.20 and 0.40 -> mean 0.30
    write_run(tmp_path, "0-b", 0, acc(0.20), epochs=3)
    write_run(tmp_path, "1-b", 1, acc(0.40), epochs=3, config={"nproc": 2})
    report = build_report([tmp_path])
    assert [r.label for r in report.rows] == ["s [epochs=1]", "s [epochs=3]"]
    one, three = report.rows
    assert one.seeds == three.seeds == [0, 1]
    assert one.stats["fine/acc"].mean == pytest.approx(0.60)
    assert one.stats["fine/acc"].std == pytest.approx(math.sqrt(0.02))
    assert three.stats["fine/acc"].mean == pytest.approx(0.30)
    assert three.stats["fine/loss"].mean == pytest.approx(1.70)
    assert not report.warnings  # nothing dropped
    assert "s [epochs=1]" in render_markdown(report) and "s [epochs=3]" in render_markdown(report)


def test_labels_name_every_setting_that_differs_and_limits_show(tmp_path):
    write_run(tmp_path, "0-a", 0, acc(0.5), epochs=3, config={"limit_train": 2000})
    write_run(tmp_path, "0-b", 0, acc(0.5), epochs=5)
    write_run(tmp_path, "0-c", 0, acc(0.5), epochs=5, train={"optimizer": {"name": "adam", "lr": 0.01}})
    write_run(tmp_path, "0-d", 0, acc(0.5), spec="other", config={"limit_test": 500})
    labels = [r.label for r in build_report([tmp_path]).rows]
    assert labels == [
        "other [limit_test=500]",
        "s [epochs=3, lr=0.003, limit_train=2000]",
        "s [epochs=5, lr=0.003]",
        "s [epochs=5, lr=0.01]",
    ]


def test_an_image_folder_is_part_of_the_variant_a_download_folder_is_not(tmp_path):
    folders = {**DATA, "dataset": "imagefolder"}
    write_run(tmp_path, "0-a", 0, acc(0.5), config={"data": {**folders, "root": "/data/cifar10"}})
    write_run(tmp_path, "0-b", 0, acc(0.6), config={"data": {**folders, "root": "/data/cifar10-small"}})
    write_run(
        tmp_path, "0-c", 0, acc(0.7), spec="c", config={"data": {**DATA, "dataset": "cifar100", "root": "/home/a"}}
    )
    write_run(
        tmp_path, "1-c", 1, acc(0.9), spec="c", config={"data": {**DATA, "dataset": "cifar100", "root": "/mnt/b"}}
    )
    report = build_report([tmp_path])
    assert [r.label for r in report.rows] == ["c", "s [data_dir=/data/cifar10-small]", "s [data_dir=/data/cifar10]"]
    assert report.rows[0].stats["fine/acc"].mean == pytest.approx(0.8)
    # different image folders are different validation images: not compared
    assert not any(report.is_best(r, "fine/acc") for r in report.rows[1:])


def test_a_changed_spec_text_is_its_own_row(tmp_path):
    write_run(tmp_path, "0-a", 0, acc(0.5))
    changed = write_run(tmp_path, "0-b", 0, acc(0.7))
    config = json.loads((changed / "config.json").read_text())
    write_json(changed / "config.json", {**config, "spec_sha256": "b" * 64})
    report = build_report([tmp_path])
    assert [r.label for r in report.rows] == ["s [spec_sha256=aaaaaaaa]", "s [spec_sha256=bbbbbbbb]"]


def test_a_true_duplicate_is_listed_and_the_newer_counts(tmp_path):
    old = write_run(tmp_path, "0-old", 0, acc(0.10), started="2026-01-01T00:00:00")
    new = write_run(tmp_path, "0-new", 0, acc(0.30), started="2026-01-02T00:00:00")
    write_run(tmp_path, "1-x", 1, acc(0.50))
    write_run(tmp_path, "0-other", 0, acc(0.90), epochs=1)  # same seed, another variant: not a duplicate
    report = build_report([tmp_path])
    rows = {r.label: r for r in report.rows}
    assert rows["s [epochs=3]"].stats["fine/acc"].mean == pytest.approx(0.40)  # (0.30 + 0.50) / 2
    assert rows["s [epochs=1]"].stats["fine/acc"].mean == pytest.approx(0.90)
    (warning,) = [w for w in report.warnings if "duplicate" in w]
    assert str(old) in warning and str(new) in warning and "seed 0" in warning
    result = runner.invoke(app, ["report", str(tmp_path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0 and "a duplicate of" in result.output


def test_tag_labels_the_row_and_picks_the_baseline(tmp_path):
    write_run(tmp_path, "0-a", 0, acc(0.50))
    write_run(tmp_path, "1-a", 1, acc(0.60))
    write_run(tmp_path, "0-t", 0, acc(0.70), tag="wide-lr", train={"optimizer": {"name": "adam", "lr": 0.01}})
    write_run(tmp_path, "1-t", 1, acc(0.90), tag="wide-lr", train={"optimizer": {"name": "adam", "lr": 0.01}})
    report = build_report([tmp_path], baseline="wide-lr")
    assert [r.label for r in report.rows] == ["s", "wide-lr"]
    assert report.baseline == "wide-lr"
    untagged = report.rows[0]
    # paired by seed: (0.50 - 0.70 + 0.60 - 0.90) / 2 = -0.25
    assert untagged.deltas["fine/acc"].value == pytest.approx(-0.25)
    assert build_report([tmp_path], baseline="s").baseline == "s"  # the spec's one untagged row
    result = runner.invoke(app, ["report", str(tmp_path), "-o", str(tmp_path / "out"), "--baseline", "wide-lr"])
    assert result.exit_code == 0, result.output
    assert "wide-lr (baseline)" in result.output


def test_a_baseline_spec_name_with_several_rows_asks_for_a_label(tmp_path):
    write_run(tmp_path, "0-a", 0, acc(0.5), epochs=1)
    write_run(tmp_path, "0-b", 0, acc(0.6), epochs=2)
    with pytest.raises(UsageError, match=r"matches 2 rows: s \[epochs=1\]; s \[epochs=2\]"):
        build_report([tmp_path], baseline="s")
    assert build_report([tmp_path], baseline="s [epochs=2]").baseline == "s [epochs=2]"
    result = runner.invoke(app, ["report", str(tmp_path), "-o", str(tmp_path / "out"), "--baseline", "s"])
    assert result.exit_code == 2 and "--baseline 's [epochs=1]'" in result.output and clean_exit(result)


# --------------------------------------------------------------------------- what is compared


def test_rows_measured_on_other_images_are_not_compared(tmp_path):
    write_run(tmp_path, "0-a", 0, acc(0.50), epochs=1)
    write_run(tmp_path, "0-b", 0, acc(0.60), epochs=2)
    write_run(tmp_path, "0-c", 0, acc(0.90), epochs=3, config={"limit_val": 100})
    report = build_report([tmp_path], baseline="s [epochs=1]")
    rows = {r.label: r for r in report.rows}
    limited = rows["s [epochs=3, limit_val=100]"]
    assert not report.is_best(limited, "fine/acc")  # highest, but on other validation images
    # one seed, no per-image predictions of the validation split: highest, but not shown as better
    assert not report.is_best(rows["s [epochs=2]"], "fine/acc")
    assert rows["s [epochs=2]"].comparisons["fine/acc"].verdict.startswith("cannot tell (1 shared seed")
    assert limited.deltas == {} and limited.comparisons == {} and "fine/acc" in rows["s [epochs=2]"].deltas
    assert any("not compared" in n and "limit_val" in n for n in report.notes)
    assert any("no differences to s [epochs=1] for s [epochs=3, limit_val=100]" in n for n in report.notes)


def test_a_metric_only_some_rows_have_is_a_dash_and_never_bold_alone(tmp_path):
    write_run(tmp_path, "0-a", 0, {**acc(0.5), "coarse/acc_from_fine": 0.4, "fine/consistency_with_coarse": 0.8})
    write_run(
        tmp_path,
        "0-b",
        0,
        {**acc(0.6), "flies/acc_from_fine": 0.7, "fine/consistency_with_flies": 0.9},
        spec="t",
        tasks=("fine", "coarse", "flies"),
    )
    report = build_report([tmp_path])
    header, lines = _markdown(report)
    t_line = next(l for l in lines if l[0] == "t")
    s_line = next(l for l in lines if l[0] == "s")
    assert t_line[header.index("fine/consistency_with_coarse (%)")] == "-"
    assert s_line[header.index("fine/consistency_with_flies (%)")] == "-"
    # each consistency has one row: nothing to compare it with, so no bold
    assert s_line[header.index("fine/consistency_with_coarse (%)")] == "80.00"
    assert t_line[header.index("fine/consistency_with_flies (%)")] == "90.00"


def test_a_mean_over_other_heads_is_never_compared(tmp_path):
    """mean_acc over (fine, coarse) and over (fine, coarse, flies) are different quantities: no bold, no delta."""
    write_run(tmp_path, "0-a", 0, {**acc(0.5), "mean_acc": 0.5})
    write_run(
        tmp_path,
        "0-b",
        0,
        {**acc(0.5), "flies/loss": 0.3, "flies/acc": 0.9, "mean_acc": 0.63},
        spec="t",
        tasks=("fine", "coarse", "flies"),
    )
    write_run(tmp_path, "0-c", 0, {**acc(0.6), "mean_acc": 0.55}, spec="u")
    report = build_report([tmp_path], baseline="s")
    header, lines = _markdown(report)
    column = header.index("mean_acc (%)")
    cells = {l[0]: l[column] for l in lines}
    assert cells["t"] == "63.00"  # the highest mean, but over three heads: not bold
    # the best of the two-head rows, compared; one seed and no image test: not bold
    assert cells["u"].startswith("55.00 (+5.00, cannot tell (1 shared seed")
    by_label = {r.label: r for r in report.rows}
    assert "mean_acc" not in by_label["t"].deltas and "fine/acc" in by_label["t"].deltas
    assert "mean_acc" not in by_label["t"].comparisons and "mean_acc" in by_label["u"].comparisons
    assert by_label["u"].deltas["mean_acc"].value == pytest.approx(0.05)


def test_majority_baseline_is_shown_but_never_a_winner(tmp_path):
    for name, seed, balanced in (("0-a", 0, 0.3), ("0-b", 0, 0.6)):
        write_run(
            tmp_path,
            name,
            seed,
            acc(0.5),
            epochs=1 if name == "0-a" else 2,
            test={**acc(0.5), "fine/majority_acc": 0.8 if name == "0-a" else 0.81, "fine/balanced_acc": balanced},
        )
    report = build_report([tmp_path], split="test", baseline="s [epochs=1]")
    header, lines = _markdown(report)
    column = header.index("fine/majority_acc (%)")
    assert [l[column] for l in lines] == ["80.00", "81.00"]  # not bold
    assert "fine/majority_acc" not in report.rows[1].deltas
    assert report.rows[1].deltas["fine/balanced_acc"].value == pytest.approx(0.3)
    # compared (a difference and a verdict), but one seed and no image test for it: not bold
    assert lines[1][header.index("fine/balanced_acc (%)")].startswith("60.00 (+30.00, cannot tell")


def _markdown(report):
    rows = [l for l in render_markdown(report).splitlines() if l.startswith("|")]
    split = lambda l: [c.strip() for c in l.strip().strip("|").split("|")]
    return split(rows[0]), [split(r) for r in rows[2:]]


# --------------------------------------------------------------------------- the terminal table


def test_terminal_headers_are_never_cut_at_width_100(tmp_path):
    hierarchy = {
        "coarse/acc_from_fine": 0.4,
        "fine/consistency_with_coarse": 0.8,
        "flies/acc_from_fine": 0.6,
        "fine/consistency_with_flies": 0.7,
        "flies/acc_from_coarse": 0.65,
        "coarse/consistency_with_flies": 0.75,
        "fine/top5": 0.9,
        "flies/loss": 0.5,
        "flies/acc": 0.8,
        "mean_acc": 0.6,
    }
    tasks = ("fine", "coarse", "flies")
    for seed in (0, 1):
        write_run(
            tmp_path,
            f"{seed}-a",
            seed,
            {**acc(0.5 + seed / 10), **hierarchy},
            tasks=tasks,
            epochs=1,
            tag="a-much-longer-tag-name",
        )
        write_run(tmp_path, f"{seed}-b", seed, {**acc(0.4 + seed / 10), **hierarchy}, tasks=tasks, epochs=2)
    report = build_report([tmp_path], baseline="s")
    assert len(report.columns) >= 12
    console = Console(width=100, record=True, color_system=None)
    for table in rich_tables(report, console.width):
        console.print(table)
    text = console.export_text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 100
    # one table per head, titled with it, its columns named without it; every name whole, on one line
    headers: dict[str, str] = {}  # head -> the header lines of its tables
    title = None
    for line in text.splitlines():
        if line.strip() and line[0] not in "┏┃┡│└":
            title = line.split(" (")[0].strip()
        elif line.startswith("┃"):
            headers[title] = headers.get(title, "") + line
    assert list(headers) == ["fine", "coarse", "flies", "across heads"]
    for key in report.columns:
        head, metric = key.split("/", 1) if "/" in key else ("across heads", key)
        name = metric if metric == "loss" else f"{metric} (%)"
        assert f" {name} " in headers[head], key


# --------------------------------------------------------------------------- plots


def test_a_one_epoch_curve_is_a_marker_on_a_sensible_axis(tmp_path):
    runs = [
        write_run(
            tmp_path,
            f"{s}-a",
            s,
            {**acc(0.42 + s / 100), "coarse/acc_from_fine": 0.3, "fine/consistency_with_coarse": 0.6},
            epochs=1,
        )
        for s in (0, 1)
    ]
    report = build_report([tmp_path])
    groups = {r.label: r.runs for r in report.rows}
    fig = metric_figure(groups, "fine/acc", spec_colours(list(groups)))
    ax = fig.axes[0]
    assert ax.get_xlim() == pytest.approx((0.5, 1.5))
    low, high = ax.get_ylim()
    assert high - low >= 5 and low <= 42.5 <= high
    markers = [line for line in ax.lines if line.get_marker() not in (None, "None", "")]
    assert {line.get_marker() for line in markers} >= {"o", "s"}  # validation and training
    assert all(line.get_markersize() >= 9 for line in markers if len(line.get_xdata()) == 1)
    (tmp_path / "plots").mkdir()
    written = plot_curves(groups, tmp_path / "plots")
    names = {p.name for p in written}
    assert {"fine_acc.png", "coarse_loss.svg", "coarse_acc_from_fine.png", "fine_consistency_with_coarse.svg"} <= names
    assert len(runs) == 2


# --------------------------------------------------------------------------- graphc train: test pass, TensorBoard


def train(tmp_path: Path, *flags: str):
    return runner.invoke(
        app,
        [
            "train",
            str(SPEC),
            "--epochs",
            "1",
            "--limit-train",
            "64",
            "--limit-val",
            "32",
            "--device",
            "cpu",
            "--quiet",
            "--out",
            str(tmp_path / "runs"),
            *flags,
        ],
    )


def test_limit_test_and_no_test_are_recorded_respected_and_labelled(tmp_path):
    result = train(tmp_path, "--limit-test", "7", "--tag", "smoke")
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    config = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert config["limit_test"] == 7 and config["no_test"] is False and config["tag"] == "smoke"
    assert summary["test_limit"] == 7 and summary["test_images"] == 7 and not summary["test_skipped"]
    # accuracies over 7 images are multiples of 1/7
    assert round(summary["test"]["fine/acc"] * 7, 6) == round(summary["test"]["fine/acc"] * 7)
    assert "on 7 test images" in result.output

    result = train(tmp_path, "--no-test")
    assert result.exit_code == 0, result.output
    skipped = Path(result.stdout.strip().splitlines()[-1])
    summary = json.loads((skipped / "summary.json").read_text())
    assert summary["test"] is None and summary["test_skipped"] is True and summary["test_images"] == 0
    assert json.loads((skipped / "config.json").read_text())["no_test"] is True
    assert "test skipped" in result.output

    report = build_report([tmp_path / "runs"])
    assert sorted(r.label for r in report.rows) == ["smoke [limit_test=7]", "tiny_train [no_test]"]
    test = build_report([tmp_path / "runs"], split="test")
    assert [r.label for r in test.rows if r.points] == ["smoke [limit_test=7]"]
    assert any("--no-test" in w for w in test.warnings)

    bad = train(tmp_path, "--no-test", "--limit-test", "5")
    assert bad.exit_code == 2 and "exclude each other" in bad.output and clean_exit(bad)
    bad = runner.invoke(app, ["train", "--resume", str(run), "--limit-test", "3"])
    assert bad.exit_code == 2 and "--limit-test" in bad.output and clean_exit(bad)
    bad = train(tmp_path, "--tag", "has space")
    assert bad.exit_code == 2 and "--tag" in bad.output and clean_exit(bad)


def test_tensorboard_missing_is_a_clear_usage_error(tmp_path, monkeypatch):
    import graphc.runtime.train.tensorboard as board

    monkeypatch.setattr(board, "available", lambda: False)
    result = train(tmp_path, "--tensorboard")
    assert result.exit_code == 2 and "pip install" in result.output and "tensorboard" in result.output
    assert clean_exit(result) and not (tmp_path / "runs").exists()


def test_tensorboard_has_every_logged_scalar_and_the_diagram(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(tmp_path, "--tensorboard", "--epochs", "2", "--limit-test", "10")
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    expected = {f"{r['split']}/{k}" for r in rows for k in r if k not in ("epoch", "split")}
    assert expected <= set(tags["scalars"])
    for row in rows:
        for key, value in row.items():
            if key in ("epoch", "split"):
                continue
            (logged,) = [e for e in events.Scalars(f"{row['split']}/{key}") if e.step == row["epoch"]]
            assert logged.value == pytest.approx(value, rel=1e-6)
    summary = json.loads((run / "summary.json").read_text())
    (test_acc,) = events.Scalars("test/fine/acc")
    assert test_acc.value == pytest.approx(summary["test"]["fine/acc"]) and test_acc.step == summary["best_epoch"]
    (image,) = [t for t in tags["images"] if t.startswith("diagram/")]
    (picture,) = events.Images(image)
    assert picture.width > 100 and picture.height > 100 and picture.encoded_image_string.startswith(b"\x89PNG")
