"""gameopt.dual.per_sample: K = J J^T, J w and J^T eta of every route against an explicit Jacobian."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gameopt.dual import PerSampleKernel, layer_gradients, per_sample

torch.set_num_threads(1)


def explicit_jacobian(module, x):
    params = [p for p in module.parameters() if p.requires_grad]
    rows = []
    for i in range(x.shape[0]):
        out = module(x[i:i + 1]).reshape(())
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(out, params)]))
    return torch.stack(rows)


class SequenceHead(nn.Module):
    """A Linear applied at T positions per sample (the hooks see (m, T, in) inputs)."""

    def __init__(self):
        super().__init__()
        self.proj, self.out = nn.Linear(3, 4), nn.Linear(4 * 5, 1)

    def forward(self, x):
        return self.out(torch.tanh(self.proj(x.reshape(x.shape[0], 5, 3))).flatten(1))


def conv_net():
    return nn.Sequential(
        nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)), nn.Tanh(),
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Flatten(), nn.LazyLinear(1))


NETS = {
    "conv": (conv_net, (2, 9, 8)),
    "sequence": (SequenceHead, (15,)),
}


@pytest.mark.parametrize("route", ["positions", "rows", "auto"])
@pytest.mark.parametrize("name", list(NETS))
def test_hooks_routes_match_explicit_jacobian(name, route, monkeypatch):
    if route != "auto":  # force one route for every layer through the cost model's overhead
        monkeypatch.setattr(layer_gradients, "_MATERIALISE_OVERHEAD", 10**9 if route == "positions" else -10**9)
    make, shape = NETS[name]
    torch.manual_seed(0)
    net = make().double()
    x = torch.randn(7, *shape, dtype=torch.float64)
    net(x)  # materialise lazy layers
    J = explicit_jacobian(net, x)
    w = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    kern = PerSampleKernel(net, "hooks")(x, keep=True)
    torch.testing.assert_close(kern.K, J @ J.T, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(kern.Jw, J @ w, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(kern.scores, net(x).reshape(-1).detach(), rtol=1e-12, atol=1e-12)
    eta = torch.randn(7, dtype=torch.float64)
    jt = torch.cat([g.reshape(-1) for g in kern.jt_eta(eta)])
    torch.testing.assert_close(jt, J.T @ eta, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("frozen", ["weight", "bias"])
def test_frozen_weight_or_bias_is_left_out_of_J(frozen):
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 1)).double()
    getattr(net[0], frozen).requires_grad_(False)
    x = torch.randn(5, 1, 6, 6, dtype=torch.float64)
    J = explicit_jacobian(net, x)
    w = torch.cat([p.detach().reshape(-1) for p in net.parameters() if p.requires_grad])
    for method in ("hooks", "func"):
        kern = PerSampleKernel(net, method)(x, keep=True)
        torch.testing.assert_close(kern.K, J @ J.T, rtol=1e-11, atol=1e-12)
        torch.testing.assert_close(kern.Jw, J @ w, rtol=1e-11, atol=1e-12)


def test_materialised_rows_are_split_to_fit_the_budget():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(8 * 5 * 5, 1)).double()
    x = torch.randn(6, 2, 5, 5, dtype=torch.float64)
    J = explicit_jacobian(net, x)
    small = PerSampleKernel(net, "hooks", budget_bytes=6 * 18 * 8 * 3)(x, keep=True)  # 3 output channels a chunk
    torch.testing.assert_close(small.K, J @ J.T, rtol=1e-11, atol=1e-12)
    eta = torch.randn(6, dtype=torch.float64)
    torch.testing.assert_close(torch.cat([g.reshape(-1) for g in small.jt_eta(eta)]), J.T @ eta,
                               rtol=1e-11, atol=1e-12)


def test_unknown_method_and_budget_are_refused():
    with pytest.raises(ValueError, match="per_sample must be"):
        PerSampleKernel(nn.Linear(2, 1), "vmap")
    with pytest.raises(ValueError, match="jacobian_budget_bytes must be >= 1"):
        PerSampleKernel(nn.Linear(2, 1), "auto", budget_bytes=0)


def passes_solver_psd_check(K):
    """The solvers' acceptance test: Cholesky of K + 64 m eps max(diag K) I, and exact symmetry."""
    m = K.shape[0]
    tol = 64 * m * torch.finfo(torch.float64).eps * float(K.diagonal().max())
    return torch.equal(K, K.T) and int(torch.linalg.cholesky_ex(K + tol * torch.eye(m, dtype=K.dtype))[1]) == 0


def test_kernel_of_near_duplicate_samples_in_float32_is_psd_for_the_solver():
    # a collapsed generator: fakes equal up to 1e-5; float32 blocks give eigenvalues of about -1e-8 ||K||
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(8, 16, 4, 2, 1), nn.LeakyReLU(0.2),
                        nn.Flatten(), nn.Linear(16 * 4 * 4, 1))
    real = torch.randn(24, 3, 16, 16)
    fake = torch.randn(1, 3, 16, 16) + 1e-5 * torch.randn(24, 3, 16, 16)
    x = torch.cat([real, fake])
    kern = PerSampleKernel(net)(x)
    raw = PerSampleKernel(net.double())(x.double()).K  # float64 blocks: the reference
    assert passes_solver_psd_check(kern.K)
    assert float((kern.K - raw).abs().max()) <= 1e-5 * float(raw.diagonal().max())


def test_psd_kernel_repairs_rounding_only():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(8, 50, generator=g, dtype=torch.float64)
    A[4:] = A[:4] + 1e-5 * torch.randn(4, 50, generator=g, dtype=torch.float64)
    K = (A.float() @ A.float().T).double()
    K = (K + K.T) / 2
    assert not passes_solver_psd_check(K)
    fixed = per_sample.psd_kernel(K, torch.finfo(torch.float32).eps)
    assert passes_solver_psd_check(fixed)
    assert float((fixed - K).abs().max()) <= 1e-5 * float(K.diagonal().max())
    good = A[:4] @ A[:4].T
    assert per_sample.psd_kernel(good, 1e-16) is good  # positive definite: returned as is
    bad = torch.diag(torch.tensor([1.0, -0.5], dtype=torch.float64))
    with pytest.raises(per_sample.KernelNotPSD, match="eigenvalue -0.5"):
        per_sample.psd_kernel(bad, torch.finfo(torch.float32).eps)
