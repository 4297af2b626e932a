"""The cost-linearised trust-region discriminator: a normalised gradient step (Claim 2, model A)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import GameInputError
from ..solvers._common import softplus_exact
from .base import DualStepStats, StepFailed
from .trust_region import LinearisedTrustRegion, Proposal

__all__ = ["CostLinearisedDiscriminator"]


@dataclass
class _Gradient:
    grads: dict[str, Tensor]
    norm: Tensor  # 0-d, float64, on the device: read with the acceptance test
    f0: Tensor


class CostLinearisedDiscriminator(LinearisedTrustRegion):
    """Trust-region step on the linearised loss m(s) = f(w) + grad f^T s (methods.md 3b, A).

    The minimiser in the ball is s = -sqrt(2 Delta) grad f / ||grad f||: one backward
    pass, plus one forward pass for the acceptance ratio. Arguments as
    :class:`~gameopt.dual.trust_region.LinearisedTrustRegion`; any ``nn.Module`` works.

    Distributed: the gradient and the loss are all-reduced (mean) over the ranks, one
    all-reduce of parameter size plus one scalar per attempt; the work is split over ranks
    and every rank makes the same full-batch step.
    """

    model = "cost"

    def _local_model(self, x: Tensor, n: int) -> _Gradient:
        params = self._params()
        with torch.enable_grad():
            scores = self.module(x).reshape(x.shape[0])
            sq = sum((p**2).sum() for p in params.values())
            f = 0.5 * self.C * sq + (softplus_exact(-scores[:n]).sum() + softplus_exact(scores[n:]).sum()) / (2 * n)
            grads = torch.autograd.grad(f, list(params.values()))
        f0_t = self._loss_from_scores(scores[:n].detach(), scores[n:].detach(), self._sq_norm())
        *grads, f0_t = self._all_reduce_mean([*grads, f0_t.reshape(1)])  # mean over ranks: full batch
        norm = torch.stack([torch.linalg.vector_norm(g, dtype=torch.float64) for g in grads]).square().sum().sqrt()
        return _Gradient(dict(zip(params, grads)), norm, f0_t.reshape(()))

    def _loss_before(self, local: _Gradient) -> Tensor:
        return local.f0

    def _solve(self, local: _Gradient, delta: float, stats: DualStepStats) -> Proposal | None:
        # on the device: a zero gradient gives a zero step (rho = 1, nothing changes), a non-finite
        # one a failed proposal; both are known at the acceptance test's one read
        radius = math.sqrt(2 * delta)
        norm = local.norm
        scale = torch.where(norm > 0, radius / norm.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(norm))
        steps = {k: -scale.to(g.dtype) * g for k, g in local.grads.items()}
        return Proposal(steps, local.f0 - radius * norm, ok=torch.isfinite(norm),
                        failure=lambda: ("non-finite gradient in the cost-linearised step (the discriminator's scores "
                                         "or parameters are not finite)"))

    def _loss_at(self, x: Tensor, n: int) -> Tensor:
        scores = self.module(x).reshape(x.shape[0])
        loss = self._loss_from_scores(scores[:n], scores[n:], self._sq_norm())
        (loss,) = self._all_reduce_mean([loss.reshape(1)])  # the batch is split over ranks
        return loss.reshape(())

    def _all_reduce_mean(self, tensors: list[Tensor]) -> list[Tensor]:
        """Mean over ranks (one flat all-reduce in float64); identity when not distributed."""
        if not self.distributed:
            return tensors
        import torch.distributed as dist

        flat = torch.cat([t.reshape(-1).double() for t in tensors])
        dist.all_reduce(flat, group=self.process_group)
        flat /= dist.get_world_size(self.process_group)
        parts = torch.split(flat, [t.numel() for t in tensors])
        return [part.view_as(t).to(t.dtype) for part, t in zip(parts, tensors)]

    def _share_batch(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """Each rank keeps its share; a NaN on one rank is made an error on every rank."""
        (ok,) = self._all_reduce_mean(
            [(torch.isfinite(real).all() & torch.isfinite(fake).all()).to(torch.float64).reshape(1)]
        )
        if float(ok) < 1.0:
            raise GameInputError("a rank's real or fake batch contains NaN or inf values; check the "
                             "generator output (e.g. a diverged generator) on every rank")
        return real, fake

    def _sync_replicas(self) -> None:
        """Nothing to do: every rank applied the same all-reduced step."""
