"""Cheap scores of a family of branch points (``graphc branch --score``), before any member is trained.

One short multi-task run of the fully shared spec, and one equally short single-task run per task,
give three published measures of how well tasks share, each per candidate branch point:

- **gradient conflict** (as in Recon, ICLR 2023, and graphc's ``--diagnostics``): at every shared node
  with parameters, the cosine between two tasks' loss gradients on the node's parameters
  (graphc.runtime.train.diagnostics.task_gradients / conflict_metrics), measured at every step of the
  score run on that step's batch, before the update; ``conflict`` is its mean over the steps.
- **inter-task affinity by lookahead** (Fifty et al. 2021, "Efficiently Identifying Task Groupings for
  Multi-Task Learning", eq. 1-2): at step t on batch X_t,
  ``Z_t(i -> j) = 1 - L_j(X_t, θ_s - η ∇_{θ_s} L_i(X_t, θ), θ_j) / L_j(X_t, θ_s, θ_j)``: how much one step on task
  i's loss alone lowers task j's loss on the same batch (positive: i helps j; negative: i hurts j). θ_s are
  the shared parameters; the task-specific ones (θ_j) stay as they are. The step is the paper's equation: a
  plain SGD step at the run's learning rate η (``[train.optimizer] lr``). The authors' code applies the
  run's actual optimiser update instead (Adam's, with its moments); graphc uses the plain step - a
  documented simplification that keeps the lookahead independent of the optimiser's state. ``affinity`` is
  the mean of Z_t over the steps, on all shared parameters; ``affinity_by_node[N]`` the same with only the
  shared parameters of N and the shared nodes N reads from (directly or further up) stepped: the affinity
  the tasks would have if they shared up to N and branched after it.
- **representation similarity** (Vandenhende et al. 2019, "Branched Multi-Task Networks"): per candidate
  node, linear centred kernel alignment (CKA, Kornblith et al. 2019) between the node's features in two
  single-task networks, on a fixed set of validation images. Vandenhende et al. use RSA (Spearman
  correlation of dissimilarity matrices); graphc uses linear CKA, the alternative they cite, which needs no
  choice of dissimilarity and is invariant to rotations and scalings of the features. A single-task network
  of task T is the full model, from the same initial weights as the score run, trained on T's loss alone
  (the other heads get no gradient, so they do not change the shared path): the shared path's features are
  exactly those a one-head network would have, without building another spec. Vandenhende et al. start their
  single-task networks from one pretrained initialisation too.

All three runs: the spec's optimiser, batch size and lr; no augmentation; the images in an order drawn from
``seed``; dropout masks from ``seed`` (the caller's random state is left as it was); every node trained
(frozen nodes and schedules are not applied: the score run is a probe, not the member's training).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import combinations
from statistics import fmean

import torch
from torch import fx

import graphc
from graphc.errors import UsageError
from graphc.ir.gradients import shared_nodes
from graphc.ir.graph import Graph
from graphc.ir.metrics import cosine_name
from graphc.lang.spec import Spec
from graphc.runtime.metrics import compute_loss, fit_targets, heads_of
from graphc.runtime.train.diagnostics import conflict_metrics, node_parameters, task_gradients
from graphc.runtime.train.optim import make_optimizer

SIMILARITY = "linear CKA (Kornblith et al. 2019)"
SIMILARITY_IMAGES = 256  # validation images whose features the similarity compares (fewer if the split is smaller)
SIMILARITY_THRESHOLD = 0.7  # recommend: tasks still "similar" at a node (a heuristic, not from the papers)
NOTHING_SHARED = "nothing_shared"  # recommend's name for the candidate None (the family's slug for it)

Batch = tuple[torch.Tensor, dict[str, torch.Tensor]]


# --------------------------------------------------------------------------- measures


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two feature matrices of the same N images (rows), any widths:
    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred Xc, Yc (Kornblith et al. 2019,
    eq. 5), in float64. 1: the same representation up to rotation and scale; near 0: unrelated. NaN when a
    representation is constant over the images (no variance to compare)."""
    x = x.reshape(len(x), -1).double()
    y = y.reshape(len(y), -1).double()
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    # The N x N Gram form is cheaper when features are wider than the image count (conv maps).
    if x.shape[1] + y.shape[1] > 2 * len(x):
        kx, ky = x @ x.T, y @ y.T
        cross, self_x, self_y = (kx * ky).sum(), kx.norm(), ky.norm()
    else:
        cross, self_x, self_y = (y.T @ x).norm() ** 2, (x.T @ x).norm(), (y.T @ y).norm()
    denominator = float(self_x * self_y)
    return float(cross) / denominator if denominator > 0 else math.nan


