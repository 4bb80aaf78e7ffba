"""Loss weighting: how a training step combines the heads' losses (``[train] loss_weighting``).

With K heads and per-head mean cross-entropies L_t of a batch (graphc.runtime.metrics.compute_loss),
each method optimises, and logs as the row's ``loss``, the total ``sum_t w_t * L_t`` with the
weights w_t in force at that step; ``weight/TASK`` on a training row is w_t at the end of its
epoch (after its last step), and a validation row's ``loss`` is the same sum with those weights.

- ``fixed`` (the default, also with no table): w_t = the head's ``loss_weight``. Without the
  table no Weighting object exists and the step is exactly the one before this feature.
- ``equal``: w_t = 1 (not 1/K: the same scale as the default loss_weight of 1, and as dwa and
  gradnorm, whose weights sum to K, so a learning rate carries over).
- ``uncertainty``: Kendall, Gal and Cipolla, "Multi-Task Learning Using Uncertainty to Weigh
  Losses for Scene Geometry and Semantics", CVPR 2018. A learned log-variance s_t = log sigma_t^2
  per head (initial 0), trained by the model's optimiser without weight decay. graphc's heads are
  all classifiers, so it takes the paper's classification form (its eq. 10, softmax scaled by
  1/sigma^2 and the approximation of eq. 12): objective = sum_t exp(-s_t) * L_t + s_t / 2,
  i.e. (1/sigma^2) L + log sigma. w_t = exp(-s_t); the regulariser sum_t s_t / 2 is optimised
  but not part of the logged ``loss`` (it is -sum_t log(w_t) / 2, readable from the weights).
- ``dwa``: Liu, Johns and Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019,
  eq. 7: for epoch k >= 3, r_t = L_t(k-1) / L_t(k-2) and w_t = K exp(r_t / T) / sum_i exp(r_i / T),
  where L_t(k) is head t's mean training loss over epoch k (the logged ``train`` row's
  ``TASK/loss``, a mean over images); w_t = 1 in epochs 1 and 2. Weights are fixed within an epoch.
- ``gradnorm``: Chen, Badrinarayanan, Lee and Rabinovich, "GradNorm: Gradient Normalization for
  Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018, eqs. 1-2. Learned weights w_t
  (initial 1) in the model's optimiser without weight decay. Each step: G_t = ||grad_W (w_t L_t)||_2
  on the parameters W of the last node several heads read (graphc.ir.weighting.gradnorm_node),
  G_bar = mean_t G_t, Ltilde_t = L_t / L_t(0) (L_t(0): the run's first step's losses),
  r_t = Ltilde_t / mean_i Ltilde_i, and L_grad = sum_t |G_t - G_bar * r_t^alpha| with the target
  G_bar * r_t^alpha held constant. The weights' gradient is that of L_grad with respect to w only
  (as the paper), the model's is that of sum_t w_t L_t; after the optimiser step the weights are
  floored at GRADNORM_FLOOR and renormalised to sum to K. Since G_t = w_t ||grad_W L_t||, one
  first-order gradient per head gives dL_grad/dw_t = sign(G_t - target_t) ||grad_W L_t|| exactly,
  without differentiating twice.

- ``famo``: Liu, Liu, Jin, Stone and Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS
  2023, Algorithm 1. Task logits xi (initial 0), z = softmax(xi). The model descends
  sum_t z_t log L_t, rescaled by c = (sum_t z_t / L_t)^-1 (so the step is a convex combination of
  the heads' gradients), times K (graphc's scale: weights averaging 1): its gradient is
  sum_t K c z_t / L_t grad L_t, i.e. the per-step loss coefficients K c z_t / L_t
  (``step_weights``). After the optimiser's step, the losses of the same batch are computed again
  (one forward pass without gradient; batch-norm statistics put back), delta_t = log L_t(theta_t)
  - log L_t(theta_t+1), and xi takes one step of its own Adam (lr 0.025, L2 weight decay gamma
  0.01, both the authors' code's defaults; the paper tunes gamma per benchmark) along the gradient J_z(xi)^T delta = z * (delta - z . delta):
  a head whose loss fell less than the others gains weight. ``weight/TASK`` logs K z_t. O(1) extra
  cost in K (no per-head backward pass): one forward pass per step.
- ``rlw``: Lin, Ye, Xu, Shi and Zhang, "Reasonable Effectiveness of Random Weighting: A Litmus Test
  for Multi-Task Learning", TMLR 2022: each step, w = K softmax(eps), eps ~ N(0, I_K) drawn from the
  weighting's own generator (seeded train.seed + 4, the same on every process, saved in
  checkpoints). The paper's weights are softmax(eps) (summing to 1); graphc multiplies by K, the
  scale of every other method, so a learning rate carries over. ``weight/TASK`` logs the last step's.

With ``[train] aggregator`` (runtime/train/aggregation.py) the weights scale the losses before
aggregation: the Jacobian's rows are the gradients of ``step_weights(parts)_t * L_t``.

Under several processes (--nproc) every process ends a step with the same weights: the learned
log-variances' gradients are averaged over the processes as DDP averages the model's; GradNorm
averages each head's gradient on the shared node and the heads' losses over the processes
(one all_reduce each, of the node's parameter count) before taking norms and ratios, so its
G_t and r_t are those of the global batch, as one process would compute them.

A Weighting's state (log-variances, GradNorm's weights and initial losses, DWA's loss history)
is tensors and plain lists in the checkpoint's ``"weighting"`` entry, so a resume is exact; the
learned tensors' optimiser moments are in the optimiser's state with the model's.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist

from graphc.ir.graph import Graph
from graphc.ir.weighting import gradnorm_node
from graphc.lang.spec import Spec
from graphc.runtime.metrics import HeadInfo
from graphc.runtime.train.distributed import World

GRADNORM_FLOOR = 1e-3  # least GradNorm weight before renormalising: keeps every weight positive


class Weighting:
    """The heads' loss weights of a run with a ``[train] loss_weighting`` table."""

    name = ""

    def __init__(self, heads: list[HeadInfo], device: torch.device, world: World):
        self.tasks = [h.task for h in heads]
        self.device = device
        self.world = world

    def parameters(self) -> list[torch.nn.Parameter]:
        """Learned tensors the model's optimiser updates too (without weight decay)."""
        return []

    def weights(self) -> torch.Tensor:
        """The weights in force, ``(K,)`` in head order, detached."""
        raise NotImplementedError

    learns_after_step = False  # FAMO: learn() from the batch's losses after the optimiser's step

    def step_weights(self, parts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The coefficients c_t of this step's gradient sum_t c_t grad L_t, ``(K,)``, detached; called
        once per step (RLW draws here). An aggregator aggregates the gradients of c_t L_t."""
        return self.weights()

    def learn(self, parts_after: Mapping[str, torch.Tensor]) -> None:
        """With ``learns_after_step``: the per-head losses of the step's batch after the optimiser's step."""

    def backward(self, total: torch.Tensor, parts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Back-propagate this step's objective (``total``: compute_loss's loss_weight sum; ``parts``:
        per-head losses); returns the logged total, sum_t w_t L_t with the weights in force."""
        logged = self.weighted(parts)
        logged.backward()
        return logged.detach()

    def weighted(self, parts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return (self.weights() * self.stack(parts)).sum()

    def stack(self, parts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([parts[t] for t in self.tasks])  # (K,)

    def after_step(self) -> None:
        """After the optimiser's step (GradNorm renormalises its weights)."""

    def end_epoch(self, train_metrics: Mapping[str, float]) -> None:
        """After an epoch's training pass, with its train row's metrics (DWA keeps the losses)."""

    def state_dict(self) -> dict:
        return {"name": self.name}

    def load_state_dict(self, state: Mapping) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"the checkpoint's loss weighting is {state.get('name')!r}, this run's {self.name!r}")

    def average_gradients(self) -> None:
        """Average the learned tensors' gradients over the processes, as DDP does the model's."""
        if self.world.size == 1:
            return
        for p in self.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= self.world.size


class FixedWeighting(Weighting):
    """The heads' loss_weight: compute_loss's own total, back-propagated unchanged."""

    name = "fixed"

    def __init__(self, heads, device, world):
        super().__init__(heads, device, world)
        self._weights = torch.tensor([h.loss_weight for h in heads], device=device)

    def weights(self) -> torch.Tensor:
        return self._weights

    def backward(self, total, parts):
        total.backward()
        return total.detach()


class EqualWeighting(Weighting):
    name = "equal"

    def weights(self) -> torch.Tensor:
        return torch.ones(len(self.tasks), device=self.device)


class UncertaintyWeighting(Weighting):
    """Kendall et al. 2018, classification form: sum_t exp(-s_t) L_t + s_t / 2 (module docstring)."""

    name = "uncertainty"

    def __init__(self, heads, device, world):
        super().__init__(heads, device, world)
        self.log_variance = torch.nn.Parameter(torch.zeros(len(self.tasks), device=device))  # s_t = log sigma_t^2

    def parameters(self):
        return [self.log_variance]

    def weights(self) -> torch.Tensor:
        return torch.exp(-self.log_variance.detach())

    def backward(self, total, parts):
        losses = self.stack(parts)
        objective = (torch.exp(-self.log_variance) * losses).sum() + self.log_variance.sum() / 2
        objective.backward()
        self.average_gradients()
        return (self.weights() * losses.detach()).sum()

    def state_dict(self):
        return {"name": self.name, "log_variance": self.log_variance.detach().cpu().clone()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        with torch.no_grad():
            self.log_variance.copy_(_vector(state["log_variance"], len(self.tasks), "log_variance"))


class DWAWeighting(Weighting):
    """Liu et al. 2019, eq. 7: K softmax(r / T) of the last two epochs' loss ratios (module docstring)."""

    name = "dwa"

    def __init__(self, heads, device, world, temperature: float):
        super().__init__(heads, device, world)
        self.temperature = temperature
        self.history: list[list[float]] = []  # mean training loss per head of the last two epochs, oldest first
        self._weights = self.from_history()

    def from_history(self) -> torch.Tensor:
        if len(self.history) < 2:
            return torch.ones(len(self.tasks), device=self.device)
        before, last = (torch.tensor(h, dtype=torch.float64) for h in self.history[-2:])
        ratio = last / before
        weights = len(self.tasks) * torch.softmax(ratio / self.temperature, dim=0)
        return weights.to(device=self.device, dtype=torch.float32)

    def weights(self) -> torch.Tensor:
        return self._weights

    def end_epoch(self, train_metrics):
        self.history = (self.history + [[float(train_metrics[f"{t}/loss"]) for t in self.tasks]])[-2:]
        self._weights = self.from_history()

    def state_dict(self):
        return {"name": self.name, "history": [list(h) for h in self.history]}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        history = state["history"]
        if (
            not isinstance(history, list)
            or len(history) > 2
            or not all(
                isinstance(h, list) and len(h) == len(self.tasks) and all(isinstance(v, float) for v in h)
                for h in history
            )
        ):
            raise ValueError("its DWA loss history is not at most two lists of one float per head")
        self.history = [list(h) for h in history]
        self._weights = self.from_history()


class GradNormWeighting(Weighting):
    """Chen et al. 2018: weights balancing the gradient norms on the last shared node (module docstring)."""

    name = "gradnorm"

    def __init__(self, heads, device, world, alpha: float, shared: list[torch.nn.Parameter]):
        super().__init__(heads, device, world)
        self.alpha = alpha
        self.shared = shared  # W: the parameters of graphc.ir.weighting.gradnorm_node's module
        self.task_weights = torch.nn.Parameter(torch.ones(len(self.tasks), device=device))
        self.initial: torch.Tensor | None = None  # L_t(0), set by the first step

    def parameters(self):
        return [self.task_weights]

    def weights(self) -> torch.Tensor:
        return self.task_weights.detach()

    def backward(self, total, parts):
        losses = self.stack(parts)  # (K,)
        whole = self.mean_over_processes(losses.detach())  # the global batch's losses
        if self.initial is None:
            self.initial = whole.clone()
        # ||grad_W L_t|| per head (first order; G_t = w_t times it, see the module docstring)
        shared = [p for p in self.shared if p.requires_grad]  # a frozen node (trainable = false) has no gradient
        norms = torch.zeros(len(self.tasks), device=losses.device)  # (K,); zero: no pull on the weights
        for t in range(len(self.tasks) if shared else 0):
            grads = torch.autograd.grad(losses[t], shared, retain_graph=True, allow_unused=True)
            flat = torch.cat(
                [(torch.zeros_like(p) if g is None else g.detach()).flatten().float() for p, g in zip(shared, grads)]
            )
            norms[t] = self.mean_over_processes(flat).norm()  # the gradient of the global batch's loss, as DDP's
        weights = self.task_weights.detach()
        g = weights.abs() * norms  # G_t
        ratio = whole / self.initial
        relative = ratio / ratio.mean()  # r_t
        target = g.mean() * relative**self.alpha
        self.task_weights.grad = torch.sign(g - target) * torch.sign(weights) * norms  # dL_grad / dw_t
        logged = (weights * losses).sum()
        logged.backward()
        return logged.detach()

    def mean_over_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world.size == 1:
            return tensor
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor / self.world.size

    def after_step(self):
        with torch.no_grad():
            w = self.task_weights.clamp_(min=GRADNORM_FLOOR)
            w.mul_(len(self.tasks) / w.sum())

    def state_dict(self):
        return {
            "name": self.name,
            "weights": self.task_weights.detach().cpu().clone(),
            "initial": None if self.initial is None else self.initial.detach().cpu().clone(),
        }

    def load_state_dict(self, state):
        super().load_state_dict(state)
        with torch.no_grad():
            self.task_weights.copy_(_vector(state["weights"], len(self.tasks), "weights"))
        initial = state["initial"]
        self.initial = None if initial is None else _vector(initial, len(self.tasks), "initial").to(self.device)


class FAMOWeighting(Weighting):
    """Liu et al. 2023: logits learned from the losses' decrease after each step (module docstring)."""

    name = "famo"
    learns_after_step = True
    EPS = 1e-8  # added to the losses before logs and divisions (the authors' code)

    def __init__(self, heads, device, world, lr: float, gamma: float):
        super().__init__(heads, device, world)
        self.logits = torch.zeros(len(self.tasks), device=device, requires_grad=True)  # xi
        self.optimizer = torch.optim.Adam([self.logits], lr=lr, weight_decay=gamma)
        self.before: torch.Tensor | None = None  # L(theta_t) of the current step, global batch

    def weights(self) -> torch.Tensor:
        return len(self.tasks) * torch.softmax(self.logits.detach(), dim=0)

    def step_weights(self, parts):
        losses = mean_over_processes(self.stack(parts).detach().float(), self.world) + self.EPS
        self.before = losses
        z = torch.softmax(self.logits.detach(), dim=0)
        c = 1.0 / (z / losses).sum()
        return len(self.tasks) * c * z / losses

    def backward(self, total, parts):
        losses = self.stack(parts)
        (self.step_weights(parts) * losses).sum().backward()
        return (self.weights() * losses.detach()).sum()

    def learn(self, parts_after):
        after = mean_over_processes(self.stack(parts_after).detach().float(), self.world) + self.EPS
        if self.before is None:
            return
        delta = self.before.log() - after.log()
        z = torch.softmax(self.logits.detach(), dim=0)
        self.logits.grad = z * (delta - (z * delta).sum())  # J_softmax(xi)^T delta
        self.optimizer.step()
        self.before = None

    def state_dict(self):
        return {
            "name": self.name,
            "logits": self.logits.detach().cpu().clone(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state):
        super().load_state_dict(state)
        with torch.no_grad():
            self.logits.copy_(_vector(state["logits"], len(self.tasks), "logits"))
        self.optimizer.load_state_dict(state["optimizer"])


class RLWWeighting(Weighting):
    """Lin et al. 2022: each step K softmax of K standard normal draws (module docstring)."""

    name = "rlw"
    RNG_OFFSET = 4  # seeded train.seed + 4 (shuffle +0, augment +1, aggregator +3)

    def __init__(self, heads, device, world, seed: int):
        super().__init__(heads, device, world)
        self.rng = torch.Generator().manual_seed(seed + self.RNG_OFFSET)
        self._weights = torch.ones(len(self.tasks), device=device)

    def weights(self) -> torch.Tensor:
        return self._weights

    def step_weights(self, parts):
        draw = torch.randn(len(self.tasks), generator=self.rng)
        self._weights = (len(self.tasks) * torch.softmax(draw, dim=0)).to(self.device)
        return self._weights

    def backward(self, total, parts):
        losses = self.stack(parts)
        (self.step_weights(parts) * losses).sum().backward()
        return (self._weights * losses.detach()).sum()

    def state_dict(self):
        return {"name": self.name, "rng": self.rng.get_state(), "weights": self._weights.detach().cpu().clone()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.rng.set_state(state["rng"])
        self._weights = _vector(state["weights"], len(self.tasks), "weights").to(self.device)


def mean_over_processes(tensor: torch.Tensor, world: World) -> torch.Tensor:
    if world.size == 1:
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor)
    return tensor / world.size


def losses_after_step(run, forward, x: torch.Tensor, labels: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The per-head losses of batch ``x`` with the weights the step left (FAMO's L(theta_t+1)): one forward
    pass without gradient, in training mode, with the batch-norm statistics put back afterwards."""
    from graphc.runtime.device import autocast
    from graphc.runtime.metrics import compute_loss

    buffers = [b.detach().clone() for b in run.model.buffers()]
    with torch.no_grad():
        with autocast(run.device, run.precision):
            outputs = forward(x)
        parts = compute_loss(outputs, labels, run.heads)[1]
        for buffer, saved in zip(run.model.buffers(), buffers):
            buffer.copy_(saved)
    return parts


def _vector(value, size: int, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.shape != (size,) or not value.is_floating_point():
        raise ValueError(f"its loss weighting's {name!r} is not {size} floats")
    return value.float()


def make_weighting(
    spec: Spec, graph: Graph, model: torch.nn.Module, heads: list[HeadInfo], device: torch.device, world: World
) -> Weighting | None:
    """The run's Weighting, or None without a ``[train] loss_weighting`` table (the step as before)."""
    table = spec.train.loss_weighting
    if table is None:
        return None
    if table.name == "fixed":
        return FixedWeighting(heads, device, world)
    if table.name == "equal":
        return EqualWeighting(heads, device, world)
    if table.name == "uncertainty":
        return UncertaintyWeighting(heads, device, world)
    if table.name == "dwa":
        return DWAWeighting(heads, device, world, table.temperature)
    if table.name == "gradnorm":
        node = gradnorm_node(graph.nodes)  # build_graph refused a model without one
        shared = list(model.get_submodule(node.name).parameters())  # those trainable at each step (freezing)
        return GradNormWeighting(heads, device, world, table.alpha, shared)
    if table.name == "famo":
        return FAMOWeighting(heads, device, world, table.lr, table.gamma)
    if table.name == "rlw":
        return RLWWeighting(heads, device, world, spec.train.seed)
    raise AssertionError(f"unknown loss weighting {table!r}")
