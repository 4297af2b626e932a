"""Players: named, disjoint collections of parameter groups.

A game in gameopt is an ordered mapping ``player name -> parameters``. Every
param group handed to the wrapped torch optimiser carries a ``"player"`` key, so
per-player hyper-parameters (lr, betas, weight decay, gamma) are ordinary
param-group entries that schedulers and user code can read and change.

Sign convention used everywhere in gameopt: **each player minimises its own
loss**. A zero-sum game is ``disc_loss = -gen_loss``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Union

import torch

from .errors import GameInputError

GENERATOR = "generator"
DISCRIMINATOR = "discriminator"

ParamsLike = Union[Iterable[torch.Tensor], Iterable[dict[str, Any]]]


def _describe(p: torch.Tensor) -> str:
    return f"tensor of shape {tuple(p.shape)} ({p.dtype})"


def _group_params(group: dict[str, Any], player: str) -> list[torch.Tensor]:
    params = group.get("params")
    if params is None:
        raise GameInputError(
            f"a param group of player '{player}' has no 'params' entry; "
            "each group must be a dict like {'params': module.parameters(), 'lr': ...}"
        )
    if isinstance(params, torch.Tensor):
        return [params]
    _refuse_set(params, player)
    return list(params)


def _refuse_set(params: Any, player: str) -> None:
    if isinstance(params, (set, frozenset)):
        raise GameInputError(
            f"player '{player}': parameters given as a set have no stable order, "
            "so checkpoints would not resume reliably; pass a list instead"
        )


def game_players(
    gen_params: ParamsLike | None,
    disc_params: ParamsLike | None,
    players: Mapping[str, ParamsLike] | None,
) -> Mapping[str, ParamsLike]:
    """The players mapping from either the two-player arguments or an explicit ``players=``.

    Args:
        gen_params: the generator's parameters (tensors or param-group dicts), or None.
        disc_params: the discriminator's parameters, or None.
        players: an explicit ordered ``{name: params}``, or None.

    Returns:
        ``players``, or ``{GENERATOR: gen_params, DISCRIMINATOR: disc_params}``.

    Raises:
        GameInputError: neither form given completely, or both given.
    """
    if players is None:
        if gen_params is None or disc_params is None:
            raise GameInputError("pass gen_params and disc_params (or players={name: params})")
        return {GENERATOR: gen_params, DISCRIMINATOR: disc_params}
    if gen_params is not None or disc_params is not None:
        raise GameInputError("pass either gen_params/disc_params or players=, not both")
    return players


def player_param_groups(
    players: Mapping[str, ParamsLike],
    owner: dict[int, str] | None = None,
) -> list[dict[str, Any]]:
    """Turn ``{player: params}`` into torch param groups tagged with ``"player"``.

    ``params`` may be an iterable of tensors or of param-group dicts (so a player
    can have several groups with different hyper-parameters). Checks that every
    player is non-empty, every parameter requires grad, is a leaf, and belongs
    to exactly one player.

    Args:
        players: ordered ``{name: params}``; each ``params`` an iterable of tensors, of
            param-group dicts, or one dict.
        owner: ``{id(param): player}`` of parameters already owned (for
            :meth:`gameopt.GameOptimizer.add_param_group`); updated in place. Default: empty.

    Returns:
        One dict per group, ``"params"`` a list and ``"player"`` set, in the players' order.

    Raises:
        GameInputError: no players, a bad name, a single tensor or a set, an empty player,
            tensors mixed with dicts, a group tagged with another player, or a bad parameter
            (see :func:`validate_params`).
    """
    if not players:
        raise GameInputError("a game needs at least one player with parameters")
    owner = {} if owner is None else owner
    groups: list[dict[str, Any]] = []
    for name, params in players.items():
        if not isinstance(name, str) or not name:
            raise GameInputError(f"player names must be non-empty strings, got {name!r}")
        if isinstance(params, torch.Tensor):
            raise GameInputError(
                f"player '{name}': got a single tensor; pass an iterable such as "
                "[tensor] or module.parameters()"
            )
        if isinstance(params, dict):
            params = [params]
        _refuse_set(params, name)
        items = list(params)
        if not items:
            raise GameInputError(
                f"player '{name}' has no parameters (an empty iterable was given; "
                "a generator such as module.parameters() can only be consumed once)"
            )
        if all(isinstance(it, dict) for it in items):
            raw_groups = [dict(it) for it in items]
        elif any(isinstance(it, dict) for it in items):
            raise GameInputError(
                f"player '{name}': mix of tensors and param-group dicts; pass either "
                "tensors or dicts like {'params': [...], 'lr': ...}"
            )
        else:
            raw_groups = [{"params": items}]
        n_params = 0
        for group in raw_groups:
            tagged = group.get("player", name)
            if tagged != name:
                raise GameInputError(
                    f"a param group passed for player '{name}' is tagged "
                    f"player={tagged!r}; remove the 'player' key or pass the group "
                    "to the right player"
                )
            ps = _group_params(group, name)
            validate_params(ps, name, owner)
            n_params += len(ps)
            group["params"] = ps
            group["player"] = name
            groups.append(group)
        if n_params == 0:
            raise GameInputError(f"player '{name}' has no parameters (all its groups are empty)")
    return groups


def validate_params(params: list[torch.Tensor], player: str, owner: dict[int, str]) -> None:
    """Check one player's parameters and record them in ``owner``.

    Args:
        params: the player's parameters.
        player: its name (for messages).
        owner: ``{id(param): player}``; updated in place.

    Raises:
        GameInputError: a parameter is not a tensor, does not require grad, is not a leaf,
            or already belongs to a player.
    """
    for p in params:
        if not isinstance(p, torch.Tensor):
            raise GameInputError(
                f"player '{player}': expected tensors, got {type(p).__name__}"
            )
        if not p.requires_grad:
            raise GameInputError(
                f"player '{player}': a parameter ({_describe(p)}) has requires_grad=False. "
                "gameopt cannot update it; leave frozen parameters out of the player"
            )
        if not p.is_leaf:
            raise GameInputError(
                f"player '{player}': a parameter ({_describe(p)}) is not a leaf tensor; "
                "pass the module's parameters, not tensors computed from them"
            )
        prev = owner.get(id(p))
        if prev is not None:
            if prev == player:
                raise GameInputError(
                    f"player '{player}': a parameter ({_describe(p)}) is listed twice; "
                    "each parameter may appear only once"
                )
            raise GameInputError(
                f"a parameter ({_describe(p)}) belongs to both players '{prev}' and "
                f"'{player}'. Each parameter must belong to exactly one player: pass "
                "disjoint sets, e.g. generator.parameters() and discriminator.parameters(), "
                "and keep shared layers (e.g. a shared encoder) in one player only"
            )
        owner[id(p)] = player


def check_shared_storage(groups: list[dict[str, Any]]) -> None:
    """Refuse parameters of different players that share memory (views of one tensor, tied weights).

    A step of one player would then move the other's parameter too, behind the game's back.

    Args:
        groups: param groups tagged with ``"player"`` (as :func:`player_param_groups` returns).

    Raises:
        GameInputError: naming the two players and the fix.
    """
    seen: dict[tuple[str, int], tuple[str, torch.Tensor]] = {}
    for group in groups:
        player = group["player"]
        for p in group["params"]:
            if p.numel() == 0 or p.device.type == "meta":   # meta tensors have no memory to share
                continue
            key = (str(p.device), p.untyped_storage().data_ptr())
            prev = seen.setdefault(key, (player, p))
            if prev[0] != player:
                raise GameInputError(
                    f"a parameter of player '{prev[0]}' ({_describe(prev[1])}) and one of player "
                    f"'{player}' ({_describe(p)}) share memory (one is a view of the other, or the "
                    "weights are tied), so a step of one player would move the other's. Give each "
                    "player its own tensors (e.g. nn.Parameter(t.detach().clone())), or keep a shared "
                    "layer in one player only"
                )
