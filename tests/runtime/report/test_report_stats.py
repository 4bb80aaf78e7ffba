"""A report you can draw conclusions from (issue 20, the report side): the paired difference, its
interval and t-test, McNemar's exact test on per-image predictions, Holm's adjustment, the verdicts
in words, bold only where better, collapsed heads, the study's reported row only on its data,
--reference, variants apart by execution, --sort, --format latex, --eval and --per-seed.

Statistics are checked against scipy and against numbers worked out by hand; runs are written by
hand (graphc.runtime.runs writers), predictions with write_predictions.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from graphc.errors import RunError, UsageError
from graphc.runtime.report.build import build_report, load_run
from graphc.runtime.report.render import per_seed_rows, render_json, render_latex, render_markdown
from graphc.runtime.report.stats import holm, mcnemar_exact, paired_difference, verdict
from graphc.runtime.runs.predictions import HeadPredictions, Predictions, write_predictions
from graphc.runtime.runs.rundir import append_metrics, write_json
from tests.conftest import invoke

TASKS = ("fine", "coarse")


def write_run(
    root: Path,
    spec: str,
    seed: int,
    test: dict,
    *,
    config: dict | None = None,
    summary: dict | None = None,
    correct: dict[str, list[bool]] | None = None,
    indices: list[int] | None = None,
    tasks=TASKS,
    folder: str | None = None,
) -> Path:
    """A finished one-epoch run with test metrics ``test``; with ``correct`` (per head, right or wrong per
    image) its test_predictions.json, true class 0 everywhere and the answer 0 (right) or 1 (wrong)."""
    run = root / spec / (folder or f"{seed}-20260101-000000")
    run.mkdir(parents=True)
    write_json(
        run / "config.json",
        {
            "spec": spec,
            "spec_sha256": "b" * 64,
            "seed": seed,
            "tasks": list(tasks),
            "classes": {t: 4 for t in tasks},
            "data": {"dataset": "synthetic"},
            "started": f"2026-01-01T00:00:{seed:02d}",
            **(config or {}),
        },
    )
    val = {f"{t}/{m}": v for t in tasks for m, v in (("loss", 1.0), ("acc", 0.5))}
    append_metrics(run, [{"epoch": 1, "split": "val", "loss": 2.0, **val}])
    write_json(
        run / "summary.json",
        {
            "spec": spec,
            "seed": seed,
            "status": "completed",
            "epochs_completed": 1,
            "best_epoch": 1,
            "best": {f"val/{k}": v for k, v in val.items()},
            "last": {f"val/{k}": v for k, v in val.items()},
            "test": test,
            **(summary or {}),
        },
    )
    if correct is not None:
        write_predictions(run / "test_predictions.json", predictions(correct, indices))
    return run


def predictions(correct: dict[str, list[bool]], indices: list[int] | None = None) -> Predictions:
    n = len(next(iter(correct.values())))
    heads = {t: HeadPredictions(4, [0] * n, [0 if ok else 1 for ok in c]) for t, c in correct.items()}
    return Predictions("test", "synthetic", indices or list(range(n)), heads)


def answers(right: int, total: int) -> list[bool]:
    return [True] * right + [False] * (total - right)


def acc(fine: float, coarse: float = 0.5) -> dict:
    return {"fine/loss": 2.0 - fine, "fine/acc": fine, "coarse/loss": 1.0, "coarse/acc": coarse}


# --------------------------------------------------------------------------- the statistics


def test_paired_difference_against_scipy_and_by_hand():
    row = {0: 0.70, 1: 0.74, 2: 0.69, 3: 0.75}
    base = {0: 0.65, 1: 0.70, 2: 0.66, 3: 0.70, 9: 0.1}  # seed 9 is not shared: left out
    d = paired_difference(row, base)
    diffs = np.array([0.05, 0.04, 0.03, 0.05])
    assert d.n == 4 and d.mean == pytest.approx(diffs.mean())
    half = scipy_stats.t.ppf(0.975, 3) * diffs.std(ddof=1) / 2
    assert d.ci95 == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    expected = scipy_stats.ttest_rel([0.70, 0.74, 0.69, 0.75], [0.65, 0.70, 0.66, 0.70]).pvalue
    assert d.p == pytest.approx(expected)
    # two seeds, differences 0.02 and 0.08: mean 0.05, sd 0.0424264, t(1) quantile 12.7062
    two = paired_difference({0: 0.52, 1: 0.58}, {0: 0.50, 1: 0.50})
    assert two.mean == pytest.approx(0.05)
    assert two.ci95[1] - two.ci95[0] == pytest.approx(2 * 12.706204736 * 0.0424264069 / math.sqrt(2), rel=1e-6)
    assert two.ci95[0] < 0 < two.ci95[1]  # the wide interval of two seeds spans zero
    assert two.p == pytest.approx(2 * scipy_stats.t.sf(0.05 / (0.0424264069 / math.sqrt(2)), 1), rel=1e-6)
    one = paired_difference({0: 0.6}, {0: 0.5})
    assert one.n == 1 and one.mean == pytest.approx(0.1) and math.isnan(one.p) and math.isnan(one.ci95[0])
    assert paired_difference({0: 0.6}, {1: 0.5}).n == 0


def test_mcnemar_exact_by_hand_and_against_scipy():
    # b = 10, c = 2: p = 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 2 * 79 / 4096
    assert mcnemar_exact(10, 2) == pytest.approx(158 / 4096)
    assert mcnemar_exact(2, 10) == pytest.approx(158 / 4096)
    assert mcnemar_exact(5, 5) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(30, 12) == pytest.approx(scipy_stats.binomtest(30, 42, 0.5).pvalue)


def test_holm_by_hand():
    # sorted 0.01, 0.02, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.02), max(0.04, 1 * 0.04)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    adjusted = holm([0.01, math.nan])
    assert adjusted[0] == pytest.approx(0.01) and math.isnan(adjusted[1])  # nan is not in the family


def test_verdict_rule():
    assert verdict(0.05, 3, 0.01, None) == "better"
    assert verdict(-0.05, 3, 0.01, None) == "worse"
    assert verdict(0.05, 3, 0.2, None) == "no detectable difference"
    # three shared seeds: the t-test decides, however small the image test's p
    assert verdict(0.05, 3, 0.2, 0.0001) == "no detectable difference"
    assert verdict(0.05, 3, 0.01, 0.9) == "better"
    assert verdict(0.05, 2, 0.001, None).startswith("cannot tell (2 shared seeds")  # 2 seeds: t alone never decides
    assert verdict(0.05, 2, 0.3, 0.01) == "better"  # the image test decides with fewer seeds
    assert verdict(0.05, 1, math.nan, 0.2) == "no detectable difference"
    assert verdict(0.05, 0, math.nan, None) == "cannot tell (no shared seeds)"
    assert verdict(0.1, 3, 0.01, None, higher_is_better=False) == "worse"  # a loss that rose
    assert verdict(0.05, 1, math.nan, None, why_not="1 shared seed, different test images") == (
        "cannot tell (1 shared seed, different test images)"
    )


# --------------------------------------------------------------------------- the report's comparisons


def test_two_seeds_with_predictions_pool_mcnemar_and_decide(tmp_path):
    """The issue's case: 2 seeds, a +5-point difference. The t-test alone may not call it; the images can."""
    n = 200
    for seed, (base_right, new_right) in enumerate(((120, 132), (125, 136))):
        # the row gets right every image the baseline does, and some more: b = new - base, c = 0
        write_run(
            tmp_path,
            "base",
            seed,
            acc(base_right / n),
            correct={"fine": answers(base_right, n), "coarse": answers(100, n)},
        )
        write_run(
            tmp_path,
            "new",
            seed,
            acc(new_right / n),
            correct={"fine": answers(new_right, n), "coarse": answers(100, n)},
        )
    report = build_report([tmp_path], split="test", baseline="base")
    new = next(r for r in report.rows if r.spec == "new")
    c = new.comparisons["fine/acc"]
    assert c.shared_seeds == [0, 1]
    assert c.image is not None and (c.image.b, c.image.c, c.image.images) == (12 + 11, 0, 2 * n)
    assert c.image.p == pytest.approx(scipy_stats.binomtest(23, 23, 0.5).pvalue)
    assert c.image.p_holm == pytest.approx(c.image.p)  # one row compared: a family of one
    assert c.paired.mean == pytest.approx((12 + 11) / 2 / n)
    assert c.verdict == "better" and report.is_best(new, "fine/acc")
    # coarse: the same answers, no discordant image: no detectable difference
    assert new.comparisons["coarse/acc"].verdict == "no detectable difference"
    # a loss has no image test: two seeds and only a t-test -> cannot tell
    assert new.comparisons["fine/loss"].verdict.startswith("cannot tell (2 shared seeds, not a per-image metric")
    md = render_markdown(report)
    assert (
        "**" in md.split("\n")[5]
        and "**" not in md.split("\n")[4]
        and "better" in md
        and "McNemar" in md
        and "Holm" in md
    )
    block = json.loads(render_json(report))["rows"][1]["metrics"]["fine/acc"]
    comparison = block["comparison"]
    assert set(comparison) == {
        "baseline", "shared_seeds", "diff_mean", "ci95", "t_p", "t_p_holm", "image_test", "verdict"
    }  # fmt: skip
    assert comparison["image_test"] == {
        "test": "mcnemar_exact", "images": 400, "b": 23, "c": 0, "p": pytest.approx(c.image.p),
        "p_holm": pytest.approx(c.image.p_holm),
    }  # fmt: skip
    assert comparison["verdict"] == "better" and block["best"] is True
    assert block["by_seed"] == {"0": pytest.approx(0.66), "1": pytest.approx(0.68)}


