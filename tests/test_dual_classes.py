"""gameopt.dual: one class per model behind TrustRegionDualDiscriminator, and the shared radius rule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import gameopt
from gameopt import dual
from gameopt.dual import (
    CostLinearisedDiscriminator,
    LinearDualDiscriminator,
    RadiusControl,
    RBFFeatures,
    ScoreLinearisedDiscriminator,
    TrustRegionDualDiscriminator,
)

torch.set_num_threads(1)


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).double()


def batch(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g, dtype=torch.float64) + 1, torch.randn(n, 2, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("model,cls", [("linear", LinearDualDiscriminator), ("cost", CostLinearisedDiscriminator),
                                       ("score", ScoreLinearisedDiscriminator)])
def test_factory_builds_the_class_of_the_model(model, cls):
    module = RBFFeatures(torch.randn(4, 2, dtype=torch.float64)) if model == "linear" else mlp()
    d = TrustRegionDualDiscriminator(module, model=model, C=1e-3)
    assert type(d) is cls and isinstance(d, TrustRegionDualDiscriminator)
    assert d.model == model and d.C == 1e-3
    assert gameopt.dual.__dict__[cls.__name__] is cls and getattr(gameopt, cls.__name__) is cls


@pytest.mark.parametrize("model,cls", [("cost", CostLinearisedDiscriminator), ("score", ScoreLinearisedDiscriminator)])
def test_direct_class_steps_exactly_like_the_factory(model, cls):
    a, b = mlp(3), mlp(3)
    real, fake = batch()
    fa = TrustRegionDualDiscriminator(a, model, 1e-3, 1e-2, grow_factor=3.0, max_retries=2)
    fb = cls(b, C=1e-3, delta=1e-2, radius=RadiusControl(grow_factor=3.0), max_retries=2)
    for _ in range(3):
        sa, sb = fa.step(real, fake), fb.step(real, fake)
        assert sa.rho == sb.rho and sa.next_delta == sb.next_delta
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_factory_ignores_what_a_model_does_not_use_and_rejects_unknown_arguments():
    phi = RBFFeatures(torch.randn(4, 2))
    lin = TrustRegionDualDiscriminator(phi, model="linear", delta=0.5, per_sample="func", shrink_factor=0.5)
    assert lin.delta == math.inf and lin.state_dict().keys() == {"model", "C", "weight"}
    cost = TrustRegionDualDiscriminator(mlp(), model="cost", solver="ipopt", jacobian_budget_bytes=10)
    assert not hasattr(cost, "solver")
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['lr'\\]"):
        TrustRegionDualDiscriminator(mlp(), model="score", lr=0.1)
    with pytest.raises(ValueError, match="need 0 < shrink_factor < 1"):
        TrustRegionDualDiscriminator(phi, model="linear", shrink_factor=2.0)


def test_radius_control_rule():
    r = RadiusControl()
    assert r.ratio(1.0, 0.5, 1.0) == 0.5 and r.ratio(1.0, math.nan, 1.0) == -math.inf
    assert r.ratio(1.0, 1.0, 0.0) == 1.0 and r.ratio(1.0, 1.1, 0.0) == -math.inf
    assert r.accepts(0.1) and not r.accepts(0.0)
    assert r.next_radius(1.0, 0.1, True) == 0.25  # shrink
    assert r.next_radius(1.0, 0.9, True) == 2.0  # grow on the boundary
    assert r.next_radius(1.0, 0.9, False) == 1.0  # interior step: keep
    assert r.next_radius(1.0, -math.inf, False) == 0.25
    assert RadiusControl(max_delta=1.5).next_radius(1.0, 0.9, True) == 1.5
    with pytest.raises(ValueError, match="min_delta <= max_delta"):
        RadiusControl(min_delta=2.0, max_delta=1.0)


def test_package_exports():
    for name in dual.__all__:
        assert getattr(dual, name) is not None
    assert dual.DualSolverWarning is gameopt.DualSolverWarning


def test_former_module_is_a_deprecated_alias():
    import importlib
    import sys

    sys.modules.pop("gameopt.dual_discriminator", None)
    with pytest.warns(DeprecationWarning, match="import from gameopt.dual instead"):
        alias = importlib.import_module("gameopt.dual_discriminator")
    for name in alias.__all__:
        assert getattr(alias, name) is getattr(dual, name)


@pytest.mark.parametrize("model", ["linear", "cost", "score"])
def test_pickle_and_deepcopy_step_like_the_original(model):
    import copy
    import pickle

    module = RBFFeatures(torch.randn(4, 2, dtype=torch.float64)) if model == "linear" else mlp(5)
    d = TrustRegionDualDiscriminator(module, model=model, C=1e-3, delta=1e-2)
    d.step(*batch())
    if model == "score":
        d.kernel(torch.cat(batch()), keep_jacobian=True)  # scratch state is not part of a copy
    copies = [pickle.loads(pickle.dumps(d)), copy.deepcopy(d)]
    stats = [c.step(*batch(seed=2)) for c in [d] + copies]
    assert all(s.rho == stats[0].rho or (math.isnan(s.rho) and math.isnan(stats[0].rho)) for s in stats)
    flat = [torch.cat([p.detach().reshape(-1) for p in c.parameters()]) for c in [d] + copies]
    assert all(torch.equal(f, flat[0]) for f in flat)
