"""graphc report prints what the runs stored, or says why a run is left out: run folders are untrusted.

An epoch logged twice with other numbers, an accuracy outside [0, 1], an unreadable or undecodable
file: the run is skipped with a warning naming the file (no traceback), the others are reported.
``--format json`` is valid JSON (NaN and infinity as null, with a note); strings from runs are
printed escaped (control and bidirectional characters); tags are read in Unicode NFC; a tag that
looks like TeX does not break the plots.
"""

from __future__ import annotations

import json
import math
import unicodedata
from pathlib import Path

import pytest

from graphc.errors import printable
from graphc.runtime.report.build import is_fraction
from tests.conftest import invoke


def make_run(root: Path, name: str, seed: int = 0, tag: str | None = None, accs=(0.5, 0.6), summary=True) -> Path:
    """A small finished run as graphc train writes it (one head 'fine', len(accs) epochs)."""
    run = root / name / f"{seed}-20250101-000000"
    run.mkdir(parents=True)
    config = {"spec": "tiny", "spec_sha256": "0" * 64, "seed": seed, "tasks": ["fine"], "started": f"2025-{seed}"}
    if tag is not None:
        config["tag"] = tag
    (run / "config.json").write_text(json.dumps(config))
    (run / "spec.toml").write_text('name = "tiny"\n')
    rows = []
    for epoch, acc in enumerate(accs, 1):
        for split in ("train", "val"):
            rows.append(
                {"epoch": epoch, "split": split, "loss": 1.0 / epoch, "fine/loss": 1.0 / epoch, "fine/acc": acc}
            )
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if summary:
        last = {"val/fine/loss": 1.0 / len(accs), "val/fine/acc": accs[-1]}
        (run / "summary.json").write_text(
            json.dumps(
                {
                    "status": "completed",
                    "epochs_completed": len(accs),
                    "best_epoch": len(accs),
                    "best": last,
                    "last": last,
                }
            )
        )
    return run


def report(*args, code: int = 0):
    return invoke("report", *args, code=code)


# --------------------------------------------------------------------------- what is stored, as stored


def test_an_epoch_logged_twice_with_other_numbers_skips_the_run(tmp_path):
    good = make_run(tmp_path, "good")
    bad = make_run(tmp_path, "bad", seed=1)
    with (bad / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"epoch": 2, "split": "val", "loss": 0.1, "fine/loss": 0.1, "fine/acc": 0.99}) + "\n")
    result = report(tmp_path, "-o", tmp_path / "out")
    assert f"skipped {bad}" in result.stderr
    assert f"{bad / 'metrics.jsonl'}:5: epoch 2 (val) is logged again with other numbers than on line 4" in " ".join(
        result.stderr.split()
    )
    assert "99.00" not in result.stdout and "60.00" in result.stdout  # the good run's numbers only
    assert str(good) not in result.stderr


def test_a_row_repeated_exactly_is_counted_once_with_a_warning(tmp_path):
    run = make_run(tmp_path, "run", accs=(0.5, 0.6))
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([*lines, lines[-1]]) + "\n")
    result = report(tmp_path, "-o", tmp_path / "out", "--format", "json")
    assert "lines 5 repeat earlier rows exactly" in " ".join(result.stderr.split())
    row = json.loads(result.stdout)["rows"][0]
    assert row["n"] == 1 and row["metrics"]["fine/acc"]["mean"] == 0.6


@pytest.mark.parametrize("where", ["metrics", "summary"])
def test_an_accuracy_outside_0_1_is_not_printed_as_thousands_of_percent(tmp_path, where):
    make_run(tmp_path, "good")
    bad = make_run(tmp_path, "bad", seed=1, summary=where == "summary")
    if where == "metrics":  # an in-progress run: its last epoch is read from metrics.jsonl
        text = (bad / "metrics.jsonl").read_text().replace('"fine/acc": 0.6', '"fine/acc": 57.0')
        (bad / "metrics.jsonl").write_text(text)
        culprit = f"{bad / 'metrics.jsonl'}:3: 'fine/acc' is 57.0, outside [0, 1]"  # epoch 2's train row
    else:
        summary = json.loads((bad / "summary.json").read_text())
        summary["best"]["val/fine/acc"] = 57.0
        (bad / "summary.json").write_text(json.dumps(summary))
        culprit = f"{bad / 'summary.json'}: 'best': 'val/fine/acc' is 57.0, outside [0, 1]"
    result = report(tmp_path, "-o", tmp_path / "out")
    assert culprit in " ".join(result.stderr.split())
    assert "5700" not in result.stdout and "5700" not in (tmp_path / "out" / "results.md").read_text()
    # alone, it leaves nothing to report: a message, exit 1
    only = report(bad, "-o", tmp_path / "out2", code=1)
    assert "outside [0, 1]" in only.stderr


def test_fractions_are_the_accuracies_not_losses_weights_or_diagnostics():
    for key in ("fine/acc", "val/fine/acc", "coarse/acc_from_fine", "fine/consistency_with_coarse", "mean_acc"):
        assert is_fraction(key), key
    for key in ("fine/loss", "lr", "images_per_s", "weight/fine", "diag/trunk/norm/acc", "train/loss"):
        assert not is_fraction(key), key


