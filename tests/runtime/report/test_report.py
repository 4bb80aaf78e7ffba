"""graphc report: table statistics against numpy on the run files, baseline deltas,
the markdown/CSV/JSON outputs, plots, in-progress runs and bad input.

Runs are made with the runtime's own writer (graphc.runtime.runs.rundir.append_metrics / write_json),
following RUNS.md; one end-to-end test trains real tiny runs with `graphc train`.
"""

from __future__ import annotations

import csv
import json
import math
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from graphc.cli import app
from graphc.errors import RunError, UsageError
from graphc.runtime.report.build import build_report
from graphc.runtime.report.render import render_markdown
from graphc.runtime.report.write import write_report
from graphc.runtime.runs.rundir import append_metrics, write_json
from tests.conftest import TINY_SPEC, clean_exit

runner = CliRunner()
TASKS = ("fine", "coarse")
CLASSES = {"fine": 100, "coarse": 20, "other": 5}


def make_run(
    root: Path,
    spec: str,
    seed: int,
    tasks=TASKS,
    epochs: int = 5,
    finished: bool = True,
    test: bool = True,
    hierarchy: bool = False,
    name: str | None = None,
    started: str | None = None,
    dataset: str = "synthetic",
) -> Path:
    """A run directory as graphc train writes it, with noisy learning curves."""
    rng = np.random.default_rng(zlib.crc32(f"{spec}/{seed}/{name}".encode()))
    run = root / spec / (name or f"{seed}-20250101-000000")
    run.mkdir(parents=True)
    write_json(
        run / "config.json",
        {
            "spec": spec,
            "spec_sha256": "0" * 64,
            "seed": seed,
            "tasks": list(tasks),
            "classes": {t: CLASSES[t] for t in tasks},
            "dataset": dataset,
            **({"data": {"dataset": dataset}} if dataset != "synthetic" else {}),
            "started": started or f"2025-01-01T00:00:{seed:02d}",
        },
    )
    history = []
    for epoch in range(1, epochs + 1):
        rows = []
        for split in ("train", "val"):
            row = {"epoch": epoch, "split": split, "loss": 0.0}
            for task in tasks:
                row[f"{task}/loss"] = 3.0 / epoch + rng.uniform(0.5, 1.0)
                row[f"{task}/acc"] = min(1.0, 0.1 * epoch + rng.uniform(0.0, 0.2))
                if CLASSES[task] > 10:
                    row[f"{task}/top5"] = min(1.0, row[f"{task}/acc"] + rng.uniform(0.1, 0.3))
                row["loss"] += row[f"{task}/loss"]
            if hierarchy:
                row["coarse/acc_from_fine"] = rng.uniform(0.3, 0.6)
                row["fine/consistency"] = rng.uniform(0.5, 0.9)
            if split == "train":
                row.update(lr=1e-3, images_per_s=500.0, time_s=1.0)
            rows.append(row)
        append_metrics(run, rows)
        history.append(rows)
    if finished:

        def both(i):
            train, val = history[i]
            strip = lambda row: {k: v for k, v in row.items() if k not in ("epoch", "split")}
            return {
                **{f"val/{k}": v for k, v in strip(val).items()},
                **{f"train/{k}": v for k, v in strip(train).items()},
            }

        best = int(np.argmin([h[1]["loss"] for h in history]))
        summary = {
            "spec": spec,
            "seed": seed,
            "status": "completed",
            "epochs_completed": epochs,
            "best_epoch": best + 1,
            "select": {"metric": "val/loss", "mode": "min"},
            "best": both(best),
            "last": both(epochs - 1),
            "wall_time_s": 1.0,
            "images_per_s": 500.0,
        }
        if test:
            summary["test"] = {k: rng.uniform(0.2, 0.8) for k in history[best][1] if k not in ("epoch", "split")}
        write_json(run / "summary.json", summary)
    return run


def on_files(run_dirs, key: str, block: str = "best"):
    """The values of ``key`` read straight from summary.json files (the independent reference)."""
    values = []
    for run in run_dirs:
        summary = json.loads((run / "summary.json").read_text())
        values.append(summary["test"][key] if block == "test" else summary[block][f"val/{key}"])
    return np.array(values)


def parse_markdown_table(text: str) -> tuple[list[str], list[list[str]]]:
    lines = [l for l in text.splitlines() if l.startswith("|")]
    split = lambda l: [c.strip() for c in l.strip().strip("|").split("|")]
    header, rule, *rows = lines
    assert set(rule.replace("|", "")) == {"-"}
    return split(header), [split(r) for r in rows]


