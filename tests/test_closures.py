"""step(closure): a closure returns the losses, or None when it put the gradients in p.grad."""

import pytest
import torch

import gameopt
from conftest import TinyGAN


def _snapshot(gan):
    return [p.detach().clone() for ps in gan.params() for p in ps]


@pytest.mark.parametrize("cls", [gameopt.ConsensusOptimizer, gameopt.SimultaneousOptimizer])
def test_closure_returning_none_applies_the_gradients_already_in_p_grad(cls):
    kw = {"gamma": 1.0} if cls is gameopt.ConsensusOptimizer else {}
    gan_a, gan_b = TinyGAN(seed=4), TinyGAN(seed=4)
    opt_a = cls(torch.optim.Adam, *gan_a.params(), lr=1e-2, **kw)
    opt_b = cls(torch.optim.Adam, *gan_b.params(), lr=1e-2, **kw)
    seen_grad_mode = []

    def closure():  # Lightning's manual-optimisation closure returns None
        seen_grad_mode.append(torch.is_grad_enabled())
        opt_b.zero_grad()
        opt_b.backward(*gan_b.losses())

    for _ in range(3):
        opt_a.zero_grad()
        opt_a.backward(*gan_a.losses())
        opt_a.step()
        with torch.no_grad():  # the closure still runs with gradients enabled
            assert opt_b.step(closure) is None
    assert seen_grad_mode == [True] * 3
    for a, b in zip(_snapshot(gan_a), _snapshot(gan_b)):
        assert torch.equal(a, b)


def test_closure_returning_none_is_checked_for_nan():
    gan = TinyGAN(seed=5)
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), gamma=1.0, lr=0.1)
    before = _snapshot(gan)

    def closure():
        lg, ld = gan.losses()
        opt.backward(lg * float("nan"), ld)

    with pytest.warns(RuntimeWarning, match="non-finite"):
        opt.step(closure)
    assert opt.last_step_skipped
    assert all(torch.equal(a, b) for a, b in zip(before, _snapshot(gan)))


@pytest.mark.parametrize("bad", [torch.tensor(1.0), "loss", 3.0])
def test_closure_returning_something_else_is_a_clear_error(bad):
    gan = TinyGAN(seed=6)
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), gamma=1.0, lr=0.1)
    with pytest.raises(gameopt.GameInputError, match="tuple of losses.*or None"):
        opt.step(lambda: bad)


def test_alternating_closure_returning_none_names_the_cause():
    gan = TinyGAN(seed=7)
    opt = gameopt.AlternatingOptimizer(torch.optim.SGD, *gan.params(), lr=0.1)
    before = _snapshot(gan)
    with pytest.raises(gameopt.GameInputError, match="returned None.*must return them"):
        opt.step(lambda: None)
    assert all(torch.equal(a, b) for a, b in zip(before, _snapshot(gan)))
    assert len(opt.state) == 0