def test_holm_across_rows_and_no_bold_without_a_significant_verdict(tmp_path):
    n = 100
    write_run(tmp_path, "base", 0, acc(0.50), correct={"fine": answers(50, n), "coarse": answers(50, n)})
    # a: 10 images more right (b=10, c=0: p = 2/1024); z: 6 more (p = 2/64): Holm 2 * 0.00195, 1 * 0.03125
    write_run(tmp_path, "a", 0, acc(0.60), correct={"fine": answers(60, n), "coarse": answers(50, n)})
    write_run(tmp_path, "z", 0, acc(0.56), correct={"fine": answers(56, n), "coarse": answers(50, n)})
    report = build_report([tmp_path], split="test", baseline="base")
    rows = {r.spec: r for r in report.rows}
    a, z = rows["a"].comparisons["fine/acc"], rows["z"].comparisons["fine/acc"]
    assert a.image.p == pytest.approx(2 / 1024) and z.image.p == pytest.approx(2 / 64)
    assert a.image.p_holm == pytest.approx(4 / 1024) and z.image.p_holm == pytest.approx(2 / 64)
    assert a.verdict == z.verdict == "better"
    # without a baseline nothing is tested, nothing is bold
    plain = build_report([tmp_path], split="test")
    assert "**" not in render_markdown(plain) and all(not r.comparisons for r in plain.rows)


