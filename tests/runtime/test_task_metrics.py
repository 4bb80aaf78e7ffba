"""Loss and metrics of binary, multilabel and regression heads, and of labels that may be missing:
every metric against scikit-learn on fixed arrays, the loss against torch's own losses on the
labelled rows alone."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from graphc.ir.metrics import metric_names as names_of
from graphc.runtime.collapse import collapsed_heads
from graphc.runtime.data.split import Split
from graphc.runtime.metrics import (
    Confusion,
    HeadInfo,
    Meter,
    auroc,
    average_precision,
    compute_loss,
    fit_targets,
    heads_of,
    metric_names,
    multilabel_ranks,
)
from graphc.runtime.report.stats import discordant
from graphc.runtime.scoring import Answers

CPU = torch.device("cpu")
BINARY = HeadInfo("smiling", 1, 1.0, 0.0, type="binary", loss="bce", partial=True)
MULTI = HeadInfo("colours", 4, 0.5, 0.0, type="multilabel", loss="bce", partial=True)
SIZE = HeadInfo(
    "size", 2, 2.0, 0.0, type="regression", loss="mse", standardize=True,
    target_mean=(10.0, -3.0), target_std=(4.0, 0.5), partial=True,
)  # fmt: skip
KIND = HeadInfo("kind", 3, 1.0, 0.1, partial=True)


def _data(n: int = 60, seed: int = 0):
    """Outputs and labels of the four heads, some labels missing; binary logits rounded, so scores tie."""
    g = torch.Generator().manual_seed(seed)
    outputs = {
        "smiling": (torch.randn(n, 1, generator=g) * 2).round(decimals=1),
        "colours": (torch.randn(n, 4, generator=g) * 2).round(decimals=1),
        "size": torch.randn(n, 2, generator=g),
        "kind": torch.randn(n, 3, generator=g),
    }
    smiling = torch.randint(0, 2, (n,), generator=g)
    smiling[::7] = -1
    colours = torch.randint(0, 2, (n, 4), generator=g)
    colours[:, 3] = 0  # a label no image has: no average precision, no AUROC
    colours[::5] = -1
    size = torch.randn(n, 2, generator=g) * torch.tensor([4.0, 0.5]) + torch.tensor([11.0, -3.2])
    size[1::6] = float("nan")
    kind = torch.randint(0, 3, (n,), generator=g)
    kind[2::4] = -1
    return outputs, {"smiling": smiling, "colours": colours, "size": size.float(), "kind": kind}


def _metered(heads, outputs, labels, batch=16):
    meter = Meter(heads, [], CPU)
    n = len(next(iter(labels.values())))
    for start in range(0, n, batch):
        rows = slice(start, start + batch)
        out, lab = {t: v[rows] for t, v in outputs.items()}, {t: v[rows] for t, v in labels.items()}
        total, parts = compute_loss(out, lab, heads)
        meter.update(out, lab, total, parts)
    return meter.compute()


# --------------------------------------------------------------------------- names


def test_metric_names_follow_each_head_type_and_the_missing_labels_flag():
    heads = [("kind", 3), ("smiling", 1, "binary"), ("colours", 4, "multilabel"), ("size", 2, "regression")]
    assert names_of(heads, [], partial_labels=True) == [
        "loss",
        *("kind/loss", "kind/acc", "kind/labelled"),
        *("smiling/loss", "smiling/acc", "smiling/balanced_acc", "smiling/auroc", "smiling/f1"),
        *("smiling/positive_rate", "smiling/labelled"),
        *("colours/loss", "colours/mean_auroc", "colours/map", "colours/example_f1", "colours/labelled"),
        *("size/loss", "size/mae", "size/rmse", "size/r2", "size/mean_mae", "size/labelled"),
        "mean_acc",
        "weighted_acc",
    ]
    # without accuracy-typed heads, no mean_acc; a classification head of 11 classes keeps top5
    assert names_of([("size", 1, "regression")], []) == ["loss", "size/loss", "size/mae", "size/rmse", "size/r2"] + [
        "size/mean_mae"
    ]
    assert names_of([("fine", 11)], []) == ["loss", "fine/loss", "fine/acc", "fine/top5", "mean_acc", "weighted_acc"]
    assert metric_names([SIZE], []) == names_of([("size", 2, "regression")], [], partial_labels=True)


def test_heads_of_reads_the_ir_attrs_with_classification_defaults():
    def graph(dataset, *attrs):
        return SimpleNamespace(data=SimpleNamespace(dataset=dataset), heads=[SimpleNamespace(attrs=a) for a in attrs])

    old = {"task": "fine", "classes": 10, "loss_weight": 1, "label_smoothing": 0.1}  # an IR before types
    typed = {"task": "age", "classes": 1, "loss_weight": 2, "label_smoothing": 0.0, "type": "regression"}
    typed |= {"loss": "huber", "standardize": True, "pos_weight": None}
    binary = {"task": "smiling", "classes": 1, "loss_weight": 1, "label_smoothing": 0.0, "type": "binary"}
    binary |= {"loss": "bce", "pos_weight": 3, "standardize": False}
    assert heads_of(graph("cifar10", old)) == [HeadInfo("fine", 10, 1.0, 0.1)]
    age, smiling = heads_of(graph("table", typed, binary))
    assert age == HeadInfo("age", 1, 2.0, 0.0, type="regression", loss="huber", standardize=True, partial=True)
    assert smiling.pos_weight == 3.0 and smiling.type == "binary" and smiling.answers == 2


def test_fit_targets_takes_the_labelled_training_rows():
    values = torch.tensor([[1.0, 5.0], [3.0, 5.0], [float("nan"), float("nan")], [5.0, 5.0]])
    split = Split(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), {"size": values, "kind": torch.tensor([0, 1, -1, 2])})
    plain = HeadInfo("size", 2, 1.0, 0.0, type="regression", loss="mse")
    size, kind = fit_targets([plain, KIND], split)
    assert kind == KIND  # classification heads: as they were
    assert size.target_mean == pytest.approx((3.0, 5.0))
    assert size.target_std == pytest.approx((np.std([1.0, 3.0, 5.0]), 1.0))  # population std; constant -> 1
    one = Split(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), {"size": values[1:3]})
    assert fit_targets([plain], one)[0].target_std == (1.0, 1.0)  # one labelled row: no spread


def test_recorded_targets_that_do_not_fit_the_heads_are_a_run_error_not_a_silent_broadcast():
    from graphc.errors import RunError
    from graphc.runtime.metrics import targets_of

    plain = HeadInfo("size", 2, 1.0, 0.0, type="regression", loss="mse", standardize=True)
    fits = SimpleNamespace(targets={"size": SimpleNamespace(mean=[1.0, 2.0], std=[3.0, 4.0])})
    assert targets_of([plain, KIND], fits, None)[0].target_std == (3.0, 4.0)  # a resume: the run's own numbers
    short = SimpleNamespace(targets={"size": SimpleNamespace(mean=[1.0], std=[3.0])})  # (B, 2) - (1,) broadcasts
    with pytest.raises(RunError, match="head 'size' has 2 output"):
        targets_of([plain, KIND], short, None)
    other = SimpleNamespace(targets={"kind": SimpleNamespace(mean=[1.0, 2.0, 3.0], std=[1.0, 1.0, 1.0])})
    with pytest.raises(RunError, match="'kind' is not a regression head"):
        targets_of([plain, KIND], other, None)


# --------------------------------------------------------------------------- loss


@pytest.mark.parametrize("head", [BINARY, MULTI, SIZE, KIND], ids=lambda h: h.type)
def test_a_batch_without_labels_gives_exactly_zero_loss_and_zero_gradient(head):
    outputs, labels = _data(8)
    output = outputs[head.task].clone().requires_grad_()
    missing = torch.full_like(labels[head.task], float("nan") if head.type == "regression" else -1)
    total, parts = compute_loss({head.task: output}, {head.task: missing}, [head])
    assert parts[head.task].item() == 0.0 and total.item() == 0.0
    total.backward()
    assert output.grad is not None and torch.equal(output.grad, torch.zeros_like(output))


@pytest.mark.parametrize("head", [BINARY, MULTI, SIZE, KIND], ids=lambda h: h.type)
def test_a_partly_labelled_batch_has_the_loss_of_its_labelled_rows_alone(head):
    outputs, labels = _data(40)
    output = outputs[head.task].clone().requires_grad_()
    _, parts = compute_loss({head.task: output}, {head.task: labels[head.task]}, [head])
    rows = (
        ~torch.isnan(labels[head.task]).any(1)
        if head.type == "regression"
        else labels[head.task].view(40, -1)[:, 0] >= 0
    )
    assert 0 < int(rows.sum()) < 40
    _, alone = compute_loss({head.task: outputs[head.task][rows]}, {head.task: labels[head.task][rows]}, [head])
    assert parts[head.task].item() == pytest.approx(alone[head.task].item(), rel=1e-6)
    parts[head.task].backward()
    assert torch.equal(output.grad[~rows], torch.zeros_like(output.grad[~rows]))  # missing rows: no gradient
    assert output.grad[rows].abs().sum() > 0


def test_binary_and_multilabel_losses_are_torch_bce_with_pos_weight():
    outputs, labels = _data(30)
    weighted = [HeadInfo("smiling", 1, 1.0, 0.0, type="binary", loss="bce", pos_weight=2.5)]
    weighted.append(HeadInfo("colours", 4, 1.0, 0.0, type="multilabel", loss="bce", pos_weight=0.5))
    total, parts = compute_loss(outputs, labels, weighted)
    rows = labels["smiling"] >= 0
    bce = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([2.5]))
    want = bce(outputs["smiling"][rows], labels["smiling"][rows, None].float())
    assert parts["smiling"].item() == pytest.approx(want.item(), rel=1e-6)
    rows = labels["colours"][:, 0] >= 0
    bce = torch.nn.BCEWithLogitsLoss(pos_weight=torch.full((4,), 0.5))  # the mean over labels and images
    want_multi = bce(outputs["colours"][rows], labels["colours"][rows].float())
    assert parts["colours"].item() == pytest.approx(want_multi.item(), rel=1e-6)
    assert total.item() == pytest.approx(want.item() + want_multi.item(), rel=1e-6)


@pytest.mark.parametrize(("loss", "torch_loss"), [("mse", torch.nn.MSELoss()), ("l1", torch.nn.L1Loss())])
def test_regression_loss_is_on_z_scored_targets_when_the_head_standardizes(loss, torch_loss):
    outputs, labels = _data(30)
    rows = ~torch.isnan(labels["size"]).any(1)
    z = (labels["size"][rows] - torch.tensor([10.0, -3.0])) / torch.tensor([4.0, 0.5])
    head = HeadInfo("size", 2, 1.0, 0.0, type="regression", loss=loss, standardize=True)
    head = HeadInfo(**{**head.__dict__, "target_mean": (10.0, -3.0), "target_std": (4.0, 0.5)})
    _, parts = compute_loss(outputs, labels, [head])
    assert parts["size"].item() == pytest.approx(torch_loss(outputs["size"][rows], z).item(), rel=1e-6)
    raw = HeadInfo(**{**head.__dict__, "standardize": False})  # the same numbers, targets as they are
    _, parts = compute_loss(outputs, labels, [raw])
    assert parts["size"].item() == pytest.approx(torch_loss(outputs["size"][rows], labels["size"][rows]).item())
    huber = HeadInfo(**{**head.__dict__, "loss": "huber"})
    _, parts = compute_loss(outputs, labels, [huber])
    want = torch.nn.HuberLoss(delta=1.0)(outputs["size"][rows], z)
    assert parts["size"].item() == pytest.approx(want.item(), rel=1e-6)


def test_bf16_outputs_give_a_float32_loss_near_the_float32_one():
    outputs, labels = _data(40)
    heads = [BINARY, MULTI, SIZE, KIND]
    total, parts = compute_loss(outputs, labels, heads)
    low = {t: v.to(torch.bfloat16).requires_grad_() for t, v in outputs.items()}
    total16, parts16 = compute_loss(low, labels, heads)
    assert total16.dtype == torch.float32 and math.isfinite(total16.item())
    assert total16.item() == pytest.approx(total.item(), rel=2e-2)
    total16.backward()
    assert all(v.grad.dtype == torch.bfloat16 and torch.isfinite(v.grad.float()).all() for v in low.values())
    meter = Meter(heads, [], CPU)
    meter.update(low, labels, total16, parts16)
    assert math.isfinite(meter.compute()["smiling/auroc"])


# --------------------------------------------------------------------------- metrics against scikit-learn


def test_binary_metrics_match_scikit_learn_over_the_labelled_images():
    outputs, labels = _data(90)
    m = _metered([BINARY], outputs, labels)
    rows = (labels["smiling"] >= 0).numpy()
    truth, logit = labels["smiling"].numpy()[rows], outputs["smiling"].view(-1).numpy()[rows]
    predicted = (logit > 0).astype(int)
    assert m["smiling/labelled"] == rows.sum() < 90
    assert m["smiling/acc"] == pytest.approx(sk.accuracy_score(truth, predicted))
    assert m["smiling/balanced_acc"] == pytest.approx(sk.balanced_accuracy_score(truth, predicted))
    assert m["smiling/auroc"] == pytest.approx(sk.roc_auc_score(truth, logit))
    assert m["smiling/f1"] == pytest.approx(sk.f1_score(truth, predicted))
    assert m["smiling/positive_rate"] == pytest.approx(predicted.mean())
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    want = bce(torch.from_numpy(logit), torch.from_numpy(truth).float())
    assert m["smiling/loss"] == pytest.approx(want.item(), rel=1e-6)
    assert m["mean_acc"] == m["weighted_acc"] == m["smiling/acc"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_average_precision_match_scikit_learn_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 6, (50,), generator=g).float() / 2  # many ties
    truth = torch.randint(0, 2, (50,), generator=g)
    assert auroc(scores, truth) == pytest.approx(sk.roc_auc_score(truth.numpy(), scores.numpy()))
    want = sk.average_precision_score(truth.numpy(), scores.numpy())
    assert average_precision(scores, truth) == pytest.approx(want)
    assert math.isnan(auroc(scores, torch.ones(50, dtype=torch.int64)))  # one answer only
    assert math.isnan(average_precision(scores, torch.zeros(50, dtype=torch.int64)))  # no positive


def test_multilabel_metrics_match_scikit_learn_over_the_labelled_images():
    outputs, labels = _data(90)
    labels["colours"][labels["colours"][:, 0] >= 0, 2] = 1  # every labelled image has label 2: no AUROC for it
    m = _metered([MULTI], outputs, labels)
    rows = (labels["colours"][:, 0] >= 0).numpy()
    truth, scores = labels["colours"].numpy()[rows], outputs["colours"].numpy()[rows]
    assert m["colours/labelled"] == rows.sum()
    aurocs = [sk.roc_auc_score(truth[:, k], scores[:, k]) for k in (0, 1)]  # labels 2 and 3: one answer only
    assert m["colours/mean_auroc"] == pytest.approx(np.mean(aurocs))
    precisions = [sk.average_precision_score(truth[:, k], scores[:, k]) for k in (0, 1, 2)]  # 3: no positive
    assert m["colours/map"] == pytest.approx(np.mean(precisions))
    ranks = multilabel_ranks(torch.from_numpy(scores), torch.from_numpy(truth))
    assert ranks == pytest.approx((m["colours/mean_auroc"], m["colours/map"]))
    predicted = (scores > 0).astype(int)
    predicted[0] = truth[0] = 0  # an image with no label and no answer: f1 1 (zero_division=1)
    labels["colours"][np.flatnonzero(rows)[0]] = 0
    outputs["colours"][np.flatnonzero(rows)[0]] = -1.0
    m = _metered([MULTI], outputs, labels)
    want = sk.f1_score(truth, predicted, average="samples", zero_division=1)
    assert m["colours/example_f1"] == pytest.approx(want)
    assert "mean_acc" not in m


def test_regression_metrics_match_scikit_learn_in_the_targets_units():
    outputs, labels = _data(90)
    m = _metered([SIZE], outputs, labels)
    rows = (~torch.isnan(labels["size"]).any(1)).numpy()
    truth = labels["size"].numpy()[rows].astype(np.float64)
    predicted = (outputs["size"].numpy()[rows] * np.array([4.0, 0.5]) + np.array([10.0, -3.0])).astype(np.float64)
    assert m["size/labelled"] == rows.sum()
    assert m["size/mae"] == pytest.approx(sk.mean_absolute_error(truth, predicted), rel=1e-6)
    assert m["size/rmse"] == pytest.approx(sk.root_mean_squared_error(truth, predicted), rel=1e-6)
    assert m["size/r2"] == pytest.approx(sk.r2_score(truth, predicted), rel=1e-6)
    mean = np.broadcast_to([10.0, -3.0], truth.shape)
    assert m["size/mean_mae"] == pytest.approx(sk.mean_absolute_error(truth, mean), rel=1e-6)
    z = (truth - [10.0, -3.0]) / [4.0, 0.5]  # the loss: mse on z-scored targets
    assert m["size/loss"] == pytest.approx(np.mean((outputs["size"].numpy()[rows] - z) ** 2), rel=1e-5)
    # constant targets: r2 1 for the perfect answer, 0 otherwise (scikit-learn's force_finite)
    flat = {"size": torch.full((6, 2), 10.0)}
    exact = {"size": torch.tensor([[0.0, 26.0]]).repeat(6, 1)}  # 0*4+10 = 10, 26*0.5-3 = 10
    assert _metered([SIZE], exact, flat)["size/r2"] == pytest.approx(1.0)
    assert _metered([SIZE], {"size": exact["size"] + 1}, flat)["size/r2"] == pytest.approx(0.0)


def test_classification_metrics_skip_missing_labels_and_count_mixed_heads_apart():
    outputs, labels = _data(90)
    heads = [KIND, BINARY, MULTI, SIZE]
    m = _metered(heads, outputs, labels)
    rows = labels["kind"] >= 0
    acc = (outputs["kind"].argmax(1)[rows] == labels["kind"][rows]).float().mean().item()
    assert m["kind/labelled"] == rows.sum().item() and m["kind/acc"] == pytest.approx(acc)
    assert m["mean_acc"] == pytest.approx((acc + m["smiling/acc"]) / 2)  # classification and binary only
    assert m["weighted_acc"] == pytest.approx((acc * 1.0 + m["smiling/acc"] * 1.0) / 2)
    assert m["size/labelled"] != m["kind/labelled"]
    # the total: each batch's loss (its heads' masked means, weighted) weighted by the batch's images
    totals = [compute_loss({t: v[i : i + 16] for t, v in outputs.items()}, {t: v[i : i + 16] for t, v in labels.items()}, heads)[0] for i in range(0, 90, 16)]  # fmt: skip
    assert m["loss"] == pytest.approx(sum(t.item() * min(16, 90 - 16 * k) for k, t in enumerate(totals)) / 90)
    assert set(m) == set(metric_names(heads, []))


def test_a_split_without_labels_gives_nan_metrics_and_zero_labelled():
    outputs, labels = _data(8)
    labels["smiling"][:] = -1
    m = _metered([BINARY], outputs, labels)
    assert m["smiling/labelled"] == 0 and m["smiling/loss"] != m["smiling/loss"]
    assert all(math.isnan(m[f"smiling/{k}"]) for k in ("acc", "balanced_acc", "auroc", "f1", "positive_rate"))


# --------------------------------------------------------------------------- final test pass extras


def test_confusion_gives_binary_majority_and_multilabel_label_aurocs():
    outputs, labels = _data(60)
    confusion = Confusion([KIND, BINARY, MULTI, SIZE], CPU, matrix=True)
    for rows in (slice(0, 25), slice(25, 60)):
        confusion.update({t: v[rows] for t, v in outputs.items()}, {t: v[rows] for t, v in labels.items()})
    base = confusion.baselines()
    known = labels["smiling"][labels["smiling"] >= 0]
    assert base["smiling/majority_acc"] == pytest.approx(
        max(known.float().mean().item(), 1 - known.float().mean().item())
    )
    assert set(base) == {"kind/majority_acc", "kind/balanced_acc", "smiling/majority_acc"}
    rows = (labels["kind"] >= 0).numpy()
    truth, predicted = labels["kind"].numpy()[rows], outputs["kind"].argmax(1).numpy()[rows]
    assert base["kind/balanced_acc"] == pytest.approx(sk.balanced_accuracy_score(truth, predicted))
    np.testing.assert_array_equal(confusion.matrices()["kind"].numpy(), sk.confusion_matrix(truth, predicted))
    assert confusion.matrices()["smiling"].shape == (2, 2) and set(confusion.matrices()) == {"kind", "smiling"}
    per_label = confusion.label_aurocs()["colours"]
    rows = (labels["colours"][:, 0] >= 0).numpy()
    want = [
        sk.roc_auc_score(labels["colours"].numpy()[rows, k], outputs["colours"].numpy()[rows, k]) for k in (0, 1, 2)
    ]
    assert per_label[:3] == pytest.approx(want) and math.isnan(per_label[3])


def test_answers_keep_classification_and_binary_heads_with_missing_as_minus_one():
    outputs, labels = _data(10)
    answers = Answers([KIND, BINARY, MULTI, SIZE])
    answers.update(outputs, labels)
    got = answers.collected()
    assert set(got) == {"kind", "smiling"} and answers.classes == {"kind": 3, "smiling": 2}
    assert got["smiling"] == (labels["smiling"].tolist(), (outputs["smiling"].view(-1) > 0).long().tolist())
    assert -1 in got["smiling"][0] and -1 in got["kind"][0]


def test_a_binary_head_collapses_against_chance_one_half():
    metrics = {"smiling/acc": 0.7, "smiling/majority_acc": 0.9, "smiling/balanced_acc": 0.505}
    (entry,) = collapsed_heads(metrics, {"smiling": 1}).values()  # the binary head's one output unit
    assert entry["chance"] == 0.5
    assert collapsed_heads({"size/mae": 1.0}, {"size": 1}) == {}  # no accuracy: not judged


def test_mcnemar_counts_skip_images_without_a_label():
    row, base = [True, False, False, True], [False, True, False, True]
    assert discordant(row, base) == (1, 1)
    assert discordant(row, base, true=[-1, 1, 0, 1]) == (0, 1)


def _two_process_meter(rank: int, size: int, port: int, folder: str) -> None:  # pragma: no cover - in a child
    import torch.distributed as dist

    from graphc.runtime.train.distributed import World

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size)
    try:
        outputs, labels = _data(60)
        share = slice(0, 24) if rank == 0 else slice(24, 60)  # unequal shares: the scores differ in length
        meter = Meter([KIND, BINARY, MULTI, SIZE], [], CPU)
        out, lab = {t: v[share] for t, v in outputs.items()}, {t: v[share] for t, v in labels.items()}
        total, parts = compute_loss(out, lab, meter.heads)
        meter.update(out, lab, total, parts)
        World(rank, size, CPU).reduce_meter(meter)
        torch.save(meter.compute(), f"{folder}/{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_rank_every_image_as_one(tmp_path):
    """With 2 gloo processes, the AUROC and mean average precision rank both processes' images: the
    same as one process's metrics of the whole split (and the summed metrics too)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_two_process_meter, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    outputs, labels = _data(60)
    heads = [KIND, BINARY, MULTI, SIZE]
    one = Meter(heads, [], CPU)
    for share in (slice(0, 24), slice(24, 60)):
        out, lab = {t: v[share] for t, v in outputs.items()}, {t: v[share] for t, v in labels.items()}
        one.update(out, lab, *compute_loss(out, lab, heads))
    want = one.compute()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        for name in ("smiling/auroc", "colours/mean_auroc", "colours/map", "size/r2", "kind/acc", "loss"):
            assert got[name] == pytest.approx(want[name], rel=1e-9), name


