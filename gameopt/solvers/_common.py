"""Shared maths and input checks for the Dualing-GAN dual solvers.

Notation (methods.md section 3). A problem has m = 2n samples, the n real ones
first. ``y`` is +1 for real and -1 for fake rows. The solvers work with the
sign-adjusted rows a_k = y_k * phi_k (linear) or a_k = y_k * J_k (trust region),
so that every sample's loss is softplus(-(c_k + a_k^T s)) and the dual point is a
vector e in [0, 1/m]^m with lam = e[:n] and mu = e[n:].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "LinearDualResult",
    "TrustRegionDualResult",
    "softplus_exact",
    "bernoulli_kl_logits",
    "binary_entropy_logits",
]


def softplus_exact(t: Tensor) -> Tensor:
    """log(1 + exp(t)) without the linear cut-off of ``F.softplus`` (threshold 20)."""
    return -F.logsigmoid(-t)


def logistic_parts(z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(sigmoid(z), sigmoid(-z), logsigmoid(z), logsigmoid(-z)) from one exp and one log1p.

    All four are accurate for any z (no cancellation): they are formed from
    e = exp(-|z|) and log1p(e) and then assigned by the sign of z.
    """
    a = z.abs()
    e = torch.exp(-a)
    l1 = torch.log1p(e)
    big = 1.0 / (1.0 + e)  # sigmoid(|z|)
    small = e * big  # sigmoid(-|z|)
    lbig = -l1  # logsigmoid(|z|)
    lsmall = -a - l1  # logsigmoid(-|z|)
    pos = z >= 0
    return (torch.where(pos, big, small), torch.where(pos, small, big),
            torch.where(pos, lbig, lsmall), torch.where(pos, lsmall, lbig))


def kl_from_parts(pz: tuple[Tensor, Tensor, Tensor, Tensor], lt: Tensor, lnt: Tensor) -> Tensor:
    """Bernoulli KL from :func:`logistic_parts` of z and logsigmoid(t), logsigmoid(-t)."""
    p, q, lp, lq = pz
    return (p * (lp - lt) + q * (lq - lnt)).clamp_min(0.0)


def entropy_from_parts(pz: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
    """Binary entropy H(sigmoid(z)) from :func:`logistic_parts` of z."""
    p, q, lp, lq = pz
    return -(p * lp + q * lq)


def bernoulli_kl_logits(z: Tensor, t: Tensor) -> Tensor:
    """KL(Bern(sigmoid(z)) || Bern(sigmoid(t))), elementwise, accurate near 0.

    Written as differences of log-sigmoids weighted by probabilities so that the
    absolute rounding error stays near machine epsilon even for |z| of hundreds.
    The duality gap of both duals is the mean of this quantity.
    """
    u = torch.sigmoid(z)
    v = torch.sigmoid(-z)
    kl = u * (F.logsigmoid(z) - F.logsigmoid(t)) + v * (F.logsigmoid(-z) - F.logsigmoid(-t))
    return kl.clamp_min(0.0)


def binary_entropy_logits(z: Tensor) -> Tensor:
    """H(sigmoid(z)) = -u log u - (1-u) log(1-u), computed without cancellation."""
    return torch.sigmoid(z) * softplus_exact(-z) + torch.sigmoid(-z) * softplus_exact(z)


def logit_of_box(e: Tensor, m: int) -> Tensor:
    """Logit of u = m e for a dual point e in (0, 1/m); clamps exact bounds slightly inside."""
    u = (e * m).clamp(torch.finfo(e.dtype).tiny, 1.0)
    one_minus = (1.0 - u).clamp_min(torch.finfo(e.dtype).tiny)
    return torch.log(u) - torch.log(one_minus)


class _SolveStatus:
    """``success`` shared by the solver results (they define ``converged`` and ``gap``)."""

    converged: Tensor
    gap: Tensor

    @property
    def success(self) -> bool:
        """True when every problem of the batch converged and all numbers are finite."""
        return bool(self.converged.all()) and bool(torch.isfinite(self.gap).all())


@dataclass
class LinearDualResult(_SolveStatus):
    """Solution of the linear dual (Claim 1) for one problem or a batch.

    Shapes: ``lam``, ``mu``: (..., n); ``w``: (..., d); scalars per problem:
    (...,). ``w`` is the primal point recovered from the dual point,
    w = (sum_i lam_i phi(x_i) - sum_j mu_j phi(y_j)) / C, and ``gap`` is
    f(w) - g(lam, mu) >= 0 (a mean Bernoulli KL), the accuracy certificate.
    ``dual_value`` is g = min_w f up to ``gap``: the generator's objective.
    """

    lam: Tensor
    mu: Tensor
    w: Tensor
    gap: Tensor
    dual_value: Tensor
    primal_value: Tensor
    converged: Tensor
    iterations: Tensor
    solver: str
    status: list[str] | None = None


@dataclass
class TrustRegionDualResult(_SolveStatus):
    """Solution of the score-linearised trust-region dual (Claim 2, methods.md 3b).

    With J the (2n, p) score Jacobian and eta = (lam, -mu) the step is
        s = (J^T eta - C w_k) * step_scale,   step_scale = 1 / (C + nu),
    and satisfies 1/2 ||s||^2 <= Delta; ``step_norm_sq`` is ||s||^2.
    ``model_value`` is the primal model m_k(s) at that step, ``dual_value`` the
    dual g(eta, nu), ``gap`` = model_value - dual_value >= 0.
    Shapes: ``lam``, ``mu``: (..., n); the rest (...,).
    """

    lam: Tensor
    mu: Tensor
    nu: Tensor
    step_scale: Tensor
    step_norm_sq: Tensor
    gap: Tensor
    dual_value: Tensor
    model_value: Tensor
    converged: Tensor
    iterations: Tensor
    solver: str
    status: list[str] | None = None


def check_finite(name: str, x: Tensor) -> None:
    """ValueError when ``x`` holds NaN or inf (one host sync; inputs only)."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(
            f"{name} contains NaN or inf values; check the generator / feature map output "
            "(e.g. a diverged generator) before calling the dual solver."
        )


def check_positive(name: str, value, allow_inf: bool = False) -> None:
    """ValueError unless every entry of ``value`` is > 0 (and finite unless allow_inf)."""
    t = torch.as_tensor(value, dtype=torch.float64)
    if bool(torch.isnan(t).any()) or not bool((t > 0).all()):
        raise ValueError(f"{name} must be > 0, got {value!r}; pass a positive {name} (e.g. C=1e-4, delta=1e-3).")
    if not allow_inf and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {value!r}.")


def as_batch_param(value, batch: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Broadcast a scalar or (B,) parameter to a (B,) tensor."""
    t = torch.as_tensor(value, dtype=dtype, device=device)
    if t.ndim == 0:
        return t.expand(batch).clone()
    if t.shape != (batch,):
        raise ValueError(f"per-problem parameter must be a scalar or shape ({batch},), got {tuple(t.shape)}")
    return t.clone()


SQRT2 = math.sqrt(2.0)
