"""``graphc report --delta-m``: each multi-task row against its tasks' single-task models.

Δm (Maninis et al., "Attentive Single-Tasking of Multiple Tasks", CVPR 2019; Vandenhende et al.,
"Multi-Task Learning for Dense Prediction Tasks: A Survey", TPAMI 2021, §5) is the average over the
row's T tasks of each task's main metric's relative difference from its single-task model, in %,
with the sign turned where lower is better::

    Δm = (1/T) Σ_t (-1)^{l_t} (M_mt,t - M_st,t) / M_st,t × 100        l_t = 1 if lower is better

so Δm > 0 means the multi-task model is better on average. The main metric of a head by its type
(:data:`MAIN_METRIC`): classification ``acc``, binary ``auroc``, multilabel ``map`` (higher is
better), regression ``mae`` (lower is better). Always on the test split (each run's
summary.json "test", or with ``--eval NAME`` its saved evaluation), whatever split the table shows.

A task's single-task row is the row of the derived spec ``<spec>__single_<task>``
(graphc.ir.derive, ``graphc derive single-task``) measured on the same test images, or the row
``--single-task TASK=ROW`` names. Δm is computed per seed, on the seeds the multi-task row and every
one of its single-task rows share, and reported as the mean ± sample sd over those seeds, with the
paired t-test of the per-seed values against 0 and its 95% interval (stats.paired_difference), Holm-
adjusted across the multi-task rows, and the verdict in the words of the report's comparisons
(stats.verdict: with fewer than 3 shared seeds there is no image-level test for Δm, so "cannot
tell"). With no shared seed, Δm of the means is shown, without a test.

The head types come from each run's record (config.json "types"); a record without that table
(graphc before 0.5, or a run of classifiers only) has them inferred from the metric names
(``TASK/auroc``: binary, ``TASK/map``: multilabel, ``TASK/mae``: regression, else classification),
with a note when that gives a type other than classification.
"""

from __future__ import annotations

import html
import io
import math
from dataclasses import dataclass, field

import numpy as np

from graphc.errors import RunError, UsageError, did_you_mean, printable
from graphc.ir.derive import single_task_name
from graphc.runtime.report.build import Report, Row, run_point
from graphc.runtime.report.stats import MIN_SEEDS_FOR_T, Paired, holm, paired_difference, verdict

MAIN_METRIC = {"classification": "acc", "binary": "auroc", "multilabel": "map", "regression": "mae"}
LOWER_IS_BETTER = ("regression",)  # l_t = 1
SOURCES = (
    'Maninis, Radosavovic and Kokkinos, "Attentive Single-Tasking of Multiple Tasks", CVPR 2019; '
    'Vandenhende et al., "Multi-Task Learning for Dense Prediction Tasks: A Survey", TPAMI 2021'
)
FORMULA = "Δm = (1/T) Σ_t (-1)^l_t (M_mt,t - M_st,t) / M_st,t × 100 %, l_t = 1 where lower is better"


def delta_m(multi: dict[str, float], single: dict[str, float], lower: dict[str, bool]) -> float:
    """Δm in % of one multi-task model against single-task models: ``multi`` and ``single`` map each
    task to its main metric, ``lower`` says where lower is better. nan when a single-task value is 0
    or not finite (no relative difference to it)."""
    terms = []
    for task, base in single.items():
        if not math.isfinite(base) or base == 0 or not math.isfinite(multi[task]):
            return math.nan
        sign = -1.0 if lower[task] else 1.0
        terms.append(sign * (multi[task] - base) / base)
    return 100.0 * float(np.mean(terms))


@dataclass
class Term:
    """One task of a multi-task row: its main metric there and in its single-task row."""

    task: str
    type: str
    metric: str  # TASK/acc, TASK/auroc, TASK/map or TASK/mae
    single: str  # the single-task row's label
    multi_by_seed: dict[int, float]
    single_by_seed: dict[int, float]

    @property
    def lower_is_better(self) -> bool:
        return self.type in LOWER_IS_BETTER


@dataclass
class DeltaM:
    """Δm of one multi-task row."""

    row: str  # the multi-task row's label
    terms: list[Term]
    by_seed: dict[int, float]  # Δm (%) per shared seed
    paired: Paired  # the per-seed Δm against 0
    of_means: float = math.nan  # Δm of the means over each row's own seeds (shown when no seed is shared)
    p_holm: float = math.nan
    verdict: str = ""

    @property
    def n(self) -> int:
        return len(self.by_seed)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.by_seed.values()))) if self.by_seed else self.of_means

    @property
    def std(self) -> float:
        return float(np.std(list(self.by_seed.values()), ddof=1)) if self.n > 1 else math.nan


