"""Step hooks: pre-hooks once per step call, post-hooks once and only when parameters moved."""

import warnings

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import gameopt
from conftest import TinyGAN


def _nan_losses(gan):
    lg, ld = gan.losses()
    return lg * float("nan"), ld


@pytest.fixture
def global_calls():
    calls = []
    handles = [
        register_optimizer_step_pre_hook(lambda opt, a, k: calls.append(("pre", type(opt).__name__))),
        register_optimizer_step_post_hook(lambda opt, a, k: calls.append(("post", type(opt).__name__))),
    ]
    yield calls
    for h in handles:
        h.remove()


def test_global_hooks_fire_once_per_step_and_post_hooks_not_on_skipped_steps(global_calls):
    gan = TinyGAN(seed=1)
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, *gan.params(), gamma=1.0, lr=1e-2)
    local = []
    opt.register_step_pre_hook(lambda o, a, k: local.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: local.append("post"))
    opt.zero_grad()
    opt.backward(*gan.losses())
    opt.step()
    assert global_calls == [("pre", "ConsensusOptimizer"), ("post", "ConsensusOptimizer")]
    assert local == ["pre", "post"]
    global_calls.clear()
    local.clear()
    opt.zero_grad()
    opt.backward(*_nan_losses(gan))
    with pytest.warns(RuntimeWarning, match="non-finite"):
        opt.step()
    assert global_calls == [("pre", "ConsensusOptimizer")] and local == ["pre"]


def test_a_pre_hook_that_writes_nan_is_checked():
    gan = TinyGAN(seed=2)
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), gamma=1.0, lr=0.1)

    def poison(o, args, kwargs):
        next(iter(gan.D.parameters())).grad.fill_(float("nan"))
    opt.register_step_pre_hook(poison)
    before = [p.detach().clone() for p in gan.D.parameters()]
    opt.zero_grad()
    opt.backward(*gan.losses())
    with pytest.warns(RuntimeWarning, match=r"\['discriminator'\]"):
        opt.step()
    assert all(torch.equal(p, b) for p, b in zip(gan.D.parameters(), before))


def test_base_optimizer_instance_hooks_still_run_once(global_calls):
    gan = TinyGAN(seed=3)
    opt = gameopt.SimultaneousOptimizer(torch.optim.SGD, *gan.params(), lr=0.1)
    base_calls = []
    opt.base_optimizer.register_step_post_hook(lambda o, a, k: base_calls.append(o))
    opt.step(gan.losses)
    assert base_calls == [opt.base_optimizer]
    assert [c for c, _ in global_calls] == ["pre", "post"]


def test_alternating_hooks_fire_once_per_round(global_calls):
    gan = TinyGAN(seed=4)
    opt = gameopt.AlternatingOptimizer(torch.optim.SGD, *gan.params(), lr=0.1, disc_steps=2)
    posts = []
    opt.register_step_post_hook(lambda o, a, k: posts.append(1))
    opt.step(gan.losses)
    assert posts == [1] and [c for c, _ in global_calls] == ["pre", "post"]


def test_a_subclass_calling_its_parents_step_runs_the_hooks_once(global_calls):
    class Twice(gameopt.ConsensusOptimizer):
        def step(self, closure=None):
            super().step(closure)
            return super().step(closure)

    gan = TinyGAN(seed=5)
    opt = Twice(torch.optim.SGD, *gan.params(), gamma=1.0, lr=0.1)
    opt.step(gan.losses)
    assert [c for c, _ in global_calls] == ["pre", "post"]


def test_lr_scheduler_sees_the_step_and_does_not_warn_even_after_a_skip():
    gan = TinyGAN(seed=6)
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, *gan.params(), gamma=1.0, lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
    opt.zero_grad()
    opt.backward(*_nan_losses(gan))
    with pytest.warns(RuntimeWarning, match="non-finite"):
        opt.step()  # skipped, but the user did call step(): the schedule goes on
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.step()
        for _ in range(2):
            opt.zero_grad()
            opt.backward(*gan.losses())
            opt.step()
            sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 / 8)


def test_attached_regularizer_schedule_does_not_advance_on_skipped_steps():
    gan = TinyGAN(seed=7)
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), gamma=1.0, lr=0.1)
    reg = gameopt.PrimalDualRegularizer("js", alpha=1.0, bandwidth=1.0)
    reg.attach(opt)
    opt.step(gan.losses)
    assert int(reg.num_steps) == 1
    with pytest.warns(RuntimeWarning, match="non-finite"):
        opt.step(lambda: _nan_losses(gan))
    assert int(reg.num_steps) == 1
    opt.step(gan.losses)
    assert int(reg.num_steps) == 2


def test_grad_scaler_overflow_fires_no_hooks(global_calls):
    gan = TinyGAN(seed=8, dtype=torch.float32)
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), gamma=1.0, lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    opt.zero_grad()
    lg, ld = gan.losses()
    opt.backward(scaler.scale(lg * float("inf")), scaler.scale(ld), scaler=scaler)
    scaler.step(opt)
    scaler.update()
    assert global_calls == [] and opt.skipped_steps == 0
