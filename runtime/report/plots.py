"""Learning curves for graphc report: per head, accuracy and loss against epoch.

One figure per head and metric (the original study's four plots for fine/coarse):
one colour per spec - the same in every figure - validation solid, training dashed,
the mean over seeds with a band of +/- one sample standard deviation where at least
two seeds reached that epoch. Written as PNG and SVG.

Uses matplotlib's object API with the Agg canvas (no pyplot), so nothing global
changes and it works without a display.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from runtime.report.build import Run

STYLES = {"val": ("-", "validation", 0.18), "train": ("--", "training", 0.08)}  # line, label, band alpha


def spec_colours(specs: list[str]) -> dict[str, tuple]:
    """A fixed colour per spec, by its position in the report."""
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


def plot_curves(groups: dict[str, list[Run]], out_dir: Path) -> list[Path]:
    """Write ``<task>_acc`` and ``<task>_loss`` as .png and .svg; returns the paths."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    colours = spec_colours(list(groups))
    tasks: list[str] = []
    for runs in groups.values():
        for run in runs:
            tasks += [t for t in run.tasks if t not in tasks]
    written = []
    # Fixed hash salt and no date: the same runs give byte-identical SVGs.
    with matplotlib.rc_context({"svg.hashsalt": "graphc", "font.size": 10}):
        for task in tasks:
            for metric, title in (("acc", "accuracy (%)"), ("loss", "loss (cross-entropy)")):
                key = f"{task}/{metric}"
                scale = 100.0 if metric == "acc" else 1.0
                fig = Figure(figsize=(8, 5), dpi=120, layout="constrained")
                FigureCanvasAgg(fig)
                ax = fig.add_subplot()
                spec_handles, drawn = [], False
                for spec, runs in groups.items():
                    runs = [r for r in runs if task in r.tasks]
                    if not runs:
                        continue
                    colour = colours[spec]
                    for split, (style, _, alpha) in STYLES.items():
                        epochs, mean, std = curve(runs, split, key)
                        if len(epochs) == 0:
                            continue
                        drawn = True
                        marker = "o" if len(epochs) == 1 else None  # a single epoch is a point, not a line
                        ax.plot(epochs, mean * scale, linestyle=style, color=colour, linewidth=1.8, marker=marker)
                        band = ~np.isnan(std)
                        if band.any():
                            ax.fill_between(epochs[band], (mean - std)[band] * scale, (mean + std)[band] * scale,
                                            color=colour, alpha=alpha, linewidth=0)
                    running = sum(r.in_progress for r in runs)
                    label = f"{spec} (n={len(runs)}" + (f", {running} in progress)" if running else ")")
                    spec_handles.append(Line2D([], [], color=colour, linewidth=2.5, label=label))
                if not drawn:
                    continue
                ax.set_title(f"{task}: {title.split(' (')[0]}, mean ± 1 sd over seeds")
                ax.set_xlabel("epoch")
                ax.set_ylabel(f"{task} {title}")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.grid(True, alpha=0.3)
                style_handles = [Line2D([], [], color="0.3", linestyle=s, label=label) for s, label, _ in STYLES.values()]
                # specs first, then what solid and dashed mean; outside the axes when there are many
                handles = spec_handles + style_handles
                if len(handles) > 8:
                    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
                else:
                    ax.legend(handles=handles, loc="best", fontsize=9, framealpha=0.9)
                for suffix in ("png", "svg"):
                    path = Path(out_dir) / f"{task}_{metric}.{suffix}"
                    fig.savefig(path, format=suffix, metadata={"Date": None} if suffix == "svg" else None)
                    written.append(path)
    return written
