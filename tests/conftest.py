import pytest
import torch
import torch.nn.functional as F


def mlp(sizes, seed, dtype=torch.float64):
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers).to(dtype)


class TinyGAN:
    """A small MLP GAN with fixed data, for gradient comparisons."""

    def __init__(self, seed=0, dtype=torch.float64, batch=8):
        self.G = mlp([3, 8, 2], seed, dtype)
        self.D = mlp([2, 8, 1], seed + 1, dtype)
        g = torch.Generator().manual_seed(seed + 2)
        self.z = torch.randn(batch, 3, generator=g, dtype=dtype)
        self.x = torch.randn(batch, 2, generator=g, dtype=dtype)

    def losses(self, kind="nonsat", per_example=False):
        fake = self.G(self.z)
        d_fake = self.D(fake).squeeze(1)
        d_real = self.D(self.x).squeeze(1)
        if kind == "zerosum":
            ld = F.softplus(-d_real) + F.softplus(d_fake)
            lg = -ld
        elif kind == "nonsat":  # the discriminator's loss sees the generator (no detach)
            lg = F.softplus(-d_fake)
            ld = F.softplus(-d_real) + F.softplus(d_fake)
        else:  # "nonsat_detached": the usual torch idiom, which hides D's dependence on G
            lg = F.softplus(-d_fake)
            ld = F.softplus(-d_real) + F.softplus(self.D(fake.detach()).squeeze(1))
        if per_example:
            return lg, ld
        return lg.mean(), ld.mean()

    def params(self):
        return list(self.G.parameters()), list(self.D.parameters())


@pytest.fixture(scope="module")
def one_thread():
    """The test machines are small and shared: train and evaluate on one thread (a module uses it
    with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_gan():
    return TinyGAN()


def _rank_main(rank, worker, *args):
    """Run one rank's ``worker``, then end the process without finalising the interpreter.

    A rank that exits right after its last gloo collective can abort in finalisation (SIGABRT,
    "terminate called without an active exception"): gloo's worker thread is still freeing the
    collective's tensors and needs the GIL (torch 2.13; see ``exit_rank`` in
    benchmarks/distributed_cost/distributed_cost.py). Its results are saved by then, so skip it.
    An exception still propagates and fails the spawn.
    """
    import os
    import sys

    worker(rank, *args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def spawn_ranks(worker, kind, world=2):
    """Run ``worker(rank, world, init_file, out_dir, kind)`` in ``world`` processes; each saves
    ``out_dir/rank{r}.pt``, returned in rank order.

    One retry: about 1 run in 40 lost a child process on a busy 2-core machine (at least part of
    that was the exit abort :func:`_rank_main` now avoids). The computations are deterministic, so a
    real bug fails both tries.
    """
    import os
    import tempfile

    import torch.multiprocessing as mp

    for attempt in range(2):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                mp.spawn(_rank_main, args=(worker, world, os.path.join(tmp, "init"), tmp, kind), nprocs=world,
                         join=True)
            except (mp.ProcessRaisedException, mp.ProcessExitedException):
                if attempt == 1:
                    raise
                continue
            return [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(world)]
