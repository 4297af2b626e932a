"""Property tests on bilinear games l_G = x^T A y, l_D = -x^T A y (methods.md section 1)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gameopt

SETTINGS = settings(max_examples=40, deadline=None)


def bilinear(n: int, seed: int, scale: float):
    rng = np.random.default_rng(seed)
    A = torch.tensor(rng.normal(size=(n, n)) * scale, dtype=torch.float64)
    x = torch.nn.Parameter(torch.tensor(rng.normal(size=n), dtype=torch.float64))
    y = torch.nn.Parameter(torch.tensor(rng.normal(size=n), dtype=torch.float64))
    return A, x, y


def jacobian(A: torch.Tensor) -> torch.Tensor:
    """v' for v = (A y, -A^T x)."""
    n, m = A.shape
    top = torch.cat([torch.zeros(n, n, dtype=A.dtype), A], 1)
    bottom = torch.cat([-A.T, torch.zeros(m, m, dtype=A.dtype)], 1)
    return torch.cat([top, bottom], 0)


def sgd_step(A, x, y, h, gamma, zero_sum_graph=False):
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, [x], [y], gamma=gamma, lr=h)
    opt.zero_grad()
    lg = x @ A @ y
    ld = -lg if zero_sum_graph else -(x @ A @ y)
    opt.backward(lg, ld)
    opt.step()
    return opt


@SETTINGS
@given(
    n=st.integers(1, 6), seed=st.integers(0, 10_000), h=st.floats(1e-3, 0.5),
    gamma=st.floats(0.0, 5.0), scale=st.floats(0.1, 2.0), zero_sum_graph=st.booleans(),
)
def test_one_step_equals_closed_form(n, seed, h, gamma, scale, zero_sum_graph):
    A, x, y = bilinear(n, seed, scale)
    z = torch.cat([x.detach(), y.detach()])
    J = jacobian(A)
    expected = (torch.eye(2 * n, dtype=A.dtype) - h * (J + gamma * J.T @ J)) @ z
    sgd_step(A, x, y, h, gamma, zero_sum_graph)
    got = torch.cat([x.detach(), y.detach()])
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def singular_start(A, k, a, b):
    U, S, Vh = torch.linalg.svd(A)
    return U[:, k] * a, Vh[k] * b, S[k].item()


@SETTINGS
@given(
    n=st.integers(1, 6), seed=st.integers(0, 10_000), h=st.floats(1e-3, 0.5),
    k=st.integers(0, 5), a=st.floats(-2, 2), b=st.floats(-2, 2),
)
def test_simga_norm_grows_by_closed_form_factor(n, seed, h, k, a, b):
    k = k % n
    if abs(a) + abs(b) < 1e-3:
        a = 1.0
    A, x, y = bilinear(n, seed, 1.0)
    x0, y0, sigma = singular_start(A, k, a, b)
    with torch.no_grad():
        x.copy_(x0)
        y.copy_(y0)
    before = torch.cat([x, y]).norm().item()
    sgd_step(A, x, y, h, gamma=0.0)
    after = torch.cat([x, y]).norm().item()
    assert after / before == pytest.approx(math.sqrt(1 + h * h * sigma * sigma), rel=1e-10)
    assert after > before or sigma * h < 1e-7


@SETTINGS
@given(
    n=st.integers(1, 5), seed=st.integers(0, 10_000), h=st.floats(1e-3, 1.0),
    gamma=st.floats(0.0, 20.0), k=st.integers(0, 4),
)
def test_consensus_contracts_exactly_when_methods_md_says(n, seed, h, gamma, k):
    k = k % n
    A, x, y = bilinear(n, seed, 1.0)
    x0, y0, sigma = singular_start(A, k, 0.7, -0.4)
    with torch.no_grad():
        x.copy_(x0)
        y.copy_(y0)
    factor = math.sqrt((1 - h * gamma * sigma**2) ** 2 + h * h * sigma**2)
    norms = [torch.cat([x, y]).norm().item()]
    for _ in range(3):
        sgd_step(A, x, y, h, gamma)
        norms.append(torch.cat([x, y]).norm().item())
    ratios = [b / a for a, b in zip(norms, norms[1:])]
    for r in ratios:
        assert r == pytest.approx(factor, rel=1e-9, abs=1e-12)
    contracts = (1 - h * gamma * sigma**2) ** 2 + h * h * sigma**2 < 1
    if abs(factor - 1) > 1e-9:
        assert (norms[-1] < norms[0]) == contracts


def test_consensus_converges_where_simga_diverges():
    A, x, y = bilinear(4, 0, 1.0)
    x2, y2 = (torch.nn.Parameter(t.detach().clone()) for t in (x, y))
    sim = gameopt.SimultaneousOptimizer(torch.optim.SGD, [x], [y], lr=0.05)
    con = gameopt.ConsensusOptimizer(torch.optim.SGD, [x2], [y2], gamma=1.0, lr=0.05)
    start = torch.cat([x, y]).norm().item()
    for _ in range(300):
        for opt, (a, b) in ((sim, (x, y)), (con, (x2, y2))):
            opt.zero_grad()
            lg = a @ A @ b
            opt.backward(lg, -lg)
            opt.step()
    assert torch.cat([x, y]).norm().item() > 2 * start
    assert torch.cat([x2, y2]).norm().item() < 0.2 * start