def lookahead_affinity(
    model: torch.nn.Module,
    batch: Batch,
    heads: Sequence,
    gradients: Mapping[str, torch.Tensor],
    lr: float,
    parameters: Mapping[str, torch.nn.Parameter],
    seed: int,
) -> dict[str, float]:
    """``{"i->j": Z}`` on one batch (Fifty et al. 2021): ``Z(i -> j) = 1 - L_j(θ_s - lr g_i) / L_j(θ_s)``,
    where ``g_i`` (``gradients[i]``: ``{parameter name: gradient}``) is task i's loss gradient on the stepped
    parameters ``parameters`` (``{name: parameter}``, the shared ones), every other parameter as it is.
    Each forward runs with the same dropout masks (drawn from ``seed``) and the model's buffers are put back
    after each, so the losses differ by the step alone. A task whose loss is 0 on the batch (no labels in
    it) gives NaN for the pairs it is the target of."""
    x, labels = batch
    tasks = [h.task for h in heads]
    with torch.no_grad():
        before = _losses(model, x, labels, heads, {}, seed)
        values = {}
        for i in tasks:
            stepped = {name: p - lr * gradients[i][name] for name, p in parameters.items()}
            after = _losses(model, x, labels, heads, stepped, seed)
            for j in tasks:
                if j != i:
                    values[f"{i}->{j}"] = 1.0 - after[j] / before[j] if before[j] > 0 else math.nan
    return values


def _losses(model, x, labels, heads, replaced: Mapping[str, torch.Tensor], seed: int) -> dict[str, float]:
    """Each task's loss on one batch with some parameters replaced (torch.func.functional_call)."""
    with _kept_state(model, x.device, seed):
        outputs = torch.func.functional_call(model, dict(replaced), (x,)) if replaced else model(x)
        _, parts = compute_loss(outputs, labels, list(heads))
    return {task: float(loss) for task, loss in parts.items()}


@contextmanager
def _kept_state(model: torch.nn.Module, device: torch.device, seed: int) -> Iterator[None]:
    """A measuring forward: dropout masks drawn from ``seed``, the global RNG and the buffers (batch norm's
    running statistics) as they were afterwards."""
    buffers = [b.detach().clone() for b in model.buffers()]
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            yield
    finally:
        with torch.no_grad():
            for buffer, saved in zip(model.buffers(), buffers):
                buffer.copy_(saved)


def node_features(model: fx.GraphModule, x: torch.Tensor, nodes: Sequence[str]) -> dict[str, torch.Tensor]:
    """``{node: output}`` of the named graph nodes on ``x`` (one forward through the compiled module).
    compile_graph names each fx node after its spec node, modules and plain calls (concat, sums) alike,
    so any node's output can be read, not only a submodule's."""
    wanted, found = set(nodes), {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node):
            value = super().run_node(n)
            if n.name in wanted:
                found[n.name] = value.detach()
            return value

    Recorder(model).run(x)
    missing = wanted - set(found)
    if missing:
        raise ValueError(f"no output named {', '.join(sorted(missing))} in the compiled module")
    return found


# --------------------------------------------------------------------------- the score run


