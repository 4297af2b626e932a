"""CompetitiveOptimizer (CGD / ACGD) against closed forms and dense references (float64)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gameopt
from conftest import TinyGAN

SETTINGS = settings(max_examples=40, deadline=None)
EXACT = {"tol": 1e-13, "max_iter": 200}


def bilinear(n, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    A = torch.tensor(rng.normal(size=(n, n)) * scale, dtype=torch.float64)
    x = torch.nn.Parameter(torch.tensor(rng.normal(size=n), dtype=torch.float64))
    y = torch.nn.Parameter(torch.tensor(rng.normal(size=n), dtype=torch.float64))
    return A, x, y


def cgd_step(opt, f):
    opt.zero_grad()
    stats = opt.backward(f, -f)
    opt.step()
    return stats


@SETTINGS
@given(n=st.integers(1, 6), seed=st.integers(0, 10_000), eta=st.floats(1e-3, 2.0), scale=st.floats(0.1, 2.0))
def test_one_step_equals_methods_md_formula(n, seed, eta, scale):
    """d_theta = -eta (I + eta^2 A A^T)^-1 (A y + eta A A^T x), d_phi likewise (methods.md section 5)."""
    A, x, y = bilinear(n, seed, scale)
    x0, y0 = x.detach().clone(), y.detach().clone()
    opt = gameopt.CompetitiveOptimizer([x], [y], lr=eta, **EXACT)
    cgd_step(opt, x @ A @ y)
    eye = torch.eye(n, dtype=torch.float64)
    dx = -eta * torch.linalg.solve(eye + eta**2 * A @ A.T, A @ y0 + eta * A @ (A.T @ x0))
    dy = eta * torch.linalg.solve(eye + eta**2 * A.T @ A, A.T @ x0 - eta * A.T @ (A @ y0))
    torch.testing.assert_close(x.detach(), x0 + dx, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(y.detach(), y0 + dy, rtol=1e-10, atol=1e-12)


@SETTINGS
@given(
    n=st.integers(1, 6), seed=st.integers(0, 10_000), eta=st.floats(1e-3, 3.0),
    k=st.integers(0, 5), a=st.floats(-2, 2), b=st.floats(-2, 2), warm=st.booleans(),
)
def test_bilinear_contracts_by_the_exact_factor(n, seed, eta, k, a, b, warm):
    """Per singular value sigma, |z| shrinks by 1 / sqrt(1 + eta^2 sigma^2) every step."""
    k = k % n
    if abs(a) + abs(b) < 1e-3:
        a = 1.0
    A, x, y = bilinear(n, seed)
    U, S, Vh = torch.linalg.svd(A)
    sigma = S[k].item()
    with torch.no_grad():
        x.copy_(U[:, k] * a)
        y.copy_(Vh[k] * b)
    opt = gameopt.CompetitiveOptimizer([x], [y], lr=eta, warm_start=warm, **EXACT)
    factor = 1 / math.sqrt(1 + eta**2 * sigma**2)
    for _ in range(3):
        before = torch.cat([x, y]).norm().item()
        stats = cgd_step(opt, x @ A @ y)
        assert torch.cat([x, y]).norm().item() / before == pytest.approx(factor, rel=1e-10)
        assert bool(stats.cg_converged)


def quadratic_game(n, m, seed):
    """f = 1/2 x^T P x + x^T A y - 1/2 y^T Q y + b^T x + c^T y with P, Q positive definite."""
    rng = np.random.default_rng(seed)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    Lp, Lq = rng.normal(size=(n, n)), rng.normal(size=(m, m))
    P, Q = t(Lp @ Lp.T / n + 0.1 * np.eye(n)), t(Lq @ Lq.T / m + 0.1 * np.eye(m))
    A, b, c = t(rng.normal(size=(n, m))), t(rng.normal(size=n)), t(rng.normal(size=m))
    x = torch.nn.Parameter(t(rng.normal(size=n)))
    y = torch.nn.Parameter(t(rng.normal(size=m)))

    def f(x, y):
        return 0.5 * x @ P @ x + x @ A @ y - 0.5 * y @ Q @ y + b @ x + c @ y

    K = torch.cat([torch.cat([P, A], 1), torch.cat([A.T, -Q], 1)])
    equilibrium = torch.linalg.solve(K, -torch.cat([b, c]))
    return f, x, y, A, (P, Q, b, c), equilibrium


@pytest.mark.parametrize("seed", range(5))
def test_quadratic_game_step_equals_dense_solve_with_per_group_lr(seed):
    """Two groups per player with different lr: eta is diagonal; the step solves the dense Nash system."""
    n, m = 5, 4
    f, x, y, A, (P, Q, b, c), _ = quadratic_game(n, m, seed)
    x1 = torch.nn.Parameter(x.detach()[:2].clone())
    x2 = torch.nn.Parameter(x.detach()[2:].clone())
    y1 = torch.nn.Parameter(y.detach()[:3].clone())
    y2 = torch.nn.Parameter(y.detach()[3:].clone())
    lrs = [0.3, 0.05, 0.2, 0.7]
    opt = gameopt.CompetitiveOptimizer(
        [{"params": [x1], "lr": lrs[0]}, {"params": [x2], "lr": lrs[1]}],
        [{"params": [y1], "lr": lrs[2]}, {"params": [y2], "lr": lrs[3]}], **EXACT)
    x0, y0 = x.detach(), y.detach()
    gx, gy = P @ x0 + A @ y0 + b, A.T @ x0 - Q @ y0 + c
    et = torch.diag(torch.tensor([lrs[0]] * 2 + [lrs[1]] * 3, dtype=torch.float64))
    ep = torch.diag(torch.tensor([lrs[2]] * 3 + [lrs[3]] * 1, dtype=torch.float64))
    dx = -torch.linalg.solve(torch.eye(n, dtype=torch.float64) + et @ A @ ep @ A.T, et @ (gx + A @ ep @ gy))
    dy = ep @ (gy + A.T @ dx)
    cgd_step(opt, f(torch.cat([x1, x2]), torch.cat([y1, y2])))
    torch.testing.assert_close(torch.cat([x1, x2]).detach(), x0 + dx, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.cat([y1, y2]).detach(), y0 + dy, rtol=1e-10, atol=1e-12)
    # dx is the Nash point of the local game: theta's first-order condition holds
    torch.testing.assert_close(dx, -et @ (gx + A @ dy), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_quadratic_game_converges_to_its_equilibrium(seed):
    f, x, y, *_, equilibrium = quadratic_game(4, 3, seed)
    opt = gameopt.CompetitiveOptimizer([x], [y], lr=0.5, tol=1e-12, max_iter=50)
    for _ in range(600):
        cgd_step(opt, f(x, y))
    torch.testing.assert_close(torch.cat([x, y]).detach(), equilibrium, rtol=0, atol=1e-9)


def test_cgd_converges_on_bilinear_where_simga_diverges():
    _, x, y = bilinear(4, 0)
    U, _, Vh = torch.linalg.svd(bilinear(4, 1)[0])
    A = U @ torch.diag(torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=torch.float64)) @ Vh
    x2, y2 = (torch.nn.Parameter(t.detach().clone()) for t in (x, y))
    start = torch.cat([x, y]).norm().item()
    cgd = gameopt.CompetitiveOptimizer([x], [y], lr=1.0, tol=1e-10, max_iter=20)
    sim = gameopt.SimultaneousOptimizer(torch.optim.SGD, [x2], [y2], lr=0.3)
    for _ in range(200):
        cgd_step(cgd, x @ A @ y)
        sim.zero_grad()
        f = x2 @ A @ y2
        sim.backward(f, -f)
        sim.step()
    assert torch.cat([x, y]).norm().item() < 1e-3 * start
    assert torch.cat([x2, y2]).norm().item() > 2 * start


def _flat_params(gan):
    return [p for p in list(gan.G.parameters()) + list(gan.D.parameters())]


def _mixed_hessian(f, theta, phi):
    """Dense d^2 f / dtheta dphi, row by row (float64, tiny players only)."""
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(f, theta, create_graph=True)])
    rows = [torch.cat([t.reshape(-1) for t in torch.autograd.grad(g[i], phi, retain_graph=True)]) for i in range(len(g))]
    return torch.stack(rows)


def acgd_reference(gan, steps, lr_t, lr_p, beta, eps):
    """ACGD written out densely: cgds' eta, the non-symmetric Nash system solved directly."""
    theta, phi = gan.params()
    v = [torch.zeros(sum(p.numel() for p in ps), dtype=torch.float64) for ps in (theta, phi)]
    for t in range(1, steps + 1):
        lg, _ = gan.losses("zerosum")
        f = lg
        g = torch.autograd.grad(f, theta + phi, retain_graph=True)
        gt = torch.cat([t_.reshape(-1) for t_ in g[: len(theta)]])
        gp = torch.cat([t_.reshape(-1) for t_ in g[len(theta):]])
        D = _mixed_hessian(f, theta, phi)
        etas = []
        for i, (gi, lr) in enumerate(((gt, lr_t), (gp, lr_p))):
            v[i] = beta * v[i] + (1 - beta) * gi * gi
            etas.append(lr * math.sqrt(1 - beta**t) / (v[i].sqrt() + eps))
        et, ep = torch.diag(etas[0]), torch.diag(etas[1])
        dt = -torch.linalg.solve(torch.eye(len(gt), dtype=torch.float64) + et @ D @ ep @ D.T, et @ (gt + D @ ep @ gp))
        dp = ep @ (gp + D.T @ dt)
        with torch.no_grad():
            for ps, d in ((theta, dt), (phi, dp)):
                offset = 0
                for p in ps:
                    p.add_(d[offset: offset + p.numel()].view_as(p))
                    offset += p.numel()


