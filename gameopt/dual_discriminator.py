"""Dualing-GAN discriminator updates (Li et al. 2017; methods.md section 3).

:class:`TrustRegionDualDiscriminator` replaces the discriminator's optimiser step
in a GAN loop. Both players minimise their own loss (gameopt convention); the
discriminator's loss for score function F(w, x) (a logit) and a batch of n real
x_i and n fake y_j is

    f(w) = C/2 ||w||^2 + 1/(2n) sum_i softplus(-F(w, x_i)) + 1/(2n) sum_j softplus(F(w, y_j)).

Models:

* ``"linear"``: F(w, x) = w^T phi(x) with a user feature map phi (e.g.
  :class:`RBFFeatures`). Each step solves the dual exactly for the minibatch
  (Claim 1): w <- w*. The generator's objective is the dual value at the optimum
  (weighted moment matching), see :meth:`TrustRegionDualDiscriminator.generator_loss`.
* ``"cost"``: linearise f: a normalised gradient step of length sqrt(2 Delta).
* ``"score"``: linearise F, keep the loss, solve the trust-region dual on the
  2n x 2n kernel K = J J^T of per-sample score gradients (torch.func), built
  parameter group by parameter group so J of the whole network is never held.

Radius control by the acceptance ratio rho = (f(w) - f(w + s)) / (m(0) - m(s))
(paper, appendix C): reject when rho <= ``accept_threshold``, shrink when
rho < ``shrink_below``, grow when rho > ``grow_above`` with the step on the boundary.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from . import solvers as _solvers
from .distributed import check_distributed, check_same_shapes, gather_rows
from .solvers._common import check_finite, check_positive, softplus_exact

__all__ = ["TrustRegionDualDiscriminator", "RBFFeatures", "DualStepStats", "DualSolverWarning", "DualSolverError"]

MODELS = ("linear", "cost", "score")


class DualSolverWarning(RuntimeWarning):
    """A dual solve failed (solver status or non-finite numbers); the step was skipped."""


class DualSolverError(RuntimeError):
    """Raised instead of :class:`DualSolverWarning` when ``on_failure="raise"``."""


RBF_CONVENTIONS = ("sqdist_over_bandwidth", "gaussian")


class RBFFeatures(nn.Module):
    """Gaussian RBF features on K anchor points a_k, in one of two kernel conventions.

    ``convention`` (d_k = ||x - a_k||):

    * ``"sqdist_over_bandwidth"`` (default): phi(x)_k = exp(-d_k^2 / bandwidth).
    * ``"gaussian"``: phi(x)_k = exp(-d_k^2 / (2 bandwidth^2)), the standard Gaussian kernel
      with ``bandwidth`` = sigma.

    The two agree when bandwidth_sqdist = 2 sigma^2 (sigma = 0.2 in the standard form is
    bandwidth 0.08 in the default one). The paper's 5-Gaussian toy uses 100 anchors drawn
    from the training data and "bandwidth 0.2"; its formula was lost in extraction. The
    default reads 0.2 as the divisor of d^2: a generator initialised near the origin, 2
    away from every anchor, then still gets gradient (e^-20), whereas the standard form
    with sigma = 0.2 gives e^-50 there.

    ``bias=True`` appends a constant feature (output (n, K + 1)). Without it F = 0 wherever
    all features vanish, so fakes far from every anchor get loss log 2 whatever w is, and
    the dual objective rewards the generator for hiding there (measured on the toy).

    Args:
        anchors: (K, D) anchor points (copied into a buffer).
        bandwidth: > 0; the divisor of d^2 or sigma, as ``convention`` says.
        bias: append a constant 1 feature.
        convention: ``"sqdist_over_bandwidth"`` or ``"gaussian"``.

    Input (n, D), output (n, K) or (n, K + 1); differentiable in x (the generator trains
    through it). Raises ValueError for anchors that are not (K, D), a bandwidth that is not
    positive and finite, or an unknown convention.
    """

    def __init__(self, anchors: Tensor, bandwidth: float = 0.2, bias: bool = False,
                 convention: str = "sqdist_over_bandwidth") -> None:
        super().__init__()
        if anchors.ndim != 2:
            raise ValueError(f"anchors must be (K, D), got shape {tuple(anchors.shape)}")
        check_positive("bandwidth", bandwidth)
        if convention not in RBF_CONVENTIONS:
            raise ValueError(f"unknown RBF convention {convention!r}; use one of {RBF_CONVENTIONS}")
        self.register_buffer("anchors", anchors.detach().clone())
        self.bandwidth = float(bandwidth)
        self.bias = bool(bias)
        self.convention = convention

    @property
    def sqdist_divisor(self) -> float:
        """The divisor of d^2 in the exponent: ``bandwidth`` or 2 ``bandwidth``^2."""
        return self.bandwidth if self.convention == "sqdist_over_bandwidth" else 2 * self.bandwidth**2

    def forward(self, x: Tensor) -> Tensor:
        d2 = (x.unsqueeze(-2) - self.anchors.to(x.dtype)).pow(2).sum(-1)
        phi = torch.exp(-d2 / self.sqdist_divisor)
        if self.bias:
            phi = torch.cat([phi, torch.ones_like(phi[..., :1])], -1)
        return phi

    def extra_repr(self) -> str:
        return (f"anchors={tuple(self.anchors.shape)}, bandwidth={self.bandwidth}, bias={self.bias}, "
                f"convention={self.convention!r}")


@dataclass
class DualStepStats:
    """What one :meth:`TrustRegionDualDiscriminator.step` did.

    ``loss_before``/``loss_after``: f at the old / new parameters on this batch
    (``loss_after`` is f(w + s) even when the step was rejected). ``rho``: the
    acceptance ratio (1 for the exact linear solve). ``delta``: radius used;
    ``next_delta``: radius for the next step. ``lam``/``mu``: dual variables of the
    real / fake samples (None for the cost model). ``gap``: duality gap of the solve.
    """

    model: str
    accepted: bool
    rho: float
    delta: float
    next_delta: float
    loss_before: float
    loss_after: float
    predicted_decrease: float
    step_norm: float
    gap: float = 0.0
    dual_value: float = math.nan
    nu: float = math.nan
    iterations: int = 0
    solver_failed: bool = False
    solver_status: str | None = None
    retries: int = 0
    lam: Tensor | None = field(default=None, repr=False)
    mu: Tensor | None = field(default=None, repr=False)


def _sym_mm(J: Tensor) -> Tensor:
    """J J^T computing only 3 of its 4 blocks (it is symmetric), in J's dtype."""
    m = J.shape[0]
    if m < 32:
        return J @ J.T
    h = m // 2
    top, bot = J[:h], J[h:]
    K11, K21, K22 = top @ top.T, bot @ top.T, bot @ bot.T
    return torch.cat([torch.cat([K11, K21.T], 1), torch.cat([K21, K22], 1)], 0)


