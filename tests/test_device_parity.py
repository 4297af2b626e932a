"""Every optimiser and every dual step on each device gives the CPU's result (issue 21).

Parametrised over devices: the CPU always, CUDA when available (skipped cleanly without
it). Each case trains a few steps from the same float32 initial point and data on the
device and on the CPU and compares the parameters: the code paths must be device-true
(no silent host round trip, no dtype that differs by device beyond the documented
float32 default of the dual solver off the CPU).
"""

import warnings

import pytest
import torch
import torch.nn.functional as F

import gameopt
from gameopt.testing import SyncCounter

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]

KINDS = ["consensus", "simga", "altga", "extragradient", "optimistic", "sga", "lookahead", "cgd", "acgd"]


def _nets(device):
    torch.manual_seed(0)
    G = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    D = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    g = torch.Generator().manual_seed(1)
    z, x = torch.randn(4, 8, 3, generator=g), torch.randn(4, 8, 2, generator=g)
    return G.to(device), D.to(device), z.to(device), x.to(device)


def _make(kind, G, D):
    gp, dp = list(G.parameters()), list(D.parameters())
    A = torch.optim.Adam
    if kind == "consensus":
        return gameopt.ConsensusOptimizer(A, gp, dp, gamma=1.0, lr=1e-2)
    if kind == "simga":
        return gameopt.SimultaneousOptimizer(A, gp, dp, lr=1e-2)
    if kind == "altga":
        return gameopt.AlternatingOptimizer(A, gp, dp, lr=1e-2)
    if kind == "extragradient":
        return gameopt.ExtragradientOptimizer(A, gp, dp, lr=1e-2)
    if kind == "optimistic":
        return gameopt.OptimisticOptimizer(A, gp, dp, lr=1e-2)
    if kind == "sga":
        return gameopt.SGAOptimizer(A, gp, dp, lam=0.5, lr=1e-2)
    if kind == "lookahead":
        return gameopt.LookaheadMinmax(gameopt.ConsensusOptimizer(A, gp, dp, gamma=1.0, lr=1e-2), k=2)
    return gameopt.CompetitiveOptimizer(gp, dp, lr=1e-2, adaptive=kind == "acgd", tol=1e-6, max_iter=20)


def _train(kind, device):
    G, D, z, x = _nets(device)
    opt = _make(kind, G, D)
    zero_sum = kind in ("cgd", "acgd")
    for t in range(4):
        def closure(t=t):
            fake = G(z[t])
            ld = F.softplus(-D(x[t])).mean() + F.softplus(D(fake)).mean()
            return (-ld, ld) if zero_sum else (F.softplus(-D(fake)).mean(), ld)
        opt.step(closure)
    return [p.detach().cpu() for p in list(G.parameters()) + list(D.parameters())]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_optimiser_gives_the_cpu_result_on_every_device(kind, device):
    ref = _train(kind, "cpu")
    got = _train(kind, device)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert all(torch.isfinite(a).all() for a in got)


def _dual_run(model, device):
    torch.manual_seed(2)
    g = torch.Generator().manual_seed(3)
    real = (torch.randn(3, 8, 2, generator=g) * 0.3 + 1.0).to(device)
    fake = (torch.randn(3, 8, 2, generator=g) * 0.5).to(device)
    if model == "linear":
        feats = gameopt.RBFFeatures(torch.randn(6, 2, generator=g), 1.0).to(device)
        d = gameopt.TrustRegionDualDiscriminator(feats, model="linear", C=1e-2)
    else:
        D = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).to(device)
        d = gameopt.TrustRegionDualDiscriminator(D, model=model, C=1e-2, delta=1e-2)
    stats = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for t in range(3):
            stats.append(d.step(real[t], fake[t]))
    return [p.detach().double().cpu() for p in d.parameters()], stats


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model", ["linear", "cost", "score"])
def test_dual_step_gives_the_cpu_result_on_every_device(model, device):
    ref, ref_stats = _dual_run(model, "cpu")
    got, stats = _dual_run(model, device)
    # off the CPU the dual is solved in float32 (tol 1e-5): the step agrees to that accuracy
    tol = 1e-6 if device == "cpu" else 2e-3
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    assert [s.accepted for s in stats] == [s.accepted for s in ref_stats]
    assert all(not s.solver_failed for s in stats)


