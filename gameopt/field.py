"""FieldOptimizer: the shared machinery of optimisers that step on the game's gradient field.

The field is ``v = (grad_theta l_G, grad_phi l_D, ...)``: every player's gradient of its own
loss (methods.md section 5 calls it F). Extragradient, optimistic gradient and SGA differ only
in what they do with it; this base class holds what they share: evaluating a closure, computing
v (averaged over ranks under ``distributed=True``), writing gradients into ``p.grad``, applying
``p.grad`` with the base optimiser under the ``nonfinite`` policy, and per-parameter tensors
that the method keeps beside the base optimiser's state (checkpointed with it).
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
from .gradients import check_loss, player_gradients
from .players import DISCRIMINATOR, GENERATOR, ParamsLike

__all__ = ["FieldOptimizer"]

Losses = Sequence[torch.Tensor]
Closure = Callable[[], "Losses | None"]


@dataclasses.dataclass
class FieldState(SharedState):
    """:class:`SharedState` plus the method's per-parameter tensors (checkpointed)."""

    game_state: dict = dataclasses.field(default_factory=dict)


class FieldOptimizer(GameOptimizer):
    """Base class of the gradient-field optimisers (extragradient, optimistic, SGA).

    Subclasses call :meth:`_field` for v and :meth:`_accumulate` to add a gradient into
    ``p.grad``, then move the parameters with :meth:`GameOptimizer._apply_base_step`. Tensors
    a method keeps per parameter (the optimistic method's previous update) live in
    ``self.game_state[p]`` and are saved by ``state_dict()`` under ``"gameopt"``.
    """

    _shared_type: type[SharedState] = FieldState
    game_state = shared("Per-parameter tensors of the method (not of the base optimiser), keyed by parameter.")

    # --- losses and the field --------------------------------------------------------------
    def _loss_names(self) -> list[str]:
        if self.players == (GENERATOR, DISCRIMINATOR):
            return ["gen_loss", "disc_loss"]
        return [f"loss of player '{p}'" for p in self.players]

    def _check_losses(self, losses: Sequence[Any]) -> tuple[torch.Tensor, ...]:
        if isinstance(losses, (torch.Tensor, str, bytes)) or not isinstance(losses, Sequence):
            raise GameInputError(
                f"expected one loss per player ({list(self.players)}), e.g. (gen_loss, disc_loss), "
                f"got {type(losses).__name__}"
            )
        if len(losses) != len(self.players):
            raise GameInputError(
                f"expected {len(self.players)} losses (one per player: {list(self.players)}), "
                f"got {len(losses)}"
            )
        names = self._loss_names()
        return tuple(check_loss(l, p, n, per_example=False) for l, p, n in zip(losses, self.players, names))

    def _evaluate(self, closure: Closure) -> tuple[torch.Tensor, ...]:
        """Call ``closure()`` with grad enabled and check that it returned one loss per player."""
        if not callable(closure):
            raise GameInputError(f"closure must be callable, got {type(closure).__name__}")
        with torch.enable_grad():
            losses = closure()
        if losses is None:
            raise GameInputError(
                f"{type(self).__name__} needs the losses from the closure (it differentiates them "
                "itself): return one loss per player, e.g. (gen_loss, disc_loss)"
            )
        return self._check_losses(losses)

    def _backward_from_closure(self, closure: Closure | None) -> Any:
        """For one-evaluation steps: run ``closure()`` and ``backward`` on its losses.

        Returns the closure's losses, or None without a closure or when it returned None
        (the gradients are then taken to be in ``p.grad`` already, as Lightning's closure leaves them).
        """
        if closure is None:
            return None
        with torch.enable_grad():
            losses = closure()
        if losses is not None:
            checked = self._check_losses(losses)
            with self._grads_restored_on_error():
                self.zero_grad(set_to_none=True)
                self.backward(*checked)  # type: ignore[attr-defined]
        return losses

    def _flat_params(self) -> list[torch.Tensor]:
        return [p for player in self.players for p in self.player_params(player)]

    def _field(
        self, losses: Sequence[torch.Tensor], *, create_graph: bool = False
    ) -> tuple[list[torch.Tensor], list[torch.Tensor | None], list[torch.Tensor | None]]:
        """Parameters (player order), their gradients (with graph if asked; None where unused)
        and v: the gradients detached, averaged over the ranks under ``distributed=True``."""
        params = [self.player_params(p) for p in self.players]
        with torch.enable_grad():
            grads = player_gradients(losses, params, self.players, self._loss_names(),
                                     create_graph=create_graph)
        flat_params = [p for ps in params for p in ps]
        flat = [t for g in grads for t in g]
        v: list[torch.Tensor | None] = [None if t is None else t.detach() for t in flat]
        if self.distributed:  # same layout on every rank: a parameter unused here may be used elsewhere
            v = list(all_reduce_mean(
                [torch.zeros_like(p) if t is None else t for p, t in zip(flat_params, v)], self.process_group))
        return flat_params, flat, v

    @staticmethod
    def _accumulate(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None]) -> None:
        """``p.grad += g`` (``p.grad = g`` where it is None), skipping None."""
        pairs = [(p, g) for p, g in zip(params, grads) if g is not None]
        existing = [(p, g) for p, g in pairs if p.grad is not None]
        if existing:
            torch._foreach_add_([p.grad for p, _ in existing], [g for _, g in existing])
        for p, g in pairs:
            if p.grad is None:
                p.grad = g

    # --- checkpoints -----------------------------------------------------------------------
    def _param_index(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def _extra_state(self) -> dict[str, Any]:
        extra = super()._extra_state()
        index = {id(p): i for i, p in enumerate(self._param_index())}
        extra["game_state"] = {
            index[id(p)]: {k: v.detach().clone() for k, v in st.items()}
            for p, st in self.game_state.items() if id(p) in index and st
        }
        return extra

    def _check_game_state(self, saved: Any) -> dict[torch.Tensor, dict[str, torch.Tensor]]:
        """The checkpoint's per-parameter tensors mapped onto this optimiser's parameters (validated)."""
        params = self._param_index()
        if not isinstance(saved, Mapping):
            raise GameInputError(f"checkpoint 'game_state' must be a dict, got {type(saved).__name__}")
        out: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        for i, st in saved.items():
            if not isinstance(i, int) or not 0 <= i < len(params):
                raise GameInputError(
                    f"checkpoint 'game_state' names parameter {i!r}, but this optimiser has {len(params)}"
                )
            p = params[i]
            if not isinstance(st, Mapping):
                raise GameInputError(f"checkpoint 'game_state' of parameter {i} must be a dict")
            entry = {}
            for k, v in st.items():
                if not isinstance(v, torch.Tensor) or v.shape != p.shape:
                    raise GameInputError(
                        f"checkpoint 'game_state'[{i}][{k!r}] must be a tensor of the parameter's shape "
                        f"{tuple(p.shape)}, got {tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}"
                    )
                if not torch.isfinite(v).all():
                    raise GameInputError(f"checkpoint 'game_state'[{i}][{k!r}] holds NaN or Inf")
                entry[k] = v.detach().to(device=p.device, dtype=p.dtype, copy=True)
            out[p] = entry
        return out

    def _check_extra_state(self, extra: dict[str, Any]) -> dict[str, Any]:
        settings = super()._check_extra_state(extra)
        settings["game_state"] = self._check_game_state(extra.get("game_state", {}))
        return settings
