"""Optimistic gradient (Daskalakis, Ilyas, Syrgkanis & Zeng, "Training GANs with Optimism", ICLR 2018).

Every step adds to the base optimiser's update the change of that update since the last
step: ``z_{t+1} = z_t + 2 Delta_t - Delta_{t-1}``, where ``Delta_t`` is what the base
optimiser's own rule would move the parameters by at step t. With SGD this is optimistic
gradient descent, ``z_{t+1} = z_t - 2 eta v(z_t) + eta v(z_{t-1})``; with Adam it is the
paper's Optimistic Adam (Algorithm 1: the moments are updated once per step and the
optimistic correction is applied to Adam's update, not to the gradient).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.optim import Optimizer

from .errors import GameInputError
from .field import Closure, FieldOptimizer, Losses
from .gradients import detached
from .players import ParamsLike, game_players
from .frameworks import through_wrappers


class OptimisticOptimizer(FieldOptimizer):
    """Optimistic gradient / Optimistic Adam over any torch optimiser; one evaluation per step.

    Usage (each player minimises its own loss; zero-sum: ``disc_loss = -gen_loss``)::

        opt = OptimisticOptimizer(torch.optim.Adam, G.parameters(), D.parameters(), lr=2e-4)
        opt.zero_grad()
        opt.backward(gen_loss, disc_loss)   # p.grad += v_p (each player's gradient of its own loss)
        opt.step()                          # base step Delta_t, then z += Delta_t - Delta_{t-1}

    or ``opt.step(closure)`` with ``closure()`` returning ``(gen_loss, disc_loss)``.

    The variant is the base-optimiser form of Daskalakis et al. (their Algorithm 1 with Adam):
    ``Delta_t`` is the whole update of the base optimiser at step t (its moments, momentum,
    weight decay and learning rate included), and the parameters move by ``2 Delta_t -
    Delta_{t-1}``. The first step (no previous update) is the base optimiser's plain step, as in
    the paper's algorithm. ``Delta_{t-1}`` is optimiser state (``state_dict`` saves it; a resumed
    run is bit-identical). A parameter without a gradient at a step is not moved and keeps its
    ``Delta_{t-1}``. When a scheduler changes the learning rate, ``Delta_{t-1}`` keeps the rate it
    was taken with. With SGD (no momentum) the form equals the gradient form ``2 v_t - v_{t-1}``.

    Bilinear game (methods.md section 5; ``l_G = x^T A y``, ``l_D = -l_G``, SGD with step eta;
    per singular value sigma of A, with ``c = eta sigma``): in the singular coordinates
    ``w = a + i b`` (``x = a u``, ``y = b v``) the field is ``v = -i sigma w``, so
    ``w_{t+1} = (1 + 2ic) w_t - ic w_{t-1}``: a two-step linear recurrence (in z:
    ``z_{t+1} = (I - 2 eta J) z_t + eta J z_{t-1}``, J the field's Jacobian). Its roots are
    ``lambda = ((1 + 2ic) +- sqrt(1 - 4c^2)) / 2``, so for ``c <= 1/2`` the spectral radius is
    ``sqrt((1 + sqrt(1 - 4c^2)) / 2)`` (about ``1 - c^2/2``: slow contraction), and for
    ``c > 1/2`` it is ``sqrt(1/4 + (c + sqrt(4c^2 - 1)/2)^2)``; the iteration converges iff
    ``c < 1/sqrt(3)``, whereas SimGA expands by ``sqrt(1 + c^2)`` at any c.

    Args:
        base_optimizer: a ``torch.optim.Optimizer`` subclass; ``base_kwargs`` go to it.
        gen_params, disc_params: the players' parameters (tensors or param-group dicts).
        players: instead of ``gen_params``/``disc_params``, ``{name: params}`` for any number
            of players; ``backward`` then takes one loss per player in that order.
        distributed: average v over the ranks of ``process_group`` (one all-reduce), which
            equals one process on the full batch.
        nonfinite: ``"skip"`` (default), ``"raise"`` or ``"ignore"``: what ``step`` does when
            ``p.grad`` holds a NaN/Inf, or the corrected parameters would (a skipped step moves nothing,
            leaves the base state as it was and keeps ``Delta_{t-1}``). The check runs once, after the
            correction; the parameters and base state are copied first so that it can be undone.

    Raises:
        GameInputError: bad players, losses or base optimiser (see :class:`GameOptimizer`).
    """

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

    @through_wrappers
    def backward(self, *losses: torch.Tensor, scaler: Any = None) -> None:
        """Accumulate v into ``p.grad`` (like ``loss.backward()``); one loss per player.

        ``scaler`` is accepted for symmetry with the other optimisers and not needed: v is
        first-order, so the ``GradScaler`` that scaled the losses unscales it in ``scaler.step``.

        Raises:
            GameInputError: not one loss per player, or a bad loss (not a scalar floating tensor
                with a graph, or reaching none of its player's parameters).
        """
        checked = self._check_losses(losses)
        params, _, v = self._field(checked)
        self._accumulate(params, v)

    def step(self, closure: Closure | None = None) -> Losses | None:  # type: ignore[override]
        """Base step, then the optimistic correction ``Delta_t - Delta_{t-1}``.

        With ``closure`` returning one loss per player, ``p.grad`` is reset and recomputed
        first; a closure returning None means the gradients are already in ``p.grad``.

        Args:
            closure: optional; returns one loss per player, or None.

        Returns:
            The closure's losses (None without a closure or when it returned None).

        Raises:
            GameInputError: no gradient in any ``p.grad`` and no closure to compute one, or
                a closure whose losses are not one valid loss per player.
        """
        losses = self._backward_from_closure(closure)
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            raise GameInputError("step() found no gradients: call opt.backward(...) first or pass a closure")
        moving = {id(p) for p in params}
        deltas: list[torch.Tensor] = []

        def correct(start: list[torch.Tensor]) -> list[torch.Tensor]:
            # z <- z_t + Delta_t + (Delta_t - Delta_{t-1}); checked (and undone) with the base step
            everything = [p for g in self.param_groups for p in g["params"]]
            before = [z for p, z in zip(everything, start) if id(p) in moving]
            with torch.no_grad():
                deltas[:] = torch._foreach_sub(params, before)   # Delta_t
                have = [(p, d, self.game_state[p]["prev_update"]) for p, d in zip(params, deltas)
                        if "prev_update" in self.game_state.get(p, {})]
                if have:
                    ps = [p for p, _, _ in have]
                    torch._foreach_add_(ps, [d for _, d, _ in have])
                    torch._foreach_sub_(ps, [q for _, _, q in have])
            return params

        if self._apply_base_step(then=correct):
            for p, d in zip(params, deltas):
                self.game_state.setdefault(p, {})["prev_update"] = d
        return detached(losses)  # type: ignore[return-value]