def test_cannot_tell_on_different_images_or_without_predictions(tmp_path):
    write_run(tmp_path, "base", 0, acc(0.5), correct={"fine": answers(5, 10), "coarse": answers(5, 10)})
    write_run(
        tmp_path, "moved", 0, acc(0.9), correct={"fine": answers(9, 10), "coarse": answers(5, 10)},
        indices=list(range(1, 11)),
    )  # fmt: skip
    write_run(tmp_path, "blind", 0, acc(0.9))  # no predictions file
    report = build_report([tmp_path], split="test", baseline="base")
    rows = {r.spec: r for r in report.rows}
    assert rows["moved"].comparisons["fine/acc"].verdict == "cannot tell (1 shared seed, different test images)"
    assert rows["blind"].comparisons["fine/acc"].verdict == "cannot tell (1 shared seed, no per-image predictions)"
    assert "**" not in render_markdown(report)


def test_damaged_predictions_are_a_warning_not_a_traceback(tmp_path):
    write_run(tmp_path, "base", 0, acc(0.5), correct={"fine": answers(5, 10), "coarse": answers(5, 10)})
    run = write_run(tmp_path, "new", 0, acc(0.9))
    (run / "test_predictions.json").write_text('{"format": "graphc-predictions/1", "indices": "x"}')
    report = build_report([tmp_path], split="test", baseline="base")
    assert any("test_predictions.json" in w and "no image-level test" in w for w in report.warnings)
    assert report.rows[1].comparisons["fine/acc"].verdict.startswith("cannot tell")


