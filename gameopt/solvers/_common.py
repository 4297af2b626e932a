"""Shared maths and input checks for the Dualing-GAN dual solvers.

Notation (methods.md section 3). A problem has m = 2n samples, the n real ones
first. ``y`` is +1 for real and -1 for fake rows. The solvers work with the
sign-adjusted rows a_k = y_k * phi_k (linear) or a_k = y_k * J_k (trust region),
so that every sample's loss is softplus(-(c_k + a_k^T s)) and the dual point is a
vector e in [0, 1/m]^m with lam = e[:n] and mu = e[n:].
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from ..errors import GameInputError

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

    Shapes: ``...`` is the batch of problems (empty for one problem); n samples per side,
    d features.

    Args:
        lam: (..., n) dual variables of the real samples.
        mu: (..., n) dual variables of the fake samples.
        w: (..., d) the primal point recovered from the dual point,
            ``w = (sum_i lam_i phi(x_i) - sum_j mu_j phi(y_j)) / C``.
        gap: (...,) ``f(w) - g(lam, mu) >= 0`` (a mean Bernoulli KL), the accuracy certificate.
        dual_value: (...,) ``g = min_w f`` up to ``gap``: the generator's objective.
        primal_value: (...,) ``f(w)``.
        converged: bool (...,): the gap met the solver's ``tol``.
        iterations: Newton (or Ipopt) iterations, (...,).
        solver: the solver's name.
        status: per problem, why it did not converge (None when all did, or not checked).
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

    With J the (2n, p) score Jacobian and ``eta = (lam, -mu)`` the step is
    ``s = (J^T eta - C w_k) * step_scale``; it satisfies ``1/2 ||s||^2 <= Delta``.
    Shapes: ``...`` is the batch of problems (empty for one problem).

    Args:
        lam: (..., n) dual variables of the real samples.
        mu: (..., n) dual variables of the fake samples.
        nu: (...,) multiplier of the trust-region constraint.
        step_scale: (...,) ``1 / (C + nu)``.
        step_norm_sq: (...,) ``||s||^2``.
        gap: (...,) ``model_value - dual_value >= 0``.
        dual_value: (...,) the dual ``g(eta, nu)``.
        model_value: (...,) the primal model ``m_k(s)`` at the step.
        converged: bool (...,): the gap met the solver's ``tol``.
        iterations: solver iterations, (...,).
        solver: the solver's name.
        status: per problem, why it did not converge (None when all did, or not checked).
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


class Checks:
    """Input checks on device tensors, read from the host together (one sync for all).

    ``add(ok, fail)`` records a 0-d bool tensor ``ok`` and the function raising the error
    when it is False; :meth:`run` reads all flags at once and calls the first failing
    ``fail`` (which may read more: it runs only on bad input). Checks of CPU tensors and
    Python numbers run at once, without being deferred (they cost no sync).
    """

    #: Defer CPU checks too (tests set it to run the device path on a machine without one).
    defer_on_cpu: bool = False

    def __init__(self) -> None:
        self.flags: list[Tensor] = []
        self.fails: list = []

    def add(self, ok: Tensor, fail) -> None:
        """Defer the check ``ok`` (0-d bool tensor); ``fail()`` raises when it is False."""
        if ok.device.type == "cpu" and not self.defer_on_cpu:
            if not bool(ok):
                fail()
            return
        self.flags.append(ok.reshape(()))
        self.fails.append(fail)

    def run(self) -> None:
        """Read every deferred flag (one host read) and raise the first failure."""
        if not self.flags:
            return
        dev = self.flags[0].device
        flags = torch.stack([f.to(dev) for f in self.flags])
        if bool(flags.all()):
            return
        for ok, fail in zip(flags.tolist(), self.fails):
            if not ok:
                fail()


def check_finite(name: str, x: Tensor, source: str = "the inputs", checks: Checks | None = None) -> None:
    """GameInputError when ``x`` holds NaN or inf (one host sync, or deferred to ``checks``).

    ``source`` says where the values came from, for the message.
    """
    def fail() -> None:
        raise GameInputError(
            f"{name} contains NaN or inf values; {source} must be finite before the dual solve."
        )

    ok = torch.isfinite(x).all()
    if checks is not None:
        checks.add(ok, fail)
    elif not bool(ok):
        fail()


def check_positive(name: str, value, allow_inf: bool = False, allow_zero: bool = False, hint: str | None = None,
                   checks: Checks | None = None) -> None:
    """GameInputError unless every entry of ``value`` is > 0 (>= 0 with allow_zero; finite unless allow_inf).

    A Python number is checked on the host (no tensor is built); a tensor on a device is
    checked there and, with ``checks``, read together with the other deferred checks.
    """
    def fail_low() -> None:
        bound = ">= 0" if allow_zero else "> 0"
        raise GameInputError(f"{name} must be {bound}, got {value!r}; "
                             f"{hint or f'pass a positive {name} (e.g. C=1e-4, delta=1e-3)'}.")

    def fail_inf() -> None:
        raise GameInputError(f"{name} must be finite, got {value!r}.")

    if isinstance(value, numbers.Real):
        v = float(value)
        if math.isnan(v) or not (v >= 0 if allow_zero else v > 0):
            fail_low()
        if not allow_inf and math.isinf(v):
            fail_inf()
        return
    if not isinstance(value, Tensor):
        try:
            value = torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise GameInputError(f"{name} must be a number or a tensor of numbers, got {value!r}.") from None
    if value.is_complex():
        raise GameInputError(f"{name} must be a number or a tensor of numbers, got {value!r}.")
    t = value.detach()
    low_ok = ((t >= 0) if allow_zero else (t > 0)).all() & ~torch.isnan(t).any()
    ok = low_ok & torch.isfinite(t).all() if not allow_inf else low_ok

    def fail() -> None:
        if not bool(low_ok):
            fail_low()
        fail_inf()

    if checks is not None:
        checks.add(ok, fail)
    elif not bool(ok):
        fail()


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high], or GameInputError naming the option and its range."""
    if not _is_int(value) or value < low or (high is not None and value > high):
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise GameInputError(f"{name} must be an int {rng}, got {value!r}.")
    return int(value)


