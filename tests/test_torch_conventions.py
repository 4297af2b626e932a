"""gameopt optimisers behave like torch.optim optimisers."""

import copy
import io

import pytest
import torch

import gameopt
from conftest import TinyGAN

BASES = [
    (torch.optim.Adam, {"lr": 1e-2}),
    (torch.optim.RMSprop, {"lr": 1e-3}),
    (torch.optim.SGD, {"lr": 1e-2, "momentum": 0.9}),
    (torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.1}),
]


def train(gan, opt, steps, sched=None, data_seed=0):
    g = torch.Generator().manual_seed(data_seed)
    for _ in range(steps):
        gan.z = torch.randn(gan.z.shape, generator=g, dtype=gan.z.dtype)
        gan.x = torch.randn(gan.x.shape, generator=g, dtype=gan.x.dtype)
        opt.zero_grad()
        opt.backward(*gan.losses())
        opt.step()
        if sched is not None:
            sched.step()
    return g


def snapshot(gan):
    return [p.detach().clone() for p in list(gan.G.parameters()) + list(gan.D.parameters())]


@pytest.mark.parametrize("base,kw", BASES)
def test_state_dict_resume_is_bit_identical(base, kw):
    gan = TinyGAN(seed=1, dtype=torch.float32)
    opt = gameopt.ConsensusOptimizer(base, *gan.params(), gamma=1.0, **kw)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)
    train(gan, opt, 3, sched)
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict(), "G": gan.G.state_dict(), "D": gan.D.state_dict()}, buf)
    train(gan, opt, 4, sched, data_seed=1)
    uninterrupted = snapshot(gan)

    buf.seek(0)
    ckpt = torch.load(buf)
    gan2 = TinyGAN(seed=99, dtype=torch.float32)
    gan2.G.load_state_dict(ckpt["G"])
    gan2.D.load_state_dict(ckpt["D"])
    opt2 = gameopt.ConsensusOptimizer(base, *gan2.params(), gamma=1.0, **kw)
    sched2 = torch.optim.lr_scheduler.ExponentialLR(opt2, 0.9)
    opt2.load_state_dict(ckpt["opt"])
    sched2.load_state_dict(ckpt["sched"])
    train(gan2, opt2, 4, sched2, data_seed=1)
    for a, b in zip(uninterrupted, snapshot(gan2)):
        assert torch.equal(a, b)


def test_checkpoint_holds_gameopt_settings():
    gan = TinyGAN(seed=1)
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, *gan.params(), gamma=2.0, smoothing=True, lr=1e-3)
    sd = opt.state_dict()
    assert sd["gameopt"]["smoothing"] is True
    assert [g["gamma"] for g in sd["param_groups"]] == [2.0, 2.0]
    assert [g["player"] for g in sd["param_groups"]] == ["generator", "discriminator"]
    gan2 = TinyGAN(seed=2)
    opt2 = gameopt.ConsensusOptimizer(torch.optim.Adam, *gan2.params(), gamma=5.0, lr=1e-3)
    opt2.load_state_dict(sd)
    assert opt2.smoothing is True
    assert [g["gamma"] for g in opt2.param_groups] == [2.0, 2.0]
    # shared with the base optimiser after loading
    assert opt2.param_groups is opt2.base_optimizer.param_groups


def test_load_rejects_swapped_or_foreign_checkpoints():
    gan = TinyGAN(seed=1)
    gp, dp = gan.params()
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, gp, dp, lr=0.1)
    sd = opt.state_dict()
    sd["param_groups"] = sd["param_groups"][::-1]
    with pytest.raises(ValueError, match="belongs to player"):
        opt.load_state_dict(sd)
    with pytest.raises(ValueError, match="not written by a gameopt"):
        opt.load_state_dict(torch.optim.SGD(gp + dp, lr=0.1).state_dict())


def test_schedulers_drive_both_players():
    gan = TinyGAN(seed=2)
    gp, dp = gan.params()
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, [{"params": gp, "lr": 1e-3}], [{"params": dp, "lr": 4e-3}], gamma=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, [lambda s: 0.5 ** s, lambda s: 0.1 ** s])
    train(gan, opt, 2, sched)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.25)
    assert opt.param_groups[1]["lr"] == pytest.approx(4e-3 * 0.01)
    assert opt.base_optimizer.param_groups[1]["lr"] == pytest.approx(4e-3 * 0.01)
    # the scheduler saw our step (no "lr_scheduler.step() before optimizer.step()" warning)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(gan, opt, 1, sched)


