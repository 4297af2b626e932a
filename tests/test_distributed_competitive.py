"""CompetitiveOptimizer(distributed=True) over 2 gloo processes equals one process on the full batch."""

import os
import warnings

import pytest
import torch
import torch.distributed as dist

import gameopt
from conftest import TinyGAN, spawn_ranks

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")

STEPS = 3
BATCH = 8


def _batches(step):
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(BATCH, 3, generator=g, dtype=torch.float64), torch.randn(BATCH, 2, generator=g, dtype=torch.float64)


def _optimizer(gan, kind, distributed):
    kw = {"adaptive": True, "warm_start": True} if kind.startswith("acgd") else {}
    return gameopt.CompetitiveOptimizer(*gan.params(), lr=0.05, tol=1e-10, max_iter=50, distributed=distributed, **kw)


def _train(gan, opt, rank, world, nan_at=None):
    iterations = []
    for step in range(STEPS):
        z, x = _batches(step)
        share = BATCH // world
        gan.z, gan.x = z[rank * share:(rank + 1) * share], x[rank * share:(rank + 1) * share]
        lg, ld = gan.losses("zerosum")
        if nan_at == step and rank == world - 1:
            lg, ld = lg * float("nan"), ld * float("nan")
        opt.zero_grad()
        stats = opt.backward(lg, ld)
        opt.step()
        iterations.append(int(stats.cg_iterations))
    return iterations


KINDS = ("cgd", "acgd", "acgd_nan")


def _worker(rank, world, init_file, out_dir, _):
    """Every case in one pair of processes (spawning costs more than the cases)."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    out = {}
    try:
        for kind in KINDS:
            gan = TinyGAN(seed=21)
            opt = _optimizer(gan, kind, distributed=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                iterations = _train(gan, opt, rank, world, nan_at=1 if kind.endswith("nan") else None)
            out[kind] = {"params": [p.detach() for p in list(gan.G.parameters()) + list(gan.D.parameters())],
                         "skipped": opt.skipped_steps, "iterations": iterations}
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks():
    return spawn_ranks(_worker, "all")


@pytest.mark.parametrize("kind", ["cgd", "acgd"])
def test_two_ranks_equal_one_process_on_the_full_batch(ranks, kind):
    results = [r[kind] for r in ranks]
    gan = TinyGAN(seed=21)
    opt = _optimizer(gan, kind, distributed=False)
    iterations = _train(gan, opt, rank=0, world=1)
    single = [p.detach() for p in list(gan.G.parameters()) + list(gan.D.parameters())]
    for res in results:
        assert res["iterations"] == iterations
        for a, b in zip(res["params"], single):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)
    for a, b in zip(results[0]["params"], results[1]["params"]):
        assert torch.equal(a, b)


def test_nan_on_one_rank_makes_every_rank_skip(ranks):
    results = [r["acgd_nan"] for r in ranks]
    assert [r["skipped"] for r in results] == [1, 1]
    for a, b in zip(results[0]["params"], results[1]["params"]):
        assert torch.equal(a, b)