def check_tol(tol) -> float:
    """``tol`` as a float in (0, inf), or GameInputError."""
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not (math.isfinite(tol) and tol > 0):
        raise GameInputError(f"tol (duality-gap target) must be a finite float > 0, got {tol!r}.")
    return float(tol)


def unconverged_status(res, trace_k: Tensor, C: Tensor, tol: float, dtype: torch.dtype, max_iter: int) -> list[str]:
    """One line per problem: "converged", or why not and what to change (host reads; failures only).

    ``kappa = trace(K) / (4 m C)`` bounds the condition of the Newton system; the duality gap
    cannot be certified much below ``(kappa * eps)^2`` in a dtype with unit rounding eps.
    """
    m = res.lam.shape[-1] * 2
    kappa = (trace_k.double().cpu() / (4 * m * C.double().cpu())).tolist()
    gaps, iters, ok = res.gap.double().cpu().tolist(), res.iterations.cpu().tolist(), res.converged.cpu().tolist()
    eps = torch.finfo(dtype).eps
    out = []
    for g, it, k, good in zip(gaps, iters, kappa, ok):
        if good:
            out.append("converged")
            continue
        msg = f"not converged: duality gap {g:.3g} > tol {tol:.3g} after {it} iterations (max_iter {max_iter}); "
        if not math.isfinite(k) or (k * eps) ** 2 > tol:
            msg += (f"the problem is too ill-conditioned for {dtype} (trace(K) / (4 m C) = {k:.3g}, so rounding limits "
                    f"the certified gap to about ({k:.1g} * {eps:.1g})^2): "
                    + ("use dtype=torch.float64, " if dtype != torch.float64 else "")
                    + "use a larger C or features / scores of smaller norm")
        else:
            msg += "raise max_iter (or tol)"
        out.append(msg)
    return out


def as_batch_param(value, batch: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Broadcast a scalar or (B,) parameter to a (B,) tensor (a number is filled on the device, no copy)."""
    if isinstance(value, numbers.Real):
        return torch.full((batch,), float(value), dtype=dtype, device=device)
    t = torch.as_tensor(value, dtype=dtype, device=device)
    if t.ndim == 0:
        return t.expand(batch).clone()
    if t.shape != (batch,):
        raise GameInputError(f"per-problem parameter must be a scalar or shape ({batch},), got {tuple(t.shape)}")
    return t.clone()


SQRT2 = math.sqrt(2.0)