@dataclass
class DeltaMTable:
    """Every multi-task row's Δm, and what could not be computed (notes)."""

    entries: dict[str, DeltaM]  # by the multi-task row's label
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- head types and test metrics


def head_type(run, task: str, metrics: dict[str, float]) -> tuple[str, bool]:
    """(type, inferred) of ``task`` in ``run``: the record's types table, else from the metric names."""
    if run.types is not None and run.types.get(task, "classification") in MAIN_METRIC:
        return run.types.get(task, "classification"), False
    # no table, or a type this graphc does not know (a damaged or newer record): read from the metric names
    for metric, kind in (("auroc", "binary"), ("map", "multilabel"), ("mae", "regression")):
        if f"{task}/{metric}" in metrics:
            return kind, kind != "classification"
    return "classification", False


def _test_values(report: Report, row: Row, notes: list[str]) -> dict[int, dict[str, float]]:
    """{seed: test metrics} of the row's runs: its points when the table is of the test split (with
    --eval, the saved evaluations), else each run's summary.json "test"."""
    if report.split == "test":
        return {p.run.seed: p.values for p in row.points}
    found = {}
    for run in row.runs:
        point = run_point(run, "test", "best")
        if isinstance(point, str):
            notes.append(f"Δm: {point}; that seed of {row.label} is left out.")
        else:
            found[run.seed] = point.values
    return found


# --------------------------------------------------------------------------- finding single-task rows


def parse_single_task(pairs: list[str] | None) -> dict[str, str]:
    """``--single-task TASK=ROW`` options as {task: row}."""
    mapping: dict[str, str] = {}
    for pair in pairs or []:
        task, sep, row = pair.partition("=")
        if not sep or not task.strip() or not row.strip():
            raise UsageError(f"--single-task {pair!r}: expected TASK=ROW, e.g. --single-task fine=my_fine_baseline.")
        if task.strip() in mapping:
            raise UsageError(f"--single-task names task {task.strip()!r} twice; name one row per task.")
        mapping[task.strip()] = row.strip()
    return mapping


def _named_row(task: str, name: str, rows: list[Row]) -> Row:
    """--single-task TASK=ROW: a row's label, else a tag, else a spec name (one row), with a head TASK."""
    with_task = [r for r in rows if task in r.heads and r.points]
    for candidates in (
        [r for r in with_task if r.label == name],
        [r for r in with_task if r.variant.tag == name],
        [r for r in with_task if r.spec == name and r.variant.tag is None],
        [r for r in with_task if r.spec == name],
    ):
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            labels = "; ".join(r.label for r in candidates)
            raise UsageError(
                f"--single-task {task}={name} matches {len(candidates)} rows: {labels}. Name one row by its label."
            )
    names = [r.label for r in with_task] + sorted({r.spec for r in with_task})
    hint = did_you_mean(name, names) or ""
    raise UsageError(
        f"--single-task {task}={name}: no row of that label, tag or spec has a head {task}; the rows with one are "
        f"{'; '.join(r.label for r in with_task) or 'none'}. {hint}".strip()
    )


BUDGET = ("epochs", "batch_size", "lr", "limit_train", "limit_val")  # what a fair single-task model shares


def _budget_differs(multi: Row, single: Row) -> list[str]:
    """The training budget settings in which ``single`` differs from ``multi`` (``epochs 10 vs 20``)."""
    return [
        f"{k} {single.variant.get(k)} vs {multi.variant.get(k)}"
        for k in BUDGET
        if single.variant.get(k) != multi.variant.get(k)
    ]


