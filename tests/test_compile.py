"""ConsensusOptimizer(compile=True): the compiled step(closure) path matches eager."""

import os

import pytest
import torch

import gameopt
from conftest import TinyGAN

os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
pytestmark = pytest.mark.skipif(
    not hasattr(torch._dynamo.config, "trace_autograd_ops"),
    reason="this torch cannot trace autograd.grad under torch.compile",
)


def test_compiled_closure_steps_match_eager():
    gans = [TinyGAN(seed=11, dtype=torch.float32) for _ in range(2)]
    opts = [
        gameopt.ConsensusOptimizer(torch.optim.Adam, *g.params(), gamma=3.0, lr=1e-2, compile=c)
        for g, c in zip(gans, (False, True))
    ]
    for step in range(4):
        for g in gans:
            torch.manual_seed(step)
            g.z = torch.randn_like(g.z)
        losses = [opt.step(g.losses) for g, opt in zip(gans, opts)]
        torch.testing.assert_close(losses[0][0], losses[1][0], rtol=1e-5, atol=1e-6)
        for name in ("generator", "discriminator"):
            torch.testing.assert_close(
                opts[0].stats.grad_sq_norm[name], opts[1].stats.grad_sq_norm[name], rtol=1e-4, atol=1e-7
            )
    assert opts[1]._shared.compiled_core is not None
    for a, b in zip(gans[0].G.parameters(), gans[1].G.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(gans[0].D.parameters(), gans[1].D.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_compile_rejects_unbiased():
    g = TinyGAN()
    with pytest.raises(ValueError, match="compile=True does not support unbiased"):
        gameopt.ConsensusOptimizer(torch.optim.SGD, *g.params(), lr=0.1, compile=True, unbiased=True)