# --------------------------------------------------------------------------- collapsed heads


def test_collapsed_heads_are_marked_counted_and_in_json(tmp_path):
    collapsed = {"coarse": {"acc": 0.6, "majority_acc": 0.6, "balanced_acc": 0.5, "chance": 0.5, "why": "constant"}}
    write_run(tmp_path, "s", 0, acc(0.5, 0.6), summary={"collapsed": collapsed})
    write_run(tmp_path, "s", 1, acc(0.5, 0.8), summary={"collapsed": {}})
    report = build_report([tmp_path], split="test")
    (row,) = report.rows
    assert row.collapsed == {"coarse": [0]}
    assert row.stats["coarse/acc"].mean == pytest.approx(0.7)  # still averaged in
    md = render_markdown(report)
    assert "⚠ 1 of 2 seeds collapsed" in md and any("head coarse collapsed" in n for n in report.notes)
    assert json.loads(render_json(report))["rows"][0]["collapsed"] == {"coarse": [0]}
    assert "collapsed" in render_latex(report) and "$^\\dagger$" in render_latex(report)
    assert any("⚠ collapsed" in c for line in per_seed_rows(report)[1] for c in line)


def test_old_runs_are_judged_by_the_collapse_rule(tmp_path):
    # no "collapsed" in summary.json: accuracy 0.70 within a point of the majority class's 0.705
    write_run(tmp_path, "s", 0, {**acc(0.5, 0.70), "coarse/majority_acc": 0.705, "coarse/balanced_acc": 0.4})
    report = build_report([tmp_path], split="test")
    assert report.rows[0].collapsed == {"coarse": [0]}


def test_a_damaged_collapsed_table_is_a_warning(tmp_path):
    write_run(tmp_path, "s", 0, acc(0.5), summary={"collapsed": "yes"})
    report = build_report([tmp_path], split="test")
    assert report.rows[0].points and any("'collapsed'" in w for w in report.warnings)


# --------------------------------------------------------------------------- the study's row, --reference


def test_reported_row_only_on_the_studys_data(tmp_path):
    values = {"fine/loss": 2.0, "fine/acc": 0.5, "coarse/loss": 1.0, "coarse/acc": 0.6}
    write_run(tmp_path / "c10", "shared_conv", 0, values, config={"data": {"dataset": "imagefolder", "root": "/x"}})
    write_run(tmp_path / "syn", "shared_conv", 0, values)
    write_run(tmp_path / "c100", "shared_conv", 0, values, config={"data": {"dataset": "cifar100"}})
    for where in ("c10", "syn"):
        report = build_report([tmp_path / where], split="test")
        assert all(r.reported is None for r in report.rows)
        assert "↳ reported" not in render_markdown(report)
        assert any("original study's numbers are not shown" in n for n in report.notes)
    assert any("imagefolder" in n for n in build_report([tmp_path / "c10"], split="test").notes)
    report = build_report([tmp_path / "c100"], split="test")
    assert report.rows[0].reported is not None and "↳ reported" in render_markdown(report)


