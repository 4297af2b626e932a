"""Extragradient (Korpelevich 1976) and ExtraAdam (Gidel, Berard, Vignoud, Vincent &
Lacoste-Julien, "A Variational Inequality Perspective on Generative Adversarial Networks",
ICLR 2019).

One step looks ahead with the base optimiser's own rule, re-evaluates the game's gradient
field there and applies that gradient from the original point:
``z_half = z - eta v(z)``, ``z_next = z - eta v(z_half)`` for SGD; Adam's rule for both moves
gives ExtraAdam.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.optim import Optimizer

from .errors import GameInputError
from .field import Closure, FieldOptimizer, Losses
from .gradients import all_finite, detached
from .players import ParamsLike, game_players
from .frameworks import through_wrappers


class _ScalerSlot:
    """What ``GradScaler.unscale_`` needs of an optimiser: the extrapolation's gradients are
    unscaled under this object's id, so the scaler records both evaluations' overflow checks."""

    def __init__(self, owner: FieldOptimizer) -> None:
        self._owner = owner

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self._owner.param_groups


class ExtragradientOptimizer(FieldOptimizer):
    """Extragradient / ExtraAdam over any torch optimiser; ``step(closure)`` evaluates twice.

    Usage (each player minimises its own loss; the closure returns one loss per player)::

        opt = ExtragradientOptimizer(torch.optim.Adam, G.parameters(), D.parameters(), lr=2e-4)
        def closure():
            fake = G(z)
            d_fake = D(fake)
            return F.softplus(-d_fake).mean(), F.softplus(-D(x)).mean() + F.softplus(d_fake).mean()
        opt.step(closure)

    One step, from parameters z_t:

    1. ``closure()`` at z_t; ``p.grad = v(z_t)``; the base optimiser steps: z_{t+1/2}.
    2. ``closure()`` at z_{t+1/2}; ``p.grad = v(z_{t+1/2})``; the parameters are set back to
       z_t and the base optimiser steps again: z_{t+1}.

    The variant is Gidel et al.'s Algorithm 4 (ExtraAdam) as their reference code implements it:
    the base optimiser's state (Adam's moments and step count) is updated at *both*
    evaluations, so Adam's step counter advances by two per extragradient step. The update
    (2.) is the base optimiser's step taken at z_t; for a base rule that also depends on the
    parameters (weight decay) that term is evaluated at z_t (the reference code evaluates it at
    z_{t+1/2}; the two agree without weight decay). The closure decides the data: sampling a
    fresh batch at each call gives stochastic extragradient with independent batches (as in the
    paper's experiments); returning the same batch re-uses it. Returns the losses at z_t.

    Bilinear game (``l_G = x^T A y``, ``l_D = -l_G``, SGD with step eta, per singular value
    sigma, c = eta sigma): in singular coordinates ``w = a + i b`` the field is ``-i sigma w``,
    so ``w_half = (1 + ic) w`` and ``w_next = w + ic w_half = (1 - c^2 + ic) w``: the norm
    contracts by ``sqrt((1 - c^2)^2 + c^2)`` per step (for ``0 < c < 1``), where SimGA expands by
    ``sqrt(1 + c^2)``.

    Memory: one copy of the parameters (z_t) during a step. Cost: two forward and backward
    passes and two base steps per step.

    Args:
        base_optimizer: a ``torch.optim.Optimizer`` subclass; ``base_kwargs`` go to it.
        gen_params, disc_params: the players' parameters (tensors or param-group dicts).
        players: instead of ``gen_params``/``disc_params``, ``{name: params}`` for any number
            of players; the closure returns one loss per player in that order.
        distributed: average v over the ranks of ``process_group`` at both evaluations (equals
            one process on the full batch).
        nonfinite: ``"skip"`` (default), ``"raise"`` or ``"ignore"``. A NaN/Inf in v(z_t) skips
            the whole step (nothing moves, the state is untouched); a NaN/Inf in v(z_{t+1/2}), or
            an error raised by the second evaluation, sets the parameters and the base optimiser's
            state back to what they were at z_t (the step's start: the extrapolation is undone).
            The parameters and the state are copied at the start of every step for this.

    Raises:
        GameInputError: bad players or base optimiser at construction; at ``step``, a missing
            closure, a closure that does not return one loss per player, a bad loss.
    """

    _step_evaluates_closure = True

    def __init__(
        self,
        base_optimizer: type[Optimizer],
        gen_params: ParamsLike | None = None,
        disc_params: ParamsLike | None = None,
        *,
        players: Mapping[str, ParamsLike] | None = None,
        distributed: bool = False,
        process_group: Any = None,
        nonfinite: str = "skip",
        **base_kwargs: Any,
    ) -> None:
        players = game_players(gen_params, disc_params, players)
        super().__init__(base_optimizer, players, nonfinite=nonfinite, distributed=distributed,
                         process_group=process_group, **base_kwargs)
        self._scaler_slot = _ScalerSlot(self)

    @through_wrappers
    def backward(self, *losses: torch.Tensor, **kwargs: Any) -> None:
        """Not available: extragradient evaluates the losses twice per step; use ``step(closure)``.

        Raises:
            RuntimeError: always.
        """
        raise RuntimeError(
            "ExtragradientOptimizer evaluates the losses at two points per step, so it needs "
            "opt.step(closure) with closure() returning (gen_loss, disc_loss), not backward()"
        )

    def _set_field(self, closure: Closure, scaler: Any, slot: object) -> tuple[Losses, list[torch.Tensor]]:
        """Evaluate the closure and set ``p.grad = v`` (unscaled through ``scaler`` if given)."""
        losses = self._evaluate(closure)
        if scaler is not None:
            losses = tuple(scaler.scale(l) for l in losses)
        params, _, v = self._field(losses)
        self.zero_grad(set_to_none=True)
        self._accumulate(params, v)
        if scaler is not None:
            scaler.unscale_(slot)
            losses = tuple(l.detach() / scaler.get_scale() for l in losses)
        return losses, params

    def step(self, closure: Closure | None = None, *, scaler: Any = None) -> Losses:  # type: ignore[override]
        """One extragradient step (two closure evaluations); returns the losses at z_t.

        ``scaler``: the ``torch.amp.GradScaler`` for fp16 training. gameopt scales the losses,
        unscales the gradients through the scaler (so it records overflows) and skips the step
        on overflow without a warning; call ``scaler.update()`` after ``step``, not
        ``scaler.step(opt)``.

        Args:
            closure: returns one loss per player (scalars), unscaled; required.
            scaler: see above (default None).

        Returns:
            The losses at z_t (unscaled).

        Raises:
            GameInputError: no closure, a ``scaler`` that is not a ``GradScaler``, a closure that
                does not return one loss per player, or a bad loss.
        """
        if closure is None:
            raise GameInputError(
                "ExtragradientOptimizer.step needs a closure returning one loss per player, "
                "e.g. opt.step(lambda: (gen_loss_fn(), disc_loss_fn())): it evaluates the losses "
                "at the current and at the extrapolated point"
            )
        if scaler is not None and not (hasattr(scaler, "scale") and hasattr(scaler, "unscale_")):
            raise GameInputError(f"scaler must be a torch.amp.GradScaler, got {type(scaler).__name__}")
        scaler = scaler if scaler is not None and scaler.is_enabled() else None
        losses, _ = self._set_field(closure, scaler, self)
        params = self._param_index()
        start = self._save_base(params)   # z_t and the base state, to undo the extrapolation
        if not self._move(scaler):
            return detached(losses)  # type: ignore[return-value]
        try:
            self._set_field(closure, scaler, self._scaler_slot)
        except BaseException:
            self._restore_base(params, start)
            self._shared.moved = False
            raise
        with torch.no_grad():
            torch._foreach_copy_(params, start[0])
        self._shared.moved = False   # back at z_t until the update moves
        if not self._move(scaler):   # the update refused: undo the extrapolation's state advance too
            self._restore_base(params, start)
        return detached(losses)  # type: ignore[return-value]

    def _move(self, scaler: Any) -> bool:
        """The base step on ``p.grad``; a GradScaler's overflow skips it quietly (the scaler records it)."""
        if scaler is not None:
            grads = [p.grad for p in self._flat_params() if p.grad is not None]
            if grads and not bool(all_finite(grads)):
                return False
        return self._apply_base_step()
