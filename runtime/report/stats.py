"""The report's tests: whether a row differs from the baseline by more than chance would give.

Two levels of evidence, each a two-sided test at alpha 0.05:

* **seeds**: the paired difference over the seeds both rows have (row minus baseline per seed):
  its mean, a 95% confidence interval from Student's t with n-1 degrees of freedom, and the
  paired t-test's p (needs n >= 2 shared seeds; with n = 2 the interval is wide, as it should be).
* **images**: McNemar's exact test on the test images both runs answered, for accuracies
  (``TASK/acc``; the images with the task's label - a missing one, -1, is skipped): b = images the
  row got right and the baseline wrong, c = the other way round;
  p is the two-sided binomial test of b against b + c with probability 1/2. With several shared
  seeds the discordant counts of each seed's pair of runs are *pooled* (b and c summed over the
  seeds) and tested once: every pair answers the same images, so pooling counts each (image, seed)
  pair once, and one test keeps the Holm family small.

Across the rows compared with one baseline, each metric's p values (one per row, per level) are
Holm-adjusted (:func:`holm`). :func:`verdict` turns the adjusted p values into words: the t-test
decides with >= 3 shared seeds, the image test with fewer (the rule is in its docstring and
docs/reports.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
MIN_SEEDS_FOR_T = 3  # from here the seed-level t-test decides; below, the image test (n=2: one degree of freedom)

BETTER, WORSE, SAME = "better", "worse", "no detectable difference"


@dataclass(frozen=True)
class Paired:
    """The paired difference over shared seeds (row minus baseline)."""

    n: int
    mean: float
    ci95: tuple[float, float]  # nan, nan with fewer than 2 seeds
    p: float  # the paired t-test's two-sided p; nan with fewer than 2 seeds or no spread among the differences


def paired_difference(row: dict[int, float], base: dict[int, float]) -> Paired:
    """Row minus baseline over the seeds both have; Student t interval and test with n-1 df."""
    from scipy import stats

    seeds = sorted(set(row) & set(base))
    diffs = np.array([row[s] - base[s] for s in seeds], dtype=float)
    n = len(diffs)
    if n == 0 or not np.isfinite(diffs).all():
        return Paired(n, math.nan, (math.nan, math.nan), math.nan)
    mean = float(diffs.mean())
    if n < 2:
        return Paired(n, mean, (math.nan, math.nan), math.nan)
    sd = float(diffs.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(mean)):
        # Every seed moved by the same amount (up to float rounding): the t statistic is infinite or
        # 0/0, not evidence. Accuracies on a few hundred images are quantised, so three seeds that each
        # got one more image right do this; the image test (if any) decides instead (verdict()).
        return Paired(n, mean, (mean, mean), math.nan)
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    p = float(stats.ttest_rel(np.array([row[s] for s in seeds]), np.array([base[s] for s in seeds])).pvalue)
    return Paired(n, mean, (mean - half, mean + half), p)


def mcnemar_exact(b: int, c: int) -> float:
    """McNemar's exact two-sided p: b of b + c discordant pairs against probability 1/2; 1.0 with none."""
    from scipy import stats

    if b + c == 0:
        return 1.0
    return float(stats.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)


def discordant(row_correct: list[bool], base_correct: list[bool], true: list[int] | None = None) -> tuple[int, int]:
    """(b, c): images only the row got right, images only the baseline got right. With ``true`` (each
    image's true class), the images whose label is missing (-1, graphc.runtime.data.split.MISSING) are
    left out: neither run can be right or wrong about them."""
    pairs = zip(row_correct, base_correct, true if true is not None else [0] * len(row_correct))
    known = [(r, s) for r, s, t in pairs if t >= 0]
    b = sum(1 for r, s in known if r and not s)
    c = sum(1 for r, s in known if s and not r)
    return b, c


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error), in the given order; nan stays nan and is not
    counted in the family."""
    indexed = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m = len(indexed)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(
    diff_mean: float,
    shared_seeds: int,
    t_p_holm: float,
    image_p_holm: float | None,
    why_not: str | None = None,
    higher_is_better: bool = True,
) -> str:
    """The cell's verdict in words. One test decides, chosen by the number of shared seeds:

    * >= 3 shared seeds (and a t-test p): the seed-level paired t-test. Its Holm p < 0.05 gives
      better/worse, else no detectable difference. The image test is reported but does not decide:
      it holds the trained models fixed, so it cannot see how much retraining with another seed moves
      the result, which three seeds can estimate.
    * the same with 3 or more seeds whose differences do not vary at all (no t-test p: see
      paired_difference) - the image-level test, as below;
    * 1 or 2 shared seeds: the image-level test (McNemar, pooled over the shared seeds) when there
      is one: Holm p < 0.05 gives better/worse, else no detectable difference. Without one:
      cannot tell (``why_not``; one or two seeds are too few for the t-test to decide).
    * no shared seeds: cannot tell (no shared seeds).

    The direction is the sign of the mean paired difference (for an accuracy over the same images it
    is the sign of b - c); for a loss lower is better.
    """
    if shared_seeds == 0:
        return "cannot tell (no shared seeds)"
    if math.isnan(diff_mean):
        return "cannot tell (the difference is not a number)"
    if shared_seeds >= MIN_SEEDS_FOR_T and not math.isnan(t_p_holm):
        p = t_p_holm
    elif image_p_holm is not None and not math.isnan(image_p_holm):
        p = image_p_holm
    else:
        reason = why_not or (
            f"{shared_seeds} shared seed{'s' if shared_seeds != 1 else ''} and no per-image predictions"
        )
        return f"cannot tell ({reason})"
    if p >= ALPHA or diff_mean == 0.0:
        return SAME
    return BETTER if (diff_mean > 0) == higher_is_better else WORSE
