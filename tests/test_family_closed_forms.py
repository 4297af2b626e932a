"""Extragradient, optimistic, SGA and lookahead against closed forms (methods.md section 5).

Two families of games, SGD as the base optimiser, float64:
* bilinear l_G = x^T A y, l_D = -l_G (per singular value sigma of A, c = eta sigma);
* linear games of any number of players: v(z) = J (z - z*) for a random J whose diagonal
  blocks are symmetric (each player's own Hessian), with the equilibrium z* known.
"""

import cmath
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gameopt

SETTINGS = settings(max_examples=30, deadline=None)
SGD = torch.optim.SGD


# --------------------------------------------------------------------------- games
def bilinear(n, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    A = torch.tensor(rng.normal(size=(n, n)) * scale, dtype=torch.float64)
    x = torch.nn.Parameter(torch.tensor(rng.normal(size=n), dtype=torch.float64))
    y = torch.nn.Parameter(torch.tensor(rng.normal(size=n), dtype=torch.float64))
    return A, x, y


def field_jacobian(A):
    """J of v = (A y, -A^T x)."""
    n, m = A.shape
    top = torch.cat([torch.zeros(n, n, dtype=A.dtype), A], 1)
    bottom = torch.cat([-A.T, torch.zeros(m, m, dtype=A.dtype)], 1)
    return torch.cat([top, bottom], 0)


def singular_start(A, x, y, k, a=0.7, b=-0.4):
    U, S, Vh = torch.linalg.svd(A)
    with torch.no_grad():
        x.copy_(U[:, k] * a)
        y.copy_(Vh[k] * b)
    return S[k].item()


class LinearGame:
    """Players z_i of sizes ``sizes``; v(z) = J (z - z*) exactly.

    Player i's loss: (z_i - z*_i)^T J_io (z_o - z*_o) + 1/2 (z_i - z*_i)^T J_ii (z_i - z*_i), with
    J_ii symmetric, so grad_{z_i} l_i = J_i. (z - z*).
    """

    def __init__(self, sizes, seed, sym_shift=0.0, scale=1.0, stable=False):
        rng = np.random.default_rng(seed)
        n = sum(sizes)
        J = rng.normal(size=(n, n)) * scale
        self.slices, start = [], 0
        for s in sizes:
            sl = slice(start, start + s)
            block = J[sl, sl]
            J[sl, sl] = (block + block.T) / 2 + sym_shift * np.eye(s)
            self.slices.append(sl)
            start += s
        if stable:   # symmetric part positive definite: every eigenvalue of J has real part >= 0.3
            J += max(0.0, 0.3 - np.linalg.eigvalsh((J + J.T) / 2).min()) * np.eye(n)
        self.J = torch.tensor(J)
        self.z_star = torch.tensor(rng.normal(size=n))
        self.params = [torch.nn.Parameter(torch.tensor(rng.normal(size=s))) for s in sizes]

    def players(self):
        return {f"p{i}": [p] for i, p in enumerate(self.params)}

    def z(self):
        return torch.cat([p.detach() for p in self.params])

    def set_z(self, z):
        with torch.no_grad():
            for p, sl in zip(self.params, self.slices):
                p.copy_(z[sl])

    def field(self, z):
        return self.J @ (z - self.z_star)

    def losses(self):
        d = torch.cat(list(self.params)) - self.z_star
        out = []
        for i, sl in enumerate(self.slices):
            di = d[sl]
            others = d.clone()
            others[sl] = 0
            out.append(di @ (self.J[sl] @ others) + 0.5 * di @ (self.J[sl, sl] @ di))
        return tuple(out)


def bilinear_losses(A, x, y):
    def closure():
        lg = x @ A @ y
        return lg, -lg
    return closure


def norm(*ts):
    return torch.cat([t.detach().reshape(-1) for t in ts]).norm().item()


# --------------------------------------------------------------------------- extragradient
@SETTINGS
@given(sizes=st.lists(st.integers(1, 4), min_size=2, max_size=3), seed=st.integers(0, 10_000),
       eta=st.floats(1e-3, 0.5))
def test_extragradient_step_is_the_closed_form_on_linear_games(sizes, seed, eta):
    game = LinearGame(sizes, seed)
    z = game.z()
    z_half = z - eta * game.field(z)
    expected = z - eta * game.field(z_half)
    opt = gameopt.ExtragradientOptimizer(SGD, players=game.players(), lr=eta)
    opt.step(game.losses)
    torch.testing.assert_close(game.z(), expected, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(n=st.integers(1, 5), seed=st.integers(0, 10_000), eta=st.floats(1e-3, 1.5), k=st.integers(0, 4))
def test_extragradient_contracts_by_the_closed_form_factor(n, seed, eta, k):
    A, x, y = bilinear(n, seed)
    sigma = singular_start(A, x, y, k % n)
    c = eta * sigma
    factor = math.sqrt((1 - c * c) ** 2 + c * c)
    opt = gameopt.ExtragradientOptimizer(SGD, [x], [y], lr=eta)
    norms = [norm(x, y)]
    for _ in range(3):
        opt.step(bilinear_losses(A, x, y))
        norms.append(norm(x, y))
    for a, b in zip(norms, norms[1:]):
        assert b / a == pytest.approx(factor, rel=1e-9)
    sim = math.sqrt(1 + c * c)
    assert (factor < 1) == (c < 1) or abs(c - 1) < 1e-12   # contracts exactly when c < 1
    assert (factor < sim) == (c < math.sqrt(2)) or c == 0    # beats SimGA's expansion while c < sqrt 2


def test_extraadam_updates_the_moments_at_both_evaluations():
    """Gidel et al.'s Algorithm 4: Adam's state advances twice per step, the update starts at z_t."""
    A, x, y = bilinear(3, 0)
    x2, y2 = (torch.nn.Parameter(t.detach().clone()) for t in (x, y))
    opt = gameopt.ExtragradientOptimizer(torch.optim.Adam, [x], [y], lr=0.01, betas=(0.5, 0.9))
    ref = torch.optim.Adam([x2, y2], lr=0.01, betas=(0.5, 0.9))
    for _ in range(4):
        opt.step(bilinear_losses(A, x, y))
        start = [x2.detach().clone(), y2.detach().clone()]
        for phase in range(2):
            lg = x2 @ A @ y2
            gx, gy = torch.autograd.grad(lg, [x2, y2])
            x2.grad, y2.grad = gx, -gy
            if phase == 1:
                with torch.no_grad():
                    x2.copy_(start[0])
                    y2.copy_(start[1])
            ref.step()
    assert opt.state[x]["step"].item() == 8
    assert torch.equal(x, x2) and torch.equal(y, y2)


# --------------------------------------------------------------------------- optimistic
def companion(J, eta):
    """The optimistic step as a linear map of (z_t, z_{t-1}): z_{t+1} = (I - 2 eta J) z_t + eta J z_{t-1}."""
    n = J.shape[0]
    eye = torch.eye(n, dtype=J.dtype)
    top = torch.cat([eye - 2 * eta * J, eta * J], 1)
    bottom = torch.cat([eye, torch.zeros(n, n, dtype=J.dtype)], 1)
    return torch.cat([top, bottom], 0)


def optimistic_radius(c):
    """Spectral radius of w_{t+1} = (1 + 2ic) w_t - ic w_{t-1} (the optimistic class docstring)."""
    if c <= 0.5:
        return math.sqrt((1 + math.sqrt(1 - 4 * c * c)) / 2)
    return math.sqrt(0.25 + (c + math.sqrt(4 * c * c - 1) / 2) ** 2)


@SETTINGS
@given(sizes=st.lists(st.integers(1, 4), min_size=2, max_size=3), seed=st.integers(0, 10_000),
       eta=st.floats(1e-3, 0.4))
def test_optimistic_steps_follow_the_two_step_linear_map(sizes, seed, eta):
    game = LinearGame(sizes, seed)
    opt = gameopt.OptimisticOptimizer(SGD, players=game.players(), lr=eta)
    z0 = game.z()
    opt.step(game.losses)
    torch.testing.assert_close(game.z(), z0 - eta * game.field(z0), rtol=1e-12, atol=1e-12)  # first step plain
    M = companion(game.J, eta)
    shift = torch.cat([game.z_star, game.z_star])
    state = torch.cat([game.z(), z0])
    for _ in range(4):
        opt.zero_grad()
        opt.backward(*game.losses())
        opt.step()
        state = M @ (state - shift) + shift
        torch.testing.assert_close(game.z(), state[: len(z0)], rtol=1e-10, atol=1e-11)


@SETTINGS
@given(n=st.integers(1, 5), seed=st.integers(0, 10_000), eta=st.floats(1e-3, 1.0))
def test_optimistic_spectral_radius_is_the_derived_closed_form(n, seed, eta):
    A, _, _ = bilinear(n, seed)
    sigmas = torch.linalg.svdvals(A).tolist()
    radius = torch.linalg.eigvals(companion(field_jacobian(A), eta)).abs().max().item()
    assert radius == pytest.approx(max(optimistic_radius(eta * s) for s in sigmas), rel=1e-6)
    # the roots themselves, per singular value
    for s in sigmas:
        c = eta * s
        disc = cmath.sqrt(1 - 4 * c * c)
        for root in ((1 + 2j * c + disc) / 2, (1 + 2j * c - disc) / 2):
            assert abs(root * root - (1 + 2j * c) * root + 1j * c) < 1e-12


def test_optimistic_converges_on_bilinear_iff_c_below_one_over_sqrt3():
    A = torch.tensor([[1.0]], dtype=torch.float64)
    for c, converges in ((0.3, True), (0.55, True), (0.6, False), (0.9, False)):
        x = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
        y = torch.nn.Parameter(torch.tensor([0.5], dtype=torch.float64))
        opt = gameopt.OptimisticOptimizer(SGD, [x], [y], lr=c)
        for _ in range(200):
            opt.step(bilinear_losses(A, x, y))
        assert (norm(x, y) < 1e-3) == converges, c
    assert optimistic_radius(1 / math.sqrt(3)) == pytest.approx(1.0)


def test_optimistic_adam_is_daskalakis_algorithm_1():
    A, x, y = bilinear(3, 1)
    x2, y2 = (torch.nn.Parameter(t.detach().clone()) for t in (x, y))
    opt = gameopt.OptimisticOptimizer(torch.optim.Adam, [x], [y], lr=0.01, betas=(0.5, 0.9))
    ref = torch.optim.Adam([x2, y2], lr=0.01, betas=(0.5, 0.9))
    prev = None
    for _ in range(5):
        opt.step(bilinear_losses(A, x, y))
        before = [x2.detach().clone(), y2.detach().clone()]
        lg = x2 @ A @ y2
        gx, gy = torch.autograd.grad(lg, [x2, y2])
        x2.grad, y2.grad = gx, -gy
        ref.step()
        delta = [p.detach() - b for p, b in zip((x2, y2), before)]
        if prev is not None:
            with torch.no_grad():
                for p, d, q in zip((x2, y2), delta, prev):
                    p.add_(d).sub_(q)
        prev = delta
    torch.testing.assert_close(x, x2, rtol=0, atol=0)
    torch.testing.assert_close(y, y2, rtol=0, atol=0)


# --------------------------------------------------------------------------- SGA
def sga_expected(J, xi, lam, align, eps=0.1):
    A = (J - J.T) / 2
    at = A.T @ xi
    grad_h = J.T @ xi
    sign = 1.0
    if align:
        sign = 1.0 if (xi @ grad_h) * (at @ grad_h) / len(xi) + eps >= 0 else -1.0
    return xi + sign * lam * at, sign


@SETTINGS
@given(sizes=st.lists(st.integers(1, 4), min_size=2, max_size=3), seed=st.integers(0, 10_000),
       eta=st.floats(1e-3, 0.5), lam=st.floats(0.0, 3.0), align=st.booleans(), scale=st.floats(0.2, 3.0),
       shift=st.floats(-2.0, 2.0))
def test_sga_step_is_the_closed_form_on_linear_games(sizes, seed, eta, lam, align, scale, shift):
    game = LinearGame(sizes, seed, sym_shift=shift, scale=scale)
    z = game.z()
    adjusted, sign = sga_expected(game.J, game.field(z), lam, align)
    opt = gameopt.SGAOptimizer(SGD, players=game.players(), lam=lam, align=align, lr=eta)
    stats = opt.backward(*game.losses())
    opt.step()
    torch.testing.assert_close(game.z(), z - eta * adjusted, rtol=1e-11, atol=1e-11)
    assert stats.sign.item() == sign


def test_sga_alignment_flips_the_sign_near_an_unstable_point():
    """J = s I + a R: <xi, grad H> <A^T xi, grad H> = s a^2 |xi|^4, negative for s < 0."""
    for s, want in ((-1.0, -1.0), (1.0, 1.0)):
        J = torch.tensor([[s, 2.0], [-2.0, s]], dtype=torch.float64)
        x = torch.nn.Parameter(torch.tensor([3.0], dtype=torch.float64))
        y = torch.nn.Parameter(torch.tensor([-2.0], dtype=torch.float64))
        lx = x @ (J[0, 1] * y) + 0.5 * J[0, 0] * x @ x
        ly = y @ (J[1, 0] * x) + 0.5 * J[1, 1] * y @ y
        opt = gameopt.SGAOptimizer(SGD, [x], [y], lam=1.0, lr=0.1)
        assert opt.backward(lx, ly).sign.item() == want
        no_align = gameopt.SGAOptimizer(SGD, [x], [y], lam=1.0, align=False, lr=0.1)
        assert no_align.backward(x @ (J[0, 1] * y) + 0.5 * J[0, 0] * x @ x,
                                 y @ (J[1, 0] * x) + 0.5 * J[1, 1] * y @ y).sign.item() == 1.0


@SETTINGS
@given(n=st.integers(1, 5), seed=st.integers(0, 10_000), eta=st.floats(1e-3, 1.0),
       lam=st.floats(0.0, 5.0), k=st.integers(0, 4), align=st.booleans())
def test_sga_contracts_by_the_closed_form_factor_on_bilinear_games(n, seed, eta, lam, k, align):
    A, x, y = bilinear(n, seed)
    sigma = singular_start(A, x, y, k % n)
    factor = math.sqrt((1 - eta * lam * sigma**2) ** 2 + (eta * sigma) ** 2)
    opt = gameopt.SGAOptimizer(SGD, [x], [y], lam=lam, align=align, lr=eta)
    norms = [norm(x, y)]
    for _ in range(3):
        opt.step(bilinear_losses(A, x, y))
        assert opt.stats.sign.item() == 1.0
        norms.append(norm(x, y))
    for a, b in zip(norms, norms[1:]):
        assert b / a == pytest.approx(factor, rel=1e-9, abs=1e-12)


# --------------------------------------------------------------------------- lookahead
@SETTINGS
@given(n=st.integers(1, 4), seed=st.integers(0, 10_000), eta=st.floats(1e-3, 0.5),
       k=st.integers(1, 8), alpha=st.floats(0.05, 1.0), j=st.integers(0, 3),
       inner=st.sampled_from(["simga", "extragradient"]))
def test_lookahead_cycle_multiplies_by_the_closed_form_factor(n, seed, eta, k, alpha, j, inner):
    A, x, y = bilinear(n, seed)
    sigma = singular_start(A, x, y, j % n)
    c = eta * sigma
    one = 1 + 1j * c if inner == "simga" else 1 - c * c + 1j * c
    factor = abs(1 - alpha + alpha * one**k)
    if inner == "simga":
        base = gameopt.SimultaneousOptimizer(SGD, [x], [y], lr=eta)
    else:
        base = gameopt.ExtragradientOptimizer(SGD, [x], [y], lr=eta)
    opt = gameopt.LookaheadMinmax(base, k=k, alpha=alpha)
    norms = [norm(x, y)]
    for _ in range(2):
        for _ in range(k):
            opt.step(bilinear_losses(A, x, y))
        norms.append(norm(x, y))
    for a, b in zip(norms, norms[1:]):
        assert b / a == pytest.approx(factor, rel=1e-9, abs=1e-12)


# --------------------------------------------------------------------------- equilibria
def _make(method, players, eta):
    if method == "extragradient":
        return gameopt.ExtragradientOptimizer(SGD, players=players, lr=eta)
    if method == "optimistic":
        return gameopt.OptimisticOptimizer(SGD, players=players, lr=eta)
    if method == "sga":
        return gameopt.SGAOptimizer(SGD, players=players, lam=1.0, lr=eta)
    if method == "lookahead":
        return gameopt.LookaheadMinmax(gameopt.SimultaneousOptimizer(SGD, players=players, lr=eta), k=5, alpha=0.5)
    return gameopt.SimultaneousOptimizer(SGD, players=players, lr=eta)


@pytest.mark.parametrize("method", ["extragradient", "optimistic", "sga", "lookahead", "simga"])
def test_bilinear_game_with_offset_equilibrium(method):
    """l_G = (x - x*)^T A (y - y*) = -l_D: every new method finds (x*, y*); SimGA spirals out."""
    rng = np.random.default_rng(3)
    Q = torch.linalg.qr(torch.tensor(rng.normal(size=(4, 4))))[0]
    A = Q * torch.tensor([0.6, 0.7, 0.9, 1.0], dtype=torch.float64)   # singular values 0.6 .. 1
    x_star, y_star = torch.tensor(rng.normal(size=4)), torch.tensor(rng.normal(size=4))
    x = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    y = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    eta = 0.5   # c = eta sigma in [0.3, 0.5]
    opt = _make(method, {"generator": [x], "discriminator": [y]}, eta)

    def closure():
        lg = (x - x_star) @ A @ (y - y_star)
        return lg, -lg

    start = norm(x - x_star, y - y_star)
    for _ in range(500):
        opt.step(closure)
    end = norm(x - x_star, y - y_star)
    if method == "simga":
        assert end > 10 * start
    else:
        assert end < 1e-6 * start, end


@pytest.mark.parametrize("method", ["extragradient", "optimistic", "sga", "lookahead"])
def test_three_player_linear_game_reaches_its_equilibrium(method):
    game = LinearGame([2, 3, 2], seed=5, stable=True)
    assert (torch.linalg.eigvals(game.J).real > 0.29).all()   # a stable game: every method converges
    eta = 0.5 / torch.linalg.matrix_norm(game.J, 2).item()
    opt = _make(method, game.players(), eta)
    start = (game.z() - game.z_star).norm().item()
    for _ in range(300):
        opt.step(game.losses)
    assert (game.z() - game.z_star).norm().item() < 1e-4 * start