def _derived_row(multi: Row, task: str, rows: list[Row]) -> Row | str:
    """The row of ``multi``'s spec's derived single-task spec of ``task`` (graphc derive single-task)
    measured like ``multi`` on the test images; the closest in settings when there are several; or why
    there is none."""
    name = single_task_name(multi.spec, task)
    candidates = [r for r in rows if r.spec == name and r.points and set(r.heads) == {task}]
    if not candidates:
        return (
            f"no single-task row for task {task} of {multi.label}: derive its spec and train it with the same "
            f"seeds (graphc derive single-task SPEC --out DIR, then graphc train DIR/{name}.toml --seeds N with "
            f"N covering seeds {', '.join(map(str, multi.seeds))}), and report those runs too; or name a row with "
            f"--single-task {task}=ROW"
        )
    alike = [r for r in candidates if r.variant.measured_on("test") == multi.variant.measured_on("test")]
    if not alike:
        return (
            f"the single-task rows of task {task} ({'; '.join(r.label for r in candidates)}) were tested on other "
            f"images than {multi.label} (their data settings or limit_test differ), so they are not its single-task "
            f"model; train {name} with the same data settings, or name a row with --single-task {task}=ROW"
        )
    if len(alike) > 1:  # e.g. two epoch budgets: the one trained like the multi-task row
        alike = [r for r in alike if not _budget_differs(multi, r)] or alike
    if len(alike) > 1:
        return (
            f"several single-task rows of task {task} fit {multi.label} ({'; '.join(r.label for r in alike)}); "
            f"name one with --single-task {task}=ROW"
        )
    return alike[0]


# --------------------------------------------------------------------------- Δm of the report


def add_delta_m(report: Report, single_task: dict[str, str] | None = None) -> DeltaMTable:
    """Compute Δm for every multi-task row of ``report`` (a row with two or more heads), set
    ``report.delta_m`` and add its notes to the report's. ``single_task``: {task: row} from
    --single-task. UsageError for a task in ``single_task`` that no multi-task row has, or a row it
    names that does not exist; RunError when no multi-task row gets a Δm (each reason said)."""
    single_task = single_task or {}
    rows = [r for r in report.rows if r.points]
    multi_rows = [r for r in rows if len(r.heads) > 1]
    tasks = {t for r in multi_rows for t in r.heads}
    unknown = [t for t in single_task if t not in tasks]
    if unknown:
        hint = did_you_mean(unknown[0], sorted(tasks)) or ""
        raise UsageError(
            f"--single-task {unknown[0]}={single_task[unknown[0]]}: no multi-task row has a head {unknown[0]}; "
            f"their heads are {', '.join(sorted(tasks)) or 'none (no row has two or more heads)'}. {hint}".strip()
        )
    named = {task: _named_row(task, name, rows) for task, name in single_task.items()}
    notes: list[str] = []
    entries: dict[str, DeltaM] = {}
    reasons: list[str] = []
    test_cache: dict[str, dict[int, dict[str, float]]] = {}

    def test(row: Row) -> dict[int, dict[str, float]]:
        if row.label not in test_cache:
            test_cache[row.label] = _test_values(report, row, notes)
        return test_cache[row.label]

    for multi in multi_rows:
        terms, why = _terms(multi, rows, named, test, notes)
        if why:
            reasons.append(why)
            notes.append(f"Δm: {why}.")
            continue
        entries[multi.label] = _entry(multi.label, terms, notes)
    if not multi_rows:
        raise RunError(
            "--delta-m compares multi-task rows with single-task ones, but no row of this report has two or more "
            "heads. Report the multi-task runs together with their single-task runs."
        )
    if not entries:
        raise RunError("--delta-m: no multi-task row has a Δm:\n" + "\n".join(f"- {r}." for r in reasons))
    family = list(entries.values())
    for entry, p in zip(family, holm([e.paired.p for e in family])):
        entry.p_holm = p
        entry.verdict = _verdict(entry)
    if report.split != "test":
        notes.append(
            "Δm is measured on the test split (each run's summary.json 'test'), whatever split the table shows."
        )
    table = DeltaMTable(entries, notes)
    report.delta_m = table
    report.notes.extend(notes)
    return table


