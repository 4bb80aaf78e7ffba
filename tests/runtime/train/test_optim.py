"""Optimisers and learning-rate schedules built from a [train] table."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from graphc.lang.spec import TrainSpec
from graphc.runtime.train.optim import load_optimizer_state, lr_factor, make_optimizer, make_scheduler


def _train(**fields) -> TrainSpec:
    return TrainSpec.model_validate(fields)


def _params() -> list[torch.nn.Parameter]:
    return list(torch.nn.Linear(3, 2).parameters())


def test_adam_takes_the_spec_epsilon_and_weight_decay():
    opt = make_optimizer(_params(), _train(optimizer={"name": "adam", "lr": 5e-4, "eps": 1e-7, "weight_decay": 1e-4}))
    assert isinstance(opt, torch.optim.Adam) and not isinstance(opt, torch.optim.AdamW)
    group = opt.param_groups[0]
    assert (group["lr"], group["eps"], group["weight_decay"]) == (5e-4, 1e-7, 1e-4)


def test_adamw_and_sgd():
    adamw = make_optimizer(_params(), _train(optimizer={"name": "adamw", "lr": 2e-3, "weight_decay": 0.05}))
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.param_groups[0]["weight_decay"] == 0.05
    sgd = make_optimizer(_params(), _train(optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True}))
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"]) == (0.1, 0.9, True)


def test_constant_schedule_without_warmup_keeps_the_lr():
    f = lr_factor(_train(schedule={"name": "constant"}).schedule, total_steps=50, steps_per_epoch=10)
    assert [f(s) for s in range(50)] == [1.0] * 50


def test_warmup_rises_linearly_then_holds():
    f = lr_factor(_train(schedule={"name": "constant", "warmup_epochs": 1}).schedule, total_steps=50, steps_per_epoch=4)
    values = [f(s) for s in range(8)]
    assert values[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert values[4:] == [1.0] * 4
    assert 0 < values[0]  # the first batch still learns


def test_cosine_goes_from_peak_to_min_ratio_after_warmup():
    spec = _train(schedule={"name": "cosine", "warmup_epochs": 1, "min_lr_ratio": 0.1}).schedule
    total, per_epoch = 40, 10
    f = lr_factor(spec, total, per_epoch)
    assert f(per_epoch) == pytest.approx(1.0)  # end of warm-up: the peak
    assert f(total) == pytest.approx(0.1)
    middle = per_epoch + (total - per_epoch) // 2
    assert f(middle) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    after = [f(s) for s in range(per_epoch, total + 1)]
    assert all(a >= b for a, b in zip(after, after[1:]))  # monotone decay


def test_onecycle_matches_torch_onecyclelr():
    total, lr = 37, 0.01
    train = _train(
        epochs=1, optimizer={"name": "sgd", "lr": lr, "momentum": 0.0}, schedule={"name": "onecycle", "pct_start": 0.3}
    )
    ours_opt = make_optimizer(_params(), train)
    ours = make_scheduler(ours_opt, train, steps_per_epoch=total)
    ref_opt = torch.optim.SGD(_params(), lr=lr)
    ref = torch.optim.lr_scheduler.OneCycleLR(
        ref_opt, max_lr=lr, total_steps=total, pct_start=0.3, anneal_strategy="cos", cycle_momentum=False
    )
    for _ in range(total - 1):
        assert ours_opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-9)
        ours_opt.step(), ours.step(), ref_opt.step(), ref.step()
    assert ours_opt.param_groups[0]["lr"] == pytest.approx(lr / 25 / 1e4, rel=1e-6)


def test_scheduler_is_stepped_per_batch_and_resumes_from_its_state():
    train = _train(epochs=3, optimizer={"name": "adam", "lr": 1e-3}, schedule={"name": "cosine"})
    opt = make_optimizer(_params(), train)
    sched = make_scheduler(opt, train, steps_per_epoch=5)
    for _ in range(7):
        opt.step(), sched.step()
    expected = 1e-3 * lr_factor(train.schedule, 15, 5)(7)
    assert opt.param_groups[0]["lr"] == pytest.approx(expected)
    # A fresh optimiser + scheduler loaded from the state dicts continue identically.
    opt2 = make_optimizer(_params(), train)
    sched2 = make_scheduler(opt2, train, steps_per_epoch=5)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    for _ in range(3):
        opt.step(), sched.step(), opt2.step(), sched2.step()
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_optimisers_use_fused_kernels_on_the_cpu_and_keep_them_when_resuming_an_unfused_state():
    # Fused kernels compute the same update as torch's loop; a checkpoint written with the loop
    # (graphc 0.2.0) resumes with fused kernels and continues the same trajectory.
    for name in ("adam", "adamw", "sgd"):
        assert make_optimizer(_params(), _train(optimizer={"name": name, "lr": 1e-2})).param_groups[0]["fused"] is True
    train = _train(optimizer={"name": "adam", "lr": 1e-2, "weight_decay": 1e-3})
    looped_params = _params()
    looped = torch.optim.Adam(looped_params, lr=1e-2, weight_decay=1e-3, fused=False, foreach=False)
    for _ in range(3):
        for p in looped_params:
            p.grad = torch.ones_like(p) * 0.1 + p.detach() * 0.5
        looped.step()
    resumed_params = [p.detach().clone().requires_grad_() for p in looped_params]
    resumed = make_optimizer(resumed_params, train)
    load_optimizer_state(resumed, copy.deepcopy(looped.state_dict()))  # as read from a file: not shared
    assert resumed.param_groups[0]["fused"] is True and looped.param_groups[0]["fused"] is False
    for _ in range(3):
        for a, b in zip(looped_params, resumed_params):
            a.grad = torch.ones_like(a) * 0.1 + a.detach() * 0.5
            b.grad = torch.ones_like(b) * 0.1 + b.detach() * 0.5
        looped.step(), resumed.step()
    for a, b in zip(looped_params, resumed_params):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
