"""Bad input to the primal-dual, dual, diagnostics, monitor and toy-game modules raises GameInputError.

GameInputError subclasses both ValueError and TypeError, so code that caught those still works;
this checks the documented type (and that the message names the problem).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gameopt
from gameopt import GameField, GameInputError, Monitor
from gameopt.dual import RadiusControl, RBFFeatures, TrustRegionDualDiscriminator
from gameopt.primal_dual import (
    Divergence,
    ExponentialBandwidth,
    PrimalDualRegularizer,
    RandomProjection,
    StepBandwidth,
    get_divergence,
)
from gameopt.toy_games import mixture_metrics, ring_centers


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))


def _regularise(real, fake, d_real):
    return lambda: PrimalDualRegularizer()(real, fake, d_real)


def _field(gamma=0.0, n_losses=2):
    x, y = torch.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    return GameField(lambda: [(x * y).sum()] * n_losses, [[x], [y]], gamma=gamma)


def _linear_generator_loss_without_real():
    d = TrustRegionDualDiscriminator(RBFFeatures(torch.randn(4, 2, dtype=torch.float64)), model="linear")
    return d.generator_loss(None, torch.randn(3, 2, dtype=torch.float64))


def _dual_step(real, fake, model="score"):
    module = RBFFeatures(torch.randn(4, 2, dtype=torch.float64)) if model == "linear" else _net().double()
    return lambda: TrustRegionDualDiscriminator(module, model=model).step(real, fake)


R = torch.randn(6, 2)
CASES = {
    # primal_dual/divergences.py
    "unknown divergence name": (lambda: PrimalDualRegularizer(divergence="wasserstein"), "Unknown divergence"),
    "divergence not a name": (lambda: PrimalDualRegularizer(divergence=3), "divergence must be"),
    "divergence name not a string": (lambda: get_divergence(3), "must be a string"),
    "divergence eps <= 0": (lambda: get_divergence("js", eps=-1.0), "eps must be"),
    "divergence f0 not callable": (lambda: Divergence("x", 1, 2), "callables"),
    # primal_dual/regularizer.py
    "negative alpha": (lambda: PrimalDualRegularizer(alpha=-1.0), "alpha"),
    "alpha not a number": (lambda: PrimalDualRegularizer(alpha="big"), "alpha"),
    "zero chunk_size": (lambda: PrimalDualRegularizer(chunk_size=0), "chunk_size"),
    "feature_map not callable": (lambda: PrimalDualRegularizer(feature_map=3), "feature_map"),
    "bandwidth not a schedule": (lambda: PrimalDualRegularizer(bandwidth="wide"), "bandwidth"),
    "empty real batch": (_regularise(R[:0], R, torch.zeros(0)), "real batch is empty"),
    "d_real wrong shape": (_regularise(R, R, torch.zeros(5)), "d_real"),
    "real not a tensor": (_regularise([[0.0, 1.0]], R, torch.zeros(1)), "must be a torch.Tensor"),
    "integer fake": (_regularise(R, torch.ones(6, 2, dtype=torch.long), torch.zeros(6)), "floating-point"),
    "feature sizes differ": (_regularise(R, torch.randn(6, 3), torch.zeros(6)), "feature dimensions"),
    # primal_dual/bandwidth.py
    "negative bandwidth": (lambda: PrimalDualRegularizer(bandwidth=-1.0), "positive"),
    "bandwidth not a number": (lambda: ExponentialBandwidth("wide", 0.5), "positive float"),
    "milestones not integers": (lambda: StepBandwidth([1.0, 0.5], [2.5]), "integers"),
    "sigmas vs milestones count": (lambda: StepBandwidth([1.0], [5]), "len\\(sigmas\\)"),
    "milestones decreasing": (lambda: StepBandwidth([1.0, 0.5, 0.2], [5, 3]), "increasing"),
    "decay > 1": (lambda: ExponentialBandwidth(1.0, decay=2.0), "decay"),
    "every < 1": (lambda: ExponentialBandwidth(1.0, decay=0.5, every=0), "every"),
    "decay not a number": (lambda: ExponentialBandwidth(1.0, decay="fast"), "decay"),
    "negative minimum": (lambda: ExponentialBandwidth(1.0, decay=0.5, minimum=-1.0), "minimum"),
    # primal_dual/features.py
    "projection size 0": (lambda: RandomProjection(0, 3), "positive sizes"),
    "projection input size": (lambda: RandomProjection(4, 2)(torch.zeros(3, 5)), "input features"),
    # dual/base.py
    "unknown dual model": (lambda: TrustRegionDualDiscriminator(_net(), model="kernel"), "unknown model"),
    "too many positional": (lambda: TrustRegionDualDiscriminator(_net(), "score", 1, 1, 1, 1, 1, 1, 1, 1),
                            "positional"),
    "positional and keyword": (lambda: TrustRegionDualDiscriminator(_net(), "score", 1e-3, C=1e-3),
                               "multiple values"),
    "unexpected keyword": (lambda: TrustRegionDualDiscriminator(_net(), model="score", dleta=1.0), "dleta"),
    "bad on_failure": (lambda: TrustRegionDualDiscriminator(_net(), model="score", on_failure="ignore"),
                       "on_failure"),
    "batch sizes differ": (_dual_step(torch.randn(6, 2).double(), torch.randn(5, 2).double()), "same number"),
    "empty dual batch": (_dual_step(torch.randn(0, 2).double(), torch.randn(0, 2).double()), "empty batch"),
    # dual/per_sample.py
    "bad per_sample": (lambda: TrustRegionDualDiscriminator(_net(), model="score", per_sample="vmap"),
                       "per_sample"),
    "zero jacobian budget": (lambda: TrustRegionDualDiscriminator(_net(), model="score", jacobian_budget_bytes=0),
                             "jacobian_budget_bytes"),
    # dual/trust_region.py
    "module not nn.Module": (lambda: TrustRegionDualDiscriminator(lambda x: x, model="score"), "nn.Module"),
    "negative max_retries": (lambda: TrustRegionDualDiscriminator(_net(), model="cost", max_retries=-1),
                             "max_retries"),
    # dual/radius.py (also reached through the discriminator's keywords)
    "shrink_factor >= 1": (lambda: RadiusControl(shrink_factor=2.0), "shrink_factor"),
    "shrink_below > grow_above": (lambda: RadiusControl(shrink_below=0.9, grow_above=0.1), "shrink_below"),
    "min_delta 0": (lambda: RadiusControl(min_delta=0.0), "min_delta"),
    "grow_factor < 1 via keyword": (lambda: TrustRegionDualDiscriminator(_net(), model="score", grow_factor=0.5),
                                    "grow_factor"),
    # dual/features.py
    "bad RBF convention": (lambda: RBFFeatures(torch.randn(3, 2), convention="laplace"), "convention"),
    "RBF anchors not 2-D": (lambda: RBFFeatures(torch.randn(3)), "anchors"),
    # dual/linear.py
    "linear generator loss without real": (_linear_generator_loss_without_real, "real batch"),
    # diagnostics.py
    "negative gamma": (lambda: _field(gamma=-1.0), "gamma"),
    "closure loss count": (lambda: _field(n_losses=3).value(), "losses for 2 players"),
    "bad eigs which": (lambda: _field().eigenvalues(k=1, which="XX"), "which"),
    # monitor.py
    "monitor source without stats": (lambda: Monitor(opt=object()), "monitor_stats"),
    # toy_games.py
    "mixture samples wrong shape": (lambda: mixture_metrics(torch.zeros(5, 3), ring_centers(), 0.1), "shape"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_raises_game_input_error(case):
    make, match = CASES[case]
    with pytest.raises(GameInputError, match=match):
        make()


def test_game_input_error_still_caught_as_value_and_type_error():
    with pytest.raises(ValueError):
        PrimalDualRegularizer(alpha=-1.0)
    with pytest.raises(TypeError):
        Monitor(opt=object())
    assert gameopt.GameInputError is GameInputError
