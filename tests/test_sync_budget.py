"""Host-sync budgets of one training iteration, counted on the ``meta`` device (issue 21).

``SyncCounter`` counts host reads (``item``, ``nonzero``), device-to-host copies, blocking
host-to-device copies and tensors built on the host, with every parameter and batch on
``meta``: what a CUDA step would wait for. Budgets: one read per base step (0 with
``nonfinite="ignore"``), CompetitiveOptimizer 1 (at most 2), every dual discriminator step
at most 3, ``Monitor.read()`` one copy, a solver with ``sync_every=None`` none.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F

import gameopt
from gameopt.testing import SyncCounter

from conftest import mlp

META = torch.device("meta")


def _mlp(sizes, seed, device=META):
    return mlp(sizes, seed, torch.float32).to(device)


class MetaGAN:
    def __init__(self, device=META):
        self.G, self.D = _mlp([3, 8, 2], 0, device), _mlp([2, 8, 1], 1, device)
        self.z = torch.randn(8, 3).to(device)
        self.x = torch.randn(8, 2).to(device)

    def losses(self):
        fake = self.G(self.z)
        return (F.softplus(-self.D(fake)).mean(),
                F.softplus(-self.D(self.x)).mean() + F.softplus(self.D(fake)).mean())

    def zero_sum(self):
        fake = self.G(self.z)
        ld = F.softplus(-self.D(self.x)).mean() + F.softplus(self.D(fake)).mean()
        return -ld, ld

    def params(self):
        return list(self.G.parameters()), list(self.D.parameters())


def _optimizer(kind, gan, nonfinite):
    gp, dp = gan.params()
    A, kw = torch.optim.Adam, {"lr": 1e-3, "nonfinite": nonfinite}
    if kind == "consensus":
        return gameopt.ConsensusOptimizer(A, gp, dp, gamma=1.0, **kw)
    if kind == "simga":
        return gameopt.SimultaneousOptimizer(A, gp, dp, **kw)
    if kind == "altga":
        return gameopt.AlternatingOptimizer(A, gp, dp, **kw)
    if kind == "extragradient":
        return gameopt.ExtragradientOptimizer(A, gp, dp, **kw)
    if kind == "optimistic":
        return gameopt.OptimisticOptimizer(A, gp, dp, **kw)
    if kind == "sga":
        return gameopt.SGAOptimizer(A, gp, dp, lam=0.5, **kw)
    if kind == "lookahead":
        return gameopt.LookaheadMinmax(gameopt.ConsensusOptimizer(A, gp, dp, gamma=1.0, **kw), k=1)
    if kind == "cgd":
        return gameopt.CompetitiveOptimizer(gp, dp, **kw)
    return gameopt.CompetitiveOptimizer(gp, dp, adaptive=True, **kw)


#: (kind, base steps per step): AltGA and extragradient take two base steps.
BASE_STEPS = {"consensus": 1, "simga": 1, "altga": 2, "extragradient": 2, "optimistic": 1, "sga": 1,
              "lookahead": 1, "cgd": 1, "acgd": 1}


def _count_step(opt, closure):
    with SyncCounter():  # first step: state is created (also counted, not asserted)
        opt.step(closure)
    with SyncCounter(trace=True) as c:
        opt.step(closure)
    return c


@pytest.mark.parametrize("kind", list(BASE_STEPS))
@pytest.mark.parametrize("nonfinite", ["skip", "ignore"])
def test_game_optimiser_step_reads_at_most_once_per_base_step(kind, nonfinite):
    gan = MetaGAN()
    opt = _optimizer(kind, gan, nonfinite)
    c = _count_step(opt, gan.zero_sum if kind in ("cgd", "acgd") else gan.losses)
    budget = 0 if nonfinite == "ignore" else BASE_STEPS[kind]
    assert c.syncs <= budget, c.report()
    assert c.counts["host_tensor"] == 0, c.report()


def test_plain_two_adam_step_has_no_sync_the_baseline():
    gan = MetaGAN()
    og = torch.optim.Adam(gan.G.parameters(), lr=1e-3)
    od = torch.optim.Adam(gan.D.parameters(), lr=1e-3)

    def step():
        lg, ld = gan.losses()
        og.zero_grad(), od.zero_grad()
        ld.backward(retain_graph=True, inputs=list(gan.D.parameters()))
        lg.backward(inputs=list(gan.G.parameters()))
        og.step(), od.step()

    with SyncCounter():
        step()
    with SyncCounter() as c:
        step()
    assert c.syncs == 0, c.report()


def _dual(model, device=META, **kw):
    if model == "linear":
        torch.manual_seed(3)
        feats = gameopt.RBFFeatures(torch.randn(6, 2), 1.0).to(device)
        return gameopt.TrustRegionDualDiscriminator(feats, model="linear", C=1e-2, **kw)
    return gameopt.TrustRegionDualDiscriminator(_mlp([2, 8, 1], 1, device), model=model, C=1e-2, delta=1e-2, **kw)


@pytest.mark.parametrize("model", ["linear", "cost", "score"])
def test_dual_discriminator_step_reads_at_most_three_times(model):
    d = _dual(model)
    real, fake = torch.randn(8, 2).to(META), torch.randn(8, 2).to(META)
    with SyncCounter():
        d.step(real, fake)
    with SyncCounter(trace=True) as c:
        stats = d.step(real, fake)
    assert c.syncs <= 3, c.report()
    assert c.counts["host_tensor"] == 0 and c.counts["h2d"] == 0, c.report()
    assert stats.accepted and not stats.solver_failed


def test_monitor_read_is_one_device_to_host_copy():
    gan = MetaGAN()
    opt = _optimizer("consensus", gan, "skip")
    d = _dual("score")
    with SyncCounter():
        opt.step(gan.losses)
        d.step(torch.randn(8, 2).to(META), torch.randn(8, 2).to(META))
    mon = gameopt.Monitor(opt=opt, dual=d)
    with SyncCounter(trace=True) as c:
        out = mon.read()
    assert c.syncs == 1 and c.counts["d2h"] == 1, c.report()
    assert isinstance(out["opt/consensus_loss"] if "opt/consensus_loss" in out else 0.0, float)
    assert isinstance(out["dual/lam"], list) and len(out["dual/lam"]) == 8


def _kernel_problem(device=META, B=3, n=6):
    g = torch.Generator().manual_seed(0)
    J = torch.randn(B, 2 * n, 5, generator=g, dtype=torch.float64)
    K = (J @ J.transpose(-1, -2)).to(device)
    Jw = torch.randn(B, 2 * n, generator=g, dtype=torch.float64).to(device)
    Fk = torch.randn(B, 2 * n, generator=g, dtype=torch.float64).to(device)
    return K, Jw, Fk


@pytest.mark.parametrize("delta", [1e-2, float("inf")])
def test_solver_without_sync_never_reads(delta):
    K, Jw, Fk = _kernel_problem()
    slv = gameopt.solvers.TorchNewtonSolver(sync_every=None, max_iter=7)
    y = torch.ones(12, dtype=torch.float64, device=META)
    with SyncCounter(trace=True) as c:
        slv.solve_kernel(K, Fk * y, Jw * y, torch.ones(3, dtype=torch.float64, device=META),
                         torch.full((3,), 1e-2, dtype=torch.float64, device=META),
                         torch.full((3,), delta, dtype=torch.float64, device=META))
    assert c.syncs == 0 and c.counts["host_tensor"] == 0, c.report()


@pytest.mark.parametrize("sync_every", [None, 5])
def test_public_solves_read_at_most_three_times_plus_periodic_checks(sync_every):
    K, Jw, Fk = _kernel_problem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with SyncCounter(trace=True) as c:
            gameopt.solvers.solve_trust_region_dual(K, Jw, Fk, 1.0, 1e-2, 1e-2, sync_every=sync_every, max_iter=10)
        periodic = 0 if sync_every is None else 10 // sync_every
        assert c.syncs <= 3 + periodic, c.report()
        assert c.counts["host_tensor"] == 0 and c.counts["h2d"] == 0, c.report()
        g = torch.Generator().manual_seed(1)
        real = torch.randn(6, 4, generator=g, dtype=torch.float64).to(META)
        with SyncCounter(trace=True) as c:
            gameopt.solvers.solve_linear_dual(real, real + 1, 1e-2, sync_every=sync_every, max_iter=10)
        assert c.syncs <= 3 + periodic, c.report()
        assert c.counts["host_tensor"] == 0 and c.counts["h2d"] == 0, c.report()


def test_counter_counts_what_it_says():
    x = torch.ones(4, device=META)
    with SyncCounter() as c:
        assert bool(x.sum() > 0) is True        # item (stand-in: True)
        float(x.sum())                          # item
        x.nonzero()                             # nonzero
        x.cpu()                                 # d2h
        torch.tensor([1.0, 2.0]).to(META)       # host tensor + h2d
        torch.arange(3)                         # host tensor
        torch.zeros(3, device=META) + 1         # neither
    assert (c.counts["item"], c.counts["nonzero"], c.counts["d2h"], c.counts["h2d"]) == (2, 1, 1, 1)
    assert c.counts["host_tensor"] == 2 and c.syncs == 5


@pytest.mark.parametrize("delta", [1e-4, 1e-1, 1e3, float("inf")])
@pytest.mark.parametrize("sync_every", [3, None])
def test_fewer_reads_same_answer(delta, sync_every):
    """The read-free paths (fused two-phase trust-region solve, no early stop) agree with the CPU default."""
    g = torch.Generator().manual_seed(5)
    J = torch.randn(4, 16, 6, generator=g, dtype=torch.float64)
    K = J @ J.transpose(-1, -2)
    w = torch.randn(4, 6, generator=g, dtype=torch.float64)
    w = w / w.norm(dim=1, keepdim=True)                      # ||w||^2 = 1 = w_norm_sq
    Jw, Fk = (J @ w[..., None]).squeeze(-1), torch.randn(4, 16, generator=g, dtype=torch.float64)
    ref = gameopt.solvers.solve_trust_region_dual(K, Jw, Fk, 1.0, 1e-2, delta)
    res = gameopt.solvers.solve_trust_region_dual(K, Jw, Fk, 1.0, 1e-2, delta, sync_every=sync_every, max_iter=100)
    assert ref.success and bool(res.converged.all())
    for name in ("lam", "mu", "step_norm_sq", "dual_value"):
        torch.testing.assert_close(getattr(res, name), getattr(ref, name), rtol=1e-7, atol=1e-9)