def score_family(
    spec: Spec,
    candidates: list[str | None],
    *,
    epochs: int,
    images: int,
    device: str = "cpu",
    seed: int = 0,
    dataset=None,
    report: Callable[[str], None] = print,
) -> dict:
    """The cheap scores of a family of branch points: one short multi-task run of ``spec`` and one
    single-task run per task (module docstring: what each measures, on what, and the choices made).

    ``spec``: the fully shared spec (the tasks read one shared path). ``candidates``: its shared nodes that
    are branch points, in topological order (the last one: everything shared), and None for "nothing
    shared"; a name is a graph node's or a [[nodes]] table's that ``repeat`` expands, read as the table's last
    node (:func:`table_outputs`). Results are keyed by the names as given. ``epochs`` and ``images``: each run's budget (epochs over the first ``images`` training images).
    ``dataset``: a graphc.runtime.data.split.Dataset to use instead of loading ``spec.data`` (tests).
    ``report``: progress lines.

    Returns a JSON-able dict (floats; None where a value is undefined):

    - ``settings``: epochs, images, batch_size, lr, optimizer, seed, device, the number of score steps, the
      similarity measure's name and how many validation images it compared, the lookahead's step;
    - ``time_s``: seconds for everything;
    - ``conflict``: ``{node: {"A:B": mean cosine}}`` per shared node with parameters, pairs in sorted order;
    - ``affinity``: ``{"i->j": mean Z}`` on all shared parameters, every ordered pair;
    - ``affinity_by_node``: ``{candidate node: {"i->j": mean Z}}``, only the shared parameters up to the node
      (the node and the shared nodes it reads from) stepped;
    - ``similarity``: ``{candidate node: {"A:B": CKA}}``;
    - ``candidates``: ``[{"branch_point": node | None, "score": {...}}]``, in the order given, where
      ``score`` holds:

      - ``similarity``: the mean over task pairs of ``similarity[branch_point]``;
      - ``affinity``: the mean over ordered task pairs of ``affinity_by_node[branch_point]``;
      - ``conflict_kept``: the mean over task pairs and over the shared nodes with parameters that the
        candidate keeps shared (the branch point and the shared nodes it reads from) of ``conflict``: the
        gradient agreement the member still has to live with (low or negative: conflict kept);
      - ``conflict_split``: the same mean over the shared nodes the candidate copies per task (the rest):
        the conflict that branching removes;

      each None where there is nothing to average (nothing shared has no similarity, affinity or kept
      nodes; everything shared splits nothing).
    """
    started = time.perf_counter()
    graph = graphc.build_graph(spec)
    shared = shared_nodes(graph)
    if not shared:
        raise UsageError(
            f"spec '{graph.name}': no node with parameters serves two tasks, so there is no branch point to "
            "score. Hint: give graphc branch a spec whose tasks read a shared path."
        )
    outputs = table_outputs(spec, graph)
    unknown = [c for c in candidates if c is not None and c not in outputs]
    if unknown:
        raise UsageError(f"spec '{graph.name}' has no node {', '.join(unknown)} (a candidate branch point).")
    at = {c: outputs[c] for c in candidates if c is not None}  # candidate -> the graph node whose output it is
    dev = torch.device(device)
    if dataset is None:
        from graphc.runtime.data.load import load_dataset
        from graphc.runtime.data.table import label_columns

        dataset = load_dataset(
            spec.data,
            limit_train=images,
            limit_val=SIMILARITY_IMAGES,
            image_shape=tuple(graph.nodes[0].shape) if graph.nodes[0].kind == "input" else None,
            source=graph.source,
            report=report,
            # a label table's (CelebA's) columns are read as the heads say, as graphc train reads them
            columns=label_columns(spec),
        )
    heads = fit_targets(heads_of(graph), dataset.train)
    tasks = [h.task for h in heads]
    train_split = dataset.train.subset(slice(0, images))

    # Every run reads the same batches, drawn again from the seed (not held: an epoch of images is large).
    def batches() -> Iterator[Batch]:
        return _batches(train_split, spec, epochs, seed, dev)

    steps = epochs * sum(1 for size in _batch_sizes(len(train_split), spec.train.batch_size) if size >= 2)
    if not steps:
        raise UsageError(f"--score-images {images}: too few training images for one batch of two.")
    lr = float(spec.train.optimizer.lr)
    kept = {c: _upstream_shared(graph, at[c], {s.name for s in shared}) for c in candidates if c is not None}

    report(
        f"scoring: {steps} step(s) of the fully shared model on {len(train_split)} images "
        f"({epochs} epoch(s)), then one single-task run per task ({', '.join(tasks)})"
    )
    conflict, affinity, affinity_by_node = _multi_task_run(graph, spec, heads, batches, shared, kept, lr, seed, dev)
    val_images = _similarity_images(dataset, spec, dev)
    features = {}
    for task in tasks:
        report(f"scoring: single-task run of {task}")
        features[task] = _single_task_features(
            graph, spec, heads, task, batches, sorted(set(at.values())), val_images, seed
        )
    similarity = {
        node: {
            ":".join(sorted((a, b))): linear_cka(features[a][at[node]], features[b][at[node]])
            for a, b in combinations(tasks, 2)
        }
        for node in (c for c in candidates if c is not None)
    }

    rows = []
    for c in candidates:
        keep = kept.get(c, set())
        split = [s.name for s in shared if s.name not in keep and s.name in conflict]
        kept_nodes = [s.name for s in shared if s.name in keep and s.name in conflict]
        rows.append(
            {
                "branch_point": c,
                "score": {
                    "similarity": _mean(similarity[c].values()) if c is not None else None,
                    "affinity": _mean(affinity_by_node[c].values()) if c is not None else None,
                    "conflict_kept": _mean(v for n in kept_nodes for v in conflict[n].values()),
                    "conflict_split": _mean(v for n in split for v in conflict[n].values()),
                },
            }
        )
    return _jsonable(
        {
            "settings": {
                "epochs": epochs,
                "images": len(train_split),
                "batch_size": spec.train.batch_size,
                "lr": lr,
                "optimizer": spec.train.optimizer.name,
                "seed": seed,
                "device": str(dev),
                "steps": steps,
                "similarity": SIMILARITY,
                "similarity_images": len(val_images),
                "lookahead": "one plain SGD step at the run's lr on the shared parameters (Fifty et al. 2021, eq. 2)",
                "tasks": tasks,
            },
            "time_s": time.perf_counter() - started,
            "conflict": conflict,
            "affinity": affinity,
            "affinity_by_node": affinity_by_node,
            "similarity": similarity,
            "candidates": rows,
        }
    )