@pytest.mark.parametrize("warm", [True, False])
def test_acgd_matches_a_dense_reference(warm):
    ref, gan = TinyGAN(seed=5), TinyGAN(seed=5)
    acgd_reference(ref, 4, lr_t=0.02, lr_p=0.05, beta=0.9, eps=1e-6)
    gp, dp = gan.params()
    opt = gameopt.CompetitiveOptimizer([{"params": gp, "lr": 0.02}], [{"params": dp, "lr": 0.05}], adaptive=True,
                                       beta=0.9, eps=1e-6, warm_start=warm, **EXACT)
    for _ in range(4):
        opt.zero_grad()
        lg, ld = gan.losses("zerosum")
        opt.backward(lg, ld)
        opt.step()
    for a, b in zip(_flat_params(gan), _flat_params(ref)):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-9, atol=1e-11)
    assert all(opt.state[p]["step"].item() == 4 for p in gp + dp)


def test_cgd_with_one_lr_matches_the_dense_reference_with_beta_zero_limit():
    """CGD on a GAN: eta = lr (the dense reference with a constant eta)."""
    ref, gan = TinyGAN(seed=6), TinyGAN(seed=6)
    theta, phi = ref.params()
    lr = 0.1
    for _ in range(3):
        f = ref.losses("zerosum")[0]
        g = torch.autograd.grad(f, theta + phi, retain_graph=True)
        gt = torch.cat([t.reshape(-1) for t in g[: len(theta)]])
        gp = torch.cat([t.reshape(-1) for t in g[len(theta):]])
        D = _mixed_hessian(f, theta, phi)
        dt = -lr * torch.linalg.solve(torch.eye(len(gt), dtype=torch.float64) + lr**2 * D @ D.T, gt + lr * D @ gp)
        dp = lr * (gp + D.T @ dt)
        with torch.no_grad():
            for ps, d in ((theta, dt), (phi, dp)):
                offset = 0
                for p in ps:
                    p.add_(d[offset: offset + p.numel()].view_as(p))
                    offset += p.numel()
    opt = gameopt.CompetitiveOptimizer(*gan.params(), lr=lr, **EXACT)
    for _ in range(3):
        opt.step(lambda: gan.losses("zerosum"))
    for a, b in zip(_flat_params(gan), _flat_params(ref)):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-9, atol=1e-11)