def _gram(J: Tensor) -> Tensor:
    """J J^T in float64 (the kernel block of one parameter)."""
    return _sym_mm(J).double()


def _check_batch(real: Tensor, fake: Tensor) -> None:
    if real.shape[0] != fake.shape[0]:
        raise ValueError(
            f"real and fake batches must have the same number of samples n (the dual pairs n real with n fake); "
            f"got {real.shape[0]} real and {fake.shape[0]} fake. Draw as many generator samples as real ones."
        )
    if real.shape[0] == 0:
        raise ValueError("empty batch: need at least one real and one fake sample")
    check_finite("real batch", real)
    check_finite("fake batch", fake)


class TrustRegionDualDiscriminator:
    """Dual / trust-region discriminator step (Dualing GANs).

    Args:
        module: for ``"score"``/``"cost"`` the discriminator network mapping a batch
            (n, ...) to logits (n,) or (n, 1); its parameters w are updated in place.
            It must treat samples independently (no batch norm). For ``"linear"``
            the feature map phi: (n, ...) -> (n, d); the weights w (d,) are held here
            (``self.weight``).
        model: "linear" | "cost" | "score".
        C: weight decay of the discriminator loss (> 0); the paper uses 1e-4.
        delta: initial trust-region radius Delta (> 0): the step obeys 1/2 ||s||^2 <= Delta.
            Ignored by "linear", which solves exactly.
        solver: "torch" | "ipopt" | solver instance (for "linear" and "score").
        solver_options: passed to the solver's constructor when ``solver`` is a name.
        accept_threshold: accept the step when rho > this.
        shrink_below, grow_above: rho thresholds (0.25 / 0.75).
        shrink_factor, grow_factor: radius factors (1/4 and 2).
        min_delta, max_delta: radius bounds.
        max_retries: after a rejected step, re-solve with the shrunk radius this many
            times within the same call (score/cost); 0 keeps the cost per call fixed.
        jacobian_budget_bytes: per-sample gradients are materialised for groups of
            parameters of at most this many bytes (one vmap pass per group), then
            reduced into K; a single larger parameter forms its own group. When the whole
            J fits, it is kept until J^T eta is formed (saves one backward pass).
        per_sample: how per-sample score gradients are computed: "func" (torch.func
            vmap(grad), any module), "hooks" (one forward/backward plus per-layer outer
            products; nn.Linear / nn.Conv2d only), "auto" (hooks when possible).
        on_failure: "warn" (warn with :class:`DualSolverWarning`, flag the stats, leave
            the discriminator unchanged) or "raise" (:class:`DualSolverError`).
        distributed: data parallel under ``torch.distributed``; each rank passes its own
            equal share of the batch to :meth:`step` and :meth:`generator_loss`, and every
            rank makes exactly the full-batch step (tested against one process):

            * "cost": the gradient and the loss are all-reduced (mean): one all-reduce of
              parameter size plus one scalar per attempt; the work is split over ranks.
            * "linear" and "score": the dual couples every pair of samples (K = J J^T has
              cross-rank blocks J_r J_s^T), so the samples are all-gathered (2n inputs per
              rank, far smaller than the p numbers per sample that gathering J would
              cost) and every rank solves the full-batch dual; the kernel work is not
              split. The updated weights (and radius) are then broadcast from the group's
              first rank, so replicas cannot drift apart by rounding.
            * :meth:`generator_loss` of "linear" gathers the features (gradient path kept
              for the local fakes); average the generator's gradients over ranks as usual.
        process_group: the group to use (default: the world).
    """

    def __init__(
        self,
        module: nn.Module | Callable[[Tensor], Tensor],
        model: str = "score",
        C: float = 1e-4,
        delta: float = 1e-3,
        solver: "str | _solvers.DualSolver" = "torch",
        *,
        solver_options: dict | None = None,
        accept_threshold: float = 0.0,
        shrink_below: float = 0.25,
        grow_above: float = 0.75,
        shrink_factor: float = 0.25,
        grow_factor: float = 2.0,
        min_delta: float = 1e-12,
        max_delta: float = 1e6,
        max_retries: int = 0,
        jacobian_budget_bytes: int = 512 * 2**20,
        per_sample: str = "auto",
        on_failure: str = "warn",
        distributed: bool = False,
        process_group: Any = None,
    ) -> None:
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; use one of {MODELS}")
        check_positive("C", C)
        check_positive("delta", delta)
        if not (0 < shrink_factor < 1) or grow_factor < 1:
            raise ValueError("need 0 < shrink_factor < 1 <= grow_factor")
        if not shrink_below <= grow_above:
            raise ValueError("need shrink_below <= grow_above")
        if per_sample not in ("auto", "func", "hooks"):
            raise ValueError(f"per_sample must be 'auto', 'func' or 'hooks', got {per_sample!r}")
        if on_failure not in ("warn", "raise"):
            raise ValueError(f"on_failure must be 'warn' or 'raise', got {on_failure!r}")
        if model != "linear" and not isinstance(module, nn.Module):
            raise ValueError(f"model {model!r} needs the discriminator as an nn.Module")
        self.module = module
        self.model = model
        self.C = float(C)
        self.delta = float(delta)
        self.solver = _solvers.get_solver(solver, **(solver_options or {})) if model != "cost" else None
        self.accept_threshold = accept_threshold
        self.shrink_below, self.grow_above = shrink_below, grow_above
        self.shrink_factor, self.grow_factor = shrink_factor, grow_factor
        self.min_delta, self.max_delta = min_delta, max_delta
        self.max_retries = int(max_retries)
        self.jacobian_budget_bytes = int(jacobian_budget_bytes)
        self.per_sample = per_sample
        self._held_jacobian: dict[str, Tensor] | None = None
        self._held_factors: list | None = None
        self._held_rows: dict[int, Tensor] | None = None
        self.on_failure = on_failure
        self.weight: Tensor | None = None  # linear model only
        self.last_stats: DualStepStats | None = None
        self._cached_duals: tuple[Tensor, Tensor] | None = None
        check_distributed("TrustRegionDualDiscriminator", distributed)
        self.distributed = bool(distributed)
        self.process_group = process_group

    # ----------------------------------------------------------- public API
    def parameters(self) -> list[Tensor]:
        """The discriminator parameters w this object updates."""
        if self.model == "linear":
            return [] if self.weight is None else [self.weight]
        return [p for p in self.module.parameters() if p.requires_grad]

    def score(self, x: Tensor) -> Tensor:
        """F(w, x): logits of shape (n,)."""
        if self.model == "linear":
            phi = self.module(x)
            if self.weight is None:
                self.weight = torch.zeros(phi.shape[-1], dtype=phi.dtype, device=phi.device)
            return phi @ self.weight.to(phi.dtype)
        return self.module(x).reshape(x.shape[0])

    def loss(self, real: Tensor, fake: Tensor) -> Tensor:
        """The discriminator's loss f(w) on this batch (what :meth:`step` decreases)."""
        return self._loss_from_scores(self.score(real), self.score(fake), self._sq_norm())

    def generator_loss(self, real: Tensor | None, fake: Tensor, resolve: bool = False) -> Tensor:
        """Loss the generator minimises (differentiable w.r.t. ``fake``).

        * linear: -g(lam*, mu*) = ||sum_i lam_i phi(x_i) - sum_j mu_j phi(y_j)||^2 / (2C)
          - entropy terms, i.e. minus the dual value at the optimum (= -min_w f). By the
          envelope theorem its gradient is that of -min_w f: weighted moment matching.
          The dual variables of the last :meth:`step` are reused when its batch size
          matches (call it with the same real batch and the fake batch before
          ``detach``); ``resolve=True`` or a size mismatch solves again.
        * cost / score: the standard non-saturating loss mean(softplus(-F(w, y_j))),
          i.e. -mean log D(y_j); ``real`` is unused.
        """
        if self.model != "linear":
            return softplus_exact(-self.score(fake)).mean()
        if real is None:
            raise ValueError("the linear model's generator loss needs the real batch")
        _check_batch(real, fake.detach())
        phi_r = self.module(real)
        phi_f = self.module(fake)
        if self.distributed:  # the dual couples all samples: every rank forms the full-batch loss
            check_same_shapes({"real": real, "fake": fake}, self.process_group)
            phi_r = gather_rows(phi_r.detach(), self.process_group)
            phi_f = gather_rows(phi_f, self.process_group)
        n = phi_r.shape[0]
        if resolve or self._cached_duals is None or self._cached_duals[0].shape[-1] != n:
            with torch.no_grad():
                res = _solvers.solve_linear_dual(phi_r.detach(), phi_f.detach(), self.C, solver=self.solver)
            self._cached_duals = (res.lam, res.mu)
        lam, mu = (t.to(phi_f) for t in self._cached_duals)
        moment = lam @ phi_r - mu @ phi_f
        u = torch.cat([lam, mu]) * (2 * n)
        u = u.clamp(1e-300, 1.0)
        ent = -(torch.xlogy(u, u) + torch.xlogy(1 - u, 1 - u)).sum() / (2 * n)
        return (moment @ moment) / (2 * self.C) - ent

    @torch.no_grad()
    def step(self, real: Tensor, fake: Tensor) -> DualStepStats:
        """One discriminator update on a batch of n real and n fake samples.

        Updates the parameters in place (no autograd graph), returns the stats (also
        kept in ``last_stats``). Pass ``fake.detach()``.
        """
        if self.distributed:
            # Collectives first, checks after, on what every rank sees: a bad batch on one
            # rank then raises on every rank instead of leaving the others waiting.
            check_same_shapes({"real": real, "fake": fake}, self.process_group)
            if self.model != "cost":
                real = gather_rows(real.detach(), self.process_group)
                fake = gather_rows(fake.detach(), self.process_group)
            else:
                (ok,) = self._all_reduce_mean(
                    [(torch.isfinite(real).all() & torch.isfinite(fake).all()).to(torch.float64).reshape(1)]
                )
                if float(ok) < 1.0:
                    raise ValueError("a rank's real or fake batch contains NaN or inf values; check the "
                                     "generator output (e.g. a diverged generator) on every rank")
        _check_batch(real, fake)
        if self.model == "linear":
            stats = self._step_linear(real, fake)
        elif self.model == "cost":
            stats = self._step_cost(real, fake)
        else:
            stats = self._step_score(real, fake)
        if self.distributed and self.model != "cost":
            self._broadcast_state()
        self.last_stats = stats
        return stats

    def _all_reduce_mean(self, tensors: list[Tensor]) -> list[Tensor]:
        """Mean over ranks (one flat all-reduce); identity when not distributed."""
        if not self.distributed:
            return tensors
        import torch.distributed as dist

        flat = torch.cat([t.reshape(-1).double() for t in tensors])
        dist.all_reduce(flat, group=self.process_group)
        flat /= dist.get_world_size(self.process_group)
        parts = torch.split(flat, [t.numel() for t in tensors])
        return [part.view_as(t).to(t.dtype) for part, t in zip(parts, tensors)]

    def _broadcast_state(self) -> None:
        """Copy the group's first rank's weights and radius to every rank (guards against drift)."""
        import torch.distributed as dist

        ps = self.parameters()
        flat = torch.cat([p.detach().reshape(-1).double() for p in ps]
                         + [torch.tensor([self.delta], dtype=torch.float64, device=ps[0].device if ps else None)])
        src = 0 if self.process_group is None else dist.get_global_rank(self.process_group, 0)
        dist.broadcast(flat, src=src, group=self.process_group)
        offset = 0
        for p in ps:
            p.copy_(flat[offset: offset + p.numel()].view_as(p))
            offset += p.numel()
        self.delta = float(flat[-1])

    def monitor_stats(self) -> dict[str, Any]:
        """Radius, acceptance ratio, duality gap and dual variables of the last step, for :class:`gameopt.Monitor`."""
        out: dict[str, Any] = {"delta": self.delta}
        st = self.last_stats
        if st is not None:
            out.update(rho=st.rho, gap=st.gap, accepted=float(st.accepted), step_norm=st.step_norm,
                       dual_value=st.dual_value, solver_failed=float(st.solver_failed))
            if st.lam is not None:
                out["lam"] = st.lam
            if st.mu is not None:
                out["mu"] = st.mu
        return out

    def state_dict(self) -> dict:
        """Radius and (linear model) weights; the network's own parameters live in ``module``."""
        return {
            "delta": self.delta, "model": self.model, "C": self.C,
            "weight": None if self.weight is None else self.weight.detach().clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved (model must match)."""
        if state.get("model", self.model) != self.model:
            raise ValueError(f"state is for model {state['model']!r}, this discriminator uses {self.model!r}")
        check_positive("delta", state["delta"])
        self.delta = float(state["delta"])
        if state.get("weight") is not None:
            self.weight = state["weight"].detach().clone()

    # ------------------------------------------------------------ internals
    def _sq_norm(self) -> Tensor:
        ps = self.parameters()
        if not ps:
            return torch.zeros(())
        return sum((p.detach().double() ** 2).sum() for p in ps)

    def _loss_from_scores(self, f_real: Tensor, f_fake: Tensor, sq_norm: Tensor) -> Tensor:
        n = f_real.shape[0]
        data = (softplus_exact(-f_real.double()).sum() + softplus_exact(f_fake.double()).sum()) / (2 * n)
        return 0.5 * self.C * sq_norm.to(data.device) + data

    def _fail(self, msg: str, stats: DualStepStats) -> DualStepStats:
        if self.on_failure == "raise":
            raise DualSolverError(msg)
        warnings.warn(msg + "; the discriminator was left unchanged", DualSolverWarning, stacklevel=3)
        stats.solver_failed = True
        stats.solver_status = msg
        stats.accepted = False
        return stats

    def _radius_update(self, rho: float, on_boundary: bool) -> float:
        d = self.delta
        if not math.isfinite(rho) or rho < self.shrink_below:
            d = d * self.shrink_factor
        elif rho > self.grow_above and on_boundary:
            d = d * self.grow_factor
        return float(min(max(d, self.min_delta), self.max_delta))

    def _step_linear(self, real: Tensor, fake: Tensor) -> DualStepStats:
        phi_r, phi_f = self.module(real), self.module(fake)
        if self.weight is None:
            self.weight = torch.zeros(phi_r.shape[-1], dtype=phi_r.dtype, device=phi_r.device)
        f0 = float(self._loss_from_scores(phi_r @ self.weight, phi_f @ self.weight, self._sq_norm()))
        res = _solvers.solve_linear_dual(phi_r, phi_f, self.C, solver=self.solver)
        stats = DualStepStats(
            model="linear", accepted=True, rho=1.0, delta=math.inf, next_delta=self.delta, loss_before=f0,
            loss_after=float(res.primal_value), predicted_decrease=f0 - float(res.primal_value),
            step_norm=float((res.w.to(self.weight) - self.weight).norm()), gap=float(res.gap),
            dual_value=float(res.dual_value), iterations=int(res.iterations), lam=res.lam, mu=res.mu,
            solver_status=None if res.status is None else res.status[0],
        )
        if not res.success or not bool(torch.isfinite(res.w).all()):
            return self._fail(f"linear dual solve failed ({res.solver}: gap={float(res.gap):.3g}, "
                              f"status={stats.solver_status})", stats)
        self.weight = res.w.to(self.weight)
        self._cached_duals = (res.lam, res.mu)
        return stats

    def _params(self) -> dict[str, Tensor]:
        return {k: p for k, p in self.module.named_parameters() if p.requires_grad}

    def _batch_loss(self, x: Tensor, n: int) -> float:
        scores = self.module(x).reshape(x.shape[0])
        loss = self._loss_from_scores(scores[:n], scores[n:], self._sq_norm())
        if self.model == "cost":  # the cost model's batch is split over ranks
            (loss,) = self._all_reduce_mean([loss.reshape(1)])
        return float(loss)

    def _apply(self, params: dict[str, Tensor], steps: dict[str, Tensor]) -> None:
        for k, p in params.items():
            p.add_(steps[k].to(p.dtype))

    def _finish_trust_step(
        self, x: Tensor, n: int, params: dict[str, Tensor], steps: dict[str, Tensor], f0: float, model_value: float,
        stats: DualStepStats,
    ) -> DualStepStats:
        """Apply s, compute rho, accept or roll back, update the radius."""
        backup = {k: p.detach().clone() for k, p in params.items()}
        self._apply(params, steps)
        f1 = self._batch_loss(x, n)
        pred = f0 - model_value
        actual = f0 - f1
        if not math.isfinite(f1):
            rho = -math.inf
        elif pred <= 1e-15 * max(1.0, abs(f0)):
            rho = 1.0 if actual >= -1e-15 * max(1.0, abs(f0)) else -math.inf  # negligible step
        else:
            rho = actual / pred
        sq = float(sum((s.double() ** 2).sum() for s in steps.values()))
        on_boundary = 0.5 * sq >= (1 - 1e-6) * self.delta
        accepted = rho > self.accept_threshold
        if not accepted:
            for k, p in params.items():
                p.copy_(backup[k])
        stats.accepted, stats.rho, stats.loss_before, stats.loss_after = accepted, rho, f0, f1
        stats.predicted_decrease, stats.step_norm, stats.delta = pred, math.sqrt(sq), self.delta
        self.delta = self._radius_update(rho, on_boundary)
        stats.next_delta = self.delta
        return stats

    def _step_cost(self, real: Tensor, fake: Tensor) -> DualStepStats:
        n = real.shape[0]
        x = torch.cat([real, fake])
        params = self._params()
        stats = DualStepStats(model="cost", accepted=False, rho=math.nan, delta=self.delta, next_delta=self.delta,
                              loss_before=math.nan, loss_after=math.nan, predicted_decrease=math.nan, step_norm=0.0)
        for attempt in range(self.max_retries + 1):
            with torch.enable_grad():
                scores = self.module(x).reshape(x.shape[0])
                sq = sum((p**2).sum() for p in params.values())
                f = 0.5 * self.C * sq + (softplus_exact(-scores[:n]).sum() + softplus_exact(scores[n:]).sum()) / (2 * n)
                grads = torch.autograd.grad(f, list(params.values()))
            f0_t = self._loss_from_scores(scores[:n].detach(), scores[n:].detach(), self._sq_norm())
            *grads, f0_t = self._all_reduce_mean([*grads, f0_t.reshape(1)])  # mean over ranks: full batch
            f0 = float(f0_t)
            gnorm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
            if not math.isfinite(gnorm) or gnorm == 0.0:
                if not math.isfinite(gnorm):
                    return self._fail("non-finite gradient in the cost-linearised step", stats)
                stats.accepted, stats.rho, stats.loss_before, stats.loss_after = True, 1.0, f0, f0
                return stats
            scale = math.sqrt(2 * self.delta) / gnorm
            steps = {k: -scale * g for k, g in zip(params, grads)}
            stats.retries = attempt
            stats = self._finish_trust_step(x, n, params, steps, f0, f0 - math.sqrt(2 * self.delta) * gnorm, stats)
            if stats.accepted:
                break
        return stats

    # -------------------------------------------------------------- score model
    def _param_groups(self, params: dict[str, Tensor], m: int) -> list[list[str]]:
        groups: list[list[str]] = []
        cur: list[str] = []
        cur_bytes = 0
        for k, p in params.items():
            b = m * p.numel() * p.element_size()
            if cur and cur_bytes + b > self.jacobian_budget_bytes:
                groups.append(cur)
                cur, cur_bytes = [], 0
            cur.append(k)
            cur_bytes += b
        if cur:
            groups.append(cur)
        return groups

    def kernel(self, x: Tensor, keep_jacobian: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Empirical NTK of the scores on samples x (m, ...): (K (m, m), J w (m,), F (m,)), float64.

        Per-sample gradients are formed one parameter (group) at a time, reduced into K
        and J w, and freed before the next, so J of the whole network is never held
        (unless ``keep_jacobian`` and it fits ``jacobian_budget_bytes``: then the blocks
        are kept in ``self._held_jacobian`` to form J^T eta without another backward).

        Two ways to get the per-sample gradients (``per_sample``):
        "func": torch.func ``vmap(grad_and_value)`` over samples, any module, in parameter
        groups of at most ``jacobian_budget_bytes``; "hooks": one forward and one backward
        of sum_i F(x_i) give every layer's per-sample inputs a_i and output gradients
        delta_i (samples are independent), and nn.Linear / nn.Conv2d weight gradients are
        delta_i a_i^T (unfolded for convolutions) - much faster than vmap for convolutions
        on the CPU. For a convolution with few output positions P the layer's kernel block
        is formed from Gram matrices of the m P positions without materialising its rows
        of J. "auto" uses hooks when every trainable parameter belongs to such a layer.
        """
        self._held_jacobian = None
        self._held_factors = None
        if self.per_sample == "hooks" or (self.per_sample == "auto" and self._hooks_supported()):
            return self._kernel_hooks(x, keep_jacobian)
        return self._kernel_func(x, keep_jacobian)

    def _hookable_layers(self) -> list[nn.Module]:
        return [mod for mod in self.module.modules()
                if any(p.requires_grad for p in mod.parameters(recurse=False))]

    def _hooks_supported(self) -> bool:
        for mod in self._hookable_layers():
            if isinstance(mod, nn.Linear):
                continue
            if isinstance(mod, nn.Conv2d) and mod.groups == 1 and mod.padding_mode == "zeros" \
                    and not isinstance(mod.padding, str):
                continue
            return False
        return True

    def _kernel_func(self, x: Tensor, keep: bool) -> tuple[Tensor, Tensor, Tensor]:
        params = self._params()
        buffers = dict(self.module.named_buffers())
        m = x.shape[0]
        K = torch.zeros(m, m, dtype=torch.float64, device=x.device)
        Jw = torch.zeros(m, dtype=torch.float64, device=x.device)
        groups = self._param_groups(params, m)
        held: dict[str, Tensor] | None = {} if keep and len(groups) == 1 else None
        F = None
        for names in groups:
            group = {k: params[k].detach() for k in names}
            frozen = {k: v.detach() for k, v in params.items() if k not in group}

            def f_single(g: dict[str, Tensor], xi: Tensor, frozen=frozen) -> Tensor:
                out = functional_call(self.module, ({**frozen, **g}, buffers), (xi.unsqueeze(0),))
                return out.reshape(())

            grads, values = vmap(grad_and_value(f_single), in_dims=(None, 0))(group, x)
            if F is None:
                F = values.double()
            for k in names:
                Jk = grads[k].reshape(m, -1)
                K += _gram(Jk)
                Jw += (Jk @ group[k].reshape(-1)).double()
                if held is not None:
                    held[k] = Jk
                del Jk
            del grads
        assert F is not None
        self._held_jacobian = held
        return K, Jw, F

    def _kernel_hooks(self, x: Tensor, keep: bool) -> tuple[Tensor, Tensor, Tensor]:
        m = x.shape[0]
        layers = self._hookable_layers()
        inputs: dict[nn.Module, Tensor] = {}
        outputs: dict[nn.Module, Tensor] = {}

        def hook(mod, inp, out):
            inputs[mod] = inp[0].detach()
            outputs[mod] = out

        handles = [mod.register_forward_hook(hook) for mod in layers]
        try:
            with torch.enable_grad():
                scores = self.module(x).reshape(m)
                deltas = torch.autograd.grad(scores.sum(), [outputs[mod] for mod in layers])
        finally:
            for h in handles:
                h.remove()
        K = torch.zeros(m, m, dtype=torch.float64, device=x.device)
        Jw = torch.zeros(m, dtype=torch.float64, device=x.device)
        factors: list[tuple[nn.Module, Tensor, Tensor]] = []
        held_rows: dict[int, Tensor] = {}
        held_bytes = 0
        for mod, delta in zip(layers, deltas):
            a = inputs[mod]
            # per-sample weight gradient of sample i is D_i U_i^T, D_i: (out, P), U_i: (in, P)
            if isinstance(mod, nn.Linear):
                D = delta.reshape(m, -1, delta.shape[-1]).transpose(1, 2)  # (m, out, T)
                U = a.reshape(m, -1, a.shape[-1]).transpose(1, 2)  # (m, in, T)
            else:
                U = nn.functional.unfold(a, mod.kernel_size, dilation=mod.dilation, padding=mod.padding,
                                         stride=mod.stride)  # (m, in k^2, P)
                D = delta.reshape(m, delta.shape[1], -1)  # (m, out, P)
            out_f, in_f, P = D.shape[1], U.shape[1], D.shape[2]
            w = mod.weight if mod.weight.requires_grad else None
            b = mod.bias if mod.bias is not None and mod.bias.requires_grad else None
            if w is not None:
                if (m * P) ** 2 * (out_f + in_f) < m * out_f * in_f * (P + m):
                    # <D_i U_i^T, D_j U_j^T> = sum_pq (D_i^T D_j)_pq (U_i^T U_j)_pq: two Gram
                    # matrices of the (m P) positions instead of m materialised gradients
                    Df = D.transpose(1, 2).reshape(m * P, out_f)
                    Uf = U.transpose(1, 2).reshape(m * P, in_f)
                    prod = _sym_mm(Df) * _sym_mm(Uf)
                    K += prod.reshape(m, P, m, P).sum((1, 3)).double()
                    Jw += torch.einsum("iop,oc,icp->i", D, w.detach().reshape(out_f, in_f), U).double()
                else:
                    Jp = (D @ U.transpose(1, 2)).reshape(m, -1)
                    K += _gram(Jp)
                    Jw += (Jp @ w.detach().reshape(-1)).double()
                    nbytes = Jp.numel() * Jp.element_size()
                    if keep and held_bytes + nbytes <= self.jacobian_budget_bytes:
                        held_rows[id(w)] = Jp  # J^T eta for this weight is then one matvec
                        held_bytes += nbytes
                    del Jp
            if b is not None:
                gb = D.sum(-1)
                K += _gram(gb)
                Jw += (gb @ b.detach().reshape(-1)).double()
            if keep:
                factors.append((mod, D, None if (w is None or id(w) in held_rows) else U))
        self._held_factors = factors if keep else None
        self._held_rows = held_rows if keep else None
        self._held_jacobian = None
        return K, Jw, scores.detach().double()

    def _jt_eta_from_factors(self, eta: Tensor) -> dict[int, Tensor]:
        """J^T eta per parameter (keyed by id) as eta-weighted sums of per-sample gradients."""
        out: dict[int, Tensor] = {}
        rows = self._held_rows or {}
        for mod, D, U in self._held_factors or []:
            e = eta.to(D)
            if mod.weight.requires_grad:
                if id(mod.weight) in rows:
                    out[id(mod.weight)] = (rows[id(mod.weight)].T @ e).reshape(mod.weight.shape)
                else:  # sum_i e_i D_i U_i^T as one (out, m P) x (m P, in) product
                    m, o, P = D.shape
                    g = (D * e[:, None, None]).permute(1, 0, 2).reshape(o, m * P) @ U.permute(0, 2, 1).reshape(m * P, -1)
                    out[id(mod.weight)] = g.reshape(mod.weight.shape)
            if mod.bias is not None and mod.bias.requires_grad:
                out[id(mod.bias)] = e @ D.sum(-1)
        return out

    def _step_score(self, real: Tensor, fake: Tensor) -> DualStepStats:
        n = real.shape[0]
        x = torch.cat([real, fake])
        params = self._params()
        K, Jw, Fk = self.kernel(x, keep_jacobian=True)
        W = self._sq_norm()
        f0 = float(self._loss_from_scores(Fk[:n], Fk[n:], W))
        stats = DualStepStats(model="score", accepted=False, rho=math.nan, delta=self.delta, next_delta=self.delta,
                              loss_before=f0, loss_after=math.nan, predicted_decrease=math.nan, step_norm=0.0)
        for attempt in range(self.max_retries + 1):
            res = _solvers.solve_trust_region_dual(K, Jw, Fk, W, self.C, self.delta, solver=self.solver)
            stats.gap, stats.dual_value, stats.nu = float(res.gap), float(res.dual_value), float(res.nu)
            stats.iterations, stats.lam, stats.mu, stats.retries = int(res.iterations), res.lam, res.mu, attempt
            stats.solver_status = None if res.status is None else res.status[0]
            if not res.success:
                return self._fail(f"trust-region dual solve failed ({res.solver}: gap={float(res.gap):.3g}, "
                                  f"status={stats.solver_status})", stats)
            eta = torch.cat([res.lam, -res.mu])
            held = self._held_jacobian
            if held is not None:  # J^T eta from the kept per-sample gradients
                jt = [(held[k].T @ eta.to(held[k])).reshape(p.shape) for k, p in params.items()]
            elif self._held_factors is not None:  # from the kept per-layer factors (hooks path)
                by_id = self._jt_eta_from_factors(eta)
                jt = [by_id[id(p)] for p in params.values()]
            else:  # one backward pass of sum_i eta_i F(x_i)
                with torch.enable_grad():
                    scores = self.module(x).reshape(x.shape[0])
                    jt = torch.autograd.grad((eta.to(scores) * scores).sum(), list(params.values()))
            scale = float(res.step_scale)
            steps = {k: (g.double() - self.C * p.detach().double()) * scale for (k, p), g in zip(params.items(), jt)}
            sq = float(sum((s**2).sum() for s in steps.values()))
            if not math.isfinite(sq):
                return self._fail("non-finite trust-region step", stats)
            if 0.5 * sq > self.delta:  # rounding in the kernel-only solve; see solvers.trust_region_step
                r = math.sqrt(self.delta / (0.5 * sq))
                steps = {k: s * r for k, s in steps.items()}
            stats = self._finish_trust_step(x, n, params, steps, f0, float(res.model_value), stats)
            if stats.accepted:
                break
        self._held_jacobian = None
        self._held_factors = self._held_rows = None
        return stats
