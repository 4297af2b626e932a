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
    """A trust-region step; its numbers may be device tensors, read once with the acceptance test.

    Args:
        steps: the step s, ``{parameter name: tensor shaped like the parameter}``.
        model_value: the local model's value m(s) (a float or a 0-d tensor).
        sq_norm: ``||s||^2`` when the solver knows it (default None: computed when needed).
        ok: a 0-d bool tensor, False when the solve failed or the step is not finite (then
            ``failure()`` gives the message and the step is rolled back); None: it is fine.
        failure: the message of a failed proposal (called only then; it may read more).
        extras: 0-d tensors to read along (``{DualStepStats field: value}``: gap, dual_value, ...).
    """

    steps: dict[str, Tensor]
    model_value: Any
    sq_norm: Any = None
    ok: Tensor | None = None
    failure: Callable[[], str] | None = None
    extras: dict[str, Any] | None = None


def step_sq_norm(tensors: Iterable[Tensor]) -> float:
    """``sum ||t||^2`` over ``tensors``, accumulated in float64, as a Python float (one host read)."""
    return float(torch.stack([torch.linalg.vector_norm(t, dtype=torch.float64) for t in tensors]).square().sum())


def _read_numbers(values: list[Any], device: torch.device) -> list[float]:
    """Numbers and 0-d tensors (None: True) as Python floats, the tensors in one device-to-host copy."""
    out: list[Any] = [None if isinstance(v, Tensor) else (1.0 if v is None else float(v)) for v in values]
    idx = [i for i, v in enumerate(values) if isinstance(v, Tensor)]
    if idx:
        stacked = torch.stack([values[i].detach().reshape(()).to(device=device, dtype=torch.float64) for i in idx])
        for i, v in zip(idx, stacked.cpu().tolist()):
            out[i] = v
    return out


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
        if device.type != "meta" and torch.is_autocast_enabled(device.type):   # autocast casts the batch
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

    def _loss_at(self, x: Tensor, n: int) -> Tensor:
        """f at the current parameters on x (the acceptance test's forward pass), a 0-d tensor."""
        scores = self.module(x).reshape(x.shape[0])
        return self._loss_from_scores(scores[:n], scores[n:], self._sq_norm())

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
            f0 = self._loss_before(local)
            for attempt in range(self.max_retries + 1):
                stats.retries = attempt
                proposal = self._solve(local, self.delta, stats)
                if proposal is None:  # zero model gradient: nothing to gain, nothing changes
                    stats.loss_before = f0 = float(f0)
                    stats.accepted, stats.rho, stats.loss_after = True, 1.0, f0
                    break
                self._try(x, n, proposal, f0, stats)
                if stats.accepted:
                    break
        except StepFailed as e:
            return self._fail(str(e), stats)
        return stats

    def _try(self, x: Tensor, n: int, proposal: Proposal, f0: Any, stats: DualStepStats) -> None:
        """Apply s, compute rho, keep or roll back, update the radius.

        Everything the decision needs (f before and after, m(s), ||s||^2, the proposal's and
        the batch's flags, the solver's statistics) is read from the device at once: one sync.
        """
        params = self._params()
        backup = {k: p.detach().clone() for k, p in params.items()}
        for k, p in params.items():
            p.add_(proposal.steps[k].to(p.dtype))
        with record_function("gameopt.dual.acceptance"):
            f1 = self._loss_at(x, n)
        sq = proposal.sq_norm
        if sq is None:
            sq = torch.stack([torch.linalg.vector_norm(t, dtype=torch.float64) for t in proposal.steps.values()]
                             ).square().sum()
        extras = proposal.extras or {}
        batch_ok = self._batch_ok()
        flags = [proposal.ok, batch_ok]
        names = ["f0", "f1", "model", "sq", *extras, "ok", "batch_ok"]
        values = [f0, f1, proposal.model_value, sq, *extras.values(), *flags]
        read = dict(zip(names, _read_numbers(values, f1.device)))  # the one host read
        stats.loss_before = read["f0"]
        if batch_ok is not None and not read["batch_ok"]:
            self._restore(params, backup)
            self._raise_bad_batch()
        for name in extras:
            setattr(stats, name, int(read[name]) if name == "iterations" else read[name])
        if proposal.ok is not None and not read["ok"]:
            self._restore(params, backup)
            raise StepFailed(proposal.failure() if proposal.failure is not None else "non-finite trust-region step")
        f0, f1, sq = read["f0"], read["f1"], read["sq"]
        pred = f0 - read["model"]
        rho = self.radius.ratio(f0, f1, pred)
        accepted = self.radius.accepts(rho)
        if not accepted:
            self._restore(params, backup)
        stats.accepted, stats.rho, stats.loss_before, stats.loss_after = accepted, rho, f0, f1
        stats.predicted_decrease, stats.step_norm, stats.delta = pred, math.sqrt(sq), self.delta
        self.delta = self.radius.next_radius(self.delta, rho, self.radius.on_boundary(sq, self.delta))
        stats.next_delta = self.delta

    @staticmethod
    def _restore(params: dict[str, Tensor], backup: dict[str, Tensor]) -> None:
        for k, p in params.items():
            p.copy_(backup[k])

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
