"""Tests for gameopt.PrimalDualRegularizer and the Table 1 divergences (Chen, Wang & Ge 2018)."""

from __future__ import annotations

import copy
import io
import math
import pickle
import resource
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

import gameopt
from gameopt.primal_dual import (
    DIVERGENCE_NAMES,
    ConstantBandwidth,
    Divergence,
    ExponentialBandwidth,
    RandomProjection,
    StepBandwidth,
    get_divergence,
    kernel_density,
)

# ---------------------------------------------------------------------------
# Hand-written formulas (plain math, independent of the implementation):
# s -> D, f0(D), f1(D), and derivatives f0'(D), f1'(D), D'(s).
# ---------------------------------------------------------------------------


def _softplus(s):
    return math.log1p(math.exp(s))


def _sigmoid(s):
    return 1.0 / (1.0 + math.exp(-s))


HAND = {
    "kl": dict(
        D=_softplus, dD=_sigmoid,
        f0=math.log, f1=lambda d: 1 - d, df0=lambda d: 1 / d, df1=lambda d: -1.0,
    ),
    "reverse_kl": dict(
        D=_softplus, dD=_sigmoid,
        f0=lambda d: -d, f1=math.log, df0=lambda d: -1.0, df1=lambda d: 1 / d,
    ),
    "pearson": dict(
        D=lambda s: s, dD=lambda s: 1.0,
        f0=lambda d: d, f1=lambda d: -d * d / 4 - d, df0=lambda d: 1.0, df1=lambda d: -d / 2 - 1,
    ),
    "hellinger": dict(
        D=lambda s: 1e-3 + _softplus(s), dD=_sigmoid,
        f0=lambda d: 1 - d, f1=lambda d: 1 - 1 / d, df0=lambda d: -1.0, df1=lambda d: 1 / d**2,
    ),
    "js": dict(
        D=_sigmoid, dD=lambda s: _sigmoid(s) * (1 - _sigmoid(s)),
        f0=math.log, f1=lambda d: math.log(2 * (1 - d)), df0=lambda d: 1 / d, df1=lambda d: -1 / (1 - d),
    ),
    "wgan": dict(
        D=lambda s: s, dD=lambda s: 1.0,
        f0=lambda d: d - 0.1 * d * d, f1=lambda d: -d, df0=lambda d: 1 - 0.2 * d, df1=lambda d: -1.0,
    ),
    "other": dict(
        D=lambda s: s, dD=lambda s: 1.0,
        f0=lambda d: -d * d / 2 + d, f1=lambda d: d - 2, df0=lambda d: 1 - d, df1=lambda d: 1.0,
    ),
}

D_STAR = {
    "kl": lambda pd, pg: pd / pg,
    "reverse_kl": lambda pd, pg: pg / pd,
    "pearson": lambda pd, pg: 2 * (pd - pg) / pg,
    "hellinger": lambda pd, pg: math.sqrt(pg / pd),
    "js": lambda pd, pg: pd / (pd + pg),
    "wgan": lambda pd, pg: (pd - pg) / (2 * 0.1 * pd),
    "other": lambda pd, pg: (pd + pg) / pd,
}


def test_all_seven_names_are_covered():
    assert set(DIVERGENCE_NAMES) == set(HAND) and len(DIVERGENCE_NAMES) == 7


@pytest.mark.parametrize("name", DIVERGENCE_NAMES)
def test_losses_match_hand_values_and_gradients(name):
    h = HAND[name]
    div = get_divergence(name)
    s_real = [-1.3, 0.4, 2.0]
    s_fake = [0.7, -0.5]
    real = torch.tensor(s_real, dtype=torch.float64, requires_grad=True)
    fake = torch.tensor(s_fake, dtype=torch.float64, requires_grad=True)

    loss_d = div.discriminator_loss(real, fake)
    want_d = -(np.mean([h["f0"](h["D"](s)) for s in s_real]) + np.mean([h["f1"](h["D"](s)) for s in s_fake]))
    assert loss_d.item() == pytest.approx(want_d, rel=1e-12, abs=1e-12)
    loss_d.backward()
    want_gr = [-h["df0"](h["D"](s)) * h["dD"](s) / len(s_real) for s in s_real]
    want_gf = [-h["df1"](h["D"](s)) * h["dD"](s) / len(s_fake) for s in s_fake]
    np.testing.assert_allclose(real.grad.numpy(), want_gr, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fake.grad.numpy(), want_gf, rtol=1e-10, atol=1e-12)

    fake.grad = None
    loss_g = div.generator_loss(fake)
    assert loss_g.item() == pytest.approx(np.mean([h["f1"](h["D"](s)) for s in s_fake]), rel=1e-12, abs=1e-12)
    loss_g.backward()
    np.testing.assert_allclose(fake.grad.numpy(), [-g for g in want_gf], rtol=1e-10, atol=1e-12)

    # activation and the D-space functions agree with the hand formulas too
    np.testing.assert_allclose(div.activation(real.detach()).numpy(), [h["D"](s) for s in s_real], rtol=1e-12)


