"""The cheap scores of graphc branch --score (graphc.runtime.branching.scores) against hand computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import graphc
from graphc.runtime.branching.scores import (
    NOTHING_SHARED,
    SIMILARITY,
    linear_cka,
    lookahead_affinity,
    node_features,
    recommend,
    score_family,
    scores_table,
    table_outputs,
)
from graphc.runtime.data.split import Dataset, Split
from graphc.runtime.metrics import HeadInfo

TWO_STAGE_SPEC = """\
name = "two_stage"

[[nodes]]
name = "image"
kind = "input"
shape = [3, 8, 8]

[[nodes]]
name = "stage1"
kind = "conv_block"
input = "image"
channels = [4]
pool = "max"

[[nodes]]
name = "stage2"
kind = "conv_block"
input = "stage1"
channels = [4]
pool = "max"

[[nodes]]
name = "fine_head"
kind = "head"
input = "stage2"
task = "fine"

[[nodes]]
name = "coarse_head"
kind = "head"
input = "stage2"
task = "coarse"

[data]
dataset = "synthetic"
synthetic = { classes = 4, coarse_classes = 2 }

[train]
batch_size = 8
"""


def tiny_dataset(n_train: int = 32, n_val: int = 16) -> Dataset:
    generator = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        fine = torch.randint(0, 4, (n,), generator=generator)
        images = torch.randint(0, 256, (n, 3, 8, 8), generator=generator, dtype=torch.uint8)
        return Split(images=images, labels={"fine": fine, "coarse": fine // 2})

    names = {"fine": [f"f{i}" for i in range(4)], "coarse": ["c0", "c1"]}
    return Dataset(
        "synthetic", split(n_train), split(n_val), split(8), names, {("fine", "coarse"): torch.tensor([0, 0, 1, 1])}
    )


class TwoTasks(torch.nn.Module):
    """A linear shared layer and one linear head per task."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.shared = torch.nn.Linear(3, 2)
        self.a = torch.nn.Linear(2, 2)
        self.b = torch.nn.Linear(2, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))

    def forward(self, x):
        h = self.shared(x)
        return {"a": self.a(h), "b": self.b(h)}


def test_lookahead_affinity_matches_a_hand_computed_step():
    model = TwoTasks()
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    labels = {"a": torch.tensor([0, 1, 1, 0, 1]), "b": torch.tensor([2, 0, 1, 1, 0])}
    heads = [HeadInfo("a", 2, 1.0, 0.0), HeadInfo("b", 3, 1.0, 0.0)]
    lr = 0.5
    shared = {"shared.weight": model.shared.weight, "shared.bias": model.shared.bias}

    def losses(weight, bias):
        h = x @ weight.T + bias
        return (
            torch.nn.functional.cross_entropy(model.a(h), labels["a"]),
            torch.nn.functional.cross_entropy(model.b(h), labels["b"]),
        )

    w, b = model.shared.weight.detach().clone().requires_grad_(), model.shared.bias.detach().clone().requires_grad_()
    la, lb = losses(w, b)
    ga = torch.autograd.grad(la, (w, b), retain_graph=True)
    gb = torch.autograd.grad(lb, (w, b))
    with torch.no_grad():
        la_after_b, _ = losses(w - lr * gb[0], b - lr * gb[1])
        _, lb_after_a = losses(w - lr * ga[0], b - lr * ga[1])
    expected = {"a->b": 1 - float(lb_after_a) / float(lb.detach()), "b->a": 1 - float(la_after_b) / float(la.detach())}

    gradients = {
        "a": {"shared.weight": ga[0], "shared.bias": ga[1]},
        "b": {"shared.weight": gb[0], "shared.bias": gb[1]},
    }
    found = lookahead_affinity(model, (x, labels), heads, gradients, lr, shared, seed=0)
    assert found == pytest.approx(expected, rel=1e-5)
    assert expected["a->b"] != pytest.approx(expected["b->a"])  # the pairs are ordered: a test that can tell them apart
    # The model itself is not stepped.
    assert torch.equal(model.shared.weight, w.detach())


def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. 2019, eq. 3-4: HSIC with the centring matrix H = I - 11^T / n, linear kernels."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(p, q):
        return np.trace(p @ h @ q @ h)

    return hsic(k, l_) / math.sqrt(hsic(k, k) * hsic(l_, l_))


