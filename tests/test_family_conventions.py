"""The new game optimisers behave like torch optimisers: checkpoints resume bit-for-bit,
schedulers, copies, the nonfinite policy, mixed precision and clear errors for bad input."""

import copy
import io
import pickle
import warnings

import pytest
import torch

import gameopt
from conftest import TinyGAN

KINDS = ["extragradient", "optimistic", "sga", "la_extragradient", "la_optimistic", "la_consensus"]


def make(kind, gan, base=torch.optim.Adam, **kw):
    kw.setdefault("lr", 1e-2)
    gp, dp = gan.params()
    if kind.startswith("la_"):
        return gameopt.LookaheadMinmax(make(kind[3:], gan, base, **kw), k=3, alpha=0.5)
    if kind == "extragradient":
        return gameopt.ExtragradientOptimizer(base, gp, dp, **kw)
    if kind == "optimistic":
        return gameopt.OptimisticOptimizer(base, gp, dp, **kw)
    if kind == "sga":
        return gameopt.SGAOptimizer(base, gp, dp, lam=0.5, **kw)
    if kind == "consensus":
        return gameopt.ConsensusOptimizer(base, gp, dp, gamma=0.5, **kw)
    return gameopt.SimultaneousOptimizer(base, gp, dp, **kw)


def train(gan, opt, steps, sched=None, data_seed=0):
    g = torch.Generator().manual_seed(data_seed)
    for _ in range(steps):
        gan.z = torch.randn(gan.z.shape, generator=g, dtype=gan.z.dtype)
        gan.x = torch.randn(gan.x.shape, generator=g, dtype=gan.x.dtype)
        opt.step(gan.losses)
        if sched is not None:
            sched.step()


def snapshot(gan):
    return [p.detach().clone() for p in list(gan.G.parameters()) + list(gan.D.parameters())]


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_resume_is_bit_identical(kind):
    gan = TinyGAN(seed=1, dtype=torch.float32)
    opt = make(kind, gan)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)
    train(gan, opt, 4, sched)   # lookahead k=3: resume mid-cycle
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict(), "G": gan.G.state_dict(),
                "D": gan.D.state_dict()}, buf)
    train(gan, opt, 5, sched, data_seed=1)
    uninterrupted = snapshot(gan)

    buf.seek(0)
    ckpt = torch.load(buf)
    gan2 = TinyGAN(seed=99, dtype=torch.float32)
    gan2.G.load_state_dict(ckpt["G"])
    gan2.D.load_state_dict(ckpt["D"])
    opt2 = make(kind, gan2)
    sched2 = torch.optim.lr_scheduler.ExponentialLR(opt2, 0.9)
    opt2.load_state_dict(ckpt["opt"])
    sched2.load_state_dict(ckpt["sched"])
    train(gan2, opt2, 5, sched2, data_seed=1)
    for a, b in zip(uninterrupted, snapshot(gan2)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_schedulers_drive_the_inner_groups(kind):
    gan = TinyGAN(seed=2)
    opt = make(kind, gan)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no "scheduler.step() before optimizer.step()"
        train(gan, opt, 2, sched)
    assert [g["lr"] for g in opt.param_groups] == [2.5e-3, 2.5e-3]
    inner = opt.inner if isinstance(opt, gameopt.LookaheadMinmax) else opt
    assert [g["lr"] for g in inner.base_optimizer.param_groups] == [2.5e-3, 2.5e-3]


@pytest.mark.parametrize("kind", KINDS)
def test_deepcopy_and_pickle_train_independently(kind):
    gan = TinyGAN(seed=3)
    opt = make(kind, gan)
    train(gan, opt, 2)
    before = snapshot(gan)
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        params = [p for g in clone.param_groups for p in g["params"]]
        assert all(p not in set(gan.G.parameters()) | set(gan.D.parameters()) for p in params)
        assert len(clone.state) == len(opt.state)
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(gan)))