def _batch_sizes(images: int, batch_size: int) -> list[int]:
    return [min(batch_size, images - start) for start in range(0, images, batch_size)]


def _batches(split, spec: Spec, epochs: int, seed: int, device: torch.device) -> Iterator[Batch]:
    """The score runs' batches: ``epochs`` passes over ``split`` in orders drawn from ``seed``, float
    images (normalised as the spec says, no augmentation); a last batch of one image is dropped (batch norm
    needs two), as in training."""
    from graphc.runtime.data.augment import to_float

    generator = torch.Generator().manual_seed(seed)
    size = spec.train.batch_size
    for _ in range(epochs):
        order = torch.randperm(len(split), generator=generator)
        for index in order.split(size):
            if len(index) < 2:
                continue
            x = to_float(split.images[index].to(device), spec.data.normalize)  # (B, C, H, W)
            yield x, {field: y[index].to(device) for field, y in split.labels.items()}


def _similarity_images(dataset, spec: Spec, device: torch.device) -> torch.Tensor:
    """The fixed validation images whose features the similarity compares (the training split's first ones
    when the validation split is empty)."""
    from graphc.runtime.data.augment import to_float

    split = dataset.val if len(dataset.val) >= 2 else dataset.train
    return to_float(split.images[:SIMILARITY_IMAGES].to(device), spec.data.normalize)


def table_outputs(spec: Spec, graph: Graph) -> dict[str, str]:
    """``{name: graph node}``: every graph node as itself, and every [[nodes]] table that ``repeat`` expands
    into several nodes (a chain ``stage`` -> ``stage_1 ... stage_N``, a residual unit inside its sum's
    table) as the last of them in topological order - the node whose output leaves the table, where a
    family branching "after the table" cuts."""
    import tomllib

    outputs = {n.name: n.name for n in graph}
    try:
        tables = [t["name"] for t in tomllib.loads(spec.text)["nodes"]]
    except (tomllib.TOMLDecodeError, KeyError, TypeError):  # a spec made in Python, without its text
        return outputs
    position = {n.name: i for i, n in enumerate(graph)}
    for index, node in enumerate(spec.nodes):
        table = tables[spec.origin(index)] if spec.origin(index) < len(tables) else None
        if table is None or table in position or node.name not in position:
            continue
        if table not in outputs or position[node.name] > position[outputs[table]]:
            outputs[table] = node.name
    return outputs


