"""Confusion-matrix pictures for ``graphc eval RUN --confusion DIR``: one per head, PNG and SVG.

Rows are the true classes, columns the predicted ones, both labelled with the class
names. The colour of a cell is the share of the true class's images predicted as the
column's class (so a rare class is as visible as a common one), with a colour bar; the
counts are written in the cells only up to ANNOTATE_MAX classes, beyond which they
would not be legible. The figure grows with the number of classes and the labels
shrink, so 100 classes stay readable (zoom into the SVG).

Uses matplotlib's object API with the Agg canvas (no pyplot), as runtime/report/plots.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

ANNOTATE_MAX = 20  # classes up to which each cell shows its count


def plot_confusion(matrix, class_names: Sequence[str], title: str, stem: Path) -> list[Path]:
    """Draw ``matrix`` (true x predicted counts) to ``stem``.png and ``stem``.svg; returns the paths."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from graphc.runtime.report.plots import save_figure

    counts = np.asarray(matrix, dtype=np.int64)
    n = counts.shape[0]
    support = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, support, out=np.zeros(counts.shape, dtype=float), where=support > 0)
    side = float(np.clip(2.5 + 0.17 * n, 5.0, 24.0))  # inches: about 0.17 inch per class
    label_size = 9.0 if n <= ANNOTATE_MAX else float(np.clip(900.0 / (n * 1.6), 4.0, 8.0))
    written = []
    # Fixed hash salt and no date: the same matrix gives byte-identical SVGs. Class names are
    # text from folders, never TeX: a '$' in one must not start mathtext.
    with matplotlib.rc_context({"svg.hashsalt": "graphc", "font.size": 10, "text.parse_math": False}):
        fig = Figure(figsize=(side + 1.5, side), dpi=150 if n > ANNOTATE_MAX else 120, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
        bar = fig.colorbar(image, ax=ax, shrink=0.8 if n > ANNOTATE_MAX else 0.9)
        bar.set_label("share of the true class's images")
        ax.set_xticks(range(n), labels=list(class_names), rotation=90, fontsize=label_size)
        ax.set_yticks(range(n), labels=list(class_names), fontsize=label_size)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title, fontsize=11)
        if n <= ANNOTATE_MAX:
            for true in range(n):
                for predicted in range(n):
                    if counts[true, predicted]:
                        dark = share[true, predicted] > 0.5
                        ax.text(
                            predicted,
                            true,
                            str(counts[true, predicted]),
                            ha="center",
                            va="center",
                            fontsize=8,
                            color="white" if dark else "black",
                        )
        for suffix in ("png", "svg"):  # through graphc's one writer: a planted link is replaced, not followed
            path = Path(f"{stem}.{suffix}")
            save_figure(fig, path, suffix)
            written.append(path)
    return written


def write_confusion(evaluation, out_dir: Path) -> list[Path]:
    """One picture per head of a graphc.runtime.evaluate.RunEvaluation, ``OUT/<task>_confusion.{png,svg}``."""
    from graphc.runtime.report.plots import file_stem

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for task, matrix in evaluation.confusion.items():
        m = evaluation.metrics
        names = evaluation.class_names.get(task) or [str(i) for i in range(len(matrix))]
        title = (
            f"{evaluation.graph.name} {task}: {evaluation.split} split, {int(matrix.sum()):,} images\n"
            f"accuracy {m[f'{task}/acc']:.1%}, balanced {m[f'{task}/balanced_acc']:.1%}, "
            f"majority baseline {m[f'{task}/majority_acc']:.1%}"
        )
        written += plot_confusion(matrix.numpy(), names, title, out_dir / f"{file_stem(task)}_confusion")
    return written