def test_lookahead_checkpoint_holds_the_slow_weights_and_the_cycle():
    gan = TinyGAN(seed=4)
    opt = make("la_optimistic", gan)
    start = snapshot(gan)
    train(gan, opt, 2)
    sd = opt.state_dict()
    assert sd["lookahead"]["fast_steps"] == 2 and sd["lookahead"]["k"] == 3
    for a, b in zip(start, sd["lookahead"]["slow"].values()):
        assert torch.equal(a, b)   # slow weights = the start until the first synchronisation
    train(gan, opt, 1)
    assert opt.fast_steps == 0
    for p, s in zip(snapshot(gan), opt.state_dict()["lookahead"]["slow"].values()):
        assert torch.equal(p, s)   # fast weights reset to the slow ones


def test_optimistic_checkpoint_holds_the_previous_update():
    gan = TinyGAN(seed=5)
    opt = make("optimistic", gan, base=torch.optim.SGD, lr=0.1)
    train(gan, opt, 1)
    prev = opt.state_dict()["gameopt"]["game_state"]
    gp, dp = gan.params()
    assert len(prev) == len(gp + dp)
    torch.testing.assert_close(prev[0]["prev_update"], -0.1 * gp[0].grad, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- nonfinite
@pytest.mark.parametrize("kind", KINDS)
def test_nan_loss_skips_the_step_and_leaves_everything_untouched(kind):
    gan = TinyGAN(seed=6)
    opt = make(kind, gan)
    train(gan, opt, 1)
    before, state = snapshot(gan), copy.deepcopy(opt.state_dict())

    def poisoned(g):
        def bad():
            lg, ld = g.losses()
            return lg * float("nan"), ld
        return bad

    # second-order methods spread the generator's NaN to both players' gradients
    flagged = r"\['generator'" if kind in ("sga", "la_consensus") else r"\['generator'\]"
    with pytest.warns(RuntimeWarning, match=r"non-finite.*" + flagged):
        opt.step(poisoned(gan))
    assert opt.skipped_steps == 1 and opt.last_step_skipped
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(gan)))
    after = opt.state_dict()
    for key, st in state["state"].items():
        for name, t in st.items():
            assert torch.equal(after["state"][key][name], t)
    if kind.startswith("la_"):
        assert after["lookahead"]["fast_steps"] == state["lookahead"]["fast_steps"]
    with pytest.raises(FloatingPointError, match="non-finite"):
        other = TinyGAN(seed=6)
        make(kind, other, nonfinite="raise").step(poisoned(other))


def test_extragradient_nan_at_the_extrapolated_point_restores_the_start_exactly():
    gan = TinyGAN(seed=7)
    opt = make("extragradient", gan)
    train(gan, opt, 1)
    before = snapshot(gan)
    calls = []

    def second_bad():
        calls.append(1)
        lg, ld = gan.losses()
        return (lg, ld * float("inf")) if len(calls) == 2 else (lg, ld)

    with pytest.warns(RuntimeWarning, match=r"\['discriminator'\]"):
        opt.step(second_bad)
    assert len(calls) == 2 and opt.last_step_skipped and opt.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(gan)))


def test_a_raising_closure_at_the_extrapolated_point_restores_the_start():
    gan = TinyGAN(seed=8)
    opt = make("extragradient", gan)
    before = snapshot(gan)
    calls = []

    def closure():
        calls.append(1)
        if len(calls) == 2:
            raise KeyError("data loader failed")
        return gan.losses()

    with pytest.raises(KeyError):
        opt.step(closure)
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(gan)))


def test_optimistic_skip_keeps_the_previous_update():
    gan = TinyGAN(seed=9)
    opt = make("optimistic", gan)
    train(gan, opt, 2)
    prev = [t["prev_update"].clone() for t in opt.game_state.values()]
    opt.zero_grad()
    opt.backward(*gan.losses())
    next(iter(gan.G.parameters())).grad[0] = float("nan")   # written between backward and step
    with pytest.warns(RuntimeWarning, match="non-finite"):
        opt.step()
    assert all(torch.equal(a, t["prev_update"]) for a, t in zip(prev, opt.game_state.values()))