def test_reference_table_beside_its_rows(tmp_path):
    write_run(tmp_path / "runs", "mine", 0, acc(0.60))
    ref = tmp_path / "published.csv"
    ref.write_text("row,metric,value,sd,n\nmine,fine/acc,0.55,0.02,5\nmine,coarse/loss,0.9,,\nother,fine/acc,0.4,,\n")
    report = build_report([tmp_path / "runs"], split="test", reference_path=ref)
    assert report.rows[0].reference["values"]["fine/acc"]["value"] == 0.55
    md = render_markdown(report)
    line = next(l for l in md.splitlines() if l.startswith("| ↳ published.csv"))
    assert "55.00 ± 2.00 (row +5.00)" in line and "0.900 (row +0.100)" in line
    assert any("'other'" in n and "matches no row" in n for n in report.notes)
    entry = json.loads(render_json(report))["rows"][0]["metrics"]["fine/acc"]["reference"]
    assert entry["value"] == 0.55 and entry["diff"] == pytest.approx(0.05) and entry["n"] == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("row,metric,value\nmine,fine/acc,abc\n", r"published.csv:2: 'value' is 'abc', not a number"),
        ("row,metric,value\nmine,fine/acc,67.5\n", r"published.csv:2: fine/acc is 67.5, outside \[0, 1\]"),
        ("row,metric,value,sd\nmine,fine/acc,0.5,-1\n", r"published.csv:2: 'sd' is -1, negative"),
        ("row,metric,value,n\nx,fine/acc,0.5,1\nmine,fine/acc,0.5,0\n", r"published.csv:3: 'n' is '0'"),
        ("row,metric,valeu\nmine,fine/acc,0.5\n", r"published.csv:1: the header .* \(unknown: valeu\)"),
        ("row,metric,value\nmine,fine/acc\n", r"published.csv:2: 2 fields, the header has 3"),
        ("row,metric,value\nm,fine/acc,0.5\nm,fine/acc,0.6\n", r"published.csv:3: .* given already on line 2"),
        ("row,metric,value,n\nmine,fine/acc,0.5,\u00b2\n", r"published.csv:2: 'n' is '\u00b2'"),  # "²".isdigit()
        ("row,metric,value\nmine,fine/acc,0.5\n" + "x" * 200_000 + ",a,1\n", r"published.csv:3: not CSV"),
    ],
)
def test_every_bad_reference_line_names_file_and_line(tmp_path, text, message):
    write_run(tmp_path / "runs", "mine", 0, acc(0.60))
    ref = tmp_path / "published.csv"
    ref.write_text(text)
    with pytest.raises(RunError, match=message):
        build_report([tmp_path / "runs"], split="test", reference_path=ref)
    result = invoke("report", tmp_path / "runs", "--split", "test", "--reference", ref, "-o", tmp_path / "o", code=1)
    assert "published.csv:" in result.output


# --------------------------------------------------------------------------- variants, sort, latex


def test_rows_differing_in_execution_are_apart_and_named(tmp_path):
    write_run(tmp_path, "s", 0, acc(0.5), config={"threads": 1, "torch_version": "2.4.0"})
    write_run(tmp_path, "s", 1, acc(0.6), config={"threads": 4, "torch_version": "2.4.0"}, folder="1-a")
    write_run(tmp_path, "s", 2, acc(0.7), config={"threads": 4, "torch_version": "2.5.1", "device": "cuda:1"})
    labels = [r.label for r in build_report([tmp_path], split="test").rows]
    assert labels == [
        "s [device=cuda, threads=4, torch_version=2.5.1]",
        "s [threads=1, torch_version=2.4.0]",
        "s [threads=4, torch_version=2.4.0]",
    ]
    # a record written before a field existed reads like its default
    write_run(tmp_path / "old", "s", 0, acc(0.5))
    write_run(tmp_path / "old", "s", 1, acc(0.5), config={"precision": "fp32", "memory_format": "contiguous"})
    assert [r.label for r in build_report([tmp_path / "old"], split="test").rows] == ["s"]


def test_sort_by_a_metric(tmp_path):
    for spec, fine in (("a", 0.5), ("b", 0.7), ("c", 0.6)):
        write_run(tmp_path, spec, 0, acc(fine))
    assert [r.spec for r in build_report([tmp_path], split="test", sort="fine/acc").rows] == ["b", "c", "a"]
    assert [r.spec for r in build_report([tmp_path], split="test", sort="fine/loss").rows] == ["b", "c", "a"]
    with pytest.raises(UsageError, match="--sort 'fine/ac'.*fine/acc"):
        build_report([tmp_path], split="test", sort="fine/ac")


