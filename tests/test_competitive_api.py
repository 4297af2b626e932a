"""CompetitiveOptimizer behaves like a torch optimiser and rejects bad input clearly."""

import copy
import io
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F

import gameopt
from conftest import TinyGAN

KINDS = [
    {"adaptive": False},
    {"adaptive": True},
    {"adaptive": True, "warm_start": True, "tol": 1e-4},
]


def train(gan, opt, steps, sched=None, data_seed=0):
    g = torch.Generator().manual_seed(data_seed)
    for _ in range(steps):
        gan.z = torch.randn(gan.z.shape, generator=g, dtype=gan.z.dtype)
        gan.x = torch.randn(gan.x.shape, generator=g, dtype=gan.x.dtype)
        opt.zero_grad()
        opt.backward(*gan.losses("zerosum"))
        opt.step()
        if sched is not None:
            sched.step()


def snapshot(gan):
    return [p.detach().clone() for p in list(gan.G.parameters()) + list(gan.D.parameters())]


def make(seed=0, dtype=torch.float64, **kw):
    gan = TinyGAN(seed=seed, dtype=dtype)
    kw.setdefault("lr", 0.05)
    return gameopt.CompetitiveOptimizer(*gan.params(), **kw), gan


@pytest.mark.parametrize("kw", KINDS)
def test_state_dict_resume_is_bit_identical(kw):
    opt, gan = make(seed=1, dtype=torch.float32, **kw)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)
    train(gan, opt, 3, sched)
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict(), "G": gan.G.state_dict(),
                "D": gan.D.state_dict()}, buf)
    train(gan, opt, 4, sched, data_seed=1)
    uninterrupted = snapshot(gan)

    buf.seek(0)
    ckpt = torch.load(buf)
    opt2, gan2 = make(seed=99, dtype=torch.float32, **kw)
    gan2.G.load_state_dict(ckpt["G"])
    gan2.D.load_state_dict(ckpt["D"])
    sched2 = torch.optim.lr_scheduler.ExponentialLR(opt2, 0.9)
    opt2.load_state_dict(ckpt["opt"])
    sched2.load_state_dict(ckpt["sched"])
    train(gan2, opt2, 4, sched2, data_seed=1)
    for a, b in zip(uninterrupted, snapshot(gan2)):
        assert torch.equal(a, b)


def test_state_holds_moments_and_warm_start():
    opt, gan = make(adaptive=True, warm_start=True)
    train(gan, opt, 2)
    gp, dp = gan.params()
    assert all(set(opt.state[p]) == {"step", "exp_avg_sq", "cg_solution"} for p in gp)
    assert all(set(opt.state[p]) == {"step", "exp_avg_sq"} for p in dp)   # the solve is on theta's side
    assert all(opt.state[p]["step"].item() == 2 for p in gp + dp)
    sd = opt.state_dict()
    assert sd["gameopt"]["adaptive"] is True and sd["gameopt"]["warm_start"] is True
    assert [g["beta"] for g in sd["param_groups"]] == [0.99, 0.99]
    cgd, _ = make(adaptive=False)
    with pytest.raises(ValueError, match="adaptive=True.*adaptive=False"):
        cgd.load_state_dict(sd)
    sd["param_groups"] = sd["param_groups"][::-1]
    with pytest.raises(ValueError, match="belongs to player"):
        opt.load_state_dict(sd)