def test_constants_made_during_an_evaluation_serve_training():
    """The heads' mean, std and pos_weight are made once per device; the first use may be under
    inference_mode (a validation pass), and training's backward pass must still work with them."""
    outputs, labels = _data(12)
    heads = [
        HeadInfo(
            "size", 2, 1.0, 0.0, type="regression", standardize=True, target_mean=(7.5, 1.0), target_std=(3.5, 2.0)
        ),
        HeadInfo("smiling", 1, 1.0, 0.0, type="binary", loss="bce", pos_weight=7.25),
    ]
    with torch.inference_mode():
        first, _ = compute_loss(outputs, labels, heads)
    trained = {t: v.clone().requires_grad_() for t, v in outputs.items() if t in ("size", "smiling")}
    total, _ = compute_loss(trained, labels, heads)
    total.backward()
    assert total.item() == pytest.approx(first.item()) and trained["size"].grad.abs().sum() > 0


def test_hierarchy_accuracy_counts_the_images_with_the_parent_label():
    from graphc.runtime.metrics import Hierarchy

    fine = HeadInfo("fine", 4, 1.0, 0.0)
    hierarchy = Hierarchy("fine", "coarse", torch.tensor([0, 0, 1, 1]))
    logits = torch.eye(4)[[0, 2, 3, 1]] * 5  # predicted fine 0, 2, 3, 1 -> coarse 0, 1, 1, 0
    labels = {"fine": torch.tensor([0, 2, -1, 0]), "coarse": torch.tensor([0, 0, -1, 0])}
    meter = Meter([fine], [hierarchy], CPU)
    meter.update({"fine": logits}, labels, *compute_loss({"fine": logits}, labels, [fine]))
    m = meter.compute()
    assert m["coarse/acc_from_fine"] == pytest.approx(2 / 3)  # 3 images with a coarse label, 2 right
    assert m["fine/acc"] == pytest.approx(2 / 3)