@pytest.fixture
def study(tmp_path):
    """Three specs (two named like reference specs) x three seeds, plus a custom one, on CIFAR-100."""
    runs = {
        spec: [make_run(tmp_path / "runs", spec, seed, dataset="cifar100") for seed in (0, 1, 2)]
        for spec in ("independent", "shared_conv", "mine")
    }
    return tmp_path / "runs", runs


# --------------------------------------------------------------------------- statistics


def test_means_and_sample_stds_match_numpy_on_the_files(study):
    root, runs = study
    report = build_report([root])
    assert [r.spec for r in report.rows] == ["independent", "shared_conv", "mine"]  # original's order, then others
    assert report.columns == ["fine/loss", "coarse/loss", "fine/acc", "coarse/acc", "fine/top5", "coarse/top5"]
    for row in report.rows:
        assert row.seeds == [0, 1, 2]
        for key in report.columns:
            expected = on_files(runs[row.spec], key)
            assert row.stats[key].mean == pytest.approx(expected.mean(), rel=1e-12)
            assert row.stats[key].std == pytest.approx(expected.std(ddof=1), rel=1e-12)
            assert row.stats[key].n == 3
    # the epoch column says where the numbers came from: each run's best_epoch
    best_epochs = sorted(json.loads((r / "summary.json").read_text())["best_epoch"] for r in runs["mine"])
    assert report.rows[2].epochs == best_epochs


def test_last_epoch_and_test_split_read_their_blocks(study):
    root, runs = study
    last = build_report([root], epoch="last")
    test = build_report([root], split="test")
    for report, block in ((last, "last"), (test, "test")):
        row = next(r for r in report.rows if r.spec == "shared_conv")
        expected = on_files(runs["shared_conv"], "fine/acc", block)
        assert row.stats["fine/acc"].mean == pytest.approx(expected.mean())
        assert row.stats["fine/acc"].std == pytest.approx(expected.std(ddof=1))
    assert last.rows[0].epochs == [5, 5, 5]
    with pytest.raises(UsageError, match="--epoch last"):
        build_report([root], split="test", epoch="last")


def test_single_seed_has_no_std_and_missing_test_is_skipped_with_a_note(tmp_path):
    make_run(tmp_path, "a", 0)
    make_run(tmp_path, "a", 1, test=False)
    report = build_report([tmp_path], split="test")
    (row,) = report.rows
    assert row.seeds == [0] and math.isnan(row.stats["fine/acc"].std)
    assert any("1-20250101-000000 has no test metrics" in w for w in report.warnings)
    header, rows = parse_markdown_table(render_markdown(report))
    assert "±" not in rows[0][header.index("fine/acc (%)")]


# --------------------------------------------------------------------------- baseline


def test_baseline_paired_by_seed(study):
    root, runs = study
    report = build_report([root], baseline="independent")
    row = next(r for r in report.rows if r.spec == "mine")
    base = next(r for r in report.rows if r.spec == "independent")
    assert base.deltas == {}
    for key in report.columns:
        diffs = on_files(runs["mine"], key) - on_files(runs["independent"], key)  # same seed order 0, 1, 2
        d = row.deltas[key]
        assert d.paired
        assert d.value == pytest.approx(diffs.mean())
        assert d.sd == pytest.approx(diffs.std(ddof=1))
        assert d.within_sd == (abs(diffs.mean()) <= diffs.std(ddof=1))
    assert any("paired by seed: shared_conv, mine" in n for n in report.notes)


def test_baseline_unpaired_when_seeds_differ(tmp_path):
    base = [make_run(tmp_path, "base", s) for s in (0, 1, 2)]
    other = [make_run(tmp_path, "other", s) for s in (3, 4)]
    lone = [make_run(tmp_path, "lone", 7)]
    report = build_report([tmp_path], baseline="base")
    rows = {r.spec: r for r in report.rows}
    for key in ("fine/acc", "coarse/loss"):
        a, b = on_files(other, key), on_files(base, key)
        d = rows["other"].deltas[key]
        assert not d.paired
        assert d.value == pytest.approx(a.mean() - b.mean())
        assert d.sd == pytest.approx(math.sqrt(a.std(ddof=1) ** 2 + b.std(ddof=1) ** 2))
        assert d.within_sd == (abs(d.value) <= d.sd)
        # one seed: no spread to judge by
        assert rows["lone"].deltas[key].within_sd is None
        assert rows["lone"].deltas[key].value == pytest.approx(on_files(lone, key)[0] - b.mean())
    header, lines = parse_markdown_table(render_markdown(report))
    lone_cell = next(l for l in lines if l[0] == "lone")[header.index("fine/acc (%)")]
    # one seed and none shared with the baseline: the difference of means, and no verdict
    assert lone_cell.endswith("cannot tell (no shared seeds))")


