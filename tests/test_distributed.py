"""ConsensusOptimizer(distributed=True) over 2 gloo processes equals one process on the full batch."""

import os

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


def _train(gan, opt, rank, world, nan_at=None):
    for step in range(STEPS):
        z, x = _batches(step)
        share = BATCH // world
        gan.z, gan.x = z[rank * share:(rank + 1) * share], x[rank * share:(rank + 1) * share]
        poison = nan_at == step and rank == world - 1

        def losses():
            lg, ld = gan.losses()
            return (lg * float("nan"), ld) if poison else (lg, ld)

        if isinstance(opt, gameopt.AlternatingOptimizer):
            opt.step(losses)
            continue
        opt.zero_grad()
        opt.backward(*losses())
        opt.step()


def _optimizer(gan, kind, distributed):
    if kind == "simga":
        return gameopt.SimultaneousOptimizer(torch.optim.Adam, *gan.params(), lr=1e-2, distributed=distributed)
    if kind.startswith("altga"):
        return gameopt.AlternatingOptimizer(torch.optim.Adam, *gan.params(), disc_steps=2, lr=1e-2,
                                            distributed=distributed)
    return gameopt.ConsensusOptimizer(torch.optim.Adam, *gan.params(), gamma=2.0, lr=1e-2, distributed=distributed)


def _worker(rank, world, init_file, out_dir, kind):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        gan = TinyGAN(seed=21)
        if kind == "warn":  # several ranks, distributed=False: a warning, not a silent per-rank step
            with pytest.warns(UserWarning, match="distributed=True"):
                gameopt.ConsensusOptimizer(torch.optim.Adam, *gan.params(), lr=1e-2)
            with pytest.warns(UserWarning, match="distributed=True"):
                gameopt.AlternatingOptimizer(torch.optim.Adam, *gan.params(), lr=1e-2)
            with pytest.warns(UserWarning, match="distributed=True"):
                gameopt.PrimalDualRegularizer("js")
            with pytest.warns(UserWarning, match="distributed=True"):
                gameopt.TrustRegionDualDiscriminator(gan.D, model="cost")
            torch.save({"params": [], "skipped": 0}, os.path.join(out_dir, f"rank{rank}.pt"))
            return
        if kind == "ddp":   # DDP-wrapped players: DDP broadcasts rank 0's weights, gameopt reduces
            from torch.nn.parallel import DistributedDataParallel as DDP
            if rank == 1:   # a different start on rank 1, which DDP's broadcast must overwrite
                with torch.no_grad():
                    for p in list(gan.G.parameters()) + list(gan.D.parameters()):
                        p.add_(1.0)
            gan.G, gan.D = DDP(gan.G), DDP(gan.D)
        opt = _optimizer(gan, kind, distributed=True)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _train(gan, opt, rank, world, nan_at=1 if kind.endswith("nan") else None)
        params = [p.detach() for p in list(gan.G.parameters()) + list(gan.D.parameters())]
        torch.save({"params": params, "skipped": opt.skipped_steps}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _run(kind):
    return spawn_ranks(_worker, kind)


@pytest.mark.parametrize("kind", ["plain", "ddp", "simga", "altga"])
def test_two_ranks_equal_one_process_on_the_full_batch(kind):
    results = _run(kind)
    gan = TinyGAN(seed=21)
    opt = _optimizer(gan, kind, distributed=False)
    _train(gan, opt, rank=0, world=1)
    single = [p.detach() for p in list(gan.G.parameters()) + list(gan.D.parameters())]
    for res in results:
        for a, b in zip(res["params"], single):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    for a, b in zip(results[0]["params"], results[1]["params"]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["nan", "altga_nan"])
def test_nan_on_one_rank_makes_every_rank_skip(kind):
    results = _run(kind)
    assert [r["skipped"] for r in results] == [1, 1]
    for a, b in zip(results[0]["params"], results[1]["params"]):
        assert torch.equal(a, b)


def test_several_ranks_without_distributed_warn():
    _run("warn")   # each rank asserts the warning; a missing one fails its process


def test_distributed_needs_a_process_group():
    gan = TinyGAN()
    with pytest.raises(ValueError, match="init_process_group"):
        gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), lr=0.1, distributed=True)
    with pytest.raises(ValueError, match="init_process_group"):
        gameopt.AlternatingOptimizer(torch.optim.SGD, *gan.params(), lr=0.1, distributed=True)
