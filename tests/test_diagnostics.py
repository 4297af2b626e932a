"""Jacobian spectrum diagnostics against games with known eigenvalues."""

import numpy as np
import pytest
import torch

import gameopt
from gameopt.diagnostics import GameField, max_stable_step, summarize_spectrum


def sorted_complex(z):
    z = np.asarray(z)
    return z[np.lexsort((np.round(z.imag, 8), np.round(z.real, 8)))]


def bilinear(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=torch.float64)
    x = torch.nn.Parameter(torch.randn(n, generator=g, dtype=torch.float64))
    y = torch.nn.Parameter(torch.randn(n, generator=g, dtype=torch.float64))

    def closure():
        lg = x @ A @ y
        return lg, -lg
    return A, x, y, closure


@pytest.mark.parametrize("n", [1, 3, 6])
def test_bilinear_spectrum_is_plus_minus_i_sigma(n):
    A, x, y, closure = bilinear(n, seed=n)
    sigma = torch.linalg.svdvals(A).numpy()
    lam = GameField(closure, [[x], [y]]).eigenvalues()
    want = np.concatenate([1j * sigma, -1j * sigma])
    np.testing.assert_allclose(sorted_complex(lam), sorted_complex(want), atol=1e-10)


def test_consensus_field_spectrum_matches_closed_form():
    A, x, y, closure = bilinear(5, seed=1)
    gamma = 0.7
    sigma = torch.linalg.svdvals(A).numpy()
    lam = GameField(closure, [[x], [y]], gamma=gamma).eigenvalues()
    want = np.concatenate([gamma * sigma**2 + 1j * sigma, gamma * sigma**2 - 1j * sigma])
    np.testing.assert_allclose(sorted_complex(lam), sorted_complex(want), atol=1e-9)
    s = summarize_spectrum(lam)
    assert s.min_real == pytest.approx(gamma * sigma.min() ** 2)
    assert s.max_imag_real_ratio == pytest.approx(np.max(1 / (gamma * sigma)))


def quadratic_game(n=6, m=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    P = torch.randn(n, n, generator=g, dtype=torch.float64)
    P = P @ P.T / n
    Q = torch.randn(m, m, generator=g, dtype=torch.float64)
    Q = Q @ Q.T / m
    B = torch.randn(n, m, generator=g, dtype=torch.float64)
    x = torch.nn.Parameter(torch.randn(n, generator=g, dtype=torch.float64))
    y = torch.nn.Parameter(torch.randn(m, generator=g, dtype=torch.float64))

    def closure():
        return 0.5 * x @ P @ x + x @ B @ y, 0.5 * y @ Q @ y - x @ B @ y
    J = torch.cat([torch.cat([P, B], 1), torch.cat([-B.T, Q], 1)], 0)
    return closure, [[x], [y]], J


def test_quadratic_game_exact_and_iterative_agree():
    closure, players, J = quadratic_game(12, 10)
    field = GameField(closure, players)
    torch.testing.assert_close(field.jacobian(), J)
    exact = np.linalg.eigvals(J.numpy())
    np.testing.assert_allclose(sorted_complex(field.eigenvalues()), sorted_complex(exact), atol=1e-10)
    top = field.eigenvalues(k=4, which="LM", tol=1e-10)
    want = exact[np.argsort(-np.abs(exact))][:4]
    np.testing.assert_allclose(np.sort(np.abs(top)), np.sort(np.abs(want)), rtol=1e-8)
    d = torch.randn(J.shape[0], dtype=torch.float64)
    torch.testing.assert_close(field.matvec(d), J @ d)
    torch.testing.assert_close(field.rmatvec(d), J.T @ d)


def test_lemma4_step_bound_is_tight():
    a, b = 0.5, 2.0
    h_star = max_stable_step(np.array([a + 1j * b, a - 1j * b]))
    assert h_star == pytest.approx(2 * a / (a * a + b * b))

    def run(h, steps=1000):
        x = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
        y = torch.nn.Parameter(torch.tensor([0.5], dtype=torch.float64))
        opt = gameopt.SimultaneousOptimizer(torch.optim.SGD, [x], [y], lr=h)

        def closure():
            xy = (x * y).sum()
            return 0.5 * a * (x * x).sum() + b * xy, 0.5 * a * (y * y).sum() - b * xy
        lam = GameField(closure, [[x], [y]]).eigenvalues()
        np.testing.assert_allclose(sorted_complex(lam), sorted_complex([a - 1j * b, a + 1j * b]), atol=1e-12)
        for _ in range(steps):
            opt.step(closure)
        return torch.cat([x, y]).norm().item()

    start = np.hypot(1.0, 0.5)
    assert run(0.97 * h_star) < 0.1 * start  # |1 - h lambda|^1000 ~ 0.03
    assert run(1.03 * h_star) > 10 * start  # ~ 37


def test_network_game_iterative_matches_exact():
    torch.manual_seed(0)
    G = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    D = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    z, x = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)

    def closure():
        d_fake = D(G(z))
        lg = torch.nn.functional.softplus(-d_fake).mean()
        ld = torch.nn.functional.softplus(-D(x)).mean() + torch.nn.functional.softplus(d_fake).mean()
        return lg, ld
    for gamma in (0.0, 1.0):
        field = GameField(closure, [list(G.parameters()), list(D.parameters())], gamma=gamma)
        exact = field.eigenvalues()
        assert len(exact) == field.size
        top = field.eigenvalues(k=3, which="LM", tol=1e-8)
        np.testing.assert_allclose(np.sort(np.abs(top)), np.sort(np.abs(exact))[-3:], rtol=1e-6)