def test_scheduled_lr_is_the_step_size():
    """After the scheduler halves lr, the step equals a fresh CGD step with lr / 2 from the same point."""
    opt, gan = make(seed=2)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
    train(gan, opt, 1, sched)
    ref_opt, ref = make(seed=2, lr=0.025)
    for p, q in zip(snapshot(gan), list(ref.G.parameters()) + list(ref.D.parameters())):
        q.data.copy_(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the scheduler sees our step (no ordering warning)
        train(gan, opt, 1, sched, data_seed=5)
    train(ref, ref_opt, 1, data_seed=5)
    for a, b in zip(snapshot(gan), snapshot(ref)):
        assert torch.equal(a, b)
    assert [g["lr"] for g in opt.param_groups] == [0.0125, 0.0125]


@pytest.mark.parametrize("form", ["pair", "objective"])
def test_closure_path_equals_backward_then_step(form):
    opt_a, gan_a = make(seed=4, adaptive=True)
    opt_b, gan_b = make(seed=4, adaptive=True)

    def closure():
        lg, ld = gan_b.losses("zerosum")
        return (lg, ld) if form == "pair" else lg

    for _ in range(3):
        opt_a.zero_grad()
        opt_a.backward(*gan_a.losses("zerosum"))
        opt_a.step()
        out = opt_b.step(closure)
        assert isinstance(out, torch.Tensor) == (form == "objective")
    for a, b in zip(snapshot(gan_a), snapshot(gan_b)):
        assert torch.equal(a, b)


def test_clipping_between_backward_and_step_is_applied_and_zero_grad_works():
    opt, gan = make(seed=5)
    gp, dp = gan.params()
    opt.backward(*gan.losses("zerosum"))
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in gp + dp)
    opt.zero_grad()
    assert all(p.grad is None for p in gp + dp)
    opt.backward(*gan.losses("zerosum"))
    torch.nn.utils.clip_grad_norm_(gp + dp, 1e-3)
    clipped = [p.grad.clone() for p in gp + dp]
    before = snapshot(gan)
    opt.step()
    for p, b, g in zip(gp + dp, before, clipped):
        torch.testing.assert_close(p.detach(), b - 0.05 * g)


def test_backward_overwrites_instead_of_accumulating():
    opt, gan = make(seed=6)
    opt.backward(*gan.losses("zerosum"))
    first = [p.grad.clone() for p in gan.G.parameters()]
    opt.backward(*gan.losses("zerosum"))
    for p, g in zip(gan.G.parameters(), first):
        assert torch.equal(p.grad, g)


def test_hooks_add_param_group_and_zero_lr_group():
    gan = TinyGAN(seed=6)
    gp, dp = gan.params()
    opt = gameopt.CompetitiveOptimizer(gp[:2], dp, lr=0.05, adaptive=True, beta=0.9)
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    opt.add_param_group({"params": gp[2:], "player": "generator", "lr": 0.0})
    assert opt.param_groups[-1]["beta"] == 0.9 and opt.param_groups[-1]["eps"] == 1e-5
    frozen = [p.detach().clone() for p in gp[2:]]
    train(gan, opt, 1)
    assert calls == ["pre", "post"]
    for p, b in zip(gp[2:], frozen):      # lr 0: does not move, p.grad is 0
        assert torch.equal(p.detach(), b) and not p.grad.any()
    assert not torch.equal(gp[0].detach(), snapshot(TinyGAN(seed=6))[0])
    with pytest.raises(ValueError, match="player"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))]})


def test_deepcopy_pickle_repr_and_monitor():
    opt, gan = make(seed=10, adaptive=True, warm_start=True)
    train(gan, opt, 2)
    assert "CompetitiveOptimizer" in repr(opt)
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert clone.param_groups is clone.base_optimizer.param_groups
        assert len(clone.state) == len(opt.state) and clone.adaptive and clone.warm_start
    stats = gameopt.Monitor(opt=opt).read()
    assert stats["opt/cg_iterations"] >= 1 and stats["opt/cg_residual"] <= opt.tol
    assert stats["opt/grad_sq_norm/generator"] > 0


def _nan_losses(gan):
    lg, ld = gan.losses("zerosum")
    return lg * float("nan"), ld * float("nan")


