"""Alternating gradient steps (AltGA): players move one after another.

The usual way GANs are trained, provided as a baseline in gameopt's API: each
player steps on a gradient evaluated *after* the previous player's update, so
every update needs fresh losses, i.e. a closure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.optim import Optimizer

from .distributed import all_reduce_mean
from .errors import GameInputError
from .game_optimizer import GameOptimizer, SharedState, shared
from .gradients import check_loss, check_trainable, detached
from .players import GENERATOR, ParamsLike, game_players
from .frameworks import through_wrappers

__all__ = ["AlternatingOptimizer"]

Losses = Sequence[torch.Tensor]


@dataclasses.dataclass
class AlternatingState(SharedState):
    """:class:`SharedState` plus the alternating order and each side's repeats."""

    order: list[str] = dataclasses.field(default_factory=list)
    disc_steps: int = 1
    gen_steps: int = 1


class AlternatingOptimizer(GameOptimizer):
    """Alternating gradient steps over any torch optimiser.

    ``step(closure)``: ``closure()`` returns one loss per player (``(gen_loss,
    disc_loss)``); for each player in ``order`` (default: discriminator first, then
    generator) the closure is evaluated afresh, that player's gradient of its own
    loss is computed and only that player is stepped. ``disc_steps`` repeats the
    discriminator's update (k discriminator steps per generator step, as WGAN trains);
    ``gen_steps`` repeats the generator's (DCGAN-tensorflow, the code behind PacGAN's
    standard-size stacked-MNIST runs, steps G twice per D step).
    After the step each player's ``p.grad`` holds the gradient it last stepped on: a
    player step that the ``nonfinite`` policy skips (or raises on) puts back the
    ``p.grad`` it found, so no NaN is left behind. Step post-hooks run once per
    ``step`` in which some player moved; ``last_step_skipped`` says whether any
    player's step was skipped. The closure must return the losses: a closure that
    returns None (gradients already in ``p.grad``) cannot drive alternating steps.
    ``distributed=True`` (torch.distributed, plain or DDP-wrapped modules) averages
    each player's gradient over the ranks of ``process_group`` before its step (one
    all-reduce per player step), which equals one process on the full batch.

    Args:
        base_optimizer: a ``torch.optim.Optimizer`` subclass (``torch.optim.Adam``), built on
            all players' param groups with ``**base_kwargs`` (``lr=...``).
        gen_params, disc_params: the two players' parameters (tensors or param-group dicts).
        disc_steps: updates of each non-generator player per round (default 1).
        gen_steps: updates of the generator per round (default 1); needs a player named
            ``"generator"``.
        order: the players in update order (default: discriminator(s) first, generator last).
        distributed: average gradients over ``process_group`` (default False).
        process_group: the torch.distributed group (default: the world).
        nonfinite: NaN/Inf policy, ``"skip"`` (default), ``"raise"`` or ``"ignore"``.
        players: ordered ``{name: params}`` instead of ``gen_params``/``disc_params``.

    Raises:
        GameInputError: ``disc_steps`` or ``gen_steps`` not an integer >= 1, ``gen_steps`` > 1
            without a generator, ``order`` not a permutation of the
            players, or bad players/base optimiser (see :class:`~gameopt.GameOptimizer`).
    """

    _shared_type = AlternatingState
    _step_evaluates_closure = True
    order = shared("The players in update order (default: discriminator(s) first, generator last).")
    disc_steps = shared("Updates of each non-generator player per round.")
    gen_steps = shared("Updates of the generator per round.")

    def __init__(
        self,
        base_optimizer: type[Optimizer],
        gen_params: ParamsLike | None = None,
        disc_params: ParamsLike | None = None,
        *,
        disc_steps: int = 1,
        gen_steps: int = 1,
        order: Sequence[str] | None = None,
        distributed: bool = False,
        process_group: Any = None,
        nonfinite: str = "skip",
        players: Mapping[str, ParamsLike] | None = None,
        **base_kwargs: Any,
    ) -> None:
        players = game_players(gen_params, disc_params, players)
        for name, value in (("disc_steps", disc_steps), ("gen_steps", gen_steps)):
            if not _is_count(value):
                raise GameInputError(f"{name} must be an integer >= 1, got {value!r}")
        if gen_steps != 1 and GENERATOR not in players:
            raise GameInputError(
                f"gen_steps={gen_steps} repeats the generator's update, but no player is named "
                f"'{GENERATOR}' (players: {list(players)}); name the player to repeat 'generator'"
            )
        super().__init__(base_optimizer, players, nonfinite=nonfinite, distributed=distributed,
                         process_group=process_group, **base_kwargs)
        self.disc_steps = disc_steps
        self.gen_steps = gen_steps
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
        self.order = order

    @through_wrappers
    def backward(self, *losses: torch.Tensor) -> None:
        """Not available: alternating steps need losses re-evaluated between players.

        Raises:
            RuntimeError: always; use ``step(closure)`` with ``closure()`` returning the losses.
        """
        raise RuntimeError(
            "AlternatingOptimizer needs fresh losses after each player's update: call "
            "opt.step(closure) with closure() returning (gen_loss, disc_loss)"
        )

    def _player_step(self, player: str, closure: Callable[[], Losses]) -> Losses:
        with torch.enable_grad():
            losses = closure()
        if losses is None:
            raise GameInputError(
                "AlternatingOptimizer.step(closure): the closure returned None, but alternating "
                "steps re-evaluate the losses after each player's update, so the closure must "
                "return them, e.g. (gen_loss, disc_loss). A closure that only calls backward "
                "(like PyTorch Lightning's default one) cannot drive AltGA: pass your own, "
                "e.g. opt.step(closure=lambda: compute_losses(batch))"
            )
        if isinstance(losses, torch.Tensor) or not isinstance(losses, Sequence) or len(losses) != len(self.players):
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
        others = [p for g in self.param_groups if g["player"] != player for p in g["params"]]
        stashed = [p.grad for p in others]
        previous = [p.grad for p in own]
        for p in others:
            p.grad = None
        for p, g in zip(own, grads):
            p.grad = g
        stepped = False
        try:
            stepped = self._apply_base_step((player,))
        finally:
            for p, g in zip(others, stashed):
                p.grad = g
            if not stepped:  # skipped or raised: leave no NaN gradient behind
                for p, g in zip(own, previous):
                    p.grad = g
        return losses

    def step(self, closure: Callable[[], Losses] | None = None) -> Losses:  # type: ignore[override]
        """One round of alternating updates; returns the losses of the last evaluation.

        When an evaluation raises (a bad loss from the closure, an error in it), the players
        that already stepped in this round are set back, parameters and base state: an error
        leaves the optimiser as it was before the step. (The parameters and state of those
        players are copied at the start of every step for this.)

        Raises:
            RuntimeError: no closure.
            GameInputError: the closure returned None or not one loss per player.
            FloatingPointError: with ``nonfinite="raise"``, on a NaN/Inf.
        """
        if closure is None:
            raise RuntimeError(
                "AlternatingOptimizer.step needs a closure returning (gen_loss, disc_loss): "
                "each player's update uses losses evaluated after the previous update"
            )
        check_trainable([self.player_params(p) for p in self.players], self.players)
        losses: Losses = ()
        turns = [p for p in self.order for _ in range(self.disc_steps if p != GENERATOR else self.gen_steps)]
        # a later evaluation can still refuse the closure's losses: keep what the earlier turns
        # change (parameters and base state) so that a refused step leaves nothing half-done
        early = [q for g in self.param_groups if g["player"] in set(turns[:-1]) for q in g["params"]]
        saved = self._save_base(early) if early else None
        try:
            for player in turns:
                losses = self._player_step(player, closure)
        except FloatingPointError:   # nonfinite="raise": the players before it stepped, as documented
            raise
        except BaseException:
            if saved is not None:
                self._restore_base(early, saved)
            raise
        return detached(losses)  # type: ignore[return-value]

    def _extra_state(self) -> dict[str, Any]:
        extra = super()._extra_state()
        extra.update(order=list(self.order), disc_steps=self.disc_steps, gen_steps=self.gen_steps)
        return extra

    def _check_extra_state(self, extra: dict[str, Any]) -> dict[str, Any]:
        settings = super()._check_extra_state(extra)
        order = extra.get("order", self.order)
        if not isinstance(order, (list, tuple)) or sorted(map(str, order)) != sorted(self.players) \
                or not all(isinstance(p, str) for p in order):
            raise GameInputError(
                f"the checkpoint's 'order' must list every player ({list(self.players)}) once, got {order!r}"
            )
        for name in ("disc_steps", "gen_steps"):
            value = extra.get(name, getattr(self, name))   # absent: written before the setting existed
            if not _is_count(value):
                raise GameInputError(f"the checkpoint's '{name}' must be an integer >= 1, got {value!r}")
            settings[name] = value
        if settings["gen_steps"] != 1 and GENERATOR not in self.players:
            raise GameInputError(f"the checkpoint's 'gen_steps' is {settings['gen_steps']}, but no player is "
                                 f"named '{GENERATOR}'")
        settings.update(order=list(order))
        return settings


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