def test_game_field_reads_players_from_optimizer_and_checks_gamma():
    A, x, y, closure = bilinear(2)
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, [x], [y], lr=0.1)
    assert GameField(closure, opt).size == 4
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        GameField(closure, opt, gamma=-1)


class _Writer:
    def __init__(self):
        self.scalars, self.hists = {}, {}

    def add_scalar(self, key, value, step):
        self.scalars[key] = (value, step)

    def add_histogram(self, key, values, step):
        self.hists[key] = (values, step)


class _Vector:
    def monitor_stats(self):
        return {"lam": torch.tensor([0.1, 0.2, 0.3]), "gap": torch.tensor(1e-12)}


def test_monitor_collects_tensors_and_reads_them_once():
    from conftest import TinyGAN
    gan = TinyGAN()
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, *gan.params(), gamma=1.0, lr=1e-3)
    mon = gameopt.Monitor(consensus=opt, dual=_Vector())
    assert "consensus/grad_sq_norm/generator" not in mon.tensors()
    opt.zero_grad()
    opt.backward(*gan.losses())
    opt.step()
    t = mon.tensors()
    assert isinstance(t["consensus/grad_sq_norm/generator"], torch.Tensor)
    values = mon.read()
    assert values["consensus/consensus_loss"] == pytest.approx(
        0.5 * (values["consensus/grad_sq_norm/generator"] + values["consensus/grad_sq_norm/discriminator"]))
    assert values["consensus/skipped_steps"] == 0
    assert values["dual/lam"] == pytest.approx([0.1, 0.2, 0.3])
    w = _Writer()
    mon.log(w, step=7)
    assert w.scalars["consensus/reg_grad_norm"][1] == 7 and "dual/lam" in w.hists
    assert "consensus/consensus_loss=" in mon.format()
    with pytest.raises(TypeError, match="monitor_stats"):
        gameopt.Monitor(bad=object())


def test_summary_iterative_matches_exact_on_quadratic_game():
    closure, players, J = quadratic_game(20, 18, seed=3)
    field = GameField(closure, players)
    exact = field.summary()
    approx = field.summary(k=4, tol=1e-10)
    assert approx.max_modulus == pytest.approx(exact.max_modulus, rel=1e-8)
    assert approx.min_real == pytest.approx(exact.min_real, rel=1e-6, abs=1e-9)
    assert approx.max_step == pytest.approx(exact.max_step, rel=1e-6)
    lam = np.linalg.eigvals(J.numpy())
    assert exact.min_real == pytest.approx(lam.real.min())


# ------------------------------------------------ issue 11: non-finite games and spectra
_NONFINITE_GAMES = r'''
import sys, torch
from gameopt.diagnostics import GameField
torch.manual_seed(0)
x = torch.nn.Parameter(torch.randn(12, dtype=torch.float64))
y = torch.nn.Parameter(torch.randn(12, dtype=torch.float64))
x0 = torch.nn.Parameter(torch.zeros(12, dtype=torch.float64))

games = {
    # NaN loss (and so NaN field)
    "nan_loss": (lambda: ((x * y).sum() * float("nan") + (x * x).sum(), -(x * y).sum()), [[x], [y]]),
    # finite losses, infinite gradient: d sqrt|x| / dx at 0
    "inf_field": (lambda: (x0.abs().sqrt().sum() + (x0 * y).sum(), -(x0 * y).sum()), [[x0], [y]]),
    # finite losses and field, undefined second derivative: |x|^1.5 at 0
    "nan_jacobian": (lambda: ((x0.abs() ** 1.5).sum() + (x0 * y).sum(), -(x0 * y).sum()), [[x0], [y]]),
}
for name, (closure, players) in games.items():
    for how in ("dense", "arpack", "summary", "summary_k"):
        field = GameField(closure, players)
        try:
            if how == "dense":
                field.eigenvalues()
            elif how == "arpack":
                field.eigenvalues(k=3)
            elif how == "summary":
                field.summary()
            else:
                field.summary(k=2)
            print(name, how, "NO ERROR")
        except Exception as e:
            print(name, how, type(e).__name__, str(e).replace("\n", " "))
'''


def test_nonfinite_game_raises_before_lapack_or_arpack_sees_it():
    # run in a child: before the fix LAPACK aborted the whole process ("free(): invalid pointer")
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _NONFINITE_GAMES], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 12, out.stdout
    want = {"nan_loss": "NaN or inf loss for player(s) [0]", "inf_field": "update field F has",
            "nan_jacobian": "NaN/inf entries"}
    for line in lines:
        name = line.split()[0]
        assert "GameInputError" in line and want[name] in line, line
    assert any("nan_jacobian dense" in line and "dense Jacobian" in line for line in lines)
    assert any("nan_jacobian arpack" in line and "Jacobian-vector product" in line for line in lines)


@pytest.mark.parametrize("bad", [np.nan, np.inf, complex(np.nan, 1.0), complex(1.0, np.inf)])
def test_max_stable_step_and_summary_refuse_nonfinite_eigenvalues(bad):
    lam = np.array([0.5 + 2j, 0.5 - 2j, bad])
    with pytest.raises(gameopt.GameInputError, match="1 of 3 eigenvalues are NaN or inf"):
        max_stable_step(lam)
    with pytest.raises(gameopt.GameInputError, match="NaN or inf"):
        summarize_spectrum(lam)
    # the finite ones alone still give Lemma 4's bound
    assert max_stable_step(lam[:2]) == pytest.approx(2 * 0.5 / (0.25 + 4))
