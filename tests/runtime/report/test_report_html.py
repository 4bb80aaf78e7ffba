"""graphc report --format html: results.html, one self-contained page.

The page's tables are read back with the standard library's HTML parser and checked against the
numbers of the run files (means, per-seed values, n), its verdicts against report_dict's, its
strings from run files as inert text, and its pictures as SVG it carries itself. One slow test
opens a report of real tiny runs in headless Chromium, driven over the DevTools protocol (on a
pipe: no network, no extra packages): no console errors or exceptions, no request leaves the
file, every table and picture is in the rendered DOM (each picture decoded), and a real mouse
click on a header sorts the rows (numbers as numbers, missing values last).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import graphc.runtime.report.html as report_html
from graphc.runtime.report import FORMATS
from graphc.runtime.report.build import build_report
from graphc.runtime.report.render import report_dict
from graphc.runtime.report.write import write_report
from graphc.runtime.runs.rundir import append_metrics, write_json
from tests.conftest import TINY_SPEC, invoke, train

COARSE_HEAD = '[[nodes]]\nname = "coarse_head"\nkind = "head"\ninput = "trunk"\ntask = "coarse"\n\n'
EVIL = "<img src=x onerror=alert(1)></script><script>alert(2)</script>"


def fake_run(
    root: Path, spec: str, seed: int, values: dict[str, float], tag: str | None = None, collapsed: tuple = ()
) -> Path:
    """A finished two-epoch run as graphc train writes it, whose validation metrics at its best (last)
    epoch and test metrics are ``values`` (keys TASK/metric), with the heads ``collapsed`` in its test
    pass; no spec.toml, so no diagram can be drawn of it."""
    run = root / spec / f"{seed}-20250101-000000"
    run.mkdir(parents=True)
    tasks = list(dict.fromkeys(k.split("/")[0] for k in values))
    config = {"spec": spec, "spec_sha256": "0" * 64, "seed": seed, "tasks": tasks, "started": f"2025-01-0{seed + 1}"}
    if tag is not None:
        config["tag"] = tag
    write_json(run / "config.json", config)
    for epoch in (1, 2):
        scale = 1.0 if epoch == 2 else 0.5
        row = {k: v * scale for k, v in values.items()}
        total = sum(v for k, v in row.items() if k.endswith("/loss"))
        append_metrics(run, [{"epoch": epoch, "split": s, "loss": total, **row} for s in ("train", "val")])
    best = {f"val/{k}": v for k, v in values.items()} | {
        "val/loss": sum(values[k] for k in values if k.endswith("loss"))
    }
    write_json(
        run / "summary.json",
        {
            "status": "completed",
            "epochs_completed": 2,
            "best_epoch": 2,
            "best": best,
            "last": best,
            "test": {k[len("val/") :]: v for k, v in best.items()},
            "collapsed": {task: {"why": "one class for every image"} for task in collapsed},
        },
    )
    return run


def study(root: Path) -> Path:
    """Two variants of three seeds with two heads, and one with the fine head only (its coarse cells are
    missing); base's coarse head collapsed in the test pass of seeds 1 and 2."""
    rng = np.random.default_rng(0)
    for spec, acc in (("base", 0.4), ("wide", 0.6)):
        for seed in range(3):
            fake_run(
                root,
                spec,
                seed,
                {
                    "fine/loss": float(rng.uniform(1, 2)),
                    "fine/acc": acc + float(rng.uniform(0, 0.1)),
                    "coarse/loss": float(rng.uniform(0.5, 1)),
                    "coarse/acc": acc + float(rng.uniform(0, 0.2)),
                },
                collapsed=("coarse",) if spec == "base" and seed > 0 else (),
            )
    for seed in range(2):
        fake_run(root, "solo", seed, {"fine/loss": 1.5 + seed, "fine/acc": 0.3 + 0.1 * seed})
    return root


# --------------------------------------------------------------------------- reading the page back


