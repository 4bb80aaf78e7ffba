"""A branching family on disk, drawn, trained and ranked (``graphc branch``).

:func:`write_family` writes the members that :func:`graphc.ir.branch.branch_family` generated into
one folder - ``<spec>__branch_<k>_<slug>.toml`` per member, ``family.json`` (one entry per member:
file, branch point, depth, who shares what, parameters, shared fraction) and ``family.svg`` /
``family.png`` (every member side by side, chains of alike blocks collapsed).

:func:`train_family` trains the members through the sweep (``runtime/train/sweep.py``: resumable,
a rerun skips finished runs and resumes interrupted ones) into ``DIR/runs`` and ranks them with the
report (``runtime/report``): the chosen metric on the test split, mean and sd over seeds, each
member's parameters and branch depth, and the statistics layer's verdict against the fully shared
(or fully separate) member.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from graphc.errors import RunError, UsageError
from graphc.files import atomic_write_bytes, atomic_write_text
from graphc.ir.branch import Family, Member

FAMILY_JSON = "family.json"
RANKING_JSON = "ranking.json"
PNG_DPI = 150.0  # graphc render's resolution
PNG_MAX_PIXELS = 6000  # the family picture's longer side, at most
RUNS = "runs"  # under the family folder: the sweep's runs
BASELINES = {"shared": "shared", "separate": "separate"}  # --baseline -> the member kind


def family_rows(family: Family) -> list[dict]:
    return [m.row() for m in family.members]


def _refuse_file(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path}: is a file, not a folder. Give a folder for the family.")


def write_family(family: Family, out: Path, picture: bool = True) -> list[Path]:
    """Write the members, family.json and (``picture``) family.svg and family.png under ``out``.
    Returns the paths written. Files of an earlier family in ``out`` with other names are left alone."""
    out = Path(out)
    _refuse_file(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for member in family.members:
        path = out / member.file_name
        atomic_write_text(path, member.text)
        written.append(path)
    document = {
        "spec": family.spec_name,
        "tasks": list(family.tasks),
        "candidates": family.candidates,
        "chosen_by": family.rule,
        "notes": list(family.notes),
        "members": family_rows(family),
    }
    path = out / FAMILY_JSON
    atomic_write_text(path, json.dumps(document, indent=2) + "\n")
    written.append(path)
    if picture:
        for fmt, data in draw_family(family.members).items():
            path = out / f"family.{fmt}"
            atomic_write_bytes(path, data)
            written.append(path)
    return written


def draw_family(members: tuple[Member, ...] | list[Member]) -> dict[str, bytes]:
    """Every member side by side on one page (``graphc render``'s drawing), each chain of alike
    blocks collapsed to one box so that deep trunks stay readable; {format: bytes}. The PNG's
    resolution falls from render's 150 dpi so that its longer side stays within PNG_MAX_PIXELS
    (16 members of a residual trunk would otherwise be 100 megapixels)."""
    from graphc.backends.diagram.collapse import collapse_chains
    from graphc.backends.diagram.draw import check_legible, page
    from graphc.backends.diagram.scene import save

    graphs = [collapse_chains(m.graph) for m in members]
    check_legible(graphs)
    scene = page(graphs)
    dpi = min(PNG_DPI, PNG_MAX_PIXELS * 72 / max(scene.width, scene.height, 1.0))
    return {"svg": save(scene, "svg"), "png": save(scene, "png", dpi=dpi)}


# --------------------------------------------------------------------------- train and rank


def default_metric(family: Family) -> str:
    """The report column to rank by: the spec's train.select metric without its split (val/fine/acc ->
    fine/acc), read on the test split; with the default select (val/loss, the weighted total loss,
    which the report does not show) mean_acc; without a classification or binary head (no mean_acc) the
    first head's main metric, as Δm takes it (a regression head's mae: lower is better, the report sorts so)."""
    graph = family.members[0].graph
    select = graph.train.select.metric
    split, _, key = select.partition("/")
    if key in ("loss", "") or "/diag/" in select or key.startswith("diag/"):
        from graphc.ir.metrics import ACCURACY_TYPES
        from graphc.runtime.report.delta_m import MAIN_METRIC

        types = [(h.attrs["task"], h.attrs.get("type", "classification")) for h in graph.heads]
        if any(kind in ACCURACY_TYPES for _, kind in types):
            return "mean_acc"
        task, kind = types[0]
        return f"{task}/{MAIN_METRIC[kind]}"
    return key


@dataclass(frozen=True)
class Ranked:
    """One member's place in the trained ranking."""

    rank: int
    member: dict  # its family.json entry
    label: str  # its report row
    mean: float
    sd: float
    seeds: int
    verdict: str  # against the baseline ("" for the baseline itself)

    def to_dict(self) -> dict:
        return {
            "rank": self.rank,
            "name": self.member["name"],
            "branch_point": self.member["branch_point"],
            "depth": self.member["depth"],
            "tree": self.member["tree"],
            "trainable_params": self.member["trainable_params"],
            "mean": None if math.isnan(self.mean) else self.mean,
            "sd": None if math.isnan(self.sd) else self.sd,
            "seeds": self.seeds,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class Ranking:
    metric: str
    split: str
    baseline: str  # the baseline member's name
    rows: tuple[Ranked, ...]
    report: object  # the report (graphc.runtime.report.build.Report) the rows come from
    sweep: object  # the sweep's result


def train_family(
    out: Path,
    family: Family,
    *,
    jobs: int,
    seeds: int | None,
    seed: int | None,
    overrides,
    metric: str | None = None,
    baseline: str = "shared",
    quiet: bool = False,
    console=None,
) -> Ranking:
    """Train every member of ``family`` (written under ``out``) through the sweep into ``out/runs``
    and rank them by ``metric`` on the test split. ``baseline``: "shared" or "separate", the member
    every other is compared with (the report's paired differences, tests and verdicts)."""
    from graphc.runtime.report import build_report
    from graphc.runtime.train import sweep

    if baseline not in BASELINES:
        raise UsageError(f"--baseline '{baseline}': expected shared or separate.")
    if overrides.freeze or overrides.init_map:
        raise UsageError(
            "--freeze and --init-map name nodes, which the family's members copy and rename: write trainable = false "
            "(or train.init_map) in the spec instead - graphc branch copies it onto every copy of the node."
        )
    if overrides.no_test:
        raise UsageError("graphc branch --train ranks the family on the test split; drop --no-test.")
    kind = BASELINES[baseline]
    base = next((m for m in family.members if m.kind == kind), None)
    if base is None:
        raise UsageError(f"--baseline {baseline}: the family has no {baseline} member (left out by --max-params?).")
    specs = [Path(out) / m.file_name for m in family.members]
    result = sweep.sweep_command(
        specs,
        jobs=jobs,
        seeds=seeds,
        seed=seed,
        overrides=overrides,
        out=Path(out) / RUNS,
        quiet=quiet,
        console=console,
    )
    if not result.run_dirs:
        raise RunError("no member of the family finished a run; the sweep's messages above say why.")
    metric = metric or default_metric(family)
    report = build_report(result.run_dirs, split="test", sort=metric, baseline=base.name)
    by_spec = {m.name: m.row() for m in family.members}
    rows = []
    for row in report.rows:
        if row.spec not in by_spec or metric not in row.stats:
            continue
        stat = row.stats[metric]
        comparison = row.comparisons.get(metric)
        verdict = "" if row.spec == base.name else (comparison.verdict if comparison else "not compared")
        rows.append(Ranked(len(rows) + 1, by_spec[row.spec], row.label, stat.mean, stat.std, stat.n, verdict))
    ranking = Ranking(metric, "test", base.name, tuple(rows), report, result)
    document = {
        "metric": metric,
        "split": "test",
        "baseline": base.name,
        "rows": [r.to_dict() for r in rows],
    }
    atomic_write_text(Path(out) / RANKING_JSON, json.dumps(document, indent=2) + "\n")
    return ranking


# --------------------------------------------------------------------------- tables and scores


def family_table(family: Family):
    """The family as a terminal table: candidate, branch point, depth, parameters, shared fraction."""
    from rich.table import Table

    table = Table(title=f"branching family of {family.spec_name} ({', '.join(family.tasks)})", title_justify="left")
    for column in ("#", "candidate", "branch point", "depth", "trainable params", "shared"):
        table.add_column(column, justify="right" if column in ("#", "depth", "trainable params", "shared") else "left")
    for m in family.members:
        point = m.branch_point or "-"
        if m.group:
            point += f", {'+'.join(m.group)} to {m.group_point}"
        table.add_row(
            str(m.index), m.name, point, str(m.depth), f"{m.trainable_params:,}", f"{100 * m.shared_fraction:.1f}%"
        )
    return table


def ranking_table(ranking: Ranking):
    """The trained ranking: best first by the metric on the test split, with parameters, depth and the verdict."""
    from rich.table import Table

    from graphc.runtime.report.render import display_name, format_value

    table = Table(
        title=f"ranked by test {display_name(ranking.metric)}; verdicts against {ranking.baseline}",
        title_justify="left",
    )
    for column in ("rank", "candidate", display_name(ranking.metric), "seeds", "trainable params", "depth", "verdict"):
        table.add_column(column)
    for r in ranking.rows:
        spread = "" if math.isnan(r.sd) else f" ± {format_value(ranking.metric, r.sd)}"
        table.add_row(
            str(r.rank),
            r.member["name"],
            format_value(ranking.metric, r.mean) + spread,
            str(r.seeds),
            f"{r.member['trainable_params']:,}",
            str(r.member["depth"]),
            r.verdict or "(baseline)",
        )
    return table


SCORES_JSON = "scores.json"
SCORE_EPOCHS = 1  # --score's default budget: one epoch over the first SCORE_IMAGES training images
SCORE_IMAGES = 1024


@dataclass
class Scoring:
    """--score's settings, and what the score run found (filled in by :func:`generate`)."""

    epochs: int = SCORE_EPOCHS
    images: int = SCORE_IMAGES
    overrides: object = None  # graphc train's overrides (--dataset, --data-dir, --device, ...) for the data
    report: object = print  # progress lines
    result: dict | None = None  # score_family's answer

    def __call__(self, spec, members: list[Member]) -> dict[str, float | None]:
        """branch_family's ``score``: score the plain branch points of the original spec, and give every
        candidate a value to choose by: its mean task similarity at the branch point (the lookahead
        affinity where there is no similarity); a tree: the similarity of its group's tasks at the
        group's branch point (tasks alike there are worth the longer shared path)."""
        from graphc.runtime.branching import scores
        from graphc.runtime.device import resolve_device
        from graphc.runtime.train.launch import Overrides, apply_overrides

        spec = apply_overrides(spec, self.overrides or Overrides())
        plain = [m for m in members if m.kind != "tree"]
        device = str(resolve_device(spec.train.device))
        self.result = scores.score_family(
            spec,
            [m.branch_node for m in plain],
            epochs=self.epochs,
            images=self.images,
            device=device,
            seed=spec.train.seed,
            report=self.report,
        )
        values = {}
        for member, row in zip(plain, self.result["candidates"]):
            score = row["score"]
            values[member.slug] = score["similarity"] if score.get("similarity") is not None else score.get("affinity")
        for member in members:
            if member.kind == "tree":
                pairs = self.result.get("similarity", {}).get(member.group_node, {})
                alike = [v for pair, v in pairs.items() if set(pair.split(":")) <= set(member.group) and v is not None]
                values[member.slug] = sum(alike) / len(alike) if alike else None
        return values


def write_scores(scoring: Scoring, family: Family, out: Path, max_params: int | None) -> tuple[list[dict], str, str]:
    """scores.json (score_family's answer, the table and the recommendation) in the family's folder;
    returns the table rows, the recommended candidate and the rule that chose it."""
    from graphc.runtime.branching import scores

    # every generated plain candidate's size, chosen or not: the recommendation may name one left out
    params = {(node or scores.NOTHING_SHARED): count for node, count in family.plain_params.items()}
    rows = scores.scores_table(scoring.result, params)
    recommended, rule = scores.recommend(scoring.result, params, max_params)
    document = {**scoring.result, "table": rows, "recommended": recommended, "rule": rule}
    atomic_write_text(Path(out) / SCORES_JSON, json.dumps(document, indent=2) + "\n")
    return rows, recommended, rule


def scores_rich_table(rows: list[dict]):
    """The score table for the terminal: candidate, parameters, each score."""
    from rich.table import Table

    columns = ["candidate", "params", "similarity", "affinity", "conflict_kept", "conflict_split"]
    table = Table(title="cheap scores (before training)", title_justify="left")
    for column in columns:
        table.add_column(column, justify="left" if column == "candidate" else "right")
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            cells.append(
                "-"
                if value is None
                else f"{value:,}"
                if column == "params"
                else f"{value:.3f}"
                if isinstance(value, float)
                else str(value)
            )
        table.add_row(*cells)
    return table