@pytest.mark.parametrize("widths", [(3, 2), (40, 30)])  # the feature form and the Gram form
def test_linear_cka_matches_the_hsic_formula(widths):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, widths[0]))
    y = x[:, :1] @ rng.normal(size=(1, widths[1])) + 0.5 * rng.normal(size=(10, widths[1]))
    assert linear_cka(torch.tensor(x), torch.tensor(y)) == pytest.approx(hsic_cka(x, y), rel=1e-9)
    # Invariant to an orthogonal transform and a scale, 1 against itself.
    q, _ = np.linalg.qr(rng.normal(size=(widths[0], widths[0])))
    assert linear_cka(torch.tensor(x), torch.tensor(3 * x @ q)) == pytest.approx(1.0)


def test_node_features_reads_any_node_of_the_compiled_module():
    graph = graphc.build_graph(graphc.parse_spec(TWO_STAGE_SPEC))
    model = graphc.compile_graph(graph, seed=0).eval()
    x = torch.rand(2, 3, 8, 8)
    found = node_features(model, x, ["stage1", "stage2"])
    with torch.no_grad():
        assert torch.allclose(found["stage2"], model.stage2(model.stage1(x)))
    assert found["stage1"].shape == (2, 4, 4, 4)


@pytest.fixture(scope="module")
def scored():
    spec = graphc.parse_spec(TWO_STAGE_SPEC)
    lines = []
    scores = score_family(
        spec, [None, "stage1", "stage2"], epochs=1, images=32, seed=3, dataset=tiny_dataset(), report=lines.append
    )
    return spec, scores, lines


def test_score_family_on_tiny_data(scored):
    spec, scores, lines = scored
    assert json.loads(json.dumps(scores)) == scores  # JSON-able as it is
    assert scores["settings"]["similarity"] == SIMILARITY
    assert scores["settings"]["steps"] == 4  # 32 images, batches of 8, 1 epoch
    assert lines, "progress is reported"
    assert set(scores["conflict"]) == {"stage1", "stage2"}
    for by_pair in scores["conflict"].values():
        assert set(by_pair) == {"coarse:fine"}
        assert all(-1 <= v <= 1 for v in by_pair.values())
    assert set(scores["affinity"]) == {"fine->coarse", "coarse->fine"}
    assert all(math.isfinite(v) for v in scores["affinity"].values())
    # Everything up to the last shared node is every shared parameter: the same lookahead.
    assert scores["affinity_by_node"]["stage2"] == pytest.approx(scores["affinity"])
    assert scores["affinity_by_node"]["stage1"] != pytest.approx(scores["affinity"])
    assert all(0 <= v <= 1 + 1e-9 for node in scores["similarity"].values() for v in node.values())
    rows = {r["branch_point"]: r["score"] for r in scores["candidates"]}
    assert rows[None]["similarity"] is None and rows[None]["conflict_kept"] is None
    assert rows[None]["conflict_split"] == pytest.approx(
        (scores["conflict"]["stage1"]["coarse:fine"] + scores["conflict"]["stage2"]["coarse:fine"]) / 2
    )
    assert rows["stage1"]["conflict_kept"] == pytest.approx(scores["conflict"]["stage1"]["coarse:fine"])
    assert rows["stage2"]["conflict_split"] is None
    assert rows["stage1"]["similarity"] == pytest.approx(scores["similarity"]["stage1"]["coarse:fine"])


def test_score_family_is_deterministic_given_the_seed(scored):
    spec, scores, _ = scored
    again = score_family(
        spec, [None, "stage1", "stage2"], epochs=1, images=32, seed=3, dataset=tiny_dataset(), report=lambda _: None
    )
    for key in ("conflict", "affinity", "affinity_by_node", "similarity", "candidates"):
        assert again[key] == scores[key]


def made_up_scores(similarities: dict) -> dict:
    return {
        "candidates": [
            {
                "branch_point": bp,
                "score": {"similarity": s, "affinity": 0.0, "conflict_kept": None, "conflict_split": None},
            }
            for bp, s in similarities.items()
        ]
    }