# --------------------------------------------------------------------------- closures
@pytest.mark.parametrize("kind", ["optimistic", "sga"])
def test_closure_path_equals_backward_then_step(kind):
    gan_a, gan_b = TinyGAN(seed=10), TinyGAN(seed=10)
    opt_a, opt_b = make(kind, gan_a), make(kind, gan_b)
    for _ in range(3):
        opt_a.zero_grad()
        opt_a.backward(*gan_a.losses())
        opt_a.step()
        assert len(opt_b.step(gan_b.losses)) == 2
    assert all(torch.equal(a, b) for a, b in zip(snapshot(gan_a), snapshot(gan_b)))
    # a closure returning None (Lightning's manual optimisation): the gradients are in p.grad
    opt_a.zero_grad()
    opt_a.backward(*gan_a.losses())
    opt_a.step(lambda: None)
    opt_b.step(gan_b.losses)
    assert all(torch.equal(a, b) for a, b in zip(snapshot(gan_a), snapshot(gan_b)))


def test_lookahead_forwards_backward_and_zero_grad():
    gan = TinyGAN(seed=11)
    opt = make("la_consensus", gan)
    opt.zero_grad()
    stats = opt.backward(*gan.losses())
    assert isinstance(stats, gameopt.ConsensusStats)
    opt.step()
    opt.zero_grad()
    assert all(p.grad is None for ps in gan.params() for p in ps)
    assert "LookaheadMinmax(k=3" in repr(opt) and "ConsensusOptimizer" in repr(opt)


@pytest.mark.parametrize("kind", ["extragradient", "optimistic", "sga"])
def test_n_players(kind):
    torch.manual_seed(0)
    a, b, c = (torch.nn.Parameter(torch.randn(3, dtype=torch.float64)) for _ in range(3))
    cls = {"extragradient": gameopt.ExtragradientOptimizer, "optimistic": gameopt.OptimisticOptimizer,
           "sga": gameopt.SGAOptimizer}[kind]
    opt = cls(torch.optim.SGD, players={"a": [a], "b": [b], "c": [c]}, lr=0.1)

    def closure():
        return (a @ b + (a * a).sum(), (b * c).sum() - a @ b, (c * c).sum() - (b * c).sum())

    opt.step(closure)
    assert [g["player"] for g in opt.param_groups] == ["a", "b", "c"]
    with pytest.raises(gameopt.GameInputError, match="3 losses"):
        opt.step(lambda: closure()[:2])


# --------------------------------------------------------------------------- bad input
def test_bad_arguments_are_named():
    gan = TinyGAN()
    gp, dp = gan.params()
    with pytest.raises(gameopt.GameInputError, match="lam must be a finite number >= 0"):
        gameopt.SGAOptimizer(torch.optim.SGD, gp, dp, lam=-1.0, lr=0.1)
    with pytest.raises(gameopt.GameInputError, match="lam"):
        gameopt.SGAOptimizer(torch.optim.SGD, gp, dp, lam=float("nan"), lr=0.1)
    with pytest.raises(gameopt.GameInputError, match="align_eps"):
        gameopt.SGAOptimizer(torch.optim.SGD, gp, dp, align_eps=-0.1, lr=0.1)
    opt = gameopt.SGAOptimizer(torch.optim.SGD, [{"params": gp, "lam": 2.0}], dp, lr=0.1)
    assert [g["lam"] for g in opt.param_groups] == [2.0, 1.0]
    opt.param_groups[0]["lam"] = -3
    with pytest.raises(gameopt.GameInputError, match="lam of a 'generator' param group"):
        opt.backward(*gan.losses())
    assert all(p.grad is None for p in gp + dp)
    inner = gameopt.OptimisticOptimizer(torch.optim.SGD, gp, dp, lr=0.1)
    for k, alpha in ((0, 0.5), (2.5, 0.5), (True, 0.5), (5, 0.0), (5, 1.5), (5, "0.5")):
        with pytest.raises(gameopt.GameInputError, match="k must be|alpha must be"):
            gameopt.LookaheadMinmax(inner, k=k, alpha=alpha)
    with pytest.raises(gameopt.GameInputError, match="wraps a gameopt optimiser instance"):
        gameopt.LookaheadMinmax(torch.optim.SGD(gp, lr=0.1))
    with pytest.raises(gameopt.GameInputError, match="wraps a gameopt optimiser instance"):
        gameopt.LookaheadMinmax(gameopt.OptimisticOptimizer)
    with pytest.raises(gameopt.GameInputError, match="optimiser class"):
        gameopt.ExtragradientOptimizer(torch.optim.SGD(gp, lr=0.1), gp, dp)