@pytest.mark.parametrize("kw", KINDS)
def test_nan_step_is_skipped_and_state_untouched(kw):
    opt, gan = make(**kw)
    train(gan, opt, 1)
    state_before = {p: {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()}
    params_before = snapshot(gan)
    opt.zero_grad()
    opt.backward(*_nan_losses(gan))
    assert not bool(opt.stats.finite)
    with pytest.warns(RuntimeWarning, match=r"non-finite.*\['generator', 'discriminator'\].*skipped"):
        opt.step()
    assert opt.skipped_steps == 1 and opt.last_step_skipped
    for a, b in zip(snapshot(gan), params_before):
        assert torch.equal(a, b)
    assert set(opt.state) == set(state_before)
    for p, s in opt.state.items():
        for k, v in s.items():
            assert torch.equal(v, state_before[p][k])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(gan, opt, 1)
    assert not opt.last_step_skipped and opt.state_dict()["gameopt"]["skipped_steps"] == 1


def test_nan_policy_raise_and_ignore():
    opt, gan = make(nonfinite="raise")
    opt.backward(*_nan_losses(gan))
    with pytest.raises(FloatingPointError, match="non-finite"):
        opt.step()
    assert len(opt.state) == 0
    opt, gan = make(nonfinite="ignore")
    opt.backward(*_nan_losses(gan))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()                       # no check: the NaN step is applied
    assert all(torch.isnan(p).all() for p in gan.D.parameters()) and opt.skipped_steps == 0


def test_two_players_only():
    gan = TinyGAN()
    gp, dp = gan.params()
    with pytest.raises(ValueError, match="two-player zero-sum.*3 players"):
        gameopt.CompetitiveOptimizer(players={"a": gp, "b": dp[:2], "c": dp[2:]}, lr=0.1)
    with pytest.raises(ValueError, match="two-player"):
        gameopt.CompetitiveOptimizer(players={"a": gp + dp}, lr=0.1)
    opt = gameopt.CompetitiveOptimizer(players={"min": gp, "max": dp}, lr=0.1)
    opt.step(lambda: gan.losses("zerosum"))
    assert [g["player"] for g in opt.param_groups] == ["min", "max"]


def test_non_zero_sum_losses_are_rejected_before_anything_is_written():
    opt, gan = make()
    with pytest.raises(ValueError, match=r"zero-sum game, disc_loss = -gen_loss.*gen_loss \+ disc_loss = .*opt.backward\(f\).*ConsensusOptimizer"):
        opt.backward(*gan.losses("nonsat"))
    lg, ld = gan.losses("zerosum")
    with pytest.raises(ValueError, match="zero-sum"):   # WGAN-GP-like: D's loss has an extra term
        opt.backward(lg, ld + 1e-3 * sum(p.square().sum() for p in gan.D.parameters()))
    assert all(p.grad is None for ps in gan.params() for p in ps)
    with pytest.raises(RuntimeError, match="backward.*before opt.step"):
        opt.step()
    with pytest.raises(ValueError, match="closure must return"):
        opt.step(lambda: [lg, ld, lg])


def test_zero_sum_forms_that_are_accepted():
    """-f in the graph (free), separately computed negations (value check), the objective alone."""
    opt, gan = make(seed=3)
    grads = []
    for form in ("graph", "value", "objective", "reversed"):
        opt.zero_grad()
        d_fake, d_real = gan.D(gan.G(gan.z)), gan.D(gan.x)
        f = (F.softplus(-d_real) + F.softplus(d_fake)).mean()
        if form == "graph":
            opt.backward(-f, f)
        elif form == "value":
            opt.backward((-F.softplus(-d_real) - F.softplus(d_fake)).mean(), f)
        elif form == "objective":
            opt.backward(-f)
        else:
            g = -f
            opt.backward(g, -g)
        grads.append([p.grad.clone() for ps in gan.params() for p in ps])
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bad,match", [
    ({"lr": 0.0}, "lr must be"), ({"lr": -1.0}, "lr must be"), ({"lr": torch.tensor(0.1)}, "lr must be"),
    ({"lr": float("nan")}, "lr must be"), ({"tol": 0.0}, "tol must be"), ({"tol": 1.0}, "tol must be"),
    ({"max_iter": 0}, "max_iter must be"), ({"max_iter": 2.5}, "max_iter must be"),
    ({"check_every": 0}, "check_every must be"), ({"check_every": True}, "check_every must be"),
    ({"adaptive": True, "beta": 1.0}, "beta must be"), ({"adaptive": True, "eps": 0.0}, "eps must be"),
    ({"nonfinite": "maybe"}, "nonfinite must be"),
])
def test_bad_hyperparameters(bad, match):
    gan = TinyGAN()
    kw = {"lr": 0.1, **bad}
    with pytest.raises(ValueError, match=match):
        gameopt.CompetitiveOptimizer(*gan.params(), **kw)


def test_bad_group_values_are_caught_at_backward():
    opt, gan = make(adaptive=True)
    opt.param_groups[1]["lr"] = -0.1      # e.g. a broken scheduler
    with pytest.raises(ValueError, match="lr of a 'discriminator' param group"):
        opt.backward(*gan.losses("zerosum"))
    opt.param_groups[1]["lr"] = 0.1
    opt.param_groups[0]["beta"] = 1.5
    with pytest.raises(ValueError, match="beta of a 'generator' param group"):
        opt.backward(*gan.losses("zerosum"))