def test_recommend_follows_similarity_then_the_budget():
    scores = made_up_scores({None: None, "stage1": 0.95, "stage2": 0.9, "stage3": 0.4})
    params = {None: 3000, "stage1": 2500, "stage2": 2000, "stage3": 1500}
    # Similar tasks up to stage2, not at stage3: branch after stage2.
    chosen, rule = recommend(scores, params, None)
    assert chosen == "stage2" and "similarity" in rule and ">= 0.7" in rule
    # A budget stage2 does not fit: the nearest deeper branch point that fits.
    chosen, rule = recommend(scores, params, 1800)
    assert chosen == "stage3" and "1,800" in rule and "over" in rule
    # Nothing fits: the smallest, said so.
    chosen, rule = recommend(scores, params, 100)
    assert chosen == "stage3" and "no candidate fits" in rule
    # Dissimilar from the first node on: nothing shared.
    chosen, _ = recommend(
        made_up_scores({None: None, "stage1": 0.1, "stage2": 0.9}), {None: 10, "stage1": 5, "stage2": 4}, None
    )
    assert chosen == NOTHING_SHARED


def test_scores_table_has_a_row_per_candidate(scored):
    _, scores, _ = scored
    rows = scores_table(scores, {"nothing_shared": 900, "after_stage1": 700, "stage2": 500})
    assert [r["candidate"] for r in rows] == [NOTHING_SHARED, "stage1", "stage2"]
    assert [r["params"] for r in rows] == [900, 700, 500]
    chosen, rule = recommend(scores, {None: 900, "stage1": 700, "stage2": 500}, 600)
    assert chosen == "stage2" and rule


def test_a_repeated_table_is_scored_at_its_last_node():
    text = TWO_STAGE_SPEC.replace(
        'pool = "max"\n\n[[nodes]]\nname = "stage2"', 'pool = "max"\nrepeat = 2\n\n[[nodes]]\nname = "stage2"', 1
    )
    spec = graphc.parse_spec(text)
    assert [n.name for n in spec.nodes][1:3] == ["stage1_1", "stage1_2"]
    graph = graphc.build_graph(spec)
    assert table_outputs(spec, graph)["stage1"] == "stage1_2"
    scores = score_family(
        spec, [None, "stage1", "stage2"], epochs=1, images=16, dataset=tiny_dataset(), report=lambda _: None
    )
    assert set(scores["similarity"]) == {"stage1", "stage2"}
    # Up to stage1 (the table): both of its nodes stepped, stage2 not - so not the all-shared affinity.
    assert scores["affinity_by_node"]["stage1"] != pytest.approx(scores["affinity"])
    assert scores["candidates"][1]["score"]["conflict_kept"] == pytest.approx(
        (scores["conflict"]["stage1_1"]["coarse:fine"] + scores["conflict"]["stage1_2"]["coarse:fine"]) / 2
    )


def test_score_family_reads_a_label_table_as_the_heads_say(tmp_path, monkeypatch):
    # score_family loads the data itself: a label table's columns must be read as graphc train reads them
    # (a classification and a binary column here), not only [data] label
    from PIL import Image

    monkeypatch.setenv("GRAPHC_DATA", str(tmp_path / "graphc-data"))
    root = tmp_path / "table"
    (root / "img").mkdir(parents=True)
    rows = {"train": range(12), "test": range(12, 14)}
    for split, numbers in rows.items():
        lines = ["image,kind,tall"]
        for i in numbers:
            Image.fromarray(np.full((8, 8, 3), 10 * i, dtype=np.uint8), "RGB").save(root / "img" / f"{i}.png")
            lines.append(f"img/{i}.png,{'cat' if i % 2 else 'dog'},{'yes' if i % 3 else ''}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    text = (
        TWO_STAGE_SPEC.replace('task = "fine"', 'task = "kind"\nclasses = ["cat", "dog"]')
        .replace('task = "coarse"', 'task = "tall"\ntype = "binary"')
        .replace(
            'dataset = "synthetic"\nsynthetic = { classes = 4, coarse_classes = 2 }',
            f'dataset = "table"\nroot = "{root}"',
        )
        .replace("batch_size = 8", "batch_size = 4")
    )
    (tmp_path / "spec.toml").write_text(text)
    spec = graphc.load_spec(tmp_path / "spec.toml")
    result = score_family(spec, [None, "stage1", "stage2"], epochs=1, images=8, report=lambda line: None)
    assert set(result["affinity"]) == {"kind->tall", "tall->kind"}
    assert all(math.isfinite(v) for v in result["affinity"].values())
