"""Learning curves for graphc report: each plotted metric against epoch.

One figure per metric: per head its accuracy and loss (the original study's four plots for
fine/coarse), every hierarchy metric the runs log (``coarse/acc_from_fine``,
``fine/consistency_with_coarse``, ...), cross-head metrics such as ``mean_acc``, and the
loss weights in force (``weight/TASK``, training rows of runs with ``[train] loss_weighting``); and
with ``[train] diagnostics``, one figure per shared node (its tasks' gradient norms and cosines)
and one of the reuse shares (``diag_NODE``, ``diag_share``; the tables leave them out). One
colour per report row (variant) - the same in every figure - validation solid with filled
dots, training dashed with open squares, the mean over seeds with a band of +/- one sample
standard deviation where at least two seeds reached that epoch. Written as PNG and SVG.

A run of a single epoch is a marker with an error bar, on an axis around that epoch
(0.5 to 1.5 for epoch 1), not a dot on matplotlib's default 0.95-1.05; a curve that barely
moves gets a y range of at least a few points, so noise is not drawn as a cliff.

Uses matplotlib's object API with the Agg canvas (no pyplot), so nothing global
changes and it works without a display.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from pathlib import Path

import numpy as np

from graphc.errors import printable
from graphc.files import atomic_write_bytes
from graphc.ir.metrics import AGG_PREFIX, DIAGNOSTIC_PREFIX, WEIGHT_PREFIX
from graphc.runtime.report.build import Run, lower_is_better

# split -> (line style, legend label, band alpha, marker, marker filled)
STYLES = {"val": ("-", "validation", 0.18, "o", True), "train": ("--", "training", 0.08, "s", False)}
HIERARCHY = ("acc_from_", "consistency")  # suffixes of the hierarchy metrics, all plotted
MIN_SPAN = {"percent": 5.0, "loss": 0.1}  # the least y range drawn: percentage points, loss units


def spec_colours(specs: list[str]) -> dict[str, tuple]:
    """A fixed colour per report row (variant), by its position in the report."""
    from matplotlib import colormaps

    if len(specs) <= 10:
        palette = colormaps["tab10"].colors
    else:  # tab20's dark shades first, so neighbours in the legend differ in hue, not only lightness
        palette = colormaps["tab20"].colors[0::2] + colormaps["tab20"].colors[1::2]
    return {spec: palette[i % len(palette)] for i, spec in enumerate(specs)}


def curve(runs: list[Run], split: str, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epochs, mean and sample std (nan where fewer than two seeds) of ``key`` over runs."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for row in run.rows:
            value = row.get(key)
            if row["split"] == split and value is not None and math.isfinite(value):
                by_epoch.setdefault(row["epoch"], []).append(float(value))
    epochs = np.array(sorted(by_epoch), dtype=int)
    mean = np.array([np.mean(by_epoch[e]) for e in epochs])
    std = np.array([np.std(by_epoch[e], ddof=1) if len(by_epoch[e]) > 1 else np.nan for e in epochs])
    return epochs, mean, std


def plotted_metrics(groups: dict[str, list[Run]]) -> list[str]:
    """The metric keys to plot, head by head in the runs' order: acc, loss, then hierarchy
    metrics; then metrics of no one head (mean_acc)."""
    tasks: list[str] = []
    keys: set[str] = set()
    for runs in groups.values():
        for run in runs:
            tasks += [t for t in run.tasks if t not in tasks]
            for row in run.rows:
                keys.update(run.head_metrics(row))
                keys.update(
                    k for k in row if k.startswith((WEIGHT_PREFIX, AGG_PREFIX)) and isinstance(row[k], (int, float))
                )
    ordered = []
    for task in tasks:
        ordered += [f"{task}/acc", f"{task}/loss"]
        ordered += sorted(k for k in keys if k.startswith(f"{task}/") and k.split("/", 1)[1].startswith(HIERARCHY))
    ordered += sorted(k for k in keys if "/" not in k)
    ordered += [f"{WEIGHT_PREFIX}{task}" for task in tasks]
    ordered += [f"{AGG_PREFIX}weight/{task}" for task in tasks] + sorted(k for k in keys if k.startswith(AGG_PREFIX))
    return list(dict.fromkeys(k for k in ordered if k in keys))


def describe(key: str) -> tuple[str, str]:
    """(title, y-axis label) of a metric's figure."""
    if "/" not in key:
        return f"{key}: mean over heads", f"{key} (%)"
    if key.startswith(WEIGHT_PREFIX):
        task = key[len(WEIGHT_PREFIX) :]
        return f"{task}: loss weight in force at the end of each epoch", f"weight of the {task} loss"
    if key.startswith(f"{AGG_PREFIX}weight/"):
        task = key[len(f"{AGG_PREFIX}weight/") :]
        return f"{task}: the aggregator's weight, mean over the epoch's steps", f"aggregator weight of {task}"
    if key == f"{AGG_PREFIX}conflict":
        return "pairs of heads whose gradients conflict (negative cosine), mean over steps", "fraction of pairs"
    if key == f"{AGG_PREFIX}norm_ratio":
        return "norm of the aggregated update / norm of the mean gradient, mean over steps", "norm ratio"
    task, metric = key.split("/", 1)
    if metric == "loss":
        return f"{task}: loss", f"{task} loss (cross-entropy)"
    if metric == "acc":
        return f"{task}: accuracy", f"{task} accuracy (%)"
    if metric.startswith("acc_from_"):
        child = metric[len("acc_from_") :]
        return f"{task}: accuracy of the {child} head's answer mapped to {task}", f"{key} (%)"
    if metric.startswith("consistency_with_"):
        parent = metric[len("consistency_with_") :]
        return f"{task}: agreement of its answer with the {parent} head's (mapped)", f"{key} (%)"
    return f"{task}: {metric}", f"{key} (%)"