def _upstream_shared(graph: Graph, node: str, shared: set[str]) -> set[str]:
    """The shared nodes ``node``'s output depends on, ``node`` included: what stays shared when the tasks
    branch after it."""
    seen, stack = set(), [node]
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(graph[name].inputs)
    return seen & shared


def _multi_task_run(graph, spec, heads, batches, shared, kept, lr, seed, device):
    """The multi-task score run: per step, the tasks' gradients on the shared nodes (conflict, lookahead
    affinity), then the optimiser's step on the loss-weighted total, as in training. ``batches()`` gives the
    run's batches (the same ones at every call)."""
    model = graphc.compile_graph(graph, seed=seed).to(device)
    model.train()
    optimizer = make_optimizer(model.parameters(), spec.train)
    where = {s.name: s.tasks for s in shared}
    names = {id(p): name for name, p in model.named_parameters()}
    node_params = {s.name: node_parameters(model, s.name) for s in shared}
    everything = [s.name for s in shared]
    depths = {c: [n for n in everything if n in up] for c, up in kept.items()}
    cosines: dict[str, dict[str, list[float]]] = {s.name: {} for s in shared}
    affinities: dict[str | None, dict[str, list[float]]] = {None: {}} | {c: {} for c in kept}
    unit = {h.task: 1.0 for h in heads}  # unweighted: the lookahead steps on L_i itself; cosines ignore scale
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for step, batch in enumerate(batches()):
            x, labels = batch
            step_seed = seed * 1_000_003 + step  # one dropout draw per step, the same for every measuring forward
            with _kept_state(model, device, step_seed):
                grads = task_gradients(model, [batch], heads, unit, where, device)
            values = conflict_metrics(grads, shared, [])
            for s in shared:
                if s.name in grads:
                    for a, b in combinations(s.tasks, 2):
                        cosine = values[cosine_name(s.name, a, b)]
                        cosines[s.name].setdefault(":".join(sorted((a, b))), []).append(cosine)
            for depth, nodes in [(None, everything)] + list(depths.items()):
                nodes = [n for n in nodes if n in grads]
                if not nodes:
                    continue
                parameters = {names[id(p)]: p for n in nodes for p in node_params[n]}
                per_task = {
                    h.task: _unflatten({n: grads[n].get(h.task) for n in nodes}, node_params, names) for h in heads
                }
                z = lookahead_affinity(model, batch, heads, per_task, lr, parameters, step_seed)
                for pair, value in z.items():
                    affinities[depth].setdefault(pair, []).append(value)
            optimizer.zero_grad(set_to_none=True)
            total, _ = compute_loss(model(x), labels, list(heads))
            total.backward()
            optimizer.step()
    conflict = {node: {pair: _mean(v) for pair, v in by_pair.items()} for node, by_pair in cosines.items() if by_pair}
    affinity = {pair: _mean(v) for pair, v in affinities[None].items()}
    by_node = {c: {pair: _mean(v) for pair, v in affinities[c].items()} for c in kept}
    return conflict, affinity, by_node


def _unflatten(flat: Mapping[str, torch.Tensor | None], node_params, names) -> dict[str, torch.Tensor]:
    """``{parameter name: gradient}`` from task_gradients' flattened per-node vectors (its order: the node's
    parameters in node_parameters' order); a task whose gradient does not reach a node gets zeros."""
    out = {}
    for node, vector in flat.items():
        offset = 0
        for p in node_params[node]:
            piece = vector[offset : offset + p.numel()] if vector is not None else torch.zeros(p.numel())
            out[names[id(p)]] = piece.reshape(p.shape).to(device=p.device, dtype=p.dtype)
            offset += p.numel()
    return out


def _single_task_features(graph, spec, heads, task, batches, nodes, images, seed) -> dict[str, torch.Tensor]:
    """Train the full model from the score run's initial weights on ``task``'s loss alone (the same batches),
    then read ``nodes``' features on ``images`` in evaluation mode."""
    device = images.device
    model = graphc.compile_graph(graph, seed=seed).to(device)
    model.train()
    optimizer = make_optimizer(model.parameters(), spec.train)
    head = [h for h in heads if h.task == task]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for x, labels in batches():
            optimizer.zero_grad(set_to_none=True)
            _, parts = compute_loss(model(x), labels, head)
            parts[task].backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        return node_features(model, images, nodes)


# --------------------------------------------------------------------------- recommendation and table


