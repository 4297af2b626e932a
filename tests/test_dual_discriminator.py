"""Tests of gameopt.TrustRegionDualDiscriminator and RBFFeatures."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import gameopt
from gameopt import RBFFeatures, TrustRegionDualDiscriminator
from gameopt.dual import DualSolverError, DualSolverWarning
from gameopt.solvers import TorchNewtonSolver, solve_linear_dual


# 2 shared CPU cores: intra-op threads spin against other processes (75x slower measured here)
torch.set_num_threads(1)

def mlp(seed=0, width=8, dtype=torch.float64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, width), nn.LeakyReLU(0.2),
                         nn.Linear(width, 1)).to(dtype)


def batch(n=10, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 2, generator=g, dtype=dtype) + 1.5, torch.randn(n, 2, generator=g, dtype=dtype))


def flat(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def explicit_jacobian(module, x):
    rows = []
    for i in range(x.shape[0]):
        module.zero_grad()
        out = module(x[i:i + 1]).reshape(())
        gs = torch.autograd.grad(out, list(module.parameters()))
        rows.append(torch.cat([g.reshape(-1) for g in gs]))
    return torch.stack(rows)


def discriminator_loss(module, real, fake, C):
    """Independent f(w) (methods.md 3)."""
    n = real.shape[0]
    w = flat(module)
    with torch.no_grad():
        fr, ff = module(real).reshape(-1), module(fake).reshape(-1)
    return float(0.5 * C * w @ w + (torch.nn.functional.softplus(-fr, threshold=1000).sum()
                                    + torch.nn.functional.softplus(ff, threshold=1000).sum()) / (2 * n))


# ---------------------------------------------------------------- kernel
@pytest.mark.parametrize("budget", [1, 10**9])
def test_kernel_per_parameter_equals_explicit_JJT(budget):
    net = mlp()
    real, fake = batch(6)
    x = torch.cat([real, fake])
    d = TrustRegionDualDiscriminator(net, model="score", jacobian_budget_bytes=budget)
    if budget == 1:
        assert len(d._param_groups(d._params(), x.shape[0])) == len(list(net.parameters()))
    K, Jw, F = d.kernel(x)
    J = explicit_jacobian(net, x)
    torch.testing.assert_close(K, J @ J.T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(Jw, J @ flat(net), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(F, net(x).reshape(-1).detach(), rtol=1e-12, atol=1e-12)


def test_kernel_with_conv_and_budget_grouping():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(3 * 3 * 3, 1)).double()
    x = torch.randn(8, 1, 7, 7, dtype=torch.float64)
    d = TrustRegionDualDiscriminator(net, model="score", jacobian_budget_bytes=8 * 8 * 30)
    groups = d._param_groups(d._params(), 8)
    assert 1 < len(groups) < 4
    K, _, _ = d.kernel(x)
    J = explicit_jacobian(net, x)
    torch.testing.assert_close(K, J @ J.T, rtol=1e-11, atol=1e-11)


# ------------------------------------------------------------- score model
@pytest.mark.parametrize("delta", [1e-6, 1e-3, 1e-1])
def test_score_step_respects_trust_region_and_model(delta):
    net = mlp(1)
    real, fake = batch(8, 2)
    w0 = flat(net)
    d = TrustRegionDualDiscriminator(net, model="score", C=1e-4, delta=delta)
    st = d.step(real, fake)
    s = flat(net) - w0 if st.accepted else None
    assert st.gap <= 1e-10
    assert st.step_norm > 0 and 0.5 * st.step_norm**2 <= delta * (1 + 1e-9)
    if st.accepted:
        assert 0.5 * float(s @ s) <= delta * (1 + 1e-9)
        assert float(s.norm()) == pytest.approx(st.step_norm, rel=1e-9)
    # stats agree with an independent evaluation of f
    assert st.loss_before == pytest.approx(discriminator_loss(copy.deepcopy(net).requires_grad_(True), real, fake, 1e-4)
                                           if not st.accepted else st.loss_before, rel=1e-12)
    assert st.predicted_decrease > 0
    assert st.rho == pytest.approx((st.loss_before - st.loss_after) / st.predicted_decrease, rel=1e-12)


def test_score_model_on_linear_F_with_huge_radius_is_the_linear_dual():
    torch.manual_seed(3)
    lin = nn.Linear(5, 1, bias=False).double()
    g = torch.Generator().manual_seed(4)
    real = torch.randn(12, 5, generator=g, dtype=torch.float64) + 0.5
    fake = torch.randn(12, 5, generator=g, dtype=torch.float64)
    C = 1e-2
    d = TrustRegionDualDiscriminator(lin, model="score", C=C, delta=1e12)
    st = d.step(real, fake)
    ref = solve_linear_dual(real, fake, C)
    assert st.accepted and st.rho == pytest.approx(1.0, abs=1e-6)  # the model is exact
    # f is C-strongly convex: ||w - w*|| <= sqrt(2 gap / C) for each solve
    bound = math.sqrt(2 * st.gap / C) + math.sqrt(2 * float(ref.gap) / C) + 1e-12
    assert float((lin.weight.detach().reshape(-1) - ref.w).norm()) <= bound
    torch.testing.assert_close(st.lam, ref.lam, atol=1e-9, rtol=0)
    assert st.loss_after == pytest.approx(float(ref.primal_value), abs=1e-10)


def test_radius_grows_on_boundary_when_model_is_exact_and_shrinks_on_rejection():
    torch.manual_seed(3)
    lin = nn.Linear(4, 1, bias=False).double()
    real, fake = torch.randn(6, 4, dtype=torch.float64) + 1, torch.randn(6, 4, dtype=torch.float64)
    d = TrustRegionDualDiscriminator(lin, model="score", C=1e-3, delta=1e-4, grow_factor=3.0)
    st = d.step(real, fake)
    assert st.accepted and st.rho == pytest.approx(1.0, abs=1e-6)
    assert 0.5 * st.step_norm**2 == pytest.approx(1e-4, rel=1e-9)  # on the boundary
    assert st.next_delta == pytest.approx(3e-4) and d.delta == pytest.approx(3e-4)
    # cost model with an absurd radius overshoots: rejected, parameters restored, radius shrunk
    net = mlp(5)
    w0 = flat(net)
    c = TrustRegionDualDiscriminator(net, model="cost", C=1e-4, delta=1e4, shrink_factor=0.5)
    st = c.step(*batch(10, 6))
    assert not st.accepted and st.rho < 0.25
    torch.testing.assert_close(flat(net), w0, rtol=0, atol=0)
    assert c.delta == pytest.approx(5e3)


def test_retries_shrink_and_resolve_within_one_call():
    net = mlp(5)
    c = TrustRegionDualDiscriminator(net, model="cost", C=1e-4, delta=1e4, max_retries=30)
    st = c.step(*batch(10, 6))
    assert st.accepted and st.retries >= 1 and st.delta < 1e4


# ------------------------------------------------------------- cost model
def test_cost_step_is_normalised_gradient_step():
    net = mlp(7)
    real, fake = batch(9, 8)
    C, delta = 1e-3, 1e-3
    probe = copy.deepcopy(net)
    n = real.shape[0]
    out_r, out_f = probe(real).reshape(-1), probe(fake).reshape(-1)
    w = torch.cat([p.reshape(-1) for p in probe.parameters()])
    f = 0.5 * C * w @ w + (nn.functional.softplus(-out_r).sum() + nn.functional.softplus(out_f).sum()) / (2 * n)
    g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(f, list(probe.parameters()))])
    expected = flat(net) - math.sqrt(2 * delta) * g / g.norm()
    d = TrustRegionDualDiscriminator(net, model="cost", C=C, delta=delta)
    st = d.step(real, fake)
    assert st.accepted
    torch.testing.assert_close(flat(net), expected, rtol=1e-10, atol=1e-12)
    assert st.predicted_decrease == pytest.approx(math.sqrt(2 * delta) * float(g.norm()), rel=1e-10)


def test_score_and_cost_training_decrease_the_loss():
    for model in ("score", "cost"):
        net = mlp(11)
        real, fake = batch(16, 12)
        d = TrustRegionDualDiscriminator(net, model=model, C=1e-4, delta=1e-3)
        first = d.loss(real, fake).item()
        for _ in range(8):
            d.step(real, fake)
        assert d.loss(real, fake).item() < first - 0.02, model


# ------------------------------------------------------------- linear model
def test_rbf_features_formula():
    anchors = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
    phi = RBFFeatures(anchors, bandwidth=0.5)
    x = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    expected = torch.exp(-torch.tensor([[2.0, 1.0]], dtype=torch.float64) / 0.5)
    torch.testing.assert_close(phi(x), expected)


def test_rbf_gaussian_convention_is_the_standard_kernel():
    anchors = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
    x = torch.tensor([[1.0, 1.0], [0.5, -0.3]], dtype=torch.float64)
    sigma = 0.7
    phi = RBFFeatures(anchors, bandwidth=sigma, convention="gaussian")
    d2 = torch.cdist(x, anchors) ** 2
    torch.testing.assert_close(phi(x), torch.exp(-d2 / (2 * sigma**2)))
    # the two conventions agree when bandwidth = 2 sigma^2
    torch.testing.assert_close(RBFFeatures(anchors, bandwidth=2 * sigma**2)(x), phi(x))
    assert RBFFeatures(anchors).convention == "sqdist_over_bandwidth"
    with pytest.raises(ValueError, match="unknown RBF convention 'gauss'"):
        RBFFeatures(anchors, convention="gauss")


def test_linear_step_is_exact_dual_solution_and_generator_loss_is_minus_dual():
    g = torch.Generator().manual_seed(0)
    anchors = torch.randn(20, 2, generator=g, dtype=torch.float64)
    phi = RBFFeatures(anchors, 0.5)
    real, fake = batch(12, 3)
    d = TrustRegionDualDiscriminator(phi, model="linear", C=1e-3)
    st = d.step(real, fake)
    ref = solve_linear_dual(phi(real), phi(fake), 1e-3)
    assert float((d.weight - ref.w).norm()) <= math.sqrt(2 * st.gap / 1e-3) + math.sqrt(2 * float(ref.gap) / 1e-3)
    assert st.gap <= 1e-10 and st.accepted
    assert d.loss(real, fake).item() == pytest.approx(float(ref.primal_value), abs=1e-10)
    fake_g = fake.clone().requires_grad_(True)
    gl = d.generator_loss(real, fake_g)
    assert gl.item() == pytest.approx(-float(ref.dual_value), abs=1e-10)


def test_linear_generator_gradient_is_envelope_gradient():
    """d/d fake of the generator loss equals that of -min_w f (finite differences)."""
    g = torch.Generator().manual_seed(1)
    phi = RBFFeatures(torch.randn(15, 2, generator=g, dtype=torch.float64), 0.7)
    real, fake = batch(8, 4)
    C = 1e-2
    d = TrustRegionDualDiscriminator(phi, model="linear", C=C)
    d.step(real, fake)
    fake_g = fake.clone().requires_grad_(True)
    d.generator_loss(real, fake_g).backward()
    v = torch.randn(fake.shape, generator=g, dtype=torch.float64)
    eps = 1e-5

    def neg_min_f(fk):
        return -float(solve_linear_dual(phi(real), phi(fk), C, solver=TorchNewtonSolver(tol=1e-15)).dual_value)

    fd = (neg_min_f(fake + eps * v) - neg_min_f(fake - eps * v)) / (2 * eps)
    assert float((fake_g.grad * v).sum()) == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_nonlinear_generator_loss_is_non_saturating():
    net = mlp(2)
    _, fake = batch(5)
    d = TrustRegionDualDiscriminator(net, model="score")
    expected = torch.nn.functional.softplus(-net(fake).reshape(-1)).mean()
    assert d.generator_loss(None, fake).item() == pytest.approx(expected.item(), rel=1e-12)


def test_state_dict_round_trip():
    d = TrustRegionDualDiscriminator(mlp(), model="score", delta=0.3)
    d.delta = 0.0123
    e = TrustRegionDualDiscriminator(mlp(), model="score", delta=1.0)
    e.load_state_dict(d.state_dict())
    assert e.delta == 0.0123
    lin = TrustRegionDualDiscriminator(RBFFeatures(torch.randn(4, 2)), model="linear")
    lin.step(*batch(5, 1, torch.float32))
    lin2 = TrustRegionDualDiscriminator(RBFFeatures(torch.randn(4, 2)), model="linear")
    lin2.load_state_dict(lin.state_dict())
    torch.testing.assert_close(lin2.weight, lin.weight)
    with pytest.raises(ValueError, match="state is for model 'linear'"):
        e.load_state_dict(lin.state_dict())


# ------------------------------------------------------------- failures
def test_ipopt_failure_keeps_discriminator_unchanged():
    pytest.importorskip("cyipopt")
    net = mlp(4)
    w0 = flat(net)
    d = TrustRegionDualDiscriminator(net, model="score", delta=1e-2, solver="ipopt",
                                     solver_options={"options": {"max_iter": 1}})
    with pytest.warns(DualSolverWarning, match="trust-region dual solve failed"):
        st = d.step(*batch(6))
    assert st.solver_failed and not st.accepted
    torch.testing.assert_close(flat(net), w0, rtol=0, atol=0)
    assert d.delta == 1e-2
    strict = TrustRegionDualDiscriminator(net, model="score", solver="ipopt", on_failure="raise",
                                          solver_options={"options": {"max_iter": 1}})
    with pytest.raises(DualSolverError):
        strict.step(*batch(6))


def test_ipopt_score_step_agrees_with_torch():
    pytest.importorskip("cyipopt")
    a, b = mlp(9), mlp(9)
    real, fake = batch(6, 9)
    TrustRegionDualDiscriminator(a, model="score", delta=1e-2, solver="torch").step(real, fake)
    TrustRegionDualDiscriminator(b, model="score", delta=1e-2, solver="ipopt").step(real, fake)
    torch.testing.assert_close(flat(a), flat(b), atol=1e-6, rtol=1e-6)


def test_nan_solver_output_keeps_linear_discriminator_unchanged(monkeypatch):
    phi = RBFFeatures(torch.randn(6, 2, dtype=torch.float64))
    d = TrustRegionDualDiscriminator(phi, model="linear", C=1e-3)
    real, fake = batch(5)
    d.step(real, fake)
    w0 = d.weight.clone()
    orig = TorchNewtonSolver.solve_linear

    def broken(self, A, C):
        res = orig(self, A, C)
        res.gap = res.gap * float("nan")
        return res

    monkeypatch.setattr(TorchNewtonSolver, "solve_linear", broken)
    with pytest.warns(DualSolverWarning, match="linear dual solve failed"):
        st = d.step(real + 0.1, fake)
    assert st.solver_failed
    torch.testing.assert_close(d.weight, w0, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"C": 0.0}, "C must be > 0"), ({"C": -1e-4}, "C must be > 0"), ({"delta": 0.0}, "delta must be > 0"),
     ({"delta": -1.0}, "delta must be > 0"), ({"solver": "lbfgs"}, "unknown solver 'lbfgs'"),
     ({"model": "quadratic"}, "unknown model 'quadratic'")],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrustRegionDualDiscriminator(mlp(), **kwargs)


@pytest.mark.parametrize("model", ["score", "cost", "linear"])
def test_bad_batches(model):
    module = RBFFeatures(torch.randn(4, 2, dtype=torch.float64)) if model == "linear" else mlp()
    d = TrustRegionDualDiscriminator(module, model=model)
    real, fake = batch(6)
    with pytest.raises(ValueError, match="same number of samples n.*6 real and 5 fake"):
        d.step(real, fake[:5])
    bad = fake.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="fake batch contains NaN"):
        d.step(real, bad)


def test_exports():
    assert gameopt.TrustRegionDualDiscriminator is TrustRegionDualDiscriminator
    assert callable(gameopt.solvers.solve_linear_dual)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_score_step_on_cuda():
    net = mlp().cuda()
    d = TrustRegionDualDiscriminator(net, model="score", delta=1e-3)
    real, fake = batch(8)
    st = d.step(real.cuda(), fake.cuda())
    assert st.gap <= 1e-10


def test_hooks_kernel_gram_route_and_jt_eta_match_explicit_J():
    # the second conv has a 2x2 output: its kernel block is formed from position Grams
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                        nn.Flatten(), nn.Linear(64, 1)).double()
    x = torch.randn(6, 2, 8, 8, dtype=torch.float64)
    J = explicit_jacobian(net, x)
    d = TrustRegionDualDiscriminator(net, model="score", per_sample="hooks")
    K, Jw, _ = d.kernel(x, keep_jacobian=True)
    torch.testing.assert_close(K, J @ J.T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(Jw, J @ flat(net), rtol=1e-12, atol=1e-12)
    eta = torch.randn(6, dtype=torch.float64)
    by_id = d._jt_eta_from_factors(eta)
    jt = torch.cat([by_id[id(p)].reshape(-1) for p in net.parameters()])
    torch.testing.assert_close(jt, J.T @ eta, rtol=1e-12, atol=1e-12)
    f = TrustRegionDualDiscriminator(net, model="score", per_sample="func")
    torch.testing.assert_close(f.kernel(x)[0], K, rtol=1e-12, atol=1e-12)


def test_rbf_bias_feature_removes_the_hiding_incentive():
    # fakes near the origin, real data and anchors around (1, 0): without a constant feature
    # the dual generator gradient (C = 1e-4) points away from the data (F = 0 far from all
    # anchors); with it, towards the data
    g = torch.Generator().manual_seed(0)
    real = torch.randn(50, 2, generator=g) * 0.1 + torch.tensor([1.0, 0.0])
    anchors = torch.randn(30, 2, generator=g) * 0.1 + torch.tensor([1.0, 0.0])
    directions = {}
    for bias in (False, True):
        fake = (torch.randn(50, 2, generator=torch.Generator().manual_seed(1)) * 0.1).requires_grad_(True)
        phi = RBFFeatures(anchors, 0.2, bias=bias)
        assert phi(fake).shape == (50, 30 + int(bias))
        d = TrustRegionDualDiscriminator(phi, model="linear", C=1e-4)
        d.step(real, fake.detach())
        d.generator_loss(real, fake).backward()
        directions[bias] = float(-fake.grad.mean(0)[0])
    assert directions[False] < 0 < directions[True]