def test_latex_structure(tmp_path):
    n = 100
    write_run(tmp_path, "base", 0, acc(0.5), correct={"fine": answers(50, n), "coarse": answers(50, n)})
    write_run(tmp_path, "a_b&c%", 0, acc(0.7), correct={"fine": answers(70, n), "coarse": answers(50, n)})
    write_run(tmp_path, "d$e", 0, acc(0.5), correct={"fine": answers(50, n), "coarse": answers(50, n)})
    report = build_report([tmp_path], split="test", baseline="base")
    tex = render_latex(report)
    body = re.sub(r"\\[{}%$&_#]", "", tex)  # escaped braces do not count
    assert body.count("{") == body.count("}")
    spec = re.search(r"\\begin\{tabular\}\{([lr]+)\}", tex)[1]
    rows = tex.split("\\midrule\n")[1].split("\\bottomrule")[0].strip().splitlines()
    assert len(rows) == len(report.rows) == 3
    header = tex.split("\\toprule\n")[1].split("\n")[0]
    for line in [header, *rows]:
        assert line.endswith("\\\\")
        assert len(re.split(r"(?<!\\)&", line)) == len(spec)
    assert "a\\_b\\&c\\%" in tex and "d\\$e" in tex
    bold = [r for r in rows if "\\textbf" in r]
    assert len(bold) == 1 and bold[0].startswith("a\\_b")  # only the verdict "better": fine/acc of a_b&c%
    assert "\\toprule" in tex and "\\bottomrule" in tex and "McNemar" in tex and "$n" in tex


def test_cli_latex_sort_and_per_seed(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path / "runs", "a", seed, acc(0.5 + seed / 10))
        write_run(tmp_path / "runs", "b", seed, acc(0.4))
    result = invoke("report", tmp_path / "runs", "--split", "test", "--format", "latex", "--sort", "fine/acc",
                    "-o", tmp_path / "o")  # fmt: skip
    assert "\\begin{tabular}" in result.stdout and (tmp_path / "o" / "results.tex").is_file()
    result = invoke("report", tmp_path / "runs", "--split", "test", "--per-seed", "-o", tmp_path / "o")
    assert "per seed" in result.stdout and "60.00" in result.stdout  # a's seed 1
    invoke("report", tmp_path / "runs", "--sort", "nope", "-o", tmp_path / "o", code=2)


# --------------------------------------------------------------------------- --eval


def save_eval(
    run: Path, name: str, metrics: dict, correct: dict[str, list[bool]] | None = None, subset: dict | None = None
) -> None:
    """A saved evaluation as graphc eval --save writes it (graphc.runtime.runs.evaluations)."""
    from graphc.runtime.runs.evaluations import Evaluation, write_evaluation

    answered = predictions(correct or {"fine": answers(5, 10), "coarse": answers(5, 10)})
    evaluation = Evaluation(
        name, "test", "best.pt", metrics, len(answered.indices), subset or {"limit": None, "seed": 0, "all": True},
        "0.4.0", "2026-12-06T12:00:00+00:00", {}, answered, run / "evaluations" / name,
    )  # fmt: skip
    write_evaluation(run, evaluation)


