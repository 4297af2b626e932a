"""GameOptimizer: a torch.optim.Optimizer that wraps a base optimiser for a game.

The wrapper and the base optimiser share one ``param_groups`` list and one
``state`` dict, so everything that works on a torch optimiser works here
unmodified: ``torch.optim.lr_scheduler`` schedulers, ``add_param_group``,
step hooks, gradient clipping between ``backward`` and ``step``, and
``state_dict()`` / ``load_state_dict()``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch.optim import Optimizer

from .distributed import check_distributed
from .errors import GameInputError
from .players import ParamsLike, player_param_groups


class GameOptimizer(Optimizer):
    """Base class of gameopt's optimisers: players over a wrapped torch optimiser.

    Subclasses compute gradients for all players (``backward``) and let the base
    optimiser apply them (``step``). Per-group options that gameopt adds (such as
    consensus ``gamma``) live in the param groups next to ``lr``.
    """

    #: gameopt's own per-group options and their defaults (set by subclasses).
    _group_options: dict[str, Any] = {}

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
        check_distributed(type(self).__name__, distributed)
        if isinstance(base_optimizer, Optimizer):
            raise GameInputError(
                "base_optimizer must be an optimiser class such as torch.optim.Adam, "
                f"not an instance ({type(base_optimizer).__name__}); gameopt builds it "
                "from the players' parameters and the keyword arguments you pass"
            )
        if not (isinstance(base_optimizer, type) and issubclass(base_optimizer, Optimizer)):
            raise GameInputError(
                f"base_optimizer must be a subclass of torch.optim.Optimizer "
                f"(e.g. torch.optim.Adam), got {base_optimizer!r}"
            )
        if issubclass(base_optimizer, GameOptimizer):
            raise GameInputError(
                "base_optimizer must be a plain torch optimiser, not a gameopt optimiser"
            )
        if nonfinite not in ("skip", "raise", "ignore"):
            raise GameInputError(
                f"nonfinite must be 'skip', 'raise' or 'ignore', got {nonfinite!r}"
            )
        self._owner: dict[int, str] = {}
        groups = player_param_groups(players, self._owner)
        for group in groups:
            for key, value in self._group_options.items():
                group.setdefault(key, value)
        self.players: tuple[str, ...] = tuple(players)
        self.nonfinite = nonfinite
        #: Whether gradients are averaged over the ranks of ``process_group`` (torch.distributed).
        self.distributed = bool(distributed)
        self.process_group = process_group
        self.base_optimizer: Optimizer = base_optimizer(groups, **base_kwargs)
        self.base_optimizer.defaults.update(self._group_options)
        # Optimizer.__init__ installs the hook machinery; our properties route its
        # param_groups/state assignments to the base optimiser, and our
        # add_param_group re-registers the (already validated) groups there.
        self._initialising = True
        super().__init__(list(self.base_optimizer.param_groups), self.base_optimizer.defaults)
        self._initialising = False
        #: Number of steps skipped because a gradient was NaN or infinite.
        self.skipped_steps: int = 0
        #: Whether the most recent ``step`` was skipped.
        self.last_step_skipped: bool = False
        self._finite: torch.Tensor | None = None

    # --- sharing with the base optimiser -------------------------------------------------
    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        return self.base_optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.base_optimizer.param_groups = value

    @property  # type: ignore[override]
    def state(self) -> Any:
        return self.base_optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        self.base_optimizer.state = value

    @property  # type: ignore[override]
    def defaults(self) -> dict[str, Any]:
        return self.base_optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.base_optimizer.defaults = value

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group; it must name its player: ``{"params": ..., "player": "generator"}``."""
        if getattr(self, "_initialising", False):
            self.base_optimizer.add_param_group(param_group)
            return
        player = param_group.get("player")
        if player not in self.players:
            raise GameInputError(
                f"add_param_group: the group must carry 'player' set to one of "
                f"{list(self.players)}, got {player!r}"
            )
        owner = dict(self._owner)
        (group,) = player_param_groups({player: [dict(param_group)]}, owner)
        for key, value in self._group_options.items():
            group.setdefault(key, value)
        self.base_optimizer.add_param_group(group)
        self._owner = owner

    def player_params(self, player: str) -> list[torch.Tensor]:
        """All parameters of ``player``, in param-group order."""
        return [p for g in self.param_groups if g["player"] == player for p in g["params"]]

    # --- checkpoints ---------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        return {
            "players": list(self.players),
            "nonfinite": self.nonfinite,
            "skipped_steps": self.skipped_steps,
        }

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self.nonfinite = extra.get("nonfinite", self.nonfinite)
        self.skipped_steps = int(extra.get("skipped_steps", 0))

    def state_dict(self) -> dict[str, Any]:
        """The base optimiser's state dict plus gameopt's settings under ``"gameopt"``."""
        sd = super().state_dict()
        sd["gameopt"] = self._extra_state()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a checkpoint written by :meth:`state_dict` (players must match)."""
        sd = dict(state_dict)
        extra = sd.pop("gameopt", None)
        if extra is None:
            raise GameInputError(
                "this state dict has no 'gameopt' entry: it was not written by a gameopt "
                "optimiser. To load a plain torch optimiser's state use "
                "opt.base_optimizer.load_state_dict(...)"
            )
        if list(extra.get("players", [])) != list(self.players):
            raise GameInputError(
                f"checkpoint players {extra.get('players')} do not match this optimiser's "
                f"players {list(self.players)}"
            )
        saved = sd.get("param_groups", [])
        if len(saved) != len(self.param_groups):
            raise GameInputError(
                f"checkpoint has {len(saved)} param groups, this optimiser has "
                f"{len(self.param_groups)}"
            )
        for i, (g, s) in enumerate(zip(self.param_groups, saved)):
            if s.get("player") != g["player"]:
                raise GameInputError(
                    f"param group {i} belongs to player '{g['player']}' here but to "
                    f"'{s.get('player')}' in the checkpoint"
                )
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, sd)
            if result is not None:
                sd = result
        self.base_optimizer.load_state_dict(sd)
        self._load_extra_state(extra)
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    def __getstate__(self) -> dict[str, Any]:
        # Optimizer.__getstate__ keeps only defaults/state/param_groups; ours live in the
        # base optimiser, so copy and pickle the whole object (minus compiled functions).
        state = self.__dict__.copy()
        state.pop("_compiled_core", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_compiled_core", None)

    def __repr__(self) -> str:
        inner = repr(self.base_optimizer).replace("\n", "\n    ")
        return f"{type(self).__name__}(players={list(self.players)}, base={inner})"

    def monitor_stats(self) -> dict[str, Any]:
        """Statistics of the last step for :class:`gameopt.Monitor` (tensors; no host sync)."""
        out: dict[str, Any] = {"skipped_steps": self.skipped_steps}
        for group_index, group in enumerate(self.param_groups):
            out[f"lr/{group['player']}/{group_index}"] = group["lr"] if "lr" in group else None
        return out

    # --- non-finite gradients ------------------------------------------------------------
    def _finite_per_player(self) -> list[bool]:
        """Which players' last gradients were finite; called only after a non-finite step."""
        return [False] * len(self.players)

    def _should_skip(self) -> bool:
        """Apply the ``nonfinite`` policy; the only host read gameopt does in a step."""
        if self.nonfinite == "ignore" or self._finite is None:
            return False
        finite_flag = self._finite
        self._finite = None
        if bool(finite_flag):
            return False
        bad = [name for name, ok in zip(self.players, self._finite_per_player()) if not ok]
        msg = (
            f"non-finite (NaN or Inf) gradient for player(s) {bad}; the step was skipped "
            "and the base optimiser's state left untouched. Lower the learning rate or "
            "gamma, or check the losses for log(0) / overflow"
        )
        if self.nonfinite == "raise":
            raise FloatingPointError(msg)
        warnings.warn(f"gameopt: {msg}", RuntimeWarning, stacklevel=3)
        self.skipped_steps += 1
        return True
