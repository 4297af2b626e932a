"""FieldOptimizer: the shared machinery of optimisers that step on the game's gradient field.

The field is ``v = (grad_theta l_G, grad_phi l_D, ...)``: every player's gradient of its own
loss (methods.md section 5 calls it F). Extragradient, optimistic gradient and SGA differ only
in what they do with it; this base class holds what they share: evaluating a closure, computing
v (averaged over ranks under ``distributed=True``), writing gradients into ``p.grad``, applying
``p.grad`` with the base optimiser under the ``nonfinite`` policy, and per-parameter tensors
that the method keeps beside the base optimiser's state (checkpointed with it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.optim import Optimizer

from .distributed import all_reduce_mean
from .errors import GameInputError
from .game_optimizer import GameOptimizer
from .gradients import check_loss, player_gradients
from .players import DISCRIMINATOR, GENERATOR, ParamsLike

Losses = Sequence[torch.Tensor]
Closure = Callable[[], "Losses | None"]


class FieldOptimizer(GameOptimizer):
    """Base class of the gradient-field optimisers (extragradient, optimistic, SGA).

    Subclasses call :meth:`_field` for v, :meth:`_accumulate` to add a gradient into
    ``p.grad`` and :meth:`_step_base` to let the base optimiser apply ``p.grad``. Tensors a
    method keeps per parameter (the optimistic method's previous update) live in
    ``self.game_state[p]`` and are saved by ``state_dict()`` under ``"gameopt"``.
    """

    def __init__(
        self,
        base_optimizer: type[Optimizer],
        players: Mapping[str, ParamsLike],
        *,
        nonfinite: str = "skip",
        distributed: bool = False,
        process_group: Any = None,
        **base_kwargs: Any,
    ) -> None:
        super().__init__(base_optimizer, players, nonfinite=nonfinite, distributed=distributed,
                         process_group=process_group, **base_kwargs)
        #: Per-parameter tensors of the method (not of the base optimiser), keyed by parameter.
        self.game_state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        self._amax: list[torch.Tensor] = []
        self._amax_owners: list[str] = []

    # --- losses and the field --------------------------------------------------------------
    def _loss_names(self) -> list[str]:
        if self.players == (GENERATOR, DISCRIMINATOR):
            return ["gen_loss", "disc_loss"]
        return [f"loss of player '{p}'" for p in self.players]

    def _check_losses(self, losses: Sequence[Any]) -> tuple[torch.Tensor, ...]:
        if isinstance(losses, torch.Tensor) or not isinstance(losses, Sequence):
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

    # --- applying p.grad -------------------------------------------------------------------
    def _step_base(self, *, quiet: bool = False) -> bool:
        """Apply ``p.grad`` with the base optimiser unless it holds a NaN/Inf; True if it stepped.

        The check is elementwise on exactly what the base optimiser would apply: one fused
        max-abs reduction over every gradient and one host read. ``quiet``: skip without
        warning or counting (a GradScaler's overflow, which the scaler records itself).
        """
        if self.nonfinite != "ignore":
            owned = [(g["player"], p.grad) for g in self.param_groups for p in g["params"] if p.grad is not None]
            if owned:
                amax = torch._foreach_norm([t for _, t in owned], math.inf)
                if len({a.dtype for a in amax}) > 1:
                    amax = [a.float() for a in amax]
                self._amax = list(amax)
                self._amax_owners = [o for o, _ in owned]
                finite = torch.isfinite(torch.stack(amax)).all()
                if quiet:
                    if not bool(finite):
                        self.last_step_skipped = True
                        return False
                else:
                    self._finite = finite
                    if self._should_skip():
                        self.last_step_skipped = True
                        return False
        self.base_optimizer.step()
        self.last_step_skipped = False
        return True

    def _finite_per_player(self) -> list[bool]:
        ok = torch.isfinite(torch.stack(self._amax)).tolist() if self._amax else []
        bad = {o for o, good in zip(self._amax_owners, ok) if not good}
        return [p not in bad for p in self.players]

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

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a checkpoint of :meth:`state_dict`; the method's tensors are validated before anything changes."""
        extra = state_dict.get("gameopt") if isinstance(state_dict, Mapping) else None
        game_state = self._check_game_state(extra.get("game_state", {})) if isinstance(extra, Mapping) else None
        super().load_state_dict(state_dict)
        if game_state is not None:
            self.game_state.clear()
            self.game_state.update(game_state)