def _terms(multi: Row, rows: list[Row], named: dict[str, Row], test, notes: list[str]) -> tuple[list[Term], str]:
    """The row's tasks, each with its single-task row and main metric per seed; or why there are none."""
    mine = test(multi)
    if not mine:
        return [], f"{multi.label} has no test metrics"
    terms = []
    for task in multi.runs[0].tasks:
        single = named.get(task) or _derived_row(multi, task, rows)
        if isinstance(single, str):
            return [], single
        run = multi.runs[0]
        kind, inferred = head_type(run, task, next(iter(mine.values())))
        if inferred:
            notes.append(
                f"Δm: the type of head {task} of {multi.label} is not recorded in its runs' config.json; read as "
                f"{kind} from its metric names."
            )
        theirs = test(single)
        if single.runs:
            other, _ = head_type(single.runs[0], task, next(iter(theirs.values()), {}))
            if other != kind:
                return [], (
                    f"task {task} is {kind} in {multi.label} but {other} in its single-task row {single.label}: "
                    "not the same task"
                )
        metric = f"{task}/{MAIN_METRIC[kind]}"
        multi_values = {s: v[metric] for s, v in mine.items() if metric in v}
        single_values = {s: v[metric] for s, v in theirs.items() if metric in v}
        if not multi_values or not single_values:
            where = multi.label if not multi_values else single.label
            return [], f"{where} has no test {metric} (the main metric of a {kind} head)"
        differs = _budget_differs(multi, single)
        if differs:
            notes.append(
                f"Δm of {multi.label}: its single-task row {single.label} of {task} was trained otherwise "
                f"({', '.join(differs)}); the difference is not only the sharing."
            )
        terms.append(Term(task, kind, metric, single.label, multi_values, single_values))
    return terms, ""


def _entry(label: str, terms: list[Term], notes: list[str]) -> DeltaM:
    lower = {t.task: t.lower_is_better for t in terms}
    shared = set(terms[0].multi_by_seed)
    for term in terms:
        shared &= set(term.multi_by_seed) & set(term.single_by_seed)
    by_seed = {}
    for seed in sorted(shared):
        value = delta_m(
            {t.task: t.multi_by_seed[seed] for t in terms}, {t.task: t.single_by_seed[seed] for t in terms}, lower
        )
        if math.isnan(value):
            notes.append(
                f"Δm of {label}, seed {seed}: left out, a single-task value is 0 or not a number (no relative "
                "difference to it)."
            )
        else:
            by_seed[seed] = value
    of_means = delta_m(
        {t.task: float(np.mean(list(t.multi_by_seed.values()))) for t in terms},
        {t.task: float(np.mean(list(t.single_by_seed.values()))) for t in terms},
        lower,
    )
    if not shared:
        notes.append(
            f"Δm of {label}: no seed is shared with all its single-task rows, so Δm is that of the means over each "
            "row's own seeds, without a test."
        )
    paired = paired_difference(by_seed, {seed: 0.0 for seed in by_seed})
    return DeltaM(label, terms, by_seed, paired, of_means)


def _verdict(entry: DeltaM) -> str:
    n = entry.n
    if n >= MIN_SEEDS_FOR_T and math.isnan(entry.paired.p) and not math.isnan(entry.paired.mean):
        why = f"{n} seeds, all with the same Δm"
    else:
        why = f"{n} shared seed{'s' if n != 1 else ''}; Δm has no image-level test"
    return verdict(entry.paired.mean, n, entry.p_holm, None, why_not=why, higher_is_better=True)


# --------------------------------------------------------------------------- showing it


def _signed(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:+.2f}"


def cell(entry: DeltaM) -> str:
    """``+1.23 ± 0.45 [+0.10, +2.36], better``: mean ± sd over seeds (%), 95% interval, verdict."""
    text = _signed(entry.mean)
    if entry.n > 1 and not math.isnan(entry.std):
        text += f" ± {entry.std:.2f}"
    if not math.isnan(entry.paired.ci95[0]):
        text += f" [{_signed(entry.paired.ci95[0])}, {_signed(entry.paired.ci95[1])}]"
    if entry.n == 0:
        text += " (of the means)"
    return f"{text}, {entry.verdict}"


HEADER = ["variant", "n", "Δm (%)", "per seed", "t p (Holm)", "against"]


def table_rows(table: DeltaMTable) -> list[list[str]]:
    """The Δm table's lines (plain text): one per multi-task row."""
    lines = []
    for entry in table.entries.values():
        seeds = ", ".join(f"{s}: {_signed(v)}" for s, v in entry.by_seed.items()) or "-"
        p = "-" if math.isnan(entry.p_holm) else f"{entry.paired.p:.3g} ({entry.p_holm:.3g})"
        against = "; ".join(
            f"{t.task} ({t.metric}{', lower better' if t.lower_is_better else ''}): {t.single}" for t in entry.terms
        )
        lines.append([printable(entry.row), str(entry.n), cell(entry), seeds, p, printable(against)])
    return lines


