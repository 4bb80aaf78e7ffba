"""Loss and metrics of multi-head outputs, checked against plain-Python references."""

from __future__ import annotations

import math

import pytest
import torch

from graphc.runtime.metrics import HeadInfo, Hierarchy, Meter, compute_loss, hierarchies_of, metric_names

FINE = HeadInfo("fine", 12, 2.0, 0.1)
COARSE = HeadInfo("coarse", 3, 1.0, 0.0)
CHILD_TO_PARENT = torch.arange(12) // 4  # fine class -> coarse class


def _batch(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    outputs = {"fine": torch.randn(n, 12, generator=g) * 3, "coarse": torch.randn(n, 3, generator=g) * 3}
    labels = {"fine": torch.randint(0, 12, (n,), generator=g)}
    labels["coarse"] = CHILD_TO_PARENT[labels["fine"]]
    return outputs, labels


def _reference_ce(logits: torch.Tensor, label: int, smoothing: float) -> float:
    """Cross-entropy with label smoothing, written out: (1-e) * -log p_y + e * mean_k(-log p_k)."""
    row = logits.tolist()
    top = max(row)
    log_z = top + math.log(sum(math.exp(v - top) for v in row))
    nll = [log_z - v for v in row]
    return (1 - smoothing) * nll[label] + smoothing * sum(nll) / len(nll)


def test_compute_loss_is_the_weighted_sum_of_per_head_cross_entropies():
    outputs, labels = _batch(9, seed=0)
    total, parts = compute_loss(outputs, labels, [FINE, COARSE])
    for head in (FINE, COARSE):
        expected = (
            sum(_reference_ce(outputs[head.task][i], int(labels[head.task][i]), head.label_smoothing) for i in range(9))
            / 9
        )
        assert parts[head.task].item() == pytest.approx(expected, rel=1e-5)
    assert total.item() == pytest.approx(2.0 * parts["fine"].item() + 1.0 * parts["coarse"].item(), rel=1e-6)


def test_metric_names_follow_the_run_contract():
    hierarchy = Hierarchy("fine", "coarse", CHILD_TO_PARENT)
    assert metric_names([FINE, COARSE], [hierarchy]) == [
        "loss",
        "fine/loss",
        "fine/acc",
        "fine/top5",
        "coarse/loss",
        "coarse/acc",
        "coarse/acc_from_fine",
        "fine/consistency_with_coarse",
        "mean_acc",
        "weighted_acc",
    ]
    # Without a coarse head: the fine head's prediction mapped to coarse still has an accuracy, but no consistency.
    assert metric_names([FINE], [hierarchy]) == [
        "loss",
        "fine/loss",
        "fine/acc",
        "fine/top5",
        "coarse/acc_from_fine",
        "mean_acc",
        "weighted_acc",
    ]
    # Ten classes or fewer: no top-5.
    assert "x/top5" not in metric_names([HeadInfo("x", 10, 1.0, 0.0)], [])


def test_hierarchies_need_the_child_head():
    links = {("fine", "coarse"): CHILD_TO_PARENT}
    assert [(h.child, h.parent) for h in hierarchies_of(links, ["fine", "coarse"])] == [("fine", "coarse")]
    assert [(h.child, h.parent) for h in hierarchies_of(links, ["fine"])] == [("fine", "coarse")]
    assert hierarchies_of(links, ["coarse"]) == []


def test_meter_over_uneven_batches_equals_plain_python_over_all_images():
    heads = [FINE, COARSE]
    meter = Meter(heads, [Hierarchy("fine", "coarse", CHILD_TO_PARENT)], torch.device("cpu"))
    all_outputs, all_labels = {"fine": [], "coarse": []}, {"fine": [], "coarse": []}
    for seed, size in enumerate((7, 16, 3)):
        outputs, labels = _batch(size, seed)
        total, parts = compute_loss(outputs, labels, heads)
        meter.update(outputs, labels, total, parts)
        for t in ("fine", "coarse"):
            all_outputs[t].append(outputs[t])
            all_labels[t].append(labels[t])
    out = {t: torch.cat(v) for t, v in all_outputs.items()}
    lab = {t: torch.cat(v).tolist() for t, v in all_labels.items()}
    n = len(lab["fine"])
    m = meter.compute()

    pred = {t: [max(range(len(row)), key=row.__getitem__) for row in out[t].tolist()] for t in out}
    for head in heads:
        t = head.task
        assert m[f"{t}/acc"] == pytest.approx(sum(p == y for p, y in zip(pred[t], lab[t])) / n)
        ce = sum(_reference_ce(out[t][i], lab[t][i], head.label_smoothing) for i in range(n)) / n
        assert m[f"{t}/loss"] == pytest.approx(ce, rel=1e-5)
    ranked = [sorted(range(12), key=lambda k: -row[k])[:5] for row in out["fine"].tolist()]
    assert m["fine/top5"] == pytest.approx(sum(y in r for r, y in zip(ranked, lab["fine"])) / n)
    assert "coarse/top5" not in m
    parent_of = CHILD_TO_PARENT.tolist()
    assert m["coarse/acc_from_fine"] == pytest.approx(
        sum(parent_of[p] == y for p, y in zip(pred["fine"], lab["coarse"])) / n
    )
    assert m["fine/consistency_with_coarse"] == pytest.approx(
        sum(parent_of[p] == q for p, q in zip(pred["fine"], pred["coarse"])) / n
    )
    assert m["mean_acc"] == pytest.approx((m["fine/acc"] + m["coarse/acc"]) / 2)
    assert m["weighted_acc"] == pytest.approx((2.0 * m["fine/acc"] + 1.0 * m["coarse/acc"]) / 3.0)
    # The logged total (accumulated from the optimised loss) equals the weighted sum of the logged parts.
    assert m["loss"] == pytest.approx(2.0 * m["fine/loss"] + 1.0 * m["coarse/loss"], rel=1e-6)
    assert m["fine/acc"] <= m["fine/top5"]


def test_an_empty_meter_reports_nan():
    m = Meter([COARSE], [], torch.device("cpu")).compute()
    assert math.isnan(m["loss"]) and math.isnan(m["coarse/acc"])
