"""copy.deepcopy and pickle of gameopt optimisers: the copy owns its parameters and state.

Like torch.optim, a copy keeps settings, defaults, state and param groups; hooks and
methods patched onto the instance (an LR scheduler's step wrapper) are not copied.
"""

import copy
import os
import pickle

import pytest
import torch

import gameopt
from conftest import TinyGAN

os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")


def _step(opt, gan):
    if isinstance(opt, gameopt.AlternatingOptimizer):
        return opt.step(gan.losses)
    opt.zero_grad()
    opt.backward(*gan.losses())
    opt.step()


def _flat(ts):
    return torch.cat([t.detach().reshape(-1) for t in ts])


class _Holder:
    """The models and the optimiser copied together, as a training-state object would be."""

    def __init__(self, gan, opt):
        self.gan, self.opt = gan, opt


def _round_trips(holder):
    yield "deepcopy", copy.deepcopy(holder)
    yield "pickle", pickle.loads(pickle.dumps(holder))


@pytest.mark.parametrize("make", [
    lambda g: gameopt.ConsensusOptimizer(torch.optim.Adam, *g.params(), gamma=1.0, lr=1e-2),
    lambda g: gameopt.SimultaneousOptimizer(torch.optim.SGD, *g.params(), lr=1e-2, momentum=0.9),
    lambda g: gameopt.AlternatingOptimizer(torch.optim.Adam, *g.params(), lr=1e-2, disc_steps=2),
], ids=["consensus", "simga", "altga"])
def test_copy_with_a_scheduler_attached_steps_only_its_own_parameters(make):
    gan = TinyGAN(seed=1)
    opt = make(gan)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.5)
    _step(opt, gan)
    sched.step()
    for how, clone in _round_trips(_Holder(gan, opt)):
        original = _flat(p for ps in gan.params() for p in ps)
        _step(clone.opt, clone.gan)
        # the copy moved its own parameters, never the original's
        assert torch.equal(_flat(p for ps in gan.params() for p in ps), original), how
        moved = _flat(p for ps in clone.gan.params() for p in ps)
        assert not torch.equal(moved, original), how
        # and it matches the original stepped the same way
        reference = copy.deepcopy(_Holder(gan, opt))
        _step(reference.opt, reference.gan)
        assert torch.equal(moved, _flat(p for ps in reference.gan.params() for p in ps)), how
        assert clone.opt.param_groups[0]["lr"] == pytest.approx(5e-3)
        assert clone.opt.param_groups is clone.opt.base_optimizer.param_groups
        assert "step" not in vars(clone.opt)  # the scheduler's wrapper stays with the original


def test_pickle_after_attach_and_hooks_drops_the_hooks():
    gan = TinyGAN(seed=2)
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), gamma=1.0, lr=0.1)
    reg = gameopt.PrimalDualRegularizer("js", alpha=1.0, bandwidth=1.0)
    reg.attach(opt)
    opt.register_step_pre_hook(lambda *a: None)
    _step(opt, gan)
    clone = pickle.loads(pickle.dumps(_Holder(gan, opt)))
    assert len(clone.opt._optimizer_step_post_hooks) == 0 and len(clone.opt._optimizer_step_pre_hooks) == 0
    _step(clone.opt, clone.gan)
    assert int(reg.num_steps) == 1  # the copy's step does not drive the original's regulariser


def test_copy_rebuilds_the_owner_map_and_keeps_settings_and_counters():
    gan = TinyGAN(seed=3)
    gp, dp = gan.params()
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, gp[:2], dp, gamma=2.0, lr=0.1, smoothing=True, nonfinite="skip")
    opt.zero_grad()
    lg, ld = gan.losses()
    opt.backward(lg * float("nan"), ld)
    with pytest.warns(RuntimeWarning):
        opt.step()
    for how, clone in _round_trips(_Holder(gan, opt)):
        c = clone.opt
        assert c.skipped_steps == 1 and c.smoothing and c.nonfinite == "skip", how
        assert c._shared is not opt._shared
        c_gp, c_dp = clone.gan.params()
        assert set(c._owner) == {id(p) for p in c_gp[:2] + c_dp}, how
        with pytest.raises(ValueError, match="both players"):
            c.add_param_group({"params": [c_dp[0]], "player": "generator"})
        c.add_param_group({"params": c_gp[2:], "player": "generator"})
        assert c.param_groups[-1]["gamma"] == 2.0


@pytest.mark.skipif(not hasattr(torch._dynamo.config, "trace_autograd_ops"), reason="torch cannot trace autograd.grad")
def test_copy_and_pickle_with_a_compiled_core():
    gan = TinyGAN(seed=4, dtype=torch.float32)
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), gamma=1.0, lr=0.1, compile=True)
    opt.step(gan.losses)  # eager; builds the compiled core for the next closure step
    assert opt._shared.compiled_core is not None
    for how, clone in _round_trips(_Holder(gan, opt)):
        assert clone.opt._shared.compiled_core is None and clone.opt.compile, how
        before = _flat(p for ps in gan.params() for p in ps)
        _step(clone.opt, clone.gan)
        assert torch.equal(_flat(p for ps in gan.params() for p in ps), before), how
    assert opt._shared.compiled_core is not None
