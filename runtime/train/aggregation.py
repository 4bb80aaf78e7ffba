"""Jacobian descent: ``[train] aggregator`` combines the heads' gradients on the shared parameters.

A training step with an aggregator (torchjd's, :func:`make_aggregator`) replaces the backward pass
of the summed loss by:

1. the per-head objectives ``l_t = c_t * L_t``: L_t the head's mean cross-entropy, c_t the loss
   weight in force (the head's ``loss_weight`` without a ``loss_weighting`` table, else the
   method's coefficient for this step: runtime/train/weighting.py, ``Weighting.step_weights``).
   So **weights scale the losses before aggregation**; methods whose weights learn from the
   gradient of the weighted sum (uncertainty, gradnorm) are refused with an aggregator (the spec);
2. one backward pass per head (``torch.autograd.grad``, graph retained) on every trainable
   parameter: K gradients;
3. the **shared parameters** - those of the nodes two or more heads' gradients reach
   (graphc.ir.gradients.shared_nodes: hard sharing and reuse edges alike, a head another head
   reads being reached by both tasks, ``reuse_gradient = false`` respected) - form the K x P
   Jacobian J (fp32 whatever the autocast precision; under several processes averaged over them,
   one all_reduce, so every process aggregates the global batch's J). The aggregator maps J to
   the update, computed identically on every process (random methods draw from the aggregation's
   own generator, the same on every process, saved in checkpoints);
4. every other trainable parameter serves one head only and gets that head's gradient (the sum
   of the K gradients, of which one is non-zero), as without an aggregator.

Then grad clipping, the optimiser and the schedule as usual. A non-finite update makes the
step's logged loss NaN, so the loop ends the run as "diverged" at that step, as for a NaN loss.

Logged on each training row (per-epoch means over the steps): ``agg/weight/TASK`` (the weights
the aggregator put on each head's row of J, for aggregators that are torchjd WeightedAggregators:
all but graddrop), ``agg/conflict`` (the fraction of pairs of heads whose gradients on the shared
parameters have a negative cosine) and ``agg/norm_ratio`` (norm of the update over the norm of
the mean of the K gradients, on the shared parameters).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from itertools import combinations

import torch
import torch.distributed as dist

from graphc.errors import Problem, RunError, SpecError
from graphc.ir.gradients import shared_nodes
from graphc.ir.graph import Graph
from graphc.ir.metrics import AGG_PREFIX
from graphc.lang.spec import Spec

RNG_OFFSET = 3  # the aggregation's generator is seeded with train.seed + 3 (shuffle: +0, augment: +1)
STATEFUL = ("nash_mtl", "gradvac")  # aggregators whose output depends on earlier steps


def make_aggregator(table, tasks: int):
    """torchjd's aggregator for a ``[train] aggregator`` table (graphc.lang.spec), options passed through."""
    try:
        from torchjd import aggregation as jd
    except ImportError:
        raise RunError(
            f"aggregator {table.name!r} needs torchjd, which is not installed. "
            "Hint: pip install 'graphc[aggregators]' (torchjd[full]: with cvxpy and quadprog)."
        ) from None
    try:
        return _torchjd_aggregator(jd, table, tasks)
    except ImportError as exc:  # nash_mtl, cagrad: torchjd's optional solvers
        raise RunError(
            f"aggregator {table.name!r} needs a solver torchjd did not find ({str(exc).splitlines()[0]}). "
            "Hint: pip install 'graphc[aggregators]' (torchjd[full]: with cvxpy and quadprog)."
        ) from None


def _torchjd_aggregator(jd, table, tasks: int):
    options = table.model_dump(exclude={"name"})
    for key in ("pref_vector", "leak"):
        if options.get(key) is not None:
            options[key] = torch.tensor(options[key], dtype=torch.float32)
    if table.name == "nash_mtl":
        return jd.NashMTL(n_tasks=tasks, **options)
    classes = {
        "upgrad": jd.UPGrad,
        "mgda": jd.MGDA,
        "pcgrad": jd.PCGrad,
        "cagrad": jd.CAGrad,
        "imtl_g": jd.IMTLG,
        "aligned_mtl": jd.AlignedMTL,
        "graddrop": jd.GradDrop,
        "gradvac": jd.GradVac,
        "dualproj": jd.DualProj,
        "random": jd.Random,
    }
    return classes[table.name](**options)