@pytest.mark.parametrize("name", DIVERGENCE_NAMES)
def test_regularizer_hand_value_and_gradient(name):
    h = HAND[name]
    xs, ys, ss = [0.0, 1.0], [0.5, -0.2, 1.4], [0.4, 2.0]
    sigma, alpha = 0.8, 0.7
    reg = gameopt.PrimalDualRegularizer(name, alpha=alpha, bandwidth=sigma)
    fake = torch.tensor(ys, dtype=torch.float64).reshape(3, 1).requires_grad_()
    value = reg(torch.tensor(xs, dtype=torch.float64).reshape(2, 1), fake, torch.tensor(ss, dtype=torch.float64))
    value.backward()

    f1 = [h["f1"](h["D"](s)) for s in ss]
    K = [[math.exp(-((y - x) ** 2) / sigma**2) for y in ys] for x in xs]
    # p_tilde - p_hat = -alpha f1, so the value is mean_i (alpha f1_i)^2 ...
    assert value.item() == pytest.approx(np.mean([(alpha * f) ** 2 for f in f1]), rel=1e-12)
    # ... and d/dy_j = (1/n) sum_i 2 alpha f1_i (1/m) K_ij (-2/sigma^2)(y_j - x_i).
    n, m = len(xs), len(ys)
    want = [
        sum(2 * alpha * f1[i] / n * K[i][j] / m * (-2 / sigma**2) * (ys[j] - xs[i]) for i in range(n))
        for j in range(m)
    ]
    np.testing.assert_allclose(fake.grad.reshape(-1).numpy(), want, rtol=1e-10, atol=1e-14)