def caption() -> str:
    return (
        f"Δm against single-task models, test split: {FORMULA} (the mean over the row's T tasks; {SOURCES}). "
        "Main metric per head type: classification acc, binary auroc, multilabel map, regression mae (lower is "
        "better). Positive: the multi-task model is better on average. Per shared seed, then mean ± sample sd over "
        "the n seeds the multi-task row and all its single-task rows share; [lo, hi]: the 95% interval of the mean "
        "(Student t, n-1 df); the verdict: the paired t-test of the per-seed Δm against 0, Holm-adjusted across the "
        f"multi-task rows, deciding with >= {MIN_SEEDS_FOR_T} shared seeds (fewer: cannot tell)."
    )


def markdown(table: DeltaMTable) -> list[str]:
    """The Δm section of results.md."""
    out = ["## Δm against single-task models", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for cells in table_rows(table):
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return [*out, "", caption(), ""]


def rich_table(table: DeltaMTable):
    from rich.markup import escape
    from rich.table import Table

    out = Table(title="Δm against single-task models (test split)", title_justify="left")
    for i, name in enumerate(HEADER):
        out.add_column(name, justify="right" if i in (1, 4) else "left", overflow="fold")
    for cells in table_rows(table):
        out.add_row(*(escape(c) for c in cells))
    return out


def csv_fields(table: DeltaMTable | None, label: str) -> dict[str, object]:
    """results.csv's Δm columns of one row (empty for a row without Δm)."""
    entry = table.entries.get(label) if table is not None else None
    if entry is None:
        return dict.fromkeys(CSV_COLUMNS, "")
    num = lambda v: "" if math.isnan(v) else v  # noqa: E731
    return {
        "delta_m mean": num(entry.mean),
        "delta_m std": num(entry.std),
        "delta_m n": entry.n,
        "delta_m by_seed": " ".join(f"{s}:{v:.6g}" for s, v in entry.by_seed.items()),
        "delta_m ci95_lo": num(entry.paired.ci95[0]),
        "delta_m ci95_hi": num(entry.paired.ci95[1]),
        "delta_m t_p": num(entry.paired.p),
        "delta_m t_p_holm": num(entry.p_holm),
        "delta_m verdict": entry.verdict,
    }


CSV_COLUMNS = (
    "delta_m mean",
    "delta_m std",
    "delta_m n",
    "delta_m by_seed",
    "delta_m ci95_lo",
    "delta_m ci95_hi",
    "delta_m t_p",
    "delta_m t_p_holm",
    "delta_m verdict",
)


def as_dict(table: DeltaMTable) -> dict:
    """results.json's "delta_m" block (numbers that are not finite as None; render_json writes null)."""
    num = lambda v: None if not math.isfinite(v) else v  # noqa: E731
    return {
        "formula": FORMULA,
        "sources": SOURCES,
        "split": "test",
        "main_metric": MAIN_METRIC,
        "rows": {
            label: {
                "mean": num(e.mean),
                "std": num(e.std),
                "n": e.n,
                "by_seed": {str(s): num(v) for s, v in e.by_seed.items()},
                "of_means": num(e.of_means),
                "ci95": [num(e.paired.ci95[0]), num(e.paired.ci95[1])],
                "t_p": num(e.paired.p),
                "t_p_holm": num(e.p_holm),
                "verdict": e.verdict,
                "tasks": [
                    {
                        "task": t.task,
                        "type": t.type,
                        "metric": t.metric,
                        "lower_is_better": t.lower_is_better,
                        "single_task_row": t.single,
                        "multi_by_seed": {str(s): num(v) for s, v in t.multi_by_seed.items()},
                        "single_by_seed": {str(s): num(v) for s, v in t.single_by_seed.items()},
                    }
                    for t in e.terms
                ],
            }
            for label, e in table.entries.items()
        },
    }


def html_section(table: DeltaMTable) -> str:
    """results.html's Δm table (text from run files escaped)."""
    esc = lambda text: html.escape(printable(str(text)), quote=True)  # noqa: E731
    body = io.StringIO()
    for cells in table_rows(table):
        body.write("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in HEADER)
    return (
        '<section id="delta-m"><h2>Δm against single-task models</h2><div class="scroll"><table>'
        f"<caption>{esc(caption())}</caption><thead><tr>{head}</tr></thead><tbody>{body.getvalue()}</tbody>"
        "</table></div></section>"
    )