def test_warm_start_from_the_solution_needs_no_iteration():
    """The warm start is used: solving again at the same point starts from the solution (2 products, 0 iterations).

    Measured elsewhere (README): on bilinear, quadratic and GAN games consecutive solves differ
    about as much as the system is ill-conditioned, so the warm start saves no iterations there;
    it is off by default.
    """
    gan = TinyGAN(seed=7, batch=32)
    gp, dp = gan.params()
    opt = gameopt.CompetitiveOptimizer(gp, dp, lr=0.5, tol=1e-8, max_iter=100, warm_start=True)
    start = [p.detach().clone() for p in gp + dp]
    first = opt.backward(*gan.losses("zerosum"))
    first_grads = [p.grad.clone() for p in gp + dp]
    opt.step()
    assert int(first.cg_iterations) > 2 and first.hessian_products == 1 + 2 * int(first.cg_iterations)
    with torch.no_grad():
        for p, s in zip(gp + dp, start):
            p.copy_(s)
    again = opt.backward(*gan.losses("zerosum"))
    assert int(again.cg_iterations) == 0 and again.hessian_products == 2
    for p, g in zip(gp + dp, first_grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-6, atol=1e-9)


def test_check_every_changes_syncs_not_results():
    """Iterations after convergence are masked on the device: the same step, bit for bit."""
    out = []
    for every in (1, 4, 50):
        gan = TinyGAN(seed=8)
        opt = gameopt.CompetitiveOptimizer(*gan.params(), lr=0.5, adaptive=True, tol=1e-6, max_iter=50,
                                           check_every=every)
        its = []
        for _ in range(3):
            its.append(int(opt.step(lambda: gan.losses("zerosum")) and opt.stats.cg_iterations))
        out.append(([p.detach().clone() for p in _flat_params(gan)], its, opt.stats.hessian_products))
    for params, its, products in out[1:]:
        assert its == out[0][1]
        for a, b in zip(params, out[0][0]):
            assert torch.equal(a, b)
    assert out[0][2] < out[1][2] <= out[2][2]   # more products computed, all masked