def test_eval_compares_saved_evaluations(tmp_path):
    n = 100
    base = write_run(tmp_path, "base", 0, acc(0.1))
    new = write_run(tmp_path, "new", 0, acc(0.1))
    save_eval(base, "full", acc(0.5), {"fine": answers(50, n), "coarse": answers(50, n)})
    save_eval(new, "full", acc(0.7), {"fine": answers(70, n), "coarse": answers(50, n)})
    report = build_report([tmp_path], split="test", evaluation="full", baseline="base")
    rows = {r.spec: r for r in report.rows}
    assert rows["new"].stats["fine/acc"].mean == pytest.approx(0.7)  # the evaluation's, not summary's 0.1
    assert rows["new"].comparisons["fine/acc"].image.b == 20 and rows["new"].comparisons["fine/acc"].verdict == "better"
    assert "saved evaluation 'full'" in render_markdown(report)
    with pytest.raises(UsageError, match="--split test"):
        build_report([tmp_path], evaluation="full")
    with pytest.raises(UsageError, match="--eval .*folder name"):
        build_report([tmp_path], split="test", evaluation="../x")
    with pytest.raises(RunError, match="none of the runs"):
        build_report([tmp_path], split="test", evaluation="other")


def test_eval_damaged_file_is_a_warning(tmp_path):
    good = write_run(tmp_path, "good", 0, acc(0.1))
    bad = write_run(tmp_path, "bad", 0, acc(0.1))
    save_eval(good, "e", acc(0.5))
    save_eval(bad, "e", {"fine/acc": 57.0})
    report = build_report([tmp_path], split="test", evaluation="e")
    assert [r.spec for r in report.rows if r.points] == ["good"]
    assert any("evaluation.json" in w and "outside [0, 1]" in w for w in report.warnings)


# --------------------------------------------------------------------------- diagnostics pairs


def test_old_cosine_pair_names_are_read_in_sorted_order(tmp_path):
    run = write_run(tmp_path, "s", 0, acc(0.5))
    append_metrics(run, [{"epoch": 2, "split": "train", "loss": 1.0, "diag/trunk/cos/fine:coarse": 0.3}])
    row = next(r for r in load_run(run).rows if r["split"] == "train")
    assert "diag/trunk/cos/coarse:fine" in row and "diag/trunk/cos/fine:coarse" not in row


def test_each_cosine_pair_has_its_own_marker(tmp_path):
    from graphc.runtime.report.plots import diagnostic_figure, diagnostic_figures

    heads = ("a", "b", "c", "d", "e")
    pairs = [f"{x}:{y}" for i, x in enumerate(heads) for y in heads[i + 1 :]]  # ten pairs
    run = write_run(tmp_path, "s", 0, acc(0.5))
    append_metrics(
        run,
        [{"epoch": 2, "split": "train", "loss": 1.0, **{f"diag/trunk/cos/{p}": 0.1 * i for i, p in enumerate(pairs)}}],
    )
    groups = {"s": [load_run(run)]}
    (name, panels), *_ = diagnostic_figures(groups).items()
    fig = diagnostic_figure(groups, name, panels, {"s": (0.1, 0.2, 0.3)})
    cos_axis = next(ax for ax in fig.axes if ax.get_ylabel() == "cos")
    markers = [line.get_marker() for line in cos_axis.get_legend().get_lines()]
    assert len(markers) == len(pairs) == len(set(markers))


def test_aggregator_statistics_are_plotted_as_plain_numbers(tmp_path):
    """[train] aggregator logs agg/weight/TASK, agg/conflict and agg/norm_ratio on training rows: each gets
    its own learning-curve figure, on its own scale (not as a percentage)."""
    from graphc.runtime.report.plots import describe, metric_figure, plotted_metrics

    run = write_run(tmp_path, "s", 0, acc(0.5))
    agg = {"agg/weight/fine": 0.7, "agg/weight/coarse": 1.3, "agg/conflict": 0.25, "agg/norm_ratio": 0.9}
    append_metrics(run, [{"epoch": 2, "split": "train", "loss": 1.0, **agg}])
    groups = {"s": [load_run(run)]}
    keys = plotted_metrics(groups)
    assert [k for k in keys if k.startswith("agg/")] == [
        "agg/weight/fine", "agg/weight/coarse", "agg/conflict", "agg/norm_ratio"
    ]  # fmt: skip
    assert "conflict" in describe("agg/conflict")[0] and "(%)" not in describe("agg/norm_ratio")[1]
    fig = metric_figure(groups, "agg/conflict", {"s": (0.1, 0.2, 0.3)})
    (line, *_) = fig.axes[0].get_lines()
    assert 0.25 in list(line.get_ydata())  # plotted as logged, not x100