def test_per_player_hyperparameters_are_honoured():
    gan = TinyGAN(seed=3)
    gp, dp = gan.params()
    start = snapshot(gan)
    groups = [{"params": gp, "lr": 1e-2, "betas": (0.5, 0.9)}], [{"params": dp, "lr": 3e-3, "weight_decay": 0.1}]
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, *groups, gamma=0.0)
    train(gan, opt, 3)
    got = snapshot(gan)
    with torch.no_grad():
        for p, s in zip(gp + dp, start):
            p.copy_(s)
    ref = torch.optim.Adam([{"params": gp, "lr": 1e-2, "betas": (0.5, 0.9)}, {"params": dp, "lr": 3e-3, "weight_decay": 0.1}])
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        gan.z = torch.randn(gan.z.shape, generator=g, dtype=gan.z.dtype)
        gan.x = torch.randn(gan.x.shape, generator=g, dtype=gan.x.dtype)
        ref.zero_grad()
        lg, ld = gan.losses()
        for p, t in zip(gp, torch.autograd.grad(lg, gp, retain_graph=True)):
            p.grad = t
        for p, t in zip(dp, torch.autograd.grad(ld, dp)):
            p.grad = t
        ref.step()
    for a, b in zip(got, snapshot(gan)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cls", [gameopt.ConsensusOptimizer, gameopt.SimultaneousOptimizer])
def test_closure_path_equals_backward_then_step(cls):
    kw = {"gamma": 1.0} if cls is gameopt.ConsensusOptimizer else {}
    gan_a, gan_b = TinyGAN(seed=4), TinyGAN(seed=4)
    opt_a = cls(torch.optim.Adam, *gan_a.params(), lr=1e-2, **kw)
    opt_b = cls(torch.optim.Adam, *gan_b.params(), lr=1e-2, **kw)
    for _ in range(3):
        opt_a.zero_grad()
        opt_a.backward(*gan_a.losses())
        opt_a.step()
        losses = opt_b.step(gan_b.losses)
        assert len(losses) == 2
    for a, b in zip(snapshot(gan_a), snapshot(gan_b)):
        assert torch.equal(a, b)


def test_zero_grad_set_to_none_and_clipping_between_backward_and_step():
    gan = TinyGAN(seed=5)
    gp, dp = gan.params()
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, gp, dp, gamma=1.0, lr=0.1)
    opt.backward(*gan.losses())
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in gp + dp)
    opt.zero_grad()
    assert all(p.grad is None for p in gp + dp)
    opt.backward(*gan.losses())
    torch.nn.utils.clip_grad_norm_(gp + dp, 1e-3)
    clipped = [p.grad.clone() for p in gp + dp]
    before = snapshot(gan)
    opt.step()
    for p, b, g in zip(gp + dp, before, clipped):
        torch.testing.assert_close(p.detach(), b - 0.1 * g)


def test_hooks_and_add_param_group():
    gan = TinyGAN(seed=6)
    gp, dp = gan.params()
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, gp[:2], dp, gamma=1.0, lr=1e-3)
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    opt.add_param_group({"params": gp[2:], "player": "generator", "lr": 5e-3})
    assert opt.param_groups[-1]["gamma"] == 1.0 and opt.param_groups[-1]["player"] == "generator"
    assert len(opt.base_optimizer.param_groups) == 3
    train(gan, opt, 1)
    assert calls == ["pre", "post"]
    assert all(p in opt.state for p in gp + dp)
    with pytest.raises(ValueError, match="player"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))]})
    with pytest.raises(ValueError, match="both players"):
        opt.add_param_group({"params": [dp[0]], "player": "generator"})
    assert len(opt.param_groups) == 3


def test_works_with_many_base_optimisers():
    for base in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop,
                 torch.optim.Adagrad, torch.optim.Adamax, torch.optim.NAdam, torch.optim.RAdam):
        gan = TinyGAN(seed=7)
        before = snapshot(gan)
        opt = gameopt.ConsensusOptimizer(base, *gan.params(), gamma=1.0, lr=1e-2)
        train(gan, opt, 2)
        assert any(not torch.equal(a, b) for a, b in zip(before, snapshot(gan))), base


def test_deepcopy_and_repr():
    gan = TinyGAN(seed=8)
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, *gan.params(), gamma=1.0, lr=1e-3)
    assert "ConsensusOptimizer" in repr(opt) and "generator" in repr(opt)
    train(gan, opt, 1)
    sd = copy.deepcopy(opt.state_dict())
    assert len(sd["state"]) == len(list(gan.G.parameters())) + len(list(gan.D.parameters()))


def test_alternating_state_dict_and_scheduler():
    gan = TinyGAN(seed=9)
    opt = gameopt.AlternatingOptimizer(torch.optim.Adam, *gan.params(), disc_steps=2, lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
    opt.step(gan.losses)
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == [5e-4, 5e-4]
    sd = opt.state_dict()
    assert sd["gameopt"]["disc_steps"] == 2 and sd["gameopt"]["order"] == ["discriminator", "generator"]
    # the discriminator took two Adam steps, the generator one
    gp, dp = gan.params()
    assert opt.state[dp[0]]["step"].item() == 2 and opt.state[gp[0]]["step"].item() == 1


def test_deepcopy_and_pickle_of_the_optimizer_keep_working():
    import pickle
    gan = TinyGAN(seed=10)
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, *gan.params(), gamma=1.0, lr=1e-2)
    train(gan, opt, 2)
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert clone.param_groups is clone.base_optimizer.param_groups
        assert len(clone.state) == len(opt.state)
        assert clone.param_groups[0]["gamma"] == 1.0
        with pytest.raises(ValueError, match="does not depend"):  # it owns copies of the parameters
            clone.backward(*gan.losses())


def test_consensus_default_gamma_is_one_the_measured_choice_for_adam():
    """The default gamma is 1 (issue 12's sweeps: with Adam, gamma 10 collapsed stacked MNIST to
    6 modes and stacked digits to 6, gamma 1 was best); the paper's 10 is passed explicitly."""
    G, D = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, G.parameters(), D.parameters(), lr=1e-3)
    assert [g["gamma"] for g in opt.param_groups] == [1.0, 1.0]
    assert opt.defaults["gamma"] == 1.0