def test_extragradient_needs_a_closure_that_returns_losses():
    gan = TinyGAN()
    opt = make("extragradient", gan)
    with pytest.raises(gameopt.GameInputError, match="needs a closure"):
        opt.step()
    with pytest.raises(RuntimeError, match="step\\(closure\\)"):
        opt.backward(*gan.losses())
    with pytest.raises(gameopt.GameInputError, match="needs the losses from the closure"):
        opt.step(lambda: None)
    with pytest.raises(gameopt.GameInputError, match="one loss per player"):
        opt.step(lambda: gan.losses()[0])
    with pytest.raises(gameopt.GameInputError, match="does not depend"):
        opt.step(lambda: (gan.losses()[0].detach(), gan.losses()[1]))
    assert all(p.grad is None for ps in gan.params() for p in ps)


def test_step_without_gradients_is_an_error():
    gan = TinyGAN()
    opt = make("optimistic", gan)
    with pytest.raises(gameopt.GameInputError, match="no gradients"):
        opt.step()


def test_bad_checkpoints_change_nothing():
    gan = TinyGAN(seed=12)
    opt = make("la_optimistic", gan)
    train(gan, opt, 2)
    good = opt.state_dict()
    gan2 = TinyGAN(seed=13)
    opt2 = make("la_optimistic", gan2)
    train(gan2, opt2, 1)
    ref = copy.deepcopy(opt2.state_dict())

    def mutated(fn):
        sd = copy.deepcopy(good)
        fn(sd)
        return sd

    cases = [
        (lambda sd: sd.pop("lookahead"), "no 'lookahead' entry"),
        (lambda sd: sd["lookahead"].update(k=0), "k must be"),
        (lambda sd: sd["lookahead"].update(fast_steps=7), "fast_steps"),
        (lambda sd: sd["lookahead"]["slow"].update({0: torch.zeros(99)}), "shape"),
        (lambda sd: sd["lookahead"]["slow"][0].fill_(float("nan")), "NaN"),
        (lambda sd: sd["lookahead"]["slow"].update({99: torch.zeros(1)}), "name parameter 99"),
        (lambda sd: sd["gameopt"]["game_state"][0].update(prev_update=torch.zeros(99)), "shape"),
        (lambda sd: sd["gameopt"]["game_state"][1]["prev_update"].fill_(float("inf")), "NaN or Inf"),
    ]
    for fn, msg in cases:
        with pytest.raises(gameopt.GameInputError, match=msg):
            opt2.load_state_dict(mutated(fn))
        now = opt2.state_dict()
        assert now["lookahead"]["fast_steps"] == ref["lookahead"]["fast_steps"]
        for i, t in ref["lookahead"]["slow"].items():
            assert torch.equal(now["lookahead"]["slow"][i], t)
        for i, st in ref["gameopt"]["game_state"].items():
            assert torch.equal(now["gameopt"]["game_state"][i]["prev_update"], st["prev_update"])


# --------------------------------------------------------------------------- mixed precision
def _flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


def test_sga_with_a_scaler_gives_the_unscaled_adjustment():
    def grads(scale=None):
        gan = TinyGAN(seed=3)
        opt = gameopt.SGAOptimizer(torch.optim.SGD, *gan.params(), lam=2.0, lr=0.1)
        lg, ld = gan.losses()
        if scale is None:
            stats = opt.backward(lg, ld)
            return _flat(p.grad for ps in gan.params() for p in ps), stats
        scaler = torch.amp.GradScaler("cpu", init_scale=scale)
        stats = opt.backward(scaler.scale(lg), scaler.scale(ld), scaler=scaler)
        scaler.unscale_(opt)
        return _flat(p.grad for ps in gan.params() for p in ps), stats

    (ref, s_ref), (got, s_got) = grads(), grads(1024.0)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
    assert s_got.sign.item() == s_ref.sign.item()
    assert s_got.adjustment_norm.item() == pytest.approx(s_ref.adjustment_norm.item(), rel=1e-12)


