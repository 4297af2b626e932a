"""Faults that used to pass silently or fail obscurely (issue 22): each is now caught or works."""

import warnings

import pytest
import torch
import torch.nn.functional as F

import gameopt
from conftest import TinyGAN

ALL_KINDS = ["consensus", "simultaneous", "extragradient", "optimistic", "sga", "alternating",
             "lookahead", "competitive"]


def make(kind, gp, dp, base=torch.optim.Adam, **kw):
    kw.setdefault("lr", 1e-2)
    if kind == "consensus":
        return gameopt.ConsensusOptimizer(base, gp, dp, gamma=0.5, **kw)
    if kind == "simultaneous":
        return gameopt.SimultaneousOptimizer(base, gp, dp, **kw)
    if kind == "extragradient":
        return gameopt.ExtragradientOptimizer(base, gp, dp, **kw)
    if kind == "optimistic":
        return gameopt.OptimisticOptimizer(base, gp, dp, **kw)
    if kind == "sga":
        return gameopt.SGAOptimizer(base, gp, dp, lam=0.5, **kw)
    if kind == "alternating":
        return gameopt.AlternatingOptimizer(base, gp, dp, **kw)
    if kind == "lookahead":
        return gameopt.LookaheadMinmax(gameopt.ConsensusOptimizer(base, gp, dp, gamma=0.5, **kw), k=2)
    assert kind == "competitive"
    return gameopt.CompetitiveOptimizer(gp, dp, **kw)


def _snapshot(params):
    return [p.detach().clone() for p in params]


# --- 1. zero-size parameters ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_a_zero_size_parameter_in_the_loss_trains_like_torch(kind):
    gan = TinyGAN(seed=3)
    head = torch.nn.Linear(3, 0).double()   # a zero-width head: its output takes part in the loss
    gp, dp = gan.params()
    gp = gp + list(head.parameters())

    def losses():
        fake = gan.G(gan.z) + head(gan.z).sum()
        d_fake = gan.D(fake).squeeze(1)
        lg = F.softplus(-d_fake).mean()
        ld = (F.softplus(-gan.D(gan.x).squeeze(1)) + F.softplus(d_fake)).mean()
        if kind == "competitive":
            return ld, -ld
        return lg, ld

    opt = make(kind, gp, dp)
    before = _snapshot(gp + dp)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):
            opt.zero_grad()
            opt.step(losses)
    assert opt.skipped_steps == 0
    moved = [not torch.equal(p, b) for p, b in zip(gp + dp, before) if p.numel()]
    assert all(moved)


# --- 2. ConsensusOptimizer fed by loss.backward() -----------------------------------------


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_plain_backward_then_step_warns_that_no_consensus_term_was_computed(gamma):
    gan = TinyGAN(seed=4)
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, *gan.params(), gamma=gamma, lr=1e-2)
    lg, ld = gan.losses()
    (lg + ld).backward()   # the torch habit: no per-player gradients, no consensus term
    with pytest.warns(RuntimeWarning, match=r"no opt\.backward\(gen_loss, disc_loss\).*loss\.backward\(\)"):
        opt.step()
    # the same through a closure that leaves plain gradients in p.grad
    opt.zero_grad()
    with pytest.warns(RuntimeWarning, match=r"no opt\.backward"):
        opt.step(lambda: sum(gan.losses()).backward())


def test_opt_backward_then_step_and_closures_do_not_warn():
    gan = TinyGAN(seed=4)
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, *gan.params(), gamma=1.0, lr=1e-2, every=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):   # lazy: the plain turns are opt.backward too
            opt.zero_grad()
            opt.backward(*gan.losses())
            opt.step()
        opt.step(gan.losses)

        def closure():   # Lightning's kind: the closure calls opt.backward and returns None
            opt.zero_grad()
            opt.backward(*gan.losses())
        opt.step(closure)
        opt.zero_grad()
        opt.step()   # nothing in p.grad: nothing to warn about
