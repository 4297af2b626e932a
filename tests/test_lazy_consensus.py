"""ConsensusOptimizer(every=k): lazy regularisation, the correction every k-th step scaled by k."""

import copy
import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gameopt
from conftest import TinyGAN


def _jacobian(A):
    n, m = A.shape
    top = torch.cat([torch.zeros(n, n, dtype=A.dtype), A], 1)
    bottom = torch.cat([-A.T, torch.zeros(m, m, dtype=A.dtype)], 1)
    return torch.cat([top, bottom], 0)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), seed=st.integers(0, 10_000), h=st.floats(1e-3, 0.3),
       gamma=st.floats(0.0, 3.0), every=st.integers(1, 4))
def test_lazy_steps_are_the_closed_form(n, seed, h, gamma, every):
    """Step t applies I - h (J + every * gamma J^T J) when t % every == 0, else I - h J."""
    rng = np.random.default_rng(seed)
    A = torch.tensor(rng.normal(size=(n, n)), dtype=torch.float64)
    x = torch.nn.Parameter(torch.tensor(rng.normal(size=n)))
    y = torch.nn.Parameter(torch.tensor(rng.normal(size=n)))
    J = _jacobian(A)
    eye = torch.eye(2 * n, dtype=torch.float64)
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, [x], [y], gamma=gamma, every=every, lr=h)
    z = torch.cat([x.detach(), y.detach()])
    for t in range(2 * every + 1):
        factor = every if t % every == 0 else 0
        z = (eye - h * (J + factor * gamma * J.T @ J)) @ z
        opt.zero_grad()
        lg = x @ A @ y
        opt.backward(lg, -lg)
        opt.step()
        torch.testing.assert_close(torch.cat([x.detach(), y.detach()]), z, rtol=1e-12, atol=1e-12)


def test_every_one_is_the_default_and_plain_steps_have_no_correction():
    gans = [TinyGAN(seed=1) for _ in range(3)]
    opts = [gameopt.ConsensusOptimizer(torch.optim.Adam, *gans[0].params(), gamma=2.0, lr=1e-2),
            gameopt.ConsensusOptimizer(torch.optim.Adam, *gans[1].params(), gamma=2.0, every=1, lr=1e-2),
            gameopt.ConsensusOptimizer(torch.optim.Adam, *gans[2].params(), gamma=2.0, every=3, lr=1e-2)]
    norms = []
    for _ in range(4):
        for gan, opt in zip(gans, opts):
            opt.step(gan.losses)
        norms.append(opts[2].stats.reg_grad_norm.item())
    for a, b in zip(gans[0].G.parameters(), gans[1].G.parameters()):
        assert torch.equal(a, b)
    assert norms[0] > 0 and norms[1] == 0 and norms[2] == 0 and norms[3] > 0


def test_resume_mid_period_is_bit_identical():
    def run(gan, opt, steps, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            gan.z = torch.randn(gan.z.shape, generator=g, dtype=gan.z.dtype)
            gan.x = torch.randn(gan.x.shape, generator=g, dtype=gan.x.dtype)
            opt.step(gan.losses)

    gan = TinyGAN(seed=2, dtype=torch.float32)
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, *gan.params(), gamma=1.0, every=3, lr=1e-2)
    run(gan, opt, 2, 0)
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "G": gan.G.state_dict(), "D": gan.D.state_dict()}, buf)
    run(gan, opt, 4, 1)
    buf.seek(0)
    ckpt = torch.load(buf)
    assert ckpt["opt"]["gameopt"]["every"] == 3 and ckpt["opt"]["gameopt"]["lazy_calls"] == 2
    gan2 = TinyGAN(seed=5, dtype=torch.float32)
    gan2.G.load_state_dict(ckpt["G"])
    gan2.D.load_state_dict(ckpt["D"])
    opt2 = gameopt.ConsensusOptimizer(torch.optim.Adam, *gan2.params(), gamma=1.0, every=3, lr=1e-2)
    opt2.load_state_dict(ckpt["opt"])
    run(gan2, opt2, 4, 1)
    for a, b in zip(list(gan.G.parameters()) + list(gan.D.parameters()),
                    list(gan2.G.parameters()) + list(gan2.D.parameters())):
        assert torch.equal(a, b)


def test_bad_every_is_refused():
    gan = TinyGAN()
    for bad in (0, -2, 1.5, True, "4"):
        with pytest.raises(gameopt.GameInputError, match="every must be an integer >= 1"):
            gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), every=bad, lr=0.1)
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), every=2, lr=0.1)
    opt.step(gan.losses)
    for key, value in (("every", 0), ("lazy_calls", -1), ("lazy_calls", 1.5)):
        sd = copy.deepcopy(opt.state_dict())
        sd["gameopt"][key] = value
        with pytest.raises(gameopt.GameInputError, match=key):
            opt.load_state_dict(sd)
        assert opt.every == 2 and opt._shared.lazy_calls == 1


@pytest.mark.skipif(not hasattr(torch._dynamo.config, "trace_autograd_ops"), reason="needs trace_autograd_ops")
def test_compiled_lazy_steps_match_eager():
    import os
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    gans = [TinyGAN(seed=11, dtype=torch.float32) for _ in range(2)]
    opts = [gameopt.ConsensusOptimizer(torch.optim.Adam, *g.params(), gamma=3.0, every=2, lr=1e-2, compile=c)
            for g, c in zip(gans, (False, True))]
    for _ in range(4):
        for g, opt in zip(gans, opts):
            opt.step(g.losses)
        assert opts[0]._shared.lazy_calls == opts[1]._shared.lazy_calls
    for a, b in zip(gans[0].G.parameters(), gans[1].G.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
