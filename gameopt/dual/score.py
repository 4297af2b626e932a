"""The score-linearised trust-region discriminator: the dual on the kernel K = J J^T (Claim 2, model B)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from .. import solvers as _solvers
from .base import DualStepStats, StepFailed
from .per_sample import KernelNotPSD, PerSampleKernel, ScoreKernel
from .radius import RadiusControl
from .trust_region import LinearisedTrustRegion, Proposal

__all__ = ["ScoreLinearisedDiscriminator"]


def _sq_norm_tensor(tensors) -> Tensor:
    """``sum ||t||^2`` accumulated in float64, a 0-d device tensor (no host read)."""
    return torch.stack([torch.linalg.vector_norm(t, dtype=torch.float64) for t in tensors]).square().sum()


class _Local:
    """The score model at w: the kernel, f(w), and the batch for a fallback J^T eta."""

    def __init__(self, kernel: ScoreKernel, f0: float, x: Tensor, W: Tensor) -> None:
        self.kernel, self.f0, self.x, self.W = kernel, f0, x, W


class ScoreLinearisedDiscriminator(LinearisedTrustRegion):
    """Trust-region step on linearised scores with the loss kept (methods.md 3b, B).

    F(w + s, x) ~ F(w, x) + s^T grad_w F(w, x); the sub-problem's dual has 2n + 1
    variables whatever the network's size and needs only K = J J^T, J w, the scores and
    ||w||^2 (:class:`~gameopt.dual.per_sample.PerSampleKernel`). The step is
    s = (J^T eta - C w) / (C + nu) with eta = (lam, -mu).

    Args:
        module: the discriminator network mapping (n, ...) to logits (n,) or (n, 1). It must
            score samples independently: batch norm only in eval mode (checked before every
            step). Spectral norm is served by the hooks route; weight norm and other
            reparametrisations by ``per_sample="func"`` (what ``"auto"`` picks for them).
        C, delta, radius, max_retries, on_failure: see
            :class:`~gameopt.dual.trust_region.LinearisedTrustRegion`.
        solver: "torch" | "ipopt" | solver instance; ``solver_options`` go to its constructor.
        jacobian_budget_bytes: most bytes of per-sample gradients held at once.
        per_sample: "auto" | "hooks" | "func" (see :mod:`gameopt.dual.per_sample`).
        distributed: the dual couples every pair of samples (K has cross-rank blocks), so
            the samples are all-gathered (2n inputs per rank, far fewer numbers than J) and
            every rank solves the full-batch dual; the kernel work is not split. The updated
            weights and radius are then broadcast from the group's first rank.
        process_group: the group to use (default: the world).
    """

    model = "score"

    def __init__(
        self,
        module: nn.Module,
        C: float = 1e-4,
        delta: float = 1e-3,
        solver: "str | _solvers.DualSolver" = "torch",
        *,
        solver_options: dict | None = None,
        radius: RadiusControl | None = None,
        max_retries: int = 0,
        jacobian_budget_bytes: int = 512 * 2**20,
        per_sample: str = "auto",
        on_failure: str = "warn",
        distributed: bool = False,
        process_group: Any = None,
    ) -> None:
        super().__init__(module, C, delta, radius=radius, max_retries=max_retries, on_failure=on_failure,
                         distributed=distributed, process_group=process_group)
        self.jacobian = PerSampleKernel(module, per_sample, jacobian_budget_bytes)
        self.solver = _solvers.get_solver(solver, **(solver_options or {}))
        self._last_kernel: ScoreKernel | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_last_kernel"] = None  # scratch of the last kernel() call: not part of a copy
        return state

    @property
    def per_sample(self) -> str:
        """How per-sample score gradients are computed ("auto" | "hooks" | "func")."""
        return self.jacobian.method

    def kernel(self, x: Tensor, keep_jacobian: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Empirical NTK of the scores on samples x (m, ...): (K (m, m), J w (m,), F (m,)), float64.

        ``keep_jacobian`` keeps what J^T eta needs until the next call.
        """
        self.jacobian.check()
        self._last_kernel = self.jacobian(x, keep_jacobian)
        k = self._last_kernel
        return k.K, k.Jw, k.scores

    def _jt_eta_from_factors(self, eta: Tensor) -> dict[int, Tensor]:
        """J^T eta of the last :meth:`kernel` call with ``keep_jacobian``, keyed by parameter id."""
        assert self._last_kernel is not None
        jt = self._last_kernel.jt_eta(eta)
        assert jt is not None
        return {id(p): g for p, g in zip(self._params().values(), jt)}

    def _param_groups(self, params: dict[str, Tensor], m: int) -> list[list[str]]:
        return self.jacobian.param_groups(params, m)

    def _check_module(self) -> None:
        self.jacobian.check()

    # ------------------------------------------------------- the model
    def _local_model(self, x: Tensor, n: int) -> _Local:
        batch_ok = self._batch_ok()
        with record_function("gameopt.dual.kernel"):
            try:
                kernel = self.jacobian(x, keep=True, also=batch_ok)  # one host read, the batch check with it
            except KernelNotPSD as e:
                raise StepFailed(str(e)) from None
        if not kernel.also_ok:
            self._raise_bad_batch()
        self._batch_checks = None  # read: the acceptance test need not read it again
        if not kernel.finite:
            raise StepFailed("the discriminator's scores or score gradients contain NaN or inf on a finite batch "
                             "(the discriminator has diverged; the generator is not at fault)")
        W = self._sq_norm()
        f0 = self._loss_from_scores(kernel.scores[:n], kernel.scores[n:], W)
        return _Local(kernel, f0, x, W)

    def _loss_before(self, local: _Local) -> Tensor:
        return local.f0

    def _solve(self, local: _Local, delta: float, stats: DualStepStats) -> Proposal | None:
        k = local.kernel
        with record_function("gameopt.dual.solve"):
            # K was checked finite and made PSD by the kernel build: no re-validation (no reads)
            res = _solvers.solve_trust_region_unchecked(k.K, k.Jw, k.scores, local.W.to(k.K), self.C, delta,
                                                        self.solver)
        stats.lam, stats.mu = res.lam, res.mu
        stats.solver_status = None if res.status is None else res.status[0]
        eta = torch.cat([res.lam, -res.mu])
        params = self._params()
        with record_function("gameopt.dual.jt_eta"):
            jt = k.jt_eta(eta)
            if jt is None:  # one backward pass of sum_i eta_i F(x_i)
                with torch.enable_grad():
                    scores = self.module(local.x).reshape(local.x.shape[0])
                    jt = list(torch.autograd.grad((eta.to(scores) * scores).sum(), list(params.values())))
        scale = res.step_scale
        steps = {k_: (g.to(p.dtype) - self.C * p.detach()) * scale.to(p.dtype) for (k_, p), g in zip(params.items(), jt)}
        sq = _sq_norm_tensor(steps.values())
        # rounding in the kernel-only solve can overshoot the ball slightly (see
        # solvers.trust_region_step): scale back onto the boundary, on the device
        over = 0.5 * sq > delta
        r = torch.where(over, torch.sqrt(delta / (0.5 * sq).clamp_min(torch.finfo(sq.dtype).tiny)), torch.ones_like(sq))
        steps = {k_: s * r.to(s.dtype) for k_, s in steps.items()}
        sq = torch.where(over, _sq_norm_tensor(steps.values()), sq)
        solved = res.converged & torch.isfinite(res.gap)

        def failure() -> str:
            if not bool(solved):
                status = stats.solver_status
                return f"trust-region dual solve failed ({res.solver}: gap={float(res.gap):.3g}, status={status})"
            return "non-finite trust-region step"

        return Proposal(steps, res.model_value, sq, ok=solved & torch.isfinite(sq), failure=failure,
                        extras={"gap": res.gap, "dual_value": res.dual_value, "nu": res.nu,
                                "iterations": res.iterations})
