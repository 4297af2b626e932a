"""Faults and bad input of the dual discriminators (issue 11): each leaves the discriminator unchanged."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import gameopt
from gameopt import RBFFeatures, TrustRegionDualDiscriminator
from gameopt.dual import DualSolverError, DualSolverWarning

torch.set_num_threads(1)


def batch(n=6, seed=1, d=2):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) + 1.0,
            torch.randn(n, d, generator=g, dtype=torch.float64))


def explicit_jacobian(module, x):
    params = [p for p in module.parameters() if p.requires_grad]
    rows = []
    for i in range(x.shape[0]):
        out = module(x[i:i + 1]).reshape(())
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(out, params)]))
    return torch.stack(rows)


def snapshot(module):
    return [t.detach().clone() for t in list(module.parameters()) + list(module.buffers())]


def unchanged(module, before):
    return all(torch.equal(a, b) for a, b in zip(before, list(module.parameters()) + list(module.buffers())))


# --------------------------------------------------------- spectral norm
def spectral(kind, conv=False):
    torch.manual_seed(0)
    sn = nn.utils.spectral_norm if kind == "hooks" else nn.utils.parametrizations.spectral_norm
    if conv:
        return nn.Sequential(sn(nn.Conv2d(2, 3, 3, stride=2, padding=1)), nn.LeakyReLU(0.2),
                             sn(nn.Conv2d(3, 4, 3, stride=2)), nn.Flatten(), sn(nn.Linear(4, 1))).double()
    return nn.Sequential(sn(nn.Linear(2, 8)), nn.Tanh(), sn(nn.Linear(8, 1))).double()


@pytest.mark.parametrize("per_sample", ["auto", "hooks", "func"])
@pytest.mark.parametrize("conv", [False, True])
@pytest.mark.parametrize("kind", ["hooks", "parametrizations"])
def test_score_model_with_spectral_norm_uses_the_gradients_of_the_trained_parameters(kind, conv, per_sample):
    net = spectral(kind, conv).eval()  # eval: the power-iteration vectors stay fixed, so J is well defined
    x = torch.randn(10, 2, 7, 7, dtype=torch.float64) if conv else torch.cat(batch())
    d = TrustRegionDualDiscriminator(net, model="score", C=1e-3, delta=1e-2, per_sample=per_sample)
    assert d.jacobian.uses_hooks() == (per_sample != "func")
    K, Jw, F = d.kernel(x, keep_jacobian=True)
    J = explicit_jacobian(net, x)
    w = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    torch.testing.assert_close(K, J @ J.T, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(Jw, J @ w, rtol=1e-10, atol=1e-12)
    eta = torch.randn(x.shape[0], dtype=torch.float64)
    jt = d._jt_eta_from_factors(eta)
    torch.testing.assert_close(torch.cat([jt[id(p)].reshape(-1) for p in net.parameters()]), J.T @ eta,
                               rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d.kernel(x)[0], K, rtol=1e-12, atol=1e-12)  # nothing kept: patches formed again


@pytest.mark.parametrize("kind", ["hooks", "parametrizations"])
def test_spectral_norm_trains_in_training_mode(kind):
    net = spectral(kind)
    d = TrustRegionDualDiscriminator(net, model="score", C=1e-3, delta=1e-2)
    first = d.loss(*batch()).item()
    for _ in range(5):
        st = d.step(*batch())
        assert st.gap <= 1e-10 and 0.5 * st.step_norm**2 <= st.delta * (1 + 1e-9)
    assert d.loss(*batch()).item() < first


def test_weight_norm_is_served_by_func_and_refused_by_hooks():
    torch.manual_seed(0)
    net = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(2, 8)), nn.Tanh(), nn.Linear(8, 1)).double()
    x = torch.cat(batch())
    J = explicit_jacobian(net, x)
    d = TrustRegionDualDiscriminator(net, model="score")
    assert not d.jacobian.uses_hooks()
    torch.testing.assert_close(d.kernel(x)[0], J @ J.T, rtol=1e-10, atol=1e-12)
    with pytest.raises(gameopt.GameInputError, match="weight_norm.*per_sample='func'"):
        TrustRegionDualDiscriminator(net, model="score", per_sample="hooks")


# ------------------------------------------------------------ batch norm
def bn_net(affine=True):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8, affine=affine), nn.Tanh(), nn.Linear(8, 1)).double()


@pytest.mark.parametrize("per_sample", ["hooks", "auto", "func"])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_in_training_mode_is_refused_before_any_forward(per_sample, affine):
    net = bn_net(affine)
    before = snapshot(net)
    if per_sample == "hooks" and affine:  # the affine batch-norm layer is no Linear/Conv2d: refused at once
        with pytest.raises(gameopt.GameInputError, match="BatchNorm1d.*per_sample='func'"):
            TrustRegionDualDiscriminator(net, model="score", per_sample=per_sample)
        return
    d = TrustRegionDualDiscriminator(net, model="score", per_sample=per_sample)
    with pytest.raises(gameopt.GameInputError, match="batch statistics.*D.eval\\(\\)"):
        d.step(*batch())
    assert unchanged(net, before)  # running statistics included
    with pytest.raises(gameopt.GameInputError, match="batch statistics"):
        d.kernel(torch.cat(batch()))
    assert unchanged(net, before)


def test_batch_norm_in_eval_mode_is_a_per_sample_map():
    net = bn_net().eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    x = torch.cat(batch())
    d = TrustRegionDualDiscriminator(net, model="score")
    J = explicit_jacobian(net, x)
    torch.testing.assert_close(d.kernel(x)[0], J @ J.T, rtol=1e-10, atol=1e-12)
    before = [b.clone() for b in net.buffers()]
    assert d.step(*batch()).gap <= 1e-10
    assert all(torch.equal(a, b) for a, b in zip(before, net.buffers()))


def test_rejected_cost_step_restores_batch_norm_statistics():
    net = bn_net()
    before = snapshot(net)
    d = TrustRegionDualDiscriminator(net, model="cost", delta=1e6)  # an absurd radius: rejected
    st = d.step(*batch())
    assert not st.accepted and unchanged(net, before)


# --------------------------------------------- layers the hooks cannot see
def test_in_place_activation_after_a_hooked_layer_gives_the_exact_kernel():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2), nn.LeakyReLU(0.2, inplace=True), nn.Flatten(),
                        nn.Linear(27, 4), nn.ReLU(inplace=True), nn.Linear(4, 1)).double()
    x = torch.randn(6, 1, 7, 7, dtype=torch.float64)
    J = explicit_jacobian(net, x)
    w = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    K, Jw, _ = TrustRegionDualDiscriminator(net, model="score", per_sample="hooks").kernel(x)
    torch.testing.assert_close(K, J @ J.T, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(Jw, J @ w, rtol=1e-11, atol=1e-12)


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inner, self.out = nn.Linear(2, 2), nn.Linear(2, 1)

    def forward(self, x):
        return self.out(torch.tanh(self.inner(torch.tanh(self.inner(x)))))


def test_a_layer_used_twice_falls_back_to_func_or_is_refused_by_hooks():
    net = Shared().double()
    x = torch.cat(batch())
    J = explicit_jacobian(net, x)
    torch.testing.assert_close(TrustRegionDualDiscriminator(net, model="score").kernel(x)[0], J @ J.T,
                               rtol=1e-11, atol=1e-12)
    with pytest.raises(gameopt.GameInputError, match="more than once.*per_sample='func'"):
        TrustRegionDualDiscriminator(net, model="score", per_sample="hooks").kernel(x)


# ------------------------------------------------- non-finite discriminator
@pytest.mark.parametrize("model", ["score", "cost"])
def test_nan_scores_follow_the_failure_policy_and_do_not_blame_the_generator(model):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    with torch.no_grad():
        net[2].bias.fill_(math.nan)
    before = snapshot(net)
    d = TrustRegionDualDiscriminator(net, model=model, delta=1e-2)
    with pytest.warns(DualSolverWarning, match="discriminator") as rec:
        st = d.step(*batch())
    assert "generator output" not in str(rec[0].message)
    assert st.solver_failed and not st.accepted and d.delta == 1e-2
    assert all(torch.equal(a, b) or (a.isnan() == b.isnan()).all() for a, b in zip(before, net.parameters()))
    strict = TrustRegionDualDiscriminator(net, model=model, on_failure="raise")
    with pytest.raises(DualSolverError, match="discriminator"):
        strict.step(*batch())


def test_nan_features_of_the_linear_model_follow_the_failure_policy():
    class Broken(nn.Module):
        def forward(self, x):
            phi = torch.exp(-x**2)
            return torch.cat([phi, phi[:, :1] * math.nan], 1)

    d = TrustRegionDualDiscriminator(Broken(), model="linear")
    with pytest.warns(DualSolverWarning, match="feature map produced NaN"):
        st = d.step(*batch())
    assert st.solver_failed and not st.accepted
    assert torch.equal(d.weight, torch.zeros(3, dtype=torch.float64))


# ------------------------------------------------------------- the kernel
@pytest.mark.parametrize("per_sample", ["hooks", "func"])
def test_kernel_passed_to_the_solver_is_symmetric_and_psd(per_sample):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(8, 16, 4, 2, 1), nn.LeakyReLU(0.2),
                        nn.Flatten(), nn.Linear(16 * 4 * 4, 1))  # float32, as trained
    x = torch.randn(32, 3, 16, 16)
    K, _, _ = TrustRegionDualDiscriminator(net, model="score", per_sample=per_sample).kernel(x)
    assert K.dtype == torch.float64 and torch.equal(K, K.T)
    assert float(torch.linalg.eigvalsh(K)[0]) >= -1e-6 * float(K.diagonal().max())


# ------------------------------------------------------------ checkpoints
def score_disc(delta=0.3, C=1e-4):
    return TrustRegionDualDiscriminator(nn.Linear(2, 1).double(), model="score", C=C, delta=delta)


def linear_disc(d=4, seed=0):
    torch.manual_seed(seed)
    lin = TrustRegionDualDiscriminator(RBFFeatures(torch.randn(d, 2, dtype=torch.float64)), model="linear")
    lin.step(*batch())
    return lin


@pytest.mark.parametrize("bad,match", [
    (lambda s: {k: v for k, v in s.items() if k != "delta"}, "no 'delta'"),
    (lambda s: {**s, "delta": math.nan}, "finite number > 0"),
    (lambda s: {**s, "delta": -1.0}, "finite number > 0"),
    (lambda s: {**s, "delta": "0.1"}, "finite number > 0"),
    (lambda s: {**s, "C": 1e-2}, "C=0.01.*construct it with the checkpoint's C"),
    (lambda s: {**s, "model": "cost"}, "state is for model 'cost'"),
    (lambda s: {"state": {}, "param_groups": []}, "unexpected keys"),
    (lambda s: [1, 2], "must be a dict"),
])
def test_trust_region_checkpoint_is_validated_before_anything_loads(bad, match):
    src, dst = score_disc(delta=0.3), score_disc(delta=0.7)
    with pytest.raises(gameopt.GameInputError, match=match):
        dst.load_state_dict(bad(src.state_dict()))
    assert dst.delta == 0.7
    dst.load_state_dict(src.state_dict())
    assert dst.delta == 0.3


@pytest.mark.parametrize("bad,match", [
    (lambda s: {**s, "weight": torch.zeros(7, dtype=torch.float64)}, "shape \\(7,\\)"),
    (lambda s: {**s, "weight": torch.full((4,), math.nan, dtype=torch.float64)}, "NaN"),
    (lambda s: {**s, "weight": torch.zeros(4, 1)}, "1-D floating tensor"),
    (lambda s: {k: v for k, v in s.items() if k != "weight"}, "no 'weight'"),
    (lambda s: {**s, "C": 1.0}, "C=1.0"),
])
def test_linear_checkpoint_is_validated_before_anything_loads(bad, match):
    src, dst = linear_disc(seed=1), linear_disc(seed=2)
    w0 = dst.weight.clone()
    with pytest.raises(gameopt.GameInputError, match=match):
        dst.load_state_dict(bad(src.state_dict()))
    assert torch.equal(dst.weight, w0)


def test_linear_checkpoint_of_another_feature_map_is_refused_at_first_use():
    fresh = TrustRegionDualDiscriminator(RBFFeatures(torch.randn(5, 2, dtype=torch.float64)), model="linear")
    fresh.load_state_dict(linear_disc(d=4).state_dict())  # d unknown until the first forward
    with pytest.raises(gameopt.GameInputError, match="5 features but the weights have 4"):
        fresh.step(*batch())


def test_checkpoint_resumes_bit_for_bit():
    def run(resume):
        torch.manual_seed(4)
        net = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 1)).double()
        d = TrustRegionDualDiscriminator(net, model="score", C=1e-3, delta=1e-2)
        for step in range(4):
            if resume and step == 2:
                state, weights = copy.deepcopy(d.state_dict()), copy.deepcopy(net.state_dict())
                net = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 1)).double()
                net.load_state_dict(weights)
                d = TrustRegionDualDiscriminator(net, model="score", C=1e-3, delta=5.0)
                d.load_state_dict(state)
            d.step(*batch(seed=step))
        return torch.cat([p.detach().reshape(-1) for p in net.parameters()]), d.delta

    (a, da), (b, db) = run(False), run(True)
    assert torch.equal(a, b) and da == db


@pytest.mark.parametrize("model", ["linear", "score"])
def test_a_failed_solve_warns_once_with_the_discriminators_warning(model):
    """The solvers' own SolverConvergenceWarning is for direct calls; inside a dual
    discriminator the failure is reported once, as DualSolverWarning with stats flagged."""
    import warnings

    from gameopt.dual import DualSolverWarning
    from gameopt.solvers import SolverConvergenceWarning, TorchNewtonSolver

    torch.manual_seed(0)
    solver = TorchNewtonSolver(max_iter=1, dtype=torch.float64)
    if model == "linear":
        d = gameopt.TrustRegionDualDiscriminator(
            gameopt.RBFFeatures(torch.randn(8, 2, dtype=torch.float64)), model="linear", C=1e-3, solver=solver)
    else:
        net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
        d = gameopt.TrustRegionDualDiscriminator(net, model="score", delta=1e-1, solver=solver)
    real, fake = torch.randn(6, 2, dtype=torch.float64) + 2, torch.randn(6, 2, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        st = d.step(real, fake)
    kinds = [w.category for w in seen]
    assert st.solver_failed
    assert DualSolverWarning in kinds
    assert SolverConvergenceWarning not in kinds
