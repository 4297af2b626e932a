"""GradientPenalty under torch.distributed (2 gloo processes): the penalty is a per-sample mean,
so the ranks' averaged gradients on equal shares are one process's on the full batch, whether
they are averaged by hand, by DistributedDataParallel, or by a gameopt optimiser."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

import gameopt
from conftest import TinyGAN, spawn_ranks

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")

BATCH, STEPS = 8, 3


def _batches(step):
    g = torch.Generator().manual_seed(300 + step)
    return torch.randn(BATCH, 3, generator=g, dtype=torch.float64), torch.randn(BATCH, 2, generator=g, dtype=torch.float64)


def _penalised_losses(gan, r1, r2):
    fake = gan.G(gan.z)
    d_fake = gan.D(fake).squeeze(1)
    disc = F.softplus(-gan.D(gan.x)).mean() + F.softplus(d_fake).mean()
    return F.softplus(-d_fake).mean(), disc + r1(gan.D, real=gan.x) + r2(gan.D, fake=fake)


def _d_grads(gan, r1, r2, rank, world, reduce):
    """One penalised discriminator backward on this rank's share; D's gradients, averaged if ``reduce``."""
    z, x = _batches(0)
    share = BATCH // world
    gan.z, gan.x = z[rank * share:(rank + 1) * share], x[rank * share:(rank + 1) * share]
    gan.D.zero_grad()
    _penalised_losses(gan, r1, r2)[1].backward()
    grads = [p.grad for p in gan.D.parameters()]
    if reduce:
        grads = gameopt.distributed.all_reduce_mean(grads)
    return [g.detach().clone() for g in grads]


def _train(gan, r1, r2, rank, world):
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, *gan.params(), gamma=0.5, lr=1e-2,
                                     distributed=world > 1)
    for step in range(STEPS):
        z, x = _batches(step)
        share = BATCH // world
        gan.z, gan.x = z[rank * share:(rank + 1) * share], x[rank * share:(rank + 1) * share]
        opt.step(lambda: _penalised_losses(gan, r1, r2))
    return [p.detach().clone() for ps in gan.params() for p in ps]


def _penalties():
    return gameopt.GradientPenalty("r1", gamma=2.0), gameopt.GradientPenalty("r2", gamma=0.5, every=2)


def _worker(rank, world, init_file, out_dir, kind):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        out = {"allreduce": _d_grads(TinyGAN(seed=4), *_penalties(), rank, world, reduce=True)}
        from torch.nn.parallel import DistributedDataParallel as DDP
        gan = TinyGAN(seed=4)
        gan.D = DDP(gan.D)
        out["ddp"] = _d_grads(gan, *_penalties(), rank, world, reduce=False)   # DDP averages in backward
        out["consensus"] = _train(TinyGAN(seed=4), *_penalties(), rank, world)
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_one_process_on_the_full_batch():
    """Averaged by hand, by DDP, and by ConsensusOptimizer(distributed=True) over 3 steps (lazy R2 included)."""
    results = spawn_ranks(_worker, "all")
    single = {
        "allreduce": _d_grads(TinyGAN(seed=4), *_penalties(), rank=0, world=1, reduce=False),
        "consensus": _train(TinyGAN(seed=4), *_penalties(), rank=0, world=1),
    }
    single["ddp"] = single["allreduce"]
    for res in results:
        for kind, want in single.items():
            assert len(res[kind]) == len(want)
            for a, b in zip(res[kind], want):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