def _spec_copy(run: Path, fine_weight: float) -> None:
    (run / "spec.toml").write_text(
        '[[nodes]]\nname = "image"\nkind = "input"\nshape = [3, 8, 8]\n\n'
        '[[nodes]]\nname = "fine_head"\nkind = "head"\ninput = "image"\ntask = "fine"\nclasses = 4\n'
        f"loss_weight = {fine_weight}\n\n"
        '[[nodes]]\nname = "coarse_head"\nkind = "head"\ninput = "image"\ntask = "coarse"\nclasses = 4\n',
        encoding="utf-8",
    )


def test_weighted_acc_is_compared_only_between_rows_that_weight_the_heads_alike(tmp_path):
    """weighted_acc averages the heads' accuracies by their loss_weight: rows that weight them differently
    average different things, so no difference or verdict is given between them (mean_acc still is)."""
    for seed in (0, 1, 2):
        for spec, weight, fine in (("base", 1.0, 0.5), ("same", 1.0, 0.6), ("heavy", 4.0, 0.6)):
            metrics = {**acc(fine + seed / 100), "mean_acc": 0.5 + seed / 100, "weighted_acc": 0.5 + seed / 100}
            _spec_copy(write_run(tmp_path, spec, seed, metrics), weight)
    report = build_report([tmp_path], split="test", baseline="base")
    rows = {r.spec: r for r in report.rows}
    assert "weighted_acc" in rows["same"].comparisons and "mean_acc" in rows["same"].comparisons
    assert "weighted_acc" not in rows["heavy"].comparisons and "mean_acc" in rows["heavy"].comparisons
    assert any("weighted_acc of heavy is not compared" in note for note in report.notes)


def test_eval_rows_are_compared_by_the_images_the_evaluations_measured(tmp_path):
    """With --eval, what decides comparability is the saved evaluations' images, not the training run's
    own test pass: runs trained with different --limit-test but evaluated on all images compare, runs
    evaluated on different subsets do not."""
    for seed in (0, 1, 2):
        base = write_run(tmp_path / "a", "base", seed, acc(0.1), config={"limit_test": 500})
        whole = write_run(tmp_path / "a", "whole", seed, acc(0.1))
        save_eval(base, "e", acc(0.5 + seed / 100))
        save_eval(whole, "e", acc(0.6 + seed / 50))
    report = build_report([tmp_path / "a"], split="test", evaluation="e", baseline="base")
    rows = {r.spec: r for r in report.rows}
    assert "fine/acc" in rows["whole"].comparisons  # both evaluated on every test image
    assert any("[limit_test=N] is the training run's own test pass" in n for n in report.notes)
    for seed in (0, 1, 2):
        base = write_run(tmp_path / "b", "base", seed, acc(0.1))
        other = write_run(tmp_path / "b", "other", seed, acc(0.1))
        save_eval(base, "e", acc(0.5 + seed / 100), subset={"limit": 50, "seed": 0, "all": False})
        save_eval(other, "e", acc(0.7 + seed / 50), subset={"limit": 100, "seed": 0, "all": False})
    report = build_report([tmp_path / "b"], split="test", evaluation="e", baseline="base")
    assert not {r.spec: r for r in report.rows}["other"].comparisons  # other images: never a verdict


def test_differences_without_spread_are_not_called_significant():
    """Three seeds that each got exactly one more of 200 images right: the t statistic is infinite, not
    evidence. No t-test p; without an image test the verdict cannot tell; with one, it decides."""
    paired = paired_difference({0: 0.505, 1: 0.605, 2: 0.705}, {0: 0.5, 1: 0.6, 2: 0.7})
    assert math.isnan(paired.p) and paired.mean == pytest.approx(0.005)
    assert verdict(paired.mean, 3, paired.p, None, why_not="no spread").startswith("cannot tell (no spread")
    assert verdict(paired.mean, 3, paired.p, mcnemar_exact(3, 0)) == "no detectable difference"  # p = 0.25