def test_regularizer_value_formula_in_2d_with_feature_map():
    torch.manual_seed(0)
    real, fake, s = torch.randn(4, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64), torch.randn(4, 1)
    W = torch.randn(3, 2, dtype=torch.float64)
    reg = gameopt.PrimalDualRegularizer("js", alpha=0.3, bandwidth=1.3, feature_map=lambda x: torch.tanh(x @ W))
    fx, fy = torch.tanh(real @ W), torch.tanh(fake @ W)
    p_hat = torch.exp(-((fy[None] - fx[:, None]) ** 2).sum(-1) / 1.3**2).mean(1)
    f1 = math.log(2.0) - torch.nn.functional.softplus(s.reshape(-1).double())
    p_tilde = p_hat - 0.3 * f1
    fake.requires_grad_()
    got = reg(real, fake, s)
    assert got.item() == pytest.approx(((p_tilde - p_hat) ** 2).mean().item(), rel=1e-12)
    # gradient: only the p_hat in the square is differentiated
    y = fake.detach().clone().requires_grad_()
    ph = torch.exp(-((torch.tanh(y @ W)[None] - fx[:, None]) ** 2).sum(-1) / 1.3**2).mean(1)
    ((p_tilde.detach() - ph) ** 2).mean().backward()
    got.backward()
    torch.testing.assert_close(fake.grad, y.grad, rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------------------
# D* column of Table 1
# ---------------------------------------------------------------------------

P_D = [0.1, 0.3, 0.2, 0.4]
P_G = [0.25, 0.25, 0.3, 0.2]


@pytest.mark.parametrize("name", DIVERGENCE_NAMES)
def test_d_star_is_the_maximiser_of_the_pointwise_objective(name):
    div = get_divergence(name)
    for pd, pg in zip(P_D, P_G):

        def neg_objective(s: float) -> float:
            t = torch.tensor([s], dtype=torch.float64)
            return -(pd * div.f0_from_output(t) + pg * div.f1_from_output(t)).item()

        res = minimize_scalar(neg_objective, bounds=(-40.0, 40.0), method="bounded", options={"xatol": 1e-12})
        d_numeric = div.activation(torch.tensor(res.x, dtype=torch.float64)).item()
        want = D_STAR[name](pd, pg)
        assert d_numeric == pytest.approx(want, rel=1e-5, abs=1e-6), (name, pd, pg)
        got = div.d_star(torch.tensor(pd, dtype=torch.float64), torch.tensor(pg, dtype=torch.float64)).item()
        assert got == pytest.approx(want, rel=1e-12)
        # stationarity in D-space: p_d f0'(D*) + p_g f1'(D*) = 0, and it is a maximum
        d = torch.tensor(want, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(pd * div.f0(d) + pg * div.f1(d), d, create_graph=True)
        (h,) = torch.autograd.grad(g, d)
        assert abs(g.item()) < 1e-10 and h.item() < 0


def test_js_saddle_value_at_equal_densities():
    # p_g = p_d: D* = 1/2 and f1(D*) = 0, so the dual target equals p_hat (no push).
    div = get_divergence("js")
    assert div.f1_from_output(torch.tensor(0.0)).item() == pytest.approx(0.0, abs=1e-7)
    assert get_divergence("other").f1(torch.tensor(2.0)).item() == 0.0


# ---------------------------------------------------------------------------
# Saturated discriminators
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", DIVERGENCE_NAMES)
def test_saturated_logits_stay_finite(name, dtype):
    div = get_divergence(name)
    s = torch.tensor([-1e4, 1e4, 0.0], dtype=dtype, requires_grad=True)
    for loss in (div.discriminator_loss(s, s), div.generator_loss(s)):
        (g,) = torch.autograd.grad(loss, s)
        assert torch.isfinite(loss) and torch.isfinite(g).all(), (name, loss, g)
    reg = gameopt.PrimalDualRegularizer(name, alpha=0.5, bandwidth=0.5)
    fake = torch.randn(4, 2, dtype=dtype, requires_grad=True)
    v = reg(torch.randn(3, 2, dtype=dtype), fake, s.detach())
    v.backward()
    assert torch.isfinite(v) and torch.isfinite(fake.grad).all()


def test_js_saturated_values_are_exact_limits():
    div = get_divergence("js")
    s = torch.tensor([-1e4, 1e4])
    # log D(-1e4) = -1e4, log(2(1 - D(1e4))) = log 2 - 1e4
    torch.testing.assert_close(div.f0_from_output(s), torch.tensor([-1e4, 0.0]))
    torch.testing.assert_close(div.f1_from_output(s), torch.tensor([math.log(2.0), math.log(2.0) - 1e4]))
    kl = get_divergence("kl")
    assert kl.f0_from_output(torch.tensor(-1e4)).item() == pytest.approx(-1e4)


# ---------------------------------------------------------------------------
# User-supplied pairs
# ---------------------------------------------------------------------------


def test_user_pair_matches_builtin_js():
    f0 = torch.log
    f1 = lambda d: torch.log(2 * (1 - d))  # noqa: E731
    torch.manual_seed(1)
    real, fake, s = torch.randn(6, 2), torch.randn(5, 2, requires_grad=True), torch.randn(6)
    mine = gameopt.PrimalDualRegularizer((f0, f1, torch.sigmoid), alpha=0.4, bandwidth=0.7)
    ref = gameopt.PrimalDualRegularizer("js", alpha=0.4, bandwidth=0.7)
    torch.testing.assert_close(mine(real, fake, s), ref(real, fake, s))
    div = Divergence("mine", f0, f1, torch.sigmoid)
    torch.testing.assert_close(div.discriminator_loss(s, -s), get_divergence("js").discriminator_loss(s, -s))
    # a pair without activation uses D = raw output
    lin = gameopt.PrimalDualRegularizer((lambda d: d, lambda d: -d), alpha=1.0, bandwidth=1.0)
    assert lin(real, fake, s).item() == pytest.approx((s**2).mean().item(), rel=1e-6)


# ---------------------------------------------------------------------------
# Chunked kernel: equality with the unchunked path, gradcheck, memory
# ---------------------------------------------------------------------------


def test_chunked_equals_unchunked_value_and_gradient():
    torch.manual_seed(2)
    real = torch.randn(300, 50, dtype=torch.float64)
    fake0 = torch.randn(200, 50, dtype=torch.float64) * 0.8
    s = torch.randn(300, dtype=torch.float64)
    out = {}
    for chunk in (64, 37, 4096):
        fake = fake0.clone().requires_grad_()
        reg = gameopt.PrimalDualRegularizer("js", alpha=0.5, bandwidth=6.0, chunk_size=chunk)
        v = reg(real, fake, s)
        v.backward()
        out[chunk] = (v.detach(), fake.grad)
    assert out[4096][0] > 0 and out[4096][1].abs().max() > 0
    for chunk in (64, 37):
        torch.testing.assert_close(out[chunk][0], out[4096][0], rtol=1e-12, atol=0)
        torch.testing.assert_close(out[chunk][1], out[4096][1], rtol=1e-10, atol=1e-18)
    # and the unchunked path equals the exact-difference definition
    p_def = torch.exp(-((fake0[None] - real[:, None]) ** 2).sum(-1) / 36.0).mean(1)
    torch.testing.assert_close(kernel_density(real, fake0, 6.0, None), p_def, rtol=1e-10, atol=1e-14)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 30), m=st.integers(1, 30), d=st.integers(1, 4), chunk=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_chunked_kernel_density_property(n, m, d, chunk, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(m, d, generator=g, dtype=torch.float64).requires_grad_()
    p1 = kernel_density(x, y, 1.1, chunk)
    w = torch.randn(n, generator=g, dtype=torch.float64)
    (g1,) = torch.autograd.grad((p1 * w).sum(), y)
    p2 = kernel_density(x, y, 1.1, None)
    (g2,) = torch.autograd.grad((p2 * w).sum(), y)
    torch.testing.assert_close(p1, p2, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-14)
    assert ((p1 >= 0) & (p1 <= 1 + 1e-12)).all()


@pytest.mark.parametrize("chunk", [3, 1000])
def test_gradcheck_float64(chunk):
    # The term's *value* is mean (alpha f1)^2 whatever fake is (p_tilde is p_hat.detach()
    # shifted), so finite differences of reg itself are zero by design.  Its gradient is
    # that of L(f) = mean (t - p_hat(f))^2 with t frozen at the current point: gradcheck
    # the kernel density and L, then check reg's gradient equals grad L at that point.
    torch.manual_seed(3)
    real = torch.randn(7, 3, dtype=torch.float64)
    s = torch.randn(7, 1, dtype=torch.float64)
    W = torch.randn(3, 2, dtype=torch.float64)
    for fmap in (None, lambda x: torch.sin(x @ W)):
        f = (lambda x: x) if fmap is None else fmap
        fake = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
        kde = lambda y: kernel_density(f(real), f(y), 1.5, chunk)  # noqa: E731
        assert torch.autograd.gradcheck(kde, (fake,))
        assert torch.autograd.gradgradcheck(kde, (fake,))
        f1 = get_divergence("kl").f1_from_output(s.reshape(-1))
        t = (kde(fake) - 0.9 * f1).detach()
        L = lambda y: ((t - kde(y)) ** 2).mean()  # noqa: E731
        assert torch.autograd.gradcheck(L, (fake,))
        reg = gameopt.PrimalDualRegularizer("kl", alpha=0.9, bandwidth=1.5, feature_map=fmap, chunk_size=chunk)
        (g_reg,) = torch.autograd.grad(reg(real, fake, s), fake)
        (g_L,) = torch.autograd.grad(L(fake), fake)
        assert g_reg.abs().max() > 0
        torch.testing.assert_close(g_reg, g_L, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("chunk", [3, 1000])
def test_double_backward_matches_frozen_target_loss(chunk):
    # Consensus optimisation differentiates the generator gradient again: the term's
    # Hessian-vector products must equal those of mean (t - p_hat(y))^2 with t frozen.
    torch.manual_seed(6)
    real = torch.randn(7, 3, dtype=torch.float64)
    s = torch.randn(7, dtype=torch.float64)
    W = torch.randn(3, 2, dtype=torch.float64)
    fmap = lambda x: torch.sin(x @ W)  # noqa: E731
    reg = gameopt.PrimalDualRegularizer("js", alpha=0.6, bandwidth=1.2, feature_map=fmap, chunk_size=chunk)
    fake = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    v = torch.randn(5, 3, dtype=torch.float64)
    (g,) = torch.autograd.grad(reg(real, fake, s), fake, create_graph=True)
    (hv,) = torch.autograd.grad((g * v).sum(), fake)

    def p_hat(y):
        return torch.exp(-((fmap(y)[None] - fmap(real)[:, None]) ** 2).sum(-1) / 1.44).mean(1)

    t = (p_hat(fake) - 0.6 * get_divergence("js").f1_from_output(s)).detach()
    (g2,) = torch.autograd.grad(((t - p_hat(fake)) ** 2).mean(), fake, create_graph=True)
    (hv2,) = torch.autograd.grad((g2 * v).sum(), fake)
    torch.testing.assert_close(g, g2, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(hv, hv2, rtol=1e-9, atol=1e-13)
    assert hv.abs().max() > 0


def test_gradients_flow_to_fake_only():
    real = torch.randn(6, 2, requires_grad=True)
    s = torch.randn(6, requires_grad=True)
    for chunk in (2, 100):
        fake = torch.randn(4, 2, requires_grad=True)
        reg = gameopt.PrimalDualRegularizer("js", alpha=1.0, bandwidth=1.0, chunk_size=chunk)
        reg(real, fake, s).backward()
        assert real.grad is None and s.grad is None
        assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_large_batch_in_bounded_memory():
    # The (n, m, d) difference tensor would need 2048*2048*3072*4 B = 51 GB.
    torch.manual_seed(4)
    n, d = 2048, 3072
    real = torch.rand(n, d)
    fake = (torch.rand(n, d) * 0.5).requires_grad_()
    reg = gameopt.PrimalDualRegularizer("js", alpha=1.0, bandwidth=30.0, chunk_size=512)
    v = reg(real, fake, torch.full((n,), 2.0))
    v.backward()
    assert torch.isfinite(v) and torch.isfinite(fake.grad).all() and fake.grad.abs().max() > 0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux
    assert peak_gb < 4.0, f"peak RSS {peak_gb:.1f} GB"


# ---------------------------------------------------------------------------
# Claim 1 / Fig. 1 (reduced): a flat discriminator around the generated samples
# ---------------------------------------------------------------------------


def _frozen_logit(x: torch.Tensor) -> torch.Tensor:
    """-4 (D ~ 0.018) everywhere except a tent peaking at +4 (D ~ 0.98) on x = 1: flat near -3."""
    return -4.0 + 8.0 * torch.clamp(1.0 - (x - 1.0).abs(), min=0.0)


def _train_toy(use_reg: bool, steps: int = 300) -> torch.Tensor:
    torch.manual_seed(5)
    theta = torch.tensor(-3.0, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=0.05)
    div = get_divergence("js")
    reg = gameopt.PrimalDualRegularizer(div, alpha=1.0, bandwidth=StepBandwidth([1.5, 0.5], [150]))
    real = torch.ones(32, 1)
    for _ in range(steps):
        fake = theta + 0.1 * torch.randn(32, 1)
        loss = div.generator_loss(_frozen_logit(fake))
        if use_reg:
            loss = loss + reg(real, fake, _frozen_logit(real))
        opt.zero_grad()
        loss.backward()
        opt.step()
        reg.step()
    return theta.detach()


def test_claim1_regularizer_moves_samples_to_the_data():
    assert _train_toy(use_reg=False).item() == -3.0  # flat D: exactly zero generator gradient
    assert abs(_train_toy(use_reg=True).item() - 1.0) < 0.1


# ---------------------------------------------------------------------------
# Bandwidth schedules and state dict
# ---------------------------------------------------------------------------


def test_schedules_values():
    s = StepBandwidth([0.5, 0.1], [2000])
    assert (s(0), s(1999), s(2000), s(10**6)) == (0.5, 0.5, 0.1, 0.1)
    e = ExponentialBandwidth(math.sqrt(0.1), math.sqrt(0.8), every=2000, minimum=0.01)
    assert e(0) ** 2 == pytest.approx(0.1)
    assert e(4000) ** 2 == pytest.approx(0.1 * 0.64)
    assert e(10**7) == 0.01
    assert ConstantBandwidth(0.3)(123) == 0.3


def test_step_advances_schedule_and_attach_to_optimizer():
    reg = gameopt.PrimalDualRegularizer("js", bandwidth=StepBandwidth([0.5, 0.1], [3]))
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    handle = reg.attach(opt)
    seen = []
    for _ in range(4):
        seen.append(reg.current_bandwidth)
        opt.step()
    handle.remove()
    opt.step()
    assert seen == [0.5, 0.5, 0.5, 0.1] and int(reg.num_steps) == 4


def test_state_dict_round_trip():
    reg = gameopt.PrimalDualRegularizer("js", bandwidth=ExponentialBandwidth(0.7, 0.999, every=3, minimum=0.05))
    for _ in range(2501):
        reg.step()
    buf = io.BytesIO()
    torch.save(reg.state_dict(), buf)
    buf.seek(0)
    other = gameopt.PrimalDualRegularizer("js", bandwidth=ExponentialBandwidth(0.2, 0.5))
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert int(other.num_steps) == 2501
    assert other.current_bandwidth == reg.current_bandwidth  # bit-for-bit
    assert other.bandwidth.state_dict() == reg.bandwidth.state_dict()
    reg.step()
    other.step()
    assert other.current_bandwidth == reg.current_bandwidth


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    reg = gameopt.PrimalDualRegularizer("js", bandwidth=0.5)
    real, fake, s = torch.randn(4, 2), torch.randn(3, 2), torch.randn(4)
    with pytest.raises(ValueError, match="different feature dimensions"):
        reg(real, torch.randn(3, 5), s)
    with pytest.raises(ValueError, match="real batch is empty"):
        reg(torch.randn(0, 2), fake, torch.randn(0))
    with pytest.raises(ValueError, match="fake batch is empty"):
        reg(real, torch.randn(0, 2), s)
    with pytest.raises(ValueError, match=r"shape \(4,\) or \(4, 1\)"):
        reg(real, fake, torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"shape \(4,\) or \(4, 1\)"):
        reg(real, fake, torch.randn(5))
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive"):
            gameopt.PrimalDualRegularizer("js", bandwidth=bad)
    with pytest.raises(ValueError, match="positive"):
        StepBandwidth([0.5, 0.0], [10])
    sched = gameopt.PrimalDualRegularizer("js", bandwidth=lambda t: 0.5 - 0.1 * t)
    for _ in range(5):
        sched.step()
    with pytest.raises(ValueError, match="bandwidth schedule at step 5"):
        sched(real, fake, s)
    with pytest.raises(ValueError, match="Valid names: kl, reverse_kl, pearson, hellinger, js, wgan, other"):
        gameopt.PrimalDualRegularizer("jensen")
    with pytest.raises(ValueError, match="alpha"):
        gameopt.PrimalDualRegularizer("js", alpha=-1.0)
    with pytest.raises(ValueError, match="chunk_size"):
        gameopt.PrimalDualRegularizer("js", chunk_size=0)


def test_name_aliases_and_repr():
    assert get_divergence("Jensen-Shannon").name == "js"
    assert get_divergence("squared hellinger").name == "hellinger"
    assert "js" in repr(gameopt.PrimalDualRegularizer())


def test_random_projection_preserves_distances_on_average():
    proj = RandomProjection(3072, 256, seed=0)
    x = torch.randn(64, 3, 32, 32)
    fx = proj(x)
    assert fx.shape == (64, 256) and not list(proj.parameters())
    d_in = torch.cdist(x.reshape(64, -1), x.reshape(64, -1)) ** 2
    d_out = torch.cdist(fx, fx) ** 2
    ratio = d_out.sum() / d_in.sum()
    assert 0.9 < ratio.item() < 1.1


# ---------------------------------------------------------------------------
# Issue 11: NaN/Inf inputs, feature maps, bandwidth range, half precision
# ---------------------------------------------------------------------------


def _batch(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(6, 2, generator=g, dtype=dtype)
    fake = torch.randn(5, 2, generator=g, dtype=dtype).requires_grad_(True)
    return real, fake, torch.randn(6, generator=g, dtype=dtype)


def _hide_nan(d):
    # a user f1 that maps NaN to a number: the regulariser must not hide the NaN in its value
    return torch.nan_to_num(d, nan=0.0)


@pytest.mark.parametrize("which", ["real", "fake", "d_real"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(chunk_size=2), dict(feature_map=RandomProjection(2, 3)),
     dict(divergence=(torch.log, _hide_nan, torch.sigmoid))],
)
def test_nonfinite_input_makes_the_value_nan_by_default(which, bad, kwargs):
    reg = gameopt.PrimalDualRegularizer(**{"divergence": "js", **kwargs}, bandwidth=0.7)
    real, fake, d = _batch(torch.float32 if "feature_map" in kwargs else torch.float64)
    tensors = dict(real=real, fake=fake.detach().clone(), d_real=d)
    tensors[which][1] = bad
    fake = tensors["fake"].requires_grad_(True)
    value = reg(tensors["real"], fake, tensors["d_real"])
    assert torch.isnan(value), (which, value)
    value.backward()
    # the gradient is not finite either (the value says what the gradient is)
    if which != "d_real" or "divergence" not in kwargs:
        assert not torch.isfinite(fake.grad).all()


@pytest.mark.parametrize("which", ["real", "fake", "d_real"])
def test_nonfinite_raise_policy_names_the_input(which):
    reg = gameopt.PrimalDualRegularizer("js", bandwidth=0.7, nonfinite="raise")
    real, fake, d = _batch()
    tensors = dict(real=real.clone(), fake=fake.detach().clone(), d_real=d.clone())
    tensors[which][2] = float("nan")
    with pytest.raises(gameopt.GameInputError, match=rf"NaN or inf values in {which}"):
        reg(tensors["real"], tensors["fake"].requires_grad_(True), tensors["d_real"])
    assert torch.isfinite(reg(real, fake, d))  # finite inputs pass
    with pytest.raises(ValueError, match="nonfinite must be 'propagate' or 'raise'"):
        gameopt.PrimalDualRegularizer("js", nonfinite="skip")


@pytest.mark.parametrize(
    "feature_map",
    [
        lambda x: x.reshape(-1, 1),  # (n, 2) -> (2n, 1)
        lambda x: x[:2],  # drops rows
        lambda x: x.sum(),  # one scalar for the batch
        lambda x: x.T,  # (n, 2) -> (2, n)
        lambda x: x.mean(0, keepdim=True),  # (1, 2): would broadcast against every row
    ],
)
def test_feature_map_that_changes_the_row_count_raises(feature_map):
    reg = gameopt.PrimalDualRegularizer("js", feature_map=feature_map)
    real, fake, d = _batch()
    with pytest.raises(gameopt.GameInputError, match=r"feature_map .* changed the number of samples of (real|fake): \(6, 2\)|\(5, 2\)"):
        reg(real, fake, d)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("sigma", [1e-20, 1e-40, 1e-170, 1e-300])
def test_bandwidth_below_the_dtype_range_raises_instead_of_nan(dtype, sigma):
    from gameopt.primal_dual.bandwidth import min_bandwidth

    real, fake, d = _batch(dtype)
    compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    reg = gameopt.PrimalDualRegularizer("js", bandwidth=sigma)
    if sigma >= min_bandwidth(compute):
        value = reg(real, fake, d)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(fake.grad).all()
        return
    with pytest.raises(gameopt.GameInputError, match=r"below the smallest bandwidth .*larger bandwidth"):
        reg(real, fake, d)
    with pytest.raises(gameopt.GameInputError, match="below the smallest bandwidth"):
        kernel_density(real, fake, sigma)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_smallest_supported_bandwidth_gives_finite_gradients(dtype):
    from gameopt.primal_dual.bandwidth import min_bandwidth

    sigma = min_bandwidth(dtype) * 1.01
    real = torch.zeros(3, 2, dtype=dtype)
    real[1, 0] = 1.0
    # a sample on a data point, one at distance sigma from one, one far away
    fake = torch.tensor([[0.0, 0.0], [0.0, sigma], [5.0, 5.0]], dtype=dtype, requires_grad=True)
    for chunk in (2048, 1):
        fake.grad = None
        reg = gameopt.PrimalDualRegularizer("js", alpha=1.0, bandwidth=sigma, chunk_size=chunk)
        value = reg(real, fake, torch.tensor([1.0, -1.0, 0.5], dtype=dtype))
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(fake.grad).all(), fake.grad
        assert fake.grad[1, 1] != 0  # the sample at distance sigma feels the kernel


def test_schedule_decaying_below_the_range_raises_at_the_step_it_gets_there():
    reg = gameopt.PrimalDualRegularizer("js", bandwidth=ExponentialBandwidth(1.0, 1e-5))
    real, fake, d = _batch(torch.float32)
    for _ in range(3):  # sigma 1, 1e-5, 1e-10: fine
        assert torch.isfinite(reg(real, fake, d))
        reg.step()
    reg.step()  # sigma 1e-20
    with pytest.raises(gameopt.GameInputError, match="minimum"):
        reg(real, fake, d)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", DIVERGENCE_NAMES)
def test_saturated_logits_stay_finite_in_half_precision(name, dtype):
    div = get_divergence(name)
    s = torch.tensor([-1e4, 1e4, 0.0], dtype=dtype, requires_grad=True)
    for loss in (div.discriminator_loss(s, s), div.generator_loss(s),
                 div.f0_from_output(s).sum(), div.f1_from_output(s).sum()):
        (g,) = torch.autograd.grad(loss, s)
        assert loss.dtype == torch.float32 and g.dtype == dtype
        assert torch.isfinite(loss) and torch.isfinite(g).all(), (name, loss, g)
    # the values are the float32 values of the same (half-rounded) logits
    s32 = s.detach().float()
    torch.testing.assert_close(div.f1_from_output(s), div.f1_from_output(s32))
    reg = gameopt.PrimalDualRegularizer(name, alpha=0.5, bandwidth=0.5)
    real, fake, _ = _batch(dtype, seed=2)
    fake = fake[:3].detach().requires_grad_(True)
    v = reg(real[:3], fake, s.detach())
    v.backward()
    assert v.dtype == torch.float32 and torch.isfinite(v)
    # the gradient reaches fake in its dtype; it is finite wherever the float32 gradient fits that dtype
    fake32 = fake.detach().float().requires_grad_(True)
    reg(real[:3].float(), fake32, s.detach().float()).backward()
    fits = fake32.grad.abs() < torch.finfo(dtype).max / 2
    assert fake.grad.dtype == dtype and torch.isfinite(fake.grad[fits]).all()


# ---------------------------------------------------------------------------
# Issue 11: checkpoints load all or nothing; pickle and deepcopy after attach
# ---------------------------------------------------------------------------


def _snapshot(reg):
    sd = reg.state_dict()
    return {k: (v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)) for k, v in sd.items()}, reg._steps


def _assert_unchanged(reg, snap):
    sd, steps = snap
    now = reg.state_dict()
    assert set(now) == set(sd) and reg._steps == steps
    for k, v in sd.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(now[k], v), k
        else:
            assert now[k] == v, k


def _exp_reg(**kw):
    reg = gameopt.PrimalDualRegularizer("js", bandwidth=ExponentialBandwidth(0.7, 0.9, every=2, minimum=0.05), **kw)
    for _ in range(7):
        reg.step()
    return reg


def _bad_checkpoints():
    good = _exp_reg().state_dict()

    def edit(key=None, value=None, extra=None, drop=None):
        sd = copy.deepcopy(good)
        if key is not None:
            sd[key] = value
        if extra is not None:
            sd["_extra_state"] = extra
        if drop is not None:
            del sd[drop]
        return sd

    sched = good["_extra_state"]["bandwidth"]
    return {
        "negative step count": edit("num_steps", torch.tensor(-3)),
        "float step count": edit("num_steps", torch.tensor(2.5)),
        "step count not a tensor": edit("num_steps", "7"),
        "other schedule type": edit(extra={"bandwidth": {"sigmas": [0.5, 0.1], "milestones": [10]},
                                           "bandwidth_type": "StepBandwidth"}),
        "schedule keys without type": edit(extra={"bandwidth": {"sigma": 0.5}}),
        "negative sigma": edit(extra={"bandwidth": {**sched, "initial": -0.7}, "bandwidth_type": "ExponentialBandwidth"}),
        "decay above one": edit(extra={"bandwidth": {**sched, "decay": 1.5}, "bandwidth_type": "ExponentialBandwidth"}),
        "fractional every": edit(extra={"bandwidth": {**sched, "every": 2.5}, "bandwidth_type": "ExponentialBandwidth"}),
        "no schedule state (saved with a callable)": edit(extra={}),
        "extra state not a dict": edit(extra=[1, 2]),
        "missing key": edit(drop="num_steps"),
        "unexpected key": {**good, "alpha": torch.tensor(1.0)},
    }


@pytest.mark.parametrize("case", list(_bad_checkpoints()))
def test_bad_checkpoint_is_refused_and_nothing_changes(case):
    reg = gameopt.PrimalDualRegularizer("js", bandwidth=ExponentialBandwidth(0.2, 0.5))
    reg.step()
    snap = _snapshot(reg)
    with pytest.raises(gameopt.GameInputError):
        reg.load_state_dict(_bad_checkpoints()[case])
    _assert_unchanged(reg, snap)
    # inside a parent module, the regulariser's own entries are checked before any of them load
    if case not in ("missing key", "unexpected key"):
        parent = torch.nn.ModuleDict({"reg": reg})
        with pytest.raises(gameopt.GameInputError):
            parent.load_state_dict({f"reg.{k}": v for k, v in _bad_checkpoints()[case].items()})
        _assert_unchanged(reg, snap)


def test_step_bandwidth_checkpoint_checks_lengths_and_order():
    reg = gameopt.PrimalDualRegularizer("js", bandwidth=StepBandwidth([0.5, 0.1], [10]))
    snap = _snapshot(reg)
    for bad in ({"sigmas": [0.5], "milestones": [10]}, {"sigmas": [0.5, 0.1, 0.05], "milestones": [10, 5]},
                {"sigmas": [0.5, 0.0], "milestones": [10]}, {"sigmas": [0.5, 0.1], "milestones": [-1]}):
        sd = reg.state_dict()
        sd["_extra_state"] = {"bandwidth": bad, "bandwidth_type": "StepBandwidth"}
        with pytest.raises(gameopt.GameInputError, match="StepBandwidth"):
            reg.load_state_dict(sd)
        _assert_unchanged(reg, snap)
        with pytest.raises(gameopt.GameInputError):  # the schedule on its own, too
            reg.bandwidth.load_state_dict(bad)
        assert reg.bandwidth.state_dict() == {"sigmas": [0.5, 0.1], "milestones": [10]}


def test_checkpoint_with_a_bad_sigma_at_its_step_is_refused():
    saved = gameopt.PrimalDualRegularizer("js", bandwidth=lambda t: 1.0)
    for _ in range(12):
        saved.step()
    reg = gameopt.PrimalDualRegularizer("js", bandwidth=lambda t: 0.5 - 0.05 * t)  # <= 0 from t = 10 on
    snap = _snapshot(reg)
    with pytest.raises(gameopt.GameInputError, match="checkpoint's step 12"):
        reg.load_state_dict(saved.state_dict())
    _assert_unchanged(reg, snap)
    # a schedule's state cannot be loaded into a plain callable bandwidth
    with pytest.raises(gameopt.GameInputError, match="plain callable"):
        reg.load_state_dict(_exp_reg().state_dict())
    _assert_unchanged(reg, snap)


def test_feature_map_buffer_of_wrong_shape_is_refused_before_the_step_count_loads():
    saved = gameopt.PrimalDualRegularizer("js", feature_map=RandomProjection(4, 3))
    for _ in range(5):
        saved.step()
    reg = gameopt.PrimalDualRegularizer("js", feature_map=RandomProjection(4, 2))
    snap = _snapshot(reg)
    with pytest.raises(gameopt.GameInputError, match="feature_map.weight"):
        reg.load_state_dict(saved.state_dict())
    _assert_unchanged(reg, snap)


def test_good_checkpoint_still_loads_and_is_bit_for_bit():
    saved = _exp_reg()
    reg = gameopt.PrimalDualRegularizer("js", bandwidth=ExponentialBandwidth(0.2, 0.5))
    reg.load_state_dict(saved.state_dict())
    assert reg._steps == 7 and reg.current_bandwidth == saved.current_bandwidth
    # a checkpoint written before the schedule type was saved loads too
    old = saved.state_dict()
    old["_extra_state"] = {"bandwidth": old["_extra_state"]["bandwidth"]}
    gameopt.PrimalDualRegularizer("js", bandwidth=ExponentialBandwidth(0.2, 0.5)).load_state_dict(old)


@pytest.mark.parametrize("name", DIVERGENCE_NAMES)
def test_regularizer_pickles_with_every_builtin_divergence(name):
    reg = gameopt.PrimalDualRegularizer(name, alpha=0.3, bandwidth=StepBandwidth([0.5, 0.2], [2]))
    reg.step()
    back = pickle.loads(pickle.dumps(reg))
    real, fake, d = _batch()
    assert back.divergence.name == name and back._steps == 1
    torch.testing.assert_close(back(real, fake, d), reg(real, fake, d), rtol=0, atol=0)
    wg = get_divergence("wgan", eps=0.3)
    torch.testing.assert_close(pickle.loads(pickle.dumps(wg)).f0(d), wg.f0(d))


def _game():
    torch.manual_seed(0)
    G = torch.nn.Linear(2, 2).double()
    D = torch.nn.Linear(2, 1).double()
    return G, D


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copied_optimizer_and_regularizer_drive_only_each_other(how):
    G, D = _game()
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, G.parameters(), D.parameters(), gamma=0.5, lr=0.01)
    reg = gameopt.PrimalDualRegularizer("js", bandwidth=StepBandwidth([0.5, 0.1], [2]))
    reg.attach(opt)
    reg.step()
    opt2, reg2 = copy.deepcopy((opt, reg)) if how == "deepcopy" else pickle.loads(pickle.dumps((opt, reg)))
    assert reg2._steps == 1 and reg2.current_bandwidth == 0.5

    def step(o):
        o.zero_grad()
        for p in o.player_params("generator") + o.player_params("discriminator"):
            p.grad = torch.ones_like(p)
        o.step()

    # gameopt optimisers, like torch.optim, do not copy hooks: the copy drives nothing until attached
    step(opt2)
    assert reg._steps == 1 and reg2._steps == 1
    reg2.attach(opt2)
    for _ in range(2):
        step(opt2)
    assert reg2._steps == 3 and int(reg2.num_steps) == 3 and reg2.current_bandwidth == 0.1
    assert reg._steps == 1 and int(reg.num_steps) == 1  # the original is not driven by the copy
    step(opt)  # and the original still drives the original
    assert reg._steps == 2 and reg2._steps == 3


def test_schedule_stepper_hook_pickles_with_its_regularizer():
    from gameopt.primal_dual.regularizer import ScheduleStepper

    reg = gameopt.PrimalDualRegularizer("js")
    hook = ScheduleStepper(reg)
    hook2 = pickle.loads(pickle.dumps(hook))
    hook3 = copy.deepcopy(hook)
    for h in (hook2, hook3):
        h(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), (), {})
        assert h.regularizer._steps == 1
    assert reg._steps == 0
    skipped = type("Opt", (), {"last_step_skipped": True})()
    hook(skipped, (), {})
    assert reg._steps == 0


def test_plain_torch_optimizer_copy_after_attach():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=0.1)
    reg = gameopt.PrimalDualRegularizer("js")
    reg.attach(opt)
    opt2, reg2 = pickle.loads(pickle.dumps((opt, reg)))  # torch.optim drops hooks when pickling
    opt3, reg3 = copy.deepcopy((opt, reg))
    for o in (opt2, opt3):
        o.param_groups[0]["params"][0].grad = torch.ones(2)
        o.step()
    assert reg._steps == 0
    p.grad = torch.ones(2)
    opt.step()
    assert reg._steps == 1


def test_attach_does_not_advance_on_a_skipped_step():
    G, D = _game()
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, G.parameters(), D.parameters(), gamma=0.0, lr=0.01)
    reg = gameopt.PrimalDualRegularizer("js")
    reg.attach(opt)
    x = torch.randn(4, 2, dtype=torch.float64)
    for poison in (False, True, False):
        opt.zero_grad()
        fake = G(x)
        gen_loss = -D(fake).mean() * (float("nan") if poison else 1.0)
        opt.backward(gen_loss, D(fake.detach()).mean() - D(x).mean())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            opt.step()
    assert opt.skipped_steps == 1
    assert reg._steps == 2 and int(reg.num_steps) == 2