def test_objective_must_reach_both_players():
    opt, gan = make()
    fake = gan.G(gan.z).detach()
    f = (F.softplus(-gan.D(gan.x)) + F.softplus(gan.D(fake))).mean()
    with pytest.raises(ValueError, match="does not depend on any parameter of player 'generator'.*detach"):
        opt.backward(-f, f)
    assert all(p.grad is None for ps in gan.params() for p in ps)


class _OnceDifferentiable(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


def test_op_without_double_backward_gets_actionable_error():
    opt, gan = make()
    d_fake = gan.D(_OnceDifferentiable.apply(gan.G(gan.z)))
    f = (F.softplus(-gan.D(gan.x)) + F.softplus(d_fake)).mean()
    with pytest.raises(RuntimeError, match="(?s)competitive gradient descent needs second derivatives.*SimultaneousOptimizer"):
        opt.backward(-f, f)
    assert all(p.grad is None for ps in gan.params() for p in ps)


def test_parameters_on_one_device_and_real():
    gan = TinyGAN()
    z = torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))
    with pytest.raises(ValueError, match="real floating-point"):
        gameopt.CompetitiveOptimizer(list(gan.G.parameters()) + [z], gan.D.parameters(), lr=0.1)


def test_checkpoint_state_is_validated_before_anything_loads():
    opt, gan = make(adaptive=True, warm_start=True, tol=1e-4)
    train(gan, opt, 1)
    good = opt.state_dict()
    other, _ = make(adaptive=True, warm_start=True)
    bad = copy.deepcopy(good)
    bad["state"][0]["exp_avg_sq"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"'exp_avg_sq' has shape \(3,\).*another model"):
        other.load_state_dict(bad)
    bad = copy.deepcopy(good)
    bad["state"][0]["momentum_buffer"] = bad["state"][0]["exp_avg_sq"]
    with pytest.raises(ValueError, match="keeps.*another optimiser"):
        other.load_state_dict(bad)
    bad = copy.deepcopy(good)
    bad["state"][0]["exp_avg_sq"] = bad["state"][0]["exp_avg_sq"] * float("nan")
    with pytest.raises(ValueError, match="NaN"):
        other.load_state_dict(bad)
    bad = copy.deepcopy(good)
    bad["gameopt"]["tol"] = 2.0
    with pytest.raises(ValueError, match="checkpoint's 'tol'"):
        other.load_state_dict(bad)
    assert len(other.state) == 0    # nothing was loaded
    other.load_state_dict(good)
    assert other.tol == 1e-4 and other.warm_start and len(other.state) == len(opt.state)


def test_closure_may_call_backward_itself():
    opt_a, gan_a = make(seed=11)
    opt_b, gan_b = make(seed=11)

    def closure():
        opt_b.zero_grad()
        opt_b.backward(*gan_b.losses("zerosum"))

    for _ in range(2):
        opt_a.step(lambda: gan_a.losses("zerosum"))
        assert opt_b.step(closure) is None
    for a, b in zip(snapshot(gan_a), snapshot(gan_b)):
        assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match="needs the step solved first"):
        opt_b.step(lambda: None)


def test_scaled_losses_without_scaler_warn_once():
    opt, gan = make()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    lg, ld = gan.losses("zerosum")
    with pytest.warns(RuntimeWarning, match="looks scaled by a torch.amp.GradScaler.*scaler=scaler"):
        opt.backward(scaler.scale(lg), scaler.scale(ld))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.backward(*(scaler.scale(t) for t in gan.losses("zerosum")))


def test_through_a_forwarding_wrapper():
    """Lightning-style wrappers forward reads: the pending state and counters live on the real optimiser."""
    from test_wrappers import ForwardingWrapper

    opt, gan = make(seed=12, adaptive=True)
    wrapper = ForwardingWrapper(opt)
    wrapper.zero_grad()
    stats = wrapper.backward(*gan.losses("zerosum"))
    wrapper.step()
    assert opt.stats is stats and all(opt.state[p]["step"].item() == 1 for ps in gan.params() for p in ps)
    wrapper.backward(*_nan_losses(gan))
    with pytest.warns(RuntimeWarning, match="non-finite"):
        wrapper.step()
    assert opt.skipped_steps == 1 and all(opt.state[p]["step"].item() == 1 for ps in gan.params() for p in ps)