def test_markers_in_the_table_follow_the_deltas(study):
    root, _ = study
    report = build_report([root], baseline="independent")
    header, lines = parse_markdown_table(render_markdown(report))
    for row in report.rows[1:]:
        line = next(l for l in lines if l[0] == row.spec)
        for key in report.columns:
            raw = line[header.index(key if key.endswith("loss") else f"{key} (%)")]
            comparison = row.comparisons[key]
            assert raw.startswith("**") == (comparison.verdict == "better")
            assert raw.strip("*").endswith(f", {comparison.verdict})")
            sign = "+" if comparison.paired.mean >= 0 else "-"
            assert f"({sign}" in raw
            # three shared seeds: the t-test decides, nothing is "cannot tell"
            assert comparison.shared_seeds == [0, 1, 2] and not comparison.verdict.startswith("cannot tell")


def test_unknown_baseline_is_a_usage_error(study, tmp_path):
    result = runner.invoke(app, ["report", str(study[0]), "-o", str(tmp_path / "out"), "--baseline", "independant"])
    assert result.exit_code == 2
    assert "independant" in result.output and "independent" in result.output
    assert clean_exit(result)


# --------------------------------------------------------------------------- outputs


def test_cli_writes_markdown_csv_and_plots(study, tmp_path):
    root, runs = study
    out = tmp_path / "out"
    result = runner.invoke(app, ["report", str(root), "-o", str(out), "--baseline", "independent"])
    assert result.exit_code == 0, result.output
    assert "independent" in result.output and "mine" in result.output

    report = build_report([root], baseline="independent")
    header, lines = parse_markdown_table((out / "results.md").read_text())
    assert header == [
        "variant",
        "n",
        "epoch",
        "fine/loss",
        "coarse/loss",
        "fine/acc (%)",
        "coarse/acc (%)",
        "fine/top5 (%)",
        "coarse/top5 (%)",
    ]
    assert all(len(line) == len(header) for line in lines)
    names = [l[0] for l in lines]
    # reported rows under the two specs named like the original's, none under "mine"
    assert names == ["independent (baseline)", "↳ reported", "shared_conv", "↳ reported", "mine"]
    reported = lines[1]
    assert reported[header.index("fine/acc (%)")] == "48.86" and reported[header.index("coarse/loss")] == "1.15"
    assert reported[header.index("fine/top5 (%)")] == "-"
    # bold only where the verdict against the baseline is "better"; the mean as printed
    for key in report.columns:
        column = header.index(key if key.endswith("loss") else f"{key} (%)")
        better = [r.label for r in report.rows if key in r.comparisons and r.comparisons[key].verdict == "better"]
        bold = [l[0] for l in lines if l[column].startswith("**")]
        assert bold == better
        for row in report.rows:
            text = next(l for l in lines if l[0].startswith(row.spec))[column].strip("*")
            scale = 1 if key.endswith("loss") else 100
            mean = row.stats[key].mean * scale
            assert text.split(" ±")[0] == (f"{mean:.3f}" if scale == 1 else f"{mean:.2f}")

    with (out / "results.csv").open() as f:
        table = {row["variant"]: row for row in csv.DictReader(f)}
    assert set(table) == {"independent", "shared_conv", "mine"}
    expected = on_files(runs["mine"], "fine/acc")
    assert float(table["mine"]["fine/acc mean"]) == pytest.approx(expected.mean())
    assert float(table["mine"]["fine/acc std"]) == pytest.approx(expected.std(ddof=1))
    assert float(table["independent"]["fine/acc reported"]) == pytest.approx(0.4886)
    assert table["mine"]["fine/acc reported"] == ""
    diffs = on_files(runs["mine"], "coarse/loss") - on_files(runs["independent"], "coarse/loss")
    assert float(table["mine"]["coarse/loss delta"]) == pytest.approx(diffs.mean())
    assert table["mine"]["coarse/loss paired"] == "True"

    check_plots(out, ["fine", "coarse"], n_specs=3)


