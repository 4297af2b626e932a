"""Alternating gradient steps (AltGA): players move one after another.

The usual way GANs are trained, provided as a baseline in gameopt's API: each
player steps on a gradient evaluated *after* the previous player's update, so
every update needs fresh losses, i.e. a closure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.optim import Optimizer

from .distributed import all_reduce_mean
from .errors import GameInputError
from .game_optimizer import GameOptimizer
from .gradients import check_loss
from .players import GENERATOR, ParamsLike, game_players

Losses = Sequence[torch.Tensor]


class AlternatingOptimizer(GameOptimizer):
    """Alternating gradient steps over any torch optimiser.

    ``step(closure)``: ``closure()`` returns one loss per player (``(gen_loss,
    disc_loss)``); for each player in ``order`` (default: discriminator first, then
    generator) the closure is evaluated afresh, that player's gradient of its own
    loss is computed and only that player is stepped. ``disc_steps`` repeats the
    discriminator's update (k discriminator steps per generator step).
    After the step each player's ``p.grad`` holds the gradient it stepped on.
    ``distributed=True`` (torch.distributed, plain or DDP-wrapped modules) averages
    each player's gradient over the ranks of ``process_group`` before its step (one
    all-reduce per player step), which equals one process on the full batch.
    """

    def __init__(
        self,
        base_optimizer: type[Optimizer],
        gen_params: ParamsLike | None = None,
        disc_params: ParamsLike | None = None,
        *,
        disc_steps: int = 1,
        order: Sequence[str] | None = None,
        distributed: bool = False,
        process_group: Any = None,
        nonfinite: str = "skip",
        players: Mapping[str, ParamsLike] | None = None,
        **base_kwargs: Any,
    ) -> None:
        players = game_players(gen_params, disc_params, players)
        if not isinstance(disc_steps, int) or disc_steps < 1:
            raise GameInputError(f"disc_steps must be an integer >= 1, got {disc_steps!r}")
        super().__init__(base_optimizer, players, nonfinite=nonfinite, distributed=distributed,
                         process_group=process_group, **base_kwargs)
        if order is None:
            order = [p for p in self.players if p != GENERATOR] + (
                [GENERATOR] if GENERATOR in self.players else []
            )
        order = list(order)
        if sorted(order) != sorted(self.players):
            raise GameInputError(
                f"order must list every player exactly once, got {order} for players "
                f"{list(self.players)}"
            )
        self.order: list[str] = order
        self.disc_steps = disc_steps

    def backward(self, *losses: torch.Tensor) -> None:
        """Not available: alternating steps need losses re-evaluated between players."""
        raise RuntimeError(
            "AlternatingOptimizer needs fresh losses after each player's update: call "
            "opt.step(closure) with closure() returning (gen_loss, disc_loss)"
        )

    def _player_step(self, player: str, closure: Callable[[], Losses]) -> Losses:
        with torch.enable_grad():
            losses = closure()
        if isinstance(losses, torch.Tensor) or len(losses) != len(self.players):
            raise GameInputError(
                f"the closure must return one loss per player ({list(self.players)})"
            )
        k = self.players.index(player)
        name = ["gen_loss", "disc_loss"][k] if len(self.players) == 2 else f"loss of '{player}'"
        loss = check_loss(losses[k], player, name, per_example=False)
        own = self.player_params(player)
        grads = torch.autograd.grad(loss, own, allow_unused=True)
        if all(g is None for g in grads):
            raise GameInputError(
                f"{name} does not depend on any parameter of player '{player}'"
            )
        if self.distributed:  # the ranks' mean: the full-batch gradient; a NaN anywhere reaches every rank
            grads = tuple(all_reduce_mean([torch.zeros_like(p) if g is None else g for p, g in zip(own, grads)],
                                          self.process_group))
        norms = torch._foreach_norm([g for g in grads if g is not None])
        finite = torch.isfinite(torch.stack(norms).float()).all()
        self._finite = finite
        self._stepping = player
        others = [p for g in self.param_groups if g["player"] != player for p in g["params"]]
        stashed = [p.grad for p in others]
        for p in others:
            p.grad = None
        for p, g in zip(own, grads):
            p.grad = g
        try:
            if not self._should_skip():
                self.base_optimizer.step()
            else:
                self.last_step_skipped = True
        finally:
            for p, g in zip(others, stashed):
                p.grad = g
        return losses

    def _finite_per_player(self) -> list[bool]:
        return [p != getattr(self, "_stepping", None) for p in self.players]

    def step(self, closure: Callable[[], Losses] | None = None) -> Losses:  # type: ignore[override]
        """One round of alternating updates; returns the losses of the last evaluation."""
        if closure is None:
            raise RuntimeError(
                "AlternatingOptimizer.step needs a closure returning (gen_loss, disc_loss): "
                "each player's update uses losses evaluated after the previous update"
            )
        self.last_step_skipped = False
        losses: Losses = ()
        for player in self.order:
            repeats = self.disc_steps if player != GENERATOR else 1
            for _ in range(repeats):
                losses = self._player_step(player, closure)
        return losses

    def _extra_state(self) -> dict[str, Any]:
        extra = super()._extra_state()
        extra.update(order=list(self.order), disc_steps=self.disc_steps)
        return extra

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        super()._load_extra_state(extra)
        self.order = list(extra.get("order", self.order))
        self.disc_steps = int(extra.get("disc_steps", self.disc_steps))