def test_extragradient_with_a_scaler_equals_the_unscaled_step_and_skips_overflow():
    gan, ref = TinyGAN(seed=4), TinyGAN(seed=4)
    opt, ref_opt = make("extragradient", gan), make("extragradient", ref)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    for _ in range(2):
        opt.step(gan.losses, scaler=scaler)
        scaler.update()
        ref_opt.step(ref.losses)
    for a, b in zip(snapshot(gan), snapshot(ref)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    before = snapshot(gan)
    calls = []

    def overflow_second():
        calls.append(1)
        lg, ld = gan.losses()
        return (lg * 1e308, ld) if len(calls) == 2 else (lg, ld)

    with warnings.catch_warnings():
        warnings.simplefilter("error")   # a scaler overflow is not warned about
        opt.step(overflow_second, scaler=scaler)
    scaler.update()
    assert scaler.get_scale() == 512.0   # the scaler saw the overflow and backed off
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(gan)))
    assert opt.skipped_steps == 0


@pytest.mark.parametrize("kind", ["extragradient", "optimistic", "sga", "la_extragradient"])
def test_bf16_autocast_tracks_fp32(kind):
    def run(bf16):
        gan = TinyGAN(seed=5, dtype=torch.float32, batch=64)
        opt = make(kind, gan, base=torch.optim.SGD, lr=0.05)

        def closure():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return gan.losses()

        start = _flat(snapshot(gan))
        for _ in range(3):
            opt.step(closure)
        return _flat(snapshot(gan)) - start

    d16, d32 = run(True), run(False)
    assert torch.isfinite(d16).all()
    assert float((d16 - d32).norm() / d32.norm()) < 5e-2


# --------------------------------------------------------------------------- hooks and wrappers
@pytest.mark.parametrize("kind", KINDS)
def test_hooks_fire_once_per_step_and_post_hooks_only_when_moved(kind):
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    calls = []
    handles = [register_optimizer_step_pre_hook(lambda o, a, k: calls.append("pre")),
               register_optimizer_step_post_hook(lambda o, a, k: calls.append("post"))]
    try:
        gan = TinyGAN(seed=14)
        opt = make(kind, gan)
        local = []
        opt.register_step_pre_hook(lambda o, a, k: local.append("pre"))
        opt.register_step_post_hook(lambda o, a, k: local.append("post"))
        opt.step(gan.losses)
        assert calls == ["pre", "post"] and local == ["pre", "post"]
        calls.clear()
        local.clear()

        def bad():
            lg, ld = gan.losses()
            return lg * float("nan"), ld

        with pytest.warns(RuntimeWarning, match="non-finite"):
            opt.step(bad)
        assert calls == ["pre"] and local == ["pre"]
    finally:
        for h in handles:
            h.remove()


def test_extragradient_post_hooks_skip_a_step_whose_update_was_refused():
    gan = TinyGAN(seed=15)
    opt = make("extragradient", gan)
    posts = []
    opt.register_step_post_hook(lambda o, a, k: posts.append(1))
    calls = []

    def second_bad():
        calls.append(1)
        lg, ld = gan.losses()
        return (lg * float("nan"), ld) if len(calls) == 2 else (lg, ld)

    with pytest.warns(RuntimeWarning, match="non-finite"):
        opt.step(second_bad)
    assert posts == []


@pytest.mark.parametrize("kind", ["optimistic", "sga", "la_consensus"])
def test_backward_through_a_forwarding_wrapper_reaches_the_real_optimiser(kind):
    from test_wrappers import ForwardingWrapper

    gan = TinyGAN(seed=16)
    opt = make(kind, gan)
    wrapper = ForwardingWrapper(opt)
    before = snapshot(gan)
    wrapper.zero_grad()
    wrapper.backward(*gan.losses())
    next(iter(gan.G.parameters())).grad.fill_(float("nan"))
    with pytest.warns(RuntimeWarning, match="non-finite"):
        wrapper.step()
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(gan)))
    wrapper.zero_grad()
    wrapper.backward(*gan.losses())
    wrapper.step()
    assert not all(torch.equal(a, b) for a, b in zip(before, snapshot(gan)))
    if kind == "sga":
        assert opt.stats is not None and "stats" not in vars(wrapper)


