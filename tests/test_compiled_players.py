"""Players wrapped in torch.compile: the consensus term needs double backward, which
AOTAutograd's compiled backward lacks; gameopt names the route that works."""

import os

import pytest
import torch

import gameopt
from conftest import TinyGAN

os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")


def _mlp(sizes, seed):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers[:-1])


def _compiled_gan(backend):
    torch._dynamo.reset()
    gan = TinyGAN(seed=1, dtype=torch.float32)
    gan.G = torch.compile(_mlp([3, 16, 16, 2], 1), backend=backend)
    gan.D = torch.compile(_mlp([2, 16, 16, 1], 2), backend=backend)
    return gan


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_players_with_gamma_get_an_error_naming_the_working_route(backend):
    # aot_eager: "does not support double backward"; inductor: the "donated buffers" check
    gan = _compiled_gan(backend)
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), gamma=1.0, lr=0.1)
    with pytest.raises(RuntimeError, match=r"(?s)torch.compile.*ConsensusOptimizer\(\.\.\., compile=True\).*step\(closure\)"):
        opt.backward(*gan.losses())
    assert all(p.grad is None for ps in gan.params() for p in ps)


def test_compiled_players_work_without_the_regulariser():
    gan = _compiled_gan("aot_eager")
    ref = TinyGAN(seed=1, dtype=torch.float32)
    ref.G, ref.D = _mlp([3, 16, 16, 2], 1), _mlp([2, 16, 16, 1], 2)
    for g in (gan, ref):
        opt = gameopt.SimultaneousOptimizer(torch.optim.SGD, *g.params(), lr=0.1)
        for _ in range(2):
            opt.zero_grad()
            opt.backward(*g.losses())
            opt.step()
    for a, b in zip(gan.G.parameters(), ref.G.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