def test_solver_dtype_follows_the_device():
    """dtype='auto': float64 on the CPU, float32 elsewhere (meta stands in for CUDA)."""
    J = torch.randn(2, 6, 3, dtype=torch.float64)
    K = J @ J.transpose(-1, -2)
    slv = gameopt.solvers.TorchNewtonSolver()
    assert slv.dtype_option == "auto" and slv.for_device(torch.device("cpu")) is slv
    off = slv.for_device(torch.device("meta"))
    assert off.dtype == torch.float32 and off.tol == 1e-5 and slv.dtype == torch.float64
    res = gameopt.solvers.solve_trust_region_dual(K, torch.zeros(2, 6), torch.zeros(2, 6), 1.0, 1e-2, 1e-2)
    assert res.lam.dtype == torch.float64
    with SyncCounter():
        res = gameopt.solvers.solve_trust_region_dual(K.to("meta"), torch.zeros(2, 6, device="meta"),
                                                      torch.zeros(2, 6, device="meta"), 1.0, 1e-2, 1e-2)
    assert res.lam.dtype == torch.float32
    explicit = gameopt.solvers.TorchNewtonSolver(dtype=torch.float64)
    assert explicit.for_device(torch.device("meta")) is explicit


def test_singular_kernel_is_shifted_alike_on_the_cpu_and_the_device_path():
    """A rank-deficient float32-formed K (dead ReLU units, duplicate samples) is shifted by the
    smallest working rung of psd_kernel's ladder; the device path (all rungs at once, no read)
    picks the same shift; an indefinite K is refused by both."""
    from gameopt.dual.per_sample import KernelNotPSD, _shift_to_pd, psd_kernel

    g = torch.Generator().manual_seed(0)
    J = torch.randn(40, 5, generator=g)  # float32 rows: rank 5 < m = 40
    K = (J @ J.T).double()
    assert int(torch.linalg.cholesky_ex(K)[1]) != 0
    eps32 = torch.finfo(torch.float32).eps
    cpu = psd_kernel(K, eps32)
    dev, ok = _shift_to_pd(K, eps32)
    assert bool(ok)
    torch.testing.assert_close(cpu, dev, rtol=0, atol=1e-12)  # the same rung
    shift = float((cpu - K).diagonal()[0])
    assert 0 < shift <= 64 * 40 * eps32 * float(K.diagonal().max())
    torch.testing.assert_close(cpu - K, shift * torch.eye(40, dtype=K.dtype), rtol=0, atol=1e-12)
    assert int(torch.linalg.cholesky_ex(cpu)[1]) == 0
    bad = K - 0.5 * float(K.diagonal().max()) * torch.eye(40, dtype=K.dtype)
    with pytest.raises(KernelNotPSD, match="eigenvalue"):
        psd_kernel(bad, eps32)
    assert not bool(_shift_to_pd(bad, eps32)[1])


@pytest.mark.parametrize("deferred", [False, True])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model", ["linear", "cost", "score"])
def test_nan_batch_is_refused_on_every_device_and_changes_nothing(model, device, deferred, monkeypatch):
    """On the CPU the NaN check runs before the forward pass; on a device it is read with the
    step's first read (``deferred`` forces that path on the CPU): either way GameInputError,
    and parameters and radius unchanged."""
    from gameopt.errors import GameInputError
    from gameopt.solvers._common import Checks

    monkeypatch.setattr(Checks, "defer_on_cpu", deferred)
    torch.manual_seed(4)
    if model == "linear":
        d = gameopt.TrustRegionDualDiscriminator(gameopt.RBFFeatures(torch.randn(6, 2), 1.0).to(device),
                                                 model="linear", C=1e-2)
        d.step(torch.randn(8, 2, device=device), torch.randn(8, 2, device=device))
    else:
        D = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).to(device)
        d = gameopt.TrustRegionDualDiscriminator(D, model=model, C=1e-2, delta=1e-2)
    before = [p.detach().clone() for p in d.parameters()]
    delta = d.delta
    fake = torch.randn(8, 2, device=device)
    fake[3, 1] = float("nan")
    with pytest.raises(GameInputError, match="fake batch contains NaN"):
        d.step(torch.randn(8, 2, device=device), fake)
    assert all(torch.equal(a, b) for a, b in zip(d.parameters(), before)) and d.delta == delta
