"""gameopt optimisers behind wrappers that forward attribute reads (PyTorch Lightning's kind).

``LightningOptimizer`` is a dynamic subclass of the optimiser's class whose
``__getattr__`` forwards reads to the real optimiser, so a method called through it
runs with ``self`` = the wrapper: anything it assigns would land on the wrapper.
"""

import pytest
import torch

import gameopt
from conftest import TinyGAN


class ForwardingWrapper:
    """What LightningOptimizer does: subclass the optimiser's class, forward reads, forward step."""

    def __init__(self, optimizer):
        self._optimizer = optimizer
        self.__class__ = type("Forwarding" + optimizer.__class__.__name__, (self.__class__, optimizer.__class__), {})

    def step(self, closure=None, **kwargs):
        return self._optimizer.step(closure, **kwargs)

    def __getattr__(self, item):
        return getattr(self._optimizer, item)


def _flat(ts):
    return torch.cat([t.detach().reshape(-1) for t in ts])


def _nan_losses(gan):
    lg, ld = gan.losses()
    return lg * float("nan"), ld


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_nan_backward_through_a_wrapper_makes_the_real_optimiser_skip(gamma):
    gan = TinyGAN(seed=1)
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, *gan.params(), gamma=gamma, lr=1e-2)
    wrapper = ForwardingWrapper(opt)
    params = [p for ps in gan.params() for p in ps]
    before = _flat(params)
    wrapper.zero_grad()
    stats = wrapper.backward(*_nan_losses(gan))
    with pytest.warns(RuntimeWarning, match=r"non-finite.*\['generator'"):
        wrapper.step()
    assert torch.equal(_flat(params), before)
    assert len(opt.state) == 0
    assert opt.skipped_steps == 1 and wrapper.skipped_steps == 1
    assert opt.last_step_skipped and wrapper.last_step_skipped
    assert opt.stats is stats and wrapper.stats is stats
    # the real optimiser stepped directly sees the same state
    with pytest.warns(RuntimeWarning, match="non-finite"):
        opt.step()
    assert wrapper.skipped_steps == 2


def test_nothing_gameopt_changes_lands_on_the_wrapper():
    gan = TinyGAN(seed=2)
    gp, dp = gan.params()
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, gp[:2], dp, gamma=1.0, lr=1e-2)
    wrapper = ForwardingWrapper(opt)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    wrapper.zero_grad()
    lg, ld = gan.losses()
    wrapper.backward(scaler.scale(lg), scaler.scale(ld), scaler=scaler)
    scaler.step(wrapper)
    scaler.update()
    wrapper.step(gan.losses)
    wrapper.add_param_group({"params": gp[2:], "player": "generator"})
    sd = wrapper.state_dict()
    sd["gameopt"]["nonfinite"] = "raise"
    wrapper.load_state_dict(sd)
    wrapper.smoothing = True
    assert set(vars(wrapper)) == {"_optimizer"}, vars(wrapper)
    assert opt.nonfinite == "raise" and opt.smoothing
    assert len(opt.param_groups) == 3 and id(gp[2]) in opt._owner
    with pytest.raises(ValueError, match="both players"):  # the owner map the wrapper updated is the real one
        opt.add_param_group({"params": [gp[2]], "player": "discriminator"})


def test_alternating_through_a_wrapper():
    gan = TinyGAN(seed=3)
    opt = gameopt.AlternatingOptimizer(torch.optim.SGD, *gan.params(), lr=0.1)
    wrapper = ForwardingWrapper(opt)
    with pytest.warns(RuntimeWarning, match="discriminator"):
        wrapper.step(lambda: (gan.losses()[0], gan.losses()[1] * float("inf")))
    assert opt.skipped_steps == 1 and opt.last_step_skipped
    assert set(vars(wrapper)) == {"_optimizer"}


def test_lightning_optimizer_backward_then_real_step_skips_nan():
    pytest.importorskip("lightning")
    from lightning.pytorch.core.optimizer import LightningOptimizer

    gan = TinyGAN(seed=4)
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), gamma=1.0, lr=0.1)
    wrapper = LightningOptimizer(opt)
    params = [p for ps in gan.params() for p in ps]
    before = _flat(params)
    wrapper.zero_grad()
    wrapper.backward(*_nan_losses(gan))
    with pytest.warns(RuntimeWarning, match="non-finite"):
        opt.step()  # what Lightning's strategy calls
    assert torch.equal(_flat(params), before)
    assert wrapper.skipped_steps == 1
    assert set(vars(wrapper)) <= {"_optimizer", "_strategy", "_on_before_step", "_on_after_step"}
