"""graphc report --delta-m: Δm by hand on fixed numbers (one lower-is-better task), its paired
statistics against scipy, how single-task rows are found (derived names, --single-task), head
types recorded or inferred, the messages when a row is missing, and the outputs.

Runs are written with the runtime's own writer (append_metrics / write_json), with fixed test
numbers in summary.json, as graphc train writes them (runtime/runs/rundir.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from graphc.errors import RunError, UsageError
from graphc.runtime.report.build import build_report, compared, lower_is_better
from graphc.runtime.report.delta_m import add_delta_m, delta_m, parse_single_task
from graphc.runtime.report.render import format_value, render_csv, render_json, render_markdown
from tests.conftest import invoke


def make_run(
    root: Path, spec: str, seed: int, test: dict[str, float], types: dict | None = None, tag=None, epochs: int = 1
) -> Path:
    """A finished run of ``spec`` whose summary.json "test" holds ``test`` (its heads: the tasks named there)."""
    from graphc.runtime.runs.rundir import append_metrics, write_json

    tasks = list(dict.fromkeys(k.split("/")[0] for k in test))
    run = root / spec / f"{seed}-20260101-000000{'-' + tag if tag else ''}-{epochs}"
    run.mkdir(parents=True)
    config = {"spec": spec, "spec_sha256": "0" * 64, "seed": seed, "tasks": tasks, "tag": tag}
    config["train"] = {"epochs": epochs}
    if types is not None:
        config["types"] = types
    write_json(run / "config.json", config)
    val = {"epoch": 1, "split": "val", "loss": 1.0, **{f"{t}/loss": 1.0 for t in tasks}}
    append_metrics(run, [{"epoch": 1, "split": "train", "loss": 1.0}, val])
    block = {f"val/{k}": v for k, v in val.items() if k not in ("epoch", "split")}
    summary = {
        "spec": spec,
        "seed": seed,
        "status": "completed",
        "epochs_completed": 1,
        "best_epoch": 1,
        "best": block,
        "last": block,
        "test": {**{f"{t}/loss": 1.0 for t in tasks}, **test},
    }
    write_json(run / "summary.json", summary)
    return run


# (multi-task cls/acc, age/mae), (single-task cls/acc), (single-task age/mae), per seed
NUMBERS = {
    0: ((0.60, 4.0), 0.50, 5.0),  # cls +20 %, age mae 20 % lower: Δm = (20 + 20) / 2 = +20
    1: ((0.55, 5.5), 0.50, 5.0),  # +10 %, -10 %: Δm = 0
    2: ((0.45, 4.5), 0.60, 5.0),  # -25 %, +10 %: Δm = -7.5
}
BY_HAND = {0: 20.0, 1: 0.0, 2: -7.5}


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    for seed, ((acc, mae), single_acc, single_mae) in NUMBERS.items():
        make_run(root, "mt", seed, {"cls/acc": acc, "age/mae": mae, "age/rmse": 9.0}, types={"age": "regression"})
        make_run(root, "mt__single_cls", seed, {"cls/acc": single_acc})
        make_run(root, "mt__single_age", seed, {"age/mae": single_mae}, types={"age": "regression"})
    return root


def test_the_formula_by_hand_on_two_rows():
    # one classification task (higher is better) and one regression task (mae: lower is better)
    lower = {"cls": False, "age": True}
    assert delta_m({"cls": 0.60, "age": 4.0}, {"cls": 0.50, "age": 5.0}, lower) == pytest.approx(20.0)
    assert delta_m({"cls": 0.45, "age": 4.5}, {"cls": 0.60, "age": 5.0}, lower) == pytest.approx(-7.5)
    assert math.isnan(delta_m({"cls": 0.5, "age": 1.0}, {"cls": 0.0, "age": 5.0}, lower))  # no relative difference to 0


def test_delta_m_per_seed_and_its_paired_statistics_match_scipy(runs):
    report = build_report([runs], split="test")
    table = add_delta_m(report)
    assert list(table.entries) == ["mt"]  # single-task rows get no Δm
    entry = table.entries["mt"]
    assert entry.by_seed == pytest.approx(BY_HAND)
    values = np.array(list(BY_HAND.values()))
    assert entry.mean == pytest.approx(values.mean()) and entry.std == pytest.approx(values.std(ddof=1))
    assert entry.paired.p == pytest.approx(stats.ttest_1samp(values, 0.0).pvalue)
    half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / math.sqrt(3)
    assert entry.paired.ci95 == pytest.approx((values.mean() - half, values.mean() + half))
    assert entry.verdict == "no detectable difference"  # p ~ 0.6 with 3 seeds
    assert [(t.task, t.type, t.metric, t.single) for t in entry.terms] == [
        ("cls", "classification", "cls/acc", "mt__single_cls"),
        ("age", "regression", "age/mae", "mt__single_age"),
    ]


def test_two_seeds_cannot_tell_and_the_table_split_does_not_matter(runs, tmp_path):
    for path in runs.glob("*/2-*"):
        for file in path.iterdir():
            file.unlink()
        path.rmdir()
    report = build_report([runs])  # the validation table; Δm is still on the test split
    entry = add_delta_m(report).entries["mt"]
    assert entry.by_seed == pytest.approx({0: 20.0, 1: 0.0})
    assert entry.verdict.startswith("cannot tell (2 shared seeds")
    assert any("Δm is measured on the test split" in n for n in report.notes)


def test_types_are_inferred_from_metric_names_when_not_recorded(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1):
        make_run(root, "old", seed, {"cls/acc": 0.5, "age/mae": 2.0})  # no "types" in config.json
        make_run(root, "old__single_cls", seed, {"cls/acc": 0.5})
        make_run(root, "old__single_age", seed, {"age/mae": 4.0})
    report = build_report([root], split="test")
    entry = add_delta_m(report).entries["old"]
    assert [t.type for t in entry.terms] == ["classification", "regression"]
    assert entry.by_seed == pytest.approx({0: 25.0, 1: 25.0})  # (0 + 50) / 2: mae halved is better
    assert any("read as regression from its metric names" in n for n in report.notes)


def test_an_unknown_recorded_type_is_read_from_the_metric_names_not_a_traceback(tmp_path):
    # config.json comes from elsewhere: a type this graphc does not know must not become a KeyError
    root = tmp_path / "runs"
    make_run(root, "odd", 0, {"cls/acc": 0.5, "age/mae": 2.0}, types={"age": "ordinal", "cls": 3})
    make_run(root, "odd__single_cls", 0, {"cls/acc": 0.5})
    make_run(root, "odd__single_age", 0, {"age/mae": 4.0})
    entry = add_delta_m(build_report([root], split="test")).entries["odd"]
    assert [t.type for t in entry.terms] == ["classification", "regression"]
    assert entry.by_seed[0] == pytest.approx(25.0)


def test_binary_and_multilabel_use_auroc_and_map(tmp_path):
    root = tmp_path / "runs"
    types = {"smile": "binary", "tags": "multilabel"}
    make_run(root, "faces", 0, {"smile/acc": 0.1, "smile/auroc": 0.9, "tags/map": 0.4}, types=types)
    make_run(root, "faces__single_smile", 0, {"smile/acc": 0.9, "smile/auroc": 0.75}, types={"smile": "binary"})
    make_run(root, "faces__single_tags", 0, {"tags/map": 0.5}, types={"tags": "multilabel"})
    entry = add_delta_m(build_report([root], split="test")).entries["faces"]
    assert entry.by_seed[0] == pytest.approx(100 * ((0.9 - 0.75) / 0.75 + (0.4 - 0.5) / 0.5) / 2)  # acc is ignored


def test_a_missing_single_task_row_names_the_task_and_how_to_train_it(runs):
    for path in runs.glob("mt__single_age/*"):
        for file in path.iterdir():
            file.unlink()
        path.rmdir()
    report = build_report([runs], split="test")
    with pytest.raises(RunError) as caught:
        add_delta_m(report)
    message = str(caught.value)
    assert "no single-task row for task age of mt" in message
    assert "graphc derive single-task" in message and "mt__single_age.toml" in message
    assert "--single-task age=ROW" in message


def test_single_task_rows_named_on_the_command_line(runs, tmp_path):
    for seed, (_, _, single_mae) in NUMBERS.items():
        make_run(runs, "my_age_model", seed, {"age/mae": single_mae * 2}, types={"age": "regression"}, tag="big")
    report = build_report([runs], split="test")
    entry = add_delta_m(report, parse_single_task(["age=big"])).entries["mt"]
    assert entry.terms[1].single == "big"
    # with the single-task mae doubled, seed 0: cls +20 %, age (4 - 10) / 10 = -60 % -> +60 %: Δm = +40
    assert entry.by_seed[0] == pytest.approx(40.0)
    with pytest.raises(UsageError, match="no multi-task row has a head height"):
        add_delta_m(build_report([runs], split="test"), {"height": "big"})
    with pytest.raises(UsageError, match="no row of that label, tag or spec has a head age"):
        add_delta_m(build_report([runs], split="test"), {"age": "nothing"})
    with pytest.raises(UsageError, match="expected TASK=ROW"):
        parse_single_task(["age"])


def test_no_shared_seed_gives_delta_m_of_the_means_without_a_test(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "mt", 0, {"a/acc": 0.6, "b/acc": 0.4})
    make_run(root, "mt__single_a", 1, {"a/acc": 0.5})
    make_run(root, "mt__single_b", 1, {"b/acc": 0.5})
    report = build_report([root], split="test")
    entry = add_delta_m(report).entries["mt"]
    assert entry.n == 0 and entry.mean == pytest.approx(0.0)  # (+20 - 20) / 2
    assert entry.verdict == "cannot tell (no shared seeds)"


def test_outputs_carry_the_delta_m_column(runs, tmp_path):
    report = build_report([runs], split="test")
    add_delta_m(report)
    markdown = render_markdown(report)
    header = next(line for line in markdown.splitlines() if line.startswith("| variant"))
    assert header.rstrip(" |").endswith("Δm (%)")
    assert "## Δm against single-task models" in markdown and "+4.17 ± 14.22" in markdown
    assert "Maninis" in markdown and "Vandenhende" in markdown
    rows = {r["variant"]: r for r in __import__("csv").DictReader(render_csv(report).splitlines())}
    assert float(rows["mt"]["delta_m mean"]) == pytest.approx(12.5 / 3) and rows["mt__single_cls"]["delta_m mean"] == ""
    data = json.loads(render_json(report))
    assert data["delta_m"]["rows"]["mt"]["by_seed"] == pytest.approx({"0": 20.0, "1": 0.0, "2": -7.5})


def test_cli_delta_m_and_its_exit_codes(runs, tmp_path):
    result = invoke("report", runs, "--split", "test", "--delta-m", "-o", tmp_path / "r", "--format", "html")
    assert "Δm against single-task models" in result.output
    assert "Δm against single-task models" in (tmp_path / "r" / "results.html").read_text()
    data = json.loads(
        invoke("report", runs, "--split", "test", "--delta-m", "-o", tmp_path / "j", "--format", "json").stdout
    )
    assert data["delta_m"]["rows"]["mt"]["n"] == 3
    result = invoke("report", runs, "--delta-m", "--single-task", "nope=mt", "-o", tmp_path / "x", code=2)
    assert "no multi-task row has a head nope" in result.output
    only_single = tmp_path / "single"
    make_run(only_single, "mt__single_cls", 0, {"cls/acc": 0.5})
    assert (
        "no row of this report has two or more heads"
        in invoke("report", only_single, "--delta-m", "-o", tmp_path / "y", code=1).output
    )


def test_missing_label_counts_are_shown_as_counts_and_never_compared():
    assert format_value("age/labelled", 120.0) == "120" and not compared("age/labelled")
    assert lower_is_better("age/mae") and lower_is_better("age/rmse") and not lower_is_better("smile/auroc")
    assert not compared("age/mean_mae")  # always predicting the training mean: a property of the split
    assert not compared("smile/positive_rate")  # how often it says yes: neither better nor worse when higher


@pytest.mark.slow  # trains six tiny runs in-process (about 7 s on two cores)
def test_end_to_end_derive_train_and_report(tmp_path):
    """graphc derive single-task, graphc train of the multi-task and the derived specs, graphc report --delta-m:
    the derived names pair up and Δm is computed from the runs' own test metrics."""
    from tests.conftest import TINY_SPEC

    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_SPEC.replace("coarse_classes = 2 }", "coarse_classes = 2, train_size = 64, test_size = 32 }"))
    invoke("derive", "single-task", spec, "--out", tmp_path / "single")
    specs = [spec, *sorted((tmp_path / "single").glob("*.toml"))]
    runs = tmp_path / "runs"
    invoke("train", *specs, "--epochs", "1", "--seeds", "2", "--out", runs, "--device", "cpu", "--quiet")
    out = tmp_path / "report"
    invoke("report", runs, "--split", "test", "--delta-m", "-o", out, "--format", "json")
    data = json.loads((out / "results.json").read_text())
    entry = data["delta_m"]["rows"]["tiny"]
    assert entry["n"] == 2 and [t["single_task_row"] for t in entry["tasks"]] == [
        "tiny__single_fine",
        "tiny__single_coarse",
    ]
    by_row = {row["variant"]: row for row in data["rows"]}
    for seed in ("0", "1"):  # recomputed from the table's own per-seed accuracies
        terms = [
            (
                by_row["tiny"]["metrics"][f"{t}/acc"]["by_seed"][seed],
                by_row[f"tiny__single_{t}"]["metrics"][f"{t}/acc"]["by_seed"][seed],
            )
            for t in ("fine", "coarse")
        ]
        assert entry["by_seed"][seed] == pytest.approx(100 * np.mean([(m - s) / s for m, s in terms]))


def test_of_several_single_task_rows_the_one_trained_alike_is_taken_and_a_different_budget_is_said(runs):
    for seed in NUMBERS:
        make_run(runs, "mt__single_cls", seed, {"cls/acc": 0.9}, epochs=5)  # a longer-trained variant
    report = build_report([runs], split="test")
    entry = add_delta_m(report).entries["mt"]
    assert entry.by_seed == pytest.approx(BY_HAND)  # the 1-epoch row, trained like mt
    assert entry.terms[0].single.startswith("mt__single_cls [epochs=1")
    report = build_report([runs], split="test")
    entry = add_delta_m(report, {"cls": "mt__single_cls [epochs=5]"}).entries["mt"]
    assert any("trained otherwise (epochs 5 vs 1)" in note for note in report.notes)