class Page(HTMLParser):
    """The parts of results.html the tests read: tables (caption, header cells, rows of cells with their
    attributes and text), images, scripts, the CSP, and every element's tag and attributes."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tables: list[dict] = []
        self.images: list[dict] = []
        self.scripts: list[str] = []
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self._cell: dict | None = None
        self._in: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.elements.append((tag, attrs))
        if tag in ("meta", "img", "br", "link", "input"):  # void elements
            if tag == "img":
                self.images.append(attrs)
            return
        self._in.append(tag)
        if tag == "table":
            self.tables.append({"attrs": attrs, "caption": "", "header": [], "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th") and self.tables:
            self._cell = {"tag": tag, "attrs": attrs, "text": ""}
            self.tables[-1]["rows"][-1].append(self._cell)
        elif tag == "script":
            self.scripts.append("")

    def handle_endtag(self, tag):
        while self._in:
            if self._in.pop() == tag:
                break
        if tag in ("td", "th"):
            self._cell = None
        if tag == "thead" and self.tables:
            self.tables[-1]["header"] = self.tables[-1]["rows"].pop()

    def handle_data(self, data):
        self.text.append(data)
        if self._in and self._in[-1] == "script":
            self.scripts[-1] += data
        elif "caption" in self._in and self.tables:
            self.tables[-1]["caption"] += data
        elif self._cell is not None:
            self._cell["text"] += data


def head_tables(page: Page) -> dict[str, dict]:
    return {t["attrs"]["data-head"]: t for t in page.tables if "sortable" in t["attrs"].get("class", "")}


def column(table: dict, key: str) -> int:
    return [c["attrs"].get("data-key") for c in table["header"]].index(key)


def rows_by_label(table: dict) -> dict[str, list[dict]]:
    return {row[0]["attrs"]["data-sort"]: row for row in table["rows"]}


# --------------------------------------------------------------------------- the tables


def test_one_sortable_table_per_head_with_means_seeds_and_n(tmp_path):
    report = build_report([study(tmp_path / "runs")])
    page = Page(report_html.render_html(report))
    tables = head_tables(page)
    assert list(tables) == ["fine", "coarse"]
    for head, table in tables.items():
        assert table["caption"].startswith(f"Head {head}:") and "sort" in table["caption"]
        assert [c["text"].strip() for c in table["header"][:3]] == ["variant", "n", "epoch"]
        assert list(rows_by_label(table)) == ["base", "solo", "wide"]
    data = report_dict(report)
    for row in data["rows"]:
        for key, metric in row["metrics"].items():
            cell = rows_by_label(tables[key.split("/")[0]])[row["variant"]][column(tables[key.split("/")[0]], key)]
            # the sort key is the mean as stored; the files' own numbers agree
            runs = sorted((tmp_path / "runs").glob(f"{row['spec']}/*"))
            on_files = [json.loads((r / "summary.json").read_text())["best"][f"val/{key}"] for r in runs]
            assert float(cell["attrs"]["data-sort"]) == pytest.approx(np.mean(on_files))
            assert metric["n"] == len(on_files)
            shown = cell["text"].split("n=")[0]
            assert report_html.format_value(key, float(np.mean(on_files))) in shown
            if len(on_files) > 1:
                assert f"± {report_html.format_value(key, float(np.std(on_files, ddof=1)))}" in shown
            # each seed's value on hover (title) and in the cell's <details>, with n
            for seed, value in enumerate(on_files):
                text = f"seed {seed}: {report_html.format_value(key, value)}"
                assert text in cell["attrs"]["title"] and text in cell["text"]
            assert f"n={len(on_files)}" in cell["text"]
    # solo has no coarse head: its cells are missing, sorted last (empty data-sort)
    solo = rows_by_label(tables["coarse"])["solo"]
    assert [c["attrs"]["data-sort"] for c in solo[3:]] == ["", ""] and solo[3]["text"] == "-"
    # the variants table and the report's caption and notes
    assert any(t["caption"].startswith("What each row is") for t in page.tables)
    assert data["caption"][:60] in "".join(page.text)


def test_verdicts_against_the_baseline_with_a_legend(tmp_path):
    report = build_report([study(tmp_path / "runs")], baseline="base")
    text = report_html.render_html(report)
    page = Page(text)
    data = report_dict(report)
    verdicts = {
        (row["variant"], key): m["comparison"]["verdict"]
        for row in data["rows"]
        for key, m in row["metrics"].items()
        if m.get("comparison")
    }
    assert verdicts, "report_dict gives a comparison per metric of each row compared with the baseline"
    tables = head_tables(page)
    for (variant, key), verdict in verdicts.items():
        table = tables[key.split("/")[0]]
        cell = rows_by_label(table)[variant][column(table, key)]
        word, _, why = verdict.partition(" (")  # "cannot tell (why)": the reason written beneath the word
        assert word in cell["text"] and why.rstrip(")") in cell["text"]
        assert f"v-{report_html.verdict_class(verdict)}" in cell["attrs"]["class"]
    legend = text[text.index('id="legend"') : text.index("</section>", text.index('id="legend"'))]
    for name in ("better", "worse", "no detectable difference", "cannot tell"):
        assert f">{name}</span>" in legend
    # the baseline's own row is marked, and has no verdict
    base = rows_by_label(tables["fine"])["base"]
    assert "baseline" in base[0]["text"] and "baseline" in base[3]["text"]
    assert not any(v in base[3]["text"] for v in ("better", "worse", "cannot tell"))


def test_without_comparisons_the_differences_and_their_marks_are_shown(tmp_path, monkeypatch):
    """report_dict from before the statistical comparison (a delta per metric, no verdict): the page
    shows the differences with ~ and ? and explains those, not verdicts."""

    def older(report):
        data = report_dict(report)
        for row in data["rows"]:
            row.pop("collapsed", None)
            for metric in row["metrics"].values():
                metric.pop("comparison", None)
                metric["delta"] = {"value": 0.01, "sd": 0.02, "paired": True, "within_sd": True}
        return data

    monkeypatch.setattr(report_html, "report_dict", older)
    report = build_report([study(tmp_path / "runs")], baseline="base")
    text = report_html.render_html(report)
    cell = rows_by_label(head_tables(Page(text))["fine"])["wide"][4]
    assert "+1.00 ~" in cell["text"] and 'class="verdict' not in text
    assert "~: within one standard deviation" in text


def test_collapsed_heads_are_marked_in_their_head_only(tmp_path):
    report = build_report([study(tmp_path / "runs")], split="test")
    assert report_dict(report)["rows"][0]["collapsed"] == {"coarse": [1, 2]}
    page = Page(report_html.render_html(report))
    tables = head_tables(page)
    base_coarse = rows_by_label(tables["coarse"])["base"]
    assert "collapsed" in base_coarse[0]["text"] and "seed 1, 2" in "".join(
        e[1].get("title", "") for e in page.elements
    )
    assert all("2 of 3 collapsed" in c["text"] for c in base_coarse[3:])
    assert "collapsed" not in "".join(c["text"] for c in rows_by_label(tables["fine"])["base"])
    assert "collapsed" not in "".join(c["text"] for c in rows_by_label(tables["coarse"])["wide"])


# --------------------------------------------------------------------------- safety and self-containment


def test_strings_from_run_files_are_inert_text(tmp_path):
    runs = study(tmp_path / "runs")
    for seed in range(2):
        fake_run(runs, "tagged", seed, {"fine/loss": 1.0, "fine/acc": 0.5}, tag=EVIL + "\u202eexe")
    text = report_html.render_html(build_report([runs]))
    page = Page(text)
    # the tag is text in the tables, never an element or a script
    assert "<img src=x" not in text and "</script><script>alert" not in text
    assert [tag for tag, _ in page.elements].count("script") == 1
    assert page.scripts == [report_html.SCRIPT]
    assert all(img["src"].startswith("data:image/svg+xml;base64,") for img in page.images)
    assert not any(any(name.startswith("on") for name in attrs) for _, attrs in page.elements)
    labels = [row[0]["attrs"]["data-sort"] for row in head_tables(page)["fine"]["rows"]]
    assert EVIL + "\\u202eexe" in labels  # bidi control shown as an escape, markup as text
    assert (EVIL + "\\u202eexe") in "".join(page.text)


def test_the_page_needs_nothing_else_and_allows_only_its_own_script(tmp_path):
    runs = study(tmp_path / "runs")
    paths = write_report(build_report([runs]), tmp_path / "out", html_file=True)
    html_file = tmp_path / "out" / "results.html"
    assert html_file in paths
    text = html_file.read_text(encoding="utf-8")
    page = Page(text)
    for _, attrs in page.elements:
        for name in ("src", "href"):
            value = attrs.get(name)
            assert value is None or value.startswith(("data:", "#")), (name, value)
    assert "<link" not in text and "@import" not in text and "url(" not in text
    # the curves' SVG files, inline: each decodes to the very SVG written beside the page
    svgs = sorted(p.read_bytes() for p in paths if p.suffix == ".svg")
    inline = sorted(base64.b64decode(img["src"].split(",", 1)[1]) for img in page.images)
    assert svgs and inline == svgs
    for img in page.images:
        assert img["alt"] and img["alt"] == img["title"]
        ET.fromstring(base64.b64decode(img["src"].split(",", 1)[1]))  # well-formed SVG
    # the CSP allows this page's script and style by hash, pictures from data: only, nothing else
    (csp,) = [
        a["content"] for t, a in page.elements if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    ]
    assert "default-src 'none'" in csp and "img-src data:" in csp
    assert report_html._csp_hash(report_html.SCRIPT) in csp and "unsafe-inline" not in csp


def test_runs_without_a_spec_copy_get_a_note_instead_of_a_diagram(tmp_path):
    text = report_html.render_html(build_report([study(tmp_path / "runs")]))
    section = text[text.index('id="architectures"') :]
    section = section[: section.index("</section>")]
    assert "no diagram of base" in section and "spec.toml" in section and "<img" not in section


def test_cli_format_html_writes_results_html(tmp_path):
    assert "html" in FORMATS
    out = tmp_path / "out"
    result = invoke("report", study(tmp_path / "runs"), "-o", out, "--format", "html", "--baseline", "base")
    assert (out / "results.html").is_file() and str(out / "results.html") in " ".join(result.stdout.split())
    assert "fine" in result.stdout  # the table is printed as with md
    result = invoke("report", tmp_path / "runs", "-o", out, "--format", "htm", code=2)
    assert "html" in result.output


# --------------------------------------------------------------------------- in a browser


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: the
    browser reads commands on fd 3 and writes answers and events on fd 4, each a JSON text ended by NUL)."""

    def __init__(self, binary: str, profile: Path, width: int = 1400, height: int = 2000):
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        # numbers clear of 3 and 4, so that putting one at 3 cannot overwrite the other
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser, from_browser)]
        for fd in (to_browser, from_browser):
            os.close(fd)

        def at_3_and_4() -> None:  # in the child, before chromium starts: dup2 leaves 3 and 4 open across exec
            os.dup2(ends[0], 3)
            os.dup2(ends[1], 4)

        args = [
            "--headless=new",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self.process = subprocess.Popen(
            [binary, *args],
            preexec_fn=at_3_and_4,
            close_fds=False,  # (every descriptor Python opens is close-on-exec; 3 and 4 are not)
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fd in ends:
            os.close(fd)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=self.session)

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed the pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, session: str | None = None, timeout: float = 60, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._message(deadline)
            if answer.get("id") == self._id:
                assert "error" not in answer, (method, answer["error"])
                return answer.get("result", {})
            self.events.append(answer)

    def page(self, method: str, **params) -> dict:
        return self.call(method, session=self.session, **params)

    def open(self, url: str, timeout: float = 60) -> None:
        self.events.clear()
        self.page("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._message(deadline))

    def js(self, expression: str):
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real left click (mouse pressed and released) in the middle of the element."""
        box = self.js(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.page("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions and log errors (CSP violations among them)."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                found.append(json.dumps(params.get("args"))[:500])
            elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
                found.append(params["entry"].get("text", "")[:500])
        return found

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (EOFError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._write)
        os.close(self._read)


def chromium() -> str:
    """The headless browser: chromium on PATH; on CI as root, installed with apt-get; else the test skips."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("CI") == "true" and os.geteuid() == 0:
        subprocess.run(["apt-get", "update"], check=False, timeout=600, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=False, timeout=900, capture_output=True)
        if shutil.which("chromium"):
            return shutil.which("chromium")
    pytest.skip(
        "the browser test needs headless Chromium: install Debian's chromium (apt-get install chromium), "
        "or run as root with CI=true to have the test install it"
    )


ROWS_OF = "Array.from(document.querySelectorAll('table.sortable')[{t}].tBodies[0].rows)"


@pytest.mark.slow
def test_the_page_in_headless_chromium(tmp_path):
    binary = chromium()
    specs = []
    for name, channels in (("small", 4), ("wider", 8)):
        specs.append(tmp_path / f"{name}.toml")
        specs[-1].write_text(
            TINY_SPEC.replace('name = "tiny"', f'name = "{name}"')
            .replace("channels = [4]", f"channels = [{channels}]")
            .replace("coarse_classes = 2 }", "coarse_classes = 2, train_size = 128, test_size = 32 }")
        )
    runs = tmp_path / "runs"
    common = ("--epochs", "2", "--limit-train", "64", "--limit-val", "32", "--seeds", "2", "--device", "cpu")
    train(*specs, *common, "--out", runs, "--quiet")
    # a spec with the fine head only: its coarse cells are missing
    solo = tmp_path / "solo.toml"
    solo.write_text(specs[0].read_text().replace('name = "small"', 'name = "solo"').replace(COARSE_HEAD, ""))
    train(solo, *common, "--out", runs, "--quiet")
    for config in runs.glob("wider/*/config.json"):  # a hostile tag (graphc train refuses one; a file can hold it)
        content = json.loads(config.read_text())
        config.write_text(json.dumps({**content, "tag": EVIL}))
    report = build_report([runs], baseline="small")
    write_report(report, tmp_path / "out", html_file=True)
    page = Page((tmp_path / "out" / "results.html").read_text(encoding="utf-8"))
    assert len(page.images) >= 2 + 3  # the curves, and a diagram per spec

    # a second page: losses across decades (a text sort would put 10.5 before 9.2)
    numeric = tmp_path / "numeric"
    for spec, loss in (("a", 10.5), ("b", 9.2), ("c", 100.1)):
        fake_run(numeric, spec, 0, {"fine/loss": loss, "fine/acc": 0.5})
    fake_run(numeric, "d", 0, {"coarse/loss": 1.0, "coarse/acc": 0.5})
    write_report(build_report([numeric]), tmp_path / "numeric-out", html_file=True)

    browser = Browser(binary, tmp_path / "profile")
    try:
        url = (tmp_path / "out" / "results.html").as_uri()
        browser.open(url)
        assert browser.js("document.documentElement.dataset.ready") == "sortable"  # the script ran to its end
        assert browser.problems() == []
        assert all(u.startswith(("file:", "data:")) for u in browser.requests()), browser.requests()
        # every table and picture of the file is in the rendered DOM, every picture decoded
        assert browser.js("document.querySelectorAll('table').length") == len(page.tables)
        assert browser.js("document.querySelectorAll('table > caption').length") == len(page.tables)
        pictures = browser.js(
            "Promise.all(Array.from(document.images).map(i => i.decode().then(() => [i.alt, i.naturalWidth])))"
        )
        assert len(pictures) == len(page.images) and all(alt and width > 0 for alt, width in pictures)
        assert sum("architecture of" in alt for alt, _ in pictures) == 3
        # the hostile tag is text: no element came of it, no script ran from it
        assert browser.js("document.querySelectorAll('img[src=x], img:not([src^=\"data:\"])').length") == 0
        assert browser.js("document.scripts.length") == 1
        assert EVIL in browser.js("document.querySelector('table.sortable tbody').innerText")

        # sorting by a real click: coarse acc, best (highest) first, then reversed; solo has none: last both times
        tables = browser.js("Array.from(document.querySelectorAll('table.sortable')).map(t => t.dataset.head)")
        t = tables.index("coarse")
        header = "table.sortable[data-head='coarse'] th[data-key='coarse/acc'] button"
        col = browser.js(f'document.querySelector("{header}").parentElement.cellIndex')
        order = f"{ROWS_OF.format(t=t)}.map(r => [r.cells[0].dataset.sort, r.cells[{col}].dataset.sort])"
        for direction, expect in (("descending", True), ("ascending", False)):
            browser.click(header)
            rows = browser.js(order)
            values = [float(v) for _, v in rows if v]
            assert values == sorted(values, reverse=expect) and len(values) == 2
            assert rows[-1] == ["solo", ""]
            assert (
                browser.js(f"document.querySelector(\"{header}\").parentElement.getAttribute('aria-sort')") == direction
            )
        browser.click("table.sortable[data-head='coarse'] th:first-child button")  # by label, naturally
        assert [label for label, _ in browser.js(order)] == sorted(label for label, _ in rows)
        shot = base64.b64decode(browser.page("Page.captureScreenshot", format="png")["data"])
        (tmp_path / "report.png").write_bytes(shot)
        assert shot.startswith(b"\x89PNG") and len(shot) > 10_000

        # numbers sort as numbers, a missing value last
        browser.open((tmp_path / "numeric-out" / "results.html").as_uri())
        assert browser.problems() == []
        header = "table.sortable[data-head='fine'] th[data-key='fine/loss'] button"
        col = browser.js(f'document.querySelector("{header}").parentElement.cellIndex')
        order = f"{ROWS_OF.format(t=0)}.map(r => [r.cells[0].dataset.sort, r.cells[{col}].dataset.sort])"
        browser.click(header)  # a loss: lowest first
        assert browser.js(order) == [["b", "9.2"], ["a", "10.5"], ["c", "100.1"], ["d", ""]]
        browser.click(header)
        assert browser.js(order) == [["c", "100.1"], ["a", "10.5"], ["b", "9.2"], ["d", ""]]
        assert browser.problems() == []
    finally:
        browser.close()
