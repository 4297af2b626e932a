"""GradientPenalty with Hugging Face accelerate: prepared players and optimisers, the penalty in
the discriminator's loss, ``accelerator.backward``; equal to the plain loop (fp32), close under bf16."""

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState

import gameopt
from conftest import mlp

BATCH, LR = 16, 1e-2


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def flat(ts):
    return torch.cat([t.detach().reshape(-1) for t in ts])


def train(accelerator, steps=4):
    """R1 (lazy, every 2) + R2 on the discriminator, two Adam optimisers; accelerator None: the plain loop."""
    G, D = mlp([3, 8, 2], 0, torch.float32), mlp([2, 8, 1], 1, torch.float32)
    opt_g, opt_d = torch.optim.Adam(G.parameters(), lr=LR), torch.optim.Adam(D.parameters(), lr=LR)
    if accelerator is not None:
        G, D, opt_g, opt_d = accelerator.prepare(G, D, opt_g, opt_d)
    r1, r2 = gameopt.GradientPenalty("r1", gamma=5.0, every=2), gameopt.GradientPenalty("r2", gamma=1.0)
    g = torch.Generator().manual_seed(3)
    for _ in range(steps):
        x, z = torch.randn(BATCH, 2, generator=g) + 1, torch.randn(BATCH, 3, generator=g)
        fake = G(z)
        d_loss = F.softplus(-D(x)).mean() + F.softplus(D(fake.detach())).mean() + r1(D, real=x) + r2(D, fake=fake)
        opt_d.zero_grad()
        accelerator.backward(d_loss) if accelerator is not None else d_loss.backward()
        opt_d.step()
        g_loss = F.softplus(-D(G(z))).mean()
        opt_g.zero_grad()
        accelerator.backward(g_loss) if accelerator is not None else g_loss.backward()
        opt_g.step()
    return flat([*G.parameters(), *D.parameters()]), D


def test_prepared_players_train_like_the_plain_loop():
    got, D = train(Accelerator(cpu=True))
    assert torch.equal(got, train(None)[0])


def test_bf16_mixed_precision_tracks_fp32():
    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    got, D = train(accelerator, steps=3)
    want, _ = train(None, steps=3)
    start = flat([*mlp([3, 8, 2], 0, torch.float32).parameters(), *mlp([2, 8, 1], 1, torch.float32).parameters()])
    assert not torch.equal(got, want)   # accelerate's bf16 autocast was on
    assert float((got - want).norm()) < 0.05 * float((want - start).norm())