def recommend(scores: dict, params: dict[str, int], max_params: int | None) -> tuple[str, str]:
    """``(candidate, rule)``: the recommended branch point (its node name, or ``"nothing_shared"``) and the rule
    that chose it, in words.

    ``params``: each candidate's parameter count, keyed by its branch point (None or ``"nothing_shared"`` for
    nothing shared; ``"after_NODE"`` is read too). The rule: among the candidates within ``max_params`` (all
    when None; a candidate of unknown size fits no budget), the deepest branch point such that the mean task
    similarity at it, and at every candidate node before it, stays >= SIMILARITY_THRESHOLD (tasks that still
    represent the images alike share longer, after Vandenhende et al.); without similarity scores, the deepest
    whose mean lookahead affinity (Fifty et al.) is >= 0 at it and every candidate before it. When the rule's
    choice does not fit the budget, the candidate that fits and is closest to it in depth (its nearest deeper
    one, else shallower); when nothing fits, the smallest candidate, said so.
    """
    rows = scores["candidates"]
    order = [r["branch_point"] for r in rows]
    size = {bp: _params_of(params, bp) for bp in order}
    if all(r["score"].get("similarity") is not None for r in rows if r["branch_point"] is not None) and any(
        r["branch_point"] is not None for r in rows
    ):
        measure, bound, words = "similarity", SIMILARITY_THRESHOLD, f"mean task similarity ({SIMILARITY})"
    else:
        measure, bound, words = "affinity", 0.0, "mean lookahead affinity"
    # Walk from the shallowest: the tasks share on while the measure stays above the bound.
    chosen_index = 0 if order and order[0] is None else None
    for index, row in enumerate(rows):
        if row["branch_point"] is None:
            continue
        value = row["score"].get(measure)
        if value is None or value < bound:
            break
        chosen_index = index
    if chosen_index is None:
        chosen_index = 0
    rule = f"the deepest branch point whose {words} stays >= {bound:g} at it and at every branch point before it"
    fits = [i for i, bp in enumerate(order) if max_params is None or (size[bp] is not None and size[bp] <= max_params)]
    if not fits:
        known = [i for i in range(len(order)) if size[order[i]] is not None]
        if not known:
            return _name(
                order[chosen_index]
            ), rule + f"; no candidate's parameter count is known, so the budget of {max_params:,} could not be applied"
        smallest = min(known, key=lambda i: size[order[i]])
        return _name(order[smallest]), (
            f"no candidate fits --max-params {max_params:,}: the smallest one ({size[order[smallest]]:,} parameters)"
        )
    budget = "" if max_params is None else f", within --max-params {max_params:,}"
    if chosen_index in fits:
        return _name(order[chosen_index]), rule + budget
    deeper = [i for i in fits if i > chosen_index]
    pick = deeper[0] if deeper else max(i for i in fits if i < chosen_index)
    return _name(order[pick]), (
        rule + f" is {_name(order[chosen_index])} ({size[order[chosen_index]] or 0:,} parameters), over --max-params "
        f"{max_params:,}; the nearest {'deeper' if deeper else 'shallower'} branch point that fits instead"
    )


def scores_table(scores: dict, params: dict[str, int]) -> list[dict]:
    """One row per candidate, in the family's order, for printing: ``candidate`` (node or "nothing_shared"),
    ``params`` (None where unknown), and the candidate's summaries (``score_family``'s ``candidates``):
    ``similarity``, ``affinity``, ``conflict_kept``, ``conflict_split`` (None where undefined)."""
    return [
        {"candidate": _name(r["branch_point"]), "params": _params_of(params, r["branch_point"]), **r["score"]}
        for r in scores["candidates"]
    ]


def _params_of(params: Mapping, branch_point: str | None) -> int | None:
    keys = [None, NOTHING_SHARED] if branch_point is None else [branch_point, f"after_{branch_point}"]
    for key in keys:
        if key in params:
            return int(params[key])
    return None


def _name(branch_point: str | None) -> str:
    return NOTHING_SHARED if branch_point is None else branch_point


def _mean(values) -> float | None:
    """The mean of the finite values; None when there are none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return fmean(finite) if finite else None


def _jsonable(value):
    """NaN and infinities as None (JSON has neither)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