def test_max_iter_caps_the_solve_and_is_reported():
    gan = TinyGAN(seed=9)
    opt = gameopt.CompetitiveOptimizer(*gan.params(), lr=2.0, tol=1e-12, max_iter=1, warm_start=False)
    stats = opt.backward(*gan.losses("zerosum"))
    assert int(stats.cg_iterations) == 1 and not bool(stats.cg_converged)
    assert stats.hessian_products == 3
    assert float(stats.cg_residual) > 1e-12


def test_residual_bounds_each_players_step_error():
    """The documented bound: relative error of each player's scaled step <= residual / (1 - residual)."""
    gan = TinyGAN(seed=10)
    exact = gameopt.CompetitiveOptimizer(*gan.params(), lr=1.0, **EXACT)
    exact.backward(*gan.losses("zerosum"))
    want = [p.grad.clone() for p in _flat_params(gan)]
    for k in (1, 2, 3):
        rough = gameopt.CompetitiveOptimizer(*gan.params(), lr=1.0, tol=1e-12, max_iter=k, warm_start=False)
        stats = rough.backward(*gan.losses("zerosum"))
        res = float(stats.cg_residual)
        got = [p.grad for p in _flat_params(gan)]
        n_gen = len(list(gan.G.parameters()))
        for sl in (slice(0, n_gen), slice(n_gen, None)):
            err = torch.cat([(a - b).reshape(-1) for a, b in zip(got[sl], want[sl])]).norm()
            ref = torch.cat([b.reshape(-1) for b in want[sl]]).norm()
            if res < 1:
                assert err <= res / (1 - res) * ref * (1 + 1e-9)