def aggregate(aggregator, jacobian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(update, weights)``: torchjd's aggregate of ``jacobian`` (K x P) and, for a WeightedAggregator,
    the K weights it combined the rows with (``update = weights @ jacobian``, what its forward does)."""
    from torchjd.aggregation import WeightedAggregator

    if isinstance(aggregator, WeightedAggregator):
        weights = aggregator.weighting(jacobian)
        return weights @ jacobian, weights
    return aggregator(jacobian), None


def conflict_stats(jacobian: torch.Tensor, update: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fraction of pairs of rows with a negative cosine, |update| / |mean of the rows|)``, on the device."""
    gramian = jacobian @ jacobian.T
    pairs = list(combinations(range(jacobian.shape[0]), 2))
    negative = torch.stack([gramian[i, j] < 0 for i, j in pairs]).float().mean() if pairs else gramian.new_zeros(())
    ratio = update.norm() / jacobian.mean(dim=0).norm().clamp(min=1e-30)
    return negative, ratio


class Aggregation:
    """A run's ``[train] aggregator``: the backward pass of a step (module docstring), its statistics
    and its state (the aggregator's, the random generator's) for checkpoints."""

    def __init__(
        self, table, tasks: list[str], shared: list[torch.nn.Parameter], model: torch.nn.Module, world, seed: int
    ):
        self.name = table.name
        self.table = table
        self.tasks = tasks
        self.shared = shared  # parameters of the nodes two or more tasks' gradients reach
        self.model = model
        self.world = world
        self.seed = seed
        self.aggregator = make_aggregator(table, len(tasks))
        self.cpu_rng = torch.Generator().manual_seed(seed + RNG_OFFSET).get_state()
        self.cuda_rng: torch.Tensor | None = None
        self.reset_stats()

    # ------------------------------------------------------------------ the step

    def step(self, total: torch.Tensor, parts: Mapping[str, torch.Tensor], weighting, heads) -> torch.Tensor:
        """A training step's backward pass (``total``: compute_loss's loss_weight sum; ``parts``: per-head
        losses; ``weighting``: the run's loss weighting or None); returns the logged total, sum_t w_t L_t
        with the loss weights in force (NaN when the update is not finite)."""
        losses = torch.stack([parts[h.task] for h in heads])  # (K,)
        if weighting is None:
            scales = torch.tensor([h.loss_weight for h in heads], device=losses.device, dtype=losses.dtype)
            logged = total.detach()
        else:
            scales = weighting.step_weights(parts)
            logged = (weighting.weights() * losses.detach()).sum()
        return logged + self.backward(scales.detach() * losses)

    def backward(self, scaled: torch.Tensor) -> torch.Tensor:
        """Set every trainable parameter's ``.grad`` from ``scaled`` (K,), the weighted per-head losses
        c_t L_t of this process's share. Returns 0 when the update is finite, else NaN (to add to the
        logged loss: the loop then stops the run as diverged, without a sync per step)."""
        shared_ids = {id(p) for p in self.shared}
        shared = [p for p in self.shared if p.requires_grad]  # unfrozen ones (trainable = false, unfreeze_after)
        others = [p for p in self.model.parameters() if p.requires_grad and id(p) not in shared_ids]
        params = shared + others
        k, n_shared = len(self.tasks), len(shared)
        rows, rest = [], [None] * len(others)  # rest: the one head's gradient of each other parameter
        for t in range(k):
            grads = torch.autograd.grad(scaled[t], params, retain_graph=t < k - 1, allow_unused=True)
            rows.append(
                torch.cat(
                    [(p.new_zeros(p.numel()) if g is None else g.flatten()).float() for p, g in zip(shared, grads)]
                )
            )
            for i, g in enumerate(grads[n_shared:]):
                if g is not None:
                    rest[i] = g if rest[i] is None else rest[i] + g
        jacobian = torch.stack(rows)  # (K, P), fp32
        if self.world.size > 1:  # the global batch's gradients: mean over the processes, as DDP's
            # (a parameter no head reached here is reached nowhere: the same graph on every process)
            reached = [i for i, g in enumerate(rest) if g is not None]
            flat = torch.cat([jacobian.flatten()] + [rest[i].float().flatten() for i in reached])
            dist.all_reduce(flat)
            flat /= self.world.size
            jacobian = flat[: jacobian.numel()].view_as(jacobian)
            offset = jacobian.numel()
            for i in reached:
                g = rest[i]
                rest[i] = _shaped(flat[offset : offset + g.numel()], others[i])
                offset += g.numel()
        with torch.autocast(jacobian.device.type, enabled=False):
            update, weights = self.aggregated(jacobian)
        offset = 0
        for p in shared:
            p.grad = _shaped(update[offset : offset + p.numel()], p)
            offset += p.numel()
        for p, g in zip(others, rest):
            p.grad = g  # None where no head's gradient reached it: the optimiser skips it, as without an aggregator
        self.collect(jacobian, update, weights)
        return update.sum() * 0.0  # NaN when any entry is not finite

    def aggregated(self, jacobian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The aggregate, with the aggregation's own random state (the same on every process)."""
        device = jacobian.device
        cuda = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.set_rng_state(self.cpu_rng)
            if cuda:
                if self.cuda_rng is None:
                    torch.cuda.manual_seed(self.seed + RNG_OFFSET)
                else:
                    torch.cuda.set_rng_state(self.cuda_rng, device)
            with warnings.catch_warnings():  # cvxpy (nash_mtl), at every solve: not a problem of the run's
                warnings.filterwarnings("ignore", message=".*not DPP.*")
                result = aggregate(self.aggregator, jacobian)
            self.cpu_rng = torch.get_rng_state()
            if cuda:
                self.cuda_rng = torch.cuda.get_rng_state(device)
        return result

    # ------------------------------------------------------------------ statistics

    def reset_stats(self) -> None:
        self.steps = 0
        self.sums: dict[str, torch.Tensor] = {}

    def collect(self, jacobian: torch.Tensor, update: torch.Tensor, weights: torch.Tensor | None) -> None:
        negative, ratio = conflict_stats(jacobian.detach(), update.detach())
        values = {"conflict": negative, "norm_ratio": ratio}
        if weights is not None:
            values["weights"] = weights.detach().float()
        for key, value in values.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()
        self.steps += 1

    def metric_names(self) -> list[str]:
        weighted = self.name != "graddrop"
        return [f"{AGG_PREFIX}weight/{t}" for t in self.tasks if weighted] + [
            f"{AGG_PREFIX}conflict",
            f"{AGG_PREFIX}norm_ratio",
        ]

    def epoch_entries(self) -> dict[str, float]:
        """The epoch's means (one sync), then a fresh start for the next epoch."""
        if not self.steps:
            return {}
        entries = {}
        if "weights" in self.sums:
            for t, w in zip(self.tasks, (self.sums["weights"] / self.steps).tolist()):
                entries[f"{AGG_PREFIX}weight/{t}"] = w
        entries[f"{AGG_PREFIX}conflict"] = float(self.sums["conflict"] / self.steps)
        entries[f"{AGG_PREFIX}norm_ratio"] = float(self.sums["norm_ratio"] / self.steps)
        self.reset_stats()
        return entries

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        state: dict = {"name": self.name, "cpu_rng": self.cpu_rng.clone(), "cuda_rng": self.cuda_rng}
        if self.name == "nash_mtl":
            w = self.aggregator.weighting
            state["nash_mtl"] = {
                "step": float(w.step),
                "prvs_alpha": torch.from_numpy(w.prvs_alpha.astype("float64").copy()),
                "normalization_factor": torch.from_numpy(w.normalization_factor.astype("float64").copy()),
            }
        if self.name == "gradvac":
            w = self.aggregator.gramian_weighting
            state["gradvac"] = {"phi": None if w._phi_t is None else w._phi_t.clone()}
        return state

    def load_state_dict(self, state: Mapping) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"the checkpoint's aggregator is {state.get('name')!r}, this run's {self.name!r}")
        self.cpu_rng = state["cpu_rng"].clone()
        self.cuda_rng = state.get("cuda_rng")
        if self.name == "nash_mtl":
            saved, w = state["nash_mtl"], self.aggregator.weighting
            w.reset()
            w.prvs_alpha = saved["prvs_alpha"].numpy().astype(w.prvs_alpha.dtype)
            if saved["prvs_alpha"].dtype == torch.float64:
                w.prvs_alpha = saved["prvs_alpha"].numpy().copy()
            w.normalization_factor = saved["normalization_factor"].numpy().copy()
            w.step = float(saved["step"])
            if w.step > 0:  # the solver's problem, made at the first step, with the restored alpha
                w._init_optim_problem()
        if self.name == "gradvac":
            w = self.aggregator.gramian_weighting
            phi = state["gradvac"]["phi"]
            w.reset()
            if phi is not None:
                w._phi_t = phi.clone()
                w._state_key = (phi.shape[0], phi.dtype)


def _shaped(flat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``flat`` (values in ``like``'s logical order) as a tensor of ``like``'s shape, dtype and strides."""
    return torch.empty_like(like).copy_(flat.view(like.shape))


def shared_parameters(graph: Graph, model: torch.nn.Module) -> tuple[list[str], list[torch.nn.Parameter]]:
    """The nodes two or more tasks' gradients reach (graphc.ir.gradients) and their parameters."""
    nodes = [node.name for node in shared_nodes(graph)]
    params = [p for name in nodes for p in model.get_submodule(name).parameters()]
    return nodes, params


def make_aggregation(spec: Spec, graph: Graph, model: torch.nn.Module, tasks: list[str], world) -> Aggregation | None:
    """The run's Aggregation, or None without ``[train] aggregator``."""
    table = spec.train.aggregator
    if table is None:
        return None
    nodes, params = shared_parameters(graph, model)
    if not params:
        raise SpecError(
            Problem(
                f"is {table.name!r}, but no node with parameters gets the gradients of two or more heads in "
                f"'{graph.name}': there is nothing to aggregate.",
                file=spec.source,
                field="train.aggregator",
                hint="share a node between the heads (or let a head read another with reuse_gradient = true), "
                "or remove the aggregator.",
            )
        )
    for key in ("pref_vector", "leak"):
        value = getattr(table, key, None)
        if value is not None and len(value) != len(tasks):
            raise SpecError(
                Problem(
                    f"has {len(value)} values, but the model has {len(tasks)} heads ({', '.join(tasks)}).",
                    file=spec.source,
                    field=f"train.aggregator.{key}",
                    hint="give one value per head, in the heads' order.",
                )
            )
    return Aggregation(table, tasks, params, model, world, spec.train.seed)