def test_json_output_is_valid_json_with_nan_and_infinity_as_null(tmp_path):
    run = make_run(tmp_path, "run")
    config = json.loads((run / "config.json").read_text())
    config["train"] = {"optimizer": {"lr": math.inf}, "weight_decay": math.nan}  # json writes Infinity, NaN
    (run / "config.json").write_text(json.dumps(config))
    result = report(tmp_path, "-o", tmp_path / "out", "--format", "json")

    def refuse(constant):
        raise AssertionError(f"{constant} in the JSON output")

    for text in (result.stdout, (tmp_path / "out" / "results.json").read_text()):
        data = json.loads(text, parse_constant=refuse)  # strict: NaN, Infinity are not JSON
        assert "null" in data["note"]
        row = data["rows"][0]
        assert row["metrics"]["fine/acc"]["std"] is None  # one seed: no sd
        assert row["settings"]["lr"] is None and row["settings"]["weight_decay"] is None


# --------------------------------------------------------------------------- strings from runs


def test_printable_escapes_bidirectional_controls():
    for char in ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]:
        assert printable(f"a{char}b") == f"a\\u{ord(char):04x}b"
    assert printable("\u200e\u200f\u061c") == "\\u200e\\u200f\\u061c"
    assert printable("x\u2028y\u2029") == "x\\u2028y\\u2029"
    assert printable("café ✓ العربية") == "café ✓ العربية"  # letters of any script stay


def test_a_tag_with_terminal_and_bidi_controls_is_printed_escaped(tmp_path):
    make_run(tmp_path, "run", tag="evil\x1b[2J\u202egnp.exe")
    result = report(tmp_path, "-o", tmp_path / "out")
    for text in (result.stdout, (tmp_path / "out" / "results.md").read_text()):
        assert "evil\\x1b[2J\\u202egnp.exe" in text
        assert "\x1b" not in text and "\u202e" not in text


def test_tags_differing_only_in_normal_form_are_one_row_with_a_warning(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    make_run(tmp_path, "a", seed=0, tag=nfc)
    make_run(tmp_path, "b", seed=1, tag=nfd)
    result = report(tmp_path, "-o", tmp_path / "out", "--format", "json")
    rows = json.loads(result.stdout)["rows"]
    assert [(r["tag"], r["n"]) for r in rows] == [(nfc, 2)]
    assert "differ only in Unicode normal form" in result.stderr and "'caf\\xe9'" in result.stderr


def test_a_tag_that_looks_like_tex_does_not_break_the_plots(tmp_path):
    make_run(tmp_path, "a", seed=0, tag="$\\frac{x$")
    make_run(tmp_path, "b", seed=0, tag="50$ and $^_$")
    result = report(tmp_path, "-o", tmp_path / "out")
    # mathtext would have raised ValueError ("Expected \frac{num}{den}") while drawing the legend
    assert (tmp_path / "out" / "fine_acc.svg").is_file() and (tmp_path / "out" / "fine_acc.png").is_file()
    assert "fine_acc.png" in (tmp_path / "out" / "results.md").read_text()
    assert "$\\frac{x$" in result.stdout


# --------------------------------------------------------------------------- unreadable files


@pytest.mark.parametrize("name", ["metrics.jsonl", "config.json", "summary.json"])
def test_an_undecodable_file_skips_the_run_naming_it(tmp_path, name):
    make_run(tmp_path, "good")
    bad = make_run(tmp_path, "bad", seed=1)
    (bad / name).write_bytes(b'{"epoch": 1, "split": "val", "fine/acc": "\xff\xfe"}\n')
    result = report(tmp_path, "-o", tmp_path / "out")
    assert f"skipped {bad}: {bad / name}:" in result.stderr
    assert "UTF-8" in result.stderr or "not valid JSON" in result.stderr


@pytest.mark.parametrize("name", ["metrics.jsonl", "config.json", "summary.json"])
def test_an_unreadable_file_skips_the_run_naming_it(tmp_path, name, monkeypatch):
    make_run(tmp_path, "good")
    bad = make_run(tmp_path, "bad", seed=1)
    real = Path.read_text

    def read_text(self, *args, **kwargs):  # mode 000 (the tests run as root, who may read anything)
        if self == bad / name:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    result = report(tmp_path, "-o", tmp_path / "out")
    assert f"skipped {bad}: {bad / name}: cannot be read (Permission denied)" in result.stderr


def test_a_directory_where_metrics_jsonl_goes_skips_the_run(tmp_path):
    make_run(tmp_path, "good")
    bad = make_run(tmp_path, "bad", seed=1, summary=False)
    (bad / "metrics.jsonl").unlink()
    (bad / "metrics.jsonl").mkdir()
    result = report(tmp_path, "-o", tmp_path / "out")
    assert f"skipped {bad}: {bad / 'metrics.jsonl'}: cannot be read" in result.stderr


def test_plot_file_names_from_odd_task_names_stay_in_the_output_folder(tmp_path):
    """Figure files are named after metric keys, which come from config.json and metrics.jsonl."""
    run = make_run(tmp_path, "run")
    config = json.loads((run / "config.json").read_text())
    odd = ["..", "nul\x00l", "esc\x1b[31m", "sp ace"]
    config["tasks"] = ["fine", *odd]
    (run / "config.json").write_text(json.dumps(config))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.update({f"{task}/acc": 0.5 for task in odd})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    report(tmp_path, "-o", out)
    names = sorted(p.name for p in out.iterdir())
    assert "fine_acc.png" in names  # plain keys keep their plain names
    assert all(n.isprintable() and not n.startswith(".") for n in names), names
    assert len([n for n in names if n.endswith(".png")]) == 2 + len(odd)  # fine_acc, fine_loss, one per odd key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run"]  # nothing written beside the folder