def check_plots(out: Path, tasks, n_specs: int) -> None:
    from graphc.runtime.report.plots import spec_colours

    specs = [f"s{i}" for i in range(n_specs)]
    spec_rgb = {tuple(round(255 * c) for c in colour) for colour in spec_colours(specs).values()}
    assert len(spec_rgb) == n_specs
    for task in tasks:
        for metric in ("acc", "loss"):
            png = out / f"{task}_{metric}.png"
            with Image.open(png) as image:
                image.load()
                assert image.width >= 600 and image.height >= 400
                rgb = image.convert("RGB")
                colours = rgb.getcolors(maxcolors=1 << 20)
                assert len(colours) > 100  # lines, bands and antialiased text, not a blank canvas
                # every spec's own colour is drawn in every plot (one colour per spec everywhere)
                assert spec_rgb <= {colour for _, colour in colours}
            root = ET.parse(out / f"{task}_{metric}.svg").getroot()
            assert root.tag.endswith("svg")
            assert len(list(root.iter("{http://www.w3.org/2000/svg}path"))) > 10 * n_specs


def test_format_json_and_csv_go_to_stdout(study, tmp_path):
    root, runs = study
    result = runner.invoke(app, ["report", str(root), "-o", str(tmp_path / "j"), "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data == json.loads((tmp_path / "j" / "results.json").read_text())
    assert data["std"] == "sample (ddof=1)"
    mine = next(s for s in data["rows"] if s["variant"] == "mine")
    assert mine["metrics"]["coarse/acc"]["mean"] == pytest.approx(on_files(runs["mine"], "coarse/acc").mean())
    assert mine["metrics"]["coarse/acc"]["by_seed"]["1"] == pytest.approx(on_files(runs["mine"][1:2], "coarse/acc")[0])

    result = runner.invoke(app, ["report", str(root), "-o", str(tmp_path / "c"), "--format", "csv"])
    assert result.exit_code == 0
    assert result.stdout == (tmp_path / "c" / "results.csv").read_text()
    assert not (tmp_path / "c" / "results.json").exists()


def test_hierarchy_metrics_and_other_heads_get_columns(tmp_path):
    make_run(tmp_path, "h", 0, hierarchy=True)
    make_run(tmp_path, "three", 0, tasks=("fine", "coarse", "other"))
    report = build_report([tmp_path])
    # 0.1.0's fine/consistency is read as consistency with the parent its run's acc_from names
    assert report.columns == [
        "fine/loss",
        "coarse/loss",
        "other/loss",
        "fine/acc",
        "coarse/acc",
        "other/acc",
        "fine/top5",
        "coarse/top5",
        "coarse/acc_from_fine",
        "fine/consistency_with_coarse",
    ]
    header, lines = parse_markdown_table(render_markdown(report))
    assert lines[0][header.index("other/loss")] == "-"  # spec "h" has no head "other"


# --------------------------------------------------------------------------- runs in progress


def test_in_progress_runs_count_at_their_last_completed_epoch(tmp_path):
    done = [make_run(tmp_path, "a", s) for s in (0, 1)]
    running = make_run(tmp_path, "a", 2, epochs=3, finished=False)
    make_run(tmp_path, "b", 0, epochs=2, finished=False, name="0-new")
    (tmp_path / "b" / "1-empty").mkdir()
    # What graphc train writes before its first epoch: the spec copy, then config.json.
    (tmp_path / "b" / "1-empty" / "spec.toml").write_text('name = "b"\n')
    write_json(
        tmp_path / "b" / "1-empty" / "config.json",
        {"spec": "b", "spec_sha256": "0" * 64, "seed": 1, "tasks": list(TASKS)},
    )

    report = build_report([tmp_path])
    row = report.rows[0]
    last_val = [json.loads(l) for l in (running / "metrics.jsonl").read_text().splitlines()][-1]
    assert last_val["split"] == "val" and last_val["epoch"] == 3
    expected = np.append(on_files(done, "fine/loss"), last_val["fine/loss"])
    assert row.stats["fine/loss"].mean == pytest.approx(expected.mean())
    assert row.stats["fine/loss"].std == pytest.approx(expected.std(ddof=1))
    assert row.marked and 3 in row.epochs
    assert any("is in progress, counted at epoch 3" in n for n in report.notes)
    assert any("1-empty is in progress and has not completed an epoch" in w for w in report.warnings)

    header, lines = parse_markdown_table(render_markdown(report))
    assert [l[0] for l in lines] == ["a *", "b *"]
    out = tmp_path / "out"
    written = write_report(report, out, json_file=True)
    assert (out / "results.json") in written
    assert json.loads((out / "results.json").read_text())["rows"][0]["runs"][2]["in_progress"] is True
    assert "in progress" in (out / "results.md").read_text()


# --------------------------------------------------------------------------- bad input


def test_no_runs_and_missing_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["report", str(tmp_path / "empty"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1 and "no runs found" in result.output
    result = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such file or directory" in result.output
    for bad in (["--split", "train"], ["--format", "pdf"]):
        result = runner.invoke(app, ["report", str(tmp_path / "empty"), *bad])
        assert result.exit_code == 2, bad
    assert clean_exit(result)


def test_corrupt_metrics_file_is_named_with_its_line_and_skipped(tmp_path):
    good = make_run(tmp_path, "a", 0)
    bad = make_run(tmp_path, "a", 1, finished=False)
    lines = (bad / "metrics.jsonl").read_text().splitlines()
    lines[2] = lines[2][:25]  # a torn line, as a full disk might leave
    (bad / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["report", str(tmp_path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{bad / 'metrics.jsonl'}:3" in result.output.replace("\n", "")
    report = build_report([tmp_path])
    assert report.rows[0].seeds == [0]
    assert report.rows[0].stats["fine/acc"].mean == pytest.approx(on_files([good], "fine/acc")[0])

    # a value that is not a number is named by line too
    lines[2] = json.dumps({"epoch": 2, "split": "train", "fine/acc": "high"})
    (bad / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert any("metrics.jsonl:3: 'fine/acc' should be a number" in w for w in build_report([tmp_path]).warnings)

    # nothing usable left: exit 1 with the reason
    result = runner.invoke(app, ["report", str(bad), "-o", str(out)])
    assert result.exit_code == 1 and "metrics.jsonl:3" in result.output.replace("\n", "")
    (good / "summary.json").write_text("{ not json")
    with pytest.raises(RunError, match="summary.json: not valid JSON"):
        build_report([good])


def test_runs_of_one_spec_with_other_heads_are_skipped(tmp_path):
    for seed in (0, 1):
        make_run(tmp_path, "a", seed)
    odd = make_run(tmp_path, "a", 2, tasks=("fine",))
    report = build_report([tmp_path])
    assert report.rows[0].seeds == [0, 1]
    (warning,) = [w for w in report.warnings if str(odd) in w]
    assert "heads (fine) differ" in warning and "(fine, coarse)" in warning


def test_a_seed_run_twice_counts_once(tmp_path):
    make_run(tmp_path, "a", 0, name="0-old", started="2025-01-01T00:00:00")
    newer = make_run(tmp_path, "a", 0, name="0-new", started="2025-01-02T00:00:00")
    make_run(tmp_path, "a", 0, epochs=2, finished=False, name="0-running", started="2025-01-03T00:00:00")
    make_run(tmp_path, "a", 1)
    report = build_report([tmp_path])
    assert report.rows[0].seeds == [0, 1]
    assert str(newer) in {str(p.run.path) for p in report.rows[0].points}
    ignored = [w for w in report.warnings if "a duplicate of" in w and "was run again" in w]
    assert len(ignored) == 2 and any("0-old" in w for w in ignored) and any("0-running" in w for w in ignored)


# --------------------------------------------------------------------------- end to end


def train_spec(name: str, channels: int) -> str:
    """conftest's tiny spec, renamed, with its own trunk width and a small synthetic data set."""
    return (
        TINY_SPEC.replace('name = "tiny"', f'name = "{name}"')
        .replace("channels = [4]", f"channels = [{channels}]")
        .replace("coarse_classes = 2 }", "coarse_classes = 2, train_size = 128, test_size = 32 }")
    )


def test_end_to_end_with_graphc_train(tmp_path):
    runs = tmp_path / "runs"
    specs = []
    for name, channels in (("small", 4), ("wider", 8)):
        specs.append(tmp_path / f"{name}.toml")
        specs[-1].write_text(train_spec(name, channels))
    result = runner.invoke(
        app,
        [
            "train",
            *map(str, specs),
            "--dataset",
            "synthetic",
            "--epochs",
            "2",
            "--limit-train",
            "64",
            "--limit-val",
            "32",
            "--seeds",
            "2",
            "--out",
            str(runs),
            "--device",
            "cpu",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    result = runner.invoke(app, ["report", str(runs), "-o", str(out), "--baseline", "small", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [s["variant"] for s in data["rows"]] == ["small", "wider"]
    run_dirs = sorted(runs.glob("wider/*"))
    assert len(run_dirs) == 2
    wider = data["rows"][1]
    assert wider["n"] == 2
    for key in ("fine/acc", "coarse/loss"):
        expected = on_files(run_dirs, key)
        assert wider["metrics"][key]["mean"] == pytest.approx(expected.mean())
        assert wider["metrics"][key]["std"] == pytest.approx(expected.std(ddof=1))
        assert "delta" in wider["metrics"][key]
    check_plots(out, ["fine", "coarse"], n_specs=2)
