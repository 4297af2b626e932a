"""The trust-region loop shared by the cost- and score-linearised discriminators (Claim 2).

A step from w solves min_s m(s) s.t. 1/2 ||s||^2 <= Delta for a local model m of the
discriminator's loss f, then judges s by the acceptance ratio (:class:`RadiusControl`).
A model provides three things:

* :meth:`LinearisedTrustRegion._local_model`: the scores at w and what the model needs
  (a gradient, or the kernel of per-sample score gradients), with f(w);
* :meth:`LinearisedTrustRegion._solve`: the model's minimiser s for a radius, and m(s);
* :meth:`LinearisedTrustRegion._loss_at`: f at the current parameters (the acceptance test).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from ..errors import GameInputError
from ..solvers._common import check_positive, softplus_exact
from .base import DualStepStats, StepFailed, TrustRegionDualDiscriminator
from .radius import RadiusControl

__all__ = ["LinearisedTrustRegion", "Proposal", "step_sq_norm"]


@dataclass
class Proposal:
    """A trust-region step.

    Args:
        steps: the step s, ``{parameter name: tensor shaped like the parameter}``.
        model_value: the local model's value m(s).
        sq_norm: ``||s||^2`` when the solver knows it (default None: computed when needed).
    """

    steps: dict[str, Tensor]
    model_value: float
    sq_norm: float | None = None


def step_sq_norm(tensors: Iterable[Tensor]) -> float:
    """``sum ||t||^2`` over ``tensors``, accumulated in float64, as a Python float (one host read)."""
    return float(torch.stack([torch.linalg.vector_norm(t, dtype=torch.float64) for t in tensors]).square().sum())


class LinearisedTrustRegion(TrustRegionDualDiscriminator):
    """Base of the trust-region discriminators: a network whose parameters are stepped in place.

    Args:
        module: the discriminator network mapping a batch (n, ...) to logits (n,) or (n, 1);
            its trainable parameters w are updated in place.
        C: weight decay of the discriminator loss (> 0); the paper uses 1e-4.
        delta: initial trust-region radius Delta (> 0): the step obeys 1/2 ||s||^2 <= Delta.
        radius: acceptance and radius rule (default :class:`RadiusControl()`).
        max_retries: after a rejected step, re-solve with the shrunk radius this many times
            within the same call; 0 keeps the cost per call fixed.
        on_failure, distributed, process_group: see
            :class:`~gameopt.dual.TrustRegionDualDiscriminator`.

    Raises:
        GameInputError: ``module`` is not an ``nn.Module``, ``C`` or ``delta`` not > 0,
            ``max_retries`` not a non-negative integer, or a bad ``on_failure``.
    """

    def __init__(
        self,
        module: nn.Module,
        C: float = 1e-4,
        delta: float = 1e-3,
        *,
        radius: RadiusControl | None = None,
        max_retries: int = 0,
        on_failure: str = "warn",
        distributed: bool = False,
        process_group: Any = None,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise GameInputError(f"model {self.model!r} needs the discriminator as an nn.Module; wrap the function in one")
        check_positive("delta", delta)
        if int(max_retries) != max_retries or max_retries < 0:
            raise GameInputError(f"max_retries must be a non-negative integer, got {max_retries!r}")
        super().__init__(module, C, on_failure=on_failure, distributed=distributed, process_group=process_group)
        self.radius = radius if radius is not None else RadiusControl()
        self.max_retries = int(max_retries)
        self._delta = float(delta)

    @property
    def delta(self) -> float:
        """Current trust-region radius Delta."""
        return self._delta

    @delta.setter
    def delta(self, value: float) -> None:
        check_positive("delta", value)
        self._delta = float(value)

    def parameters(self) -> list[Tensor]:
        """The module's trainable parameters."""
        return [p for p in self.module.parameters() if p.requires_grad]

    def score(self, x: Tensor) -> Tensor:
        """F(w, x) = module(x), shape (n,).

        Raises:
            GameInputError: ``x`` is not a tensor of the module's floating dtype.
        """
        if not isinstance(x, Tensor):
            raise GameInputError(f"the batch must be a tensor, got {type(x).__name__}")
        self._check_input_dtype(x.dtype, x.device, "batch")
        return self.module(x).reshape(x.shape[0])

    def _check_input_dtype(self, dtype: torch.dtype, device: torch.device, what: str) -> None:
        if torch.is_autocast_enabled(device.type):   # autocast casts the batch for the module
            return
        dtypes = {p.dtype for p in self.module.parameters() if p.is_floating_point()}
        if dtypes and dtype not in dtypes:
            want = sorted(str(d) for d in dtypes)[0]
            raise GameInputError(
                f"the {what} are {dtype} but the discriminator's parameters are {want}: the "
                f"module needs inputs of its dtype. Convert the batch, e.g. x.to({want}), or the module"
            )

    def generator_loss(self, real: Tensor | None, fake: Tensor, resolve: bool = False) -> Tensor:
        """The non-saturating loss ``mean(softplus(-F(w, y_j))) = -mean log D(y_j)``, a 0-d tensor.

        Args:
            real: unused (accepted for the common signature).
            fake: the generated batch ``y`` (n samples), not detached.
            resolve: unused.
        """
        return softplus_exact(-self.score(fake)).mean()

    # ------------------------------------------------ what each model provides
    def _local_model(self, x: Tensor, n: int) -> Any:
        """The local model at the current w on x = (real, fake); raises StepFailed."""
        raise NotImplementedError

    def _loss_before(self, local: Any) -> float:
        """f(w) on the batch, from the local model's scores."""
        raise NotImplementedError

    def _solve(self, local: Any, delta: float, stats: DualStepStats) -> Proposal | None:
        """The model's minimiser in the ball of radius ``delta`` (None: w is already optimal)."""
        raise NotImplementedError

    def _loss_at(self, x: Tensor, n: int) -> float:
        """f at the current parameters on x (the acceptance test's forward pass)."""
        scores = self.module(x).reshape(x.shape[0])
        return float(self._loss_from_scores(scores[:n], scores[n:], self._sq_norm()))

    # ------------------------------------------------------------ the loop
    def _params(self) -> dict[str, Tensor]:
        return {k: p for k, p in self.module.named_parameters() if p.requires_grad}

    def _step(self, real: Tensor, fake: Tensor) -> DualStepStats:
        n = real.shape[0]
        x = torch.cat([real, fake])
        stats = DualStepStats(model=self.model, accepted=False, rho=math.nan, delta=self.delta,
                              next_delta=self.delta, loss_before=math.nan, loss_after=math.nan,
                              predicted_decrease=math.nan, step_norm=0.0)
        try:
            local = self._local_model(x, n)
            stats.loss_before = f0 = self._loss_before(local)
            for attempt in range(self.max_retries + 1):
                stats.retries = attempt
                proposal = self._solve(local, self.delta, stats)
                if proposal is None:  # zero model gradient: nothing to gain, nothing changes
                    stats.accepted, stats.rho, stats.loss_after = True, 1.0, f0
                    break
                self._try(x, n, proposal, f0, stats)
                if stats.accepted:
                    break
        except StepFailed as e:
            return self._fail(str(e), stats)
        return stats

    def _try(self, x: Tensor, n: int, proposal: Proposal, f0: float, stats: DualStepStats) -> None:
        """Apply s, compute rho, keep or roll back, update the radius."""
        params = self._params()
        backup = {k: p.detach().clone() for k, p in params.items()}
        for k, p in params.items():
            p.add_(proposal.steps[k].to(p.dtype))
        with record_function("gameopt.dual.acceptance"):
            f1 = self._loss_at(x, n)
        pred = f0 - proposal.model_value
        rho = self.radius.ratio(f0, f1, pred)
        sq = proposal.sq_norm if proposal.sq_norm is not None else step_sq_norm(proposal.steps.values())
        accepted = self.radius.accepts(rho)
        if not accepted:
            for k, p in params.items():
                p.copy_(backup[k])
        stats.accepted, stats.rho, stats.loss_before, stats.loss_after = accepted, rho, f0, f1
        stats.predicted_decrease, stats.step_norm, stats.delta = pred, math.sqrt(sq), self.delta
        self.delta = self.radius.next_radius(self.delta, rho, self.radius.on_boundary(sq, self.delta))
        stats.next_delta = self.delta

    # --------------------------------------------------------- checkpoints
    def _radius_value(self) -> float:
        return self.delta

    def _set_radius_value(self, value: float) -> None:
        self._delta = value

    def _state(self) -> dict[str, Any]:
        return {"delta": self.delta}

    def _check_state(self, state: Mapping[str, Any]) -> Callable[[], None]:
        unknown = sorted(set(state) - {"model", "C", "delta", "weight"})
        if unknown:
            raise GameInputError(f"unexpected keys {unknown} in a {type(self).__name__} state "
                                 "(is this the state_dict of another object?)")
        if state.get("weight") is not None:
            raise GameInputError("state holds linear-model weights; it is not a trust-region state")
        if "delta" not in state:
            raise GameInputError("state has no 'delta' (the trust-region radius); it cannot resume this step")
        delta = state["delta"]
        if isinstance(delta, Tensor) and delta.numel() == 1:
            delta = delta.item()
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not (0 < delta < math.inf):
            raise GameInputError(f"state['delta'] must be a finite number > 0, got {delta!r}")

        def load() -> None:
            self._delta = float(delta)

        return load
