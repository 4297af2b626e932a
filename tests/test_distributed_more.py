"""PrimalDualRegularizer and TrustRegionDualDiscriminator over 2 gloo processes equal one process.

Each test trains a few steps in float64 on 2 ranks, each with its half of every batch,
and compares the parameters with one process on the whole batch.
"""

import os
import warnings

import pytest
import torch
import torch.distributed as dist

import gameopt
from conftest import mlp, spawn_ranks

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")

STEPS = 3
BATCH = 8


def _batches(step):
    g = torch.Generator().manual_seed(300 + step)
    z = torch.randn(BATCH, 3, generator=g, dtype=torch.float64)
    x = torch.randn(BATCH, 2, generator=g, dtype=torch.float64) + 1.0
    return z, x


def _share(t, rank, world):
    n = t.shape[0] // world
    return t[rank * n:(rank + 1) * n]


def _primal_dual(rank, world, distributed, gather=True):
    """Consensus (gamma > 0: double backward through the gather) on the regularised GAN."""
    G, D = mlp([3, 8, 2], 5), mlp([2, 8, 1], 6)
    reg = gameopt.PrimalDualRegularizer("js", alpha=2.0, bandwidth=0.7, distributed=distributed and gather)
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, list(G.parameters()), list(D.parameters()),
                                     gamma=0.5, lr=0.05, distributed=distributed)
    for step in range(STEPS):
        z, x = (_share(t, rank, world) for t in _batches(step))
        fake = G(z)
        d_fake, d_real = D(fake), D(x)
        lg = reg.divergence.generator_loss(d_fake) + reg(x, fake, d_real)
        ld = reg.divergence.discriminator_loss(d_real, d_fake)
        opt.zero_grad()
        opt.backward(lg, ld)
        opt.step()
        reg.step()
    return list(G.parameters()) + list(D.parameters())


def _dual(model):
    def run(rank, world, distributed):
        torch.manual_seed(9)
        if model == "linear":
            anchors = torch.randn(6, 2, dtype=torch.float64) + 1.0
            module = gameopt.RBFFeatures(anchors, bandwidth=1.0, bias=True)
        else:
            module = mlp([2, 6, 1], 7)
        disc = gameopt.TrustRegionDualDiscriminator(module, model=model, C=1e-2, delta=1e-2,
                                                    distributed=distributed)
        G = mlp([3, 6, 2], 8)
        opt = torch.optim.SGD(G.parameters(), lr=0.1)
        deltas = []
        for step in range(STEPS):
            z, x = (_share(t, rank, world) for t in _batches(step))
            disc.step(x, G(z).detach())
            deltas.append(disc.delta)
            opt.zero_grad()
            disc.generator_loss(x, G(z)).backward()
            if distributed:  # the usual data-parallel mean of the generator's gradients
                for p in G.parameters():
                    dist.all_reduce(p.grad)
                    p.grad /= world
            opt.step()
        return list(G.parameters()) + disc.parameters() + [torch.tensor(deltas, dtype=torch.float64)]
    return run


def _mismatch(rank, world, distributed):
    """Rank 1 passes one sample fewer: every rank must raise (none may hang in a collective)."""
    reg = gameopt.PrimalDualRegularizer("js", distributed=distributed)
    x = torch.randn(4 - rank, 2, dtype=torch.float64)
    try:
        reg(x, x.clone().requires_grad_(), torch.zeros(4 - rank, dtype=torch.float64))
    except gameopt.GameInputError as e:
        assert "same shapes" in str(e)
        return [torch.ones(1)]
    return [torch.zeros(1)]


def _nan_dual(model):
    def run(rank, world, distributed):
        disc = gameopt.TrustRegionDualDiscriminator(mlp([2, 6, 1], 7), model=model, distributed=distributed)
        before = [p.detach().clone() for p in disc.parameters()]
        x = torch.randn(4, 2, dtype=torch.float64)
        fake = x * float("nan") if rank == 1 else x + 1
        try:
            disc.step(x, fake)
        except ValueError as e:
            assert "NaN" in str(e)
            assert all(torch.equal(a, b) for a, b in zip(before, disc.parameters()))
            return [torch.ones(1)]
        return [torch.zeros(1)]
    return run


CASES = {
    "primal_dual": _primal_dual,
    "primal_dual_local": lambda rank, world, distributed: _primal_dual(rank, world, distributed, False),
    "linear": _dual("linear"),
    "cost": _dual("cost"),
    "score": _dual("score"),
    "mismatch": _mismatch,
    "nan_cost": _nan_dual("cost"),
    "nan_score": _nan_dual("score"),
}


def _worker(rank, world, init_file, out_dir, kind):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params = CASES[kind](rank, world, True)
        torch.save([p.detach() for p in params], os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _run(kind):
    return spawn_ranks(_worker, kind)


@pytest.mark.parametrize("kind", ["primal_dual", "linear", "cost", "score"])
def test_two_ranks_equal_one_process(kind):
    results = _run(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = [p.detach() for p in CASES[kind](0, 1, False)]
    for a, b, c in zip(results[0], results[1], single):
        assert torch.equal(a, b)  # the replicas stay bitwise in sync
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)


def test_per_rank_kernel_density_differs():
    """Without the gather each rank's density sees only its own samples: not the full-batch step."""
    results = _run("primal_dual_local")
    single = [p.detach() for p in _primal_dual(0, 1, False)]
    assert max(float((a - c).abs().max()) for a, c in zip(results[0], single)) > 1e-6


def test_unequal_shares_raise_on_every_rank():
    results = _run("mismatch")
    assert [float(r[0]) for r in results] == [1.0, 1.0]


def test_distributed_needs_a_process_group():
    with pytest.raises(gameopt.GameInputError, match="init_process_group"):
        gameopt.PrimalDualRegularizer("js", distributed=True)
    with pytest.raises(gameopt.GameInputError, match="init_process_group"):
        gameopt.TrustRegionDualDiscriminator(mlp([2, 4, 1], 0), model="score", distributed=True)


@pytest.mark.parametrize("model", ["cost", "score"])
def test_nan_on_one_rank_raises_on_every_rank(model):
    """One rank's NaN batch: every rank refuses the step (none hangs, none steps alone)."""
    results = _run(f"nan_{model}")
    assert [float(r[0]) for r in results] == [1.0, 1.0]
