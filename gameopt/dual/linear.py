"""The linear dual discriminator: F(w, x) = w^T phi(x), solved exactly per minibatch (Claim 1)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .. import solvers as _solvers
from ..distributed import check_same_shapes, gather_rows
from ..errors import GameInputError
from .base import DualStepStats, StepFailed, TrustRegionDualDiscriminator, check_batch

__all__ = ["LinearDualDiscriminator"]


class LinearDualDiscriminator(TrustRegionDualDiscriminator):
    """Linear discriminator F(w, x) = w^T phi(x) on a fixed feature map (methods.md 3a).

    Each :meth:`step` solves the discriminator's dual exactly for the minibatch and sets
    w <- w* = (sum_i lam_i phi(x_i) - sum_j mu_j phi(y_j)) / C. The generator minimises
    minus the dual value at the optimum (weighted moment matching), see
    :meth:`generator_loss`. There is no trust region: ``delta`` is ``inf``.

    Args:
        features: the feature map phi: (n, ...) -> (n, d), e.g.
            :class:`~gameopt.dual.RBFFeatures`; it is not trained. The weights w (d,) are
            held here (``self.weight``), created as zeros on the first call.
        C: weight decay of the discriminator loss (> 0); the paper uses 1e-4.
        solver: "torch" | "ipopt" | a solver instance; ``solver_options`` go to its constructor.
        on_failure: "warn" or "raise" (see :class:`~gameopt.dual.TrustRegionDualDiscriminator`).
        distributed: the dual couples every pair of samples, so the samples are all-gathered
            (2n inputs per rank) and every rank solves the full-batch dual; the weights
            are then broadcast from the group's first rank. :meth:`generator_loss` gathers
            the features (gradient path kept for the local fakes); average the generator's
            gradients over ranks as usual.
        process_group: the group to use (default: the world).
    """

    model = "linear"

    def __init__(
        self,
        features: nn.Module | Callable[[Tensor], Tensor],
        C: float = 1e-4,
        solver: "str | _solvers.DualSolver" = "torch",
        *,
        solver_options: dict | None = None,
        on_failure: str = "warn",
        distributed: bool = False,
        process_group: Any = None,
    ) -> None:
        super().__init__(features, C, on_failure=on_failure, distributed=distributed, process_group=process_group)
        self.solver = _solvers.get_solver(solver, **(solver_options or {}))
        self.weight: Tensor | None = None
        self._cached_duals: tuple[Tensor, Tensor] | None = None

    def parameters(self) -> list[Tensor]:
        """``[self.weight]`` once it exists, else ``[]``."""
        return [] if self.weight is None else [self.weight]

    def features(self, x: Tensor) -> Tensor:
        """phi(x) of shape (n, d); creates the zero weights on the first call.

        Raises:
            GameInputError: ``d`` differs from the weights' length (a checkpoint of another feature map).
        """
        phi = self.module(x)
        if self.weight is None:
            self.weight = torch.zeros(phi.shape[-1], dtype=phi.dtype, device=phi.device)
        elif phi.shape[-1] != self.weight.shape[0]:
            raise GameInputError(
                f"the feature map gives {phi.shape[-1]} features but the weights have {self.weight.shape[0]} "
                "entries (a checkpoint of another feature map?)"
            )
        return phi

    def score(self, x: Tensor) -> Tensor:
        """F(w, x) = phi(x) w, shape (n,)."""
        phi = self.features(x)
        return phi @ self.weight.to(phi.dtype)

    def generator_loss(self, real: Tensor | None, fake: Tensor, resolve: bool = False) -> Tensor:
        """-g(lam*, mu*) = ||sum_i lam_i phi(x_i) - sum_j mu_j phi(y_j)||^2 / (2C) - entropy terms.

        Minus the dual value at the optimum (= -min_w f). By the envelope theorem its
        gradient in ``fake`` is that of -min_w f: weighted moment matching. The dual
        variables of the last :meth:`step` are reused when its batch size matches (call it
        with the same real batch and the fake batch before ``detach``); ``resolve=True`` or
        a size mismatch solves again.

        Args:
            real: the real batch (n samples); required.
            fake: the generated batch (n samples), not detached.
            resolve: solve the dual again (default False).

        Returns:
            A 0-d tensor.

        Raises:
            GameInputError: ``real`` is None, or the batches differ in size, are empty or hold NaN/inf.
        """
        if real is None:
            raise GameInputError("the linear model's generator loss needs the real batch; call generator_loss(real, fake)")
        check_batch(real, fake.detach())
        phi_r = self.module(real)
        phi_f = self.module(fake)
        if self.distributed:  # the dual couples all samples: every rank forms the full-batch loss
            check_same_shapes({"real": real, "fake": fake}, self.process_group)
            phi_r = gather_rows(phi_r.detach(), self.process_group)
            phi_f = gather_rows(phi_f, self.process_group)
        n = phi_r.shape[0]
        if resolve or self._cached_duals is None or self._cached_duals[0].shape[-1] != n:
            with torch.no_grad():
                res = _solvers.solve_linear_dual(phi_r.detach(), phi_f.detach(), self.C, solver=self.solver,
                                                    on_failure="ignore")
            self._cached_duals = (res.lam, res.mu)
        lam, mu = (t.to(phi_f) for t in self._cached_duals)
        moment = lam @ phi_r.to(phi_f.dtype) - mu @ phi_f
        u = torch.cat([lam, mu]) * (2 * n)
        u = u.clamp(1e-300, 1.0)
        ent = -(torch.xlogy(u, u) + torch.xlogy(1 - u, 1 - u)).sum() / (2 * n)
        return (moment @ moment) / (2 * self.C) - ent

    def _step(self, real: Tensor, fake: Tensor) -> DualStepStats:
        phi_r, phi_f = self.features(real), self.features(fake)
        common = torch.promote_types(phi_r.dtype, phi_f.dtype)   # two batch dtypes: promote, as torch does
        phi_r, phi_f = phi_r.to(common), phi_f.to(common)
        assert self.weight is not None
        w = self.weight.to(dtype=phi_r.dtype, device=phi_r.device)   # a checkpoint's weights may differ
        stats = DualStepStats(model=self.model, accepted=False, rho=math.nan, delta=math.inf, next_delta=math.inf,
                              loss_before=math.nan, loss_after=math.nan, predicted_decrease=math.nan, step_norm=0.0)
        features_ok = torch.isfinite(phi_r).all() & torch.isfinite(phi_f).all()
        f0 = self._loss_from_scores(phi_r @ w, phi_f @ w, self._sq_norm())
        # no re-validation (C was checked at construction, finiteness is read below with the rest)
        res = _solvers.solve_linear_unchecked(phi_r, phi_f, self.C, self.solver)
        solved = res.converged & torch.isfinite(res.gap) & torch.isfinite(res.w).all()
        batch_ok = self._batch_ok()
        values = [f0, res.primal_value, (res.w.to(w) - w).norm(), res.gap, res.dual_value, res.iterations,
                  features_ok, solved, torch.ones((), dtype=torch.bool, device=w.device) if batch_ok is None else batch_ok]
        read = torch.stack([v.detach().reshape(()).to(device=w.device, dtype=torch.float64) for v in values]
                           ).cpu().tolist()  # the step's one host read (the solver's periodic checks aside)
        f0_v, primal, step_norm, gap, dual, iters, feats_ok, solved_ok, batch_good = read
        if not batch_good:
            self._raise_bad_batch()
        stats.solver_status = None if res.status is None else res.status[0]
        try:
            if not feats_ok:
                raise StepFailed("the feature map produced NaN or inf features from finite real and fake batches "
                                 "(the discriminator's features, not the generator, are at fault)")
            stats.accepted, stats.rho, stats.loss_before = True, 1.0, f0_v
            stats.loss_after, stats.predicted_decrease = primal, f0_v - primal
            stats.step_norm, stats.gap = step_norm, gap
            stats.dual_value, stats.iterations, stats.lam, stats.mu = dual, int(iters), res.lam, res.mu
            if not solved_ok:
                raise StepFailed(f"linear dual solve failed ({res.solver}: gap={gap:.3g}, "
                                 f"status={stats.solver_status})")
        except StepFailed as e:
            return self._fail(str(e), stats)
        self.weight = res.w.to(w)
        self._cached_duals = (res.lam, res.mu)
        return stats

    def _state(self) -> dict[str, Any]:
        return {"weight": None if self.weight is None else self.weight.detach().clone()}

    def _check_state(self, state: Mapping[str, Any]) -> Callable[[], None]:
        unknown = sorted(set(state) - {"model", "C", "weight", "delta"})  # "delta": written before the split
        if unknown:
            raise GameInputError(f"unexpected keys {unknown} in a LinearDualDiscriminator state "
                                 "(is this the state_dict of another object?)")
        if "weight" not in state:
            raise GameInputError("state has no 'weight' entry (None before the first step)")
        weight = state["weight"]
        if weight is not None:
            if not isinstance(weight, Tensor) or weight.ndim != 1 or not weight.is_floating_point():
                raise GameInputError(f"state['weight'] must be a 1-D floating tensor (d,) or None, got "
                                     f"{type(weight).__name__} {tuple(getattr(weight, 'shape', ()))}")
            if self.weight is not None and weight.shape != self.weight.shape:
                raise GameInputError(f"state['weight'] has shape {tuple(weight.shape)}, this discriminator's weights "
                                     f"have {tuple(self.weight.shape)}")
            if not bool(torch.isfinite(weight).all()):
                raise GameInputError("state['weight'] contains NaN or inf")

        def load() -> None:
            like = self.weight   # as torch.optim does: the state takes this object's dtype and device
            self.weight = None if weight is None else (
                weight.detach().clone() if like is None else weight.detach().to(like, copy=True))
            self._cached_duals = None

        return load
