"""Extragradient, optimistic, SGA, lookahead and lazy consensus with distributed=True over 2 gloo processes
equal one process on the full batch; a NaN on one rank makes every rank skip."""

import os
import warnings

import pytest
import torch
import torch.distributed as dist

import gameopt
from conftest import TinyGAN, spawn_ranks

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")

STEPS = 4
BATCH = 8
KINDS = ["extragradient", "optimistic", "sga", "la_extragradient", "lazy_consensus"]


def _optimizer(gan, kind, distributed):
    gp, dp = gan.params()
    kw = {"lr": 1e-2, "distributed": distributed}
    if kind == "extragradient":
        return gameopt.ExtragradientOptimizer(torch.optim.Adam, gp, dp, **kw)
    if kind == "optimistic":
        return gameopt.OptimisticOptimizer(torch.optim.Adam, gp, dp, **kw)
    if kind == "sga":
        return gameopt.SGAOptimizer(torch.optim.Adam, gp, dp, lam=0.5, **kw)
    if kind == "lazy_consensus":
        return gameopt.ConsensusOptimizer(torch.optim.Adam, gp, dp, gamma=0.5, every=2, **kw)
    return gameopt.LookaheadMinmax(gameopt.ExtragradientOptimizer(torch.optim.Adam, gp, dp, **kw), k=3)


def _train(kind, rank, world, distributed, nan_at=None):
    gan = TinyGAN(seed=21)
    opt = _optimizer(gan, kind, distributed)
    for step in range(STEPS):
        g = torch.Generator().manual_seed(100 + step)
        z = torch.randn(BATCH, 3, generator=g, dtype=torch.float64)
        x = torch.randn(BATCH, 2, generator=g, dtype=torch.float64)
        share = BATCH // world
        gan.z, gan.x = z[rank * share:(rank + 1) * share], x[rank * share:(rank + 1) * share]
        poison = nan_at == step and rank == world - 1

        def losses():
            lg, ld = gan.losses()
            return (lg * float("nan"), ld) if poison else (lg, ld)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.step(losses)
    return [p.detach() for p in list(gan.G.parameters()) + list(gan.D.parameters())], opt.skipped_steps


def _worker(rank, world, init_file, out_dir, mode):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        out = {kind: _train(kind, rank, world, True, nan_at=1 if mode == "nan" else None) for kind in KINDS}
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_one_process_on_the_full_batch():
    results = spawn_ranks(_worker, "plain")
    for kind in KINDS:
        single, _ = _train(kind, 0, 1, distributed=False)
        for res in results:
            for a, b in zip(res[kind][0], single):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13, msg=kind)
        for a, b in zip(results[0][kind][0], results[1][kind][0]):
            assert torch.equal(a, b), kind


def test_nan_on_one_rank_makes_every_rank_skip():
    results = spawn_ranks(_worker, "nan")
    for kind in KINDS:
        assert [r[kind][1] for r in results] == [1, 1], kind
        for a, b in zip(results[0][kind][0], results[1][kind][0]):
            assert torch.equal(a, b), kind