@pytest.mark.parametrize("kind", ["optimistic", "sga", "la_optimistic"])
def test_grad_scaler_step_equals_the_unscaled_run(kind):
    gan, ref = TinyGAN(seed=17), TinyGAN(seed=17)
    opt, ref_opt = make(kind, gan, base=torch.optim.SGD, lr=0.05), make(kind, ref, base=torch.optim.SGD, lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    for _ in range(4):   # lookahead k=3: one synchronisation
        opt.zero_grad()
        lg, ld = gan.losses()
        kw = {"scaler": scaler} if kind == "sga" else {}
        opt.backward(scaler.scale(lg), scaler.scale(ld), **kw)
        scaler.step(opt)
        scaler.update()
        ref_opt.zero_grad()
        ref_opt.backward(*ref.losses())
        ref_opt.step()
    for a, b in zip(snapshot(gan), snapshot(ref)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_sga_refuses_a_function_without_second_derivatives():
    from test_bad_input import _OnceDifferentiable

    gan = TinyGAN(seed=18)
    opt = make("sga", gan)
    fake = gan.G(gan.z)
    d_fake = gan.D(_OnceDifferentiable.apply(fake))
    lg = torch.nn.functional.softplus(-d_fake).mean()
    ld = torch.nn.functional.softplus(-gan.D(gan.x)).mean() + torch.nn.functional.softplus(d_fake).mean()
    with pytest.raises(RuntimeError, match="once_differentiable"):
        opt.backward(lg, ld)
    assert all(p.grad is None for ps in gan.params() for p in ps)


def test_sga_needs_second_derivatives_only():
    """A transposed convolution with output_padding (the stacked-MNIST generators have them): torch
    cannot differentiate its double backward again (third order: "output_padding is not supported
    for non-transposed convolutions"), so SGA must need no more than consensus does. The
    adjustment is checked against torch.func's forward-over-reverse products."""
    from torch.func import functional_call, grad, jvp, vjp

    torch.manual_seed(0)
    G = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Unflatten(1, (2, 4, 4)),
                            torch.nn.ConvTranspose2d(2, 1, 3, 2, 1, output_padding=1)).double()   # 8x8
    D = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, stride=2, padding=1), torch.nn.Tanh(),
                            torch.nn.Flatten(), torch.nn.Linear(32, 1)).double()
    z, x = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 1, 8, 8, dtype=torch.float64)

    def losses(g, d):
        d_fake = functional_call(D, d, (functional_call(G, g, (z,)),))
        return (torch.nn.functional.softplus(-d_fake).mean(),
                torch.nn.functional.softplus(-functional_call(D, d, (x,))).mean()
                + torch.nn.functional.softplus(d_fake).mean())

    gp, dp = dict(G.named_parameters()), dict(D.named_parameters())
    opt = gameopt.SGAOptimizer(torch.optim.SGD, list(gp.values()), list(dp.values()), lam=1.0, align=False, lr=0.1)
    opt.backward(*losses(gp, dp))
    got = torch.cat([p.grad.reshape(-1) for p in list(gp.values()) + list(dp.values())])

    def xi_fn(g, d):
        return grad(lambda g_: losses(g_, d)[0])(g), grad(lambda d_: losses(g, d_)[1])(d)

    g0 = {k: v.detach() for k, v in gp.items()}
    d0 = {k: v.detach() for k, v in dp.items()}
    xi, vjp_fn = vjp(xi_fn, g0, d0)
    jt = vjp_fn(xi)
    _, jx = jvp(xi_fn, (g0, d0), xi)
    flat = lambda parts: torch.cat([t.reshape(-1) for part in parts for t in part.values()])  # noqa: E731
    torch.testing.assert_close(got, flat(xi) + 0.5 * (flat(jt) - flat(jx)), rtol=1e-9, atol=1e-12)