def metric_figure(groups: dict[str, list[Run]], key: str, colours: dict[str, tuple]):
    """The matplotlib Figure of one metric, or None when no run logged it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    percent = not lower_is_better(key) and not key.startswith((WEIGHT_PREFIX, AGG_PREFIX))  # plain numbers
    scale = 100.0 if percent else 1.0
    fig = Figure(figsize=(8, 5), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    row_handles, all_epochs, all_values = [], [], []
    n_series = len(groups) * len(STYLES)
    for g, (label, runs) in enumerate(groups.items()):
        runs = [r for r in runs if any(key in row for row in r.rows)]
        if not runs:
            continue
        colour = colours[label]
        for s, (split, (style, _, alpha, marker, filled)) in enumerate(STYLES.items()):
            epochs, mean, std = curve(runs, split, key)
            if len(epochs) == 0:
                continue
            all_epochs += list(epochs)
            all_values += (
                list(mean * scale)
                + list(((mean - std) * scale)[~np.isnan(std)])
                + list(((mean + std) * scale)[~np.isnan(std)])
            )
            face = colour if filled else "white"
            if len(epochs) == 1:  # a single epoch: a marker with its spread as an error bar,
                # dodged sideways a little so the rows' and splits' markers do not hide each other
                dodge = (g * len(STYLES) + s - (n_series - 1) / 2) * min(0.08, 0.6 / n_series)
                ax.errorbar(
                    epochs + dodge,
                    mean * scale,
                    yerr=None if np.isnan(std[0]) else std * scale,
                    color=colour,
                    marker=marker,
                    markersize=9,
                    markerfacecolor=face,
                    capsize=5,
                    linestyle="none",
                )
                continue
            ax.plot(
                epochs,
                mean * scale,
                linestyle=style,
                color=colour,
                linewidth=1.8,
                marker=marker if len(epochs) <= 10 else None,
                markersize=5,
                markerfacecolor=face,
            )
            band = ~np.isnan(std)
            if band.any():
                ax.fill_between(
                    epochs[band],
                    (mean - std)[band] * scale,
                    (mean + std)[band] * scale,
                    color=colour,
                    alpha=alpha,
                    linewidth=0,
                )
        running = sum(r.in_progress for r in runs)
        text = f"{printable(label)} (n={len(runs)}" + (f", {running} in progress)" if running else ")")
        row_handles.append(Line2D([], [], color=colour, linewidth=2.5, label=text))
    if not all_epochs:
        return None
    title, ylabel = map(printable, describe(key))  # task names come from run folders
    ax.set_title(f"{title}; mean ± 1 sd over seeds")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    # x: whole epochs, half an epoch of room either side (one epoch: 0.5 to 1.5, not 0.95 to 1.05)
    first, last = min(all_epochs), max(all_epochs)
    ax.set_xlim(first - 0.5, last + 0.5)
    if last - first < 12:
        ax.set_xticks(range(first, last + 1))  # every epoch, and only whole ones
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    # y: at least MIN_SPAN, so a flat or single-point curve is not magnified into noise
    low, high = min(all_values), max(all_values)
    span = MIN_SPAN["percent" if percent else "loss"]
    if high - low < span:
        middle = (low + high) / 2
        low, high = middle - span / 2, middle + span / 2
        if percent:  # keep within 0-100 %
            low, high = (0.0, span) if low < 0 else ((100.0 - span, 100.0) if high > 100 else (low, high))
        elif low < 0:
            low, high = 0.0, span
        ax.set_ylim(low, high)
    ax.grid(True, alpha=0.3)
    style_handles = [
        Line2D([], [], color="0.3", linestyle=s, marker=m, markerfacecolor="0.3" if f else "white", label=label)
        for s, label, _, m, f in STYLES.values()
    ]
    # rows first, then what solid and dashed mean; outside the axes when there are many
    handles = row_handles + style_handles
    if len(handles) > 8:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    else:
        ax.legend(handles=handles, loc="best", fontsize=9, framealpha=0.9)
    return fig


# --------------------------------------------------------------------------- gradient diagnostics

KEY_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))  # one per task or task pair in a figure
# Every key of a panel its own marker (line styles repeat after four): three heads have three pairs,
# four heads six, and two pairs drawn alike could not be told apart in the legend.
KEY_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def diagnostic_figures(groups: dict[str, list[Run]]) -> dict[str, list[tuple[str, list[str]]]]:
    """The diagnostics' figures (``[train] diagnostics``, graphc.ir.metrics): ``diag_NODE`` per
    shared node (its gradient norms, then its cosines) and ``diag_share`` (every reuse share),
    each as ``[(panel, keys)]``. Kept out of the tables: they describe training, not a result."""
    keys: list[str] = []
    for runs in groups.values():
        for run in runs:
            for row in run.rows:
                keys += [
                    k
                    for k in row
                    if k.startswith(DIAGNOSTIC_PREFIX)
                    and k not in keys
                    and k.count("/") == 3
                    and isinstance(row[k], (int, float))
                ]
    figures: dict[str, list[tuple[str, list[str]]]] = {}
    for node in dict.fromkeys(k.split("/")[1] for k in keys if k.split("/")[2] in ("norm", "cos")):
        figures[f"diag_{node}"] = [
            (what, [k for k in keys if k.startswith(f"{DIAGNOSTIC_PREFIX}{node}/{what}/")]) for what in ("norm", "cos")
        ]
    shares = [k for k in keys if k.split("/")[2] == "share"]
    if shares:
        figures["diag_share"] = [("share", shares)]
    return figures


DIAGNOSTIC_PANELS = {
    "norm": "gradient norm of each task's weighted loss (log scale)",
    "cos": "cosine between two tasks' gradients",
    "share": "reader's share of the reused branch's gradient",
}


def diagnostic_figure(
    groups: dict[str, list[Run]], name: str, panels: list[tuple[str, list[str]]], colours: dict[str, tuple]
):
    """One diagnostics figure: a panel per kind of number, a line per report row (colour) and
    key (line style), the mean over seeds of the training rows; None when nothing was logged."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    panels = [(what, keys) for what, keys in panels if keys]
    fig = Figure(figsize=(8, 3.2 * len(panels) + 0.6), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    drawn = False
    rows_seen: dict[str, tuple] = {}
    for index, (what, keys) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, index + 1)
        key_handles = []
        for k, key in enumerate(keys):
            style, marker = KEY_STYLES[k % len(KEY_STYLES)][0], KEY_MARKERS[k % len(KEY_MARKERS)]
            key_handles.append(
                Line2D(
                    [], [], color="0.3", linestyle=style, marker=marker, label=printable("/".join(key.split("/")[2:]))
                )
            )
            for label, runs in groups.items():
                epochs, mean, _ = curve(runs, "train", key)
                if len(epochs) == 0:
                    continue
                drawn = True
                rows_seen[label] = colours[label]
                ax.plot(
                    epochs,
                    mean,
                    linestyle=style if len(epochs) > 1 else "none",
                    marker=marker,
                    color=colours[label],
                    linewidth=1.6,
                    markersize=5,
                )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if what == "norm":
            ax.set_yscale("log")
        elif what == "cos":
            ax.set_ylim(-1.05, 1.05)
            ax.axhline(0.0, color="0.5", linewidth=0.8)
        else:
            ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(what)
        ax.set_title(DIAGNOSTIC_PANELS[what], fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(handles=key_handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        if index == len(panels) - 1:
            ax.set_xlabel("epoch (training rows; fixed diagnostic batches)")
    if not drawn:
        return None
    fig.suptitle(
        ("gradient diagnostics: " + printable(name[len("diag_") :]))
        if name != "diag_share"
        else "gradient diagnostics: reuse shares"
    )
    fig.legend(
        handles=[Line2D([], [], color=c, linewidth=2.5, label=printable(l)) for l, c in rows_seen.items()],
        loc="outside lower center",
        ncols=min(4, len(rows_seen)),
        fontsize=8,
        frameon=False,
    )
    return fig


def save_figure(fig, path: Path, suffix: str) -> None:
    """``fig`` as ``suffix`` (png, svg) to ``path`` through graphc's one writer (graphc.files): drawn
    in memory first, so a link planted at ``path`` is replaced, never followed, and nothing is torn."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=suffix, metadata={"Date": None} if suffix == "svg" else None)
    atomic_write_bytes(path, buffer.getvalue())


def file_stem(name: str) -> str:
    """A file name (without suffix) for a figure named after metric keys, which come from run folders:
    kept as it is when it is plain (``fine_acc``, ``coarse_acc_from_fine``), else its unsafe characters
    (separators, controls, ...) as ``_`` with a short hash, so no key can name a path elsewhere."""
    if re.fullmatch(r"[A-Za-z0-9_.+=@-]{1,120}", name) and not name.startswith("."):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_.+=@-]', '_', name)[:100].lstrip('.')}-{digest}"


def plot_curves(groups: dict[str, list[Run]], out_dir: Path) -> list[Path]:
    """Write one figure per plotted metric as ``<task>_<metric>.png`` and ``.svg`` (``fine_acc``,
    ``coarse_acc_from_fine``, ``mean_acc``), and the gradient diagnostics' as ``diag_*`` (diagnostic_figures);
    ``groups`` maps a row label to its runs. Returns the paths."""
    import matplotlib

    colours = spec_colours(list(groups))
    written = []

    def save(fig, stem: str) -> None:
        if fig is None:
            return
        for suffix in ("png", "svg"):
            path = Path(out_dir) / f"{file_stem(stem)}.{suffix}"
            save_figure(fig, path, suffix)
            written.append(path)

    # Fixed hash salt and no date: the same runs give byte-identical SVGs. Labels (tags, spec names,
    # metric names) are text from run folders, never TeX: a '$' in one must not start mathtext.
    with matplotlib.rc_context({"svg.hashsalt": "graphc", "font.size": 10, "text.parse_math": False}):
        for key in plotted_metrics(groups):
            save(metric_figure(groups, key, colours), key.replace("/", "_"))
        for name, panels in diagnostic_figures(groups).items():
            save(diagnostic_figure(groups, name, panels, colours), name)
    return written
