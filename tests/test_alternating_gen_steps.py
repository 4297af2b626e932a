"""AlternatingOptimizer's ``gen_steps``: k generator updates per discriminator update.

The DCGAN code that PacGAN's standard-size stacked-MNIST experiment builds on (carpedm20's
DCGAN-tensorflow) runs the generator's Adam step twice after each discriminator step.
"""

import copy

import pytest
import torch

import gameopt
from conftest import TinyGAN


def _manual(gan, lr, turns):
    """Plain SGD, one player at a time, each on losses evaluated after the previous update."""
    gp, dp = gan.params()
    for player in turns:
        lg, ld = gan.losses()
        params, loss = (gp, lg) if player == "generator" else (dp, ld)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= lr * g


@pytest.mark.parametrize("disc_steps,gen_steps", [(1, 2), (2, 3)])
def test_gen_steps_match_the_manual_loop(disc_steps, gen_steps):
    ref, gan = TinyGAN(seed=4), TinyGAN(seed=4)
    turns = ["discriminator"] * disc_steps + ["generator"] * gen_steps
    for _ in range(2):
        _manual(ref, 0.05, turns)
    opt = gameopt.AlternatingOptimizer(torch.optim.SGD, *gan.params(), lr=0.05,
                                       disc_steps=disc_steps, gen_steps=gen_steps)
    for _ in range(2):
        opt.step(gan.losses)
    for p, w in zip(sum(gan.params(), []), sum(ref.params(), [])):
        torch.testing.assert_close(p.detach(), w.detach(), rtol=0, atol=1e-14)


def test_gen_steps_two_differs_from_one():
    one, two = TinyGAN(seed=5), TinyGAN(seed=5)
    gameopt.AlternatingOptimizer(torch.optim.SGD, *one.params(), lr=0.05).step(one.losses)
    gameopt.AlternatingOptimizer(torch.optim.SGD, *two.params(), lr=0.05, gen_steps=2).step(two.losses)
    assert not torch.equal(one.params()[0][0], two.params()[0][0])
    torch.testing.assert_close(one.params()[1][0], two.params()[1][0], rtol=0, atol=0)


def test_adam_counts_and_state_dict_record_gen_steps():
    gan = TinyGAN(seed=6)
    opt = gameopt.AlternatingOptimizer(torch.optim.Adam, *gan.params(), lr=1e-3, gen_steps=2)
    closure_calls = []

    def closure():
        closure_calls.append(1)
        return gan.losses()

    opt.step(closure)
    assert len(closure_calls) == 3   # D, then G twice, each on fresh losses
    gp, dp = gan.params()
    assert opt.state[gp[0]]["step"].item() == 2 and opt.state[dp[0]]["step"].item() == 1
    sd = copy.deepcopy(opt.state_dict())
    assert sd["gameopt"]["gen_steps"] == 2
    other = TinyGAN(seed=6)
    resumed = gameopt.AlternatingOptimizer(torch.optim.Adam, *other.params(), lr=1e-3)
    resumed.load_state_dict(sd)
    assert resumed.gen_steps == 2


def test_a_checkpoint_without_gen_steps_keeps_the_optimizers_setting():
    gan = TinyGAN(seed=7)
    opt = gameopt.AlternatingOptimizer(torch.optim.Adam, *gan.params(), lr=1e-3)
    opt.step(gan.losses)
    old = copy.deepcopy(opt.state_dict())
    del old["gameopt"]["gen_steps"]   # written before gen_steps existed
    other = TinyGAN(seed=7)
    resumed = gameopt.AlternatingOptimizer(torch.optim.Adam, *other.params(), lr=1e-3, gen_steps=3)
    resumed.load_state_dict(old)
    assert resumed.gen_steps == 3


@pytest.mark.parametrize("name", ["gen_steps", "disc_steps"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_bad_step_counts_are_refused_by_name(name, value):
    gan = TinyGAN(seed=8)
    with pytest.raises(gameopt.GameInputError, match=f"{name} must be an integer >= 1"):
        gameopt.AlternatingOptimizer(torch.optim.SGD, *gan.params(), lr=0.1, **{name: value})


def test_gen_steps_without_a_generator_is_refused():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with pytest.raises(gameopt.GameInputError, match="no player is named 'generator'"):
        gameopt.AlternatingOptimizer(torch.optim.SGD, players={"x": a.parameters(), "y": b.parameters()},
                                     lr=0.1, gen_steps=2)


def test_a_checkpoint_with_bad_gen_steps_is_refused_and_changes_nothing():
    gan = TinyGAN(seed=9)
    opt = gameopt.AlternatingOptimizer(torch.optim.Adam, *gan.params(), lr=1e-3)
    opt.step(gan.losses)
    before = copy.deepcopy(opt.state_dict())
    sd = copy.deepcopy(opt.state_dict())
    sd["gameopt"]["gen_steps"] = 0
    with pytest.raises(gameopt.GameInputError, match="'gen_steps' must be an integer >= 1"):
        opt.load_state_dict(sd)
    assert opt.gen_steps == 1
    after = opt.state_dict()
    assert after["gameopt"] == before["gameopt"]
